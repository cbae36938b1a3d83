import Foundation
import KubeAPI
import NetnsKit
@testable import ProxyNFTables
import Testing
import ProxySeam
import ProxyRuntime

/// A node namespace running the nftables mode in-process (its netlink socket opened
/// inside the node's netns), two backend pods with TCP and UDP servers, a client.
final class NFTablesLab: ModeLab, @unchecked Sendable {
    let lab: Lab
    let proxier: NFTablesProxier
    let nft: SystemNFTables
    var tracker: ChangeTracker

    init(options: NFTablesOptions? = nil, layout: NFTablesLayout = .upstream) throws {
        lab = try Lab()
        try lab.addServingPods(tcpPort: 8080, udpPort: 5353)
        try lab.routeFromClient("10.96.0.0/12")
        nft = try SystemNFTables(netns: "/var/run/netns/\(lab.node)")
        var o = options ?? NFTablesOptions()
        if options == nil { o.localDetector = .cidrs([CIDR("10.244.0.0/16")!]) }
        o.layout = layout
        proxier = NFTablesProxier(nft: nft, options: o, conntrack: NetlinkConntrack(namespace: .named(lab.node)))
        tracker = ChangeTracker(node: NodeInfo(name: "node-a"), serviceCIDRs: [CIDR("10.96.0.0/12")!])
    }

    func sync() async throws -> SyncOutcome {
        let (snap, changed) = tracker.snapshot()
        return try await proxier.sync(SyncRequest(snapshot: snap, changedServices: changed))
    }

    func list() throws -> String {
        try Sh.must(["ip", "netns", "exec", lab.node, "nft", "list", "table", "ip", "kube-proxy"])
    }

    deinit { lab.destroy() }
}

@Suite("nftables mode in network namespaces", .enabled(if: isRoot, "needs root for network namespaces"))
struct NFTablesLabTests {
    @Test(arguments: NFTablesLayout.allCases)
    func clusterIPAndNodePortReachBothBackends(layout: NFTablesLayout) async throws {
        let t = try NFTablesLab(layout: layout)
        #expect(try await Scenarios.web(t).full)
        Scenarios.clusterIPReachesBothPods(t)
        let np = t.lab.tcp(t.lab.nodeClientIP, 30080)
        #expect(np == "a" || np == "b", "NodePort from the client")
        let fromNode = t.lab.tcp("10.96.0.10", 80, from: t.lab.node)
        #expect(fromNode == "a" || fromNode == "b", "ClusterIP from the node itself")
    }

    @Test(arguments: NFTablesLayout.allCases)
    func liveTableListsLikeTheRenderedScript(layout: NFTablesLayout) async throws {
        let t = try NFTablesLab(layout: layout)
        t.tracker.update(service: service("web", ip: "10.96.0.10", type: "NodePort", ports: webPorts))
        t.tracker.update(service: service("sticky", ip: "10.96.0.20", ports: [ServicePort(port: 80, targetPort: .int(8080))], affinity: true))
        var lb = service("edge", ip: "10.96.0.30", type: "LoadBalancer",
                         ports: [ServicePort(name: "https", protocol: "TCP", port: 443, targetPort: .int(8080), nodePort: 30443)])
        lb.spec.externalTrafficPolicy = "Local"
        lb.spec.loadBalancerSourceRanges = ["203.0.113.0/24", "198.51.100.0/25"]
        lb.spec.externalIPs = ["192.0.2.50"]
        lb.status = ServiceStatus(loadBalancer: LoadBalancerStatus(ingress: [LoadBalancerIngress(ip: "192.0.2.10")]))
        t.tracker.update(service: lb)
        t.tracker.update(service: service("empty", ip: "10.96.0.40", ports: [ServicePort(port: 9000)]))
        t.tracker.update(slice: slice("web", ["10.244.1.2", "10.244.1.3"], ports: webSlicePorts))
        t.tracker.update(slice: slice("sticky", ["10.244.1.2", "10.244.1.3"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        t.tracker.update(slice: slice("edge", ["10.244.1.3"], ports: [EndpointPort(name: "https", protocol: "TCP", port: 8080)]))
        _ = try await t.sync()
        let live = try t.list()
        let (snap, _) = t.tracker.snapshot()
        let script = t.proxier.render(snap)
        // Load the rendered script into a fresh namespace with nft itself.
        let other = "syr\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", other])
        defer { _ = try? Sh.run(["ip", "netns", "del", other]) }
        try Sh.must(["ip", "netns", "exec", other, "nft", "-f", "-"], input: script)
        let rendered = try Sh.must(["ip", "netns", "exec", other, "nft", "list", "table", "ip", "kube-proxy"])
        #expect(live == rendered)
        if layout == .maps {
            #expect(live.contains("dnat ip to ip daddr . meta l4proto . tcp dport . numgen random mod 2 map @service-endpoints"))
            #expect(live.contains("10.96.0.10 . tcp . 80 . 1 : 10.244.1.3 . 8080"))
        }
        #expect(live.contains("numgen random mod 2 vmap"))
        #expect(live.contains("ip saddr != { 198.51.100.0/25, 203.0.113.0/24 } drop"))
        #expect(live.contains("update @affinity-"))
    }

    /// The table `ip6 kube-proxy` a dual-stack node's IPv6 proxier writes through libnftnl lists as
    /// `nft -f` of its rendered script does: IPv6 addresses, concatenations, interval sets of
    /// prefixes not on byte boundaries, affinity sets, DNAT maps and the `::1` NodePort match
    /// encoded as nft encodes them.
    @Test func theIPv6TableListsLikeItsRenderedScript() async throws {
        let live = try BareNamespace(), other = try BareNamespace()
        let nft = try SystemNFTables(netns: "/var/run/netns/\(live.name)", family: .ipv6)
        var o = NFTablesOptions()
        o.common.family = .ipv6
        o.localDetector = .cidrs([CIDR("fd00:10:244::/60")!])
        let proxier = NFTablesProxier(nft: nft, options: o)
        var tracker = ChangeTracker(family: .ipv6, node: NodeInfo(name: "node-a"), serviceCIDRs: [CIDR("fd00:10:96::/112")!])
        func v6(_ s: EndpointSlice) -> EndpointSlice { var s = s; s.addressType = "IPv6"; return s }
        tracker.update(service: service("web", ip: "fd00:10:96::10", type: "NodePort", ports: webPorts))
        tracker.update(service: service("sticky", ip: "fd00:10:96::20", ports: [ServicePort(port: 80, targetPort: .int(8080))], affinity: true))
        var lb = service("edge", ip: "fd00:10:96::30", type: "LoadBalancer",
                         ports: [ServicePort(name: "https", protocol: "TCP", port: 443, targetPort: .int(8080), nodePort: 30443)])
        lb.spec.externalTrafficPolicy = "Local"
        lb.spec.loadBalancerSourceRanges = ["2001:db8:7::/52", "2001:db8:9::/48", "203.0.113.0/24"]
        lb.spec.externalIPs = ["2001:db8::50"]
        lb.status = ServiceStatus(loadBalancer: LoadBalancerStatus(ingress: [LoadBalancerIngress(ip: "2001:db8::10")]))
        tracker.update(service: lb)
        tracker.update(service: service("empty", ip: "fd00:10:96::40", ports: [ServicePort(port: 9000)]))
        tracker.update(slice: v6(slice("web", ["fd00:10:244:1::2", "fd00:10:244:1::3"], ports: webSlicePorts)))
        tracker.update(slice: v6(slice("sticky", ["fd00:10:244:1::2", "fd00:10:244:1::3"], ports: [EndpointPort(protocol: "TCP", port: 8080)])))
        tracker.update(slice: v6(slice("edge", ["fd00:10:244:1::3"], ports: [EndpointPort(name: "https", protocol: "TCP", port: 8080)])))
        let (snap, changed) = tracker.snapshot()
        _ = try await proxier.sync(SyncRequest(snapshot: snap, changedServices: changed))
        let listed = try Sh.must(["ip", "netns", "exec", live.name, "nft", "list", "table", "ip6", "kube-proxy"])
        try Sh.must(["ip", "netns", "exec", other.name, "nft", "-f", "-"], input: proxier.render(snap))
        let rendered = try Sh.must(["ip", "netns", "exec", other.name, "nft", "list", "table", "ip6", "kube-proxy"])
        #expect(listed == rendered)
        #expect(listed.contains("ip6 saddr != { 2001:db8:7::/52, 2001:db8:9::/48 } drop"), "\(listed)")
        #expect(listed.contains("ip6 saddr != fd00:10:244::/60") && listed.contains("ip6 daddr != ::1"), "\(listed)")
        #expect(listed.contains("update @affinity-") && listed.contains("type ipv6_addr"), "\(listed)")
        #expect(listed.contains("meta l4proto tcp dnat to [fd00:10:244:1::2]:8080"), "\(listed)")
        // nft lists `dnat ip6 addr . port to` as `dnat ip6 to`.
        #expect(listed.contains("dnat ip6 to numgen random mod 2 map { 0 : fd00:10:244:1::2 . 8080, 1 : fd00:10:244:1::3 . 8080 }"), "\(listed)")
        #expect(!listed.contains("203.0.113"), "\(listed)")
        // Cleanup takes the ip6 table away.
        #expect(try proxier.removeLeftovers())
        #expect(!(try Sh.must(["ip", "netns", "exec", live.name, "nft", "list", "tables"])).contains("kube-proxy"))
    }

    @Test func affinityPinsClientToOneBackend() async throws {
        try await Scenarios.affinityPinsClient(try NFTablesLab())
    }

    @Test func serviceWithoutEndpointsIsRefused() async throws {
        let t = try NFTablesLab()
        t.tracker.update(service: service("empty", ip: "10.96.0.40", ports: [ServicePort(port: 9000)]))
        _ = try await t.sync()
        let r = try Sh.run(["ip", "netns", "exec", t.lab.node, "socat", "-T2", "-", "TCP:10.96.0.40:9000,connect-timeout=2"], input: "")
        #expect(r.status != 0)
        #expect(r.err.contains("refused"), "expected a reject (connection refused), got: \(r.err)")
        #expect(t.lab.tcp("10.96.0.40", 9000) == nil)
        // An unallocated ClusterIP in the service CIDR is dropped, not routed out.
        #expect(try t.list().contains("10.96.0.40 . tcp . 9000 comment \"default/empty\" : goto reject-chain"))
    }

    @Test(arguments: NFTablesLayout.allCases)
    func endpointChangeIsOneSmallTransaction(layout: NFTablesLayout) async throws {
        let t = try NFTablesLab(layout: layout)
        t.tracker.update(service: service("web", ip: "10.96.0.10", type: "NodePort", ports: webPorts))
        t.tracker.update(service: service("other", ip: "10.96.0.11", ports: [ServicePort(port: 81, targetPort: .int(8080))]))
        t.tracker.update(slice: slice("web", ["10.244.1.2", "10.244.1.3"], ports: webSlicePorts))
        t.tracker.update(slice: slice("other", ["10.244.1.2"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        _ = try await t.sync()
        let before = try t.list()
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        let out = try await t.sync()
        #expect(!out.full, "an endpoint change should be a partial sync")
        let after = try t.list()
        // Both layouts DNAT through a map since upstream v1.36: the endpoint is `address . port` there.
        let gone = "10.244.1.3 . 8080"
        #expect(!after.contains(gone), "the removed endpoint is gone")
        #expect(before.contains(gone))
        for _ in 0..<8 { #expect(t.lab.tcp("10.96.0.10", 80) == "a") }
        #expect(t.lab.tcp("10.96.0.11", 81) == "a")
        #expect(t.nft.lastTransactionMessages < 30, "partial sync sent \(t.nft.lastTransactionMessages) messages")
    }

    @Test func driftIsRepairedAndCleanupRemovesTheTable() async throws {
        let t = try NFTablesLab()
        try Sh.must(["ip", "netns", "exec", t.lab.node, "nft", "add table ip other-tool"])
        try Sh.must(["ip", "netns", "exec", t.lab.node, "nft", "add chain ip other-tool c { type filter hook input priority 0 ; }"])
        t.tracker.update(service: service("web", ip: "10.96.0.10", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        _ = try await t.sync()
        #expect(await t.proxier.needsFullResync() == false)
        try Sh.must(["ip", "netns", "exec", t.lab.node, "nft", "flush chain ip kube-proxy services"])
        #expect(t.lab.tcp("10.96.0.10", 80) == nil)
        #expect(await t.proxier.needsFullResync() == true)
        #expect(try await t.sync().full)
        #expect(t.lab.tcp("10.96.0.10", 80) == "a")
        // A stranger's chain in our table goes at the next adoption; the whole table on delete.
        try Sh.must(["ip", "netns", "exec", t.lab.node, "nft", "delete table ip kube-proxy"])
        #expect(await t.proxier.needsFullResync() == true)
        #expect(try await t.sync().full)
        #expect(t.lab.tcp("10.96.0.10", 80) == "a")
        try await t.proxier.cleanup()
        let tables = try Sh.must(["ip", "netns", "exec", t.lab.node, "nft", "list", "tables"])
        #expect(!tables.contains("kube-proxy"))
        #expect(tables.contains("other-tool"))
    }

    @Test(arguments: NFTablesLayout.allCases)
    func restartAdoptsExistingTable(layout: NFTablesLayout) async throws {
        let t = try NFTablesLab(layout: layout)
        t.tracker.update(service: service("web", ip: "10.96.0.10", ports: webPorts))
        t.tracker.update(service: service("gone", ip: "10.96.0.12", ports: [ServicePort(port: 82, targetPort: .int(8080))]))
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        t.tracker.update(slice: slice("gone", ["10.244.1.3"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        _ = try await t.sync()
        // A new proxier (a restart) with one service fewer.
        let p2 = NFTablesProxier(nft: try SystemNFTables(netns: "/var/run/netns/\(t.lab.node)"), options: t.proxier.opts)
        t.tracker.delete(service: NamespacedName(namespace: "default", name: "gone"))
        let (snap, _) = t.tracker.snapshot()
        let out = try await p2.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(out.full)
        let l = try t.list()
        #expect(!l.contains("default/gone"), "the removed service's chains are deleted on adoption")
        #expect(!l.contains("10.96.0.12"), "and its elements")
        #expect(t.lab.tcp("10.96.0.10", 80) == "a")
        #expect(t.lab.tcp("10.96.0.12", 82) == nil)
    }

    /// A table written by the layout before upstream v1.34 (`filter-prerouting`,
    /// `filter-output-post-dnat`, the filter chains at -110, `mark-for-masquerade` and per-service
    /// masquerade rules matching the port)
    /// is taken over by one sync of a restarted proxy, in one transaction: a client connecting in
    /// a loop across the upgrade is never refused, and the table ends as a fresh one would be.
    @Test func aTableInTheOldLayoutIsMigratedByOneSync() async throws {
        let t = try NFTablesLab()
        t.tracker.update(service: service("web", ip: "10.96.0.10", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        let (snap, _) = t.tracker.snapshot()
        // The current layout rendered, turned into the old one, and loaded as an old proxy left it.
        var old = t.proxier.render(snap)
        old = old.replacingOccurrences(of: "filter-prerouting-pre-dnat", with: "filter-prerouting")
        old = old.replacingOccurrences(of: "add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }",
                                       with: "add chain ip kube-proxy filter-output-post-dnat { type filter hook output priority -90 ; }")
        old = old.replacingOccurrences(of: "add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check",
                                       with: "add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check")
        old = old.replacingOccurrences(of: "add rule ip kube-proxy filter-output ct state new jump cluster-ips-check",
                                       with: "add rule ip kube-proxy filter-output ct state new jump firewall-check")
        old = old.replacingOccurrences(of: "priority 0 ;", with: "priority -110 ;")
        // Before v1.36: a mark-for-masquerade chain, and each service chain's own masquerade rule
        // (matching the port before v1.34).
        let chain = try #require(old.firstMatch(of: /service-[A-Z0-9]{8}-default\/web\/tcp\/[a-z0-9-]+/).map { String($0.output) })
        let podCIDR = try #require(old.firstMatch(of: /ip saddr != ([0-9.\/]+) mark set/).map { String($0.output.1) })
        old += "add chain ip kube-proxy mark-for-masquerade\nadd rule ip kube-proxy mark-for-masquerade mark set mark or 0x00004000\n"
        old += "insert rule ip kube-proxy \(chain) ip daddr 10.96.0.10 tcp dport 80 ip saddr != \(podCIDR) jump mark-for-masquerade\n"
        #expect(old.contains("filter-output-post-dnat") && old.contains("tcp dport 80 ip saddr"), "\(old)")
        let load = try Sh.run(["ip", "netns", "exec", t.lab.node, "nft", "-f", "-"], input: old)
        #expect(load.status == 0, "\(load.err)")
        #expect(t.lab.tcp("10.96.0.10", 80) == "a", "the old layout serves")

        // Traffic in a loop while a restarted proxier adopts the table.
        let lab = t.lab
        let stop = ManagedAtomicFlag()
        let counts = Task.detached { () -> (Int, Int) in
            var ok = 0, failed = 0
            while !stop.isSet {
                if lab.tcp("10.96.0.10", 80, timeout: 1) == "a" { ok += 1 } else { failed += 1 }
            }
            return (ok, failed)
        }
        try await Task.sleep(for: .milliseconds(300))
        let fake = RecordingNFTables(try SystemNFTables(netns: "/var/run/netns/\(t.lab.node)"))
        let p2 = NFTablesProxier(interface: fake, options: t.proxier.opts, conntrack: nil, logger: t.proxier.logger)
        let out = try await p2.sync(SyncRequest(snapshot: snap, changedServices: nil))
        try await Task.sleep(for: .milliseconds(300))
        stop.set()
        let (ok, failed) = await counts.value
        #expect(out.full)
        #expect(fake.transactions.count <= 2, "what traffic sees changes in one transaction (prepare + commit): \(fake.transactions.count)")
        #expect(ok > 0 && failed == 0, "connections across the migration: \(ok) answered, \(failed) not")
        let listed = try t.list()
        #expect(!listed.contains("filter-prerouting ") && !listed.contains("filter-output-post-dnat"), "\(listed)")
        #expect(!listed.contains("tcp dport 80 ip saddr") && !listed.contains("mark-for-masquerade"), "\(listed)")
        // As a fresh table would list: the rendered script loaded into an empty namespace.
        let fresh = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(fresh) {} }
        _ = try Sh.must(["ip", "netns", "exec", fresh.name, "nft", "-f", "-"], input: t.proxier.render(snap))
        let freshListed = try Sh.must(["ip", "netns", "exec", fresh.name, "nft", "list", "table", "ip", "kube-proxy"])
        #expect(listed == freshListed)
    }
}

/// A flag set once, read from another task.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// The system nftables, recording each call to `apply` (one per sync step of transactions).
final class RecordingNFTables: NFTablesInterface, @unchecked Sendable {
    let inner: SystemNFTables
    private(set) var transactions: [[Op]] = []
    init(_ inner: SystemNFTables) { self.inner = inner }
    func readTable() throws -> KernelTable? { try inner.readTable() }
    func ruleCounts(_ chains: [String]) throws -> [String: Int] { try inner.ruleCounts(chains) }
    func apply(_ transactions: [[Op]]) throws {
        self.transactions += transactions.filter { !$0.isEmpty }
        try inner.apply(transactions)
    }
}
