import Foundation
import IPTablesKit
import KubeAPI
@testable import ProxyIPVS
import ProxySeam
import Testing

/// `switchyard explain --proxy-mode ipvs` on what `render` writes: the iptables rules' hops
/// with upstream's chain names, the ipsets they match on, the virtual server and its real
/// servers, and the verdicts IPVS gives (a virtual server without real servers answers with a
/// port unreachable). The kernel's side is ExplainLabTests' IPVS case, in the qemu guest.
@Suite("IPVS mode: explain")
struct IPVSExplainTests {
    static let node = "192.168.0.10"

    static func snapshot() -> ProxySnapshot {
        var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(node)!]))
        let http = [EndpointPort(name: "http", protocol: "TCP", port: 8080)]
        t.update(service: service("web", ip: "10.96.0.10", ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))]))
        t.update(slice: slice("web", [("10.244.1.2", "node-a"), ("10.244.1.3", "node-a")], ports: http))
        t.update(service: service("empty", ip: "10.96.0.20", ports: [ServicePort(name: "http", protocol: "TCP", port: 80)]))
        var edge = service("edge", ip: "10.96.0.30", type: "LoadBalancer",
                           ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30080)], lb: ["192.0.2.10"])
        edge.spec.loadBalancerSourceRanges = ["203.0.113.0/24"]
        t.update(service: edge)
        t.update(slice: slice("edge", [("10.244.1.8", "node-b")], ports: http))
        t.update(service: service("local", ip: "10.96.0.40", type: "NodePort",
                                  ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30090)], etpLocal: true))
        t.update(slice: slice("local", [("10.244.2.9", "node-b")], ports: http))
        return t.snapshot().0
    }

    static func rendered() -> String {
        var o = IPVSOptions()
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        return IPVSRenderer.Renderer(options: o, format: .list).render(snapshot())
    }

    static func explain(_ src: String, _ dst: String, _ port: Int, fromNode: Bool = false, text: String = rendered()) throws -> PacketPath {
        try IPVSWalk.explain(text, ExplainQuery(source: src, destination: dst, port: port, fromNode: fromNode, localAddresses: [node]))
    }

    func endpoints(_ p: PacketPath) -> [String: Double] {
        Dictionary(p.outcomes.compactMap { o in o.endpoint.map { ($0, o.probability) } }, uniquingKeysWith: +)
    }

    @Test func podToClusterIPReachesEveryRealServerUnmasqueraded() throws {
        let p = try Self.explain("10.244.1.4", "10.96.0.10", 80)
        #expect(endpoints(p) == ["10.244.1.2:8080": 0.5, "10.244.1.3:8080": 0.5])
        #expect(p.outcomes.allSatisfy { $0.verdict == "accepted" && !$0.masqueraded })
        let hops = p.outcomes[0].hops
        #expect(hops.map(\.chain).starts(with: ["PREROUTING", "KUBE-SERVICES"]))
        #expect(hops.contains { $0.chain == "KUBE-IPVS-FILTER" && $0.rule.contains("KUBE-CLUSTER-IP dst,dst -j RETURN") })
        #expect(hops.contains { $0.table == "ipvs" && $0.chain == "TCP  10.96.0.10:80 rr" && $0.rule.hasPrefix("-> 10.244.1.2:8080 Masq") })
        // netfilter's order: nat PREROUTING, filter INPUT, IPVS, filter OUTPUT, nat POSTROUTING.
        let order = hops.map(\.table).reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } }
        #expect(order == ["nat", "filter", "ipvs", "filter", "nat"], "\(order)")
    }

    @Test func fromOutsideTheClusterCIDRItIsMasqueraded() throws {
        let p = try Self.explain("198.18.0.7", "10.96.0.10", 80)
        #expect(p.outcomes.count == 2 && p.outcomes.allSatisfy { $0.masqueraded && $0.verdict == "accepted" })
        #expect(p.outcomes[0].hops.contains { $0.chain == "KUBE-SERVICES" && $0.rule.contains("-j KUBE-MARK-MASQ") })
        #expect(p.outcomes[0].hops.last?.rule.contains("MASQUERADE") == true)
    }

    @Test func aPodReachingItselfIsMasqueradedByTheLoopBackSet() throws {
        let p = try Self.explain("10.244.1.2", "10.96.0.10", 80)
        let mine = p.outcomes.first { $0.endpoint == "10.244.1.2:8080" }, other = p.outcomes.first { $0.endpoint == "10.244.1.3:8080" }
        #expect(mine?.masqueraded == true && mine?.hops.last?.rule.contains("KUBE-LOOP-BACK dst,dst,src") == true)
        #expect(other?.masqueraded == false)
    }

    @Test func noRealServerIsAPortUnreachable() throws {
        let p = try Self.explain("10.244.1.4", "10.96.0.20", 80)
        #expect(p.outcomes.map(\.verdict) == ["rejected"])
        #expect(p.outcomes[0].hops.last?.table == "ipvs")
        // A Local NodePort without endpoints on this node: its virtual server has none either.
        let local = try Self.explain("198.18.0.7", Self.node, 30090)
        #expect(local.outcomes.map(\.verdict) == ["rejected"], "\(local.text())")
        #expect(local.outcomes[0].hops.last?.chain == "TCP  192.168.0.10:30090 rr")
    }

    @Test func sourceRangesHoldForTheLoadBalancerIP() throws {
        let inside = try Self.explain("203.0.113.9", "192.0.2.10", 80)
        #expect(endpoints(inside) == ["10.244.1.8:8080": 1] && inside.outcomes[0].verdict == "accepted")
        #expect(inside.outcomes[0].hops.contains { $0.chain == "KUBE-SOURCE-RANGES-FIREWALL" && $0.rule.contains("-j RETURN") })
        #expect(inside.outcomes[0].masqueraded, "KUBE-LOAD-BALANCER marks what is not externalTrafficPolicy Local")
        let outside = try Self.explain("198.18.0.7", "192.0.2.10", 80)
        #expect(outside.outcomes.map(\.verdict) == ["dropped"])
        #expect(outside.outcomes[0].hops.last.map { "\($0.chain): \($0.rule)" } == "KUBE-SOURCE-RANGES-FIREWALL: -j DROP")
        // The Service's NodePort is not behind the source ranges.
        let nodePort = try Self.explain("198.18.0.7", Self.node, 30080)
        #expect(endpoints(nodePort) == ["10.244.1.8:8080": 1] && nodePort.outcomes[0].masqueraded)
    }

    @Test func aPortNoServiceHasOnAServiceIPIsRejectedByTheAccessFilter() throws {
        let p = try Self.explain("10.244.1.4", "10.96.0.10", 81)
        #expect(p.outcomes.map(\.verdict) == ["rejected"])
        #expect(p.outcomes[0].hops.last?.chain == "KUBE-IPVS-FILTER")
        #expect(p.outcomes[0].hops.last?.rule.contains("KUBE-IPVS-IPS dst -j REJECT") == true)
    }

    @Test func theNodeItselfGoesThroughOutputAndIPVSAtLocalOut() throws {
        let p = try Self.explain(Self.node, "10.96.0.10", 80, fromNode: true)
        #expect(endpoints(p) == ["10.244.1.2:8080": 0.5, "10.244.1.3:8080": 0.5])
        #expect(p.outcomes[0].hops.first?.chain == "OUTPUT" && p.outcomes[0].hops.first?.table == "nat")
        #expect(!p.outcomes[0].hops.contains { $0.chain == "INPUT" })
    }

    /// What a node gives: `ipvsadm-save -n`, `ipset save` and `iptables-save`, one after the
    /// other; weights share the traffic, weight 0 (a draining endpoint) takes none.
    @Test func savedPartsFromANodeWalkAsTheRenderDoes() throws {
        var o = IPVSOptions()
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        let rules = IPVSRules.render(Self.snapshot(), options: o)
        let saved = IPVSRenderer.save(IPVSPlan(Self.snapshot(), options: o)) + rules.ipset + rules.iptables
        for (src, dst, port) in [("10.244.1.4", "10.96.0.10", 80), ("198.18.0.7", "192.0.2.10", 80), ("203.0.113.9", "192.0.2.10", 80)] {
            // kube-ipvs0's addresses are the node's: given as local, as --live finds them.
            let q = ExplainQuery(source: src, destination: dst, port: port, localAddresses: [Self.node, "10.96.0.10", "192.0.2.10"])
            let a = try IPVSWalk.explain(saved, q), b = try IPVSWalk.explain(Self.rendered(), q)
            #expect(a.outcomes.map(\.verdict) == b.outcomes.map(\.verdict) && endpoints(a) == endpoints(b), "\(dst): \(a.text())")
        }
        let weighted = saved.replacingOccurrences(of: "-r 10.244.1.2:8080 -m -w 1", with: "-r 10.244.1.2:8080 -m -w 0")
            + "-a -t 10.96.0.10:80 -r 10.244.1.9:8080 -m -w 2\n"
        let q = ExplainQuery(source: "10.244.1.4", destination: "10.96.0.10", port: 80, localAddresses: ["10.96.0.10"])
        let p = try IPVSWalk.explain(weighted, q)
        #expect(endpoints(p) == ["10.244.1.3:8080": 1.0 / 3, "10.244.1.9:8080": 2.0 / 3])
    }

    @Test func badInputIsAClearError() throws {
        #expect(throws: ProxyConfigError.self) { try Self.explain("10.244.1.4", "10.96.0.10", 80, text: "") }
        #expect(throws: ProxyConfigError.self) { try Self.explain("10.244.1.4", "10.96.0.10", 80, text: "TCP  nowhere rr\n") }
        #expect(throws: ProxyConfigError.self) { try Self.explain("10.244.1.4", "10.96.0.10", 80, text: "-A -t 10.96.0.10:80 -s rr\n*nat\nbogus\nCOMMIT\n") }
        #expect(throws: ProxyConfigError.self) { try Self.explain("fd00::1", "10.96.0.10", 80) }
        // A dual-stack node's IPv6 virtual servers are passed over, not refused.
        let v6 = "TCP  [fd00::10]:80 rr\n  -> [fd00::2]:8080 Masq 1 0 0\n-A -t [fd00::10]:80 -s rr\n-a -t [fd00::10]:80 -r [fd00::2]:8080 -m -w 1\n"
        #expect(try Self.explain("10.244.1.4", "10.96.0.10", 80, text: v6 + Self.rendered()).outcomes.count == 2)
    }

    @Test func ipsetMembersAreLookedUpByTheirParts() {
        var cidr = IPSetMembers(type: "hash:ip,port,net")!
        cidr.add("192.0.2.10,tcp:80,203.0.113.0/24")
        cidr.add("192.0.2.10,6:80,10.0.0.5/32")
        var p = IPTablesWalk.Packet(source: IPTablesWalk.address("203.0.113.77")!, sourcePort: 1, destination: IPTablesWalk.address("192.0.2.10")!,
                                    port: 80, proto: "tcp")
        #expect(cidr.contains(p, ["dst", "dst", "src"]))
        p.source = IPTablesWalk.address("10.0.0.5")!
        #expect(cidr.contains(p, ["dst", "dst", "src"]), "a /32 and a numeric protocol read as ipset save prints them")
        p.source = IPTablesWalk.address("10.0.0.6")!
        #expect(!cidr.contains(p, ["dst", "dst", "src"]))
        p.proto = "udp"
        p.source = IPTablesWalk.address("203.0.113.77")!
        #expect(!cidr.contains(p, ["dst", "dst", "src"]), "the protocol is part of the port")
        var ports = IPSetMembers(type: "bitmap:port")!
        ports.add("30000-30002")
        p.port = 30002
        #expect(ports.contains(p, ["dst"]) && ports.count == 3)
        #expect(IPSetMembers(type: "hash:mac") == nil && IPSetMembers(type: "list:set") == nil)
        let parsed = IPSetMembers.parse("create A hash:ip family inet hashsize 1024 maxelem 65536\nadd A 10.96.0.10\nadd B 1.2.3.4\n")
        #expect(parsed.keys.sorted() == ["A"] && parsed["A"]?.count == 1)
    }
}
