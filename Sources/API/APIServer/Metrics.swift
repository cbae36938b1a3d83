import APIAccess
import Foundation
import KubeStore
import Prometheus
import Synchronization

/// kube-apiserver's own metrics on `/metrics`, with upstream's names, types, help texts, label
/// names and buckets (k8s.io/apiserver's `endpoints/metrics` and `storage/etcd3/metrics`):
/// every request counted and timed by verb, group, version, resource, subresource and scope; the
/// requests in flight by kind; the long-running ones open; the objects stored per resource; and
/// each storage call timed as `etcd_request_duration_seconds` (on SQLite too: the store plays
/// etcd's part, as kine does under k3s).
public final class APIServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    /// `apiserver_request_duration_seconds`' buckets (also the storage calls').
    static let latencyBuckets: [Duration] = [5, 25, 50, 100, 200, 400, 600, 800, 1000, 1250, 1500, 2000, 3000, 4000, 5000, 6000, 8000,
                                             10000, 15000, 20000, 30000, 45000, 60000].map { .milliseconds($0) }
    /// `apiserver_response_sizes`' buckets: 1 kB to 1 GB by tens.
    static let sizeBuckets: [Double] = [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]

    static var requestTotal: MetricNameDescriptor { MetricNameDescriptor(metricName: "apiserver_request_total", unitName: "",
        helpText: "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.") }
    static var requestDuration: MetricNameDescriptor { MetricNameDescriptor(metricName: "apiserver_request_duration_seconds", unitName: "",
        helpText: "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.") }
    static var responseSizes: MetricNameDescriptor { MetricNameDescriptor(metricName: "apiserver_response_sizes", unitName: "",
        helpText: "Response size distribution in bytes for each group, version, verb, resource, subresource, scope and component.") }
    static var longRunning: MetricNameDescriptor { MetricNameDescriptor(metricName: "apiserver_longrunning_requests", unitName: "",
        helpText: "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component. Not all requests are tracked this way.") }
    static var inflight: MetricNameDescriptor { MetricNameDescriptor(metricName: "apiserver_current_inflight_requests", unitName: "",
        helpText: "Maximal number of currently used inflight request limit of this apiserver per request kind in last second.") }
    static var storageObjects: MetricNameDescriptor { MetricNameDescriptor(metricName: "apiserver_storage_objects", unitName: "",
        helpText: "Number of stored objects at the time of last check split by kind. In case of a fetching error, the value will be -1.") }
    static var etcdDuration: MetricNameDescriptor { MetricNameDescriptor(metricName: "etcd_request_duration_seconds", unitName: "",
        helpText: "Etcd request latency in seconds for each operation and object type.") }
    static var etcdTotal: MetricNameDescriptor { MetricNameDescriptor(metricName: "etcd_requests_total", unitName: "",
        helpText: "Etcd request counts for each operation and object type.") }
    static var etcdErrors: MetricNameDescriptor { MetricNameDescriptor(metricName: "etcd_request_errors_total", unitName: "",
        helpText: "Etcd failed request counts for each operation and object type.") }

    /// Requests in flight, by kind (read-only, mutating): now, the most in the current second,
    /// and the most in the last whole second (what the gauge shows, as upstream's watermark).
    struct Inflight {
        var now = [0, 0], windowMost = [0, 0], lastMost = [0, 0]
        var windowStart = ContinuousClock.now
        mutating func roll(_ at: ContinuousClock.Instant) {
            let passed = at - windowStart
            guard passed >= .seconds(1) else { return }
            // A window with no change since had its most at what is in flight now.
            lastMost = passed >= .seconds(2) ? now : windowMost
            windowMost = now
            windowStart = at
        }
    }
    private let inflightState = Mutex(Inflight())
    private let inflightGauges: [Gauge]

    public init() {
        let r = registry
        inflightGauges = ["readOnly", "mutating"].map { r.makeGauge(descriptor: Self.inflight, labels: [("request_kind", $0)]) }
    }

    /// What one request is counted as: upstream's labels, worked out once.
    public struct Labels: Sendable {
        var verb: String, dryRun: String, group: String, version: String, resource: String, subresource: String, scope: String
        var systemClient: String
        /// Not counted in flight: watches and connections (exec, attach, port-forward, proxy).
        var longRunning: Bool
        var readOnly: Bool

        /// A request for what is not served (a 404 for an unknown resource or path) counts under
        /// one label set, so that clients asking for random names cannot grow the series without end.
        mutating func unmatched() {
            group = ""; version = ""; resource = ""; subresource = "other"; scope = ""
        }

        var common: [(String, String)] {
            [("component", "apiserver"), ("group", group), ("resource", resource), ("scope", scope), ("subresource", subresource),
             ("verb", verb), ("version", version)]
        }
    }

    /// The components whose requests `system_client` names (by their `User-Agent`'s first word).
    static let systemClients: Set<String> = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    /// The paths outside the resources counted by their own name; others count as `other`.
    static let knownPaths: Set<String> = ["/api", "/apis", "/healthz", "/livez", "/readyz", "/version", "/metrics", "/openapi/v2", "/openapi/v3",
                                           "/.well-known/openid-configuration", "/openid/v1/jwks"]

    /// A request's labels, as upstream's `MonitorRequest` reports them: the verb as the route
    /// names it (`POST`, `PUT`, `LIST`, `WATCH`, `APPLY` for a server-side apply, `CONNECT` for
    /// exec and its kin), the scope, and for a path outside the resources, the path.
    public static func labels(_ a: RequestAttributes, _ req: APIRequest) -> Labels {
        let readOnly = ["GET", "HEAD", "OPTIONS"].contains(req.method)
        guard a.isResourceRequest else {
            let path = a.path.count > 1 && a.path.hasSuffix("/") ? String(a.path.dropLast()) : a.path
            return Labels(verb: req.method.uppercased(), dryRun: "", group: "", version: "", resource: "",
                          subresource: knownPaths.contains(path) || path.hasPrefix("/apis/") || path.hasPrefix("/api/") || path.hasPrefix("/openapi/v3/") ? path : "other",
                          scope: "", systemClient: systemClient(req.userAgent), longRunning: false, readOnly: readOnly)
        }
        var verb: String
        switch a.verb {
        case "create": verb = "POST"
        case "update": verb = "PUT"
        case "patch": verb = req.contentType?.hasPrefix("application/apply-patch") == true ? "APPLY" : "PATCH"
        default: verb = a.verb.uppercased()
        }
        let connect = ["exec", "attach", "portforward", "proxy"].contains(a.subresource)
        if connect { verb = "CONNECT" }
        let scope = !a.namespace.isEmpty ? "namespace" : !a.name.isEmpty ? "resource" : "cluster"
        return Labels(verb: verb, dryRun: req.query["dryRun"] ?? "", group: a.apiGroup, version: a.apiVersion, resource: a.resource,
                      subresource: a.subresource, scope: scope, systemClient: systemClient(req.userAgent),
                      longRunning: verb == "WATCH" || connect, readOnly: readOnly)
    }

    static func systemClient(_ userAgent: String?) -> String {
        guard let ua = userAgent, let first = ua.split(separator: "/", maxSplits: 1).first else { return "" }
        let name = String(first)
        return systemClients.contains(name) ? name : ""
    }

    /// A request begins: counted in flight unless it is long-running.
    func begin(_ l: Labels) {
        guard !l.longRunning else { return }
        let k = l.readOnly ? 0 : 1
        inflightState.withLock { s in
            s.roll(.now)
            s.now[k] += 1
            s.windowMost[k] = max(s.windowMost[k], s.now[k])
        }
    }

    /// A request was answered (a watch: when its stream began) with `code` after `elapsed`.
    func end(_ l: Labels, code: Int, elapsed: Duration) {
        if !l.longRunning {
            let k = l.readOnly ? 0 : 1
            inflightState.withLock { s in
                s.roll(.now)
                s.now[k] -= 1
            }
        }
        let common = l.common
        registry.makeCounter(descriptor: Self.requestTotal,
                             labels: [("code", String(code))] + common.prefix(1) + [("dry_run", l.dryRun)] + common.dropFirst().prefix(4)
                                 + [("system_client", l.systemClient)] + common.suffix(2)).increment()
        registry.makeDurationHistogram(descriptor: Self.requestDuration,
                                       labels: common.prefix(1) + [("dry_run", l.dryRun)] + common.dropFirst(),
                                       buckets: Self.latencyBuckets).record(elapsed)
    }

    /// The gauge of open long-running requests with these labels.
    func longRunningGauge(_ l: Labels) -> Gauge {
        registry.makeGauge(descriptor: Self.longRunning, labels: l.common)
    }

    /// While a long-running request is routed: its labels, for the gauge its stream holds up
    /// while it lasts (made once the stream is, so an unknown resource adds no series).
    @TaskLocal static var openLongRunning: Labels?

    /// A read's answer was `bytes` long (upstream counts the sizes of GET and LIST answers only).
    func sized(_ l: Labels, _ bytes: Int) {
        guard l.verb == "GET" || l.verb == "LIST" else { return }
        registry.makeValueHistogram(descriptor: Self.responseSizes, labels: l.common, buckets: Self.sizeBuckets).record(Double(bytes))
    }

    /// One call to the store, by upstream's operation name and the group-resource it was for.
    public func storageCall(_ operation: String, type: String, failed: Bool, elapsed: Duration) {
        let labels = [("operation", operation), ("type", type)]
        registry.makeDurationHistogram(descriptor: Self.etcdDuration, labels: labels, buckets: Self.latencyBuckets).record(elapsed)
        registry.makeCounter(descriptor: Self.etcdTotal, labels: labels).increment()
        if failed { registry.makeCounter(descriptor: Self.etcdErrors, labels: labels).increment() }
    }

    /// The exposition text, with the objects stored per resource counted now (-1 where the
    /// count failed).
    func text(objects: [(resource: String, count: Int)]) -> String {
        let shown = inflightState.withLock { s in
            s.roll(.now)
            return s.lastMost
        }
        for (g, v) in zip(inflightGauges, shown) { g.set(to: Double(v)) }
        for o in objects { registry.makeGauge(descriptor: Self.storageObjects, labels: [("resource", o.resource)]).set(to: Double(o.count)) }
        return registry.emitToString()
    }
}

/// A store whose every call is timed into `etcd_request_duration_seconds` and counted into
/// `etcd_requests_total` (and `etcd_request_errors_total` when it fails), labelled as upstream's
/// etcd3 store labels them: the operation, and the group-resource (`pods`, `deployments.apps`)
/// the key belongs to.
public struct MeasuredStore: Store {
    public let inner: any Store
    let metrics: APIServerMetrics

    public init(inner: any Store, metrics: APIServerMetrics) {
        self.inner = inner
        self.metrics = metrics
    }

    /// The group-resource of a key (`/registry/core/pods/…` is `pods`, `/registry/apps/deployments/…`
    /// `deployments.apps`); a key outside the resources' layout is named by its first segment.
    static func type(of key: String) -> String {
        let parts = key.utf8.split(separator: UInt8(ascii: "/"), maxSplits: 3, omittingEmptySubsequences: true)
        guard parts.count >= 2 else { return "" }
        let first = String(Substring(parts[1]))
        guard parts.count >= 3 else { return first }
        let second = String(Substring(parts[2]))
        if first == "core" { return second }
        if first.contains(".") || ["apps", "batch", "policy", "autoscaling", "extensions"].contains(first) { return second + "." + first }
        return first
    }

    func measured<T>(_ operation: String, _ key: String, _ call: () async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        do {
            let r = try await call()
            let elapsed = ContinuousClock.now - start
            metrics.storageCall(operation, type: Self.type(of: key), failed: false, elapsed: elapsed)
            RequestLatency.current?.stored(in: elapsed)
            return r
        } catch {
            // An answer the caller asked for (absent, taken, changed meanwhile) is not a failure.
            let expected: Bool
            switch error as? StoreError {
            case .notFound?, .exists?, .conflict?: expected = true
            default: expected = false
            }
            let elapsed = ContinuousClock.now - start
            metrics.storageCall(operation, type: Self.type(of: key), failed: !expected, elapsed: elapsed)
            RequestLatency.current?.stored(in: elapsed)
            throw error
        }
    }

    public func currentRevision() async throws -> Int64 { try await inner.currentRevision() }
    public func currentRevision(prefix: String) async throws -> Int64 { try await inner.currentRevision(prefix: prefix) }
    public func get(_ key: String) async throws -> KeyValue? { try await measured("get", key) { try await inner.get(key) } }
    @discardableResult
    public func create(_ key: String, value: Data) async throws -> KeyValue {
        try await measured("create", key) { try await inner.create(key, value: value) }
    }
    @discardableResult
    public func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue {
        try await measured("update", key) { try await inner.update(key, value: value, expected: expected) }
    }
    @discardableResult
    public func delete(_ key: String, expected: Int64?) async throws -> KeyValue {
        try await measured("delete", key) { try await inner.delete(key, expected: expected) }
    }
    public func list(prefix: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage {
        try await measured("list", prefix) { try await inner.list(prefix: prefix, after: after, limit: limit, revision: revision) }
    }
    public func count(prefix: String, after: String?, revision: Int64?) async throws -> Int {
        try await measured("count", prefix) { try await inner.count(prefix: prefix, after: after, revision: revision) }
    }
    public func watch(prefix: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        try await inner.watch(prefix: prefix, after: revision)
    }
    public func compact(through revision: Int64) async throws { try await inner.compact(through: revision) }
}

extension APIHandler {
    /// The objects stored per resource, as `apiserver_storage_objects` names them (`pods`,
    /// `deployments.apps`): one count per place in the store, -1 where counting failed.
    func storedObjects() async -> [(resource: String, count: Int)] {
        var seen: Set<String> = []
        var out: [(resource: String, count: Int)] = []
        for r in registry.resources where !(r.strategy is ReviewStrategy) {
            let prefix = r.storePrefix
            guard seen.insert(prefix).inserted else { continue }
            let (group, resource) = r.strategy.storedAs ?? (r.group, r.resource)
            let count = (try? await store.count(prefix: prefix)) ?? -1
            out.append((group.isEmpty ? resource : "\(resource).\(group)", count))
        }
        return out
    }
}
