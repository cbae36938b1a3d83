import ArgumentParser
import Foundation
import ControllerKit
import CRI
import Images
import KubeAPI
import KubeClient
import LabServices

/// What tracing costs the cluster: pod start-up (created → Ready, on containerd through
/// `switchyard kubelet`) with what `netlab trace` reads switched on (the API server's audit log
/// at Metadata level for every write, the lab's policy (`LabAuditPolicy`), and every component's log
/// lines as JSON) against the same start-ups with it off, in the same run. The pods start one at
/// a time (a single pod's start-up, which queued pods would drown in containerd's contention), and
/// the two settings alternate round by round (off, on, on, off, …) on the same nodes, so drift
/// falls on both alike.
struct TraceCostBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace-cost",
        abstract: "Measure pod start-up with audit logging (Metadata) and JSON logs against without.")

    @Option(help: "Pods started per round (spread over the nodes).") var pods = 20
    @Option(help: "Rounds per setting.") var rounds = 10
    @Option(help: "Nodes, each with a containerd and a kubelet of its own.") var nodes = 2
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "The switchyard-cni binary.") var cni: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        let binary = try switchyardBinary(switchyard)
        try await KubeletBench.withNodes(nodes, binary: binary, cni: cni, tag: "trace") { lab, work in
            for n in lab {
                _ = try await n.cri.pullImage(KubeletBench.image, sandboxConfig: nil)
                _ = try await n.cri.pullImage("switchyard/pause:latest", sandboxConfig: nil)
            }
            try await measure(binary: binary, lab: lab, work: work)
        }
    }

    /// One round: a fresh server (with or without the audit log), the kubelets against it, the
    /// pods' start-up times; then everything stopped and the runtime emptied.
    func round(traced: Bool, binary: String, lab: [RuntimeNode], work: URL, index: Int) async throws -> (latencies: [Double], auditLines: Int) {
        var args = ["--disable-scheduler", "--disable-controller-manager", "--disable-admission-plugins", "ServiceAccount", "--log-level", "info"]
        let auditLog = work.appendingPathComponent("audit-\(index).log").path
        if traced {
            let policy = work.appendingPathComponent("audit-policy.yaml").path
            try Data(LabAuditPolicy.metadataWrites.utf8).write(to: URL(fileURLWithPath: policy))
            args += ["--audit-policy-file", policy, "--audit-log-path", auditLog, "--logging-format", "json"]
        }
        let server = try await BenchServer.start(binary: binary, etcd: nil, arguments: args)
        defer { server.stop() }
        let api = API(server.client, fieldManager: "bench")
        let kubeconfig = server.dir.appendingPathComponent("kubeconfig").path
        let kubelets = try await KubeletBench.startKubelets(binary: binary, lab: lab, kubeconfig: kubeconfig, api: api,
                                                            extra: ["--log-level", "info"] + (traced ? ["--logging-format", "json"] : []))
        defer { for k in kubelets where k.isRunning { k.terminate(); k.waitUntilExit() } }
        let latencies = try await startOneByOne(server.client, api, nodes: lab.count)
        for k in kubelets where k.isRunning { k.terminate(); k.waitUntilExit() }
        for n in lab {
            for s in try await n.cri.listPodSandbox(nil) {
                try? await n.cri.stopPodSandbox(s.id)
                try? await n.cri.removePodSandbox(s.id)
            }
        }
        let lines = traced ? ((try? String(contentsOfFile: auditLog, encoding: .utf8))?.split(separator: "\n").count ?? 0) : 0
        return (latencies, lines)
    }

    /// The pods one after another, each created once the one before is Ready (a single pod's
    /// start-up, as `netlab trace` shows it, with nothing else queued): each one's create → Ready.
    func startOneByOne(_ client: KubeClient, _ api: API, nodes: Int) async throws -> [Double] {
        _ = try await api.create("/api/v1/namespaces", ["metadata": ["name": "startup"]])
        let watch = try await PodWatch(client, ns: "startup", what: "Ready") {
            $0[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
        }
        var created: [String: ContinuousClock.Instant] = [:]
        for i in 0..<pods {
            created["p-\(i)"] = ContinuousClock.now
            _ = try await api.create("/api/v1/namespaces/startup/pods", KubeletBench.pod(i, nodes: nodes))
            try await watch.wait(for: i + 1, timeout: 60)
        }
        watch.stop()
        return watch.lock.withLock { watch.seen }.compactMap { name, at in created[name].map { (at - $0).seconds } }.sorted()
    }

    func measure(binary: String, lab: [RuntimeNode], work: URL) async throws {
        var off: [Double] = [], on: [Double] = [], lines = 0
        for r in 0..<rounds {
            for traced in r % 2 == 0 ? [false, true] : [true, false] {
                let (l, n) = try await round(traced: traced, binary: binary, lab: lab, work: work, index: r)
                if traced { on += l; lines += n } else { off += l }
                log("round \(r + 1) \(traced ? "traced" : "untraced"): p50 \(fmt(l[l.count / 2]))")
            }
        }
        guard lines > 0 else { throw ValidationError("the traced rounds wrote no audit events") }
        off.sort()
        on.sort()
        func q(_ a: [Double], _ p: Double) -> Double { a[min(a.count - 1, Int(Double(a.count) * p))] }
        func mean(_ a: [Double]) -> Double { a.reduce(0, +) / Double(a.count) }
        let n = on.count
        let table = ["| Figure | Measured (traced) | Baseline: untraced, same run | Ratio | Target |", "|---|---|---|---|---|",
                     "| Pod start-up (created → Ready), \(n) pods one at a time over \(lab.count) nodes in \(rounds) rounds, p50 | \(fmt(q(on, 0.5))) | \(fmt(q(off, 0.5))) | \(String(format: "%.3f×", q(on, 0.5) / q(off, 0.5))) | within 5% (≤ 1.05×) |",
                     "| Pod start-up, mean | \(fmt(mean(on))) | \(fmt(mean(off))) | \(String(format: "%.3f×", mean(on) / mean(off))) | within 5% |",
                     "| Pod start-up, p90 | \(fmt(q(on, 0.9))) | \(fmt(q(off, 0.9))) | \(String(format: "%.3f×", q(on, 0.9) / q(off, 0.9))) | — |",
                     "| Audit events written by the traced rounds | \(lines) | — | — | — |"].joined(separator: "\n")
        print(table)
        if let out { try (table + "\n").write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
