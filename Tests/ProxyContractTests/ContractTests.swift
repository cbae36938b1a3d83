import Foundation
import IPTablesKit
import KubeAPI
import Netlink
@testable import ProxyIPTables
@testable import ProxyIPVS
@testable import ProxyNFTables
import ProxySeam
@testable import ProxyUserspace
import Testing

/// One backend on fakes of every kernel facility it uses: what the fakes hold (canonical text),
/// how many operations they have taken, and a way to make the next apply fail.
struct Subject: @unchecked Sendable {
    let backend: any ProxyBackend
    /// The kernel state, in a form two backends that hold the same rules print the same.
    let dump: @Sendable () async -> String
    /// Operations the fakes have taken since the start (restore lines, netlink messages, calls).
    let operations: @Sendable () -> Int
    /// Makes the next apply fail.
    let failNext: @Sendable () -> Void
    /// Whether a failed apply leaves the kernel exactly as it was (iptables-restore and nf_tables
    /// transactions are atomic; IPVS is programmed call by call, as upstream's is).
    let atomic: Bool
    let close: @Sendable () -> Void
}

/// The four backends, each on its fakes.
enum Backend: String, CaseIterable, CustomStringConvertible {
    case iptables, nftables, ipvs, userspace
    var description: String { rawValue }

    func make() throws -> Subject {
        switch self {
        case .iptables:
            let ipt = FakeIPTables()
            return Subject(backend: IPTablesProxier(ipt: ipt, options: IPTablesOptions(), conntrack: FakeConntrack()),
                           dump: { Self.iptablesDump(ipt) }, operations: { Self.lines(ipt.restores) },
                           failNext: { ipt.failNextRestore = true }, atomic: true, close: {})
        case .nftables:
            let nft = FakeNFTables()
            return Subject(backend: NFTablesProxier(fake: nft, options: NFTablesOptions(), conntrack: FakeConntrack()),
                           dump: { nft.canonical() }, operations: { nft.transactions.reduce(0) { $0 + $1.count } },
                           failNext: { nft.failNext = EINVAL }, atomic: true, close: {})
        case .ipvs:
            let ipvs = FakeIPVS(), links = FakeLinks(), ipt = FakeIPTables(), ipset = FakeIPSet()
            let p = IPVSProxier(ipvs: ipvs, links: links, ipt: ipt, ipset: ipset, options: IPVSOptions())
            return Subject(backend: p,
                           dump: {
                               let sets = ((try? ipset.save()) ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.sorted().joined(separator: " "))\n" }.joined()
                               return ipvs.dump() + links.dump() + sets + Self.iptablesDump(ipt)
                           },
                           operations: { ipvs.operations + links.operations + Self.lines(ipset.restores) + Self.lines(ipt.restores) },
                           failNext: { ipvs.failNext = EINVAL }, atomic: false, close: {})
        case .userspace:
            var opts = DataPlaneOptions()
            opts.loops = 1
            opts.listenAddress = HostAddress("127.0.0.1")!
            let dp = try DataPlane(options: opts)
            let ipt = FakeIPTables()
            let p = UserspaceProxier(dataPlane: dp, ipt: ipt, options: UserspaceOptions(), conntrack: FakeConntrack())
            return Subject(backend: p,
                           dump: {
                               // The listeners' ports are the kernel's choice: each is written as the service port it serves.
                               // (Ephemeral ports, 32768 and up: no Service, node or target port of the World is one.) A TCP
                               // and a UDP listener may get the same number, so a rule's port is named by its protocol's.
                               let ports = await p.listenerPorts()
                               let text = Self.iptablesDump(ipt).split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                                   var l = String(line)
                                   for (key, port) in ports where l.contains("-p \(key.name.proto.rawValue.lowercased()) ") {
                                       l = l.replacing(try! Regex("\\b\(port)\\b"), with: "<\(key)>")
                                   }
                                   return l
                               }.joined(separator: "\n")
                               return text + ports.keys.map(\.description).sorted().joined(separator: "\n")
                           },
                           operations: { Self.lines(ipt.restores) + dp.opened },
                           failNext: { ipt.failNextRestore = true }, atomic: false, close: { dp.shutdownNow() })
        }
    }

    static func lines(_ inputs: [String]) -> Int { inputs.reduce(0) { $0 + $1.split(separator: "\n").count } }

    /// The tables with each chain's rules in order, except the shared dispatch chains, whose rules
    /// are independent of one another and which a partial sync appends to: those sorted.
    static func iptablesDump(_ ipt: FakeIPTables) -> String {
        var out = ""
        for (t, chains) in ipt.tables.sorted(by: { $0.key < $1.key }) {
            for (c, rules) in chains.sorted(by: { $0.key < $1.key }) {
                let shared = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL",
                              "KUBE-PORTALS-CONTAINER", "KUBE-PORTALS-HOST", "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST", "KUBE-NODEPORT-NON-LOCAL"].contains(c)
                out += "\(t) \(c):\n" + (shared ? rules.sorted() : rules).map { "  \($0)\n" }.joined()
            }
        }
        return out
    }
}

/// A cluster that changes: Services of every kind and their endpoints, changed at random.
struct World {
    var tracker = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.1.5")!]))
    var rng: LCG

    struct LCG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state
        }
    }

    init(seed: UInt64) { rng = LCG(state: seed) }

    mutating func service(_ n: Int, port: Int? = nil) {
        var spec = ServiceSpec(type: n % 3 == 0 ? "NodePort" : "ClusterIP", clusterIP: "10.96.\(n / 250).\(n % 250 + 1)",
                               ports: [ServicePort(name: "p", protocol: Self.proto(n), port: port ?? 80 + Int.random(in: 0...1, using: &rng), targetPort: .int(8080))])
        if spec.type == "NodePort" {
            spec.ports?[0].nodePort = 30000 + n
            if port == nil && Bool.random(using: &rng) { spec.externalTrafficPolicy = "Local" }
        }
        tracker.update(service: Service(metadata: ObjectMeta(name: "s\(n)", namespace: "default"), spec: spec))
    }

    mutating func endpoints(_ n: Int, count: Int? = nil) {
        let addresses = (0..<(count ?? Int.random(in: 0...3, using: &rng))).map { i in "10.244.\(i % 2 + 1).\(Int.random(in: 2...200, using: &rng))" }
        endpoints(n, addresses: addresses)
    }

    /// Endpoints on node-a (10.244.1.x) and node-b (10.244.2.x), ready.
    mutating func endpoints(_ n: Int, addresses: [String]) {
        let eps = addresses.map { a in
            Endpoint(addresses: [a], conditions: EndpointConditions(ready: true), nodeName: a.hasPrefix("10.244.1.") ? "node-a" : "node-b")
        }
        tracker.update(slice: EndpointSlice(metadata: ObjectMeta(name: "s\(n)-1", namespace: "default", labels: [EndpointSlice.serviceNameLabel: "s\(n)"]),
                                            addressType: "IPv4", endpoints: Self.unique(eps), ports: [EndpointPort(name: "p", protocol: Self.proto(n), port: 8080)]))
    }

    static func proto(_ n: Int) -> String { n % 4 == 1 ? "UDP" : "TCP" }

    static func unique(_ eps: [Endpoint]) -> [Endpoint] {
        var seen = Set<String>()
        return eps.filter { seen.insert($0.addresses[0]).inserted }
    }

    /// A few random changes among `services` Services.
    mutating func change(among services: Int) {
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let n = Int.random(in: 0..<services, using: &rng)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<3: service(n)
            case 3..<9: endpoints(n)
            default: tracker.delete(service: NamespacedName(namespace: "default", name: "s\(n)"))
            }
        }
    }

    mutating func request() -> SyncRequest {
        let (snap, changed) = tracker.snapshot()
        return SyncRequest(snapshot: snap, changedServices: changed)
    }
}

/// The contract every backend keeps, checked on each with its fakes (no root, no kernel).
@Suite("the backend contract, every mode on its fakes")
struct ContractTests {
    /// After any sequence of partial syncs, the fakes hold what one full sync of the final
    /// state writes into fresh fakes.
    @Test(arguments: Backend.allCases)
    func partialSyncsEqualAFullSync(backend: Backend) async throws {
        let a = try backend.make()
        defer { a.close() }
        var world = World(seed: 7)
        for n in 0..<12 { world.service(n); world.endpoints(n) }
        for _ in 0..<25 {
            _ = try await a.backend.sync(world.request())
            world.change(among: 14)
        }
        let last = world.request()
        _ = try await a.backend.sync(last)
        let b = try backend.make()
        defer { b.close() }
        _ = try await b.backend.sync(SyncRequest(snapshot: last.snapshot, changedServices: nil))
        let (da, db) = (await a.dump(), await b.dump())
        #expect(da == db, "\(backend): partial syncs and a full sync differ:\n\(Self.diff(da, db))")
    }

    /// A failed apply leaves the kernel as it was (where the kernel's apply is atomic), is
    /// reported, and the next sync (even one asked to be partial) brings the kernel to the state.
    @Test(arguments: Backend.allCases)
    func aFailedApplyKeepsTheStateAndIsRetried(backend: Backend) async throws {
        let s = try backend.make()
        defer { s.close() }
        var world = World(seed: 11)
        for n in 0..<8 { world.service(n); world.endpoints(n, count: 2) }
        _ = try await s.backend.sync(world.request())
        let before = await s.dump()
        world.endpoints(3, count: 3)
        world.service(9)
        world.endpoints(9, count: 2)
        let failing = world.request()
        s.failNext()
        await #expect(throws: (any Error).self) { _ = try await s.backend.sync(failing) }
        if s.atomic { #expect(await s.dump() == before, "\(backend): a failed apply changed the kernel") }
        world.endpoints(1, count: 1)
        let next = world.request()
        #expect(next.changedServices != nil)
        _ = try await s.backend.sync(next)
        let fresh = try backend.make()
        defer { fresh.close() }
        _ = try await fresh.backend.sync(SyncRequest(snapshot: next.snapshot, changedServices: nil))
        let (got, want) = (await s.dump(), await fresh.dump())
        #expect(got == want, "\(backend): the sync after a failure did not reach the state:\n\(Self.diff(got, want))")
    }

    /// What a change (an endpoint more, a new Service) costs, in the fakes' operations, is the
    /// same with 20 Services as with 400.
    @Test(arguments: Backend.allCases)
    func aChangeCostsTheSameAtAnySize(backend: Backend) async throws {
        var costs: [Int] = []
        for services in [20, 400] {
            let s = try backend.make()
            defer { s.close() }
            var world = World(seed: 3)
            for n in 0..<services { world.service(n); world.endpoints(n, count: 2) }
            _ = try await s.backend.sync(world.request())
            world.endpoints(1, addresses: ["10.244.1.210", "10.244.2.210"])
            _ = try await s.backend.sync(world.request())   // settles anything a first partial sync does once
            let before = s.operations()
            // The change: one endpoint more for a Service, and a new Service with two endpoints (at
            // addresses no random endpoint has: entries shared with another Service cost nothing).
            world.endpoints(1, addresses: ["10.244.1.210", "10.244.2.210", "10.244.1.211"])
            world.service(services, port: 80)
            world.endpoints(services, addresses: ["10.244.1.212", "10.244.2.212"])
            _ = try await s.backend.sync(world.request())
            costs.append(s.operations() - before)
        }
        #expect(costs[0] > 0, "\(backend): the change cost nothing: \(costs)")
        #expect(costs[0] == costs[1], "\(backend): the change cost \(costs[0]) operations at 20 Services, \(costs[1]) at 400")
    }

    static func diff(_ a: String, _ b: String) -> String {
        let la = a.split(separator: "\n"), lb = b.split(separator: "\n")
        let sa = Set(la), sb = Set(lb)
        return (la.filter { !sb.contains($0) }.prefix(15).map { "- \($0)" } + lb.filter { !sa.contains($0) }.prefix(15).map { "+ \($0)" }).joined(separator: "\n")
    }
}
