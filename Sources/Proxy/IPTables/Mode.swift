import Foundation
import IPTablesKit
import KubeAPI
import Netlink
import ProxySeam

extension ProxyMode {
    /// kube-proxy's iptables mode.
    public static let iptables = ProxyMode(
        name: "iptables",
        summary: "iptables NAT chains per Service and endpoint (KUBE-SERVICES, KUBE-SVC-…, KUBE-SEP-…), written with iptables-restore",
        families: [.ipv4, .ipv6],
        backend: { config, env in
            var o = IPTablesOptions(config, nodePortIPs: config.nodePortIPs(local: env.localAddresses))
            // ip6tables for the IPv6 proxier of a dual-stack node.
            let ipt = SystemIPTables(ipv6: config.ipFamily == .ipv6)
            // A live proxy asks the iptables it runs, as upstream does; `render` writes what current iptables takes.
            o.randomFully = ipt.hasRandomFully()
            o.nfacctCounters = NFAcctCounter.ensure()
            let counters = o.nfacctCounters
            // The counters are the kernel's, one set for both families: served once.
            if !counters.isEmpty && config.ipFamily == .ipv4 { env.addCollector { NFAcctCounter.metricsText(counters) } }
            return IPTablesProxier(ipt: ipt, options: o, conntrack: env.conntrack, logger: env.logger)
        },
        renderer: { config, _ in
            IPTablesProxier(ipt: FakeIPTables(), options: IPTablesOptions(config, nodePortIPs: config.nodePortIPs(local: nil)))
        },
        header: { _, command in
            RenderHeader(text: RenderHeader.comments(["\(command): the iptables-restore input of a full sync."] + RestoreText.loadingNote))
        },

        removeLeftovers: { scan in
            // A restarted IPVS proxy finds its own KUBE-SERVICES: only the iptables mode's own
            // chains (the canary, KUBE-SVC-…, KUBE-SEP-…) say that mode ran.
            let marked = scan.running == nil || scan.iptablesSave.map { IPTablesProxier.ran(IPTablesSave($0)) } ?? true
            let p = IPTablesProxier(ipt: SystemIPTables(), options: IPTablesOptions())
            let v4 = try marked && p.removeLeftovers()
            // ip6tables: only this mode writes KUBE- chains there (a dual-stack node's IPv6 proxier).
            let v6 = try IPTablesProxier.removeIPv6Leftovers()
            return v4 || v6 ? "the iptables mode's rules and chains" : nil
        },
        explain: { ruleset, query in try IPTablesProxier.explain(ruleset, query) },
        liveRuleset: { family in try SystemIPTables(ipv6: family == .ipv6).save(tables: ["filter", "nat"]) })
}

extension IPTablesProxier {
    /// A packet through the iptables mode's rules (`switchyard explain`): every way it can go,
    /// with its probability, the rules it passes and the verdict.
    static func explain(_ ruleset: String, _ q: ExplainQuery) throws -> PacketPath {
        let walked: [IPTablesWalk.Outcome]
        do {
            walked = try IPTablesWalk.walk(ruleset, source: q.source, sourcePort: q.sourcePort, destination: q.destination, port: q.port,
                                           proto: q.proto, fromNode: q.fromNode, local: q.localAddresses)
        } catch { throw ProxyConfigError("\(error)") }
        let outcomes = walked.map { o in
            PacketPath.Outcome(probability: o.packet.probability, hops: PacketPath.Hop.list(o.packet.hops), verdict: o.end.verdict, endpoint: o.translatedTo,
                               masqueraded: o.packet.masqueraded)
        }
        return PacketPath(query: q, mode: "iptables", outcomes: outcomes)
    }
}

extension IPTablesProxier {
    /// What the IPv6 proxier of a dual-stack node left in ip6tables, removed; false when ip6tables
    /// holds nothing of it (or the kernel has no IPv6).
    static func removeIPv6Leftovers() throws -> Bool {
        guard ProxyMode.kernelHasIPv6 else { return false }
        let ipt = SystemIPTables(ipv6: true)
        guard let save = try? ipt.save(tables: ["mangle", "filter", "nat"]), save.contains(":KUBE-") else { return false }
        return try IPTablesProxier(ipt: ipt, options: IPTablesOptions()).removeLeftovers()
    }

    /// The iptables mode's own marks in a save: its canary chain, or a per-Service chain.
    static func ran(_ s: IPTablesSave) -> Bool {
        if s.chains["mangle"]?.contains(Chains.canary) == true { return true }
        return s.chains["nat"]?.contains { $0.hasPrefix("KUBE-SVC-") || $0.hasPrefix("KUBE-SEP-") } == true
    }
}

extension NFAcctCounter {
    /// The counters the iptables mode counts into, created if missing, where the kernel has
    /// nfacct (upstream ensures them at every full sync; here once, when the proxy starts).
    static func ensure() -> Set<String> {
        guard NFAcct.isSupported(), let acct = try? NFAcct() else { return [] }
        return Set(all.filter { (try? acct.ensure($0)) != nil })
    }

    /// The counters as upstream's custom collectors serve them: each counter's packets, read at scrape.
    static func metricsText(_ counters: Set<String>) -> String {
        guard !counters.isEmpty, let acct = try? NFAcct() else { return "" }
        var out = ""
        for m in metrics where counters.contains(m.counter) {
            guard let v = try? acct.get(m.counter) else { continue }
            out += "# HELP \(m.name) \(m.help)\n# TYPE \(m.name) counter\n\(m.name) \(v.packets)\n"
        }
        return out
    }
}
