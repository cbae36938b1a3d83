import Foundation
import Netlink
import KubeAPI
@testable import ProxyNFTables
import Testing
import ProxySeam

/// Upstream's TestOverallNFTablesRules fixture, built through the change tracker.
func upstreamFixture() -> (ProxySnapshot, NFTablesOptions) {
    func s(_ ns: String, _ name: String, _ ip: String, type: String = "ClusterIP", nodePort: Int? = nil) -> Service {
        Service(metadata: ObjectMeta(name: name, namespace: ns),
                spec: ServiceSpec(type: type, clusterIP: ip,
                                  ports: [ServicePort(name: "p80", protocol: "TCP", port: 80, targetPort: .int(80), nodePort: nodePort)]))
    }
    func e(_ ns: String, _ name: String, _ ip: String, node: String = "node-b") -> EndpointSlice {
        EndpointSlice(metadata: ObjectMeta(name: "\(name)-\(ip)", namespace: ns, labels: [EndpointSlice.serviceNameLabel: name]),
                      endpoints: [Endpoint(addresses: [ip], conditions: EndpointConditions(ready: true), nodeName: node)],
                      ports: [EndpointPort(name: "p80", protocol: "TCP", port: 80)])
    }
    // The nodes as v1.36's test places the endpoints (its hairpin set holds the local ones).
    var t = ChangeTracker(node: NodeInfo(name: "test-node"), serviceCIDRs: [CIDR("172.30.0.0/16")!])
    t.update(service: s("ns1", "svc1", "172.30.0.41"))
    t.update(slice: e("ns1", "svc1", "10.180.0.1", node: "test-node"))
    var svc2 = s("ns2", "svc2", "172.30.0.42", type: "LoadBalancer", nodePort: 3001)
    svc2.spec.externalTrafficPolicy = "Local"
    svc2.spec.externalIPs = ["192.168.99.22"]
    svc2.spec.healthCheckNodePort = 30000
    svc2.status = ServiceStatus(loadBalancer: LoadBalancerStatus(ingress: [LoadBalancerIngress(ip: "1.2.3.4")]))
    t.update(service: svc2)
    t.update(slice: e("ns2", "svc2", "10.180.0.2"))
    t.update(service: s("ns3", "svc3", "172.30.0.43", type: "NodePort", nodePort: 3003))
    t.update(slice: e("ns3", "svc3", "10.180.0.3", node: "test-node"))
    var svc5 = s("ns5", "svc5", "172.30.0.45", type: "LoadBalancer", nodePort: 3002)
    svc5.spec.loadBalancerSourceRanges = ["203.0.113.0/25"]
    svc5.spec.sessionAffinity = "ClientIP"
    svc5.status = ServiceStatus(loadBalancer: LoadBalancerStatus(ingress: [LoadBalancerIngress(ip: "5.6.7.8")]))
    t.update(service: svc5)
    t.update(slice: e("ns5", "svc5", "10.180.0.3", node: "test-node"))
    var svc4 = s("ns4", "svc4", "172.30.0.44", type: "NodePort")
    svc4.spec.externalIPs = ["192.168.99.33"]
    t.update(service: svc4)
    t.update(slice: e("ns4", "svc4", "10.180.0.4"))
    t.update(slice: e("ns4", "svc4", "10.180.0.5", node: "test-node"))
    t.update(service: s("ns6", "svc6", "172.30.0.46"))
    var o = NFTablesOptions()
    o.localDetector = .cidrs([CIDR("10.0.0.0/8")!])
    o.nodePortIPs = [IPAddress("192.168.0.2")!]
    o.nodeIP = IPAddress("192.168.0.2")
    return (t.snapshot().0, o)
}

/// The rendered script with element lists split into one line per element, as upstream writes them.
func lines(_ script: String) -> Set<String> {
    Set(script.split(separator: "\n").map(String.init).flatMap(oneElementPerLine))
}

/// `add element T S { a, b }` as `add element T S { a }` and `add element T S { b }`; other lines as they are.
func oneElementPerLine(_ l: String) -> [String] {
    guard l.hasPrefix("add element "), let open = l.firstIndex(of: "{") else { return [l] }
    let head = l[..<open]
    let body = l[l.index(after: open)..<l.lastIndex(of: "}")!].trimmingCharacters(in: .whitespaces)
    return body.components(separatedBy: ", ").map { "\(head){ \($0) }" }
}

@Suite struct NFTablesNamesTests {
    @Test func chainNamesMatchUpstream() {
        // Values from upstream kube-proxy's nftables proxier tests.
        #expect(ServiceNames.hashAndTruncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80")
        #expect(ServiceNames.hashAndTruncate("ns1/svc1/tcp/p80__10.180.0.1/80") == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80")
        #expect(ServiceNames.hashAndTruncate("ns5/svc5/tcp/p80__10.180.0.3/80").hasPrefix("GTK6MW7G-"))
        let long = String(repeating: "n", count: 63) + "/" + String(repeating: "s", count: 63) + "/tcp/" + String(repeating: "p", count: 200)
        #expect(ServiceNames.hashAndTruncate(long).count == 240)
        #expect(ServiceNames.hashAndTruncate(long).hasSuffix("..."))
    }
}

@Suite struct NFTablesGeneratorTests {
    @Test func upstreamFixtureRendersUpstreamLines() {
        let (snap, o) = upstreamFixture()
        let p = NFTablesProxier(fake: FakeNFTables(), options: o)
        let got = lines(p.render(snap))
        let t = "add rule ip kube-proxy"
        let want = [
            // v1.36: ClusterIP traffic from outside the cluster marked once, in `services`; the service
            // chain DNATs through a numgen map; hairpin traffic by the connection, after DNAT.
            "\(t) services ip daddr @cluster-ips ip saddr != 10.0.0.0/8 mark set mark or 0x00004000 comment \"masquerade clusterIP traffic from outside cluster\"",
            "\(t) service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.180.0.1 . 80 }",
            "add element ip kube-proxy hairpin-connections { 10.180.0.1 . 10.180.0.1 . tcp . 80 }",
            "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
            "add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }",
            "add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment \"ns2/svc2:p80\" : drop }",
            "add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }",
            "add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment \"ns2/svc2:p80\" : drop }",
            "add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }",
            "add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment \"ns2/svc2:p80\" : drop }",
            "\(t) external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment \"short-circuit pod traffic\"",
            "\(t) external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local mark set mark or 0x00004000 comment \"masquerade local traffic\"",
            "\(t) external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment \"short-circuit local traffic\"",
            "\(t) external-4AT6LBPK-ns3/svc3/tcp/p80 mark set mark or 0x00004000 comment \"masquerade\"",
            "\(t) external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80",
            "add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }",
            "\(t) firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop",
            "add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }",
            "\(t) service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80",
            "\(t) endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }",
            "add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain }",
            "add element ip kube-proxy nodeport-ips { 192.168.0.2 }",
            "\(t) services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
            "\(t) nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
            "\(t) cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"",
            "\(t) cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment \"Drop traffic to unallocated ClusterIPs\"",
            "\(t) masquerading mark and 0x00004000 != 0 mark set mark xor 0x00004000 masquerade fully-random",
            "\(t) masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random",
            "add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }",
            "\(t) filter-input ct state new jump nodeport-endpoints-check",
        ]
        for w in want { #expect(got.contains(w), "missing: \(w)") }
        // No endpoint chains without affinity, and no mark-for-masquerade chain.
        #expect(!got.contains { $0.contains("endpoint-5OJB2KTY") || $0.contains("mark-for-masquerade") })
        // svc6 has no endpoints: no chains of its own.
        #expect(!got.contains { $0.contains("chain ip kube-proxy service-") && $0.contains("ns6/svc6") })
    }

    /// The whole table on upstream's own test services equals upstream's expected dump of
    /// `TestOverallNFTablesRules` (v1.36, `Tests/Fixtures/upstream/`), line for line after
    /// both are sorted as upstream's test helper sorts them.
    @Test func upstreamFixtureEqualsUpstreamsExpectedDump() throws {
        let (snap, o) = upstreamFixture()
        let got = upstreamSorted(NFTablesProxier(fake: FakeNFTables(), options: o).render(snap))
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/upstream/nftables-v1.36-TestOverallNFTablesRules.txt")
        let want = upstreamSorted(try String(contentsOf: fixture, encoding: .utf8))
        let missing = want.filter { !got.contains($0) }, extra = got.filter { !want.contains($0) }
        #expect(missing.isEmpty && extra.isEmpty, "missing:\n\(missing.joined(separator: "\n"))\nextra:\n\(extra.joined(separator: "\n"))")
        #expect(got == want, "same lines, same order")
    }

    @Test func statementsCompileAsNftDoes() {
        // Expression lists `nft --debug=netlink` prints for the same statements.
        var namer = AnonNamer()
        let ct = Rule([.ctStateNew, .verdict(.jump("x"))]).compile(&namer).exprs
        #expect(ct == [.ct(key: 0, dreg: 1), .bitwise(sreg: 1, dreg: 1, mask: [8, 0, 0, 0], xor: [0, 0, 0, 0]),
                       .cmp(sreg: 1, op: 1, data: [0, 0, 0, 0]), .verdict(code: -3, chain: "x")])
        let prefix = Rule([.addr(.saddr, negate: true, CIDR("10.0.0.0/8")!)]).compile(&namer).exprs
        #expect(prefix == [.payload(base: 1, offset: 12, len: 1, dreg: 1), .cmp(sreg: 1, op: 1, data: [10])])
        let odd = Rule([.addr(.daddr, negate: false, CIDR("10.96.0.0/12")!)]).compile(&namer).exprs
        #expect(odd == [.payload(base: 1, offset: 16, len: 4, dreg: 1),
                        .bitwise(sreg: 1, dreg: 1, mask: [0xff, 0xf0, 0, 0], xor: [0, 0, 0, 0]),
                        .cmp(sreg: 1, op: 0, data: [10, 96, 0, 0])])
        let vmap = Rule([.vmap([.ipDaddr, .l4proto, .thDport], set: "service-ips")]).compile(&namer).exprs
        #expect(vmap == [.payload(base: 1, offset: 16, len: 4, dreg: 1), .meta(key: 16, dreg: 9),
                         .payload(base: 2, offset: 2, len: 2, dreg: 10),
                         .lookup(sreg: 1, set: "service-ips", setID: 0, dreg: 0, invert: false)])
        // v1.36's statements, as `nft --debug=netlink` 1.0.6 lays them out.
        let ctDNAT = Rule([.ctStatusDNAT]).compile(&namer).exprs
        #expect(ctDNAT == [.ct(key: 2 /* NFT_CT_STATUS */, dreg: 1), .bitwise(sreg: 1, dreg: 1, mask: [0x20, 0, 0, 0], xor: [0, 0, 0, 0]),
                           .cmp(sreg: 1, op: 1, data: [0, 0, 0, 0])])
        let markSet = Rule([.markIsSet(0x4000)]).compile(&namer).exprs
        #expect(markSet == [.meta(key: 3, dreg: 1), .bitwise(sreg: 1, dreg: 1, mask: [0, 0x40, 0, 0], xor: [0, 0, 0, 0]),
                            .cmp(sreg: 1, op: 1, data: [0, 0, 0, 0])])
        let (dn, dnSets) = Rule([.dnatNumgenMap(.tcp, [Destination(ip: .ip(0x0ab4_0004), port: 80), Destination(ip: .ip(0x0ab4_0005), port: 80)])]).compile(&namer)
        #expect(dn.count == 5 && dn[2] == .numgen(dreg: 1, modulus: 2, type: 1))
        #expect(dn[4] == .nat(type: 1, family: 2 /* NFPROTO_IPV4 */, addrReg: 1, protoReg: 9, flags: 0))
        #expect(dnSets.count == 1 && dnSets[0].data?.type == 461 && dnSets[0].data?.length == 8)
        #expect(dnSets[0].data?.values == [[10, 180, 0, 4, 0, 80, 0, 0], [10, 180, 0, 5, 0, 80, 0, 0]])
        let (ng, sets) = Rule([.numgenVmap(["a", "b"])]).compile(&namer)
        #expect(sets.count == 1 && sets[0].elements.count == 2 && sets[0].isVerdictMap)
        #expect(ng.first == .numgen(dreg: 1, modulus: 2, type: 1))
        // Interval sets as nft sends them: an end at 0, then start/end pairs, merged.
        let iv = intervalElements([CIDR("203.0.113.0/25")!, CIDR("1.2.3.4/32")!, CIDR("1.2.3.5/32")!])
        #expect(iv.map(\.key) == [[0, 0, 0, 0], [1, 2, 3, 4], [1, 2, 3, 6], [203, 0, 113, 0], [203, 0, 113, 128]])
        #expect(iv.map(\.flags) == [1, 0, 1, 0, 1])
    }

    /// The `ip6 kube-proxy` table's statements, as `nft --debug=netlink` lays them out for an ip6
    /// table: 16-byte addresses at IPv6's offsets, concatenations after the four registers an
    /// address takes, DNAT with the IPv6 family and ICMPv6 port unreachable.
    @Test func ipv6StatementsCompileAsNftDoes() {
        var namer = AnonNamer()
        let six = IPField.daddr(.ipv6)
        let host = Rule([.addr(six, negate: true, CIDR("::1/128")!)]).compile(&namer, family: .ipv6).exprs
        #expect(host == [.payload(base: 1, offset: 24, len: 16, dreg: 1), .cmp(sreg: 1, op: 1, data: [UInt8](repeating: 0, count: 15) + [1])])
        #expect(Rule([.addr(six, negate: true, CIDR("::1/128")!)]).text == "ip6 daddr != ::1")
        let net = Rule([.addr(.saddr(.ipv6), negate: false, CIDR("fd00:10::/60")!)]).compile(&namer, family: .ipv6).exprs
        #expect(net[0] == .payload(base: 1, offset: 8, len: 16, dreg: 1))
        if case let .bitwise(_, _, mask, _) = net[1] { #expect(mask == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0] + [UInt8](repeating: 0, count: 8)) }
        let vmap = Rule([.vmap([.ip6Daddr, .l4proto, .thDport], set: "service-ips")]).compile(&namer, family: .ipv6).exprs
        #expect(vmap == [.payload(base: 1, offset: 24, len: 16, dreg: 1), .meta(key: 16, dreg: 12),
                         .payload(base: 2, offset: 2, len: 2, dreg: 13),
                         .lookup(sreg: 1, set: "service-ips", setID: 0, dreg: 0, invert: false)])
        // IPv6 text as inet_ntop writes it.
        for text in ["::", "::1", "fd00:10:180::1", "2001:db8:0:1:1:1:1:1", "2001:0:0:1::1", "1::", "fd00:10:128::3:e9", "1:0:0:2:0:0:0:3", "ff02::1:ff00:1"] {
            #expect(KeyValue(IPAddress(text)!).text == IPAddress(text)!.description, "\(text)")
        }
        let ep = KeyValue(IPAddress("fd00:10:180::1")!)
        #expect(ep.text == "fd00:10:180::1" && ep.bytes.count == 16 && ep.family == .ipv6)
        let dnat = Rule([.dnat(.tcp, ep, 80)])
        #expect(dnat.text == "meta l4proto tcp dnat to [fd00:10:180::1]:80")
        #expect(dnat.compile(&namer, family: .ipv6).exprs.last == .nat(type: 1, family: 10 /* NFPROTO_IPV6 */, addrReg: 1, protoReg: 2, flags: 2 /* NF_NAT_RANGE_PROTO_SPECIFIED */))
        let (dn, sets) = Rule([.dnatNumgenMap(.tcp, [Destination(ip: ep, port: 80)])]).compile(&namer, family: .ipv6)
        #expect(Rule([.dnatNumgenMap(.tcp, [Destination(ip: ep, port: 80)])]).text
                    == "meta l4proto tcp dnat ip6 addr . port to numgen random mod 1 map { 0 : fd00:10:180::1 . 80 }")
        #expect(sets[0].data?.type == 525 && sets[0].data?.length == 20 && sets[0].data?.values[0].count == 20)
        #expect(dn.last == .nat(type: 1, family: 10, addrReg: 1, protoReg: 12, flags: 0))
        #expect(Rule([.reject]).compile(&namer, family: .ipv6).exprs == [.reject(type: 0, code: 4)])
        // An IPv6 interval set: start and the address after the end, no end past the last address.
        let iv = intervalElements([CIDR("fd00:10:96::/112")!, CIDR("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124")!])
        #expect(iv.map(\.flags) == [1, 0, 1, 0])
        #expect(iv[2].key == IPAddress("fd00:10:96::1:0")!.bytes)
    }
}

@Suite struct NFTablesSyncTests {
    func cluster(_ n: Int, endpoints: Int = 2) -> ChangeTracker {
        var t = ChangeTracker(node: NodeInfo(name: "node-a"), serviceCIDRs: [CIDR("10.96.0.0/12")!])
        for i in 0..<n {
            let ip = IPAddress(ipv4: 0x0A60_0000 + UInt32(i + 1)).description
            t.update(service: Service(metadata: ObjectMeta(name: "s\(i)", namespace: "default"),
                                      spec: ServiceSpec(type: "ClusterIP", clusterIP: ip,
                                                        ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))])))
            let eps = (0..<endpoints).map { Endpoint(addresses: [IPAddress(ipv4: 0x0AF4_0000 + UInt32(i * 16 + $0 + 2)).description],
                                                     conditions: EndpointConditions(ready: true)) }
            t.update(slice: EndpointSlice(metadata: ObjectMeta(name: "s\(i)-x", namespace: "default",
                                                               labels: [EndpointSlice.serviceNameLabel: "s\(i)"]),
                                          endpoints: eps, ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080)]))
        }
        return t
    }

    /// A local endpoint two Services share is one `hairpin-connections` element: a partial sync
    /// that removes one Service keeps it for the other, and the last one's removal deletes it.
    @Test(arguments: NFTablesLayout.allCases)
    func sharedHairpinElementsLiveAsLongAsAServiceHoldsThem(layout: NFTablesLayout) async throws {
        var t = ChangeTracker(node: NodeInfo(name: "node-a"), serviceCIDRs: [CIDR("10.96.0.0/12")!])
        for (i, name) in ["a", "b"].enumerated() {
            t.update(service: Service(metadata: ObjectMeta(name: name, namespace: "default"),
                                      spec: ServiceSpec(type: "ClusterIP", clusterIP: "10.96.0.\(i + 1)",
                                                        ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))])))
            t.update(slice: EndpointSlice(metadata: ObjectMeta(name: "\(name)-x", namespace: "default", labels: [EndpointSlice.serviceNameLabel: name]),
                                          endpoints: [Endpoint(addresses: ["10.244.1.7"], conditions: EndpointConditions(ready: true), nodeName: "node-a")],
                                          ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080)]))
        }
        var o = NFTablesOptions()
        o.layout = layout
        let fake = FakeNFTables()
        let p = NFTablesProxier(fake: fake, options: o)
        _ = try await sync(p, &t)
        let set = layout == .maps ? Names.endpointHairpin : Names.hairpinConnections
        let held = { fake.sets[set]?.count ?? 0 }
        #expect(held() == 1)
        t.delete(service: NamespacedName(namespace: "default", name: "a"))
        #expect(try await sync(p, &t).full == false)
        #expect(held() == 1, "service b still sends its endpoint to itself through its ClusterIP")
        #expect(fake.canonical() == (try await fresh(t, o)).canonical())
        t.delete(service: NamespacedName(namespace: "default", name: "b"))
        _ = try await sync(p, &t)
        #expect(held() == 0)
    }

    func sync(_ p: NFTablesProxier, _ t: inout ChangeTracker) async throws -> SyncOutcome {
        let (snap, changed) = t.snapshot()
        return try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
    }

    /// What a fresh proxier builds from the same tracker state.
    func fresh(_ t: ChangeTracker, _ o: NFTablesOptions) async throws -> FakeNFTables {
        var copy = t
        let fake = FakeNFTables()
        let p = NFTablesProxier(fake: fake, options: o)
        let (snap, _) = copy.snapshot()
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        return fake
    }

    @Test func endpointChangeTransactionIsFlatInServiceCount() async throws {
        var sizes: [Int] = []
        for n in [10, 1000] {
            var t = cluster(n)
            let fake = FakeNFTables()
            let p = NFTablesProxier(fake: fake, options: NFTablesOptions())
            #expect(try await sync(p, &t).full)
            t.update(slice: EndpointSlice(metadata: ObjectMeta(name: "s3-x", namespace: "default", labels: [EndpointSlice.serviceNameLabel: "s3"]),
                                          endpoints: [Endpoint(addresses: ["10.244.0.99"], conditions: EndpointConditions(ready: true))],
                                          ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080)]))
            let out = try await sync(p, &t)
            #expect(!out.full)
            sizes.append(fake.lastTransaction.count)
            // The result equals what a full sync from nothing builds.
            let want = try await fresh(t, NFTablesOptions())
            #expect(fake.ruleTexts == want.ruleTexts)
            #expect(fake.elementTexts == want.elementTexts)
        }
        #expect(sizes[0] == sizes[1], "transaction sizes \(sizes) should not depend on the number of services")
        #expect(sizes[0] < 20)
    }

    @Test func fullSyncOfALargeTableGoesInSlices() async throws {
        var t = cluster(300, endpoints: 3)
        let fake = FakeNFTables()
        let p = NFTablesProxier(fake: fake, options: NFTablesOptions())
        p.prepareSliceSize = 500
        _ = try await sync(p, &t)
        #expect(fake.transactionCount > 2)
        // The last transaction hooks the base chains; nothing before it does.
        #expect(fake.lastTransaction.contains { $0.contains("type nat hook prerouting") })
        #expect(fake.transactions.dropLast().allSatisfy { ops in !ops.contains { if case .addChain(let c) = $0 { return c.base != nil } else { return false } } })
    }

    @Test func failedTransactionChangesNothingAndTheNextSyncRepairs() async throws {
        var t = cluster(5)
        let fake = FakeNFTables()
        let p = NFTablesProxier(fake: fake, options: NFTablesOptions())
        _ = try await sync(p, &t)
        let before = fake.ruleTexts
        t.delete(service: NamespacedName(namespace: "default", name: "s1"))
        fake.failNext = 22
        await #expect(throws: NetlinkError.self) { _ = try await sync(p, &t) }
        #expect(fake.ruleTexts == before, "a rejected transaction leaves the table as it was")
        // The change is not lost: the next sync reads the table back and converges.
        let (snap, _) = t.snapshot()
        let out = try await p.sync(SyncRequest(snapshot: snap, changedServices: []))
        #expect(out.full)
        let want = try await fresh(t, NFTablesOptions())
        #expect(fake.ruleTexts == want.ruleTexts)
        #expect(fake.elementTexts == want.elementTexts)
    }

    @Test func tamperingIsDetected() async throws {
        var t = cluster(3)
        let fake = FakeNFTables()
        let p = NFTablesProxier(fake: fake, options: NFTablesOptions())
        _ = try await sync(p, &t)
        #expect(await p.needsFullResync() == false)
        fake.tamperFlush("services")
        #expect(await p.needsFullResync() == true)
        let (snap, _) = t.snapshot()
        #expect(try await p.sync(SyncRequest(snapshot: snap, changedServices: [])).full)
        #expect(fake.ruleTexts["services"]?.count == 2)
    }

    @Test func invalidManifestsNeverReachTheTable() throws {
        let yaml = """
        apiVersion: v1
        kind: Service
        metadata: {name: bad, namespace: default}
        spec: {clusterIP: 10.96.0.9, ports: [{port: 70000}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: good, namespace: default}
        spec: {clusterIP: 10.96.0.8, ports: [{port: 80, protocol: TCP}]}
        """
        let set = try ManifestLoader.parse(yaml, source: "t.yaml")
        #expect(set.issues.count == 1)
        var t = ChangeTracker(node: NodeInfo(name: "n"))
        for s in set.services { t.update(service: s) }
        let p = NFTablesProxier(fake: FakeNFTables(), options: NFTablesOptions())
        let text = p.render(t.snapshot().0)
        #expect(text.contains("10.96.0.8"))
        #expect(!text.contains("10.96.0.9"))
    }
}

/// A dump sorted as upstream's `sortNFTablesTransaction` (pkg/proxy/nftables/helpers_test.go) sorts
/// one: blank and comment lines dropped, one element per line, objects ordered table, chain, rule,
/// set, map, element, then by name; rules keep their order within a chain. The mark is written as
/// upstream's test writes it (`0x4000`; nft lists it as `0x00004000`).
func upstreamSorted(_ text: String) -> [String] {
    var lines: [String] = []
    for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
        let l = raw.replacingOccurrences(of: "0x00004000", with: "0x4000")
        if l.hasPrefix("#") || l.trimmingCharacters(in: .whitespaces).isEmpty { continue }
        lines += oneElementPerLine(l)
    }
    let order = ["table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5]
    func less(_ a: String, _ b: String) -> Bool {
        let wa = a.split(separator: " ", omittingEmptySubsequences: false), wb = b.split(separator: " ", omittingEmptySubsequences: false)
        guard wa.count >= 5, wb.count >= 5 else { return false }
        if wa[1] != wb[1] { return (order[String(wa[1])] ?? 0) >= (order[String(wb[1])] ?? 0) }
        if wa[4] != wb[4] { return wa[4] < wb[4] }
        if wa[1] == "rule" { return false }
        return a < b
    }
    // Stable, as Go's sort.SliceStable.
    var out: [String] = []
    for l in lines {
        var k = out.count
        while k > 0 && less(l, out[k - 1]) { k -= 1 }
        out.insert(l, at: k)
    }
    return out
}
