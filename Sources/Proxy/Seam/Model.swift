import KubeAPI

public enum L4Protocol: String, Sendable, Hashable, Comparable {
    case tcp = "TCP"
    case udp = "UDP"
    case sctp = "SCTP"

    /// The lower-case spelling iptables and nft use (`-p tcp`).
    public var lower: String {
        switch self {
        case .tcp: return "tcp"
        case .udp: return "udp"
        case .sctp: return "sctp"
        }
    }

    /// The IP protocol number (conntrack, IPVS).
    public var number: UInt8 {
        switch self {
        case .tcp: return 6
        case .udp: return 17
        case .sctp: return 132
        }
    }

    public static func < (a: L4Protocol, b: L4Protocol) -> Bool { a.rawValue < b.rawValue }
}

/// One port of one Service: upstream's `proxy.ServicePortName`.
///
/// `description` is upstream's `String()`: `namespace/name:port`, or
/// `namespace/name` for an unnamed port. The protocol is part of the identity
/// but not of the string.
public struct ServicePortName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var service: NamespacedName
    public var port: String
    public var proto: L4Protocol

    public init(service: NamespacedName, port: String, proto: L4Protocol) {
        self.service = service
        self.port = port
        self.proto = proto
    }

    public var description: String {
        port.isEmpty ? "\(service.namespace)/\(service.name)" : "\(service.namespace)/\(service.name):\(port)"
    }

    public static func < (a: ServicePortName, b: ServicePortName) -> Bool {
        if a.service != b.service { return a.service < b.service }
        if a.port != b.port { return a.port < b.port }
        return a.proto < b.proto
    }
}

/// Everything a backend needs to know about one service port, already filtered to
/// this proxy's IP family. Immutable.
public struct ServicePortInfo: Sendable, Hashable {
    public var name: ServicePortName
    public var clusterIP: IPAddress
    public var port: Int
    public var targetPort: IntOrString?
    public var nodePort: Int
    public var externalIPs: [IPAddress]
    public var loadBalancerVIPs: [IPAddress]
    public var loadBalancerSourceRanges: [CIDR]
    public var sessionAffinityClientIP: Bool
    public var stickyMaxAgeSeconds: Int
    public var externalPolicyLocal: Bool
    public var internalPolicyLocal: Bool
    public var healthCheckNodePort: Int
    public var trafficDistribution: String?

    public init(name: ServicePortName, clusterIP: IPAddress, port: Int, targetPort: IntOrString? = nil, nodePort: Int = 0,
                externalIPs: [IPAddress] = [], loadBalancerVIPs: [IPAddress] = [], loadBalancerSourceRanges: [CIDR] = [],
                sessionAffinityClientIP: Bool = false, stickyMaxAgeSeconds: Int = 0, externalPolicyLocal: Bool = false,
                internalPolicyLocal: Bool = false, healthCheckNodePort: Int = 0, trafficDistribution: String? = nil) {
        self.name = name
        self.clusterIP = clusterIP
        self.port = port
        self.targetPort = targetPort
        self.nodePort = nodePort
        self.externalIPs = externalIPs
        self.loadBalancerVIPs = loadBalancerVIPs
        self.loadBalancerSourceRanges = loadBalancerSourceRanges
        self.sessionAffinityClientIP = sessionAffinityClientIP
        self.stickyMaxAgeSeconds = stickyMaxAgeSeconds
        self.externalPolicyLocal = externalPolicyLocal
        self.internalPolicyLocal = internalPolicyLocal
        self.healthCheckNodePort = healthCheckNodePort
        self.trafficDistribution = trafficDistribution
    }

    public var proto: L4Protocol { name.proto }
    /// `ns/name:port` as upstream prints it.
    public var nameString: String { name.description }

    /// Reachable from outside the cluster network: a NodePort, a load balancer IP or an external IP.
    public var externallyAccessible: Bool {
        nodePort != 0 || !loadBalancerVIPs.isEmpty || !externalIPs.isEmpty
    }

    /// Whether Cluster-policy endpoints are used for some traffic.
    public var usesClusterEndpoints: Bool {
        !internalPolicyLocal || (externallyAccessible && !externalPolicyLocal)
    }

    /// Whether Local-policy endpoints are used for some traffic.
    public var usesLocalEndpoints: Bool {
        internalPolicyLocal || (externallyAccessible && externalPolicyLocal)
    }
}

/// One endpoint of one service port. Immutable.
public struct EndpointInfo: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var ip: String
    public var port: Int
    /// `ip:port` (`[ip]:port` for IPv6), upstream's `Endpoint.String()`.
    public var endpoint: String
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool
    public var isLocal: Bool
    public var nodeName: String?
    public var zone: String?
    public var zoneHints: Set<String>
    public var nodeHints: Set<String>

    public init(ip: String, port: Int, ready: Bool = true, serving: Bool = true, terminating: Bool = false,
                isLocal: Bool = false, nodeName: String? = nil, zone: String? = nil,
                zoneHints: Set<String> = [], nodeHints: Set<String> = []) {
        self.ip = ip
        self.port = port
        self.endpoint = joinHostPort(ip, port)
        self.ready = ready
        self.serving = serving
        self.terminating = terminating
        self.isLocal = isLocal
        self.nodeName = nodeName
        self.zone = zone
        self.zoneHints = zoneHints
        self.nodeHints = nodeHints
    }

    public var description: String { endpoint }

    /// Upstream sorts a service port's endpoints by their string form.
    public static func < (a: EndpointInfo, b: EndpointInfo) -> Bool { a.endpoint < b.endpoint }
}

/// The node this proxy runs on, as far as endpoint selection is concerned.
public struct NodeInfo: Sendable, Hashable {
    public var name: String
    public var labels: [String: String]
    public var ips: [IPAddress]
    public init(name: String, labels: [String: String] = [:], ips: [IPAddress] = []) {
        self.name = name
        self.labels = labels
        self.ips = ips
    }
    public var zone: String { labels[Node.zoneLabel] ?? "" }
}

/// An immutable view of everything the proxy serves, handed to backends.
public struct ProxySnapshot: Sendable {
    public var servicePorts: [ServicePortName: ServicePortInfo]
    /// Endpoints per service port, sorted by `endpoint` as upstream does.
    public var endpoints: [ServicePortName: [EndpointInfo]]
    public var node: NodeInfo
    /// Service CIDRs from ServiceCIDR objects (or configuration), this family only.
    public var serviceCIDRs: [CIDR]
    /// Increases with every snapshot the tracker produces.
    public var generation: Int
    /// The ports of each Service, so a backend can find a changed Service's ports
    /// without scanning them all (filled by the change tracker).
    public var portsByService: [NamespacedName: [ServicePortName]] = [:]

    public init(servicePorts: [ServicePortName: ServicePortInfo] = [:],
                endpoints: [ServicePortName: [EndpointInfo]] = [:],
                node: NodeInfo = NodeInfo(name: ""), serviceCIDRs: [CIDR] = [], generation: Int = 0) {
        self.servicePorts = servicePorts
        self.endpoints = endpoints
        self.node = node
        self.serviceCIDRs = serviceCIDRs
        self.generation = generation
    }

    /// The ports of `services`: through `portsByService` when the tracker filled it,
    /// otherwise by scanning every port.
    public func ports(of services: Set<NamespacedName>) -> [ServicePortName] {
        if portsByService.isEmpty {
            return servicePorts.keys.filter { services.contains($0.service) }
        }
        return services.flatMap { portsByService[$0] ?? [] }
    }

    /// Service ports in a stable order, so rendered output is deterministic.
    public var sortedNames: [ServicePortName] { servicePorts.keys.sorted() }

    public var totalEndpoints: Int {
        var n = 0
        for k in servicePorts.keys { n += endpoints[k]?.count ?? 0 }
        return n
    }
}

/// What a backend is asked to do.
public struct SyncRequest: Sendable {
    public var snapshot: ProxySnapshot
    /// Services whose ports or endpoints changed since the previous request;
    /// nil means "assume everything changed".
    public var changedServices: Set<NamespacedName>?

    public init(snapshot: ProxySnapshot, changedServices: Set<NamespacedName>?) {
        self.snapshot = snapshot
        self.changedServices = changedServices
    }
}

/// Whether a backend knows what the kernel holds: after a sync that went through it does; at
/// start, after a failed apply, after someone else changed its rules and after a cleanup it does
/// not, and the next sync must be a full one whatever it is asked. Every backend keeps one, so
/// "state unknown" is spelled once.
public struct KernelState: Sendable {
    public private(set) var isKnown = false
    public init() {}
    /// The kernel holds what the backend last applied.
    public mutating func synced() { isKnown = true }
    /// What the kernel holds is no longer known.
    public mutating func forget() { isKnown = false }
    /// Whether a sync of `request` must rewrite everything.
    public func mustSyncFully(_ request: SyncRequest) -> Bool { !isKnown || request.changedServices == nil }
}

/// The seam between the watcher and the data plane. A backend never talks to the
/// API: it receives snapshots and makes the kernel (or its sockets) match.
///
/// - Important: `sync` either applies the whole request or leaves what was there
///   before; a backend keeps what it last applied and decides how much to redo.
public protocol ProxyBackend: AnyObject, Sendable {
    /// `iptables`, `nftables`, `ipvs` or `userspace`, as `--proxy-mode` spells it.
    var mode: String { get }
    /// Make the data plane match `request.snapshot`.
    func sync(_ request: SyncRequest) async throws -> SyncOutcome
    /// Called periodically; returns true if state was lost and a full resync is needed.
    func needsFullResync() async -> Bool
    /// Remove everything this backend ever created.
    func cleanup() async throws
    /// The proxy is stopping: connections the backend carries itself get `grace` to finish.
    func stop(grace: Duration) async
}

extension ProxyBackend {
    public func stop(grace: Duration) async {}
}

public struct SyncOutcome: Sendable {
    public var full: Bool
    /// Rules (or objects) written in this sync, for the log.
    public var objectsWritten: Int
    /// iptables rules by table: written in this sync, and owned in all after it (kube-proxy's
    /// `…_iptables_last` and `…_iptables_total`); nil for a backend that does not count them.
    public var rulesWritten: [String: Int]?
    public var rulesOwned: [String: Int]?
    public init(full: Bool, objectsWritten: Int, rulesWritten: [String: Int]? = nil, rulesOwned: [String: Int]? = nil) {
        self.full = full
        self.objectsWritten = objectsWritten
        self.rulesWritten = rulesWritten
        self.rulesOwned = rulesOwned
    }
}

/// A backend that can describe, in its native text format, what it would program.
public protocol ProxyRenderer {
    func render(_ snapshot: ProxySnapshot) -> String
}

/// `address:port`, an IPv6 address in brackets (`[fd00::2]:8080`), as Go's `net.JoinHostPort`
/// writes it and as iptables, ipvsadm and kube-proxy print endpoints.
public func joinHostPort(_ host: String, _ port: Int) -> String {
    host.utf8.contains(UInt8(ascii: ":")) ? "[\(host)]:\(port)" : "\(host):\(port)"
}
