import KubeAPI
import Netlink
import ProxySeam

/// The IPVS mode's flags that shape what is programmed.
@dynamicMemberLookup
public struct IPVSOptions: Sendable {
    /// `--ipvs-scheduler` (kube-proxy's default is round-robin).
    public var scheduler = "rr"
    /// The settings every mode shares, read as this struct's own (`opts.masqueradeAll`).
    public var common = CommonOptions()
    public subscript<T>(dynamicMember key: WritableKeyPath<CommonOptions, T>) -> T {
        get { common[keyPath: key] }
        set { common[keyPath: key] = newValue }
    }
    // `common.nodePortIPs` are the addresses NodePorts listen on (`--nodeport-addresses`); nil:
    // the node's IPv4 addresses (from the snapshot, or from the kernel when `nodeAddressesFromKernel`).
    /// With `nodeAddressesFromKernel`: only the kernel's addresses inside these (`--nodeport-addresses`).
    public var nodePortCIDRs: [CIDR]?
    /// The running proxy: NodePorts on the node's own IPv4 addresses as the kernel has them at
    /// each sync (not loopback, not those on kube-ipvs0), as upstream finds them.
    public var nodeAddressesFromKernel = false
    /// `--ipvs-strict-arp`: arp_ignore=1 and arp_announce=2, so the node does not answer ARP for
    /// kube-ipvs0's addresses.
    public var strictARP = false
    /// `MASQUERADE --random-fully` (every iptables we run on has it).
    public var randomFully = true
    public init() {}

    public init(_ c: ProxyConfig) {
        common = CommonOptions(c, nodePortIPs: nil)
        scheduler = c.ipvs.scheduler
        strictARP = c.ipvs.strictARP
    }

    var ifNotLocal: String? { common.localDetector.iptablesMatch(negated: true, family: common.family) }
}

/// One virtual server and its real servers, and the service port it serves.
public struct IPVSVirtualServer: Sendable, Equatable {
    public enum Kind: String, Sendable { case clusterIP, externalIP, loadBalancer, nodePort }
    public var service: IPVSService
    public var realServers: [IPVSDestination]
    public var owner: ServicePortName
    public var kind: Kind
}

/// What the IPVS mode programs for a snapshot: virtual servers for ClusterIPs, externalIPs,
/// load balancer IPs and NodePorts (on the node's addresses), with the endpoints the proxy core
/// selected as masqueraded real servers of weight 1, ClientIP affinity as persistence; and the
/// addresses bound to `kube-ipvs0` so the node accepts traffic for them. One family's (the
/// options'): a dual-stack node runs a proxier per family over the one IPVS table and `kube-ipvs0`.
public struct IPVSPlan: Sendable {
    public var servers: [IPVSVirtualServer]
    /// ClusterIPs, externalIPs and load balancer IPs (sorted, unique).
    public var boundAddresses: [String]

    public static let dummyInterface = "kube-ipvs0"

    static func bytes(_ ip: IPAddress) -> [UInt8]? { IPNet.parseIP(ip.description) }

    /// The addresses of `family` a service's ports need on kube-ipvs0.
    public static func boundAddresses(_ snap: ProxySnapshot, of ports: [ServicePortName], family: IPFamily) -> Set<String> {
        var bound = Set<String>()
        for name in ports {
            guard let info = snap.servicePorts[name], info.clusterIP.family == family else { continue }
            bound.insert(info.clusterIP.description)
            for ip in info.externalIPs + info.loadBalancerVIPs where ip.family == family { bound.insert(ip.description) }
        }
        return bound
    }

    /// - Parameter only: plan the virtual servers of these services only (a partial sync, which
    ///   leaves `boundAddresses` empty: the proxier tracks them per service).
    public init(_ snap: ProxySnapshot, options: IPVSOptions, only: Set<NamespacedName>? = nil) {
        var servers: [IPVSVirtualServer] = []
        let family = options.family
        let bound = only == nil ? Self.boundAddresses(snap, of: Array(snap.servicePorts.keys), family: family) : []
        let nodeIPs = (options.nodePortIPs ?? snap.node.ips).filter { $0.family == family }
        let names = only.map { snap.ports(of: $0).sorted() } ?? snap.sortedNames
        for name in names {
            guard let info = snap.servicePorts[name], info.clusterIP.family == family else { continue }
            let cat = Topology.categorize(snap.endpoints[name] ?? [], for: info, node: snap.node)
            let d = PolicyDecision(cat, for: info)
            let internalEps = d.hasInternal ? (d.internalIsLocal ? cat.local : cat.cluster) : []
            let externalEps = d.hasExternal ? (d.externalIsLocal ? cat.local : cat.cluster) : []
            let p = name.proto.number
            func server(_ ip: IPAddress, _ port: Int, _ eps: [EndpointInfo], _ kind: IPVSVirtualServer.Kind) -> IPVSVirtualServer? {
                guard let addr = Self.bytes(ip), (1...65535).contains(port) else { return nil }
                let svc = IPVSService(address: addr, proto: p, port: UInt16(port), scheduler: options.scheduler,
                                      persistence: info.sessionAffinityClientIP ? UInt32(max(1, info.stickyMaxAgeSeconds)) : nil)
                var seen = Set<String>()
                let reals = eps.compactMap { e -> IPVSDestination? in
                    guard let a = IPNet.parseIP(e.ip), a.count == addr.count, (1...65535).contains(e.port), seen.insert(e.endpoint).inserted else { return nil }
                    return IPVSDestination(address: a, port: UInt16(e.port))
                }
                return IPVSVirtualServer(service: svc, realServers: reals, owner: name, kind: kind)
            }
            if let s = server(info.clusterIP, info.port, internalEps, .clusterIP) { servers.append(s) }
            for ip in info.externalIPs where ip.family == family {
                if let s = server(ip, info.port, externalEps, .externalIP) { servers.append(s) }
            }
            for ip in info.loadBalancerVIPs where ip.family == family {
                if let s = server(ip, info.port, externalEps, .loadBalancer) { servers.append(s) }
            }
            if info.nodePort != 0 {
                for ip in nodeIPs {
                    if let s = server(ip, info.nodePort, externalEps, .nodePort) { servers.append(s) }
                }
            }
        }
        // One virtual server per protocol, address and port: the first service port to claim one
        // keeps it (two Services sharing an externalIP:port, or an IP listed twice).
        var claimed = Set<String>()
        self.servers = servers.filter { claimed.insert("\($0.service.proto)/\($0.service.address)/\($0.service.port)").inserted }
        boundAddresses = bound.map { (IPNet.parseIP($0) ?? [], $0) }.sorted { $0.0.lexicographicallyPrecedes($1.0) }.map(\.1)
    }
}
