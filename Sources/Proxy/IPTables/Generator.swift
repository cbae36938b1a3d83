import IPTablesKit
import KubeAPI
import ProxySeam

/// The rules of one service port, split by where they live: lines in the shared
/// top-level chains, and the service's own chains.
struct ServiceRules: Equatable {
    /// `-A KUBE-SERVICES …` / `-A KUBE-NODEPORTS …` lines in the nat table.
    var natTop: [String] = []
    /// Lines in the filter table's shared chains.
    var filterTop: [String] = []
    /// The service's own nat chains, in the order upstream declares them.
    var chains: [String] = []
    /// The rules of those chains, one per line, each ending in "\n".
    var chainRules = ""
    var noLocalInternal = false
    var noLocalExternal = false
}

/// Settings the generator needs beyond the snapshot.
@dynamicMemberLookup
public struct IPTablesOptions: Sendable {
    /// The settings every mode shares, read as this struct's own (`opts.masqueradeAll`).
    public var common = CommonOptions()
    public subscript<T>(dynamicMember key: WritableKeyPath<CommonOptions, T>) -> T {
        get { common[keyPath: key] }
        set { common[keyPath: key] = newValue }
    }
    public var conntrackTCPLiberal = false
    public var randomFully = true
    /// The nfacct counters that exist (see `NFAcctCounter`): rules count into them, as upstream's do.
    public var nfacctCounters: Set<String> = []

    public init() {}

    public init(_ c: ProxyConfig, nodePortIPs: [IPAddress]?) {
        common = CommonOptions(c, nodePortIPs: nodePortIPs)
        conntrackTCPLiberal = c.conntrackTCPLiberal
    }

    var ifLocal: String? { common.localDetector.iptablesMatch(negated: false, family: common.family) }
    var ifNotLocal: String? { common.localDetector.iptablesMatch(negated: true, family: common.family) }
}

/// Upstream writes large rulesets without per-endpoint comments.
let largeClusterEndpointsThreshold = 1000

/// Generates kube-proxy's iptables ruleset. Pure: no I/O.
struct Generator {
    let opts: IPTablesOptions
    let largeCluster: Bool
    private var probabilities: [String] = ["<bad value>"]

    init(opts: IPTablesOptions, largeCluster: Bool) {
        self.opts = opts
        self.largeCluster = largeCluster
    }

    /// `%0.10f` of 1/n, the format upstream uses for `--probability`.
    mutating func probability(_ n: Int) -> String {
        while probabilities.count <= n {
            probabilities.append(Self.format10(1.0 / Double(probabilities.count)))
        }
        return probabilities[n]
    }

    static func format10(_ v: Double) -> String {
        // Round half to even like Go's %0.10f on the exact binary value.
        let scaled = (v * 1e10).rounded(.toNearestOrEven)
        let whole = Int(scaled) / 10_000_000_000
        let frac = Int(scaled) % 10_000_000_000
        let f = String(frac)
        return "\(whole)." + String(repeating: "0", count: 10 - f.count) + f
    }

    /// Whether the snapshot is large enough for upstream's "large cluster mode".
    static func isLargeCluster(_ snap: ProxySnapshot) -> Bool {
        snap.totalEndpoints > largeClusterEndpointsThreshold
    }

    /// The rules of one service port.
    mutating func rules(for info: ServicePortInfo, endpoints: [EndpointInfo], node: NodeInfo) -> ServiceRules {
        var r = ServiceRules()
        let n = ServiceChainNames(info)
        let proto = n.proto
        let name = n.nameString
        let cat = Topology.categorize(endpoints, for: info, node: node)
        let policy = PolicyDecision(cat, for: info)
        let hasEndpoints = policy.hasEndpoints
        let usesClusterChain = policy.usesClusterChain, usesLocalChain = policy.usesLocalChain
        let hasInternal = policy.hasInternal, hasExternal = policy.hasExternal
        let internalChain = policy.internalIsLocal ? n.svl : n.svc
        let externalPolicyChain = policy.externalIsLocal ? n.svl : n.svc
        let usesExtChain = hasEndpoints && info.externallyAccessible
        let usesFW = hasEndpoints && !info.loadBalancerVIPs.isEmpty && !info.loadBalancerSourceRanges.isEmpty
        let lbChain = usesFW ? n.fw : n.ext

        var internalTarget = "", internalComment = ""
        var externalTarget = "", externalComment = ""
        if !hasEndpoints {
            internalTarget = "REJECT"
            internalComment = "\"\(name) has no endpoints\""
            externalTarget = "REJECT"
            externalComment = internalComment
        } else {
            if !hasInternal {
                internalTarget = "DROP"
                internalComment = "\"\(name) has no local endpoints\""
                r.noLocalInternal = true
            }
            if !hasExternal {
                externalTarget = "DROP"
                externalComment = "\"\(name) has no local endpoints\""
                r.noLocalExternal = true
            }
        }
        let cip = info.clusterIP.description
        let port = String(info.port)
        let pm = "-m \(proto) -p \(proto)"

        // Cluster IP.
        if hasInternal {
            r.natTop.append("-A KUBE-SERVICES -m comment --comment \"\(name) cluster IP\" \(pm) -d \(cip) --dport \(port) -j \(internalChain)")
        } else {
            r.filterTop.append("-A KUBE-SERVICES -m comment --comment \(internalComment) \(pm) -d \(cip) --dport \(port) -j \(internalTarget)")
        }
        // External IPs.
        for eip in info.externalIPs {
            let ip = eip.description
            if hasEndpoints {
                r.natTop.append("-A KUBE-SERVICES -m comment --comment \"\(name) external IP\" \(pm) -d \(ip) --dport \(port) -j \(n.ext)")
            }
            if !hasExternal {
                r.filterTop.append("-A KUBE-EXTERNAL-SERVICES -m comment --comment \(externalComment) \(pm) -d \(ip) --dport \(port) -j \(externalTarget)")
            }
        }
        // Load balancer IPs.
        for lb in info.loadBalancerVIPs {
            let ip = lb.description
            if hasEndpoints {
                r.natTop.append("-A KUBE-SERVICES -m comment --comment \"\(name) loadbalancer IP\" \(pm) -d \(ip) --dport \(port) -j \(lbChain)")
            }
            if usesFW {
                r.filterTop.append("-A KUBE-PROXY-FIREWALL -m comment --comment \"\(name) traffic not accepted by \(n.fw)\" \(pm) -d \(ip) --dport \(port) -j DROP")
            }
        }
        if !hasExternal {
            for lb in info.loadBalancerVIPs {
                r.filterTop.append("-A KUBE-EXTERNAL-SERVICES -m comment --comment \(externalComment) \(pm) -d \(lb) --dport \(port) -j \(externalTarget)")
            }
        }
        // Node ports.
        if info.nodePort != 0 {
            if hasEndpoints {
                if opts.localhostNodePorts && opts.nfacctCounters.contains(NFAcctCounter.localhostNodePortAccepted) {
                    r.natTop.append("-A KUBE-NODEPORTS -m comment --comment \(name) \(pm) -d 127.0.0.0/8 --dport \(info.nodePort) -m nfacct --nfacct-name \(NFAcctCounter.localhostNodePortAccepted) -j \(n.ext)")
                }
                r.natTop.append("-A KUBE-NODEPORTS -m comment --comment \(name) \(pm) --dport \(info.nodePort) -j \(n.ext)")
            }
            if !hasExternal {
                r.filterTop.append("-A KUBE-EXTERNAL-SERVICES -m comment --comment \(externalComment) -m addrtype --dst-type LOCAL \(pm) --dport \(info.nodePort) -j \(externalTarget)")
            }
        }
        // Health check node port.
        if info.healthCheckNodePort != 0 {
            r.filterTop.append("-A KUBE-NODEPORTS -m comment --comment \"\(name) health check node port\" -m tcp -p tcp --dport \(info.healthCheckNodePort) -j ACCEPT")
        }

        var out = ""
        // Internal traffic masquerading, in the policy chain.
        if hasInternal {
            let args = "-m comment --comment \"\(name) cluster IP\" \(pm) -d \(cip) --dport \(port)"
            if opts.masqueradeAll {
                out += "-A \(internalChain) \(args) -j KUBE-MARK-MASQ\n"
            } else if let notLocal = opts.ifNotLocal {
                out += "-A \(internalChain) \(args) \(notLocal) -j KUBE-MARK-MASQ\n"
            }
        }
        // External traffic.
        if usesExtChain {
            r.chains.append(n.ext)
            if !info.externalPolicyLocal {
                out += "-A \(n.ext) -m comment --comment \"masquerade traffic for \(name) external destinations\" -j KUBE-MARK-MASQ\n"
            } else {
                if let local = opts.ifLocal {
                    out += "-A \(n.ext) -m comment --comment \"pod traffic for \(name) external destinations\" \(local) -j \(n.svc)\n"
                }
                out += "-A \(n.ext) -m comment --comment \"masquerade LOCAL traffic for \(name) external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n"
                out += "-A \(n.ext) -m comment --comment \"route LOCAL traffic for \(name) external destinations\" -m addrtype --src-type LOCAL -j \(n.svc)\n"
            }
            if hasExternal {
                out += "-A \(n.ext) -j \(externalPolicyChain)\n"
            }
        }
        // Firewall for loadBalancerSourceRanges.
        if usesFW {
            r.chains.append(n.fw)
            let head = "-A \(n.fw) -m comment --comment \"\(name) loadbalancer IP\""
            var allowFromNode = false
            for cidr in info.loadBalancerSourceRanges {
                out += "\(head) -s \(cidr) -j \(n.ext)\n"
                if let nip = opts.nodeIP, cidr.contains(nip) { allowFromNode = true }
            }
            if allowFromNode {
                for lb in info.loadBalancerVIPs {
                    out += "\(head) -s \(lb) -j \(n.ext)\n"
                }
            }
            out += "-A \(n.fw) -m comment --comment \"other traffic to \(name) will be dropped by KUBE-PROXY-FIREWALL\"\n"
        }
        // Each endpoint's chain name once (a hash): the service chains jump to the same ones.
        var sepNames: [String: String] = [:]
        sepNames.reserveCapacity(cat.allReachable.count)
        for ep in cat.allReachable { sepNames[ep.endpoint] = n.endpointChain(ep) }
        func sepName(_ ep: EndpointInfo) -> String { sepNames[ep.endpoint] ?? n.endpointChain(ep) }
        if usesClusterChain {
            r.chains.append(n.svc)
            writeServiceToEndpoint(&out, names: n, info: info, chain: n.svc, endpoints: cat.cluster, sepName: sepName)
        }
        if usesLocalChain {
            r.chains.append(n.svl)
            writeServiceToEndpoint(&out, names: n, info: info, chain: n.svl, endpoints: cat.local, sepName: sepName)
        }
        for ep in cat.allReachable {
            let sep = sepName(ep)
            r.chains.append(sep)
            // Appended piece by piece: these two lines per endpoint are most of a large ruleset.
            out += "-A "; out += sep
            if !largeCluster { out += " -m comment --comment "; out += name }
            out += " -s "; out += ep.ip; out += " -j KUBE-MARK-MASQ\n"
            out += "-A "; out += sep
            if !largeCluster { out += " -m comment --comment "; out += name }
            if info.sessionAffinityClientIP { out += " -m recent --name "; out += sep; out += " --set" }
            out += " "; out += pm; out += " -j DNAT --to-destination "; out += ep.endpoint; out += "\n"
        }
        r.chainRules = out
        return r
    }

    private mutating func writeServiceToEndpoint(_ out: inout String, names n: ServiceChainNames, info: ServicePortInfo,
                                                 chain: String, endpoints: [EndpointInfo], sepName: (EndpointInfo) -> String) {
        let name = n.nameString
        if info.sessionAffinityClientIP {
            for ep in endpoints {
                let sep = sepName(ep)
                out += "-A \(chain)"
                if !largeCluster { out += " -m comment --comment \"\(name) -> \(ep.endpoint)\"" }
                out += " -m recent --name \(sep) --rcheck --seconds \(info.stickyMaxAgeSeconds) --reap -j \(sep)\n"
            }
        }
        let count = endpoints.count
        for (i, ep) in endpoints.enumerated() {
            out += "-A "; out += chain
            if !largeCluster { out += " -m comment --comment \""; out += name; out += " -> "; out += ep.endpoint; out += "\"" }
            if i < count - 1 {
                out += " -m statistic --mode random --probability "; out += probability(count - i)
            }
            out += " -j "; out += sepName(ep); out += "\n"
        }
    }

    // MARK: fixed parts

    /// Filter-table chains that are always declared, and nat-table ones.
    static let filterChains = [Chains.services, Chains.externalServices, Chains.forward, Chains.nodePorts, Chains.proxyFirewall]
    static let natChains = [Chains.services, Chains.nodePorts, Chains.postrouting, Chains.markMasq]

    func postroutingRules() -> String {
        let m = opts.mark.hex
        var s = "-A KUBE-POSTROUTING -m mark ! --mark \(m)/\(m) -j RETURN\n"
        s += "-A KUBE-POSTROUTING -j MARK --xor-mark \(m)\n"
        s += "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE"
        s += opts.randomFully ? " --random-fully\n" : "\n"
        s += "-A KUBE-MARK-MASQ -j MARK --or-mark \(m)\n"
        return s
    }

    var kubeletFirewallRule: String? {
        guard opts.localhostNodePorts else { return nil }
        return "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n"
    }

    /// The last rules of KUBE-SERVICES: the jump to KUBE-NODEPORTS.
    func nodePortJumps() -> [String] {
        let c = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\""
        guard let ips = opts.nodePortIPs else {
            var d = "-m addrtype --dst-type LOCAL"
            // Localhost NodePorts never work on IPv6, and on IPv4 only with route_localnet (upstream's).
            if opts.family == .ipv6 { d += " ! -d ::1/128" } else if !opts.localhostNodePorts { d += " ! -d 127.0.0.0/8" }
            return ["-A KUBE-SERVICES \(c) \(d) -j KUBE-NODEPORTS"]
        }
        return ips.filter { $0.family == opts.family && (!$0.isLoopback || opts.localhostNodePorts) }
            .map { "-A KUBE-SERVICES \(c) -d \($0) -j KUBE-NODEPORTS" }
    }

    func forwardRules() -> String {
        let m = opts.mark.hex
        var s = ""
        if !opts.conntrackTCPLiberal {
            let count = opts.nfacctCounters.contains(NFAcctCounter.ctStateInvalidDropped) ? "-m nfacct --nfacct-name \(NFAcctCounter.ctStateInvalidDropped) " : ""
            s += "-A KUBE-FORWARD -m conntrack --ctstate INVALID \(count)-j DROP\n"
        }
        s += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark \(m)/\(m) -j ACCEPT\n"
        s += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        return s
    }
}

/// The nfacct counters upstream's iptables mode keeps (`pkg/proxy/metrics`), with the metrics that read them.
public enum NFAcctCounter {
    public static let ctStateInvalidDropped = "ct_state_invalid_dropped_pkts"
    public static let localhostNodePortAccepted = "localhost_nps_accepted_pkts"
    public static let all = [ctStateInvalidDropped, localhostNodePortAccepted]

    /// The metric each counter's packets are served as, with its help text.
    public static let metrics: [(counter: String, name: String, help: String)] = [
        (ctStateInvalidDropped, "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
         "packets dropped by iptables to work around conntrack problems"),
        (localhostNodePortAccepted, "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
         "Number of packets accepted on nodeports of loopback interface"),
    ]
}
