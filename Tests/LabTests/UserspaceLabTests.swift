import Foundation
import KubeAPI
import NetnsKit
import ProxyIPTables
import Prometheus
import ProxyUserspace
import Testing
import ProxySeam
import ProxyRuntime
import HostOS
import IPTablesKit

/// A node namespace running the userspace mode in-process: the data plane's
/// threads live in the node's namespace, the portal rules go through the real
/// iptables-restore there. Two backend pods with socat TCP/UDP servers, a client outside.
final class UserspaceLab: ModeLab, @unchecked Sendable {
    let lab: Lab
    let dataPlane: DataPlane
    let proxier: UserspaceProxier
    let ipt: SystemIPTables
    var tracker: ChangeTracker
    var udpServers: [UDPReplyServer] = []
    let metrics = ProxyMetrics(mode: "userspace")

    init(portRange: ClosedRange<Int>? = nil, udpTimeout: Duration = .milliseconds(250), serve: Bool = true) throws {
        lab = try Lab()
        try lab.addPod("a", host: 2)
        try lab.addPod("b", host: 3)
        if serve {
            try lab.serve(pod: "a", tcpPort: 8080)
            try lab.serve(pod: "b", tcpPort: 8080)
            udpServers = [try UDPReplyServer(netns: lab.pods["a"]!, port: 5353, reply: "a"),
                          try UDPReplyServer(netns: lab.pods["b"]!, port: 5353, reply: "b")]
        }
        try Sh.must(["ip", "-n", lab.client, "route", "add", "10.96.0.0/12", "via", lab.nodeClientIP])
        var d = DataPlaneOptions()
        d.netns = "/run/netns/\(lab.node)"
        d.udpTimeout = udpTimeout
        dataPlane = try DataPlane(options: d)
        ipt = SystemIPTables(runner: CommandRunner(netns: lab.node))
        proxier = UserspaceProxier(dataPlane: dataPlane, ipt: ipt, options: UserspaceOptions(portRange: portRange),
                                   conntrack: NetlinkConntrack(namespace: .named(lab.node)), registry: metrics.registry)
        tracker = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(lab.nodeClientIP)!]))
    }

    @discardableResult
    func sync() async throws -> SyncOutcome {
        let (snap, changed) = tracker.snapshot()
        return try await proxier.sync(SyncRequest(snapshot: snap, changedServices: changed))
    }

    func ourRules() throws -> [String] {
        try ipt.save(tables: ["filter", "nat"]).split(separator: "\n").map(String.init)
            .filter { $0.contains("KUBE-PORTALS") || $0.contains("KUBE-NODEPORT") }
    }

    deinit {
        for s in udpServers { s.stop() }
        dataPlane.shutdownNow()
        lab.destroy()
    }
}

/// Sends `message` over a fresh connection from `ns` and returns what comes back before EOF.
func exchange(_ ns: String, _ ip: String, _ port: Int, _ message: String, halfClose: Bool = true) -> String? {
    try? inNamespace(ns) { () -> String? in
        guard let fd = TCP.connect(ip, port) else { return nil }
        defer { close(fd) }
        guard TCP.send(fd, Array(message.utf8)) else { return nil }
        if halfClose { TCP.shutdownWrite(fd) }
        return String(decoding: TCP.receiveAll(fd), as: UTF8.self)
    }
}

@Suite("userspace mode in network namespaces", .enabled(if: isRoot, "needs root for network namespaces"))
struct UserspaceLabTests {
    @Test func clusterIPNodePortTCPAndUDPFromOutsideNodeAndPods() async throws {
        let t = try UserspaceLab()
        #expect(try await Scenarios.web(t).full)
        Scenarios.clusterIPReachesBothPods(t)
        let np = t.lab.tcp(t.lab.nodeClientIP, 30080)
        #expect(np == "a" || np == "b", "NodePort from outside")
        let npUDP = t.lab.udp(t.lab.nodeClientIP, 30053)
        #expect(npUDP == "a" || npUDP == "b", "UDP NodePort from outside")
        // From the node itself (host portals, DNAT to the node IP) and from a pod (container portals).
        let fromNode = t.lab.tcp("10.96.0.10", 80, from: t.lab.node)
        #expect(fromNode == "a" || fromNode == "b")
        let udpFromNode = t.lab.udp("10.96.0.10", 53, from: t.lab.node)
        #expect(udpFromNode == "a" || udpFromNode == "b")
        let localhostNP = t.lab.tcp("127.0.0.1", 30080, from: t.lab.node)
        #expect(localhostNP == "a" || localhostNP == "b", "localhost NodePort from the node")
        let fromPod = t.lab.tcp("10.96.0.10", 80, from: t.lab.pods["a"]!)
        #expect(fromPod == "a" || fromPod == "b")
        let name = ServicePortName(service: NamespacedName(namespace: "default", name: "web"), port: "http", proto: .tcp)
        let stats = try #require(await t.proxier.stats(for: name))
        #expect(stats.connectionCount >= 6)
        #expect(stats.byteCount > 0)
        // The same counters on /metrics, labelled by service port.
        let text = t.metrics.text()
        let labels = "service_port=\"default/web:http\",protocol=\"TCP\""
        let accepted = text.split(separator: "\n").first { $0.hasPrefix("kubeproxy_userspace_connections_total{") && $0.contains(labels) }
        #expect(accepted.flatMap { Int($0.split(separator: " ").last ?? "") } == stats.connectionCount, "\(text)")
        #expect(text.contains("kubeproxy_userspace_bytes_total{\(labels),direction=\"to_client\"}"))
        #expect(text.contains("kubeproxy_userspace_active_connections{"))
        #expect(text.contains("kubeproxy_userspace_dial_failures_total{"))
    }

    /// A Service added after the first sync (a partial sync: its listener and portal lines alone)
    /// is reachable, and one removed is not, while the others keep working.
    @Test func servicesAddedAndRemovedByPartialSyncs() async throws {
        let t = try UserspaceLab()
        #expect(try await Scenarios.web(t).full)
        t.tracker.update(service: service("late", ip: "10.96.0.30", ports: [ServicePort(port: 8000, targetPort: .int(8080))]))
        t.tracker.update(slice: slice("late", ["10.244.1.3"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        #expect(try await t.sync().full == false)
        #expect(t.lab.tcp("10.96.0.30", 8000) == "b", "the added Service through its ClusterIP")
        #expect(t.lab.tcp("10.96.0.30", 8000, from: t.lab.node) == "b", "and from the node")
        t.tracker.delete(service: NamespacedName(namespace: "default", name: "web"))
        #expect(try await t.sync().full == false)
        #expect(t.lab.tcp("10.96.0.10", 80, timeout: 1) == nil, "the removed Service's portal is gone")
        #expect(t.lab.tcp("10.96.0.30", 8000) == "b")
        #expect(try t.ourRules().allSatisfy { !$0.contains("default/web") })
    }

    @Test func flushedPortalRulesForceAFullResync() async throws {
        let t = try UserspaceLab()
        t.tracker.update(service: service("web", ip: "10.96.0.10", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2"], ports: webSlicePorts))
        try await t.sync()
        #expect(await t.proxier.needsFullResync() == false)
        for table in ["nat", "filter"] {
            try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", table, "-F"])
            try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", table, "-X"])
        }
        #expect(t.lab.tcp("10.96.0.10", 80, timeout: 1) == nil)
        #expect(await t.proxier.needsFullResync() == true)
        let (snap, _) = t.tracker.snapshot()
        let out = try await t.proxier.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(out.full)
        #expect(t.lab.tcp("10.96.0.10", 80) == "a", "the portal rules and their jumps are back")
    }

    @Test func affinityPinsClientAndNoEndpointsResets() async throws {
        let t = try UserspaceLab()
        try await Scenarios.affinityPinsClient(t)
        t.tracker.update(service: service("empty", ip: "10.96.0.40", ports: [ServicePort(port: 9000)]))
        try await t.sync()
        // No endpoints: the connection is reset, nothing is carried.
        #expect(exchange(t.lab.client, "10.96.0.40", 9000, "hello").map { $0.isEmpty } ?? true)
    }

    @Test func refusingAndSilentBackendsAreSkipped() async throws {
        let t = try UserspaceLab(serve: false)
        // Nothing listens in pod a (refused); 10.244.1.77 does not exist (the dial times out);
        // only b answers.
        try t.lab.serve(pod: "b", tcpPort: 8080)
        t.tracker.update(service: service("flaky", ip: "10.96.0.50", ports: [ServicePort(port: 80, targetPort: .int(8080))]))
        t.tracker.update(slice: slice("flaky", ["10.244.1.2", "10.244.1.77", "10.244.1.3"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        try await t.sync()
        for i in 0..<6 {
            #expect(t.lab.tcp("10.96.0.50", 80, timeout: 5) == "b", "connection \(i) should get through to b")
        }
        let name = ServicePortName(service: NamespacedName(namespace: "default", name: "flaky"), port: "", proto: .tcp)
        let stats = try #require(await t.proxier.stats(for: name))
        #expect(stats.dialFailureCount >= 2, "refused and timed-out dials are counted")
    }

    @Test func endpointChangeKeepsEstablishedConnections() async throws {
        let t = try UserspaceLab(serve: false)
        let echoA = try EchoServer(netns: t.lab.pods["a"]!, port: 9090, greeting: "a:")
        let echoB = try EchoServer(netns: t.lab.pods["b"]!, port: 9090, greeting: "b:")
        defer { echoA.stop(); echoB.stop() }
        t.tracker.update(service: service("long", ip: "10.96.0.60", ports: [ServicePort(port: 90, targetPort: .int(9090))]))
        t.tracker.update(service: service("other", ip: "10.96.0.61", ports: [ServicePort(port: 91, targetPort: .int(9090))]))
        t.tracker.update(slice: slice("long", ["10.244.1.3"], ports: [EndpointPort(protocol: "TCP", port: 9090)]))
        t.tracker.update(slice: slice("other", ["10.244.1.2"], ports: [EndpointPort(protocol: "TCP", port: 9090)]))
        try await t.sync()
        let portsBefore = await t.proxier.ports
        let client = t.lab.client
        // One connection to b stays open across the change.
        let fd = try #require(try inNamespace(client) { TCP.connect("10.96.0.60", 90) })
        defer { close(fd) }
        #expect(String(decoding: TCP.receive(fd, count: 2), as: UTF8.self) == "b:")
        let rulesBefore = try t.ourRules()
        // b leaves the service; a takes over.
        t.tracker.update(slice: slice("long", ["10.244.1.2"], ports: [EndpointPort(protocol: "TCP", port: 9090)]))
        let out = try await t.sync()
        #expect(!out.full)
        #expect(await t.proxier.ports == portsBefore, "listeners of changed and unchanged services stay open")
        #expect(try t.ourRules() == rulesBefore, "an endpoint change does not touch the portal rules")
        #expect(TCP.send(fd, Array("still here".utf8)))
        #expect(String(decoding: TCP.receive(fd, count: 10), as: UTF8.self) == "still here", "the established connection keeps working")
        #expect(exchange(client, "10.96.0.60", 90, "x") == "a:x", "new connections go to a")
        #expect(exchange(client, "10.96.0.61", 91, "y") == "a:y")
    }

    @Test func halfCloseResetAndStallDoNotStallOthers() async throws {
        let t = try UserspaceLab(serve: false)
        let echo = try EchoServer(netns: t.lab.pods["a"]!, port: 9090)
        defer { echo.stop() }
        t.tracker.update(service: service("echo", ip: "10.96.0.70", ports: [ServicePort(port: 90, targetPort: .int(9090))]))
        t.tracker.update(slice: slice("echo", ["10.244.1.2"], ports: [EndpointPort(protocol: "TCP", port: 9090)]))
        try await t.sync()
        let client = t.lab.client
        // Half-close: 1 MiB sent then SHUT_WR; all of it comes back, then EOF.
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let echoed = try inNamespace(client) { () -> [UInt8] in
            guard let fd = TCP.connect("10.96.0.70", 90, timeout: 10) else { return [] }
            defer { close(fd) }
            let sender = Thread { TCP.send(fd, big); TCP.shutdownWrite(fd) }
            sender.start()
            return TCP.receiveAll(fd, limit: 2 << 20)
        }
        #expect(echoed.count == big.count && echoed == big, "half-closed stream drained both ways (\(echoed.count) bytes back)")
        // A stalled client: writes until its buffers and the proxy's are full, and never reads.
        let stalled = try #require(try inNamespace(client) { () -> Int32? in
            guard let fd = TCP.connect("10.96.0.70", 90) else { return nil }
            let chunk = [UInt8](repeating: 1, count: 65_536)
            let until = Date().addingTimeInterval(2)
            var sent = 0
            while Date() < until {
                let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if n > 0 { sent += n; continue }
                if sent > 0 { break }
                usleep(10_000)
            }
            return fd
        })
        defer { close(stalled) }
        // A client that resets mid-stream.
        try inNamespace(client) {
            if let fd = TCP.connect("10.96.0.70", 90) {
                TCP.send(fd, [UInt8](repeating: 2, count: 100_000))
                TCP.reset(fd)
            }
        }
        // Others are served promptly meanwhile.
        let start = ContinuousClock.now
        for i in 0..<5 {
            #expect(exchange(client, "10.96.0.70", 90, "ping \(i)") == "ping \(i)")
        }
        #expect(ContinuousClock.now - start < .seconds(3))
        let name = ServicePortName(service: NamespacedName(namespace: "default", name: "echo"), port: "", proto: .tcp)
        let stats = try #require(await t.proxier.stats(for: name))
        // The reset connection is gone; the stalled one is still open.
        let active = try await eventually(tries: 50, every: .milliseconds(20), { stats.activeCount }, until: { $0 <= 1 })
        #expect(active == 1, "only the stalled connection is left open, got \(active)")
    }

    /// The proxy runs as its own process here, so its descriptors and memory are
    /// counted alone (the tests around it share this process).
    @Test func twoThousandConcurrentConnectionsNoDescriptorLeak() async throws {
        let bin = try switchyardBinary()
        let lab = try Lab()
        defer { lab.destroy() }
        try lab.addPod("a", host: 2)
        try Sh.must(["ip", "-n", lab.client, "route", "add", "10.96.0.0/12", "via", lab.nodeClientIP])
        let echo = try EchoServer(netns: lab.pods["a"]!, port: 9090)
        defer { echo.stop() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sy-\(lab.id)-many.yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
            apiVersion: v1
            kind: Service
            metadata: {name: many, namespace: default}
            spec: {clusterIP: 10.96.0.80, ports: [{port: 90, targetPort: 9090}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: many-1, namespace: default, labels: {kubernetes.io/service-name: many}}
            addressType: IPv4
            ports: [{port: 9090, protocol: TCP}]
            endpoints: [{addresses: [10.244.1.2]}]
            """.write(to: file, atomically: true, encoding: .utf8)
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sy-\(lab.id)-proxy.log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        try lab.spawn(lab.node, [bin, "proxy", "--proxy-mode", "userspace", "--hostname-override", "node-a",
                                 "--manifests", file.path, "--healthz-bind-address", "", "--metrics-bind-address", ""], log: log)
        // A debug binary starting beside the rest of the suite can take many seconds on a loaded machine.
        let ready = try await eventually(tries: 600, every: .milliseconds(100), { exchange(lab.client, "10.96.0.80", 90, "up?") == "up?" }, until: { $0 })
        try #require(ready, "the proxy did not start serving; its output: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "none")")
        let pid = try #require(Sh.must(["ip", "netns", "pids", lab.node]).split(separator: "\n").first.flatMap { Int32($0) })
        @Sendable func fds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
        @Sendable func rss() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        let fdsBefore = fds(), rssBefore = rss()
        let n = 2000
        let during = try inNamespace(lab.client) { () -> (ok: Int, fds: Int, rss: Int) in
            var conns: [Int32] = []
            defer { for fd in conns { close(fd) } }
            for _ in 0..<n {
                guard let fd = TCP.connect("10.96.0.80", 90, timeout: 5) else { break }
                conns.append(fd)
            }
            for (i, fd) in conns.enumerated() { TCP.send(fd, Array("conn \(i);".utf8)) }
            var ok = 0
            for (i, fd) in conns.enumerated() {
                let want = Array("conn \(i);".utf8)
                if TCP.receive(fd, count: want.count) == want { ok += 1 }
            }
            return (ok, fds(), rss())
        }
        #expect(during.ok == n, "all \(n) connections carried their message, \(during.ok) did")
        #expect(during.fds >= fdsBefore + 2 * n, "each open connection holds its two sockets (\(during.fds) open)")
        // Everything closes: the proxy's descriptors go back to where they were (empty
        // pipes kept for reuse excepted: at most 256 per loop, counted by type).
        let fdsAfter = try await eventually(tries: 100, every: .milliseconds(50), { fds() }, until: { $0 <= fdsBefore && echo.open == 0 })
        let pipes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"))?
            .filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "").hasPrefix("pipe:") }.count ?? 0
        #expect(echo.open == 0)
        #expect(fdsAfter - pipes <= fdsBefore, "proxy descriptors before \(fdsBefore), after \(fdsAfter) (\(pipes) pooled pipe ends)")
        let grown = during.rss - rssBefore
        #expect(grown < 48 << 20, "2,000 open connections grew the proxy by \(grown >> 10) KiB")
        print("userspace: 2000 connections: proxy fds \(fdsBefore) -> \(during.fds) -> \(fdsAfter) (\(pipes) pooled pipe ends), RSS +\(grown >> 10) KiB")
    }

    @Test func renderEqualsLiveRulesAndCleanupRemovesThem() async throws {
        let t = try UserspaceLab(portRange: 41000...41100)
        try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"])
        t.tracker.update(service: service("web", ip: "10.96.0.10", type: "NodePort", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2", "10.244.1.3"], ports: webSlicePorts))
        t.tracker.update(service: service("sticky", ip: "10.96.0.20", ports: [ServicePort(port: 80, targetPort: .int(8080))], affinity: true))
        t.tracker.update(slice: slice("sticky", ["10.244.1.2"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        let (snap, _) = t.tracker.snapshot()
        _ = try await t.proxier.sync(SyncRequest(snapshot: snap, changedServices: nil))
        let live = try t.ourRules()
        // The render, loaded into a fresh namespace, saves to the same rules.
        let rendered = UserspaceRenderer(options: UserspaceOptions(portRange: 41000...41100)).render(snap)
        let ns = "sy\(t.lab.id)r"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        try Sh.must(["ip", "netns", "exec", ns, "iptables-restore", "--noflush"], input: rendered)
        let fromRender = try SystemIPTables(runner: CommandRunner(netns: ns)).save(tables: ["filter", "nat"])
            .split(separator: "\n").map(String.init).filter { $0.contains("KUBE-PORTALS") || $0.contains("KUBE-NODEPORT") }
        #expect(live == fromRender)
        #expect(live.contains { $0.contains("--to-ports 41000") })
        // A restart over existing rules adds no second set of jumps.
        let again = UserspaceProxier(dataPlane: t.dataPlane, ipt: t.ipt, options: UserspaceOptions(portRange: 41000...41100))
        _ = try await t.proxier.cleanup()
        try Sh.must(["ip", "netns", "exec", t.lab.node, "iptables-restore", "--noflush"], input: rendered)
        _ = try await again.sync(SyncRequest(snapshot: snap, changedServices: nil))
        #expect(try t.ourRules().filter { $0.contains("-j KUBE-PORTALS-CONTAINER") }.count == 1)
        #expect(t.lab.tcp("10.96.0.20", 80) == "a")
        try await again.cleanup()
        #expect(try t.ourRules().isEmpty, "cleanup leaves no portal chain or jump")
        #expect(try t.ipt.save(tables: ["nat"]).contains("--dport 9999 -j ACCEPT"), "other rules stay")
        #expect(await t.dataPlane.descriptorsInUse() == 0, "cleanup closes every listener")
        #expect(t.lab.tcp("10.96.0.20", 80, timeout: 1) == nil)
    }

    @Test func udpFlowsExpireAndFollowEndpointRemoval() async throws {
        let t = try UserspaceLab(udpTimeout: .milliseconds(300))
        t.tracker.update(service: service("dns", ip: "10.96.0.90", ports: [ServicePort(name: "dns", protocol: "UDP", port: 53, targetPort: .int(5353))]))
        t.tracker.update(slice: slice("dns", ["10.244.1.3"], ports: [EndpointPort(name: "dns", protocol: "UDP", port: 5353)]))
        try await t.sync()
        #expect(t.lab.udp("10.96.0.90", 53) == "b")
        let name = ServicePortName(service: NamespacedName(namespace: "default", name: "dns"), port: "dns", proto: .udp)
        let stats = try #require(await t.proxier.stats(for: name))
        let active = try await eventually(tries: 50, every: .milliseconds(50), { stats.activeCount }, until: { $0 == 0 })
        #expect(active == 0, "idle UDP flows are closed after --udp-timeout")
        t.tracker.update(slice: slice("dns", ["10.244.1.2"], ports: [EndpointPort(name: "dns", protocol: "UDP", port: 5353)]))
        try await t.sync()
        #expect(t.lab.udp("10.96.0.90", 53) == "a")
    }
}

/// Probes until `until` holds or `tries` run out, waiting `every` between probes; returns the last value.
func eventually<T>(tries: Int, every: Duration, _ probe: () async throws -> T, until: (T) -> Bool) async throws -> T {
    var v = try await probe()
    for _ in 1..<max(1, tries) where !until(v) {
        try await Task.sleep(for: every)
        v = try await probe()
    }
    return v
}
