import Foundation
import Netlink
import KubeAPI
@testable import ProxyIPTables
import Testing
import ProxySeam
import IPTablesKit

func svc(_ name: String, _ ip: String, ns: String = "default", type: String = "ClusterIP",
         ports: [ServicePort] = [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))]) -> Service {
    Service(metadata: ObjectMeta(name: name, namespace: ns), spec: ServiceSpec(type: type, clusterIP: ip, ports: ports))
}

func eps(_ service: String, _ ips: [String], ns: String = "default", port: Int = 8080, portName: String = "http",
         node: String = "node-a", name: String? = nil) -> EndpointSlice {
    EndpointSlice(metadata: ObjectMeta(name: name ?? "\(service)-x", namespace: ns, labels: [EndpointSlice.serviceNameLabel: service]),
                  endpoints: ips.map { Endpoint(addresses: [$0], nodeName: node) },
                  ports: [EndpointPort(name: portName, protocol: "TCP", port: port)])
}

/// A normalized view of a table: chain -> rules, with KUBE-SERVICES and the
/// other shared chains as sets (a partial sync inserts there, so order may differ).
func normalized(_ fake: FakeIPTables) -> [String: [String]] {
    var out: [String: [String]] = [:]
    for (t, chains) in fake.tables {
        for (c, rules) in chains {
            let shared = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"].contains(c)
            out["\(t)/\(c)"] = shared ? rules.sorted() : rules
        }
    }
    return out
}

@Suite struct ChainNameTests {
    @Test func hashesMatchUpstream() {
        // Values from upstream kube-proxy's iptables proxier tests.
        #expect("KUBE-SVC-" + ChainHash.servicePort("ns1/svc1:p80", proto: "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O")
        #expect("KUBE-SEP-" + ChainHash.endpoint("ns1/svc1:p80", proto: "tcp", endpoint: "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ")
    }

    @Test func probabilityFormat() {
        #expect(Generator.format10(1.0 / 2) == "0.5000000000")
        #expect(Generator.format10(1.0 / 3) == "0.3333333333")
        #expect(Generator.format10(1.0 / 7) == "0.1428571429")
        #expect(Generator.format10(1.0 / 2048) == "0.0004882812")
    }
}

@Suite struct GeneratorTests {
    func snapshot(_ services: [Service], _ slices: [EndpointSlice], node: String = "node-a") -> ProxySnapshot {
        var t = ChangeTracker(node: NodeInfo(name: node))
        for s in services { t.update(service: s) }
        for s in slices { t.update(slice: s) }
        return t.snapshot().0
    }

    @Test func clusterIPRulesInUpstreamOrder() {
        var o = IPTablesOptions()
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        let p = IPTablesProxier(ipt: FakeIPTables(), options: o)
        let text = p.render(snapshot([svc("web", "10.96.0.10")], [eps("web", ["10.244.1.3", "10.244.1.2"])]))
        let lines = text.split(separator: "\n").map(String.init)
        let svcChain = "KUBE-SVC-" + ChainHash.servicePort("default/web:http", proto: "tcp")
        let sepA = "KUBE-SEP-" + ChainHash.endpoint("default/web:http", proto: "tcp", endpoint: "10.244.1.2:8080")
        let sepB = "KUBE-SEP-" + ChainHash.endpoint("default/web:http", proto: "tcp", endpoint: "10.244.1.3:8080")
        let expected = [
            "-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j \(svcChain)",
            "-A \(svcChain) -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
            "-A \(svcChain) -m comment --comment \"default/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.5000000000 -j \(sepA)",
            "-A \(svcChain) -m comment --comment \"default/web:http -> 10.244.1.3:8080\" -j \(sepB)",
            "-A \(sepA) -m comment --comment default/web:http -s 10.244.1.2 -j KUBE-MARK-MASQ",
            "-A \(sepA) -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080",
        ]
        guard let start = lines.firstIndex(of: expected[0]) else {
            Issue.record("no cluster IP rule in:\n\(text)")
            return
        }
        #expect(Array(lines[start..<start + expected.count]) == expected)
        #expect(lines.contains("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"))
        let natServices = lines.filter { $0.hasPrefix("-A KUBE-SERVICES") && $0.contains("nodeports") }
        #expect(natServices.count == 1)
    }

    @Test func largeClusterDropsEndpointComments() {
        let many = (0..<1001).map { "10.1.\($0 / 250).\($0 % 250 + 1)" }
        let p = IPTablesProxier(ipt: FakeIPTables(), options: IPTablesOptions())
        let text = p.render(snapshot([svc("big", "10.96.0.5")], [eps("big", many)]))
        #expect(!text.contains("-> 10.1.0.1:8080"))
        #expect(text.contains("-m statistic --mode random --probability 0.0009990010"))
    }

    @Test func localPolicyWithoutLocalEndpointsDrops() {
        var s = svc("loc", "10.96.0.9", type: "NodePort",
                    ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30001)])
        s.spec.externalTrafficPolicy = "Local"
        s.spec.internalTrafficPolicy = "Local"
        let p = IPTablesProxier(ipt: FakeIPTables(), options: IPTablesOptions())
        let text = p.render(snapshot([s], [eps("loc", ["10.244.2.2"], node: "node-b")]))
        #expect(text.contains("-A KUBE-SERVICES -m comment --comment \"default/loc:http has no local endpoints\" -m tcp -p tcp -d 10.96.0.9 --dport 80 -j DROP"))
        #expect(text.contains("-A KUBE-EXTERNAL-SERVICES -m comment --comment \"default/loc:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30001 -j DROP"))
        // The EXT chain still short-circuits node-local traffic to the cluster chain.
        #expect(text.contains("route LOCAL traffic for default/loc:http external destinations"))
    }
}

@Suite struct PartialSyncTests {
    /// After any sequence of partial syncs, the tables equal a fresh full sync of the same state.
    @Test func partialSyncsConvergeToFullSync() async throws {
        let fake = FakeIPTables()
        let p = IPTablesProxier(ipt: fake, options: IPTablesOptions(), conntrack: FakeConntrack())
        var t = ChangeTracker(node: NodeInfo(name: "node-a"))
        for i in 0..<20 {
            t.update(service: svc("s\(i)", "10.96.1.\(i + 1)"))
            t.update(slice: eps("s\(i)", ["10.244.1.\(i + 2)", "10.244.2.\(i + 2)"]))
        }
        var (snap, changed) = t.snapshot()
        #expect(try await p.sync(SyncRequest(snapshot: snap, changedServices: changed)).full)
        // Endpoint change, service deletion, endpoints to none, a new service, a port change.
        t.update(slice: eps("s1", ["10.244.1.3"]))
        t.delete(service: NamespacedName(namespace: "default", name: "s2"))
        t.update(slice: eps("s3", []))
        t.update(service: svc("new", "10.96.2.1"))
        t.update(service: svc("s4", "10.96.1.5", ports: [ServicePort(name: "http", protocol: "TCP", port: 81, targetPort: .int(8080))]))
        (snap, changed) = t.snapshot()
        #expect(changed == Set(["s1", "s2", "s3", "new", "s4"].map { NamespacedName(namespace: "default", name: $0) }))
        let out = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
        #expect(!out.full)
        let fresh = FakeIPTables()
        let q = IPTablesProxier(ipt: fresh, options: IPTablesOptions())
        _ = try await q.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(normalized(fake) == normalized(fresh))
    }

    /// An endpoint change writes the same amount no matter how many services exist.
    @Test func endpointChangeCostIsFlat() async throws {
        var sizes: [Int] = []
        for n in [10, 1000] {
            let fake = FakeIPTables()
            let p = IPTablesProxier(ipt: fake, options: IPTablesOptions())
            var t = ChangeTracker(node: NodeInfo(name: "node-a"))
            for i in 0..<n {
                t.update(service: svc("s\(i)", "10.96.\(i / 250).\(i % 250 + 1)"))
                t.update(slice: eps("s\(i)", ["10.244.1.2", "10.244.1.3"]))
            }
            var (snap, changed) = t.snapshot()
            _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
            t.update(slice: eps("s0", ["10.244.1.2", "10.244.1.4"]))
            (snap, changed) = t.snapshot()
            _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
            let input = fake.restores.last!
            #expect(!input.contains("KUBE-SERVICES"))
            sizes.append(input.split(separator: "\n").count)
        }
        #expect(sizes[0] == sizes[1], "partial sync size must not grow with the number of services: \(sizes)")
    }

    @Test func failedRestoreKeepsRulesAndNextSyncIsFull() async throws {
        let fake = FakeIPTables()
        let p = IPTablesProxier(ipt: fake, options: IPTablesOptions())
        var t = ChangeTracker(node: NodeInfo(name: "node-a"))
        t.update(service: svc("web", "10.96.0.10"))
        t.update(slice: eps("web", ["10.244.1.2"]))
        var (snap, changed) = t.snapshot()
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
        let before = normalized(fake)
        t.update(slice: eps("web", ["10.244.1.9"]))
        (snap, changed) = t.snapshot()
        fake.failNextRestore = true
        await #expect(throws: (any Error).self) { try await p.sync(SyncRequest(snapshot: snap, changedServices: changed)) }
        #expect(normalized(fake) == before, "a failed restore leaves the previous rules")
        let out = try await p.sync(SyncRequest(snapshot: snap, changedServices: [])) 
        #expect(out.full, "after a failure the proxier must resync everything")
        #expect(fake.restores.last!.contains("10.244.1.9:8080"))
    }

    @Test func staleUDPFlowsAreCleared() async throws {
        let ct = FakeConntrack()
        let p = IPTablesProxier(ipt: FakeIPTables(), options: IPTablesOptions(), conntrack: ct)
        var t = ChangeTracker(node: NodeInfo(name: "node-a"))
        t.update(service: svc("dns", "10.96.0.53", ports: [ServicePort(name: "dns", protocol: "UDP", port: 53)]))
        var sl = eps("dns", ["10.244.1.2", "10.244.1.3"], port: 53, portName: "dns")
        sl.ports = [EndpointPort(name: "dns", protocol: "UDP", port: 53)]
        t.update(slice: sl)
        var (snap, changed) = t.snapshot()
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
        sl.endpoints = [Endpoint(addresses: ["10.244.1.2"], nodeName: "node-a")]
        t.update(slice: sl)
        (snap, changed) = t.snapshot()
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
        #expect(ct.deleted == ["udp 10.96.0.53:53 -> 10.244.1.3"])
    }
}

/// `--random-fully` only where iptables has it (1.6.2 on), as upstream's `HasRandomFully` decides.
@Suite struct RandomFullyTests {
    @Test func decidedFromTheVersion() {
        #expect(SystemIPTables.randomFully(versionOutput: "iptables v1.8.9 (nf_tables)\n"))
        #expect(SystemIPTables.randomFully(versionOutput: "iptables v1.6.2"))
        #expect(!SystemIPTables.randomFully(versionOutput: "iptables v1.6.1"))
        #expect(!SystemIPTables.randomFully(versionOutput: "iptables v1.4.21"))
        #expect(!SystemIPTables.randomFully(versionOutput: "garbage"))
        #expect(SystemIPTables().hasRandomFully(), "this machine's iptables (1.8.9) has it")
    }

    @Test func theRuleFollowsTheOption() {
        var o = IPTablesOptions()
        let with = Generator(opts: o, largeCluster: false).postroutingRules()
        o.randomFully = false
        let without = Generator(opts: o, largeCluster: false).postroutingRules()
        #expect(with.contains("-j MASQUERADE --random-fully") && !without.contains("--random-fully"), "\(with)\n\(without)")
    }
}

/// With upstream's nfacct counters present, the rules count into them exactly as upstream's
/// `TestOverallIPTablesRules` expects (its fake has both counters).
@Suite struct NFAcctRulesTests {
    @Test func rulesCountIntoTheCountersAsUpstreamsDo() throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/upstream/iptables-v1.33-TestOverallIPTablesRules.txt")
        let upstream = try String(contentsOf: fixture, encoding: .utf8).split(separator: "\n").map(String.init)
        let wanted = upstream.filter { $0.contains("-m nfacct") }
        #expect(wanted.count == 4, "the fixture's nfacct rules: \(wanted)")
        var o = IPTablesOptions()
        o.localDetector = .cidrs([CIDR("10.0.0.0/8")!])
        o.nfacctCounters = Set(NFAcctCounter.all)
        let ports: [(String, String, Int)] = [("ns2", "svc2", 3001), ("ns3", "svc3", 3003), ("ns5", "svc5", 3002)]
        var lines = Generator(opts: o, largeCluster: false).forwardRules().split(separator: "\n").map(String.init)
        for (ns, name, np) in ports {
            var s = svc(name, "172.30.0.4\(np % 10)", ns: ns, type: "NodePort")
            s.spec.ports = [ServicePort(name: "p80", protocol: "TCP", port: 80, targetPort: .int(80), nodePort: np)]
            let info = ChangeTracker.servicePorts(of: s, family: .ipv4)[0]
            let ep = EndpointInfo(ip: "10.180.0.1", port: 80)
            var gen = Generator(opts: o, largeCluster: false)
            let r = gen.rules(for: info, endpoints: [ep], node: NodeInfo(name: "test-node"))
            lines += r.natTop.filter { $0.hasPrefix("-A KUBE-NODEPORTS") }
        }
        for w in wanted {
            // The chain hashes are upstream's; compare up to the jump target's name.
            let stem = w.components(separatedBy: " -j ")[0]
            #expect(lines.contains { $0.hasPrefix(stem + " -j ") }, "missing: \(w)\nhave: \(lines.joined(separator: "\n"))")
        }
        // Without the counters, the plain rules alone, as before.
        o.nfacctCounters = []
        #expect(!Generator(opts: o, largeCluster: false).forwardRules().contains("nfacct"))
    }

    /// The netlink messages `nfacct get NAME` and `nfacct add NAME` send.
    @Test func messagesAreNfacctsOwn() {
        let get = NFAcct.getMessage("ct_state_invalid_dropped_pkts").bytes
        // nlmsghdr: type NFNL_SUBSYS_ACCT << 8 | NFNL_MSG_ACCT_GET, then nfgenmsg (AF_UNSPEC, v0), then NFACCT_NAME.
        #expect(get[4] == 1 && get[5] == 7)
        #expect(Array(get[16..<20]) == [0, 0, 0, 0])
        #expect(get[22] == 1 && String(decoding: get[24..<(24 + 29)], as: UTF8.self) == "ct_state_invalid_dropped_pkts")
        let add = NFAcct.newMessage("x").bytes
        #expect(add[4] == 0 && add[5] == 7)
    }
}

/// The whole ruleset on upstream's own test services equals upstream's `TestOverallIPTablesRules`
/// expected output (about v1.33, `Tests/Fixtures/upstream/`), table by table and chain by chain,
/// with the options of upstream's fake proxier (both nfacct counters, no `--random-fully`). What
/// our render adds and upstream writes with separate commands (the jumps from the built-in chains,
/// the canary chains) is left out of the comparison.
@Suite struct UpstreamIPTablesConformanceTests {
    typealias Tables = [String: [String: [String]]]

    /// Rules per table and chain (declared chains with no rules included), upstream's way: the
    /// rules of KUBE-SERVICES and KUBE-NODEPORTS sorted (its test orders them by service name).
    static func parse(_ text: String) -> Tables {
        var out: Tables = [:]
        var table = ""
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("*") { table = String(line.dropFirst()); continue }
            if line.hasPrefix(":") {
                let chain = String(line.dropFirst().prefix { $0 != " " })
                guard !chain.hasPrefix("KUBE-PROXY-CANARY") else { continue }
                out[table, default: [:]][chain, default: []] += []
            } else if line.hasPrefix("-A ") {
                let chain = String(line.dropFirst(3).prefix { $0 != " " })
                out[table, default: [:]][chain, default: []].append(line)
            }
        }
        out["mangle"] = nil
        for t in out.keys {
            for c in ["KUBE-SERVICES", "KUBE-NODEPORTS"] { out[t]?[c]?.sort() }
            out[t] = out[t]?.filter { !$0.value.isEmpty || $0.key.hasPrefix("KUBE-") }
        }
        return out
    }

    @Test func renderEqualsUpstreamsExpectedRules() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/upstream")
        let set = try ManifestLoader.load(paths: [dir.appendingPathComponent("iptables-TestOverallIPTablesRules-input.yaml").path])
        #expect(set.issues.isEmpty, "\(set.issues)")
        var t = ChangeTracker(node: NodeInfo(name: "test-node", ips: [IPAddress("192.168.0.2")!]))
        for c in set.serviceCIDRs { t.update(serviceCIDR: c) }
        for s in set.services { t.update(service: s) }
        for s in set.endpointSlices { t.update(slice: s) }
        var o = IPTablesOptions()
        o.localDetector = .cidrs([CIDR("10.0.0.0/8")!])
        o.nfacctCounters = Set(NFAcctCounter.all)
        o.randomFully = false
        let got = Self.parse(IPTablesProxier(ipt: FakeIPTables(), options: o).render(t.snapshot().0))
        let want = Self.parse(try String(contentsOf: dir.appendingPathComponent("iptables-v1.33-TestOverallIPTablesRules.txt"), encoding: .utf8))
        #expect(Set(got.keys) == Set(want.keys))
        for (table, chains) in want {
            #expect(Set(got[table]?.keys ?? [:].keys) == Set(chains.keys), "\(table): chains \(Set(got[table]?.keys ?? [:].keys).symmetricDifference(chains.keys))")
            for (chain, rules) in chains {
                let mine = got[table]?[chain] ?? []
                #expect(mine == rules, "\(table) \(chain):\nupstream:\n\(rules.joined(separator: "\n"))\nours:\n\(mine.joined(separator: "\n"))")
            }
        }
    }
}
