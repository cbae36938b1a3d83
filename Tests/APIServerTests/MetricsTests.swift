import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Testing

struct MetricsFailure: Error { let text: String; init(_ t: String) { text = t } }

/// One metric family as the exposition text gives it: its type and each sample's labels.
struct MetricFamily {
    var type = ""
    var samples: [(name: String, labels: [String: String], value: Double)] = []
    var labelNames: Set<String> {
        Set(samples.filter { !$0.name.hasSuffix("_sum") && !$0.name.hasSuffix("_count") }.flatMap(\.labels.keys)).subtracting(["le"])
    }
}

/// Prometheus' text format, read into families (enough of it for what the servers write).
func parseMetrics(_ text: String) -> [String: MetricFamily] {
    var out: [String: MetricFamily] = [:]
    for line in text.split(separator: "\n") {
        if line.hasPrefix("# TYPE ") {
            let f = line.split(separator: " ")
            out[String(f[2]), default: MetricFamily()].type = String(f[3])
            continue
        }
        guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        let head = line[..<space]
        var name = String(head), labels: [String: String] = [:]
        if let brace = head.firstIndex(of: "{") {
            name = String(head[..<brace])
            var rest = head[head.index(after: brace)...].dropLast()
            while let eq = rest.firstIndex(of: "=") {
                let key = String(rest[..<eq]).trimmingCharacters(in: CharacterSet(charactersIn: ","))
                let afterQuote = rest.index(eq, offsetBy: 2)
                guard let close = rest[afterQuote...].firstIndex(of: "\"") else { break }
                labels[key] = String(rest[afterQuote..<close])
                rest = rest[rest.index(after: close)...]
            }
        }
        var family = name
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && out[String(name.dropLast(suffix.count))] != nil {
            family = String(name.dropLast(suffix.count))
        }
        out[family, default: MetricFamily()].samples.append((name, labels, value))
    }
    return out
}

/// kube-apiserver's metrics, served as upstream serves them: the names, types and label names of
/// upstream's stable list (test/instrumentation/testdata/stable-metrics-list.yaml) and of the
/// etcd3 storage metrics, each request labelled as upstream labels it, the counts true.
@Suite struct APIServerMetricsTests {
    /// Upstream's: name, type, label names, buckets (nil: not a histogram).
    static let upstream: [(name: String, type: String, labels: Set<String>, buckets: [Double]?)] = [
        ("apiserver_request_total", "counter",
         ["code", "component", "dry_run", "group", "resource", "scope", "subresource", "system_client", "verb", "version"], nil),
        ("apiserver_request_duration_seconds", "histogram",
         ["component", "dry_run", "group", "resource", "scope", "subresource", "verb", "version"],
         [0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60]),
        ("apiserver_response_sizes", "histogram", ["component", "group", "resource", "scope", "subresource", "verb", "version"],
         [1000, 10000, 100000, 1e6, 1e7, 1e8, 1e9]),
        ("apiserver_longrunning_requests", "gauge", ["component", "group", "resource", "scope", "subresource", "verb", "version"], nil),
        ("apiserver_current_inflight_requests", "gauge", ["request_kind"], nil),
        ("apiserver_storage_objects", "gauge", ["resource"], nil),
        ("etcd_request_duration_seconds", "histogram", ["operation", "type"],
         [0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60]),
        ("etcd_requests_total", "counter", ["operation", "type"], nil),
    ]

    static func handler() async throws -> APIHandler {
        let metrics = APIServerMetrics()
        let h = APIHandler(store: MeasuredStore(inner: try SQLiteStore(path: ":memory:"), metrics: metrics),
                           admission: Admission(allocator: Allocator(serviceRange: CIDR("10.96.0.0/24")!, nodePorts: 30000...30010)),
                           metrics: metrics)
        let r = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": "default"]])))
        #expect(r.code == 201)
        return h
    }

    static func scrape(_ h: APIHandler) async throws -> [String: MetricFamily] {
        let r = await h.handle(APIRequest(method: "GET", path: "/metrics"))
        #expect(r.code == 200 && r.contentType.hasPrefix("text/plain; version=0.0.4"))
        guard case .bytes(let d, _) = r.body else { throw MetricsFailure("/metrics answered \(r.body)") }
        return parseMetrics(String(decoding: d, as: UTF8.self))
    }

    static func value(_ f: [String: MetricFamily], _ name: String, _ labels: [String: String], sample: String? = nil) -> Double? {
        f[name]?.samples.first { s in s.name == (sample ?? name) && labels.allSatisfy { k, v in s.labels[k] == v } }?.value
    }

    @Test func requestsAreCountedTimedAndLabelledAsUpstream() async throws {
        let h = try await Self.handler()
        let services = "/api/v1/namespaces/default/services"
        #expect(await h.handle(APIRequest(method: "POST", path: services, body: body(svc("web")))).code == 201)
        #expect(await h.handle(APIRequest(method: "POST", path: services, query: ["dryRun": "All"], body: body(svc("dry")))).code == 201)
        let got = await h.handle(APIRequest(method: "GET", path: services + "/web"))
        #expect(got.code == 200)
        got.sized?(900)   // what the transport does once it has encoded the answer
        #expect(await h.handle(APIRequest(method: "GET", path: services + "/none")).code == 404)
        #expect(await h.handle(APIRequest(method: "GET", path: "/api/v1/services")).code == 200)
        var apply = APIRequest(method: "PATCH", path: services + "/applied", query: ["fieldManager": "test"],
                               contentType: "application/apply-patch+yaml", body: body(svc("applied").merging(["apiVersion": "v1", "kind": "Service"])))
        apply.userAgent = "kube-controller-manager/v1.33.0 (linux/amd64)"
        #expect(await h.handle(apply).code == 201)
        _ = await h.handle(APIRequest(method: "GET", path: "/healthz"))
        // What is not served counts under one label set, however many names clients try.
        for i in 0..<5 {
            #expect(await h.handle(APIRequest(method: "GET", path: "/apis/made.up/v1/things\(i)")).code == 404)
            #expect(await h.handle(APIRequest(method: "GET", path: "/nothing\(i)")).code == 404)
            #expect(await h.handle(APIRequest(method: "GET", path: "/api/v1/widgets\(i)", query: ["watch": "1"])).code == 404)
        }
        _ = await h.handle(APIRequest(method: "GET", path: "/api/v1/pods", query: ["watch": "1"]))

        let f = try await Self.scrape(h)
        // Every family upstream serves, with its type, label names and buckets.
        for m in Self.upstream {
            guard let family = f[m.name] else {
                Issue.record("\(m.name) is not served")
                continue
            }
            #expect(family.type == m.type, "\(m.name)")
            #expect(family.labelNames == m.labels, "\(m.name)'s labels")
            if let buckets = m.buckets {
                let served = Set(family.samples.filter { $0.name == m.name + "_bucket" }.compactMap { $0.labels["le"] }.compactMap(Double.init))
                #expect(served == Set(buckets + [.infinity]), "\(m.name)'s buckets")
            }
        }
        let core = ["group": "", "version": "v1", "resource": "services", "component": "apiserver"]
        func total(_ l: [String: String]) -> Double? { Self.value(f, "apiserver_request_total", core.merging(l) { $1 }) }
        #expect(total(["verb": "POST", "code": "201", "scope": "namespace", "dry_run": "", "system_client": ""]) == 1)
        #expect(total(["verb": "POST", "code": "201", "dry_run": "All"]) == 1)
        #expect(total(["verb": "GET", "code": "200", "scope": "namespace"]) == 1)
        #expect(total(["verb": "GET", "code": "404"]) == 1)
        #expect(total(["verb": "LIST", "code": "200", "scope": "cluster"]) == 1)
        #expect(total(["verb": "APPLY", "code": "201", "system_client": "kube-controller-manager"]) == 1)
        #expect(Self.value(f, "apiserver_request_total", ["verb": "GET", "subresource": "/healthz", "resource": "", "scope": ""]) == 1)
        #expect(Self.value(f, "apiserver_request_total", ["verb": "GET", "code": "404", "subresource": "other", "resource": "", "group": ""]) == 5)
        #expect(Self.value(f, "apiserver_request_total", ["verb": "LIST", "code": "404", "subresource": "other", "resource": "", "group": ""]) == 5)
        #expect(Self.value(f, "apiserver_request_total", ["verb": "WATCH", "code": "404", "subresource": "other", "resource": ""]) == 5)
        #expect(!(f["apiserver_request_total"]?.samples.contains { $0.labels["group"] == "made.up" || $0.labels["resource"]?.hasPrefix("widgets") == true } ?? true))
        #expect(!(f["apiserver_longrunning_requests"]?.samples.contains { $0.labels["resource"]?.hasPrefix("widgets") == true } ?? true))
        #expect(Self.value(f, "apiserver_request_duration_seconds", core.merging(["verb": "POST", "dry_run": ""]) { $1 },
                           sample: "apiserver_request_duration_seconds_count") == 1)
        // Stored: two Services (not the dry run's) and the namespace.
        #expect(Self.value(f, "apiserver_storage_objects", ["resource": "services"]) == 2)
        #expect(Self.value(f, "apiserver_storage_objects", ["resource": "namespaces"]) == 1)
        #expect(Self.value(f, "apiserver_storage_objects", ["resource": "deployments.apps"]) == 0)
        // The store's calls, by operation and group-resource.
        #expect((Self.value(f, "etcd_requests_total", ["operation": "create", "type": "services"]) ?? 0) == 2)
        #expect((Self.value(f, "etcd_request_duration_seconds", ["operation": "get", "type": "services"],
                            sample: "etcd_request_duration_seconds_count") ?? 0) >= 2)
        // The scrape itself was in flight, a read.
        #expect(Self.value(f, "apiserver_current_inflight_requests", ["request_kind": "readOnly"]) != nil)
        #expect(Self.value(f, "apiserver_current_inflight_requests", ["request_kind": "mutating"]) != nil)
    }

    @Test func responseSizesAreThoseSent() async throws {
        let h = try await Self.handler()
        let r = await h.handle(APIRequest(method: "GET", path: "/api/v1/namespaces/default"))
        #expect(r.code == 200)
        guard case .json(let j) = r.body else { throw MetricsFailure("not JSON") }
        r.sized?(j.bytes().count + 1)
        let f = try await Self.scrape(h)
        let labels = ["verb": "GET", "resource": "namespaces", "scope": "namespace"]
        #expect(Self.value(f, "apiserver_response_sizes", labels, sample: "apiserver_response_sizes_sum") == Double(j.bytes().count + 1))
        let first = f["apiserver_response_sizes"]?.samples.first {
            $0.name == "apiserver_response_sizes_bucket" && $0.labels["resource"] == "namespaces" && $0.labels["le"].flatMap(Double.init) == 1000
        }
        #expect(first?.value == 1, "a namespace's JSON is under 1 kB")
    }

    @Test func aWatchIsLongRunningWhileItLasts() async throws {
        let h = try await Self.handler()
        let r = await h.handle(APIRequest(method: "GET", path: "/api/v1/namespaces/default/pods", query: ["watch": "true"]))
        guard case .stream(let s) = r.body else { throw MetricsFailure("not a watch") }
        let watching = ["verb": "WATCH", "resource": "pods", "scope": "namespace"]
        var f = try await Self.scrape(h)
        #expect(Self.value(f, "apiserver_longrunning_requests", watching) == 1)
        #expect(Self.value(f, "apiserver_request_total", watching.merging(["code": "200"]) { $1 }) == 1)
        // Read (and so consumed) by a task that is then cancelled: the stream ends.
        let reader = Task { for try await _ in s {} }
        reader.cancel()
        _ = await reader.result
        var open: Double? = 1
        for _ in 0..<100 where open != 0 {
            try await Task.sleep(for: .milliseconds(20))
            f = try await Self.scrape(h)
            open = Self.value(f, "apiserver_longrunning_requests", watching)
        }
        #expect(open == 0, "the watch's end is counted")
    }

    @Test func onlyThoseAllowedReadTheMetrics() async throws {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: ["RBAC"]))
        try await h.bootstrap()
        try await h.reconcileDefaultPolicy()
        func get(_ u: UserInfo) async -> Int {
            var r = APIRequest(method: "GET", path: "/metrics")
            r.user = u
            return await h.handle(r).code
        }
        #expect(await get(UserInfo(name: "prometheus", groups: ["system:monitoring", UserInfo.allAuthenticated])) == 200, "system:monitoring")
        #expect(await get(UserInfo(name: "alice", groups: [UserInfo.allAuthenticated])) == 403)
        #expect(await get(UserInfo(name: "admin", groups: ["system:masters", UserInfo.allAuthenticated])) == 200)
    }

    @Test func storeKeysAreNamedByGroupResource() {
        #expect(MeasuredStore.type(of: "/registry/core/pods/default/web") == "pods")
        #expect(MeasuredStore.type(of: "/registry/apps/deployments/default/web") == "deployments.apps")
        #expect(MeasuredStore.type(of: "/registry/networking.k8s.io/ingresses/") == "ingresses.networking.k8s.io")
        #expect(MeasuredStore.type(of: "/registry/ipaddresses/10.96.0.1") == "ipaddresses")
    }
}
