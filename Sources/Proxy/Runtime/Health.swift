import Foundation
import KubeAPI
import Logging
import NIOHTTP1
import ProxySeam

/// `/healthz` and `/livez` state, as kube-proxy reports it on :10256: per IP family (a dual-stack
/// proxy's runners each report theirs), healthy when every family is.
public final class HealthState: @unchecked Sendable {
    private struct Family {
        var lastUpdated: Date?
        var lastQueued: Date?
    }
    private let lock = NSLock()
    private var families: [String: Family] = [:]
    private var order: [String] = []
    private let healthTimeout: TimeInterval

    /// `families`: those whose runners report here, the primary first (they must all have synced
    /// before the proxy is healthy).
    public init(healthTimeout: TimeInterval = 120, families: [String] = ["IPv4"]) {
        self.healthTimeout = healthTimeout
        for f in families where self.families[f] == nil {
            self.families[f] = Family()
            order.append(f)
        }
    }

    private func with(_ family: String, _ body: (inout Family) -> Void) {
        lock.withLock {
            if families[family] == nil { order.append(family) }
            body(&families[family, default: Family()])
        }
    }

    public func queued(_ family: String = "IPv4") {
        with(family) { f in if f.lastQueued == nil || (f.lastUpdated ?? .distantPast) >= f.lastQueued! { f.lastQueued = Date() } }
    }
    public func updated(_ family: String = "IPv4") { with(family) { $0.lastUpdated = Date(); $0.lastQueued = nil } }

    private func healthy(_ f: Family, now: Date) -> Bool {
        guard f.lastUpdated != nil else { return false }
        if let q = f.lastQueued, now.timeIntervalSince(q) > healthTimeout { return false }
        return true
    }

    /// Healthy when every family has synced and none has had an update pending for longer than the timeout.
    public var isHealthy: Bool {
        let now = Date()
        return lock.withLock { order.allSatisfy { healthy(families[$0]!, now: now) } }
    }

    /// kube-proxy's answer on `/healthz` and `/livez` (upstream's `proxy_health.go`): 200 or 503
    /// with `lastUpdated` (the oldest family's), `currentTime`, `healthy` and the per-family
    /// `status`; `/healthz` also says whether the node is eligible (this proxy does not read Node
    /// objects: always true).
    public func response(path: String) -> SimpleResponse {
        let now = Date()
        let (entries, ok) = lock.withLock { () -> ([(String, Date?, Bool)], Bool) in
            let e = order.map { ($0, families[$0]!.lastUpdated, healthy(families[$0]!, now: now)) }
            return (e, e.allSatisfy(\.2))
        }
        let fmt = ISO8601DateFormatter()
        fmt.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        func text(_ d: Date?) -> String { d.map { fmt.string(from: $0) } ?? "" }
        let oldest = entries.contains { $0.1 == nil } ? nil : entries.compactMap(\.1).min()
        var body = "{\"lastUpdated\": \"\(text(oldest))\",\"currentTime\": \"\(fmt.string(from: now))\""
        if path == "/healthz" { body += ", \"nodeEligible\": true" }
        let status = entries.map { "\"\($0.0)\": {\"lastUpdated\": \"\(text($0.1))\", \"healthy\": \($0.2)}" }.joined(separator: ", ")
        body += ", \"healthy\": \(ok), \"status\": {\(status)}}"
        return SimpleResponse(status: ok ? .ok : .serviceUnavailable,
                              headers: [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")],
                              body: body)
    }
}

/// Serves each `externalTrafficPolicy: Local` service's `healthCheckNodePort`,
/// answering 200 with the number of local endpoints, or 503 when there are none,
/// as kube-proxy's service health server does.
public actor ServiceHealthServers {
    struct Entry {
        var server: SimpleHTTPServer
        var state: HCState
    }
    final class HCState: @unchecked Sendable {
        let lock = NSLock()
        var service: NamespacedName
        var localEndpoints = 0
        init(service: NamespacedName) { self.service = service }
    }

    private var servers: [Int: Entry] = [:]
    private let bindHost: String
    private let logger: Logger

    public init(bindHost: String = "0.0.0.0", logger: Logger = Logger(label: "switchyard.healthcheck")) {
        self.bindHost = bindHost
        self.logger = logger
    }

    public var ports: [Int] { servers.keys.sorted() }

    /// Open and close listeners to match the snapshot.
    public func sync(_ snap: ProxySnapshot) async {
        var want: [Int: (NamespacedName, Int)] = [:]
        for (name, info) in snap.servicePorts where info.healthCheckNodePort != 0 {
            let local = (snap.endpoints[name] ?? []).filter { $0.isLocal && $0.ready }.count
            let prev = want[info.healthCheckNodePort]?.1 ?? 0
            want[info.healthCheckNodePort] = (name.service, max(prev, local))
        }
        for (port, e) in servers where want[port] == nil {
            await e.server.close()
            servers[port] = nil
        }
        for (port, (svc, local)) in want {
            if let e = servers[port] {
                e.state.lock.withLock { e.state.service = svc; e.state.localEndpoints = local }
                continue
            }
            let state = HCState(service: svc)
            state.localEndpoints = local
            do {
                let server = try await SimpleHTTPServer(host: bindHost, port: port) { _, _ in
                    let (svc, n) = state.lock.withLock { (state.service, state.localEndpoints) }
                    let body = "{\"service\":{\"namespace\":\"\(svc.namespace)\",\"name\":\"\(svc.name)\"},\"localEndpoints\":\(n),\"serviceProxyHealthy\":true}"
                    return SimpleResponse(status: n > 0 ? .ok : .serviceUnavailable,
                                          headers: [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
                                                    ("X-Load-Balancing-Endpoint-Weight", String(n))],
                                          body: body)
                }
                servers[port] = Entry(server: server, state: state)
            } catch {
                logger.error("failed to open health check node port \(port) for \(svc): \(error)")
            }
        }
    }

    public func closeAll() async {
        for (_, e) in servers { await e.server.close() }
        servers = [:]
    }
}
