import Foundation
import KubeAPI
import Testing
@testable import ProxyRuntime

/// The metrics each mode serves, against what upstream kube-proxy (v1.36, `pkg/proxy/metrics`)
/// registers for that mode: names, types and label names.
@Suite struct MetricsTests {
    typealias Family = [String: (type: String, labels: Set<String>)]

    static let common: Family = [
        "kubeproxy_sync_proxy_rules_duration_seconds": ("histogram", ["ip_family"]),
        "kubeproxy_network_programming_duration_seconds": ("histogram", ["ip_family"]),
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds": ("gauge", ["ip_family"]),
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": ("gauge", ["ip_family"]),
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending": ("gauge", []),
        "kubeproxy_sync_proxy_rules_endpoint_changes_total": ("counter", []),
        "kubeproxy_sync_proxy_rules_service_changes_pending": ("gauge", []),
        "kubeproxy_sync_proxy_rules_service_changes_total": ("counter", []),
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total": ("gauge", ["ip_family", "traffic_policy"]),
        "kubeproxy_proxy_healthz_total": ("counter", ["code"]),
        "kubeproxy_proxy_livez_total": ("counter", ["code"]),
        "kubeproxy_conntrack_reconciler_sync_duration_seconds": ("histogram", ["ip_family"]),
        "kubeproxy_conntrack_reconciler_deleted_entries_total": ("counter", ["ip_family"]),
    ]

    static let perMode: [String: Family] = [
        "iptables": [
            "kubeproxy_sync_full_proxy_rules_duration_seconds": ("histogram", ["ip_family"]),
            "kubeproxy_sync_partial_proxy_rules_duration_seconds": ("histogram", ["ip_family"]),
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total": ("counter", ["ip_family"]),
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total": ("counter", ["ip_family"]),
            "kubeproxy_sync_proxy_rules_iptables_total": ("gauge", ["ip_family", "table"]),
            "kubeproxy_sync_proxy_rules_iptables_last": ("gauge", ["ip_family", "table"]),
        ],
        "ipvs": ["kubeproxy_sync_proxy_rules_iptables_restore_failures_total": ("counter", ["ip_family"])],
        "nftables": [
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total": ("counter", ["ip_family"]),
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total": ("counter", ["ip_family"]),
        ],
        // Not upstream's any more: the iptables restore failures of its portal rules.
        "userspace": ["kubeproxy_sync_proxy_rules_iptables_restore_failures_total": ("counter", ["ip_family"])],
    ]

    /// Names, types and label names as the exposition text gives them.
    static func served(_ text: String) -> Family {
        var out: Family = [:]
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                out[String(parts[2])] = (String(parts[3]), out[String(parts[2])]?.labels ?? [])
            } else if !line.hasPrefix("#"), let brace = line.firstIndex(of: "{") {
                var name = String(line[..<brace])
                for suffix in ["_bucket", "_sum", "_count"] where out[name] == nil && name.hasSuffix(suffix) { name = String(name.dropLast(suffix.count)) }
                let labels = line[line.index(after: brace)..<line.firstIndex(of: "}")!].split(separator: ",")
                    .map { String($0.prefix { $0 != "=" }) }.filter { $0 != "le" }
                out[name]?.labels.formUnion(labels)
            }
        }
        return out
    }

    @Test(arguments: ["iptables", "nftables", "ipvs", "userspace"])
    func eachModeServesUpstreamsMetrics(mode: String) {
        let m = ProxyMetrics(mode: mode)
        m.countHealth(path: "/healthz", ok: true)
        m.countHealth(path: "/livez", ok: false)
        let served = Self.served(m.text())
        let expected = Self.common.merging(Self.perMode[mode] ?? [:]) { a, _ in a }
        #expect(Set(served.keys) == Set(expected.keys), "\(mode): extra \(Set(served.keys).subtracting(expected.keys)), missing \(Set(expected.keys).subtracting(served.keys))")
        for (name, e) in expected {
            #expect(served[name]?.type == e.type, "\(mode) \(name): type \(served[name]?.type ?? "none")")
            #expect(served[name]?.labels == e.labels, "\(mode) \(name): labels \(served[name]?.labels ?? [])")
        }
    }

    /// Upstream's network programming buckets: 0.25 s, 0.5 s, 1–59 s by 1, 60–115 s by 5, 120–300 s by 30.
    @Test func networkProgrammingBuckets() {
        let text = ProxyMetrics(mode: "nftables").text()
        let les = text.split(separator: "\n").filter { $0.hasPrefix("kubeproxy_network_programming_duration_seconds_bucket") }
            .compactMap { l -> Double? in
                guard let r = l.range(of: "le=\"") else { return nil }
                return Double(l[r.upperBound...].prefix { $0 != "\"" })
            }
        let want: [Double] = [0.25, 0.5] + (1...59).map(Double.init) + stride(from: 60.0, through: 115, by: 5) + stride(from: 120.0, through: 300, by: 30) + [.infinity]
        #expect(les == want, "\(les)")
    }

    /// The trigger-time annotation parses as Go's RFC3339Nano writes it, offsets included.
    @Test func triggerTimesParse() throws {
        #expect(RFC3339.seconds("1970-01-01T00:00:00Z") == 0)
        #expect(RFC3339.seconds("2026-12-04T23:42:31.5Z") == 1_796_427_751.5)
        #expect(RFC3339.seconds("2026-12-05T00:42:31.5+01:00") == 1_796_427_751.5)
        for bad in ["", "2026-12-04", "2026-12-04T23:42:31", "2026-13-04T23:42:31Z", "2026-12-04T23:42:31.Z", "x026-12-04T23:42:31Z"] {
            #expect(RFC3339.seconds(bad) == nil, "\(bad)")
        }
    }
}
