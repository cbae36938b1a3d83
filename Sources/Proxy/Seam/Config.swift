import KubeAPI

/// How the proxy tells pod (cluster-local) traffic from the rest: upstream's
/// `--detect-local-mode` (ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix).
public enum LocalDetector: Sendable, Hashable {
    case none
    case cidrs([CIDR])
    case bridgeInterface(String)
    case interfaceNamePrefix(String)

    public var isImplemented: Bool { self != .none }
}

/// The settings all modes share, named as kube-proxy's flags and
/// `KubeProxyConfiguration` name them.
public struct ProxyConfig: Sendable {
    public var mode: String = "iptables"
    public var hostname: String = ""
    public var clusterCIDRs: [CIDR] = []
    public var localDetector: LocalDetector = .none
    /// `--nodeport-addresses`: CIDRs, or `primary`. Empty means every local address.
    public var nodePortAddresses: [String] = []
    public var masqueradeAll = false
    public var masqueradeBit = 14
    public var localhostNodePorts = true
    public var syncPeriod: Duration = .seconds(30)
    public var minSyncPeriod: Duration = .seconds(1)
    public var healthzBindAddress = "0.0.0.0:10256"
    public var metricsBindAddress = "127.0.0.1:10249"
    /// `nf_conntrack_tcp_be_liberal` is set: no DROP of INVALID packets.
    public var conntrackTCPLiberal = false
    public var nodeIPs: [IPAddress] = []
    public var serviceCIDRs: [CIDR] = []

    public init() {}

    /// The masquerade mark, `0x4000` for the default bit 14.
    public var masqueradeMark: String { "0x" + String(1 << masqueradeBit, radix: 16) }

    /// The node-port address filter as parsed CIDRs (nil when every local address is meant).
    public var nodePortCIDRs: [CIDR]? {
        let list = nodePortAddresses.filter { $0 != "primary" }.compactMap { CIDR($0) }
        if nodePortAddresses.isEmpty { return nil }
        var out = list
        if nodePortAddresses.contains("primary") {
            out += nodeIPs.map { CIDR(address: $0, prefixLength: $0.family == .ipv4 ? 32 : 128) }
        }
        return out
    }

    /// True when NodePorts are matched on every local address.
    public var nodePortsMatchAll: Bool { nodePortAddresses.isEmpty }

    /// Whether the node-port filter includes 127.0.0.1 (upstream's `ContainsIPv4Loopback`).
    public var nodePortsIncludeIPv4Loopback: Bool {
        guard let cidrs = nodePortCIDRs else { return true }
        return cidrs.contains { $0.contains(IPAddress("127.0.0.1")!) }
    }

    /// Localhost node ports are in effect (upstream turns them off when loopback is filtered out).
    public var effectiveLocalhostNodePorts: Bool { localhostNodePorts && nodePortsIncludeIPv4Loopback }
}
