import APIAccess
import APIServer
import ArgumentParser
import ClusterPKI
import Foundation
import KubeAPI
import KubeStore

/// Hostile input on the authentication path, thousands of cases (`AuthenticationFuzz`): every one
/// must be answered 401. The time per hostile case is set against the time of the same request
/// with a valid token, measured in the same run.
struct AuthFuzzBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authfuzz",
        abstract: "Send thousands of forged, tampered, malformed and huge credentials through the API server's authentication: all must be 401.")

    @Option(help: "Hostile cases.") var cases = 20_000
    @Option(help: "The generator's seed (a failing case is made again from it).") var seed: UInt64 = 1
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-authfuzz-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pki = try ClusterPKI.loadOrCreate(in: dir)
        let pem = try pki.clientCertificate(name: "user", commonName: "user").cert
        let der = Array(Data(base64Encoded: pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined())!)
        let tokens = ServiceAccountTokens.ephemeral()
        let handler = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: ["RBAC"]), serviceAccountTokens: tokens)
        try await handler.bootstrap()
        try await handler.reconcileDefaultPolicy()
        let file = try TokenFile(contents: "s3cret,admin,1,\"system:masters\"\n")
        let valid = try tokens.issue(namespace: "default", serviceAccount: "default", uid: "u", audiences: tokens.audiences, seconds: 3600).token
        let hostile = AuthenticationFuzz.cases(seed: seed, count: cases, token: valid, certificate: der)
        // The baseline: the same request with the token file's valid token, as many times.
        let good = Array(repeating: AuthenticationFuzz.Case(what: "valid", authorization: "Bearer s3cret"), count: min(cases, 5000))
        var clock = ContinuousClock.now
        let accepted = await AuthenticationFuzz.run(good, handler: handler, tokens: file)
        let baseline = (ContinuousClock.now - clock) / good.count
        guard accepted.count == good.count else { throw ValidationError("the valid token was refused \(good.count - accepted.count) times") }
        clock = .now
        let wrong = await AuthenticationFuzz.run(hostile, handler: handler, tokens: file)
        let each = (ContinuousClock.now - clock) / hostile.count
        func us(_ d: Duration) -> String { String(format: "%.1f µs", Double(d.components.attoseconds) / 1e12 + Double(d.components.seconds) * 1e6) }
        var md = "## Hostile input on the authentication path (`switchyard-bench authfuzz --cases \(cases) --seed \(seed)`)\n\n"
        md += "| | cases | not 401 | time per request |\n|---|---:|---:|---:|\n"
        md += "| valid token (baseline) | \(good.count) | — | \(us(baseline)) |\n"
        md += "| hostile credentials | \(hostile.count) | \(wrong.count) | \(us(each)) (\(String(format: "%.2f", Double(each.components.attoseconds + each.components.seconds * 1_000_000_000_000_000_000) / Double(baseline.components.attoseconds + baseline.components.seconds * 1_000_000_000_000_000_000)))× the baseline) |\n"
        // By kind of case: where the time goes.
        var kinds: [String: [AuthenticationFuzz.Case]] = [:]
        for c in hostile { kinds[String(c.what.split(separator: " ").first ?? ""), default: []].append(c) }
        md += "\n| kind of case | cases | time per request |\n|---|---:|---:|\n"
        for (kind, list) in kinds.sorted(by: { $0.key < $1.key }) {
            let t0 = ContinuousClock.now
            _ = await AuthenticationFuzz.run(list, handler: handler, tokens: file)
            md += "| \(kind) | \(list.count) | \(us((ContinuousClock.now - t0) / list.count)) |\n"
        }
        for (c, code) in wrong.prefix(10) { md += "\n- \(code) for \(c.what)" }
        print(md)
        if let out { try md.write(toFile: out, atomically: true, encoding: .utf8) }
        if !wrong.isEmpty { throw ExitCode(1) }
    }
}
