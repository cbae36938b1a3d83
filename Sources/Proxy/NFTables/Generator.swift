import Foundation
import KubeAPI
import ProxySeam

/// Names of the `ip kube-proxy` table's fixed objects, as upstream names them.
enum Names {
    static let table = "kube-proxy"
    static let tableComment = "rules for kube-proxy"

    // The base chains as upstream lays them out since v1.34 (kubernetes#132456): the firewall
    // check before DNAT at dstnat-10, the endpoint and ClusterIP checks at filter priority.
    // A table written by the earlier layout (`filter-prerouting`, `filter-output-post-dnat`, the
    // filter chains at -110) is taken over by one sync: adoption recreates the base chains and
    // deletes the old ones in the same transaction.
    static let filterPreroutingPreDNAT = "filter-prerouting-pre-dnat"
    static let filterOutputPreDNAT = "filter-output-pre-dnat"
    static let filterInput = "filter-input"
    static let filterForward = "filter-forward"
    static let filterOutput = "filter-output"
    static let natPrerouting = "nat-prerouting"
    static let natOutput = "nat-output"
    static let natPostrouting = "nat-postrouting"

    static let nodePortEndpointsCheck = "nodeport-endpoints-check"
    static let serviceEndpointsCheck = "service-endpoints-check"
    static let firewallCheck = "firewall-check"
    static let services = "services"
    static let masquerading = "masquerading"
    static let clusterIPsCheck = "cluster-ips-check"
    /// The regular chain upstream's layout had until v1.35 (the marking is inline since v1.36);
    /// a table written before is adopted by one sync, which deletes it.
    static let markForMasquerade = "mark-for-masquerade"
    /// Connections from an endpoint to itself through a Service (`EPIP . EPIP . proto . port`),
    /// masqueraded after DNAT (upstream since v1.36).
    static let hairpinConnections = "hairpin-connections"
    static let rejectChain = "reject-chain"

    static let serviceEndpoints = "service-endpoints"
    static let nodePortEndpoints = "nodeport-endpoints"
    static let endpointHairpin = "endpoint-hairpin"
    static func serviceLB(_ n: Int) -> String { "service-lb-\(n)" }
    static func externalLB(_ n: Int) -> String { "external-lb-\(n)" }
    static func nodePortLB(_ n: Int) -> String { "nodeport-lb-\(n)" }

    static let clusterIPs = "cluster-ips"
    static let nodePortIPs = "nodeport-ips"
    static let noEndpointServices = "no-endpoint-services"
    static let noEndpointNodePorts = "no-endpoint-nodeports"
    static let firewallIPs = "firewall-ips"
    static let serviceIPs = "service-ips"
    static let serviceNodePorts = "service-nodeports"
}

/// Chain and set names of one service port: upstream's
/// `servicePortChainNameBase` (8 base32 characters of the same hash the iptables
/// mode uses, then `ns/name/proto/port`).
struct ServiceNames {
    let nameString: String
    let proto: String
    let base: String

    init(_ info: ServicePortInfo) {
        nameString = info.nameString
        proto = info.proto.lower
        let n = info.name
        base = Self.hashAndTruncate("\(n.service.namespace)/\(n.service.name)/\(proto)/\(n.port)")
    }

    /// Upstream's `hashAndTruncate`: 8 base32 characters of sha256(name), a dash,
    /// the name; cut to 240 characters.
    static func hashAndTruncate(_ name: String) -> String {
        let s = ChainHash.hash16(name).prefix(8) + "-" + name
        return s.utf8.count > 240 ? String(s.prefix(237)) + "..." : s
    }

    var service: String { "service-" + base }
    var local: String { "local-" + base }
    var external: String { "external-" + base }
    var firewall: String { "firewall-" + base }

    /// `HASH-ns/name/proto/port__ip/port`, shared by the endpoint chain and its affinity set.
    func endpointBase(_ ep: EndpointInfo, _ info: ServicePortInfo) -> String {
        let n = info.name
        // IPv6 colons as dots (upstream's name); not Foundation's replacingOccurrences, per endpoint.
        let ip = ep.ip.utf8.contains(UInt8(ascii: ":"))
            ? String(decoding: ep.ip.utf8.map { $0 == UInt8(ascii: ":") ? UInt8(ascii: ".") : $0 }, as: UTF8.self) : ep.ip
        return Self.hashAndTruncate("\(n.service.namespace)/\(n.service.name)/\(proto)/\(n.port)__\(ip)/\(ep.port)")
    }
}

/// An element of one named set or map, ordered by set, then key.
struct SetElement: Hashable, Sendable, Comparable {
    var set: String
    var element: Element

    static func < (a: SetElement, b: SetElement) -> Bool { (a.set, a.element.keyText) < (b.set, b.element.keyText) }
}

/// Everything one Service contributes to the table: its chains (with rules, in the
/// order they are created), affinity sets, and elements of the shared sets and maps.
/// All ports of a Service are kept together because they share the ClusterIP
/// element of `cluster-ips`.
struct ServiceObjects: Equatable, Sendable {
    var chains: [Chain] = []
    var sets: [SetDef] = []
    var elements: [SetElement] = []
    /// Elements several Services may hold (an endpoint in `hairpin-connections`, or, in the
    /// maps layout, in `endpoint-hairpin`): the proxier counts references, so a partial sync
    /// of one Service never deletes what another still needs.
    var shared: [SetElement] = []

    var isEmpty: Bool { chains.isEmpty && sets.isEmpty && elements.isEmpty && shared.isEmpty }
}

/// The fixed part of the table: named sets and maps, base and helper chains, and
/// the elements that do not belong to a Service.
struct FixedObjects: Equatable, Sendable {
    var sets: [SetDef] = []
    var chains: [Chain] = []
    var elements: [SetElement] = []
}

/// How Services are laid out in the table.
public enum NFTablesLayout: String, Sendable, CaseIterable {
    /// Exactly kube-proxy's (v1.36): chains per service port, and per endpoint only for
    /// session affinity.
    case upstream
    /// Switchyard's: plain Services (Cluster traffic policies, no affinity, no
    /// source ranges, at most `maxMapEndpoints` endpoints) become elements of data
    /// maps that a few shared `*-lb-N` chains DNAT through, so a change touches
    /// elements only and the kernel's per-transaction work does not grow with the
    /// table. Other Services keep the upstream chains, in the same table.
    case maps
}

/// Settings of the nftables generator beyond the snapshot.
@dynamicMemberLookup
public struct NFTablesOptions: Sendable {
    public var layout: NFTablesLayout = .upstream
    /// The settings every mode shares, read as this struct's own (`opts.masqueradeAll`).
    public var common = CommonOptions()
    public subscript<T>(dynamicMember key: WritableKeyPath<CommonOptions, T>) -> T {
        get { common[keyPath: key] }
        set { common[keyPath: key] = newValue }
    }

    public init() {}

    public init(_ c: ProxyConfig, nodePortIPs: [IPAddress]?) {
        common = CommonOptions(c, nodePortIPs: nodePortIPs)
    }

    /// The match for traffic from pods on this cluster, or nil without a detector.
    func ifLocal(negate: Bool) -> Stmt? {
        switch common.localDetector {
        case .none: return nil
        case .cidrs(let c):
            guard !c.isEmpty else { return nil }
            let saddr = IPField.saddr(common.family)
            return c.count == 1 ? .addr(saddr, negate: negate, c[0]) : .addrInList(saddr, negate: negate, c)
        case .bridgeInterface(let b): return negate ? .iifnameNot(b) : .iifname(b)
        case .interfaceNamePrefix(let p): return negate ? .iifnameNot(p + "*") : .iifname(p + "*")
        }
    }
}

/// Generates kube-proxy's `ip kube-proxy` table, or for the IPv6 family `ip6 kube-proxy`.
/// Pure: no I/O.
struct Generator {
    let opts: NFTablesOptions

    private var family: IPFamily { opts.family }
    private var ipProtoPort: [SetDef.KeyType] { [family.addrType, .inetProto, .inetService] }
    private static let protoPort: [SetDef.KeyType] = [.inetProto, .inetService]
    /// The maps layout is written for IPv4; an IPv6 table is laid out as upstream's.
    private var mapsLayout: Bool { opts.layout == .maps && family == .ipv4 }

    // MARK: fixed objects

    func fixed(serviceCIDRs: [CIDR]) -> FixedObjects {
        var f = FixedObjects()
        let mark = opts.mark.value
        func base(_ name: String, _ kind: BaseHook.Kind, _ hook: BaseHook.Hook, _ prio: Int32, _ rules: [Rule]) -> Chain {
            Chain(name, base: BaseHook(kind: kind, hook: hook, priority: prio), rules: rules)
        }
        let ctNew = Stmt.ctStateNew
        func jump(_ c: String) -> Stmt { .verdict(.jump(c)) }
        let addr = family.addrType
        let daddr = IPField.daddr(family)
        let vip: [KeyPart] = [.daddr(family), .l4proto, .thDport]
        f.sets = [
            SetDef(name: Names.clusterIPs, key: [addr], isVerdictMap: false, comment: "Active ClusterIPs"),
            SetDef(name: Names.nodePortIPs, key: [addr], isVerdictMap: false, comment: "IPs that accept NodePort traffic"),
            SetDef(name: Names.noEndpointServices, key: ipProtoPort, isVerdictMap: true,
                   comment: "vmap to drop or reject packets to services with no endpoints"),
            SetDef(name: Names.noEndpointNodePorts, key: Self.protoPort, isVerdictMap: true,
                   comment: "vmap to drop or reject packets to service nodeports with no endpoints"),
            SetDef(name: Names.firewallIPs, key: ipProtoPort, isVerdictMap: true,
                   comment: "destinations that are subject to LoadBalancerSourceRanges"),
            SetDef(name: Names.serviceIPs, key: ipProtoPort, isVerdictMap: true,
                   comment: "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
            SetDef(name: Names.serviceNodePorts, key: Self.protoPort, isVerdictMap: true, comment: "NodePort traffic"),
            SetDef(name: Names.hairpinConnections, key: [addr, addr, .inetProto, .inetService], isVerdictMap: false,
                   comment: "service hairpin connections"),
        ]
        // NodePorts: on the configured addresses, or every local address but loopback.
        let loopback = Stmt.addr(daddr, negate: true, family == .ipv4 ? CIDR("127.0.0.0/8")! : CIDR("::1/128")!)
        let nodePortMatch: [Stmt], nodePortCheckMatch: [Stmt]
        if let ips = opts.nodePortIPs {
            nodePortMatch = [.addrInSet(daddr, negate: false, set: Names.nodePortIPs)]
            nodePortCheckMatch = nodePortMatch
            for ip in ips where ip.family == family && !ip.isLoopback {
                f.elements.append(SetElement(set: Names.nodePortIPs, element: Element(key: [KeyValue(ip)])))
            }
        } else {
            f.sets.removeAll { $0.name == Names.nodePortIPs }
            nodePortMatch = [.fibLocal(.daddr), loopback]
            nodePortCheckMatch = [loopback]
        }
        var clusterIPsCheck = [Rule([.addrInSet(daddr, negate: false, set: Names.clusterIPs), .reject],
                                    comment: "Reject traffic to invalid ports of ClusterIPs")]
        let cidrs = serviceCIDRs.filter { $0.family == family }
        if !cidrs.isEmpty {
            clusterIPsCheck.append(Rule([.addrInList(daddr, negate: false, cidrs), .verdict(.drop)],
                                        comment: "Drop traffic to unallocated ClusterIPs"))
        }
        // ClusterIP traffic from outside the cluster is masqueraded, for every ClusterIP at
        // once (upstream since v1.36; before, a rule in each service chain).
        let clusterIPs = Stmt.addrInSet(daddr, negate: false, set: Names.clusterIPs)
        var clusterIPMasquerade: [Rule] = []
        if opts.masqueradeAll {
            clusterIPMasquerade = [Rule([clusterIPs, .markSetOr(mark)], comment: "masquerade all clusterIP traffic")]
        } else if let notLocal = opts.ifLocal(negate: true) {
            clusterIPMasquerade = [Rule([clusterIPs, notLocal, .markSetOr(mark)], comment: "masquerade clusterIP traffic from outside cluster")]
        }
        // Helper chains first (the base chains jump to them), base chains last, so
        // nothing is hooked until everything it reaches exists.
        f.chains = [
            Chain(Names.nodePortEndpointsCheck, rules: [
                Rule(nodePortCheckMatch + [.vmap([.l4proto, .thDport], set: Names.noEndpointNodePorts)])]),
            Chain(Names.serviceEndpointsCheck, rules: [
                Rule([.vmap(vip, set: Names.noEndpointServices)])]),
            Chain(Names.firewallCheck, rules: [
                Rule([.vmap(vip, set: Names.firewallIPs)])]),
            Chain(Names.services, rules: clusterIPMasquerade + [
                Rule([.vmap(vip, set: Names.serviceIPs)]),
                Rule(nodePortMatch + [.vmap([.l4proto, .thDport], set: Names.serviceNodePorts)])]),
            Chain(Names.masquerading, rules: [
                Rule([.markIsSet(mark), .markSetXor(mark), .masquerade(fullyRandom: true)]),
                Rule([.ctStatusDNAT, .inConcatSet([.saddr(family), .daddr(family), .l4proto, .thDport], set: Names.hairpinConnections),
                      .masquerade(fullyRandom: true)])]),
            Chain(Names.clusterIPsCheck, rules: clusterIPsCheck),
            Chain(Names.rejectChain, comment: "helper for @no-endpoint-services / @no-endpoint-nodeports",
                  rules: [Rule([.reject])]),
            base(Names.filterPreroutingPreDNAT, .filter, .prerouting, -110, [Rule([ctNew, jump(Names.firewallCheck)])]),
            base(Names.filterOutputPreDNAT, .filter, .output, -110, [Rule([ctNew, jump(Names.firewallCheck)])]),
            base(Names.filterInput, .filter, .input, 0, [
                Rule([ctNew, jump(Names.nodePortEndpointsCheck)]),
                Rule([ctNew, jump(Names.serviceEndpointsCheck)])]),
            base(Names.filterForward, .filter, .forward, 0, [
                Rule([ctNew, jump(Names.serviceEndpointsCheck)]),
                Rule([ctNew, jump(Names.clusterIPsCheck)])]),
            base(Names.filterOutput, .filter, .output, 0, [
                Rule([ctNew, jump(Names.serviceEndpointsCheck)]),
                Rule([ctNew, jump(Names.clusterIPsCheck)])]),
            base(Names.natPrerouting, .nat, .prerouting, -100, [Rule([jump(Names.services)])]),
            base(Names.natOutput, .nat, .output, -100, [Rule([jump(Names.services)])]),
            base(Names.natPostrouting, .nat, .postrouting, 100, [Rule([jump(Names.masquerading)])]),
        ]
        if mapsLayout { addMapsLayout(&f) }
        return f
    }

    /// Most endpoints a Service may have to be laid out in the data maps.
    static let maxMapEndpoints = 32

    /// The maps layout's sets and shared chains: `service-lb-N` for ClusterIPs,
    /// `external-lb-N` for external and load balancer IPs, `nodeport-lb-N` for node
    /// ports, N = 1…maxMapEndpoints; and the hairpin check in `masquerading`.
    private func addMapsLayout(_ f: inout FixedObjects) {
        f.sets += [
            SetDef(name: Names.serviceEndpoints, key: [], isVerdictMap: false,
                   comment: "endpoints of services laid out in maps, by destination and random index", raw: RawSets.serviceEndpoints),
            SetDef(name: Names.nodePortEndpoints, key: [], isVerdictMap: false,
                   comment: "endpoints of node ports laid out in maps, by port and random index", raw: RawSets.nodePortEndpoints),
            SetDef(name: Names.endpointHairpin, key: [], isVerdictMap: false,
                   comment: "endpoints that may reach themselves through a service", raw: RawSets.endpointHairpin),
        ]
        // ClusterIP traffic from outside the cluster is marked in `services`, for mapped Services too.
        let masq = Stmt.markSetOr(opts.mark.value)
        let vip: [KeyPart] = [.ipDaddr, .l4proto, .thDport]
        let port: [KeyPart] = [.l4proto, .thDport]
        let protos: [L4Protocol] = [.tcp, .udp, .sctp]
        var lb: [Chain] = []
        for n in 1...Self.maxMapEndpoints {
            lb.append(Chain(Names.serviceLB(n), rules: protos.map {
                Rule([.dnatMap($0, vip, modulus: n, set: Names.serviceEndpoints)]) }))
            lb.append(Chain(Names.externalLB(n), rules: [Rule([masq])] + protos.map {
                Rule([.dnatMap($0, vip, modulus: n, set: Names.serviceEndpoints)]) }))
            lb.append(Chain(Names.nodePortLB(n), rules: [Rule([masq])] + protos.map {
                Rule([.dnatMap($0, port, modulus: n, set: Names.nodePortEndpoints)]) }))
        }
        // Before the base chains, which come last.
        let firstBase = f.chains.firstIndex { $0.base != nil } ?? f.chains.count
        f.chains.insert(contentsOf: lb, at: firstBase)
        if let i = f.chains.firstIndex(where: { $0.name == Names.masquerading }) {
            f.chains[i].rules.insert(Rule([.inConcatSet([.ipSaddr, .ipDaddr], set: Names.endpointHairpin), masq]), at: 0)
        }
    }

    /// An endpoint IP in the maps layout's `endpoint-hairpin` set.
    static func hairpinElement(_ ip: UInt32) -> SetElement {
        SetElement(set: Names.endpointHairpin, element: Element(key: [.ip(ip), .ip(ip)]))
    }

    /// Whether the maps layout takes this Service port.
    func usesMaps(_ info: ServicePortInfo, clusterEndpoints: Int) -> Bool {
        mapsLayout && !info.sessionAffinityClientIP && !info.externalPolicyLocal && !info.internalPolicyLocal
            && !(!info.loadBalancerVIPs.isEmpty && !info.loadBalancerSourceRanges.isEmpty)
            && (1...Self.maxMapEndpoints).contains(clusterEndpoints)
    }

    /// Adds the elements of a mapped Service port; returns its endpoint IPs for the hairpin set.
    private func addMapped(_ info: ServicePortInfo, endpoints: [EndpointInfo],
                           element: (String, Element) -> Void) -> [UInt32] {
        let cip = info.clusterIP.ipv4Value!
        let proto = info.proto, port = info.port
        let n = endpoints.count
        let values: [[KeyValue]] = endpoints.compactMap { ep in
            IPAddress(ep.ip)?.ipv4Value.map { [.ip($0), .port(ep.port)] }
        }
        guard values.count == n else { return [] }
        func spread(_ set: String, _ key: [KeyValue]) {
            for (i, v) in values.enumerated() { element(set, Element(key: key + [.int(UInt32(i))], data: v)) }
        }
        element(Names.clusterIPs, Element(key: [.ip(cip)]))
        element(Names.serviceIPs, Element(key: [.ip(cip), .proto(proto), .port(port)], verdict: .goto(Names.serviceLB(n))))
        spread(Names.serviceEndpoints, [.ip(cip), .proto(proto), .port(port)])
        for v in info.externalIPs + info.loadBalancerVIPs {
            guard let a = v.ipv4Value else { continue }
            element(Names.serviceIPs, Element(key: [.ip(a), .proto(proto), .port(port)], verdict: .goto(Names.externalLB(n))))
            spread(Names.serviceEndpoints, [.ip(a), .proto(proto), .port(port)])
        }
        if info.nodePort != 0 {
            element(Names.serviceNodePorts, Element(key: [.proto(proto), .port(info.nodePort)], verdict: .goto(Names.nodePortLB(n))))
            spread(Names.nodePortEndpoints, [.proto(proto), .port(info.nodePort)])
        }
        return values.compactMap { if case .ip(let a) = $0[0] { return a } else { return nil } }
    }

    // MARK: per service

    /// The objects of all ports of one Service.
    func objects(for ports: [ServicePortInfo], snapshot: ProxySnapshot) -> ServiceObjects {
        var o = ServiceObjects()
        var seen = Set<SetElement>()
        for info in ports.sorted(by: { $0.name < $1.name }) {
            add(info, endpoints: snapshot.endpoints[info.name] ?? [], node: snapshot.node, into: &o, seen: &seen)
        }
        o.shared = Array(Set(o.shared)).sorted()
        return o
    }

    private func add(_ info: ServicePortInfo, endpoints: [EndpointInfo], node: NodeInfo,
                     into o: inout ServiceObjects, seen: inout Set<SetElement>) {
        func element(_ set: String, _ e: Element) {
            let se = SetElement(set: set, element: e)
            if seen.insert(se).inserted { o.elements.append(se) }
        }
        guard let cip = KeyValue.address(info.clusterIP, family) else { return }
        let n = ServiceNames(info)
        let name = n.nameString
        let proto = info.proto
        let port = info.port
        let cat = Topology.categorize(endpoints, for: info, node: node)
        if usesMaps(info, clusterEndpoints: cat.cluster.count) {
            let hairpin = addMapped(info, endpoints: cat.cluster, element: element)
            o.shared += hairpin.map(Self.hairpinElement)
            return
        }
        let policy = PolicyDecision(cat, for: info)
        let hasEndpoints = policy.hasEndpoints
        let usesClusterChain = policy.usesClusterChain, usesLocalChain = policy.usesLocalChain
        let hasInternal = policy.hasInternal, hasExternal = policy.hasExternal
        let internalChain = policy.internalIsLocal ? n.local : n.service
        let externalPolicyChain = policy.externalIsLocal ? n.local : n.service
        let usesExternalChain = info.externallyAccessible
        let externalTrafficChain = usesExternalChain ? n.external : externalPolicyChain
        let usesFW = !info.loadBalancerVIPs.isEmpty && !info.loadBalancerSourceRanges.isEmpty

        var internalVerdict = Verdict.goto(Names.rejectChain)
        var externalVerdict = Verdict.goto(Names.rejectChain)
        if hasEndpoints {
            if !hasInternal { internalVerdict = .drop }
            if !hasExternal { externalVerdict = .drop }
        }

        // Chains, in the order upstream declares them: endpoints, then the policy
        // chains, the external chain and the firewall chain.
        var chains: [String: Chain] = [:]
        var order: [String] = []
        func rule(_ chain: String, _ r: Rule) {
            if chains[chain] == nil { chains[chain] = Chain(chain); order.append(chain) }
            chains[chain]!.rules.append(r)
        }
        func declare(_ chain: String) {
            if chains[chain] == nil { chains[chain] = Chain(chain); order.append(chain) }
        }
        // Each endpoint's name base, hashed once (its chain, the vmap and the affinity set all use
        // it); only session affinity has per-endpoint objects, so only then is anything hashed.
        var bases: [String: String] = [:]
        if info.sessionAffinityClientIP {
            bases.reserveCapacity(cat.allReachable.count)
            for ep in cat.allReachable { bases[ep.endpoint] = n.endpointBase(ep, info) }
        }
        func base(_ ep: EndpointInfo) -> String { bases[ep.endpoint] ?? n.endpointBase(ep, info) }
        // Endpoint chains only for affinity (upstream since v1.36): without it the service chain
        // DNATs itself, through a numgen map.
        if info.sessionAffinityClientIP { for ep in cat.allReachable { declare("endpoint-" + base(ep)) } }
        if usesClusterChain { declare(n.service) }
        if usesLocalChain { declare(n.local) }
        if usesExternalChain && hasEndpoints { declare(n.external) }
        if usesFW && hasEndpoints { declare(n.firewall) }

        // ClusterIP.
        let key: [KeyValue] = [cip, .proto(proto), .port(port)]
        element(Names.clusterIPs, Element(key: [cip]))
        if hasInternal {
            element(Names.serviceIPs, Element(key: key, verdict: .goto(internalChain)))
        } else {
            element(Names.noEndpointServices, Element(key: key, verdict: internalVerdict, comment: name))
        }
        // External IPs.
        for eip in info.externalIPs {
            guard let v = KeyValue.address(eip, family) else { continue }
            let k: [KeyValue] = [v, .proto(proto), .port(port)]
            if hasEndpoints { element(Names.serviceIPs, Element(key: k, verdict: .goto(externalTrafficChain))) }
            if !hasExternal { element(Names.noEndpointServices, Element(key: k, verdict: externalVerdict, comment: name)) }
        }
        // Load balancer IPs.
        for lb in info.loadBalancerVIPs {
            guard let v = KeyValue.address(lb, family) else { continue }
            let k: [KeyValue] = [v, .proto(proto), .port(port)]
            if hasEndpoints { element(Names.serviceIPs, Element(key: k, verdict: .goto(externalTrafficChain))) }
            if usesFW && hasEndpoints { element(Names.firewallIPs, Element(key: k, verdict: .goto(n.firewall))) }
        }
        if !hasExternal {
            for lb in info.loadBalancerVIPs {
                guard let v = KeyValue.address(lb, family) else { continue }
                element(Names.noEndpointServices,
                        Element(key: [v, .proto(proto), .port(port)], verdict: externalVerdict, comment: name))
            }
        }
        // Node port.
        if info.nodePort != 0 {
            let k: [KeyValue] = [.proto(proto), .port(info.nodePort)]
            if hasEndpoints { element(Names.serviceNodePorts, Element(key: k, verdict: .goto(externalTrafficChain))) }
            if !hasExternal { element(Names.noEndpointNodePorts, Element(key: k, verdict: externalVerdict, comment: name)) }
        }

        // (ClusterIP traffic from outside the cluster is marked in `services`, for every ClusterIP.)
        let mark = opts.mark.value
        // External traffic.
        if usesExternalChain && hasEndpoints {
            if !info.externalPolicyLocal {
                rule(n.external, Rule([.markSetOr(mark)], comment: "masquerade"))
            } else {
                if let local = opts.ifLocal(negate: false) {
                    rule(n.external, Rule([local, .verdict(.goto(n.service))], comment: "short-circuit pod traffic"))
                }
                rule(n.external, Rule([.fibLocal(.saddr), .markSetOr(mark)], comment: "masquerade local traffic"))
                rule(n.external, Rule([.fibLocal(.saddr), .verdict(.goto(n.service))],
                                      comment: "short-circuit local traffic"))
            }
            if hasExternal {
                rule(n.external, Rule([.verdict(.goto(externalPolicyChain))]))
            }
        }
        // Firewall for loadBalancerSourceRanges.
        if usesFW && hasEndpoints {
            var sources = info.loadBalancerSourceRanges.filter { $0.family == family }.map(\.network)
            if let nip = opts.nodeIP, info.loadBalancerSourceRanges.contains(where: { $0.contains(nip) }) {
                sources += info.loadBalancerVIPs.filter { $0.family == family }.map { CIDR(address: $0, prefixLength: family.bits) }
            }
            rule(n.firewall, Rule([.addrInList(.saddr(family), negate: true, sources), .verdict(.drop)]))
        }
        // Affinity sets.
        if info.sessionAffinityClientIP {
            for ep in cat.allReachable {
                o.sets.append(SetDef(name: "affinity-" + base(ep), key: [family.addrType],
                                     isVerdictMap: false, timeoutSeconds: info.stickyMaxAgeSeconds))
            }
        }
        // Policy chains to endpoints.
        func toEndpoints(_ chain: String, _ eps: [EndpointInfo]) {
            if info.sessionAffinityClientIP {
                for ep in eps {
                    let b = base(ep)
                    rule(chain, Rule([.addrInSet(.saddr(family), negate: false, set: "affinity-" + b),
                                      .verdict(.goto("endpoint-" + b))]))
                }
            }
            guard !eps.isEmpty else { return }
            if info.sessionAffinityClientIP {
                rule(chain, Rule([.numgenVmap(eps.map { "endpoint-" + base($0) })]))
            } else {
                let dests = eps.compactMap { ep in KeyValue.address(ep.ip, family).map { Destination(ip: $0, port: ep.port) } }
                if !dests.isEmpty { rule(chain, Rule([.dnatNumgenMap(proto, dests)])) }
            }
        }
        if usesClusterChain { toEndpoints(n.service, cat.cluster) }
        if usesLocalChain { toEndpoints(n.local, cat.local) }
        // Endpoint chains.
        for ep in cat.allReachable where info.sessionAffinityClientIP {
            guard let v = KeyValue.address(ep.ip, family) else { continue }
            let b = base(ep)
            let chain = "endpoint-" + b
            rule(chain, Rule([.updateSet("affinity-" + b, .saddr(family))]))
            rule(chain, Rule([.dnat(proto, v, ep.port)]))
        }
        // Hairpin: a local endpoint that reaches itself through the Service is masqueraded.
        for ep in cat.allReachable where ep.isLocal {
            guard let v = KeyValue.address(ep.ip, family) else { continue }
            o.shared.append(SetElement(set: Names.hairpinConnections, element: Element(key: [v, v, .proto(proto), .port(ep.port)])))
        }
        for c in order { o.chains.append(chains[c]!) }
    }
}

/// The maps layout's sets as nft 1.0.6 creates them from their declarations: key
/// and data types and lengths, and the user data that holds the `typeof`
/// expressions (read back from the kernel after `nft -f`), so that `nft list`
/// shows the same declaration whether we or nft created the set.
enum RawSets {
    private static func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = s.startIndex
        while i < s.endIndex {
            let j = s.index(i, offsetBy: 2)
            out.append(UInt8(s[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    static let serviceEndpoints = RawSetType(
        text: "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport",
        keyType: 1_884_996, keyLength: 16, dataType: 461, dataLength: 8,
        userData: hex("000400000000010400000000036000040d00000001580014000407000000010c00040c00000001040c000000010e00040900000001060004100000000214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c00040b000000010402000000060400000000"))

    static let nodePortEndpoints = RawSetType(
        text: "typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport",
        keyType: 49_988, keyLength: 12, dataType: 461, dataLength: 8,
        userData: hex("000400000000010400000000034a00040d0000000142000e00040900000001060004100000000114000407000000010c00040b000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c00040b000000010402000000060400000000"))

    static let endpointHairpin = RawSetType(
        text: "type ipv4_addr . ipv4_addr", keyType: 455, keyLength: 8, dataType: 0, dataLength: 0,
        userData: hex("000400000000030800040d0000000100"))
}
