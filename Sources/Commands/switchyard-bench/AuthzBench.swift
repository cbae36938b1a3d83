import ArgumentParser
import Foundation
import KubeAPI
import KubeClient

/// What authentication and RBAC add to a request: the same GET of one ConfigMap against a server
/// without authentication under AlwaysAllow (the baseline) and against one with a token file and
/// `--authorization-mode RBAC` holding 200 ClusterRoles and 1,000 RoleBindings (plus the default
/// roles), both real `switchyard server` processes in the same run, their requests interleaved.
struct AuthzBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authz",
        abstract: "Measure a GET under token authentication and RBAC (1,000 RoleBindings, 200 ClusterRoles) against the same GET under AlwaysAllow.")

    @Option(help: "GETs timed against each server.") var requests = 4000
    @Option(help: "RoleBindings in the namespace read.") var roleBindings = 1000
    @Option(help: "ClusterRoles.") var clusterRoles = 200
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        let binary = try switchyardBinary(switchyard)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-authz-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // The admin first (the kubeconfig carries the first token), then one token per bound user.
        var tokens = "admin-token,admin,0,\"system:masters\"\n"
        for i in 0..<roleBindings { tokens += "token-\(i),user-\(i),\(i + 1)\n" }
        let tokenFile = dir.appendingPathComponent("tokens.csv").path
        try tokens.write(toFile: tokenFile, atomically: true, encoding: .utf8)

        let plain = try await BenchServer.start(binary: binary, etcd: nil)
        defer { plain.stop() }
        let rbac = try await BenchServer.start(binary: binary, etcd: nil, arguments: [
            "--disable-scheduler", "--disable-controller-manager", "--token-auth-file", tokenFile, "--authorization-mode", "RBAC"])
        defer { rbac.stop() }

        for server in [plain, rbac] {
            let ns = try await server.client.rawRequest("POST", "/api/v1/namespaces", body: Data(#"{"metadata":{"name":"bench"}}"#.utf8))
            guard ns.status == 201 else { throw ValidationError("namespace: \(ns.status)") }
            let cm = try await server.client.rawRequest("POST", "/api/v1/namespaces/bench/configmaps",
                                                        body: Data(#"{"metadata":{"name":"target"},"data":{"a":"b"}}"#.utf8))
            guard cm.status == 201 else { throw ValidationError("configmap: \(cm.status)") }
        }
        log("loading \(clusterRoles) ClusterRoles and \(roleBindings) RoleBindings into the RBAC server")
        let roles = clusterRoles, bindings = roleBindings, client = rbac.client
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    for i in stride(from: w, to: roles, by: 4) {
                        // Each role reads one kind; the last reads ConfigMaps.
                        let resource = i == roles - 1 ? "configmaps" : "widgets\(i)"
                        let body: JSONValue = ["metadata": ["name": .string("role-\(i)")],
                                               "rules": [["apiGroups": [""], "resources": [.string(resource)], "verbs": ["get", "list", "watch"]]]]
                        let r = try await client.rawRequest("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body: body.serialized())
                        guard r.status == 201 else { throw ValidationError("clusterrole: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
                    }
                }
            }
            try await group.waitForAll()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    for i in stride(from: w, to: bindings, by: 4) {
                        let body: JSONValue = ["metadata": ["name": .string("binding-\(i)")],
                                               "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string("role-\(i % roles)")],
                                               "subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": .string("user-\(i)")]]]
                        let r = try await client.rawRequest("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings", body: body.serialized())
                        guard r.status == 201 else { throw ValidationError("rolebinding: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
                    }
                }
            }
            try await group.waitForAll()
        }
        // The user whose binding grants ConfigMaps: bound to the last role.
        let user = (0..<roleBindings).last { $0 % roles == roles - 1 } ?? 0
        let token = "token-\(user)"
        let path = "/api/v1/namespaces/bench/configmaps/target"
        let a = try KeepAliveHTTP(host: plain.client.config.host, port: plain.client.config.port)
        let b = try KeepAliveHTTP(host: rbac.client.config.host, port: rbac.client.config.port)
        let denied = try b.request("GET", "/api/v1/namespaces/bench/secrets", body: Data(), contentType: "application/json", token: token)
        guard denied.status == 403 else { throw ValidationError("RBAC is not deciding: a GET of secrets as user-\(user) answered \(denied.status)") }
        var base: [Double] = [], measured: [Double] = []
        let rounds = 20, per = max(1, requests / rounds)
        log("timing \(rounds * per) GETs of one ConfigMap against each server, interleaved in rounds of \(per)")
        for round in 0..<(rounds + 1) {
            for (conn, isRBAC) in [(a, false), (b, true)] {
                for _ in 0..<per {
                    let t0 = ContinuousClock.now
                    let r = try conn.request("GET", path, body: Data(), contentType: "application/json", token: isRBAC ? token : nil)
                    let t = (ContinuousClock.now - t0).seconds * 1000
                    guard r.status == 200 else { throw ValidationError("GET \(path): \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
                    if round > 0 { if isRBAC { measured.append(t) } else { base.append(t) } }
                }
            }
        }
        base.sort()
        measured.sort()
        func pct(_ v: [Double], _ p: Double) -> Double { v[min(v.count - 1, Int(Double(v.count) * p))] }
        func f(_ v: Double) -> String { String(format: "%.3f ms", v) }
        let added = pct(measured, 0.99) - pct(base, 0.99)
        var report = "| figure | RBAC + tokens (\(roleBindings) RoleBindings, \(clusterRoles) ClusterRoles) | AlwaysAllow, no authentication (same run) | added | target |\n|---|---|---|---|---|\n"
        report += "| GET one ConfigMap, p50 | \(f(pct(measured, 0.5))) | \(f(pct(base, 0.5))) | \(String(format: "%+.1f%%", (pct(measured, 0.5) / pct(base, 0.5) - 1) * 100)) | |\n"
        report += "| GET one ConfigMap, p99 | \(f(pct(measured, 0.99))) | \(f(pct(base, 0.99))) | \(String(format: "%+.1f%%", added / pct(base, 0.99) * 100)) | < 5% |\n"
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
