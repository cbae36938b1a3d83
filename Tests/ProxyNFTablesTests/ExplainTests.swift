import Foundation
import KubeAPI
@testable import ProxyNFTables
import ProxySeam
import Testing

/// `switchyard explain` in the nftables mode, on upstream's own expected table for its test
/// services (`TestOverallNFTablesRules`, v1.36, as upstream's test writes it): each packet's
/// endpoints, masquerade and verdict as upstream's packet-flow tests state them for the same
/// kinds of traffic, and the hops named by upstream's chains. Our render of the same services is
/// walked too, and the table as `nft list` prints it.
@Suite struct NFTablesExplainTests {
    static let node = "192.168.0.2"
    static let external = "203.0.113.2"
    static let externalBlocked = "203.0.113.130"

    static func upstream() throws -> String {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/upstream")
        return try String(contentsOf: dir.appendingPathComponent("nftables-v1.36-TestOverallNFTablesRules.txt"), encoding: .utf8)
    }

    static func ours() -> String {
        let (snap, o) = upstreamFixture()
        return NFTablesProxier(fake: FakeNFTables(), options: o).render(snap)
    }

    /// Upstream's packet-flow notation: endpoints joined by ", ", or DROP, REJECT, or "" (not translated).
    static func flow(_ p: PacketPath) -> (output: String, masq: Bool) {
        if p.outcomes.allSatisfy({ $0.verdict == "dropped" }) { return ("DROP", false) }
        if p.outcomes.allSatisfy({ $0.verdict == "rejected" }) { return ("REJECT", false) }
        let eps = p.outcomes.compactMap(\.endpoint).sorted()
        return (eps.joined(separator: ", "), p.outcomes.contains { $0.masqueraded })
    }

    @Test(arguments: [
        // (name, source, destination, port, protocol, expected output, masquerade)
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "tcp", "10.180.0.1:80", false),
        ("external to cluster IP (masqueraded: not from the cluster CIDR)", external, "172.30.0.41", 80, "tcp", "10.180.0.1:80", true),
        ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "tcp", "10.180.0.1:80", true),
        ("cluster IP with two endpoints", "10.0.0.2", "172.30.0.44", 80, "tcp", "10.180.0.4:80, 10.180.0.5:80", false),
        ("cluster IP, wrong port: rejected by cluster-ips-check", "10.0.0.2", "172.30.0.41", 443, "tcp", "REJECT", false),
        ("cluster IP, wrong protocol", "10.0.0.2", "172.30.0.41", 80, "udp", "REJECT", false),
        ("unallocated cluster IP: dropped", "10.0.0.2", "172.30.0.99", 80, "tcp", "DROP", false),
        ("cluster IP with no endpoints", "10.0.0.2", "172.30.0.46", 80, "tcp", "REJECT", false),
        ("session affinity: a new client is balanced", "10.0.0.2", "172.30.0.45", 80, "tcp", "10.180.0.3:80", false),
        ("external to external IP", external, "192.168.99.33", 80, "tcp", "10.180.0.4:80, 10.180.0.5:80", true),
        ("external to LB IP, Local policy, no local endpoint", external, "1.2.3.4", 80, "tcp", "DROP", false),
        ("external to external IP, Local policy, no local endpoint", external, "192.168.99.22", 80, "tcp", "DROP", false),
        ("pod to LB IP, Local policy: short-circuited to the Service", "10.0.0.2", "1.2.3.4", 80, "tcp", "10.180.0.2:80", false),
        ("accepted external to LB with source ranges", external, "5.6.7.8", 80, "tcp", "10.180.0.3:80", true),
        ("blocked external to LB with source ranges", externalBlocked, "5.6.7.8", 80, "tcp", "DROP", false),
        ("external to NodePort", external, node, 3003, "tcp", "10.180.0.3:80", true),
        ("external to NodePort, Local policy, no local endpoint", external, node, 3001, "tcp", "DROP", false),
        ("external to the health check node port", external, node, 30000, "tcp", "", false),
    ])
    func packetsGoWhereUpstreamSays(name: String, source: String, destination: String, port: Int, proto: String, output: String, masq: Bool) throws {
        let q = ExplainQuery(source: source, destination: destination, port: port, proto: proto, localAddresses: [Self.node])
        for (which, ruleset) in [("upstream's table", try Self.upstream()), ("our render", Self.ours())] {
            let path = try NFTablesProxier.explain(ruleset, q)
            let got = Self.flow(path)
            #expect(got.output == output, "\(name), \(which): \(path.text())")
            if output != "DROP" && output != "REJECT" && !output.isEmpty { #expect(got.masq == masq, "\(name), \(which): \(path.text())") }
            #expect(abs(path.outcomes.map(\.probability).reduce(0, +) - 1) < 1e-9, "the ways add up to one")
        }
    }

    @Test func hopsNameUpstreamsChainsInOrder() throws {
        let p = try NFTablesProxier.explain(try Self.upstream(), ExplainQuery(source: "10.0.0.2", destination: "172.30.0.44", port: 80, localAddresses: [Self.node]))
        #expect(p.outcomes.count == 2)
        let chains = p.outcomes[0].hops.map(\.chain)
        #expect(Array(chains.prefix(4)) == ["filter-prerouting-pre-dnat", "nat-prerouting", "services", "service-LAUZTJTB-ns4/svc4/tcp/p80"], "\(chains)")
        #expect(chains.contains("filter-forward") && chains.last == "nat-postrouting", "\(chains)")
        #expect(p.outcomes.allSatisfy { $0.hops.allSatisfy { $0.table == "ip kube-proxy" } })
        let text = p.text()
        #expect(text.contains("50.0%  DNAT to 10.180.0.4:80, accepted") && text.contains("50.0%  DNAT to 10.180.0.5:80, accepted"), "\(text)")
        // The node's own packet to a LB IP outside its source ranges: dropped in filter-output-pre-dnat's firewall check.
        let lb = try NFTablesProxier.explain(try Self.upstream(), ExplainQuery(source: Self.node, destination: "5.6.7.8", port: 80, fromNode: true,
                                                                                localAddresses: [Self.node]))
        #expect(Self.flow(lb).output == "DROP" && lb.outcomes[0].hops.first?.chain == "filter-output-pre-dnat", "\(lb.text())")
    }

    /// The table as `nft list table` prints it (blocks, `meta mark`, named priorities, elements
    /// over several lines) walks as the script does.
    @Test func theListingWalksAsTheScript() throws {
        let listing = """
            table ip kube-proxy {
            	comment "rules for kube-proxy"
            	set cluster-ips {
            		type ipv4_addr
            		comment "Active ClusterIPs"
            		elements = { 172.30.0.41,
            			     172.30.0.44 }
            	}
            	map service-ips {
            		type ipv4_addr . inet_proto . inet_service : verdict
            		elements = { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80,
            			     172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
            	}
            	chain nat-prerouting {
            		type nat hook prerouting priority dstnat; policy accept;
            		jump services
            	}
            	chain nat-postrouting {
            		type nat hook postrouting priority srcnat; policy accept;
            		jump masquerading
            	}
            	chain filter-prerouting-pre-dnat {
            		type filter hook prerouting priority dstnat - 10; policy accept;
            	}
            	chain masquerading {
            		meta mark & 0x00004000 == 0x00000000 return
            		meta mark set meta mark ^ 0x00004000
            		masquerade fully-random
            	}
            	chain services {
            		ip daddr @cluster-ips ip saddr != 10.0.0.0/8 meta mark set meta mark | 0x00004000 comment "masquerade clusterIP traffic from outside cluster"
            		ip daddr . meta l4proto . th dport vmap @service-ips
            	}
            	chain service-ULMVA6XW-ns1/svc1/tcp/p80 {
            		meta l4proto tcp dnat ip to numgen random mod 1 map { 0 : 10.180.0.1 . 80 }
            	}
            	chain service-LAUZTJTB-ns4/svc4/tcp/p80 {
            		meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.4 . 80, 1 : 10.180.0.5 . 80 }
            	}
            }
            """
        let walk = try NFTWalk(listing: listing)
        #expect(walk.chains["filter-prerouting-pre-dnat"]?.priority == -110 && walk.chains["nat-postrouting"]?.priority == 100)
        #expect(walk.elements["cluster-ips"] == ["172.30.0.41", "172.30.0.44"])
        let outside = try NFTablesProxier.explain(listing, ExplainQuery(source: Self.external, destination: "172.30.0.44", port: 80))
        #expect(Self.flow(outside).output == "10.180.0.4:80, 10.180.0.5:80" && Self.flow(outside).masq, "\(outside.text())")
        let pod = try NFTablesProxier.explain(listing, ExplainQuery(source: "10.0.0.2", destination: "172.30.0.41", port: 80))
        #expect(Self.flow(pod).output == "10.180.0.1:80" && !Self.flow(pod).masq, "\(pod.text())")
    }

    @Test func badRulesetsAreRefused() {
        #expect(throws: ProxyConfigError.self) { try NFTablesProxier.explain("add rule ip kube-proxy services jump x\n", ExplainQuery(source: "10.0.0.2", destination: "10.0.0.3", port: 80)) }
        #expect(throws: ProxyConfigError.self) { try NFTablesProxier.explain(try Self.upstream(), ExplainQuery(source: "fd00::1", destination: "10.0.0.3", port: 80)) }
        // A goto to a chain that is not there.
        let broken = "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\nadd rule ip kube-proxy nat-prerouting goto nowhere\n"
        #expect(throws: ProxyConfigError.self) { try NFTablesProxier.explain(broken, ExplainQuery(source: "10.0.0.2", destination: "10.0.0.3", port: 80)) }
    }
}

/// Upstream's nftables `TestNodePorts` (v1.36), both families: a NodePort Service with a remote
/// and a local endpoint, under `--nodeport-addresses` unset (the node's primary IP, as upstream's
/// nftables mode defaults) and a list of CIDRs of both families; each packet walked through the
/// table of the case's family (`ip kube-proxy` or `ip6 kube-proxy`) as upstream's packet-flow
/// tests walk it.
@Suite struct UpstreamNFTablesNodePortsTests {
    /// The fake node's interface addresses (upstream's `testNodeIPs`).
    static let interfaces = ["192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"]

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var family: IPFamily
        var nodePortAddresses: [String]?
        var allowAltNodeIP: Bool
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "ipv4", family: .ipv4, nodePortAddresses: nil, allowAltNodeIP: false),
        Case(name: "ipv4, multiple nodeport-addresses", family: .ipv4, nodePortAddresses: ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"],
             allowAltNodeIP: true),
        Case(name: "ipv6", family: .ipv6, nodePortAddresses: nil, allowAltNodeIP: false),
        Case(name: "ipv6, multiple nodeport-addresses", family: .ipv6,
             nodePortAddresses: ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64", "2001:db8:1::2/128"], allowAltNodeIP: true),
    ]

    @Test(arguments: cases)
    func nodePorts(_ tc: Case) throws {
        let v4 = tc.family == .ipv4
        let (svcIP, ep1, ep2, nodeIP) = v4 ? ("172.30.0.41", "10.180.0.1", "10.180.2.1", "192.168.0.2")
                                           : ("fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1", "2001:db8::1")
        let (podIP, external, altNodeIP) = v4 ? ("10.0.0.2", "203.0.113.2", "192.168.1.2") : ("fd00:10::2", "2600:5200::1", "2001:db8:1::2")
        var c = ProxyConfig()
        c.ipFamily = tc.family
        c.mode = "nftables"
        c.nodePortAddresses = tc.nodePortAddresses ?? []
        c.localDetector = .cidrs([CIDR("10.0.0.0/8")!, CIDR("fd00:10::/64")!])
        c.nodeIPs = [IPAddress("192.168.0.2")!, IPAddress("2001:db8::1")!]
        let o = try NFTablesOptions.resolve(c, local: Self.interfaces.map { IPAddress($0)! })
        var t = ChangeTracker(family: tc.family, node: NodeInfo(name: "test-node"))
        var svc = Service(metadata: ObjectMeta(name: "svc1", namespace: "ns1"),
                          spec: ServiceSpec(type: "NodePort", clusterIP: svcIP, ports: [ServicePort(name: "p80", protocol: "TCP", port: 80, nodePort: 3001)]))
        svc.spec.clusterIPs = [svcIP]
        t.update(service: svc)
        t.update(slice: EndpointSlice(metadata: ObjectMeta(name: "svc1-1", namespace: "ns1", labels: [EndpointSlice.serviceNameLabel: "svc1"]),
                                      addressType: tc.family.rawValue,
                                      endpoints: [Endpoint(addresses: [ep1], conditions: EndpointConditions(ready: true)),
                                                  Endpoint(addresses: [ep2], conditions: EndpointConditions(ready: true), nodeName: "test-node")],
                                      ports: [EndpointPort(name: "p80", protocol: "TCP", port: 80)]))
        let table = NFTablesProxier(fake: FakeNFTables(), options: o).render(t.snapshot().0)
        #expect(table.contains(v4 ? "add table ip kube-proxy" : "add table ip6 kube-proxy"))
        let both = v4 ? "\(ep1):80, \(ep2):80" : "[\(ep1)]:80, [\(ep2)]:80"
        func flow(_ name: String, _ source: String, _ dest: String, _ port: Int, _ output: String, masq: Bool = false) throws {
            let path = try NFTablesProxier.explain(table, ExplainQuery(source: source, destination: dest, port: port, localAddresses: Self.interfaces))
            let got = NFTablesExplainTests.flow(path)
            #expect(got.output == output, "\(tc.name), \(name): \(path.text())")
            if !output.isEmpty { #expect(got.masq == masq, "\(tc.name), \(name): masquerade \(got.masq)") }
        }
        try flow("pod to cluster IP", podIP, svcIP, 80, both, masq: false)
        try flow("external to nodePort", external, nodeIP, 3001, both, masq: true)
        try flow("node to nodePort", nodeIP, nodeIP, 3001, both, masq: true)
        if tc.allowAltNodeIP {
            try flow("external to nodePort on secondary IP", external, altNodeIP, 3001, both, masq: true)
        } else {
            try flow("secondary nodeIP ignores NodePorts", external, altNodeIP, 3001, "")
        }
        // A packet of the other family is refused, not walked through the wrong table.
        #expect(throws: (any Error).self) {
            try NFTablesProxier.explain(table, ExplainQuery(source: v4 ? "fd00:10::2" : "10.0.0.2", destination: v4 ? "fd00:172:30::41" : "172.30.0.41", port: 80))
        }
    }
}
