import Foundation
import KubeAPI
@testable import ProxyUserspace
import Testing
import ProxySeam
import IPTablesKit

final class FakeClock: @unchecked Sendable {
    var now: TimeInterval = 1000
}

func svcPort(_ name: String, port: String = "", proto: L4Protocol = .tcp) -> ServicePortName {
    ServicePortName(service: NamespacedName(namespace: "default", name: name), port: port, proto: proto)
}

func info(_ name: ServicePortName, ip: String, port: Int, nodePort: Int = 0, externalLocal: Bool = false,
          affinity: Int? = nil, lbIPs: [String] = [], ranges: [String] = []) -> ServicePortInfo {
    ServicePortInfo(name: name, clusterIP: IPAddress(ip)!, port: port, targetPort: nil, nodePort: nodePort,
                    externalIPs: [], loadBalancerVIPs: lbIPs.map { IPAddress($0)! },
                    loadBalancerSourceRanges: ranges.map { CIDR($0)! },
                    sessionAffinityClientIP: affinity != nil, stickyMaxAgeSeconds: affinity ?? 0,
                    externalPolicyLocal: externalLocal, internalPolicyLocal: false, healthCheckNodePort: 0,
                    trafficDistribution: nil)
}

/// A data plane of one loop listening on 127.0.0.1, for tests that open listeners without root.
func loopbackDataPlane() throws -> DataPlane {
    var opts = DataPlaneOptions()
    opts.loops = 1
    opts.listenAddress = HostAddress("127.0.0.1")!
    return try DataPlane(options: opts)
}

@Suite("userspace mode logic")
struct UserspaceTests {
    let a = SocketEndpoint("10.0.0.1", port: 80)!
    let b = SocketEndpoint("10.0.0.2", port: 80)!
    let c = SocketEndpoint("10.0.0.3", port: 80)!

    @Test func roundRobinSkipsExcludedAndWraps() {
        let bal = Balancer()
        bal.update(endpoints: [a, b, c], affinityTimeout: nil)
        #expect((0..<6).map { _ in bal.pick(client: .v4(1))! } == [a, b, c, a, b, c])
        #expect(bal.pick(client: .v4(1), excluding: [a, b]) == c)
        #expect(bal.pick(client: .v4(1), excluding: [a, b, c]) == nil)
        bal.update(endpoints: [], affinityTimeout: nil)
        #expect(bal.pick(client: .v4(1)) == nil)
    }

    @Test func affinityHoldsUntilTimeoutOrRemoval() {
        let clock = FakeClock()
        let bal = Balancer(clock: { clock.now })
        bal.update(endpoints: [a, b], affinityTimeout: 10)
        let first = bal.pick(client: .v4(7))!
        for _ in 0..<5 { #expect(bal.pick(client: .v4(7)) == first) }
        let other = bal.pick(client: .v4(8))!
        #expect(other != first, "a new client continues the round-robin")
        clock.now += 11
        bal.expireAffinity()
        #expect(bal.affinityCount == 0)
        // Removal of the pinned endpoint moves the client.
        let pinned = bal.pick(client: .v4(9))!
        bal.update(endpoints: [a, b].filter { $0 != pinned }, affinityTimeout: 10)
        #expect(bal.pick(client: .v4(9)) != pinned)
        // A failed dial drops the pin (client 9's new pin stays).
        _ = bal.pick(client: .v4(10))
        #expect(bal.affinityCount == 2)
        bal.dropAffinity(client: .v4(10))
        #expect(bal.affinityCount == 1)
    }

    @Test func versionChangesOnlyWithEndpoints() {
        let bal = Balancer()
        #expect(bal.update(endpoints: [a], affinityTimeout: nil))
        let v = bal.version
        #expect(!bal.update(endpoints: [a], affinityTimeout: nil))
        #expect(bal.update(endpoints: [a], affinityTimeout: 30))
        #expect(bal.version == v)
        bal.update(endpoints: [b], affinityTimeout: 30)
        #expect(bal.version == v + 1)
    }

    @Test func portRangesParseAsUpstream() throws {
        #expect(try UserspaceOptions.parsePortRange("") == nil)
        #expect(try UserspaceOptions.parsePortRange("0-0") == nil)
        #expect(try UserspaceOptions.parsePortRange("30000-30010") == 30000...30010)
        #expect(try UserspaceOptions.parsePortRange("30000+5") == 30000...30005)
        #expect(try UserspaceOptions.parsePortRange("31000") == 31000...31000)
        #expect(throws: UserspaceOptions.RangeError.self) { try UserspaceOptions.parsePortRange("9-1") }
        #expect(throws: UserspaceOptions.RangeError.self) { try UserspaceOptions.parsePortRange("70000") }
        #expect(throws: UserspaceOptions.RangeError.self) { try UserspaceOptions.parsePortRange("a-b") }
    }

    @Test func externalLocalPolicyGetsItsOwnListener() {
        let web = svcPort("web")
        var snap = ProxySnapshot(node: NodeInfo(name: "n1"))
        snap.servicePorts[web] = info(web, ip: "10.96.0.10", port: 80, nodePort: 30080, externalLocal: true)
        snap.endpoints[web] = [EndpointInfo(ip: "10.244.1.2", port: 8080, isLocal: true, nodeName: "n1"),
                               EndpointInfo(ip: "10.244.2.2", port: 8080, nodeName: "n2")]
        let plans = UserspacePlan.listeners(for: snap, options: UserspaceOptions())
        let internalKey = ListenerKey(name: web, external: false), externalKey = ListenerKey(name: web, external: true)
        #expect(plans[internalKey]?.endpoints.count == 2)
        #expect(plans[externalKey]?.endpoints == [SocketEndpoint("10.244.1.2", port: 8080)!])
        #expect(plans[internalKey]?.portals.map(\.kind) == [.clusterIP])
        #expect(plans[externalKey]?.portals.map(\.kind) == [.nodePort])
        // With Cluster policy one listener serves both.
        snap.servicePorts[web] = info(web, ip: "10.96.0.10", port: 80, nodePort: 30080)
        let one = UserspacePlan.listeners(for: snap, options: UserspaceOptions())
        #expect(one.count == 1)
        #expect(one[internalKey]?.portals.map(\.kind) == [.clusterIP, .nodePort])
    }

    @Test func portalRulesLoadIntoIPTablesAndHonourSourceRanges() throws {
        let web = svcPort("web", port: "http")
        var snap = ProxySnapshot(node: NodeInfo(name: "n1", ips: [IPAddress("192.168.1.5")!]))
        snap.servicePorts[web] = info(web, ip: "10.96.0.10", port: 80, nodePort: 30080, lbIPs: ["192.0.2.1"], ranges: ["203.0.113.0/24"])
        snap.endpoints[web] = [EndpointInfo(ip: "10.244.1.2", port: 8080)]
        let text = UserspaceRenderer(options: UserspaceOptions(portRange: 40000...40010)).render(snap)
        let fake = FakeIPTables()
        try fake.restore(text)
        let container = fake.tables["nat"]?[PortalChains.containerPortals] ?? []
        #expect(container.contains { $0.contains("-d 10.96.0.10/32") && $0.hasSuffix("-j REDIRECT --to-ports 40000") })
        #expect(container.contains { $0.contains("-s 203.0.113.0/24 -d 192.0.2.1/32") }, "LB traffic only from the allowed range")
        let host = fake.tables["nat"]?[PortalChains.hostPortals] ?? []
        #expect(host.contains { $0.hasSuffix("-j DNAT --to-destination 192.168.1.5:40000") }, "host portals DNAT to the node IP")
        #expect(fake.tables["filter"]?[PortalChains.nonLocalNodePorts]?.first?.contains("--dport 40000 -j ACCEPT") == true)
        #expect(fake.tables["nat"]?["PREROUTING"]?.first?.hasSuffix("-j KUBE-PORTALS-CONTAINER") == true)
        #expect(fake.tables["nat"]?["PREROUTING"]?.last?.hasSuffix("-j KUBE-NODEPORT-CONTAINER") == true)
    }

    @Test func failedRestoreClosesTheNewListeners() async throws {
        let fake = FakeIPTables()
        let dp = try loopbackDataPlane()
        defer { dp.shutdownNow() }
        let p = UserspaceProxier(dataPlane: dp, ipt: fake, options: UserspaceOptions())
        let web = svcPort("web")
        var snap = ProxySnapshot(node: NodeInfo(name: "n1"))
        snap.servicePorts[web] = info(web, ip: "10.96.0.10", port: 80)
        snap.endpoints[web] = [EndpointInfo(ip: "10.244.1.2", port: 8080)]
        fake.failNextRestore = true
        await #expect(throws: (any Error).self) { try await p.sync(SyncRequest(snapshot: snap, changedServices: nil)) }
        #expect(await p.ports.isEmpty)
        #expect(await dp.descriptorsInUse() == 0, "the listener opened for the failed sync is closed again")
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(await p.ports.count == 1)
        #expect(await dp.descriptorsInUse() == 1)
        // A removed service closes its listener once the rules no longer point at it.
        _ = try await p.sync(SyncRequest(snapshot: ProxySnapshot(node: NodeInfo(name: "n1")), changedServices: nil))
        #expect(await dp.descriptorsInUse() == 0)
        #expect(fake.tables["nat"]?[PortalChains.containerPortals]?.isEmpty == true)
    }

    /// A partial sync writes the portal lines of the changed service port alone, the same number
    /// of them at 10 or 100 Services (the whole chains had been rewritten: 1.2 s at 10,000 Services
    /// in netlab); a full sync rewrites the chains.
    @Test(arguments: [10, 100])
    func aChangedServiceWritesOnlyItsPortalLines(services: Int) async throws {
        let dp = try loopbackDataPlane()
        defer { dp.shutdownNow() }
        let fake = FakeIPTables()
        let p = UserspaceProxier(dataPlane: dp, ipt: fake, options: UserspaceOptions())
        var snap = ProxySnapshot(node: NodeInfo(name: "n1", ips: [IPAddress("192.168.1.5")!]))
        for i in 0..<services {
            let name = svcPort("fill-\(i)")
            snap.servicePorts[name] = info(name, ip: "10.96.1.\(i)", port: 80, nodePort: 30000 + i)
            snap.endpoints[name] = [EndpointInfo(ip: "10.244.1.2", port: 8080)]
        }
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(fake.restores.last?.contains(":\(PortalChains.containerPortals) - [0:0]") == true, "the first sync writes the chains whole")
        let web = svcPort("web")
        snap.servicePorts[web] = info(web, ip: "10.96.0.10", port: 80, nodePort: 31000)
        snap.endpoints[web] = [EndpointInfo(ip: "10.244.1.3", port: 8080)]
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: [web.service]))
        let added = try #require(fake.restores.last)
        let lines = added.split(separator: "\n").filter { $0.hasPrefix("-") }
        #expect(lines.count == 5, "a ClusterIP and a NodePort: two portals, two node-port rules, one non-local accept: \(added)")
        #expect(lines.allSatisfy { $0.hasPrefix("-A ") && $0.contains("default/web") }, "\(added)")
        #expect(!added.contains(":KUBE-"), "no chain is declared, so none is flushed")
        #expect(fake.tables["nat"]?[PortalChains.containerPortals]?.count == services + 1)
        // An endpoint change touches no rule; the removal deletes just the Service's lines.
        let before = fake.restores.count
        snap.endpoints[web] = [EndpointInfo(ip: "10.244.1.4", port: 8080)]
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: [web.service]))
        #expect(fake.restores.count == before)
        snap.servicePorts[web] = nil
        snap.endpoints[web] = nil
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: [web.service]))
        let removed = try #require(fake.restores.last).split(separator: "\n").filter { $0.hasPrefix("-") }
        #expect(removed.count == 5 && removed.allSatisfy { $0.hasPrefix("-D ") && $0.contains("default/web") })
        #expect(fake.tables["nat"]?[PortalChains.containerPortals]?.count == services)
        #expect(fake.tables.values.allSatisfy { $0.values.allSatisfy { !$0.contains { $0.contains("default/web") } } })
        // A full sync writes the chains whole again.
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(fake.restores.last?.contains(":\(PortalChains.hostPortals) - [0:0]") == true)
        #expect(fake.tables["nat"]?[PortalChains.hostPortals]?.count == services)
    }

    /// Partial syncs after random changes leave exactly the listeners and portal rules a full
    /// plan of the same state asks for (a wrong `-D` would fail in the fake as in the kernel).
    @Test(arguments: [1, 2, 3])
    func randomPartialSyncsAgreeWithAFullPlan(seed: UInt64) async throws {
        struct LCG: RandomNumberGenerator {
            var state: UInt64
            mutating func next() -> UInt64 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return state
            }
        }
        var rng = LCG(state: seed)
        let dp = try loopbackDataPlane()
        defer { dp.shutdownNow() }
        let fake = FakeIPTables()
        let options = UserspaceOptions()
        let p = UserspaceProxier(dataPlane: dp, ipt: fake, options: options)
        let node = NodeInfo(name: "node-a", ips: [IPAddress("192.168.1.5")!])
        var tracker = ChangeTracker(node: node)
        let ours = [PortalChains.containerPortals, PortalChains.hostPortals, PortalChains.containerNodePorts,
                    PortalChains.hostNodePorts, PortalChains.nonLocalNodePorts]
        for round in 0..<60 {
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let n = Int.random(in: 0..<8, using: &rng)
                let key = NamespacedName(namespace: "default", name: "s\(n)")
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<4:
                    var spec = ServiceSpec(type: Bool.random(using: &rng) ? "NodePort" : "ClusterIP",
                                           clusterIP: "10.96.0.\(Int.random(in: 1...12, using: &rng))",
                                           ports: [ServicePort(name: "p", protocol: Bool.random(using: &rng) ? "TCP" : "UDP",
                                                               port: 80 + Int.random(in: 0...1, using: &rng), targetPort: .int(8080))])
                    if spec.type == "NodePort" {
                        spec.ports?[0].nodePort = 30000 + n
                        if Bool.random(using: &rng) { spec.externalTrafficPolicy = "Local" }
                    }
                    if Int.random(in: 0..<4, using: &rng) == 0 { spec.externalIPs = ["192.0.2.\(n + 1)"] }
                    tracker.update(service: Service(metadata: ObjectMeta(name: key.name, namespace: key.namespace), spec: spec))
                case 4..<8:
                    let eps = (0..<Int.random(in: 0...3, using: &rng)).map { i in
                        Endpoint(addresses: ["10.244.\(i % 2 + 1).\(Int.random(in: 2...9, using: &rng))"],
                                 conditions: EndpointConditions(ready: true), nodeName: i % 2 == 0 ? "node-a" : "node-b")
                    }
                    tracker.update(slice: EndpointSlice(metadata: ObjectMeta(name: "\(key.name)-1", namespace: key.namespace,
                                                                             labels: [EndpointSlice.serviceNameLabel: key.name]),
                                                        endpoints: eps, ports: [EndpointPort(name: "p", protocol: "TCP", port: 8080),
                                                                                EndpointPort(name: "p", protocol: "UDP", port: 8080)]))
                case 8:
                    tracker.delete(service: key)
                default:
                    tracker.delete(slice: NamespacedName(namespace: key.namespace, name: "\(key.name)-1"))
                }
            }
            let (snap, changed) = tracker.snapshot()
            _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: changed))
            let plans = UserspacePlan.listeners(for: snap, options: options)
            let ports = await p.ports
            #expect(Set(ports.keys) == Set(plans.keys), "round \(round): the listeners are the plan's")
            let want = PortalChains.rules(Array(plans.values), ports: ports, hostIP: UserspacePlan.hostIP(snap, options: options),
                                          options: options)
            for chain in ours {
                let table = chain == PortalChains.nonLocalNodePorts ? "filter" : "nat"
                let have = (fake.tables[table]?[chain] ?? []).sorted()
                let expected = (want[chain] ?? []).map { String($0.dropFirst(4 + chain.count)) }.sorted()
                #expect(have == expected, "round \(round), \(chain)")
            }
        }
        #expect(fake.restores.filter { $0.contains(":KUBE-PORTALS-CONTAINER") }.count == 1, "only the first sync rewrote the chains")
    }

    @Test func aFullPortRangeSkipsOneListenerAndRetriesIt() async throws {
        let dp = try loopbackDataPlane()
        defer { dp.shutdownNow() }
        // One port in the range, found free by binding it first.
        var port = 0
        for p in 47000..<47100 {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var sa = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: in_port_t(UInt16(p).bigEndian),
                                 sin_addr: in_addr(s_addr: UInt32(0x7f00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            let ok = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
            close(s)
            if ok { port = p; break }
        }
        let fake = FakeIPTables()
        let p = UserspaceProxier(dataPlane: dp, ipt: fake, options: UserspaceOptions(portRange: port...port))
        let a = svcPort("a"), b = svcPort("b")
        var snap = ProxySnapshot(node: NodeInfo(name: "n1"))
        snap.servicePorts[a] = info(a, ip: "10.96.0.10", port: 80)
        snap.servicePorts[b] = info(b, ip: "10.96.0.11", port: 80)
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(await p.ports.keys.map(\.name) == [a], "the first service port takes the only port")
        #expect(fake.tables["nat"]?[PortalChains.containerPortals]?.count == 1, "the other has no portal yet")
        #expect(await p.needsFullResync(), "the skipped listener asks for a full sync")
        snap.servicePorts[a] = nil
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        _ = try await p.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(await p.ports == [ListenerKey(name: b, external: false): UInt16(port)])
        #expect(await p.needsFullResync() == false)
    }
}

/// `switchyard explain` in the userspace mode: the portal rules to a listener, then its round
/// robin, each endpoint dialled from the node.
@Suite struct UserspaceExplainTests {
    static func ruleset() -> String {
        let web = svcPort("web", port: "http"), empty = svcPort("empty", port: "http")
        var snap = ProxySnapshot(node: NodeInfo(name: "n1", ips: [IPAddress("192.168.1.5")!]))
        snap.servicePorts[web] = info(web, ip: "10.96.0.10", port: 80, nodePort: 30080, lbIPs: ["192.0.2.1"], ranges: ["203.0.113.0/24"])
        snap.endpoints[web] = [EndpointInfo(ip: "10.244.1.2", port: 8080), EndpointInfo(ip: "10.244.2.2", port: 8080)]
        snap.servicePorts[empty] = info(empty, ip: "10.96.0.20", port: 80)
        return UserspaceRenderer(options: UserspaceOptions(portRange: 40000...40010)).render(snap)
    }

    static func explain(_ src: String, _ dst: String, _ port: Int, fromNode: Bool = false) throws -> PacketPath {
        try UserspaceProxier.explain(ruleset(), ExplainQuery(source: src, destination: dst, port: port, fromNode: fromNode, localAddresses: ["192.168.1.5"]))
    }

    @Test func aListenerSharesConnectionsOutEvenly() throws {
        let p = try Self.explain("10.244.3.3", "10.96.0.10", 80)
        #expect(Set(p.outcomes.compactMap(\.endpoint)) == ["10.244.1.2:8080", "10.244.2.2:8080"], "\(p.text())")
        #expect(p.outcomes.allSatisfy { $0.probability == 0.5 && $0.masqueraded && $0.verdict == "accepted" })
        let chains = p.outcomes[0].hops.map(\.chain)
        #expect(chains.contains(PortalChains.containerPortals) && chains.last?.hasPrefix("listener :400") == true, "\(chains)")
        // The node's own packet goes through the host portals to the same listener.
        let own = try Self.explain("192.168.1.5", "10.96.0.10", 80, fromNode: true)
        #expect(own.outcomes.count == 2 && own.outcomes[0].hops.contains { $0.chain == PortalChains.hostPortals }, "\(own.text())")
        // A NodePort from outside.
        let np = try Self.explain("198.51.100.9", "192.168.1.5", 30080)
        #expect(np.outcomes.count == 2 && np.outcomes.allSatisfy { $0.verdict == "accepted" }, "\(np.text())")
    }

    @Test func noEndpointsResetAndSourceRangesHold() throws {
        let none = try Self.explain("10.244.3.3", "10.96.0.20", 80)
        #expect(none.outcomes.map(\.verdict) == ["rejected"] && none.outcomes[0].hops.last?.rule.contains("reset") == true, "\(none.text())")
        // The LB IP from inside its source range reaches the listener; from outside it, no portal takes it.
        #expect(try Self.explain("203.0.113.7", "192.0.2.1", 80).outcomes.count == 2)
        let outside = try Self.explain("198.51.100.9", "192.0.2.1", 80)
        #expect(outside.outcomes.allSatisfy { $0.endpoint == nil }, "\(outside.text())")
        // A ruleset without the listeners' comments cannot be explained in this mode.
        #expect(throws: ProxyConfigError.self) { try UserspaceProxier.explain("*nat\nCOMMIT\n", ExplainQuery(source: "10.0.0.1", destination: "10.96.0.10", port: 80)) }
    }
}

extension HostAddress {
    /// A client's IPv4 address by number, for the balancer's tests.
    static func v4(_ n: UInt32) -> HostAddress { HostAddress(value: UInt128(n), isIPv6: false) }
}
