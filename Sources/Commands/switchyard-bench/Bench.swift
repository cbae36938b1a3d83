import ArgumentParser
import Foundation
import KubeAPI
import KubeClient
import NetnsKit
import ProxyIPTables
import ProxyNFTables
import ProxySeam
import HostOS
import IPTablesKit

/// Benchmarks, reported as ratios against a baseline measured in the same run.
@main
struct BenchMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard-bench",
        abstract: "Benchmarks of the proxy modes, the CNI plugins and the API server, each against a baseline measured in the same run.",
        subcommands: [Bench.self, NFTBench.self, UserspaceBench.self, CNIBench.self, ServerBench.self, RenderBench.self, APIBench.self, SchedulerBench.self, KubeletBench.self, ReadinessBench.self, AuthzBench.self, WebhookBench.self, AuthFuzzBench.self, SecureServerBench.self, IngressBench.self, SnapshotBench.self, EtcdBench.self, ExplainBench.self, TraceCostBench.self, IPv6Bench.self], defaultSubcommand: Bench.self)
}

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iptables",
        abstract: "Measure the iptables mode against iptables-restore itself, in a throw-away network namespace.")

    @Option(help: "Number of services.") var services = 10_000
    @Option(help: "Endpoints per service.") var endpoints = 10
    @Option(help: "Repetitions of the one-endpoint change.") var repeats = 5
    @Option(help: "Write the markdown results here too.") var out: String?
    @Option(help: "The switchyard binary, for the memory figure.") var switchyard: String?
    @Option(help: "The iptables to measure with and against: system (whatever iptables-restore is here), legacy or nft.")
    var iptablesBackend = "system"

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the benchmark uses network namespaces") }
        let shims = try Self.selectIPTables(iptablesBackend)
        defer { if let shims { try? FileManager.default.removeItem(atPath: shims) } }
        var report = "| figure | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n"
        let (svcs, slices) = Self.objects(services: services, endpoints: endpoints)
        var tracker = ChangeTracker(node: NodeInfo(name: "node-a"))
        let t0 = Date()
        for s in svcs { tracker.update(service: s) }
        for s in slices { tracker.update(slice: s) }
        let (snap, _) = tracker.snapshot()
        let trackTime = Date().timeIntervalSince(t0)
        var opts = IPTablesOptions()
        opts.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        let renderer = IPTablesProxier(ipt: FakeIPTables(), options: opts)
        var renderTimes: [Double] = []
        var text = ""
        for _ in 0..<3 {
            let s = Date()
            text = renderer.render(snap)
            renderTimes.append(Date().timeIntervalSince(s))
        }
        let render = median(renderTimes)
        log("generated \(text.utf8.count / 1_000_000) MB of rules in \(fmt(render)) (tracker: \(fmt(trackTime)))")

        let ns = "sybench\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let runner = CommandRunner(netns: ns)
        let s1 = Date()
        try runner.run(["iptables-restore", "-w", "5", "--noflush", "--counters"], input: text)
        let restore = Date().timeIntervalSince(s1)
        log("iptables-restore loaded it into a fresh namespace in \(fmt(restore))")
        report += "| render \(services) services × \(endpoints) endpoints | \(fmt(render)) | iptables-restore of the result: \(fmt(restore)) | \(pct(render / restore)) | < 5% |\n"

        // One endpoint change, end to end, against iptables-restore of just that service's chains.
        let proxier = IPTablesProxier(ipt: SystemIPTables(runner: runner), options: opts)
        let s2 = Date()
        _ = try await proxier.sync(SyncRequest(snapshot: snap, changedServices: nil))
        let fullSync = Date().timeIntervalSince(s2)
        log("full sync over the loaded table (adopting it) in \(fmt(fullSync))")
        var changeTimes: [Double] = [], baseTimes: [Double] = []
        let victim = NamespacedName(namespace: "bench", name: "svc-\(services / 2)")
        var sl = slices[services / 2]
        for i in 0..<repeats {
            // Baseline: restore only the changed service's chains (as a partial sync would write them).
            let svcChains = Self.chainsText(for: victim, in: renderer.render(Self.single(snap, victim)))
            let b = Date()
            try runner.run(["iptables-restore", "-w", "5", "--noflush", "--counters"], input: svcChains)
            baseTimes.append(Date().timeIntervalSince(b))
            // Ours: event → snapshot → plan → restore.
            sl.endpoints![0].addresses = ["10.255.\(i / 250).\(i % 250 + 1)"]
            let c = Date()
            tracker.update(slice: sl)
            let (s, changed) = tracker.snapshot()
            let outcome = try await proxier.sync(SyncRequest(snapshot: s, changedServices: changed))
            changeTimes.append(Date().timeIntervalSince(c))
            precondition(!outcome.full, "expected a partial sync")
        }
        let change = median(changeTimes), base = median(baseTimes)
        log("one endpoint change: \(fmt(change)) (iptables-restore of that service's chains alone: \(fmt(base)))")
        report += "| one endpoint change at \(services) services, end to end | \(fmt(change)) | iptables-restore --noflush of that service's chains: \(fmt(base)) | \(String(format: "%.2f×", change / base)) | ≤ 1.3× |\n"
        report += "| full sync over an existing table (iptables-save + restore) | \(fmt(fullSync)) | | | |\n"

        if let bin = switchyard {
            let rss = try memory(bin: bin, svcs: svcs, slices: slices)
            report += "| peak memory of `switchyard proxy` holding \(services) services | \(rss / 1024) MB | | | < 100 MB |\n"
        }
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// Runs the real proxy on generated manifests in its own namespace and reads its peak RSS.
    func memory(bin: String, svcs: [Service], slices: [EndpointSlice]) throws -> Int {
        let ns = "sybenchm\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(ns)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try RenderBench.writeJSON(svcs, slices, to: dir.appendingPathComponent("all.json").path)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip", "netns", "exec", ns, bin, "proxy", "--hostname-override", "node-a", "--manifests", dir.path,
                       "--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", ""]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { _ = try? Sh.run(["ip", "netns", "exec", ns, "pkill", "-KILL", "-f", "switchyard proxy"]) }
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline {
            let r = try Sh.run(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:10256/healthz"])
            if r.out == "200" { break }
            usleep(200_000)
        }
        let pid = try Sh.must(["ip", "netns", "pids", ns]).split(separator: "\n").first.map(String.init) ?? ""
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        let kb = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        log("peak RSS of the proxy after its first sync: \(kb / 1024) MB")
        return kb
    }

    /// Puts `iptables`, `iptables-save` and `iptables-restore` of the chosen backend first on
    /// PATH, for this process and what it starts (the proxy included), as Debian's
    /// alternatives would. Returns the directory of those links.
    static func selectIPTables(_ backend: String) throws -> String? {
        guard backend != "system" else { return nil }
        guard ["legacy", "nft"].contains(backend) else { throw ValidationError("--iptables-backend: system, legacy or nft") }
        let multi = "/usr/sbin/xtables-\(backend)-multi"
        guard FileManager.default.isExecutableFile(atPath: multi) else { throw ValidationError("\(multi) is not installed") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-bench-\(backend)-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for tool in ["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"] {
            try? FileManager.default.removeItem(atPath: dir + "/" + tool)
            try FileManager.default.createSymbolicLink(atPath: dir + "/" + tool, withDestinationPath: multi)
        }
        setenv("PATH", dir + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"), 1)
        log("iptables: \(backend) backend (\(multi))")
        return dir
    }

    static func objects(services: Int, endpoints: Int) -> ([Service], [EndpointSlice]) {
        var svcs: [Service] = [], slices: [EndpointSlice] = []
        for i in 0..<services {
            let ip = IPAddress(ipv4: IPAddress("10.96.0.0")!.ipv4Value! + UInt32(i + 10)).description
            svcs.append(Service(metadata: ObjectMeta(name: "svc-\(i)", namespace: "bench"),
                                spec: ServiceSpec(clusterIP: ip, ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))])))
            let eps = (0..<endpoints).map { j -> Endpoint in
                let n = i * endpoints + j
                return Endpoint(addresses: [IPAddress(ipv4: IPAddress("10.128.0.0")!.ipv4Value! + UInt32(n + 2)).description],
                                conditions: EndpointConditions(ready: true), nodeName: "node-\(j % 3)")
            }
            slices.append(EndpointSlice(metadata: ObjectMeta(name: "svc-\(i)-x", namespace: "bench",
                                                             labels: [EndpointSlice.serviceNameLabel: "svc-\(i)"]),
                                        endpoints: eps, ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080)]))
        }
        return (svcs, slices)
    }

    /// A snapshot with one service only.
    static func single(_ snap: ProxySnapshot, _ svc: NamespacedName) -> ProxySnapshot {
        var s = snap
        s.servicePorts = snap.servicePorts.filter { $0.key.service == svc }
        s.endpoints = snap.endpoints.filter { $0.key.service == svc }
        return s
    }

    /// The nat-table restore input for one service's own chains (no top-level chains).
    static func chainsText(for svc: NamespacedName, in rendered: String) -> String {
        var decl = "", rules = ""
        var inNat = false
        for line in rendered.split(separator: "\n") {
            if line == "*nat" { inNat = true; continue }
            if line == "COMMIT" { inNat = false; continue }
            guard inNat else { continue }
            if line.hasPrefix(":KUBE-SVC-") || line.hasPrefix(":KUBE-SEP-") { decl += line + "\n" }
            if line.hasPrefix("-A KUBE-SVC-") || line.hasPrefix("-A KUBE-SEP-") { rules += line + "\n" }
        }
        return "*nat\n" + decl + rules + "COMMIT\n"
    }

}

func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }

/// The 99th percentile of values already sorted (the largest below 100 of them).
func p99(_ sorted: [Double]) -> Double { sorted[min(sorted.count - 1, sorted.count * 99 / 100)] }

/// `body(i)` for every i below `count`, `writers` at a time (writer w takes w, w + writers, …).
func byWriters(_ writers: Int, _ count: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
            group.addTask {
                for i in stride(from: w, to: count, by: writers) { try await body(i) }
            }
        }
        try await group.waitForAll()
    }
}

/// The `switchyard` binary a bench starts: the one given, or the one built beside the bench.
func switchyardBinary(_ given: String?) throws -> String {
    if let given { return given }
    let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    let p = me.deletingLastPathComponent().appendingPathComponent("switchyard").path
    guard FileManager.default.isExecutableFile(atPath: p) else { throw ValidationError("build switchyard first (or pass --switchyard)") }
    return p
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
func fmt(_ s: Double) -> String { s < 1 ? String(format: "%.2f ms", s * 1000) : String(format: "%.2f s", s) }
func pct(_ r: Double) -> String { String(format: "%.1f%%", r * 100) }
func log(_ s: String) { FileHandle.standardError.write(Data("bench: \(s)\n".utf8)) }

/// When each pod of a namespace was first seen in a state (`when`), from a watch started now.
final class PodWatch: @unchecked Sendable {
    let lock = NSLock()
    var seen: [String: ContinuousClock.Instant] = [:]
    var task: Task<Void, Never>?
    let what: String

    init(_ client: KubeClient, ns: String, what: String, when: @escaping @Sendable (JSONValue) -> Bool) async throws {
        self.what = what
        let list = try await client.request("GET", "/api/v1/namespaces/\(ns)/pods", query: ["limit": "1"])
        let rv = list.body[path: ["metadata", "resourceVersion"]]?.string ?? "0"
        let events = try await client.watch("/api/v1/namespaces/\(ns)/pods", query: ["resourceVersion": rv])
        task = Task {
            do {
                for try await e in events {
                    let o = e["object"] ?? .null
                    if when(o) {
                        let now = ContinuousClock.now
                        self.lock.withLock { if self.seen[o.name] == nil { self.seen[o.name] = now } }
                    }
                }
            } catch {}
        }
    }

    var count: Int { lock.withLock { seen.count } }
    func wait(for n: Int, timeout: Double) async throws {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while count < n {
            guard ContinuousClock.now < deadline else { throw ValidationError("only \(count) of \(n) pods were \(what) within \(Int(timeout)) s") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
    func stop() { task?.cancel() }
}
