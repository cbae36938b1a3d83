import Foundation
import HostOS
import IPTablesKit
import KubeAPI
import Netlink
import NetnsKit
@testable import ProxyIPVS
import ProxySeam
import Testing

/// A dual-stack node (192.168.0.10 and fd00:77::10) with `web`, a RequireDualStack NodePort
/// Service with an externalIP of each family, ClientIP affinity, and endpoints of both families
/// (one local, one on node-b); the tracker of `family` sees that family's half.
func dualStackSnapshot(_ family: IPFamily) -> ProxySnapshot {
    var t = ChangeTracker(family: family, node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!, IPAddress("fd00:77::10")!]))
    var web = service("web", ip: "10.96.0.10", type: "NodePort",
                      ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30080)],
                      affinity: 300, externalIPs: ["203.0.113.5", "2001:db8::5"])
    web.spec.clusterIPs = ["10.96.0.10", "fd00:10:96::10"]
    web.spec.ipFamilies = ["IPv4", "IPv6"]
    web.spec.ipFamilyPolicy = "RequireDualStack"
    t.update(service: web)
    t.update(slice: slice("web", [("10.244.1.3", "node-a"), ("10.244.2.9", "node-b")], ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080)]))
    var v6 = slice("web", [("fd00:10:244:1::3", "node-a"), ("fd00:10:244:2::9", "node-b")], ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080)])
    v6.metadata.name = "web-v6"
    v6.addressType = "IPv6"
    t.update(slice: v6)
    return t.snapshot().0
}

func ipvsOptions(_ family: IPFamily) -> IPVSOptions {
    var o = IPVSOptions()
    o.common.family = family
    return o
}

@Suite("IPVS mode: IPv6 and dual-stack")
struct DualStackIPVSTests {
    /// The IPv6 proxier's plan: virtual servers on the IPv6 ClusterIP, externalIP and node address,
    /// IPv6 real servers, persistence with a /128 netmask, and only IPv6 addresses on kube-ipvs0;
    /// the IPv4 proxier's plan of the same Service holds no IPv6 address at all.
    @Test func eachFamilysPlanHasOnlyItsOwnAddresses() {
        let v6 = IPVSPlan(dualStackSnapshot(.ipv6), options: ipvsOptions(.ipv6))
        func servers(_ plan: IPVSPlan) -> [String: [String]] {
            Dictionary(uniqueKeysWithValues: plan.servers.map { s in
                (IPVSRenderer.endpoint(s.service.address, s.service.port), s.realServers.map { IPVSRenderer.endpoint($0.address, $0.port) }.sorted())
            })
        }
        #expect(servers(v6) == [
            "[fd00:10:96::10]:80": ["[fd00:10:244:1::3]:8080", "[fd00:10:244:2::9]:8080"],
            "[2001:db8::5]:80": ["[fd00:10:244:1::3]:8080", "[fd00:10:244:2::9]:8080"],
            "[fd00:77::10]:30080": ["[fd00:10:244:1::3]:8080", "[fd00:10:244:2::9]:8080"],
        ])
        #expect(v6.servers.allSatisfy { $0.service.isIPv6 && $0.service.netmask == 128 && $0.service.timeout == 300 })
        #expect(v6.boundAddresses == ["2001:db8::5", "fd00:10:96::10"])
        let v4 = IPVSPlan(dualStackSnapshot(.ipv4), options: ipvsOptions(.ipv4))
        #expect(Set(servers(v4).keys) == ["10.96.0.10:80", "203.0.113.5:80", "192.168.0.10:30080"])
        #expect(v4.boundAddresses == ["10.96.0.10", "203.0.113.5"])
        #expect(v4.servers.allSatisfy { !$0.service.isIPv6 && $0.realServers.allSatisfy { $0.address.count == 4 } })
    }

    /// Upstream's IPv6 sets: `KUBE-6-…`, cut to ipset's 31 characters, `family inet6` (a
    /// bitmap:port set has no family); the IPv4 sets keep their names.
    @Test func ipv6SetsAreNamedAsUpstreamNamesThem() {
        #expect(IPSetKind.clusterIP.of(.ipv6).name == "KUBE-6-CLUSTER-IP")
        #expect(IPSetKind.loadBalancerSourceCIDR.of(.ipv6).name == "KUBE-6-LOAD-BALANCER-SOURCE-CID")
        #expect(IPSetKind.nodePortLocalSCTP.of(.ipv6).name == "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS")
        #expect(IPSetKind.all(.ipv6).allSatisfy { $0.name.hasPrefix("KUBE-6-") && $0.name.count <= 31 })
        #expect(Set(IPSetKind.all(.ipv6).map(\.name)).count == IPSetKind.all.count, "no two IPv6 names collide after the cut")
        #expect(IPSetKind.clusterIP.of(.ipv6).createLine == "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536")
        #expect(IPSetKind.nodePortTCP.of(.ipv6).createLine == "create KUBE-6-NODE-PORT-TCP bitmap:port range 0-65535")
        #expect(IPSetKind.clusterIP.of(.ipv6).of(.ipv6) == IPSetKind.clusterIP.of(.ipv6))
        #expect(IPSetKind.all(.ipv4) == IPSetKind.all)
    }

    /// The IPv6 rules match the IPv6 sets, detect pods by the IPv6 cluster CIDR and have no
    /// 127.0.0.0/8 guard; the entries are the IPv6 Service's.
    @Test func ipv6RulesAndEntries() {
        var o = ipvsOptions(.ipv6)
        o.localDetector = LocalDetector.cidrs([CIDR("10.244.0.0/16")!, CIDR("fd00:10:244::/56")!]).only(.ipv6)
        let r = IPVSRules.render(dualStackSnapshot(.ipv6), options: o)
        let sets = IPSetSave.parse(r.ipset)
        #expect(sets["KUBE-6-CLUSTER-IP"] == ["fd00:10:96::10,tcp:80"])
        #expect(sets["KUBE-6-EXTERNAL-IP"] == ["2001:db8::5,tcp:80"])
        #expect(sets["KUBE-6-LOOP-BACK"] == ["fd00:10:244:1::3,tcp:8080,fd00:10:244:1::3"])
        #expect(sets["KUBE-6-NODE-PORT-TCP"] == ["30080"])
        #expect(sets["KUBE-6-IPVS-IPS"] == ["2001:db8::5", "fd00:10:96::10"])
        #expect(!sets.keys.contains { !$0.hasPrefix("KUBE-6-") })
        #expect(r.iptables.contains("-m set --match-set KUBE-6-CLUSTER-IP dst,dst ! -s fd00:10:244::/56 -j KUBE-MARK-MASQ\n"))
        #expect(r.iptables.contains("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-6-IPVS-IPS dst -j REJECT\n"))
        #expect(!r.iptables.contains("127.0.0.0/8") && !r.iptables.contains("--match-set KUBE-CLUSTER-IP"), "\(r.iptables)")
        let v4 = IPVSRules.render(dualStackSnapshot(.ipv4), options: ipvsOptions(.ipv4))
        #expect(v4.iptables.contains("-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n") && !v4.ipset.contains("fd00:") && !v4.ipset.contains("KUBE-6-"))
    }

    /// Two proxiers, one per family, over one IPVS table and one kube-ipvs0 (as `switchyard proxy`
    /// runs them): each writes its own family's virtual servers and addresses, and neither removes
    /// the other's, not in a full sync and not when its own Service goes.
    @Test func twoProxiersShareTheTableAndTheDummyLink() async throws {
        let ipvs = FakeIPVS(), links = FakeLinks(), ipset = FakeIPSet()
        let v4 = IPVSProxier(ipvs: ipvs, links: links, ipt: FakeIPTables(), ipset: ipset, options: ipvsOptions(.ipv4))
        let v6 = IPVSProxier(ipvs: ipvs, links: links, ipt: FakeIPTables(), ipset: ipset, options: ipvsOptions(.ipv6))
        _ = try await v4.sync(SyncRequest(snapshot: dualStackSnapshot(.ipv4), changedServices: nil))
        _ = try await v6.sync(SyncRequest(snapshot: dualStackSnapshot(.ipv6), changedServices: nil))
        func table() throws -> Set<String> { Set(try ipvs.services().map { IPVSRenderer.endpoint($0.address, $0.port) }) }
        func bound() throws -> Set<String> { Set(try links.addresses(of: IPVSPlan.dummyInterface).map { "\($0.address)" }) }
        #expect(try table() == ["10.96.0.10:80", "203.0.113.5:80", "192.168.0.10:30080", "[fd00:10:96::10]:80", "[2001:db8::5]:80", "[fd00:77::10]:30080"])
        #expect(try bound() == ["10.96.0.10/32", "203.0.113.5/32", "fd00:10:96::10/128", "2001:db8::5/128"])
        #expect(try ipset.save()["KUBE-6-CLUSTER-IP"] == ["fd00:10:96::10,tcp:80"] && ipset.save()["KUBE-CLUSTER-IP"] == ["10.96.0.10,tcp:80"])
        // A second full sync of each finds everything right and writes nothing.
        #expect(try await v4.sync(SyncRequest(snapshot: dualStackSnapshot(.ipv4), changedServices: nil)).objectsWritten == 0)
        #expect(try await v6.sync(SyncRequest(snapshot: dualStackSnapshot(.ipv6), changedServices: nil)).objectsWritten == 0)
        // The IPv6 half goes (a downgrade to single-stack): only the IPv6 proxier's state changes.
        var t = ChangeTracker(family: .ipv6, node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!, IPAddress("fd00:77::10")!]))
        t.update(service: service("web", ip: "10.96.0.10", type: "NodePort",
                                  ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30080)]))
        let name = NamespacedName(namespace: "default", name: "web")
        _ = try await v6.sync(SyncRequest(snapshot: t.snapshot().0, changedServices: [name]))
        #expect(try table() == ["10.96.0.10:80", "203.0.113.5:80", "192.168.0.10:30080"])
        #expect(try bound() == ["10.96.0.10/32", "203.0.113.5/32"])
        _ = try await v6.sync(SyncRequest(snapshot: t.snapshot().0, changedServices: nil))
        #expect(try table() == ["10.96.0.10:80", "203.0.113.5:80", "192.168.0.10:30080"], "a full IPv6 sync leaves the IPv4 servers")
        #expect(try ipset.save()["KUBE-CLUSTER-IP"] == ["10.96.0.10,tcp:80"] && ipset.save()["KUBE-6-CLUSTER-IP"] == [])
        #expect(ipvs.sysctls["net.ipv6.conf.all.forwarding"] == "1" && ipvs.sysctls["net.ipv4.ip_forward"] == "1")
    }
}

@Suite("IPVS mode's IPv6 ipsets and rules in the kernel", .enabled(if: isRoot, "needs root"), .enabled(if: ProxyMode.kernelHasIPv6, "no IPv6 in this kernel"))
struct DualStackIPVSKernelTests {
    /// The IPv6 sets load into the real `ipset` beside the IPv4 ones (`family inet6`, upstream's
    /// names), the IPv6 rules into `ip6tables-restore`, and removing one family's leaves the other's.
    @Test func ipv6SetsAndRulesLoadBesideTheIPv4Ones() throws {
        let ns = "syipset6\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let v4 = IPVSRules.render(dualStackSnapshot(.ipv4), options: ipvsOptions(.ipv4))
        let v6 = IPVSRules.render(dualStackSnapshot(.ipv6), options: ipvsOptions(.ipv6))
        let ipset = SystemIPSet(runner: CommandRunner(netns: ns))
        try ipset.restore(v4.ipset)
        try ipset.restore(v6.ipset)
        #expect(try ipset.save() == IPSetSave.parse(v4.ipset).merging(IPSetSave.parse(v6.ipset)) { $0.union($1) })
        #expect(try Sh.must(["ip", "netns", "exec", ns, "ipset", "list", "-t", "KUBE-6-CLUSTER-IP"]).contains("family inet6"))
        let ip6t = SystemIPTables(runner: CommandRunner(netns: ns), ipv6: true)
        try ip6t.restore(v6.iptables)
        let saved = try Sh.must(["ip", "netns", "exec", ns, "ip6tables-save", "-t", "nat"])
        #expect(saved.contains("-m set --match-set KUBE-6-CLUSTER-IP dst,dst") && saved.contains("-j KUBE-SERVICES"), "\(saved)")
        try IPVSRules.remove(ipt: ip6t, ipset: ipset, family: .ipv6)
        #expect(try ipset.save() == IPSetSave.parse(v4.ipset))
        #expect(!(try Sh.must(["ip", "netns", "exec", ns, "ip6tables-save"])).contains("KUBE-"))
    }
}
