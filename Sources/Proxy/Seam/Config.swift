import KubeAPI

/// How the proxy tells pod (cluster-local) traffic from the rest: upstream's
/// `--detect-local-mode` (ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix).
public enum LocalDetector: Sendable, Hashable {
    case none
    case cidrs([CIDR])
    case bridgeInterface(String)
    case interfaceNamePrefix(String)

    public var isImplemented: Bool { self != .none }

    /// The detector for one family's rules: only that family's CIDRs (none left: no detector).
    public func only(_ family: IPFamily) -> LocalDetector {
        guard case .cidrs(let c) = self else { return self }
        let mine = c.filter { $0.family == family }
        return mine.isEmpty ? .none : .cidrs(mine)
    }

    /// The iptables match for traffic from pods (upstream's `IfLocal`), or for traffic not from
    /// pods with `negated` (`IfNotLocal`); nil without a detector. With CIDRs, the first of `family`.
    public func iptablesMatch(negated: Bool, family: IPFamily = .ipv4) -> String? {
        let not = negated ? "! " : ""
        switch self {
        case .none: return nil
        case .cidrs(let c): return c.first { $0.address.family == family }.map { "\(not)-s \($0)" }
        case .bridgeInterface(let b): return "\(not)-i \(b)"
        case .interfaceNamePrefix(let p): return "\(not)-i \(p)+"
        }
    }
}

/// The packet mark that says "masquerade this" (`--iptables-masquerade-bit`, default 14: `0x4000`).
public struct MasqueradeMark: Sendable, Hashable, CustomStringConvertible {
    public let bit: Int

    /// Nil unless `bit` is 0…31.
    public init?(bit: Int) {
        guard (0...31).contains(bit) else { return nil }
        self.bit = bit
    }

    public static let `default` = MasqueradeMark(bit: 14)!

    public var value: UInt32 { UInt32(1) << UInt32(bit) }
    /// `0x4000`, as the iptables and nftables modes write it.
    public var hex: String { "0x" + String(value, radix: 16) }
    /// `0x00004000`, as the IPVS mode writes it (upstream's `%#08x`).
    public var paddedHex: String {
        let h = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - h.count)) + h
    }
    public var description: String { hex }
}

/// What the rules of every mode depend on, resolved once from a `ProxyConfig`. Each mode's
/// options hold one and read its fields as their own (`@dynamicMemberLookup`).
public struct CommonOptions: Sendable {
    /// `--masquerade-all`: every connection to a ClusterIP is masqueraded.
    public var masqueradeAll = false
    public var mark = MasqueradeMark.default
    /// How pod traffic is told from the rest (`--detect-local-mode`, `--cluster-cidr`).
    public var localDetector: LocalDetector = .none
    /// NodePorts also on 127.0.0.1 (`--iptables-localhost-nodeports`, off when the node-port
    /// addresses leave loopback out).
    public var localhostNodePorts = true
    /// The addresses NodePorts are taken on; nil: every local address (or, where a mode says
    /// so, the node's own).
    public var nodePortIPs: [IPAddress]? = nil
    /// The node's primary address of `family`, when known.
    public var nodeIP: IPAddress? = nil
    /// The family these rules are for (one proxier per family on a dual-stack node, as upstream's
    /// metaproxier runs them).
    public var family: IPFamily = .ipv4

    public init() {}

    /// For `c.ipFamily`: IPv6 has no localhost NodePorts (upstream's), and the node-port addresses
    /// and node IP are that family's.
    public init(_ c: ProxyConfig, nodePortIPs: [IPAddress]?) {
        family = c.ipFamily
        masqueradeAll = c.masqueradeAll
        mark = c.masqueradeMark
        localDetector = c.localDetector.only(c.ipFamily)
        localhostNodePorts = c.ipFamily == .ipv4 && c.effectiveLocalhostNodePorts
        self.nodePortIPs = nodePortIPs?.filter { $0.family == c.ipFamily }
        nodeIP = c.nodeIPs.first { $0.family == c.ipFamily }
    }
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
    public var masqueradeMark = MasqueradeMark.default
    public var localhostNodePorts = true
    public var syncPeriod: Duration = .seconds(30)
    public var minSyncPeriod: Duration = .seconds(1)
    public var healthzBindAddress = "0.0.0.0:10256"
    public var metricsBindAddress = "127.0.0.1:10249"
    /// `nf_conntrack_tcp_be_liberal` is set: no DROP of INVALID packets.
    public var conntrackTCPLiberal = false
    public var nodeIPs: [IPAddress] = []
    public var serviceCIDRs: [CIDR] = []
    /// The family a proxier built from this config serves (the runtime and `render` make one
    /// config per family on a dual-stack node).
    public var ipFamily: IPFamily = .ipv4
    /// The IPVS mode's settings (`KubeProxyConfiguration.ipvs`).
    public var ipvs = IPVSSettings()
    /// The nftables mode's settings.
    public var nftables = NFTablesSettings()
    /// The userspace mode's settings (`portRange`, `udpIdleTimeout`).
    public var userspace = UserspaceSettings()

    public struct IPVSSettings: Sendable {
        /// `--ipvs-scheduler`.
        public var scheduler = "rr"
        /// `--ipvs-strict-arp`.
        public var strictARP = false
        public init() {}
    }

    public struct NFTablesSettings: Sendable {
        /// `--nftables-layout`: `upstream` or `maps`.
        public var layout = "upstream"
        public init() {}
    }

    public struct UserspaceSettings: Sendable {
        /// `--proxy-port-range`, as given.
        public var portRange: String?
        /// `--udp-timeout`, as given (a Go duration).
        public var udpIdleTimeout: String?
        public init() {}
    }

    public init() {}

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

extension ProxyConfig {
    /// The addresses NodePorts are matched on, from `--nodeport-addresses`: nil (every local
    /// address) when none are given; for a running proxy, the host's addresses `local` inside
    /// them; for `render` (`local` nil: it cannot see the node's interfaces), the addresses the
    /// CIDRs name exactly.
    public func nodePortIPs(local: [IPAddress]?) -> [IPAddress]? {
        guard let cidrs = nodePortCIDRs else { return nil }
        guard let local else { return cidrs.filter { $0.prefixLength == ($0.family == .ipv4 ? 32 : 128) }.map(\.address) }
        return Array(Set(local.filter { ip in cidrs.contains { $0.contains(ip) } })).sorted()
    }
}

/// A setting a mode cannot work with, named by its flag (`--ipvs-scheduler: unknown scheduler x`).
public struct ProxyConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
