import IPTablesKit
import KubeAPI
import Netlink
import ProxySeam

extension ProxyMode {
    /// kube-proxy's IPVS mode.
    public static let ipvs = ProxyMode(
        name: "ipvs",
        summary: "IPVS virtual servers over netlink, addresses on kube-ipvs0, with ipsets and a few iptables rules",
        renderFormats: IPVSRenderer.Renderer.Format.allCases.map(\.rawValue),
        renderExtension: "txt",
        removalOrder: 0,
        families: [.ipv4, .ipv6],
        backend: { config, env in
            let ipvs: IPVS
            do {
                ipvs = try IPVS()
            } catch let e as NetlinkError {
                throw ProxyConfigError("--proxy-mode ipvs: \(e) (netlab/guest runs a kernel that has it)")
            }
            var o = try IPVSOptions.resolve(config)
            o.nodeAddressesFromKernel = true   // looked up at every sync, inside --nodeport-addresses when given
            o.nodePortCIDRs = config.nodePortCIDRs
            // ip6tables for the IPv6 proxier of a dual-stack node; both share IPVS and kube-ipvs0.
            let ipt = SystemIPTables(ipv6: config.ipFamily == .ipv6)
            o.randomFully = ipt.hasRandomFully()
            // The proxier sets kube-proxy's IPVS sysctls (and strict ARP when asked) at its first sync.
            return IPVSProxier(ipvs: ipvs, links: try RouteHandle(), ipt: ipt, ipset: SystemIPSet(), options: o, logger: env.logger)
        },
        renderer: { config, format in
            IPVSRenderer.Renderer(options: try IPVSOptions.resolve(config), format: IPVSRenderer.Renderer.Format(rawValue: format) ?? .list)
        },
        header: { format, command in
            switch format {
            case "ipset":
                return RenderHeader(text: RenderHeader.comments([
                    "\(command) --ipvs-format ipset: the IPVS mode's ipsets, for ipset restore.",
                    "Load it with:  ipset restore -exist < FILE",
                    "-exist makes loading it again harmless (existing sets and entries are kept).",
                ]))
            case "iptables":
                return RenderHeader(text: RenderHeader.comments(["\(command) --ipvs-format iptables: the IPVS mode's iptables rules."]
                                                               + RestoreText.loadingNote
                                                               + ["Load the ipsets first (--ipvs-format ipset): these rules match on them."]))
            case "save":
                return RenderHeader(text: "", note: "load this with `ipvsadm-restore < FILE` (after `ipvsadm -C` to load it again: ipvsadm-restore refuses existing virtual servers)")
            default:
                return RenderHeader(text: "", note: "this is what `ipvsadm -Ln` lists, not loadable; --ipvs-format save, ipset and iptables write the loadable parts")
            }
        },
        removeLeftovers: { scan in try await IPVSProxier.removeLeftovers(scan) },
        explain: { ruleset, query in try IPVSWalk.explain(ruleset, query) },
        liveRuleset: { family in try IPVSWalk.live(family) })
}

extension IPVSOptions {
    static func resolve(_ config: ProxyConfig) throws -> IPVSOptions {
        guard IPVSService.schedulers.contains(config.ipvs.scheduler) else {
            throw ProxyConfigError("--ipvs-scheduler: unknown scheduler \(config.ipvs.scheduler) (one of \(IPVSService.schedulers.joined(separator: ", ")))")
        }
        var o = IPVSOptions(config)
        if let cidrs = config.nodePortCIDRs {
            o.nodePortIPs = cidrs.filter { $0.family == config.ipFamily && $0.prefixLength == (config.ipFamily == .ipv4 ? 32 : 128) }.map(\.address)
        }
        return o
    }
}

extension IPVSProxier {
    /// The IPVS mode's virtual servers, kube-ipvs0, ipsets and rules, when one of the IPVS mode's
    /// own marks is there (kube-ipvs0, one of its ipsets, or a chain only it creates): the chains it
    /// shares with the iptables mode say nothing, and a restarted iptables-mode proxy keeps them.
    /// For `--cleanup` (no mode running), every virtual server too, as kube-proxy --cleanup flushes them.
    static func removeLeftovers(_ scan: LeftoverScan) async throws -> String? {
        let force = scan.running == nil
        let saved = scan.iptablesSave.map(IPTablesSave.init)
        let links = try RouteHandle()
        let hasDummy = try links.link(named: IPVSPlan.dummyInterface) != nil
        let sets = try? SystemIPSet().save()
        var marked = hasDummy || saved.map {
            $0.chains["nat"]?.contains("KUBE-LOAD-BALANCER") == true || $0.chains["filter"]?.contains("KUBE-IPVS-FILTER") == true
        } ?? false
        if !marked, let sets {
            marked = IPSetKind.all(.ipv4).contains { sets[$0.name] != nil }
        }
        // A dual-stack node's IPv6 proxier: its KUBE-6- sets, its ip6tables rules.
        let markedIPv6 = ProxyMode.kernelHasIPv6 && (hasDummy || sets.map { s in IPSetKind.all(.ipv6).contains { s[$0.name] != nil } } ?? false)
        var servers = 0
        let ipvs = force || hasDummy ? try? IPVS() : nil
        if let ipvs { servers = try ipvs.services().count }
        guard marked || markedIPv6 || servers > 0 else { return nil }
        if marked { try IPVSRules.remove(ipt: SystemIPTables(), ipset: SystemIPSet()) }
        if markedIPv6 { try IPVSRules.remove(ipt: SystemIPTables(ipv6: true), ipset: SystemIPSet(), family: .ipv6) }
        if let ipvs {
            try await IPVSProxier(ipvs: ipvs, links: links, ipt: SystemIPTables(), ipset: SystemIPSet(), options: IPVSOptions()).cleanup()
        } else if hasDummy {
            try links.deleteLink(IPVSPlan.dummyInterface)
        }
        var parts: [String] = []
        if servers > 0 { parts.append("\(servers) IPVS virtual server(s)") }
        if hasDummy { parts.append("kube-ipvs0") }
        if marked || markedIPv6 { parts.append("the IPVS mode's ipsets and rules") }
        return parts.joined(separator: ", ")
    }
}
