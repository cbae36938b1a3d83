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
