import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Testing

/// The audit log as kube-apiserver writes it: each request's level from the policy's first
/// matching rule, one audit.k8s.io/v1 Event per stage (ResponseStarted for a watch, which
/// completes when it ends), the objects at Request and RequestResponse, the authorizer's decision.
@Suite struct AuditTests {
    static let policy = """
        apiVersion: audit.k8s.io/v1
        kind: Policy
        omitStages: ["RequestReceived"]
        omitManagedFields: true
        rules:
        - level: None
          nonResourceURLs: ["/healthz*", "/version"]
        - level: RequestResponse
          resources: [{group: "", resources: ["configmaps"]}]
        - level: Metadata
          namespaces: ["team"]
          resources: [{group: "", resources: ["pods", "pods/log"]}]
        - level: Request
          verbs: ["create"]
        """

    static func events(_ path: String) throws -> [JSONValue] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }

    @Test func eventsFollowThePolicy() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-audit-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), audit: try AuditLog(policy: Self.policy, path: path))
        try await h.bootstrap()
        _ = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": "team"]])))
        let before = try Self.events(path).count
        func req(_ m: String, _ p: String, _ b: JSONValue? = nil, query: [String: String] = [:]) -> APIRequest {
            var r = APIRequest(method: m, path: p, query: query, body: b?.serialized() ?? Data(), userAgent: "kubectl/v1.33.1")
            r.user = UserInfo(name: "alice", uid: "u-1", groups: ["devs"]).authenticated()
            r.sourceIP = "10.0.0.7"
            return r
        }
        let cm = await h.handle(req("POST", "/api/v1/namespaces/team/configmaps", ["metadata": ["name": "c"], "data": ["a": "b"]]))
        #expect(cm.code == 201)
        _ = await h.handle(req("GET", "/version"))
        _ = await h.handle(req("GET", "/api/v1/namespaces/team/pods"))
        _ = await h.handle(req("GET", "/api/v1/namespaces/other/pods"))
        _ = await h.handle(req("POST", "/api/v1/namespaces/team/secrets", ["metadata": ["name": "s"], "stringData": ["k": "v"]]))
        // A watch: started now, complete when it ends.
        let watch = await h.handle(req("GET", "/api/v1/namespaces/team/configmaps", query: ["watch": "true"]))
        let reader = Task { if case .stream(let s) = watch.body { for try await _ in s {} } }
        try await Task.sleep(for: .milliseconds(100))
        h.closeWatches()
        _ = try? await reader.value
        try await Task.sleep(for: .milliseconds(100))

        let all = try Self.events(path).dropFirst(before)
        let summary = all.map { "\($0["verb"]?.string ?? "") \($0["requestURI"]?.string ?? "") \($0["level"]?.string ?? "") \($0["stage"]?.string ?? "")" }
        #expect(summary == [
            "create /api/v1/namespaces/team/configmaps RequestResponse ResponseComplete",
            "list /api/v1/namespaces/team/pods Metadata ResponseComplete",
            "create /api/v1/namespaces/team/secrets Request ResponseComplete",
            "watch /api/v1/namespaces/team/configmaps?watch=true RequestResponse ResponseStarted",
            "watch /api/v1/namespaces/team/configmaps?watch=true RequestResponse ResponseComplete",
        ], "\(summary)")
        let e = try #require(all.first)
        #expect(e["apiVersion"] == "audit.k8s.io/v1" && e["kind"] == "Event")
        #expect(e[path: ["user", "username"]] == "alice" && e[path: ["user", "uid"]] == "u-1" && e[path: ["user", "groups"]] == ["devs", "system:authenticated"])
        #expect(e["sourceIPs"] == ["10.0.0.7"] && e["userAgent"] == "kubectl/v1.33.1")
        // The object stored: its uid and resourceVersion from the answer.
        #expect(e["objectRef"] == ["resource": "configmaps", "namespace": "team", "name": "c", "apiVersion": "v1",
                                   "uid": e[path: ["responseObject", "metadata", "uid"]] ?? .null,
                                   "resourceVersion": e[path: ["responseObject", "metadata", "resourceVersion"]] ?? .null])
        #expect(e[path: ["responseStatus", "code"]] == 201)
        #expect(e[path: ["requestObject", "data", "a"]] == "b")
        #expect(e[path: ["responseObject", "metadata", "uid"]]?.string?.isEmpty == false)
        #expect(e[path: ["responseObject", "metadata", "managedFields"]] == nil, "omitManagedFields")
        #expect(e[path: ["annotations", "authorization.k8s.io/decision"]] == "allow")
        #expect(e["auditID"]?.string?.count == 36 && e["requestReceivedTimestamp"]?.string?.hasSuffix("Z") == true)
        let metadata = all[all.startIndex + 1]
        #expect(metadata["requestObject"] == nil && metadata["responseObject"] == nil)
        let request = all[all.startIndex + 2]
        #expect(request["requestObject"] != nil && request["responseObject"] == nil)
        #expect(all[all.startIndex + 3]["auditID"] == all[all.startIndex + 4]["auditID"], "one request, two stages")
    }

    @Test func refusalsAreAuditedWithTheDecision() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-audit-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: ["AlwaysDeny"]),
                           audit: try AuditLog(policy: policy, path: path))
        var r = APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/pods/p")
        r.user = UserInfo(name: "mallory").authenticated()
        #expect(await h.handle(r).code == 403)
        let events = try Self.events(path)
        #expect(events.map { $0["stage"]?.string ?? "" } == ["RequestReceived", "ResponseComplete"])
        #expect(events.last?[path: ["annotations", "authorization.k8s.io/decision"]] == "forbid")
        #expect(events.last?[path: ["annotations", "authorization.k8s.io/reason"]] == "Everything is forbidden.")
        #expect(events.last?[path: ["responseStatus", "code"]] == 403 && events.last?[path: ["responseStatus", "reason"]] == "Forbidden")
        #expect(throws: AuditLog.Failure.self) { try AuditLog(policy: "kind: Policy\napiVersion: audit.k8s.io/v1\nrules:\n- level: Loud\n", path: path) }
        #expect(throws: AuditLog.Failure.self) { try AuditLog(policy: "kind: Policy\napiVersion: audit.k8s.io/v1\nrules:\n- level: None\n  nonResourceURLs: [/x]\n  namespaces: [a]\n", path: path) }
    }

    /// A write's events carry upstream's latency annotations (Go durations that add up within the
    /// total) and name what was stored: its uid and resourceVersion.
    @Test func writesCarryTheLatencyTrackersAndTheStoredVersion() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-audit-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let h = APIHandler(store: MeasuredStore(inner: try SQLiteStore(path: ":memory:"), metrics: APIServerMetrics()),
                           access: try AccessControl(modes: ["AlwaysAllow"]),
                           audit: try AuditLog(policy: "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n", path: path))
        try await h.bootstrap()
        var r = APIRequest(method: "POST", path: "/api/v1/namespaces/default/configmaps", contentType: "application/json",
                           body: Data(#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#.utf8))
        r.user = UserInfo(name: "alice").authenticated()
        let latency = RequestLatency()
        latency.authenticated(in: .microseconds(250))
        r.latency = latency
        let created = await h.handle(r)
        #expect(created.code == 201)
        let e = try #require(try Self.events(path).last)
        let ann = e["annotations"]?.object ?? [:]
        func seconds(_ k: String) -> Double? { ann["apiserver.latency.k8s.io/\(k)"]?.string.flatMap(Self.goSeconds) }
        #expect(ann["apiserver.latency.k8s.io/authentication"] == "250µs")
        let total = try #require(seconds("total")), etcd = try #require(seconds("etcd")), authz = try #require(seconds("authorization"))
        #expect(etcd > 0 && authz > 0 && 0.00025 + authz + etcd <= total, "\(ann)")
        #expect(e[path: ["objectRef", "resourceVersion"]]?.string == created.json?[path: ["metadata", "resourceVersion"]]?.string)
        #expect(e[path: ["objectRef", "uid"]]?.string == created.json?[path: ["metadata", "uid"]]?.string && e[path: ["objectRef", "uid"]] != nil)
        // A name made from generateName is the one recorded.
        var generated = APIRequest(method: "POST", path: "/api/v1/namespaces/default/configmaps", contentType: "application/json",
                                   body: Data(#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"g-"}}"#.utf8))
        generated.user = UserInfo(name: "alice").authenticated()
        let made = await h.handle(generated)
        let g = try #require(try Self.events(path).last)
        #expect(made.code == 201 && g[path: ["objectRef", "name"]]?.string == made.json?[path: ["metadata", "name"]]?.string && g[path: ["objectRef", "name"]] != nil)
        // The arrival is the request's, before authentication.
        #expect(e["requestReceivedTimestamp"]?.string == AuditLog.microTime(latency.received))
        // Go's duration text.
        #expect([0, 850, 3_056, 629_994, 1_500_000, 12_500_000, 1_250_000_000, 123_500_000_000, 3_723_000_000_000].map(RequestLatency.goDuration)
                == ["0s", "850ns", "3.056µs", "629.994µs", "1.5ms", "12.5ms", "1.25s", "2m3.5s", "1h2m3s"])
    }

    static func goSeconds(_ s: String) -> Double? {
        for (unit, scale) in [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)] where s.hasSuffix(unit) {
            if let v = Double(s.dropLast(unit.count)) { return v * scale }
        }
        return nil
    }
}
