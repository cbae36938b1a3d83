import Logging
import Netlink
import ProxyIPTables
import ProxyIPVS
import ProxyNFTables
import ProxyUserspace
import ProxySeam
import IPTablesKit

/// What the proxy modes leave in the kernel, found and removed: by `proxy --cleanup` (every mode),
/// and when a proxy starts (every mode but its own, as upstream kube-proxy removes the other
/// modes' rules at start), so rules of a mode that no longer runs never stay in charge of traffic.
enum Leftovers {
    /// The modes whose leftovers can be removed, in the order they are removed: the IPVS mode's
    /// first, as its rules jump to chains whose names the iptables mode shares.
    static let modes = ["ipvs", "iptables", "nftables", "userspace"]

    /// Removes the leftovers of `modes`; logs each mode whose state was there and is gone, and
    /// returns the errors (by mode) of those that could not be removed.
    @discardableResult
    static func remove(_ modes: [String], keeping running: String?, logger: Logger) async -> [(String, any Error)] {
        var failures: [(String, any Error)] = []
        var removedAny = false
        // One look at the iptables tables for the markers the iptables and IPVS modes leave.
        let saved = (try? SystemIPTables().save(tables: ["filter", "nat", "mangle"])).map(IPTablesSave.init)
        for mode in self.modes where modes.contains(mode) {
            do {
                let what: String?
                switch mode {
                case "ipvs": what = try await removeIPVS(saved: saved, force: running == nil)
                case "iptables":
                    // A restarted IPVS proxy finds its own KUBE-SERVICES: only the iptables mode's
                    // own chains (the canary, KUBE-SVC-…, KUBE-SEP-…) say that mode ran.
                    let marked = running == nil || saved.map(iptablesModeRan) ?? true
                    let p = IPTablesProxier(ipt: SystemIPTables(), options: IPTablesOptions(ProxyConfig(), nodePortIPs: nil))
                    what = try marked && p.removeLeftovers() ? "the iptables mode's rules and chains" : nil
                case "nftables":
                    let p = NFTablesProxier(nft: try SystemNFTables(), options: NFTablesOptions())
                    what = try p.removeLeftovers() ? "the nftables table ip kube-proxy" : nil
                case "userspace":
                    what = try UserspaceProxier.removeRules(SystemIPTables()) ? "the userspace mode's portal chains" : nil
                default: what = nil
                }
                if let what {
                    removedAny = true
                    if let running {
                        logger.info("removed \(what), left by an earlier proxy in the \(mode) mode (this proxy runs the \(running) mode)")
                    } else {
                        logger.info("removed \(what)")
                    }
                }
            } catch {
                failures.append((mode, error))
                logger.error("removing what the \(mode) mode left: \(error)")
            }
        }
        if running == nil && !removedAny && failures.isEmpty { logger.info("nothing to remove: no proxy mode left rules here") }
        return failures
    }

    /// The iptables mode's own marks: its canary chain, or a per-Service chain.
    static func iptablesModeRan(_ s: IPTablesSave) -> Bool {
        if s.chains["mangle"]?.contains("KUBE-PROXY-CANARY") == true { return true }
        return s.chains["nat"]?.contains { $0.hasPrefix("KUBE-SVC-") || $0.hasPrefix("KUBE-SEP-") } == true
    }

    /// The IPVS mode's virtual servers, kube-ipvs0, ipsets and rules, when one of the IPVS mode's
    /// own marks is there (kube-ipvs0, one of its ipsets, or a chain only it creates): the chains it
    /// shares with the iptables mode say nothing, and a restarted iptables-mode proxy keeps them.
    /// With `force` (`--cleanup`), every virtual server too, as kube-proxy --cleanup flushes them.
    static func removeIPVS(saved: IPTablesSave?, force: Bool) async throws -> String? {
        let links = try RouteHandle()
        let hasDummy = try links.link(named: IPVSPlan.dummyInterface) != nil
        var marked = hasDummy || saved.map {
            $0.chains["nat"]?.contains("KUBE-LOAD-BALANCER") == true || $0.chains["filter"]?.contains("KUBE-IPVS-FILTER") == true
        } ?? false
        if !marked, let sets = try? SystemIPSet().save() {
            marked = IPSetKind.all.contains { sets[$0.name] != nil }
        }
        var servers = 0
        let ipvs = force || hasDummy ? try? IPVS() : nil
        if let ipvs { servers = try ipvs.services().count }
        guard marked || servers > 0 else { return nil }
        if marked { try IPVSRules.remove(ipt: SystemIPTables(), ipset: SystemIPSet()) }
        if let ipvs {
            try await IPVSProxier(ipvs: ipvs, links: links, ipt: SystemIPTables(), ipset: SystemIPSet(), options: IPVSOptions()).cleanup()
        } else if hasDummy {
            try links.deleteLink(IPVSPlan.dummyInterface)
        }
        var parts: [String] = []
        if servers > 0 { parts.append("\(servers) IPVS virtual server(s)") }
        if hasDummy { parts.append("kube-ipvs0") }
        if marked { parts.append("the IPVS mode's ipsets and rules") }
        return parts.joined(separator: ", ")
    }
}
