import KubeAPI
import Netlink
import ProxySeam

/// A cleaner that reports to kube-proxy's conntrack reconciler metrics: the entries deleted, and
/// the time of each pass.
public struct MeasuredConntrack: ConntrackCleaner {
    public let inner: any ConntrackCleaner
    public let metrics: ProxyMetrics
    public init(_ inner: any ConntrackCleaner, metrics: ProxyMetrics) {
        self.inner = inner
        self.metrics = metrics
    }

    public func deleteFlows(to serviceIP: IPAddress, port: Int, proto: L4Protocol, natDestination: String?) throws -> Int {
        let n = try inner.deleteFlows(to: serviceIP, port: port, proto: proto, natDestination: natDestination)
        metrics.conntrackDeletedEntries.increment(by: Double(n))
        return n
    }

    public func deleteNodePortFlows(port: Int, proto: L4Protocol, natDestination: String?) throws -> Int {
        let n = try inner.deleteNodePortFlows(port: port, proto: proto, natDestination: natDestination)
        metrics.conntrackDeletedEntries.increment(by: Double(n))
        return n
    }

    public func passed(_ duration: Duration) { metrics.conntrackSyncDuration.record(duration) }
}

/// Deletes the entries over nfnetlink (ctnetlink), with no `conntrack` binary needed:
/// a dump of the table, then a delete per entry the filter selects.
public struct NetlinkConntrack: ConntrackCleaner {
    public var namespace: Netlink.Namespace
    public init(namespace: Netlink.Namespace = .current) { self.namespace = namespace }

    private func delete(_ f: ConntrackFilter, ipv6: Bool) throws -> Int {
        try Conntrack(in: namespace).delete(matching: f, ipv6: ipv6)
    }

    public func deleteFlows(to serviceIP: IPAddress, port: Int, proto: L4Protocol, natDestination: String?) throws -> Int {
        guard let dst = IPNet.parseIP(serviceIP.description) else { return 0 }
        return try delete(ConntrackFilter(proto: proto.number, originalDestination: dst, originalDestinationPort: UInt16(port),
                                   natDestination: natDestination.flatMap(IPNet.parseIP)), ipv6: dst.count == 16)
    }

    public func deleteNodePortFlows(port: Int, proto: L4Protocol, natDestination: String?) throws -> Int {
        let nat = natDestination.flatMap(IPNet.parseIP)
        return try delete(ConntrackFilter(proto: proto.number, originalDestinationPort: UInt16(port), natDestination: nat),
                   ipv6: nat?.count == 16)
    }
}
