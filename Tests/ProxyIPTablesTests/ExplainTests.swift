import Foundation
import IPTablesKit
import KubeAPI
@testable import ProxyIPTables
import ProxySeam
import Testing

/// `switchyard explain` in the iptables mode, on upstream's own test services (the input of
/// `TestOverallIPTablesRules`, whose render equals upstream's expected rules): each packet's
/// endpoints, masquerade and verdict as upstream's packet-flow tests state them for the same
/// kinds of traffic (`TestClusterIPGeneral`, `TestLoadBalancer`, `TestNoEndpointsReject`,
/// `TestExternalTrafficPolicyLocal`, `TestNodePorts`), and the hops named by upstream's chains.
@Suite struct IPTablesExplainTests {
    static let node = "192.168.0.2"
    static let external = "203.0.113.2"
    static let externalBlocked = "203.0.113.130"

    static func ruleset() throws -> String {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/upstream")
        let set = try ManifestLoader.load(paths: [dir.appendingPathComponent("iptables-TestOverallIPTablesRules-input.yaml").path])
        var t = ChangeTracker(node: NodeInfo(name: "test-node", ips: [IPAddress(node)!]))
        for c in set.serviceCIDRs { t.update(serviceCIDR: c) }
        for s in set.services { t.update(service: s) }
        for s in set.endpointSlices { t.update(slice: s) }
        var o = IPTablesOptions()
        o.localDetector = .cidrs([CIDR("10.0.0.0/8")!])
        o.randomFully = false
        return IPTablesProxier(ipt: FakeIPTables(), options: o).render(t.snapshot().0)
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
        ("cluster IP, wrong port", "10.0.0.2", "172.30.0.41", 443, "tcp", "", false),
        ("cluster IP, wrong protocol", "10.0.0.2", "172.30.0.41", 80, "udp", "", false),
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
        let path = try IPTablesProxier.explain(try Self.ruleset(), q)
        let got = Self.flow(path)
        #expect(got.output == output, "\(name): \(path.text())")
        if output != "DROP" && output != "REJECT" && !output.isEmpty { #expect(got.masq == masq, "\(name): \(path.text())") }
        #expect(abs(path.outcomes.map(\.probability).reduce(0, +) - 1) < 1e-9, "the ways add up to one")
    }

    @Test func theNodesOwnPacketsTakeTheOutputPath() throws {
        // localhost NodePorts: from the node to 127.0.0.1, masqueraded (upstream's TestNodePorts).
        let local = try IPTablesProxier.explain(try Self.ruleset(), ExplainQuery(source: "127.0.0.1", destination: "127.0.0.1", port: 3003, fromNode: true,
                                                                                  localAddresses: [Self.node]))
        #expect(Self.flow(local).output == "10.180.0.3:80" && Self.flow(local).masq, "\(local.text())")
        #expect(local.outcomes[0].hops.first?.chain == "OUTPUT")
        // The node to a LB IP whose source ranges leave the node out: dropped in filter OUTPUT by
        // KUBE-PROXY-FIREWALL (upstream's TestLoadBalancer lets it through where the ranges hold it).
        let lb = try IPTablesProxier.explain(try Self.ruleset(), ExplainQuery(source: Self.node, destination: "5.6.7.8", port: 80, fromNode: true,
                                                                               localAddresses: [Self.node]))
        #expect(Self.flow(lb).output == "DROP", "\(lb.text())")
        #expect(lb.outcomes.first?.hops.last.map { ($0.table, $0.chain) } ?? ("", "") == ("filter", "KUBE-PROXY-FIREWALL"))
    }

    @Test func hopsNameUpstreamsChainsInOrder() throws {
        let p = try IPTablesProxier.explain(try Self.ruleset(), ExplainQuery(source: "10.0.0.2", destination: "172.30.0.44", port: 80, localAddresses: [Self.node]))
        #expect(p.outcomes.count == 2)
        let chains = p.outcomes.map { $0.hops.map(\.chain) }
        for sep in ["KUBE-SEP-UKSFD7AGPMPPLUHC", "KUBE-SEP-C6EBXVWJJZMIWKLZ"] {
            let c = chains.first { $0.contains(sep) } ?? []
            #expect(Array(c.prefix(4)) == ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-4SW47YFZTEDKD3PK", sep], "\(c)")
        }
        let dnat = p.outcomes[0].hops.first { $0.rule.contains("DNAT") }
        #expect(dnat?.table == "nat" && dnat?.rule.contains("--to-destination 10.180.0.") == true)
        // The text says where the second way parts from the first.
        let text = p.text()
        #expect(text.contains("50.0%  DNAT to 10.180.0.4:80, accepted") && text.contains("50.0%  DNAT to 10.180.0.5:80, accepted  (via KUBE-SVC-4SW47YFZTEDKD3PK > KUBE-SEP-C6EBXVWJJZMIWKLZ)"), "\(text)")
    }

    @Test func badRulesetsAreRefused() {
        #expect(throws: ProxyConfigError.self) { try IPTablesProxier.explain("-A KUBE-SERVICES -j ACCEPT\n", ExplainQuery(source: "10.0.0.2", destination: "10.0.0.3", port: 80)) }
        #expect(throws: ProxyConfigError.self) { try IPTablesProxier.explain("*nat\n-A X -m comment --comment \"open\n", ExplainQuery(source: "10.0.0.2", destination: "10.0.0.3", port: 80)) }
        #expect(throws: ProxyConfigError.self) { try IPTablesProxier.explain("*nat\n", ExplainQuery(source: "fd00::1", destination: "10.0.0.3", port: 80)) }
    }
}

/// Upstream's `TestNodePorts` (pkg/proxy/iptables/proxier_test.go), every case of both families:
/// a NodePort Service with an endpoint elsewhere and one on this node, under
/// `--nodeport-addresses` and `--iptables-localhost-nodeports`, the packet flows walked through
/// the rendered rules as upstream's tracer walks them, and the KUBE-FIREWALL chain's content.
@Suite struct UpstreamNodePortsTests {
    /// The fake node's interface addresses (upstream's `NewFakeProxier`): loopback and `testNodeIPs`.
    static let interfaces = ["127.0.0.1", "::1", "192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"]

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var family: IPFamily
        var localhostNodePorts: Bool
        var nodePortAddresses: [String]?
        var allowAltNodeIP: Bool
        var expectFirewall: Bool
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "ipv4, localhost-nodeports enabled", family: .ipv4, localhostNodePorts: true, nodePortAddresses: nil, allowAltNodeIP: true, expectFirewall: true),
        Case(name: "ipv4, localhost-nodeports disabled", family: .ipv4, localhostNodePorts: false, nodePortAddresses: nil, allowAltNodeIP: true, expectFirewall: false),
        Case(name: "ipv4, localhost-nodeports disabled, localhost in nodeport-addresses", family: .ipv4, localhostNodePorts: false,
             nodePortAddresses: ["192.168.0.0/24", "127.0.0.1/32"], allowAltNodeIP: false, expectFirewall: false),
        Case(name: "ipv4, localhost-nodeports enabled, multiple nodeport-addresses", family: .ipv4, localhostNodePorts: false,
             nodePortAddresses: ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"], allowAltNodeIP: true, expectFirewall: false),
        Case(name: "ipv6, localhost-nodeports enabled", family: .ipv6, localhostNodePorts: true, nodePortAddresses: nil, allowAltNodeIP: true, expectFirewall: false),
        Case(name: "ipv6, localhost-nodeports disabled", family: .ipv6, localhostNodePorts: false, nodePortAddresses: nil, allowAltNodeIP: true, expectFirewall: false),
        Case(name: "ipv6, localhost-nodeports disabled, multiple nodeport-addresses", family: .ipv6, localhostNodePorts: false,
             nodePortAddresses: ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"], allowAltNodeIP: false, expectFirewall: false),
    ]

    @Test(arguments: cases)
    func nodePorts(_ tc: Case) throws {
        let v4 = tc.family == .ipv4
        let (svcIP, ep1, ep2) = v4 ? ("172.30.0.41", "10.180.0.1", "10.180.2.1") : ("fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1")
        let (podIP, external, nodeIP, altNodeIP, localhost) = v4
            ? ("10.0.0.2", "203.0.113.2", "192.168.0.2", "192.168.1.2", "127.0.0.1")
            : ("fd00:10::2", "2600:5200::1", "2001:db8::1", "2001:db8:1::2", "::1")
        var c = ProxyConfig()
        c.ipFamily = tc.family
        c.localhostNodePorts = tc.localhostNodePorts
        c.nodePortAddresses = tc.nodePortAddresses ?? []
        c.localDetector = .cidrs([CIDR(v4 ? "10.0.0.0/8" : "fd00:10::/64")!])
        c.nodeIPs = [IPAddress("192.168.0.2")!]
        var o = IPTablesOptions(c, nodePortIPs: c.nodePortIPs(local: Self.interfaces.map { IPAddress($0)! }))
        o.randomFully = false
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
        let rules = IPTablesProxier(ipt: FakeIPTables(), options: o).render(t.snapshot().0)
        let both = v4 ? "\(ep1):80, \(ep2):80" : "[\(ep1)]:80, [\(ep2)]:80"
        func flow(_ name: String, _ source: String, _ dest: String, _ port: Int, _ output: String, masq: Bool = false) throws {
            let path = try IPTablesProxier.explain(rules, ExplainQuery(source: source, destination: dest, port: port, localAddresses: Self.interfaces))
            let got = IPTablesExplainTests.flow(path)
            #expect(got.output == output, "\(tc.name), \(name): \(path.text())")
            if !output.isEmpty { #expect(got.masq == masq, "\(tc.name), \(name): masquerade \(got.masq)") }
        }
        try flow("pod to cluster IP", podIP, svcIP, 80, both, masq: false)
        try flow("external to nodePort", external, nodeIP, 3001, both, masq: true)
        try flow("node to nodePort", nodeIP, nodeIP, 3001, both, masq: true)
        if v4 && tc.localhostNodePorts {
            try flow("localhost to nodePort gets masqueraded", localhost, localhost, 3001, both, masq: true)
        } else {
            try flow("localhost to nodePort is ignored", localhost, localhost, 3001, "")
        }
        if tc.allowAltNodeIP {
            try flow("external to nodePort on secondary IP", external, altNodeIP, 3001, both, masq: true)
        } else {
            try flow("secondary nodeIP ignores NodePorts", external, altNodeIP, 3001, "")
        }
        // KUBE-FIREWALL: the anti-martian rule only where localhost NodePorts are on (IPv4).
        var inFilter = false
        let firewall = rules.split(separator: "\n").filter { line in
            if line.hasPrefix("*") { inFilter = line == "*filter" }
            return inFilter && line.hasPrefix("-A KUBE-FIREWALL ")
        }.map(String.init)
        let expected = tc.expectFirewall
            ? [#"-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"#]
            : []
        #expect(firewall == expected, "\(tc.name): \(firewall)")
    }
}
