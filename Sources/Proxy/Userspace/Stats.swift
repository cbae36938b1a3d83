import Prometheus
import Synchronization

/// The counters of one service port, as Prometheus metrics labelled with the
/// service port (`ns/name:port`, upstream's spelling) and protocol. Updated by the
/// data path without locks; shared by a port's internal and external listeners.
public final class PortStats: Sendable {
    public let servicePort: String
    public let proto: String
    let active: Gauge
    let connections: Counter
    let toEndpoint: Counter
    let toClient: Counter
    let dialFailures: Counter
    private let registry: PrometheusCollectorRegistry?
    private let counts = Counts()

    final class Counts: Sendable {
        let active = Atomic<Int>(0)
        let connections = Atomic<Int>(0)
        let dialFailures = Atomic<Int>(0)
        let bytes = Atomic<Int>(0)
    }

    public static let activeName = "kubeproxy_userspace_active_connections"
    public static let connectionsName = "kubeproxy_userspace_connections_total"
    public static let bytesName = "kubeproxy_userspace_bytes_total"
    public static let dialFailuresName = "kubeproxy_userspace_dial_failures_total"

    public init(servicePort: String, proto: String, registry: PrometheusCollectorRegistry?) {
        self.servicePort = servicePort
        self.proto = proto
        self.registry = registry
        let r = registry ?? PrometheusCollectorRegistry()
        let labels = [("service_port", servicePort), ("protocol", proto)]
        active = r.makeGauge(descriptor: Self.d(Self.activeName, "Open TCP connections or UDP flows through the proxy"), labels: labels)
        connections = r.makeCounter(descriptor: Self.d(Self.connectionsName, "TCP connections accepted or UDP flows started"), labels: labels)
        toEndpoint = r.makeCounter(descriptor: Self.d(Self.bytesName, "Bytes carried by the proxy"), labels: labels + [("direction", "to_endpoint")])
        toClient = r.makeCounter(descriptor: Self.d(Self.bytesName, "Bytes carried by the proxy"), labels: labels + [("direction", "to_client")])
        dialFailures = r.makeCounter(descriptor: Self.d(Self.dialFailuresName, "Connections to an endpoint that failed or timed out"), labels: labels)
    }

    private static func d(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func opened() {
        counts.active.add(1, ordering: .relaxed)
        counts.connections.add(1, ordering: .relaxed)
        active.increment()
        connections.increment()
    }

    func closed() {
        counts.active.subtract(1, ordering: .relaxed)
        active.decrement()
    }

    func dialFailed() {
        counts.dialFailures.add(1, ordering: .relaxed)
        dialFailures.increment()
    }

    func carried(_ n: Int, toEndpoint: Bool) {
        counts.bytes.add(n, ordering: .relaxed)
        (toEndpoint ? self.toEndpoint : toClient).increment(by: Int64(n))
    }

    public var activeCount: Int { counts.active.load(ordering: .relaxed) }
    public var connectionCount: Int { counts.connections.load(ordering: .relaxed) }
    public var dialFailureCount: Int { counts.dialFailures.load(ordering: .relaxed) }
    public var byteCount: Int { counts.bytes.load(ordering: .relaxed) }

    /// Removes the metrics from the registry (the service port is gone).
    func unregister() {
        guard let registry else { return }
        registry.unregisterGauge(active)
        registry.unregisterCounter(connections)
        registry.unregisterCounter(toEndpoint)
        registry.unregisterCounter(toClient)
        registry.unregisterCounter(dialFailures)
    }
}
