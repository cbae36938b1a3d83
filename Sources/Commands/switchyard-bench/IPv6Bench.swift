import ArgumentParser
import Foundation
import KubeAPI
import NetnsKit
import ProxyIPTables
import ProxyIPVS
import ProxyNFTables
import ProxyUserspace
import Netlink
import ProxySeam
import HostOS
import IPTablesKit

/// The iptables, nftables and IPVS modes on IPv6 against the same on IPv4, in one run: the same
/// Services and endpoints with addresses of each family, through iptables and ip6tables (the
/// tables `ip` and `ip6 kube-proxy`; IPv4 and IPv6 virtual servers); then one lab with both
/// families, a pod behind a ClusterIP of each, for connection setup and throughput. The IPVS mode
/// runs in the qemu guest (`netlab/guest -- … ipv6 --modes ipvs`) on a kernel without IPVS.
struct IPv6Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipv6",
        abstract: "Measure the iptables, nftables and IPVS modes on IPv6 against IPv4 in the same run: full sync, one change, connection setup, throughput.")

    @Option(help: "The modes to measure, comma-separated: iptables, nftables, userspace, ipvs (which needs a kernel with IPVS: netlab/guest).")
    var modes = "iptables,nftables,userspace"

    @Option(help: "Number of services.") var services = 1_000
    @Option(help: "Endpoints per service.") var endpoints = 10
    @Option(help: "Repetitions of each data-path measurement (the median is reported).")
    var repeats = 5
    @Option(help: "Repetitions of the one-endpoint change (the median is reported; a change in the nftables mode takes about a millisecond, so a few would be noise).")
    var changeRepeats = 41
    @Option(help: "Seconds per data-path measurement.") var seconds = 5
    @Option(help: "Concurrent clients for the connection rate.") var concurrency = 4
    @Option(help: "Write the markdown results here too.") var out: String?
    @Option(help: "The iptables to measure with: system (whatever iptables-restore is here), legacy or nft.")
    var iptablesBackend = "system"

    struct RuleFigures {
        var render: Double
        var fullSync: Double
        var change: Double
        /// Every sample, for the median over runs.
        var renders: [Double]
        var changes: [Double]
    }

    /// A mode under measurement: how it renders and how it programs a namespace, per family.
    struct Mode: Sendable {
        var name: String
        var renderer: @Sendable (IPFamily) -> any ProxyRenderer
        var backend: @Sendable (IPFamily, _ netns: String) throws -> any ProxyBackend
        /// The tool that loads a full sync, as the report names it.
        var loader: String

        static let iptables = Mode(
            name: "iptables",
            renderer: { IPTablesProxier(ipt: FakeIPTables(), options: options($0)) },
            backend: { family, ns in IPTablesProxier(ipt: SystemIPTables(runner: CommandRunner(netns: ns), ipv6: family == .ipv6), options: options(family)) },
            loader: "ip6tables-restore / iptables-restore")

        static let nftables = Mode(
            name: "nftables",
            renderer: { NFTablesProxier(fake: FakeNFTables(), options: nftOptions($0)) },
            backend: { family, ns in NFTablesProxier(nft: try SystemNFTables(netns: "/var/run/netns/\(ns)", family: family), options: nftOptions(family)) },
            loader: "libnftnl: ip6 kube-proxy / ip kube-proxy")

        static let ipvs = Mode(
            name: "IPVS",
            renderer: { IPVSRenderer.Renderer(options: ipvsOptions($0), format: .list) },
            backend: { family, ns in
                IPVSProxier(ipvs: try IPVS(in: .named(ns)), links: try RouteHandle(in: .named(ns)),
                            ipt: SystemIPTables(runner: CommandRunner(netns: ns), ipv6: family == .ipv6),
                            ipset: SystemIPSet(runner: CommandRunner(netns: ns)), options: ipvsOptions(family))
            },
            loader: "netlink, ipset and ip6tables-restore / iptables-restore")

        /// Listeners in the namespace (on :: or 0.0.0.0), portal rules by the family's iptables.
        static let userspace = Mode(
            name: "userspace",
            renderer: { UserspaceRenderer(options: userspaceOptions($0)) },
            backend: { family, ns in
                var d = DataPlaneOptions()
                d.netns = "/run/netns/\(ns)"
                d.listenAddress = family == .ipv6 ? .anyIPv6 : .anyIPv4
                return UserspaceProxier(dataPlane: try DataPlane(options: d), ipt: SystemIPTables(runner: CommandRunner(netns: ns), ipv6: family == .ipv6),
                                        options: userspaceOptions(family))
            },
            loader: "listeners, and ip6tables-restore / iptables-restore")
    }

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the benchmark uses network namespaces") }
        guard (try? Sh.run(["iperf3", "--version"]))?.status == 0 else { throw ValidationError("iperf3 is needed (scripts/setup.sh installs it)") }
        let chosen = try modes.split(separator: ",").map { name -> Mode in
            switch name {
            case "iptables": return .iptables
            case "nftables": return .nftables
            case "ipvs": return .ipvs
            case "userspace": return .userspace
            default: throw ValidationError("--modes: iptables, nftables, ipvs, userspace, comma-separated, not \(name)")
            }
        }
        let shims = try Bench.selectIPTables(iptablesBackend)
        defer { if let shims { try? FileManager.default.removeItem(atPath: shims) } }
        var report = ""
        for mode in chosen {
            log("the \(mode.name) mode")
            report += try await measure(mode) + "\n"
        }
        print(report, terminator: "")
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// One mode's table: every figure on IPv6 against IPv4.
    func measure(_ mode: Mode) async throws -> String {
        // Each family twice, in the order IPv4, IPv6, IPv6, IPv4: the kernel tears a deleted
        // namespace (and its ruleset) down in the background, on the same cores, while the next
        // run starts; whichever family went second would pay for it (the nftables mode's one
        // change came out 2.8× slower on IPv6 when IPv6 always went second). Each figure is the
        // median over both runs' samples.
        var runs: [IPFamily: [RuleFigures]] = [:]
        for family in [IPFamily.ipv4, .ipv6, .ipv6, .ipv4] { runs[family, default: []].append(try await ruleFigures(family, mode)) }
        var rules: [IPFamily: RuleFigures] = [:]
        for (family, r) in runs {
            rules[family] = RuleFigures(render: median(r.flatMap(\.renders)), fullSync: median(r.map(\.fullSync)), change: median(r.flatMap(\.changes)),
                                        renders: [], changes: [])
        }
        let path = try await dataPath(mode)

        func row(_ figure: String, _ v6: Double, _ v4: Double, _ show: (Double) -> String, higherIsBetter: Bool = false) -> String {
            // "Slower" as a factor: time on IPv6 over IPv4, or IPv4's rate over IPv6's.
            let slower = higherIsBetter ? v4 / v6 : v6 / v4
            return "| \(figure) | \(show(v6)) | IPv4: \(show(v4)) | \(String(format: "%.2f×", slower)) | ≤ 1.2× |\n"
        }
        func gbit(_ v: Double) -> String { String(format: "%.2f Gbit/s", v / 1e9) }
        func ms(_ v: Double) -> String { String(format: "%.3f ms", v * 1000) }
        let v4 = rules[.ipv4]!, v6 = rules[.ipv6]!
        var report = "| figure (\(mode.name) mode) | IPv6 | baseline (same run) | IPv6 slower by | target |\n|---|---|---|---|---|\n"
        report += row("render \(services) services × \(endpoints) endpoints", v6.render, v4.render, fmt)
        report += row("full sync into an empty table (\(services) services, \(mode.loader))", v6.fullSync, v4.fullSync, fmt)
        report += row("one endpoint change at \(services) services, end to end", v6.change, v4.change, fmt)
        report += row("connection setup p50 (connect, 1-byte echo, close) through a ClusterIP", path.v6.rate.percentile(0.5), path.v4.rate.percentile(0.5), ms)
        report += row("new connections per second (\(concurrency) clients) through a ClusterIP", path.v6.rate.perSecond, path.v4.rate.perSecond,
                      { String(format: "%.0f/s", $0) }, higherIsBetter: true)
        report += row("one bulk TCP stream (iperf3, \(seconds) s) through a ClusterIP", path.v6.throughput, path.v4.throughput, gbit, higherIsBetter: true)
        report += row("the same stream direct to the pod (no Service: the kernel's own path per family)", path.direct6, path.direct4, gbit, higherIsBetter: true)
        // What the Service costs each family: its stream's share of the direct one.
        let share4 = path.v4.throughput / path.direct4, share6 = path.v6.throughput / path.direct6
        report += "| the stream through the ClusterIP as a share of direct | \(pct(share6)) | IPv4: \(pct(share4)) | \(String(format: "%.2f×", share4 / share6)) | ≤ 1.2× |\n"
        return report
    }

    /// The same Services as `Bench.objects`, with addresses of `family`.
    static func objects(_ family: IPFamily, services: Int, endpoints: Int) -> ([Service], [EndpointSlice]) {
        let (svcs, slices) = Bench.objects(services: services, endpoints: endpoints)
        guard family == .ipv6 else { return (svcs, slices) }
        func v6(_ prefix: String, _ n: Int) -> String { "\(prefix)\(String(n >> 16, radix: 16)):\(String(n & 0xffff, radix: 16))" }
        let services = svcs.enumerated().map { i, s -> Service in
            var s = s
            let ip = v6("fd00:10:96::", i + 10)
            s.spec.clusterIP = ip
            s.spec.clusterIPs = [ip]
            s.spec.ipFamilies = ["IPv6"]
            return s
        }
        let eps = slices.enumerated().map { i, sl -> EndpointSlice in
            var sl = sl
            sl.addressType = "IPv6"
            for j in sl.endpoints!.indices { sl.endpoints![j].addresses = [v6("fd00:10:128::", i * endpoints + j + 2)] }
            return sl
        }
        return (services, eps)
    }

    /// The iptables mode's options for one family's proxier: its pod CIDR, localhost NodePorts on IPv4 only.
    static func options(_ family: IPFamily) -> IPTablesOptions {
        var o = IPTablesOptions()
        o.family = family
        o.localhostNodePorts = family == .ipv4
        o.localDetector = .cidrs([CIDR(family == .ipv4 ? "10.244.0.0/16" : "fd00:10:244::/56")!])
        return o
    }

    /// The userspace mode's options for one family's proxier: listener ports from a range, so a
    /// full sync's ports are the same in each family's run.
    static func userspaceOptions(_ family: IPFamily) -> UserspaceOptions {
        var o = UserspaceOptions(portRange: 20000...40000)
        o.common.family = family
        o.localhostNodePorts = family == .ipv4
        return o
    }

    /// The IPVS mode's options for one family's proxier.
    static func ipvsOptions(_ family: IPFamily) -> IPVSOptions {
        var o = IPVSOptions()
        o.common.family = family
        o.localDetector = .cidrs([CIDR(family == .ipv4 ? "10.244.0.0/16" : "fd00:10:244::/56")!])
        return o
    }

    /// The nftables mode's options for one family's proxier (upstream's layout, which both families have).
    static func nftOptions(_ family: IPFamily) -> NFTablesOptions {
        var o = NFTablesOptions()
        o.common.family = family
        o.localDetector = .cidrs([CIDR(family == .ipv4 ? "10.244.0.0/16" : "fd00:10:244::/56")!])
        return o
    }

    func ruleFigures(_ family: IPFamily, _ mode: Mode) async throws -> RuleFigures {
        let (svcs, slices) = Self.objects(family, services: services, endpoints: endpoints)
        var tracker = ChangeTracker(family: family, node: NodeInfo(name: "node-a"))
        for s in svcs { tracker.update(service: s) }
        for s in slices { tracker.update(slice: s) }
        let (snap, _) = tracker.snapshot()
        precondition(snap.servicePorts.count == services, "every Service of \(family) in the snapshot")
        let renderer = mode.renderer(family)
        var renderTimes: [Double] = []
        for _ in 0..<11 {
            let s = Date()
            _ = renderer.render(snap)
            renderTimes.append(Date().timeIntervalSince(s))
        }
        let ns = "sybench6\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let proxier = try mode.backend(family, ns)
        let s = Date()
        _ = try await proxier.sync(SyncRequest(snapshot: snap, changedServices: nil))
        let full = Date().timeIntervalSince(s)
        var changes: [Double] = [], planTimes: [Double] = [], kernelTimes: [Double] = []
        var sl = slices[services / 2]
        for i in 0..<changeRepeats {
            sl.endpoints![0].addresses = [family == .ipv4 ? "10.255.\(i / 250).\(i % 250 + 1)" : "fd00:10:255::\(String(i + 1, radix: 16))"]
            let c = Date()
            tracker.update(slice: sl)
            let (s, changed) = tracker.snapshot()
            let outcome = try await proxier.sync(SyncRequest(snapshot: s, changedServices: changed))
            changes.append(Date().timeIntervalSince(c))
            precondition(!outcome.full, "expected a partial sync")
            if let n = proxier as? NFTablesProxier { planTimes.append(n.lastTimings.plan); kernelTimes.append(n.lastTimings.kernel) }
        }
        // Where an nftables change's time goes: planning it, or the kernel's transaction.
        if !planTimes.isEmpty { log("  one change: planning \(fmt(median(planTimes))), the kernel's transaction \(fmt(median(kernelTimes)))") }
        await proxier.stop(grace: .zero)
        let f = RuleFigures(render: median(renderTimes), fullSync: full, change: median(changes), renders: renderTimes, changes: changes)
        log("\(mode.name) \(family.rawValue): render \(fmt(f.render)), full sync \(fmt(f.fullSync)), one change \(fmt(f.change))")
        return f
    }

    /// A client, a node and a pod with addresses of both families; a ClusterIP of each family
    /// for the pod's iperf3 and echo servers, programmed by a proxier per family.
    func dataPath(_ mode: Mode) async throws -> (v4: UserspaceBench.Figures, v6: UserspaceBench.Figures, direct4: Double, direct6: Double) {
        let lab = try Lab()
        defer { lab.destroy() }
        let pod4 = try lab.addPod("a", host: 2)
        let podNS = lab.pods["a"]!
        let node6 = "fd00:250::1", client6 = "fd00:250::2", bridge6 = "fd00:10:244:1::1", pod6 = "fd00:10:244:1::2"
        for (ns, dev, addr) in [(lab.node, "eth-c", "\(node6)/64"), (lab.client, "eth0", "\(client6)/64"),
                                (lab.node, "cbr0", "\(bridge6)/64"), (podNS, "eth0", "\(pod6)/64")] {
            try Sh.must(["ip", "-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad"])
        }
        try Sh.must(["ip", "-n", lab.client, "-6", "route", "add", "default", "via", node6])
        try Sh.must(["ip", "-n", podNS, "-6", "route", "add", "default", "via", bridge6])
        try Sh.must(["ip", "-n", lab.client, "route", "add", "10.96.0.0/12", "via", lab.nodeClientIP])
        try Sh.must(["ip", "netns", "exec", lab.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        for ns in [lab.client, lab.node] {
            try Sh.must(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 60999"])
        }
        // iperf3 -s listens on both families; the echo server too.
        try lab.spawn(podNS, ["iperf3", "-s", "-p", "5201"])
        let echo = try EchoServer(netns: podNS, port: 9090, dualStack: true)
        defer { echo.stop() }
        try Netns.waitForListeners(podNS, [("-ltnH", 5201)])

        var figures: [IPFamily: UserspaceBench.Figures] = [:]
        var direct: [IPFamily: Double] = [:]
        for (family, bulk, echoIP, pod) in [(IPFamily.ipv4, "10.96.0.20", "10.96.0.21", pod4), (.ipv6, "fd00:10:96::20", "fd00:10:96::21", pod6)] {
            var tracker = ChangeTracker(family: family, node: NodeInfo(name: "node-a"))
            for (name, ip, port) in [("bulk", bulk, 5201), ("echo", echoIP, 9090)] {
                tracker.update(service: Service(metadata: ObjectMeta(name: name, namespace: "default"),
                                                spec: ServiceSpec(type: "ClusterIP", clusterIP: ip, ports: [ServicePort(port: port, targetPort: .int(port))])))
                tracker.update(slice: EndpointSlice(
                    metadata: ObjectMeta(name: "\(name)-1", namespace: "default", labels: [EndpointSlice.serviceNameLabel: name]),
                    addressType: family.rawValue,
                    endpoints: [Endpoint(addresses: [pod], conditions: EndpointConditions(ready: true), nodeName: "node-a")],
                    ports: [EndpointPort(protocol: "TCP", port: port)]))
            }
            let proxier = try mode.backend(family, lab.node)
            _ = try await proxier.sync(SyncRequest(snapshot: tracker.snapshot().0, changedServices: nil))
            // A first connection proves the path before anything is timed.
            guard lab.tcpEcho(echoIP, 9090) else { throw LabError("no answer through \(echoIP):9090") }
            log("\(family.rawValue) through \(bulk) and \(echoIP)")
            var tputs: [Double] = [], rates: [ConnectionRate.Result] = [], directs: [Double] = []
            for _ in 0..<repeats {
                // The same stream to the pod's own address: what the kernel's path of this family carries without NAT.
                directs.append(try Netns.iperf(from: lab.client, to: pod, seconds: seconds))
                tputs.append(try Netns.iperf(from: lab.client, to: bulk, seconds: seconds))
                let r = try ConnectionRate.run(netns: lab.client, ip: echoIP, port: 9090, concurrency: concurrency, duration: TimeInterval(seconds))
                if r.failed > 0 { log("  \(r.failed) connections failed") }
                rates.append(r)
            }
            let f = UserspaceBench.Figures(throughput: median(tputs), rate: rates.sorted { $0.perSecond < $1.perSecond }[rates.count / 2])
            log(String(format: "  throughput %.2f Gbit/s, %.0f connections/s, p50 %.3f ms", f.throughput / 1e9, f.rate.perSecond, f.rate.percentile(0.5) * 1000))
            figures[family] = f
            direct[family] = median(directs)
            await proxier.stop(grace: .zero)
            log(String(format: "  direct to the pod %.2f Gbit/s", direct[family]! / 1e9))
        }
        return (figures[.ipv4]!, figures[.ipv6]!, direct[.ipv4]!, direct[.ipv6]!)
    }
}

extension Lab {
    /// One echoed byte from the client through `ip`:`port`.
    func tcpEcho(_ ip: String, _ port: Int) -> Bool {
        (try? inNamespace(client) { () -> Bool in
            guard let fd = TCP.connect(ip, port, timeout: 3) else { return false }
            defer { close(fd) }
            guard TCP.send(fd, [0x78]) else { return false }
            TCP.shutdownWrite(fd)
            return TCP.receiveAll(fd, limit: 16) == [0x78]
        }) ?? false
    }
}
