import ArgumentParser
import Foundation
import KubeAPI
import KubeClient

/// The API server's idle memory as a lab runs it — HTTPS with the cluster CA it makes, client
/// certificates, `--authorization-mode Node,RBAC` with the default roles reconciled — against the
/// same server on the plain insecure port under AlwaysAllow, both started in the same run and
/// asked the same first requests (kubectl's discovery, a list) before they are measured.
struct SecureServerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secure-memory",
        abstract: "Measure the API server's idle memory with HTTPS, client certificates and Node,RBAC against plain HTTP under AlwaysAllow.")

    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Runs of each (the median is reported).") var runs = 3
    @Option(help: "Write the markdown results here too.") var out: String?

    func idle(_ arguments: [String]) async throws -> Double {
        let server = try await BenchServer.start(binary: try switchyardBinary(switchyard), etcd: nil,
                                                 arguments: arguments + ["--disable-scheduler", "--disable-controller-manager"])
        defer { server.stop() }
        try await Task.sleep(for: .seconds(1))
        for path in ["/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/api/v1/namespaces", "/api/v1/namespaces/default/services"] {
            _ = try await server.client.request("GET", path)
        }
        try await Task.sleep(for: .seconds(2))
        return ServerBench.rssMB(server.process.processIdentifier)
    }

    func run() async throws {
        var plain: [Double] = [], secure: [Double] = []
        for _ in 0..<runs {
            plain.append(try await idle([]))
            secure.append(try await idle(["--secure-port", "0", "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction"]))
        }
        let p = plain.sorted()[plain.count / 2], s = secure.sorted()[secure.count / 2]
        var md = "## Idle memory with TLS and Node,RBAC (`switchyard-bench secure-memory`, median of \(runs))\n\n"
        md += "| server | idle RSS | ratio | target |\n|---|---:|---:|---:|\n"
        md += "| plain HTTP, AlwaysAllow (baseline) | \(String(format: "%.1f MB", p)) | 1.00× | |\n"
        md += "| HTTPS, cluster CA, client certificates, Node,RBAC with the default roles | \(String(format: "%.1f MB", s)) | \(String(format: "%.2f×", s / p)) | < 30 MB |\n"
        print(md)
        if let out { try md.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
