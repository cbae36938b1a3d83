import Foundation
import Prometheus

/// kube-proxy's metrics, as `RegisterMetrics(mode)` in upstream's `pkg/proxy/metrics` registers
/// them (v1.36): the same names, types, help texts, label names and buckets, the common set for
/// every mode and each mode's own beside it, labelled with the IP family where upstream's are.
public final class ProxyMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let mode: String
    public let family: String

    /// `ExponentialBuckets(0.001, 2, 15)`: 1 ms to 16.384 s.
    static let syncBuckets: [Duration] = (0..<15).map { .microseconds(1000 * (1 << $0)) }
    /// Upstream's network programming buckets: 0.25 s, 0.5 s, 1–59 s by 1, 60–115 s by 5, 120–300 s by 30.
    static let programmingBuckets: [Duration] = [.milliseconds(250), .milliseconds(500)]
        + (1...59).map { .seconds($0) } + stride(from: 60, through: 115, by: 5).map { .seconds($0) }
        + stride(from: 120, through: 300, by: 30).map { .seconds($0) }

    // Every mode.
    public let syncDuration: DurationHistogram
    public let networkProgramming: DurationHistogram
    public let lastSyncTimestamp: Gauge
    public let lastQueuedTimestamp: Gauge
    public let endpointChangesPending: Gauge
    public let endpointChangesTotal: Counter
    public let serviceChangesPending: Gauge
    public let serviceChangesTotal: Counter
    public let noLocalInternal: Gauge
    public let noLocalExternal: Gauge
    public let conntrackSyncDuration: DurationHistogram
    public let conntrackDeletedEntries: Counter
    private let healthzOK: Counter, healthzFailed: Counter, livezOK: Counter, livezFailed: Counter

    // The iptables mode (and the parts the IPVS and userspace modes share).
    public let syncFullDuration: DurationHistogram?
    public let syncPartialDuration: DurationHistogram?
    public let restoreFailures: Counter?
    public let partialRestoreFailures: Counter?
    public let rulesTotal: [String: Gauge]
    public let rulesLast: [String: Gauge]

    // The nftables mode.
    public let nftablesSyncFailures: Counter?
    public let nftablesCleanupFailures: Counter?

    /// A dual-stack proxy's second family registers into the first's `registry`: its
    /// `ip_family`-labelled series beside the first's, the unlabelled ones shared.
    public init(mode: String, family: String = "IPv4", registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        self.mode = mode
        self.family = family
        let r = registry
        let fam = [("ip_family", family)]
        func d(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
        syncDuration = r.makeDurationHistogram(descriptor: d("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds"),
                                               labels: fam, buckets: Self.syncBuckets)
        networkProgramming = r.makeDurationHistogram(descriptor: d("kubeproxy_network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds"),
                                                     labels: fam, buckets: Self.programmingBuckets)
        lastSyncTimestamp = r.makeGauge(descriptor: d("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced"), labels: fam)
        lastQueuedTimestamp = r.makeGauge(descriptor: d("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "The last time a sync of proxy rules was queued"), labels: fam)
        endpointChangesPending = r.makeGauge(descriptor: d("kubeproxy_sync_proxy_rules_endpoint_changes_pending", "Pending proxy rules Endpoint changes"))
        endpointChangesTotal = r.makeCounter(descriptor: d("kubeproxy_sync_proxy_rules_endpoint_changes_total", "Cumulative proxy rules Endpoint changes"))
        serviceChangesPending = r.makeGauge(descriptor: d("kubeproxy_sync_proxy_rules_service_changes_pending", "Pending proxy rules Service changes"))
        serviceChangesTotal = r.makeCounter(descriptor: d("kubeproxy_sync_proxy_rules_service_changes_total", "Cumulative proxy rules Service changes"))
        let noLocal = d("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints")
        noLocalInternal = r.makeGauge(descriptor: noLocal, labels: fam + [("traffic_policy", "internal")])
        noLocalExternal = r.makeGauge(descriptor: noLocal, labels: fam + [("traffic_policy", "external")])
        conntrackSyncDuration = r.makeDurationHistogram(descriptor: d("kubeproxy_conntrack_reconciler_sync_duration_seconds", "ReconcileConntrackFlowsLatency latency in seconds"),
                                                        labels: fam, buckets: Self.syncBuckets)
        conntrackDeletedEntries = r.makeCounter(descriptor: d("kubeproxy_conntrack_reconciler_deleted_entries_total", "Cumulative conntrack flows deleted by conntrack reconciler"), labels: fam)
        let healthz = d("kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status")
        let livez = d("kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status")
        healthzOK = r.makeCounter(descriptor: healthz, labels: [("code", "200")])
        healthzFailed = r.makeCounter(descriptor: healthz, labels: [("code", "503")])
        livezOK = r.makeCounter(descriptor: livez, labels: [("code", "200")])
        livezFailed = r.makeCounter(descriptor: livez, labels: [("code", "503")])

        let iptables = mode == "iptables"
        let iptablesRestore = iptables || mode == "ipvs" || mode == "userspace"
        syncFullDuration = iptables ? r.makeDurationHistogram(descriptor: d("kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs"),
                                                             labels: fam, buckets: Self.syncBuckets) : nil
        syncPartialDuration = iptables ? r.makeDurationHistogram(descriptor: d("kubeproxy_sync_partial_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for partial resyncs"),
                                                                labels: fam, buckets: Self.syncBuckets) : nil
        restoreFailures = iptablesRestore ? r.makeCounter(descriptor: d("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "Cumulative proxy iptables restore failures"), labels: fam) : nil
        partialRestoreFailures = iptables ? r.makeCounter(descriptor: d("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total", "Cumulative proxy iptables partial restore failures"), labels: fam) : nil
        var total: [String: Gauge] = [:], last: [String: Gauge] = [:]
        if iptables {
            for t in ["filter", "nat"] {
                total[t] = r.makeGauge(descriptor: d("kubeproxy_sync_proxy_rules_iptables_total", "Total number of iptables rules owned by kube-proxy"), labels: fam + [("table", t)])
                last[t] = r.makeGauge(descriptor: d("kubeproxy_sync_proxy_rules_iptables_last", "Number of iptables rules written by kube-proxy in last sync"), labels: fam + [("table", t)])
            }
        }
        rulesTotal = total
        rulesLast = last
        let nft = mode == "nftables"
        nftablesSyncFailures = nft ? r.makeCounter(descriptor: d("kubeproxy_sync_proxy_rules_nftables_sync_failures_total", "Cumulative proxy nftables sync failures"), labels: fam) : nil
        nftablesCleanupFailures = nft ? r.makeCounter(descriptor: d("kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total", "Cumulative proxy nftables cleanup failures"), labels: fam) : nil
    }

    /// Counts a `/healthz` or `/livez` answer, as kube-proxy's health server does.
    public func countHealth(path: String, ok: Bool) {
        switch (path, ok) {
        case ("/healthz", true): healthzOK.increment()
        case ("/healthz", false): healthzFailed.increment()
        case ("/livez", true): livezOK.increment()
        case ("/livez", false): livezFailed.increment()
        default: break
        }
    }

    /// A failed sync, in the mode's own counters.
    public func syncFailed(partial: Bool) {
        restoreFailures?.increment()
        if partial { partialRestoreFailures?.increment() }
        nftablesSyncFailures?.increment()
    }

    private let collectors = Collectors()

    /// Text a collector produces at each scrape, appended to the registry's (upstream's custom
    /// collectors, such as the nfacct counters read from the kernel when scraped).
    public func addCollector(_ collect: @escaping @Sendable () -> String) { collectors.add(collect) }

    public func text() -> String { registry.emitToString() + collectors.text() }
}

final class Collectors: @unchecked Sendable {
    private let lock = NSLock()
    private var all: [@Sendable () -> String] = []
    func add(_ c: @escaping @Sendable () -> String) { lock.withLock { all.append(c) } }
    func text() -> String { lock.withLock { all }.map { $0() }.joined() }
}
