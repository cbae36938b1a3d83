import Foundation
import KubeAPI
import NetnsKit
import ProxyIPTables
import Testing
import ProxySeam
import ProxyRuntime
import HostOS
import IPTablesKit

/// The real iptables, remembering the last restore input so tests can check what a sync wrote.
final class RecordingIPTables: IPTablesInterface, @unchecked Sendable {
    let real: SystemIPTables
    private let lock = NSLock()
    private var _last = ""
    init(_ real: SystemIPTables) { self.real = real }
    var lastRestoreInput: String { lock.withLock { _last } }
    func restore(_ input: String) throws {
        lock.withLock { _last = input }
        try real.restore(input)
    }
    func save(tables: [String]) throws -> String { try real.save(tables: tables) }
    func chainExists(table: String, chain: String) -> Bool { real.chainExists(table: table, chain: chain) }
}

/// A node namespace running the iptables mode in-process (commands run inside the
/// node's netns), two backend pods with TCP and UDP servers, and a client outside.
final class IPTablesLab: ModeLab, @unchecked Sendable {
    let lab: Lab
    let proxier: IPTablesProxier
    let ipt: RecordingIPTables
    var tracker: ChangeTracker

    init(options: IPTablesOptions? = nil) throws {
        lab = try Lab()
        try lab.addServingPods(tcpPort: 8080, udpPort: 5353)
        try lab.routeFromClient("10.96.0.0/12")
        ipt = RecordingIPTables(SystemIPTables(runner: CommandRunner(netns: lab.node)))
        var o = options ?? IPTablesOptions()
        if options == nil { o.localDetector = .cidrs([CIDR("10.244.0.0/16")!]) }
        proxier = IPTablesProxier(ipt: ipt, options: o, conntrack: NetlinkConntrack(namespace: .named(lab.node)))
        tracker = ChangeTracker(node: NodeInfo(name: "node-a"))
    }

    func sync() async throws -> SyncOutcome {
        let (snap, changed) = tracker.snapshot()
        return try await proxier.sync(SyncRequest(snapshot: snap, changedServices: changed))
    }

    func save(_ table: String = "nat") throws -> String {
        try ipt.save(tables: [table])
    }

    deinit { lab.destroy() }
}

func service(_ name: String, ip: String, type: String = "ClusterIP", ports: [ServicePort], affinity: Bool = false,
             ns: String = "default") -> Service {
    var s = Service(metadata: ObjectMeta(name: name, namespace: ns), spec: ServiceSpec(type: type, clusterIP: ip, ports: ports))
    if affinity {
        s.spec.sessionAffinity = "ClientIP"
        s.spec.sessionAffinityConfig = SessionAffinityConfig(clientIP: ClientIPConfig(timeoutSeconds: 300))
    }
    return s
}

func slice(_ svc: String, _ ips: [String], ports: [EndpointPort], ns: String = "default", name: String? = nil) -> EndpointSlice {
    EndpointSlice(metadata: ObjectMeta(name: name ?? "\(svc)-1", namespace: ns, labels: [EndpointSlice.serviceNameLabel: svc]),
                  endpoints: ips.map { Endpoint(addresses: [$0], conditions: EndpointConditions(ready: true), nodeName: "node-a") },
                  ports: ports)
}

let webPorts = [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30080),
                ServicePort(name: "dns", protocol: "UDP", port: 53, targetPort: .int(5353), nodePort: 30053)]
let webSlicePorts = [EndpointPort(name: "http", protocol: "TCP", port: 8080), EndpointPort(name: "dns", protocol: "UDP", port: 5353)]

@Suite("iptables mode in network namespaces", .enabled(if: isRoot, "needs root for network namespaces"))
struct IPTablesLabTests {
    @Test func clusterIPAndNodePortReachBothBackends() async throws {
        let t = try IPTablesLab()
        #expect(try await Scenarios.web(t).full)
        Scenarios.clusterIPReachesBothPods(t)
        // NodePort on the node's address, from the client.
        let np = t.lab.tcp(t.lab.nodeClientIP, 30080)
        #expect(np == "a" || np == "b")
        // From the node itself (OUTPUT path).
        let fromNode = t.lab.tcp("10.96.0.10", 80, from: t.lab.node)
        #expect(fromNode == "a" || fromNode == "b")
    }

    /// A UDP client that keeps its source port stays on its conntrack entry; when its endpoint
    /// goes, the proxy deletes that entry (over nfnetlink) so the next datagram reaches the new one.
    @Test func removedUDPEndpointsFlowsAreDeleted() async throws {
        let t = try IPTablesLab()
        t.tracker.update(service: service("dns", ip: "10.96.0.53", ports: [ServicePort(name: "dns", protocol: "UDP", port: 53, targetPort: .int(5353))]))
        t.tracker.update(slice: slice("dns", ["10.244.1.2"], ports: [EndpointPort(name: "dns", protocol: "UDP", port: 5353)]))
        _ = try await t.sync()
        func ask() -> String? {
            let r = try? Sh.run(["ip", "netns", "exec", t.lab.client, "socat", "-T1", "-", "UDP:10.96.0.53:53,sourceport=40053,reuseaddr"],
                                input: "ping\n", timeout: 4)
            return r.map { $0.out.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        #expect(ask() == "a")
        t.tracker.update(slice: slice("dns", ["10.244.1.3"], ports: [EndpointPort(name: "dns", protocol: "UDP", port: 5353)]))
        _ = try await t.sync()
        #expect(ask() == "b", "the flow pinned to the removed endpoint should have been deleted")
    }

    @Test func affinityPinsClientToOneBackend() async throws {
        try await Scenarios.affinityPinsClient(try IPTablesLab())
    }

    @Test func serviceWithoutEndpointsIsRefused() async throws {
        let t = try IPTablesLab()
        t.tracker.update(service: service("empty", ip: "10.96.0.40", ports: [ServicePort(port: 9000)]))
        _ = try await t.sync()
        // From the node itself the REJECT arrives as "connection refused".
        let r = try Sh.run(["ip", "netns", "exec", t.lab.node, "socat", "-T2", "-", "TCP:10.96.0.40:9000,connect-timeout=2"], input: "")
        #expect(r.status != 0)
        #expect(r.err.contains("refused"), "expected a REJECT (connection refused), got: \(r.err)")
        // From the client it fails too, and the REJECT rule is what stopped it.
        #expect(t.lab.tcp("10.96.0.40", 9000) == nil)
        let counters = try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-w", "-t", "filter", "-L", "KUBE-SERVICES", "-v", "-n", "-x"])
        let rejectLine = counters.split(separator: "\n").first { $0.contains("REJECT") && $0.contains("10.96.0.40") }
        let packets = rejectLine.flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
        #expect(packets >= 2, "REJECT rule should have matched node and client packets: \(counters)")
        let filter = try t.save("filter")
        #expect(filter.contains("default/empty has no endpoints"))
    }

    @Test func endpointChangeArrivesByPartialSyncWithoutTouchingKubeServices() async throws {
        let t = try IPTablesLab()
        t.tracker.update(service: service("web", ip: "10.96.0.10", type: "NodePort", ports: webPorts))
        t.tracker.update(service: service("other", ip: "10.96.0.11", ports: [ServicePort(port: 81, targetPort: .int(8080))]))
        t.tracker.update(slice: slice("web", ["10.244.1.2", "10.244.1.3"], ports: webSlicePorts))
        t.tracker.update(slice: slice("other", ["10.244.1.2"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        _ = try await t.sync()
        let before = try t.save()
        let servicesBefore = before.split(separator: "\n").filter { $0.hasPrefix("-A KUBE-SERVICES") }
        // Pod b goes away.
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        let out = try await t.sync()
        #expect(!out.full, "an endpoint change should be a partial sync")
        let after = try t.save()
        let servicesAfter = after.split(separator: "\n").filter { $0.hasPrefix("-A KUBE-SERVICES") }
        #expect(servicesBefore == servicesAfter, "KUBE-SERVICES must be left alone")
        #expect(!after.contains("10.244.1.3:8080"), "the removed endpoint's DNAT is gone")
        for _ in 0..<8 { #expect(t.lab.tcp("10.96.0.10", 80) == "a") }
        #expect(t.lab.tcp("10.96.0.11", 81) == "a")
        // The partial sync input did not rewrite top-level chains.
        let last = t.ipt.lastRestoreInput
        #expect(!last.contains(":KUBE-SERVICES"))
        #expect(!last.contains("-A KUBE-SERVICES"))
    }

    @Test func cleanupRemovesOurChainsAndKeepsOthers() async throws {
        let t = try IPTablesLab()
        // Another tool's rules.
        try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", "nat", "-N", "OTHER-TOOL"])
        try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "OTHER-TOOL"])
        try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"])
        t.tracker.update(service: service("web", ip: "10.96.0.10", type: "NodePort", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        _ = try await t.sync()
        #expect(try t.save().contains("KUBE-SVC-"))
        // A second full sync adopts the jumps from iptables-save instead of adding them again.
        t.proxier.forceFullSync()
        #expect(try await t.sync().full)
        let filter = try t.save("filter")
        #expect(filter.components(separatedBy: "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS").count == 2)
        #expect(try t.save().components(separatedBy: "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES").count == 2)
        try await t.proxier.cleanup()
        let all = try t.ipt.save(tables: ["filter", "nat", "mangle"])
        let kube = all.split(separator: "\n").filter { $0.contains("KUBE-") && !$0.contains("KUBE-FIREWALL") }
        #expect(kube.isEmpty, "left behind: \(kube)")
        #expect(all.contains("OTHER-TOOL"))
        #expect(all.contains("--dport 22 -j ACCEPT"))
    }

    @Test func canaryLossForcesFullResync() async throws {
        let t = try IPTablesLab()
        t.tracker.update(service: service("web", ip: "10.96.0.10", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        _ = try await t.sync()
        #expect(await t.proxier.needsFullResync() == false)
        for table in ["nat", "filter", "mangle"] {
            try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", table, "-F"])
            try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", table, "-X"])
        }
        #expect(t.lab.tcp("10.96.0.10", 80) == nil)
        #expect(await t.proxier.needsFullResync() == true)
        let out = try await t.sync()
        #expect(out.full)
        #expect(t.lab.tcp("10.96.0.10", 80) == "a")
    }
}
