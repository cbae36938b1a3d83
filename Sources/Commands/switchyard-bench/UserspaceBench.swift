import ArgumentParser
import Foundation
import KubeAPI
import NetnsKit
import ProxyIPTables
import ProxyUserspace
import ProxySeam
import HostOS
import IPTablesKit

/// The userspace mode's data path against a direct connection to the pod, socat
/// proxying the same way, and the iptables mode, all in one lab in one run.
struct UserspaceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "userspace",
        abstract: "Measure the userspace mode's throughput and connection rate against direct, socat and the iptables mode.")

    @Option(help: "Seconds per measurement.") var seconds = 5
    @Option(help: "Repetitions of each measurement (the median is reported).") var repeats = 3
    @Option(help: "Concurrent clients for the connection rate.") var concurrency = 4
    @Option(help: "Write the markdown results here too.") var out: String?
    @Option(help: "Also time adding and removing one Service among this many (0: skip).") var changesAt = 10_000
    @Flag(help: "Only time the changes (no data-path figures).") var changesOnly = false

    struct Figures {
        var throughput: Double   // bits per second
        var rate: ConnectionRate.Result
    }

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the benchmark uses network namespaces") }
        if changesOnly {
            print("| figure | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n" + (try await changeCost(services: changesAt)))
            return
        }
        guard (try? Sh.run(["iperf3", "--version"]))?.status == 0 else { throw ValidationError("iperf3 is needed (scripts/setup.sh installs it)") }
        let lab = try Lab()
        defer { lab.destroy() }
        let pod = try lab.addPod("a", host: 2)
        let podNS = lab.pods["a"]!
        try Sh.must(["ip", "-n", lab.client, "route", "add", "10.96.0.0/12", "via", lab.nodeClientIP])
        try Sh.must(["ip", "-n", lab.client, "route", "add", "10.244.0.0/16", "via", lab.nodeClientIP])
        // Tens of thousands of short connections per run: the clients (and the node, whose
        // proxy opens the upstream connections) reuse TIME_WAIT ports and use the whole range.
        for ns in [lab.client, lab.node] {
            try Sh.must(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 60999"])
        }
        try lab.spawn(podNS, ["iperf3", "-s", "-p", "5201"])
        let echo = try EchoServer(netns: podNS, port: 9090)
        defer { echo.stop() }
        try Netns.waitForListeners(podNS, [("-ltnH", 5201)])

        var tracker = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(lab.nodeClientIP)!]))
        // The iptables mode gets ClusterIPs of its own, so no mode meets another's TIME_WAIT entries.
        for (name, ip, port) in [("bulk", "10.96.0.10", 5201), ("echo", "10.96.0.11", 9090),
                                 ("bulk-ipt", "10.96.0.20", 5201), ("echo-ipt", "10.96.0.21", 9090)] {
            tracker.update(service: Service(metadata: ObjectMeta(name: name, namespace: "default"),
                                            spec: ServiceSpec(type: "ClusterIP", clusterIP: ip, ports: [ServicePort(port: port, targetPort: .int(port))])))
            tracker.update(slice: EndpointSlice(
                metadata: ObjectMeta(name: "\(name)-1", namespace: "default", labels: [EndpointSlice.serviceNameLabel: name]),
                endpoints: [Endpoint(addresses: [pod], conditions: EndpointConditions(ready: true), nodeName: "node-a")],
                ports: [EndpointPort(protocol: "TCP", port: port)]))
        }
        let (snap, _) = tracker.snapshot()

        log("direct to the pod (\(pod))")
        let direct = try measure(lab, bulk: pod, echo: pod)

        log("userspace mode")
        var d = DataPlaneOptions()
        d.netns = "/run/netns/\(lab.node)"
        let dataPlane = try DataPlane(options: d)
        let userspace = UserspaceProxier(dataPlane: dataPlane, ipt: SystemIPTables(runner: CommandRunner(netns: lab.node)),
                                         options: UserspaceOptions())
        _ = try await userspace.sync(SyncRequest(snapshot: snap, changedServices: nil))
        let us = try measure(lab, bulk: "10.96.0.10", echo: "10.96.0.11")
        try await userspace.cleanup()
        await dataPlane.stop(grace: .seconds(1))

        log("socat proxying the same way (a REDIRECT portal to socat's listener on the node)")
        try lab.spawn(lab.node, ["socat", "TCP-LISTEN:61201,fork,reuseaddr", "TCP:\(pod):5201"])
        try lab.spawn(lab.node, ["socat", "TCP-LISTEN:61090,fork,reuseaddr", "TCP:\(pod):9090"])
        try Netns.waitForListeners(lab.node, [("-ltnH", 61090), ("-ltnH", 61201)])
        for (ip, port, to) in [("10.96.0.50", 5201, 61201), ("10.96.0.51", 9090, 61090)] {
            try Sh.must(["ip", "netns", "exec", lab.node, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-d", "\(ip)/32", "-p", "tcp",
                         "--dport", "\(port)", "-j", "REDIRECT", "--to-ports", "\(to)"])
        }
        let socat = try measure(lab, bulk: "10.96.0.50", echo: "10.96.0.51")

        log("iptables mode")
        var o = IPTablesOptions()
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        let ipt = IPTablesProxier(ipt: SystemIPTables(runner: CommandRunner(netns: lab.node)), options: o)
        _ = try await ipt.sync(SyncRequest(snapshot: snap, changedServices: nil))
        let iptables = try measure(lab, bulk: "10.96.0.20", echo: "10.96.0.21")

        func gbit(_ v: Double) -> String { String(format: "%.2f Gbit/s", v / 1e9) }
        func cps(_ r: ConnectionRate.Result) -> String { String(format: "%.0f/s", r.perSecond) }
        func ms(_ v: Double) -> String { String(format: "%.3f ms", v * 1000) }
        func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.0f%%", a / b * 100) : "n/a" }
        var report = "| figure | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n"
        report += "| one bulk TCP stream (iperf3, \(seconds) s), userspace mode | \(gbit(us.throughput)) | direct to the pod: \(gbit(direct.throughput)) | \(ratio(us.throughput, direct.throughput)) | ≥ 50% |\n"
        report += "| one bulk TCP stream, userspace mode against socat proxying the same way | \(gbit(us.throughput)) | socat: \(gbit(socat.throughput)) (\(ratio(socat.throughput, direct.throughput)) of direct) | \(ratio(us.throughput, socat.throughput)) | |\n"
        report += "| one bulk TCP stream, iptables mode (kernel NAT, for scale) | \(gbit(iptables.throughput)) | direct: \(gbit(direct.throughput)) | \(ratio(iptables.throughput, direct.throughput)) | |\n"
        report += "| new connections per second (\(concurrency) clients: connect, 1-byte echo, close), userspace mode | \(cps(us.rate)) | iptables mode: \(cps(iptables.rate)) | \(ratio(us.rate.perSecond, iptables.rate.perSecond)) | reported |\n"
        report += "| new connections per second, userspace mode against socat and direct | \(cps(us.rate)) | socat: \(cps(socat.rate)); direct: \(cps(direct.rate)) | \(ratio(us.rate.perSecond, socat.rate.perSecond)) of socat, \(ratio(us.rate.perSecond, direct.rate.perSecond)) of direct | |\n"
        report += "| connection time p50 / p99, userspace mode | \(ms(us.rate.percentile(0.5))) / \(ms(us.rate.percentile(0.99))) | iptables mode: \(ms(iptables.rate.percentile(0.5))) / \(ms(iptables.rate.percentile(0.99))) | | |\n"
        if changesAt > 0 { report += try await changeCost(services: changesAt) }
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// One Service added to and removed from `services` others, each synced end to end (plan,
    /// listener, portal rules written), against `iptables-restore --noflush` of just the lines
    /// that change, in a namespace of its own.
    func changeCost(services: Int) async throws -> String {
        let lab = try Lab()
        defer { lab.destroy() }
        var tracker = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(lab.nodeClientIP)!]))
        let (fill, slices) = Bench.objects(services: services, endpoints: 2)
        for f in fill { tracker.update(service: f) }
        for sl in slices { tracker.update(slice: sl) }
        var d = DataPlaneOptions()
        d.netns = "/run/netns/\(lab.node)"
        let dataPlane = try DataPlane(options: d)
        defer { dataPlane.shutdownNow() }
        let runner = CommandRunner(netns: lab.node)
        let proxier = UserspaceProxier(dataPlane: dataPlane, ipt: SystemIPTables(runner: runner), options: UserspaceOptions())
        log("userspace mode: \(services) services, full sync")
        var (snap, _) = tracker.snapshot()
        var t = Date()
        _ = try await proxier.sync(SyncRequest(snapshot: snap, changedServices: nil))
        log("  full sync \(fmt(Date().timeIntervalSince(t)))")
        var adds: [Double] = [], removes: [Double] = [], restores: [Double] = []
        for i in 0..<repeats * 3 {
            let name = "added-\(i)"
            tracker.update(service: Service(metadata: ObjectMeta(name: name, namespace: "bench"),
                                            spec: ServiceSpec(type: "NodePort", clusterIP: "10.111.0.\(i + 1)",
                                                              ports: [ServicePort(port: 80, targetPort: .int(8080), nodePort: 32000 + i)])))
            let changed: Set<NamespacedName> = [NamespacedName(namespace: "bench", name: name)]
            (snap, _) = tracker.snapshot()
            t = Date()
            _ = try await proxier.sync(SyncRequest(snapshot: snap, changedServices: changed))
            adds.append(Date().timeIntervalSince(t))
            // The baseline: the same five lines, for another address, through iptables-restore alone,
            // written by the same code the proxier writes them with.
            var other = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(lab.nodeClientIP)!]))
            other.update(service: Service(metadata: ObjectMeta(name: "base-\(i)", namespace: "bench"),
                                          spec: ServiceSpec(type: "NodePort", clusterIP: "10.112.0.\(i + 1)",
                                                            ports: [ServicePort(port: 80, targetPort: .int(8080), nodePort: 33000 + i)])))
            let (baseSnap, _) = other.snapshot()
            let basePlans = UserspacePlan.listeners(for: baseSnap, options: proxier.options)
            let basePort = await proxier.ports.values.first ?? 40000
            let baseRules = PortalChains.rules(Array(basePlans.values), ports: basePlans.mapValues { _ in basePort },
                                               hostIP: UserspacePlan.hostIP(baseSnap, options: proxier.options), options: proxier.options)
            let lines = PortalChains.delta(from: [], to: PortalChains.chains.flatMap { baseRules[$0.chain] ?? [] }) ?? ""
            t = Date()
            try runner.run(["iptables-restore", "-w", "5", "--noflush"], input: [.text(lines)])
            restores.append(Date().timeIntervalSince(t))
            tracker.delete(service: NamespacedName(namespace: "bench", name: name))
            (snap, _) = tracker.snapshot()
            t = Date()
            _ = try await proxier.sync(SyncRequest(snapshot: snap, changedServices: changed))
            removes.append(Date().timeIntervalSince(t))
        }
        try await proxier.cleanup()
        let add = median(adds), remove = median(removes), restore = median(restores)
        log("  one Service added: \(fmt(add)), removed: \(fmt(remove)); iptables-restore of five portal lines alone: \(fmt(restore))")
        var r = ""
        r += "| one NodePort Service added among \(services), userspace mode, end to end (median of \(adds.count)) | \(fmt(add)) | iptables-restore --noflush of its five portal lines alone: \(fmt(restore)) | \(String(format: "%.2f×", add / restore)) | reported |\n"
        r += "| the same Service removed again | \(fmt(remove)) | | \(String(format: "%.2f×", remove / restore)) | reported |\n"
        return r
    }

    /// Median throughput and connection rate of `repeats` runs through the given addresses.
    func measure(_ lab: Lab, bulk: String, echo: String) throws -> Figures {
        var tputs: [Double] = []
        var rates: [ConnectionRate.Result] = []
        for _ in 0..<repeats {
            tputs.append(try Netns.iperf(from: lab.client, to: bulk, seconds: seconds))
            let r = try ConnectionRate.run(netns: lab.client, ip: echo, port: 9090,
                                           concurrency: concurrency, duration: TimeInterval(seconds))
            if r.failed > 0 { log("  \(r.failed) connections failed") }
            rates.append(r)
        }
        let t = median(tputs)
        let r = rates.sorted { $0.perSecond < $1.perSecond }[rates.count / 2]
        log(String(format: "  throughput %.2f Gbit/s, %.0f connections/s", t / 1e9, r.perSecond))
        return Figures(throughput: t, rate: r)
    }
}
