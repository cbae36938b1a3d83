import Foundation
import KubeAPI
import Logging
import NIOHTTP1
import ProxySeam

/// `/healthz` and `/livez` state, as kube-proxy reports it on :10256.
public final class HealthState: @unchecked Sendable {
    private let lock = NSLock()
    private var lastUpdated: Date?
    private var lastQueued: Date?
    private let healthTimeout: TimeInterval

    public init(healthTimeout: TimeInterval = 120) { self.healthTimeout = healthTimeout }

    public func queued() { lock.withLock { if lastQueued == nil || (lastUpdated ?? .distantPast) >= lastQueued! { lastQueued = Date() } } }
    public func updated() { lock.withLock { lastUpdated = Date(); lastQueued = nil } }

    /// Healthy when no update has been pending for longer than the timeout.
    public var isHealthy: Bool {
        lock.withLock {
            guard lastUpdated != nil else { return false }
            if let q = lastQueued, Date().timeIntervalSince(q) > healthTimeout { return false }
            return true
        }
    }

    /// kube-proxy's answer on `/healthz` and `/livez` (upstream's `proxy_health.go`): 200 or 503
    /// with `lastUpdated`, `currentTime`, `healthy` and the per-family `status`; `/healthz` also
    /// says whether the node is eligible (this proxy does not read Node objects: always true).
    public func response(path: String, family: String = "IPv4") -> SimpleResponse {
        let updated = lock.withLock { lastUpdated }
        let ok = isHealthy
        let fmt = ISO8601DateFormatter()
        fmt.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let last = updated.map { fmt.string(from: $0) } ?? ""
        var body = "{\"lastUpdated\": \"\(last)\",\"currentTime\": \"\(fmt.string(from: Date()))\""
        if path == "/healthz" { body += ", \"nodeEligible\": true" }
        body += ", \"healthy\": \(ok), \"status\": {\"\(family)\": {\"lastUpdated\": \"\(last)\", \"healthy\": \(ok)}}}"
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
