import KubeAPI
import ProxySeam
import IPTablesKit

/// What one service adds to the IPVS mode's ipsets and to the KUBE-IPVS-OUT-FILTER chain.
struct IPVSRuleShare: Equatable, Sendable {
    /// Entries by set name, as `ipset save` prints them.
    var entries: [String: Set<String>] = [:]
    /// KUBE-IPVS-OUT-FILTER rules (load balancer IPs whose source ranges leave the node out).
    var outDrops: Set<String> = []
    var isEmpty: Bool { entries.isEmpty && outDrops.isEmpty }
}

/// The masquerade and filter rules the IPVS mode needs beside IPVS, as kube-proxy writes them:
/// ipsets of service addresses (KUBE-CLUSTER-IP, KUBE-NODE-PORT-TCP, KUBE-LOOP-BACK, …) matched
/// by a fixed handful of iptables rules in nat and filter, so the rules do not grow with the
/// number of services and a service change only adds or removes set entries. Pure: no I/O.
public enum IPVSRules {
    static let natChains = ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ"]
    static let filterChains = ["KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL",
                               "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER"]

    /// The jumps from the built-in chains, each put first in its chain when missing, in this order.
    static let jumps: [JumpRule] = [
        JumpRule(table: "nat", chain: "OUTPUT", rule: "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", position: .prepend),
        JumpRule(table: "nat", chain: "PREROUTING", rule: "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", position: .prepend),
        JumpRule(table: "nat", chain: "POSTROUTING", rule: "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING", position: .prepend),
        JumpRule(table: "filter", chain: "FORWARD", rule: "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD", position: .prepend),
        JumpRule(table: "filter", chain: "INPUT", rule: "-m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT", position: .prepend),
        JumpRule(table: "filter", chain: "INPUT", rule: "-m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL", position: .prepend),
        JumpRule(table: "filter", chain: "FORWARD", rule: "-m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL", position: .prepend),
        JumpRule(table: "filter", chain: "INPUT", rule: "-m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER", position: .prepend),
        JumpRule(table: "filter", chain: "OUTPUT", rule: "-m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER", position: .prepend),
    ]

    /// `ip,proto:port`, `ip,proto:port,ip` and `ip,proto:port,net` as ipset prints them (a /32
    /// net without its length).
    static func entry(_ ip: IPAddress, _ proto: L4Protocol, _ port: Int, _ third: String? = nil) -> String {
        "\(ip),\(proto.lower):\(port)" + (third.map { ",\($0)" } ?? "")
    }

    static func net(_ c: CIDR) -> String { c.prefixLength == (c.family == .ipv4 ? 32 : 128) ? c.address.description : c.description }

    /// What the service ports `ports` put into the sets; `nodeIPs` are the addresses NodePorts
    /// are served on (none: no NodePort entries, as upstream).
    static func share(_ snap: ProxySnapshot, of ports: [ServicePortName], nodeIPs: [IPAddress], options: IPVSOptions) -> IPVSRuleShare {
        var s = IPVSRuleShare()
        let family = options.family
        func add(_ set: IPSetKind, _ e: String) { s.entries[set.of(family).name, default: []].insert(e) }
        for name in ports {
            guard let info = snap.servicePorts[name], info.clusterIP.family == family, (1...65535).contains(info.port) else { continue }
            let p = info.proto
            for e in snap.endpoints[name] ?? [] where e.isLocal && e.ip.contains(":") == (family == .ipv6) && (1...65535).contains(e.port) {
                add(.loopBack, "\(e.ip),\(p.lower):\(e.port),\(e.ip)")
            }
            add(.clusterIP, entry(info.clusterIP, p, info.port))
            for ip in info.externalIPs where ip.family == family {
                add(info.externalPolicyLocal ? .externalIPLocal : .externalIP, entry(ip, p, info.port))
            }
            for ip in info.loadBalancerVIPs where ip.family == family {
                let e = entry(ip, p, info.port)
                add(.loadBalancer, e)
                if info.externalPolicyLocal { add(.loadBalancerLocal, e) }
                let ranges = info.loadBalancerSourceRanges.filter { $0.address.family == family }
                guard !ranges.isEmpty else { continue }
                add(.loadBalancerFW, e)
                for r in ranges { add(.loadBalancerSourceCIDR, entry(ip, p, info.port, net(r))) }
                if let node = options.nodeIP, ranges.contains(where: { $0.contains(node) }) {
                    add(.loadBalancerSourceIP, entry(ip, p, info.port, ip.description))
                } else {
                    // The node is not in the source ranges: its own connections to the load balancer
                    // IP (which kube-ipvs0 makes local) are dropped too.
                    s.outDrops.insert("-A KUBE-IPVS-OUT-FILTER -s \(ip) -m ipvs --vaddr \(ip) --vproto \(p.lower) --vport \(info.port) -j DROP")
                }
            }
            if info.nodePort != 0 && !nodeIPs.isEmpty {
                switch p {
                case .tcp, .udp:
                    add(p == .tcp ? .nodePortTCP : .nodePortUDP, String(info.nodePort))
                    if info.externalPolicyLocal { add(p == .tcp ? .nodePortLocalTCP : .nodePortLocalUDP, String(info.nodePort)) }
                case .sctp:
                    for ip in nodeIPs where ip.family == family {
                        add(.nodePortSCTP, entry(ip, .sctp, info.nodePort))
                        if info.externalPolicyLocal { add(.nodePortLocalSCTP, entry(ip, .sctp, info.nodePort)) }
                    }
                }
            }
            if info.healthCheckNodePort != 0 { add(.healthCheckNodePort, String(info.healthCheckNodePort)) }
        }
        for a in IPVSPlan.boundAddresses(snap, of: ports, family: family) { add(.ipvsIPs, a) }
        return s
    }

    static func quoted(_ s: String) -> String { "\"\(s)\"" }

    /// The `iptables-restore --noflush` input: our chains (flushed by their declarations) and their
    /// rules, given which sets have entries and the KUBE-IPVS-OUT-FILTER drops.
    public static func restoreText(nonEmpty: Set<String>, outDrops: [String], options: IPVSOptions) -> String {
        var nat = "*nat\n" + natChains.map { ":\($0) - [0:0]\n" }.joined()
        var filter = "*filter\n" + filterChains.map { ":\($0) - [0:0]\n" }.joined()
        var natRules = "", filterRules = ""
        let family = options.family
        func has(_ k: IPSetKind) -> Bool { nonEmpty.contains(k.of(family).name) }
        func setRule(_ chain: String, _ k: IPSetKind, _ match: String, _ target: String, proto: String? = nil) -> String {
            "-A \(chain) " + (proto.map { "-p \($0) " } ?? "") + "-m comment --comment \(quoted(k.comment)) -m set --match-set \(k.of(family).name) \(match) -j \(target)\n"
        }
        // Loopback sources leave the services alone (IPv4: 127.0.0.1 NodePorts have their own path).
        if family == .ipv4 { natRules += "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n" }
        // Upstream's ipsetWithIptablesChain, in its order.
        let chained: [(IPSetKind, table: String, chain: String, match: String, target: String, proto: String?)] = [
            (.loopBack, "nat", "KUBE-POSTROUTING", "dst,dst,src", "MASQUERADE", nil),
            (.loadBalancer, "nat", "KUBE-SERVICES", "dst,dst", "KUBE-LOAD-BALANCER", nil),
            (.loadBalancerLocal, "nat", "KUBE-LOAD-BALANCER", "dst,dst", "RETURN", nil),
            (.nodePortLocalTCP, "nat", "KUBE-NODE-PORT", "dst", "RETURN", "tcp"),
            (.nodePortTCP, "nat", "KUBE-NODE-PORT", "dst", "KUBE-MARK-MASQ", "tcp"),
            (.nodePortLocalUDP, "nat", "KUBE-NODE-PORT", "dst", "RETURN", "udp"),
            (.nodePortUDP, "nat", "KUBE-NODE-PORT", "dst", "KUBE-MARK-MASQ", "udp"),
            (.nodePortLocalSCTP, "nat", "KUBE-NODE-PORT", "dst,dst", "RETURN", "sctp"),
            (.nodePortSCTP, "nat", "KUBE-NODE-PORT", "dst,dst", "KUBE-MARK-MASQ", "sctp"),
            (.loadBalancerFW, "filter", "KUBE-PROXY-FIREWALL", "dst,dst", "KUBE-SOURCE-RANGES-FIREWALL", nil),
            (.loadBalancerSourceCIDR, "filter", "KUBE-SOURCE-RANGES-FIREWALL", "dst,dst,src", "RETURN", nil),
            (.loadBalancerSourceIP, "filter", "KUBE-SOURCE-RANGES-FIREWALL", "dst,dst,src", "RETURN", nil),
        ]
        for c in chained where has(c.0) {
            let r = setRule(c.chain, c.0, c.match, c.target, proto: c.proto)
            if c.table == "nat" { natRules += r } else { filterRules += r }
        }
        if has(.clusterIP) {
            let k = IPSetKind.clusterIP.of(family)
            let head = "-A KUBE-SERVICES -m comment --comment \(quoted(k.comment)) -m set --match-set \(k.name) "
            if options.masqueradeAll {
                natRules += head + "dst,dst -j KUBE-MARK-MASQ\n"
            } else if let notLocal = options.ifNotLocal {
                natRules += head + "dst,dst \(notLocal) -j KUBE-MARK-MASQ\n"
            } else {
                // No way to tell pod traffic: masquerade what the node sends from a service address.
                natRules += head + "src,dst -j KUBE-MARK-MASQ\n"
            }
        }
        for (k, masq) in [(IPSetKind.externalIP, true), (.externalIPLocal, false)] where has(k) {
            let head = "-A KUBE-SERVICES -m comment --comment \(quoted(k.comment)) -m set --match-set \(k.of(family).name) dst,dst "
            if masq { natRules += head + "-j KUBE-MARK-MASQ\n" }
            natRules += head + "-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT\n"
            natRules += head + "-m addrtype --dst-type LOCAL -j ACCEPT\n"
        }
        natRules += "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n"
        natRules += "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ\n"
        filterRules += "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP\n"
        for d in outDrops { filterRules += d + "\n" }
        if has(.clusterIP) { natRules += "-A KUBE-SERVICES -m set --match-set \(IPSetKind.clusterIP.of(family).name) dst,dst -j ACCEPT\n" }
        if has(.loadBalancer) { natRules += "-A KUBE-SERVICES -m set --match-set \(IPSetKind.loadBalancer.of(family).name) dst,dst -j ACCEPT\n" }
        let m = options.mark.paddedHex
        filterRules += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark \(m)/\(m) -j ACCEPT\n"
        filterRules += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        filterRules += "-A KUBE-NODE-PORT -m comment --comment \(quoted(IPSetKind.healthCheckNodePort.comment)) -m set --match-set \(IPSetKind.healthCheckNodePort.of(family).name) dst -j ACCEPT\n"
        for (k, match) in [(IPSetKind.loadBalancer, "dst,dst"), (.clusterIP, "dst,dst"), (.externalIP, "dst,dst"),
                           (.externalIPLocal, "dst,dst"), (.healthCheckNodePort, "dst")] {
            filterRules += "-A KUBE-IPVS-FILTER -m set --match-set \(k.of(family).name) \(match) -j RETURN\n"
        }
        filterRules += "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set \(IPSetKind.ipvsIPs.of(family).name) dst -j REJECT\n"
        natRules += "-A KUBE-POSTROUTING -m mark ! --mark \(m)/\(m) -j RETURN\n"
        natRules += "-A KUBE-POSTROUTING -j MARK --xor-mark \(m)\n"
        natRules += "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE"
            + (options.randomFully ? " --random-fully" : "") + "\n"
        natRules += "-A KUBE-MARK-MASQ -j MARK --or-mark \(m)\n"
        nat += natRules + "COMMIT\n"
        filter += filterRules + "COMMIT\n"
        return nat + filter
    }

    /// Sets and entries as `ipset save` would list them (a script `ipset restore` takes).
    public static func ipsetScript(_ entries: [String: Set<String>], family: IPFamily = .ipv4) -> String {
        var out = ""
        for k in IPSetKind.all(family) {
            out += k.createLine + "\n"
            for e in (entries[k.name] ?? []).sorted() { out += "add \(k.name) \(e)\n" }
        }
        return out
    }

    /// Everything for a snapshot, as `render` prints it.
    public static func render(_ snap: ProxySnapshot, options: IPVSOptions) -> (ipset: String, iptables: String) {
        let nodeIPs = (options.nodePortIPs ?? snap.node.ips).filter { $0.family == options.family }
        var options = options
        if options.nodeIP == nil { options.nodeIP = nodeIPs.first }   // as the proxier takes it
        let s = share(snap, of: Array(snap.servicePorts.keys), nodeIPs: nodeIPs, options: options)
        let nonEmpty = Set(s.entries.filter { !$0.value.isEmpty }.keys)
        return (ipsetScript(s.entries, family: options.family), withJumps(restoreText(nonEmpty: nonEmpty, outDrops: s.outDrops.sorted(), options: options)))
    }

    /// The restore text with the jumps from the built-in chains as `-I CHAIN 1` lines at the end
    /// of each table (a render is loaded whole: the proxier ensures them itself). Inserted in
    /// the proxier's order, they end up in its order.
    static func withJumps(_ text: String) -> String {
        var out = "", table = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix("*") { table = String(line.dropFirst()) }
            if line == "COMMIT" {
                for j in jumps where j.table == table { out += "-I \(j.chain) 1 \(j.rule)\n" }
            }
            out += line + "\n"
        }
        return out
    }

    /// The rules of our chains and the jumps to them in an `iptables-save`, as `table -A …` lines.
    static func ours(_ parsed: IPTablesSave) -> [String] {
        var out: [String] = []
        for (table, ourChains) in [("nat", natChains), ("filter", filterChains)] {
            for r in parsed.rules[table] ?? [] where ourChains.contains(r.chain) || IPTablesSave.jumpTarget(r.line).map(ourChains.contains) == true {
                out.append("\(table) \(r.line)")
            }
        }
        return out
    }

    /// Removes the IPVS mode's jumps and chains (a chain another mode still jumps to is flushed and
    /// kept), then its ipsets: what `--cleanup` does whichever mode ran. `ipt` is the family's
    /// (ip6tables for IPv6), and its sets are the family's.
    /// True when there was anything to remove.
    @discardableResult
    public static func remove(ipt: any IPTablesInterface, ipset: any IPSetInterface, family: IPFamily = .ipv4) throws -> Bool {
        let removed = try ipt.removeOwned(OwnedChains(names: ["nat": Set(natChains), "filter": Set(filterChains)]))
        let sets = try ipset.save()
        let destroy = IPSetKind.all(family).filter { sets[$0.name] != nil }.map { "destroy \($0.name)\n" }.joined()
        if !destroy.isEmpty { try ipset.restore(destroy) }
        return removed || !destroy.isEmpty
    }
}
