import Prometheus

/// kube-proxy's metrics, with kube-proxy's names, in a Prometheus registry.
public final class ProxyMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    static let buckets: [Duration] = (0..<15).map { .microseconds(1000 * (1 << $0)) }

    public let syncDuration: DurationHistogram
    public let syncFullDuration: DurationHistogram
    public let syncPartialDuration: DurationHistogram
    public let lastSyncTimestamp: Gauge
    public let lastQueuedTimestamp: Gauge
    public let restoreFailures: Counter
    public let partialRestoreFailures: Counter
    public let syncFailures: Counter
    public let rulesLastSync: Gauge
    public let servicesChanges: Counter
    public let networkProgramming: DurationHistogram
    public let noLocalInternal: Gauge
    public let noLocalExternal: Gauge

    public init(mode: String) {
        syncDuration = registry.makeDurationHistogram(descriptor: Self.d("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds"), buckets: Self.buckets)
        syncFullDuration = registry.makeDurationHistogram(descriptor: Self.d("kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs"), buckets: Self.buckets)
        syncPartialDuration = registry.makeDurationHistogram(descriptor: Self.d("kubeproxy_sync_partial_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for partial resyncs"), buckets: Self.buckets)
        lastSyncTimestamp = registry.makeGauge(descriptor: Self.d("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced"))
        lastQueuedTimestamp = registry.makeGauge(descriptor: Self.d("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "The last time a sync of proxy rules was queued"))
        restoreFailures = registry.makeCounter(descriptor: Self.d("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "Cumulative proxy iptables restore failures"))
        partialRestoreFailures = registry.makeCounter(descriptor: Self.d("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total", "Cumulative proxy iptables partial restore failures"))
        syncFailures = registry.makeCounter(descriptor: Self.d("kubeproxy_sync_proxy_rules_failures_total", "Cumulative failed syncs of proxy rules"), labels: [("mode", mode)])
        rulesLastSync = registry.makeGauge(descriptor: Self.d("kubeproxy_sync_proxy_rules_iptables_last", "Number of proxy rules (or objects) written in the last sync"))
        servicesChanges = registry.makeCounter(descriptor: Self.d("kubeproxy_sync_proxy_rules_service_changes_total", "Cumulative proxy rules Service changes"))
        networkProgramming = registry.makeDurationHistogram(descriptor: Self.d("kubeproxy_network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds"), buckets: Self.buckets)
        noLocalInternal = registry.makeGauge(descriptor: Self.d("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints"), labels: [("traffic_policy", "internal")])
        noLocalExternal = registry.makeGauge(descriptor: Self.d("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints"), labels: [("traffic_policy", "external")])
    }

    private static func d(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    public func text() -> String { registry.emitToString() }
}
