import Foundation
import KubeAPI
import NetnsKit
@testable import ProxyIPVS
import Testing
import ProxySeam
import HostOS
import IPTablesKit

/// A LoadBalancer with source ranges on node-a (192.168.0.10 when `nodeInRange`).
func firewalledSnapshot(nodeInRange: Bool) -> (ProxySnapshot, IPVSOptions) {
    var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!]))
    var lb = service("edge", ip: "10.96.0.30", type: "LoadBalancer",
                     ports: [ServicePort(name: "https", protocol: "TCP", port: 443, targetPort: .int(8443), nodePort: 30443)],
                     lb: ["192.0.2.10"])
    lb.spec.loadBalancerSourceRanges = ["203.0.113.0/24", "10.0.0.5/32"] + (nodeInRange ? ["192.168.0.0/24"] : [])
    t.update(service: lb)
    t.update(slice: slice("edge", [("10.244.1.8", "node-b")], ports: [EndpointPort(name: "https", protocol: "TCP", port: 8443)]))
    var o = IPVSOptions()
    o.nodeIP = IPAddress("192.168.0.10")
    return (t.snapshot().0, o)
}

@Suite("IPVS mode: ipsets and iptables rules")
struct IPVSRulesTests {
    func entries(_ snap: ProxySnapshot, _ o: IPVSOptions = IPVSOptions()) -> IPVSRuleShare {
        IPVSRules.share(snap, of: Array(snap.servicePorts.keys), nodeIPs: snap.node.ips, options: o)
    }

    @Test func setsHoldWhatUpstreamPutsInThem() {
        let s = entries(sampleSnapshot())
        func set(_ k: IPSetKind) -> Set<String> { s.entries[k.name] ?? [] }
        #expect(set(.clusterIP) == ["10.96.0.10,tcp:80", "10.96.0.10,udp:53", "10.96.0.20,tcp:443"])
        // externalTrafficPolicy Local: the externalIP goes to the -LOCAL set only; the load balancer IP to both.
        #expect(set(.externalIP).isEmpty)
        #expect(set(.externalIPLocal) == ["203.0.113.5,tcp:80", "203.0.113.5,udp:53"])
        #expect(set(.loadBalancer) == ["198.51.100.7,tcp:80", "198.51.100.7,udp:53"])
        #expect(set(.loadBalancerLocal) == set(.loadBalancer))
        #expect(set(.nodePortTCP) == ["30080"] && set(.nodePortLocalTCP) == ["30080"])
        #expect(set(.nodePortUDP) == ["30053"] && set(.nodePortLocalUDP) == ["30053"])
        // Hairpin: this node's endpoints only (10.244.2.9 is on node-b).
        #expect(set(.loopBack) == ["10.244.1.3,tcp:8080,10.244.1.3", "10.244.1.3,udp:5353,10.244.1.3", "10.244.1.4,tcp:8443,10.244.1.4"])
        #expect(set(.ipvsIPs) == ["10.96.0.10", "10.96.0.20", "198.51.100.7", "203.0.113.5"])
        #expect(set(.loadBalancerFW).isEmpty && s.outDrops.isEmpty)
    }

    @Test func sourceRangesAndWhetherTheNodeIsInThem() {
        let (out, o) = firewalledSnapshot(nodeInRange: false)
        let s = entries(out, o)
        #expect(s.entries[IPSetKind.loadBalancerFW.name] == ["192.0.2.10,tcp:443"])
        // A /32 range is written as ipset prints it: without its length.
        #expect(s.entries[IPSetKind.loadBalancerSourceCIDR.name] == ["192.0.2.10,tcp:443,203.0.113.0/24", "192.0.2.10,tcp:443,10.0.0.5"])
        #expect(s.entries[IPSetKind.loadBalancerSourceIP.name] == nil)
        #expect(s.outDrops == ["-A KUBE-IPVS-OUT-FILTER -s 192.0.2.10 -m ipvs --vaddr 192.0.2.10 --vproto tcp --vport 443 -j DROP"])
        let (inside, o2) = firewalledSnapshot(nodeInRange: true)
        let s2 = entries(inside, o2)
        #expect(s2.entries[IPSetKind.loadBalancerSourceIP.name] == ["192.0.2.10,tcp:443,192.0.2.10"])
        #expect(s2.outDrops.isEmpty)
    }

    @Test func healthCheckAndSCTPNodePorts() {
        var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!, IPAddress("192.168.1.10")!]))
        var s = service("lb", ip: "10.96.0.60", type: "LoadBalancer", ports: [
            ServicePort(name: "s", protocol: "SCTP", port: 3868, nodePort: 31868),
        ], lb: ["192.0.2.20"], etpLocal: true)
        s.spec.healthCheckNodePort = 32100
        t.update(service: s)
        let e = entries(t.snapshot().0)
        #expect(e.entries[IPSetKind.healthCheckNodePort.name] == ["32100"])
        #expect(e.entries[IPSetKind.nodePortSCTP.name] == ["192.168.0.10,sctp:31868", "192.168.1.10,sctp:31868"])
        #expect(e.entries[IPSetKind.nodePortLocalSCTP.name] == e.entries[IPSetKind.nodePortSCTP.name])
        // No node address: no NodePort entries at all.
        let none = IPVSRules.share(t.snapshot().0, of: Array(t.snapshot().0.servicePorts.keys), nodeIPs: [], options: IPVSOptions())
        #expect(none.entries[IPSetKind.nodePortSCTP.name] == nil)
    }

    @Test func clusterIPMasqueradeFollowsTheOptions() {
        func rule(_ o: IPVSOptions) -> String? {
            IPVSRules.restoreText(nonEmpty: [IPSetKind.clusterIP.name], outDrops: [], options: o)
                .split(separator: "\n").first { $0.contains("KUBE-CLUSTER-IP") && $0.contains("KUBE-MARK-MASQ") }.map(String.init)
        }
        var o = IPVSOptions()
        #expect(rule(o)?.hasSuffix("--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ") == true)
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        #expect(rule(o)?.hasSuffix("--match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ") == true)
        o.localDetector = .bridgeInterface("cbr0")
        #expect(rule(o)?.hasSuffix("dst,dst ! -i cbr0 -j KUBE-MARK-MASQ") == true)
        o.masqueradeAll = true
        #expect(rule(o)?.hasSuffix("--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ") == true)
        o.mark = MasqueradeMark(bit: 12)!
        let text = IPVSRules.restoreText(nonEmpty: [], outDrops: [], options: o)
        #expect(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00001000\n"))
        #expect(text.contains("-A KUBE-POSTROUTING -m mark ! --mark 0x00001000/0x00001000 -j RETURN\n"))
        // An empty set is matched by no rule that only it feeds; the access filter is always there.
        #expect(!text.contains("KUBE-MARK-MASQ -m") && !text.contains("--match-set KUBE-LOOP-BACK"))
        #expect(text.contains("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT\n"))
    }

    @Test func rulesLoadAndCleanupKeepsWhatOthersStillUse() throws {
        let ipt = FakeIPTables()
        // The render ends each table with the jumps from the built-in chains, as `-I CHAIN 1` lines.
        let text = IPVSRules.render(sampleSnapshot(), options: IPVSOptions()).iptables
        #expect(IPVSRules.jumps.allSatisfy { text.contains("-I \($0.chain) 1 \($0.rule)\n") })
        try ipt.restore(text)
        #expect(IPVSRules.jumps.allSatisfy { j in ipt.tables[j.table]?[j.chain]?.filter { $0 == j.rule }.count == 1 })
        // Another mode's chain that still jumps to KUBE-MARK-MASQ.
        try ipt.restore("*nat\n:KUBE-SVC-X - [0:0]\n-A KUBE-SVC-X -j KUBE-MARK-MASQ\nCOMMIT\n")
        #expect(ipt.tables["filter"]?["INPUT"]?.first == IPVSRules.jumps[7].rule, "the access filter comes first in INPUT")
        let ipset = FakeIPSet()
        try ipset.restore(IPVSRules.render(sampleSnapshot(), options: IPVSOptions()).ipset)
        try IPVSRules.remove(ipt: ipt, ipset: ipset)
        #expect(ipt.tables["nat"]?["KUBE-MARK-MASQ"] == [], "kept (flushed) while KUBE-SVC-X jumps to it")
        #expect(ipt.tables["nat"]?["KUBE-SERVICES"] == nil && ipt.tables["filter"]?["KUBE-IPVS-FILTER"] == nil)
        #expect(["INPUT", "FORWARD", "OUTPUT"].allSatisfy { ipt.tables["filter"]?[$0]?.isEmpty == true })
        #expect(try ipset.save().isEmpty)
    }
}

@Suite("IPVS mode's ipsets and rules in the kernel", .enabled(if: isRoot, "needs root"))
struct IPVSRulesKernelTests {
    /// The rendered sets and rules load into the real `ipset` and `iptables-restore`, and
    /// `ipset save` lists exactly the entries that were rendered.
    @Test func renderedSetsAndRulesLoadIntoTheKernel() throws {
        let ns = "syipset\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        var o = IPVSOptions()
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        let (snap, _) = firewalledSnapshot(nodeInRange: true)
        // Both snapshots' sets at once: every set type and entry form.
        let a = IPVSRules.render(sampleSnapshot(), options: o)
        let b = IPVSRules.render(snap, options: o)
        let ipset = SystemIPSet(runner: CommandRunner(netns: ns))
        try ipset.restore(a.ipset)
        try ipset.restore(b.ipset)
        let want = IPSetSave.parse(a.ipset).merging(IPSetSave.parse(b.ipset)) { $0.union($1) }
        #expect(try ipset.save() == want)
        // The rules (the sample's: no -m ipvs match, which needs a kernel with IPVS).
        try SystemIPTables(runner: CommandRunner(netns: ns)).restore(a.iptables)
        let saved = try Sh.must(["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"])
        // (iptables-save puts the source match first and spells the marks its own way.)
        #expect(saved.contains("-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"))
        #expect(saved.contains("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"))
        try IPVSRules.remove(ipt: SystemIPTables(runner: CommandRunner(netns: ns)), ipset: ipset)
        #expect(try ipset.save().isEmpty)
        #expect(!(try Sh.must(["ip", "netns", "exec", ns, "iptables-save"])).contains("KUBE-"))
    }
}
