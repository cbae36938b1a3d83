import ArgumentParser
import Foundation
import KubeAPI
import KubeClient
import KubeStore
import NetnsKit

/// The API server's figures: memory idle and holding many Services with their slices, how fast
/// 100 watchers hear of a write, writes per second and list latency, on SQLite and on etcd.
struct ServerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Measure switchyard server: memory, watch latency, writes per second and list latency (SQLite and etcd).")

    @Option(help: "Number of Services (each with an EndpointSlice).") var services = 10_000
    @Option(help: "Endpoints per slice.") var endpoints = 10
    @Option(help: "Concurrent watchers.") var watchers = 100
    @Option(help: "Writes the watchers are timed on.") var watchedWrites = 30
    @Option(help: "Concurrent writers while loading.") var writers = 8
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Flag(help: "Skip the etcd run.") var skipEtcd = false
    @Option(help: "Write the markdown results here too.") var out: String?

    static func rssMB(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Double(Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
    }

    struct Run {
        var controllerMB = 0.0, controllerSeconds = 0.0, afterAnswerP99 = 0.0
        var slowestWrite = 0.0, idleMB = 0.0, loadedMB = 0.0, writesPerSecond = 0.0, listMedian = 0.0, watchP50 = 0.0, watchP99 = 0.0, directWritesPerSecond = 0.0
    }

    /// Starts a server, loads it, and measures.
    func measure(etcd: EtcdProcess?) async throws -> Run {
        let server = try await BenchServer.start(binary: try switchyardBinary(switchyard), etcd: etcd)
        defer { server.stop() }
        let client = server.client
        var run = Run()
        // Idle after what a client does first (kubectl's discovery, a list), so the figure holds
        // the code a request runs and not only what is left after start-up. A second first: the
        // server unmaps its start-up code once it listens and its controller's first pass is done
        // (on an empty store, within milliseconds), and the requests are to come after that.
        try await Task.sleep(for: .seconds(1))
        for path in ["/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/api/v1/namespaces", "/api/v1/namespaces/default/services"] {
            _ = try await client.request("GET", path)
        }
        try await Task.sleep(for: .seconds(2))
        run.idleMB = Self.rssMB(server.process.processIdentifier)
        log("idle: \(String(format: "%.1f", run.idleMB)) MB")
        _ = try await client.request("POST", "/api/v1/namespaces", body: ["metadata": ["name": "bench"]])

        // Load: Services and their slices, `writers` at a time.
        let start = Date()
        try await byWriters(services) { i in
            let ip = IPAddress(ipv4: IPAddress("10.96.0.0")!.ipv4Value! + UInt32(i + 10)).description
            let svc: JSONValue = ["metadata": ["name": .string("svc-\(i)")],
                                  "spec": ["clusterIP": .string(ip), "ports": [["name": "http", "port": 80, "targetPort": 8080]]]]
            let r1 = try await client.request("POST", "/api/v1/namespaces/bench/services", body: svc)
            guard r1.status == 201 else { throw ValidationError("create service: \(r1.status) \(r1.body.text())") }
            let eps: [JSONValue] = (0..<endpoints).map { j in
                let n = i * endpoints + j
                return ["addresses": [.string(IPAddress(ipv4: IPAddress("10.128.0.0")!.ipv4Value! + UInt32(n + 2)).description)],
                        "conditions": ["ready": true], "nodeName": .string("node-\(j % 3)")]
            }
            let slice: JSONValue = ["metadata": ["name": .string("svc-\(i)-x"), "labels": ["kubernetes.io/service-name": .string("svc-\(i)")]],
                                    "addressType": "IPv4", "endpoints": .array(eps), "ports": [["name": "http", "port": 8080, "protocol": "TCP"]]]
            let r2 = try await client.request("POST", "/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices", body: slice)
            guard r2.status == 201 else { throw ValidationError("create slice: \(r2.status) \(r2.body.text())") }
        }
        let loadTime = Date().timeIntervalSince(start)
        run.writesPerSecond = Double(services * 2) / loadTime
        log("loaded \(services) services and slices: \(Int(run.writesPerSecond)) writes/s")
        try await Task.sleep(for: .seconds(1))
        run.loadedMB = Self.rssMB(server.process.processIdentifier)
        log("holding them: \(String(format: "%.1f", run.loadedMB)) MB")

        // List latency of every Service.
        var lists: [Double] = []
        for _ in 0..<5 {
            let s = Date()
            let r = try await client.request("GET", "/api/v1/services")
            lists.append(Date().timeIntervalSince(s))
            guard (r.body["items"]?.array?.count ?? 0) >= services else { throw ValidationError("list returned \(r.body["items"]?.array?.count ?? 0)") }
        }
        run.listMedian = median(lists)
        log("list of \(services) services: median \(fmt(run.listMedian))")

        // Watchers: each write's time until every watcher has it.
        let cm = try await client.request("POST", "/api/v1/namespaces/bench/configmaps", body: ["metadata": ["name": "watched"], "data": ["n": "0"]])
        let rv = cm.body[path: ["metadata", "resourceVersion"]]?.string ?? "0"
        let received = Received()
        var tasks: [Task<Void, Never>] = []
        for _ in 0..<watchers {
            let stream = try await client.watch("/api/v1/namespaces/bench/configmaps", query: ["resourceVersion": rv])
            tasks.append(Task {
                do {
                    for try await e in stream {
                        if let n = e[path: ["object", "data", "n"]]?.string, let i = Int(n) { await received.add(i, Date()) }
                    }
                } catch {}
            })
        }
        try await Task.sleep(for: .milliseconds(500))
        var sent: [Int: Date] = [:]
        var writeTimes: [Double] = []
        var acked: [Int: Date] = [:]
        for i in 1...watchedWrites {
            sent[i] = Date()
            _ = try await client.request("PATCH", "/api/v1/namespaces/bench/configmaps/watched", body: ["data": ["n": .string(String(i))]],
                                         contentType: "application/merge-patch+json")
            acked[i] = Date()
            writeTimes.append(acked[i]!.timeIntervalSince(sent[i]!))
            try await Task.sleep(for: .milliseconds(50))
        }
        writeTimes.sort()
        run.slowestWrite = writeTimes.last ?? 0
        try await Task.sleep(for: .seconds(1))
        for t in tasks { t.cancel() }
        var lat: [Double] = [], afterAck: [Double] = []
        for (i, times) in await received.times where sent[i] != nil {
            for t in times {
                lat.append(t.timeIntervalSince(sent[i]!))
                afterAck.append(max(0, t.timeIntervalSince(acked[i]!)))
            }
        }
        lat.sort()
        afterAck.sort()
        run.afterAnswerP99 = afterAck.isEmpty ? .infinity : p99(afterAck)
        let expected = watchers * watchedWrites
        if lat.count < expected { log("warning: \(expected - lat.count) of \(expected) watch deliveries missing") }
        run.watchP50 = lat.isEmpty ? .infinity : lat[lat.count / 2]
        run.watchP99 = lat.isEmpty ? .infinity : p99(lat)
        log("\(watchers) watchers: p50 \(fmt(run.watchP50)), p99 \(fmt(run.watchP99)) from the write to the event (\(lat.count) deliveries); "
            + "the writes themselves: median \(fmt(writeTimes[writeTimes.count / 2])), slowest \(fmt(run.slowestWrite)); "
            + "p99 from the write's answer to the event \(fmt(run.afterAnswerP99))")
        return run
    }

    actor Received {
        var times: [Int: [Date]] = [:]
        func add(_ i: Int, _ d: Date) { times[i, default: []].append(d) }
    }

    /// A fresh server with two ready Pods and `services` Services selecting them: its memory once
    /// the EndpointSlice and Endpoints controllers (embedded, the only controllers it runs) have
    /// written every slice and Endpoints object, which their caches keep.
    func controllerManaged(etcd: EtcdProcess?) async throws -> (mb: Double, seconds: Double) {
        let server = try await BenchServer.start(binary: try switchyardBinary(switchyard), etcd: etcd,
                                                 arguments: ["--disable-scheduler", "--controllers", "endpointslice,endpoint"])
        defer { server.stop() }
        let client = server.client
        _ = try await client.request("POST", "/api/v1/namespaces", body: ["metadata": ["name": "bench"]])
        // No serviceaccount controller runs here: the pods' account, made as it would.
        _ = try await client.request("POST", "/api/v1/namespaces/bench/serviceaccounts", body: ["metadata": ["name": "default"]])
        for (i, ip) in ["10.244.1.2", "10.244.1.3"].enumerated() {
            _ = try await client.request("POST", "/api/v1/namespaces/bench/pods", body: [
                "metadata": ["name": .string("p\(i)"), "labels": ["app": "web"]],
                "spec": ["nodeName": "node-a", "containers": [["name": "c", "image": "x", "ports": [["containerPort": 8080]]]]]])
            _ = try await client.request("PATCH", "/api/v1/namespaces/bench/pods/p\(i)/status", body: [
                "status": ["phase": "Running", "podIP": .string(ip), "conditions": [["type": "Ready", "status": "True"]]]],
                contentType: "application/merge-patch+json")
        }
        let start = Date()
        try await byWriters(services) { i in
            _ = try await client.request("POST", "/api/v1/namespaces/bench/services", body: [
                "metadata": ["name": .string("svc-\(i)")],
                "spec": ["selector": ["app": "web"], "ports": [["name": "http", "port": 80, "targetPort": 8080]]]])
        }
        // Polled with one small read (the controller takes Services in name order, svc-9999 last):
        // polling with full lists would measure what lists of 10,000 objects leave behind instead.
        for _ in 0..<3000 {
            if try await client.request("GET", "/api/v1/namespaces/bench/endpoints/svc-\(services - 1)").status == 200 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let seconds = Date().timeIntervalSince(start)
        try await Task.sleep(for: .seconds(2))
        let mb = Self.rssMB(server.process.processIdentifier)
        // Then checked whole.
        let slices = try await client.request("GET", "/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices").body["items"]?.array?.count ?? 0
        guard slices >= services else { throw ValidationError("the controller wrote \(slices) of \(services) slices") }
        log("\(services) Services selecting 2 Pods: every slice written \(String(format: "%.1f", seconds)) s after the first create; server at \(String(format: "%.1f", mb)) MB")
        return (mb, seconds)
    }

    /// `body(i)` for every i below `count`, `writers` at a time.
    func byWriters(_ count: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        try await switchyard_bench.byWriters(writers, count, body)
    }

    /// The store alone, in this process: the baseline the server's writes per second are set against.
    func direct(_ store: any Store, count: Int) async throws -> Double {
        let value = Data(String(repeating: "x", count: 600).utf8)
        let start = Date()
        try await byWriters(count) { i in try await store.create("/bench/k\(i)", value: value) }
        return Double(count) / Date().timeIntervalSince(start)
    }

    func run() async throws {
        var report = "| figure | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n"
        func rows(_ name: String, _ r: Run) {
            report += "| \(name): memory idle | \(String(format: "%.1f MB", r.idleMB)) | target 30 MB | \(String(format: "%.2f×", r.idleMB / 30)) | < 30 MB |\n"
            report += "| \(name): memory holding \(services) services + slices (\(endpoints) endpoints) | \(String(format: "%.1f MB", r.loadedMB)) | target 300 MB | \(String(format: "%.2f×", r.loadedMB / 300)) | < 300 MB |\n"
            report += "| \(name): memory holding \(services) services selecting 2 pods, their slices and Endpoints written by the EndpointSlice controller (all written in \(String(format: "%.0f s", r.controllerSeconds))) | \(String(format: "%.1f MB", r.controllerMB)) | target 300 MB | \(String(format: "%.2f×", r.controllerMB / 300)) | < 300 MB |\n"
            report += "| \(name): \(watchers) watchers, write to event (p50 \(fmt(r.watchP50)); slowest of the writes themselves \(fmt(r.slowestWrite)); p99 from the write's answer \(fmt(r.afterAnswerP99))) | p99 \(fmt(r.watchP99)) | target 50 ms | \(String(format: "%.2f×", r.watchP99 / 0.05)) | < 50 ms p99 |\n"
            report += "| \(name): writes per second through the API (\(writers) writers) | \(Int(r.writesPerSecond)) | the store alone: \(Int(r.directWritesPerSecond)) | \(String(format: "%.2f×", r.writesPerSecond / r.directWritesPerSecond)) | reported |\n"
            report += "| \(name): list of \(services) services | \(fmt(r.listMedian)) | | | reported |\n"
        }
        var sqlite = try await measure(etcd: nil)
        (sqlite.controllerMB, sqlite.controllerSeconds) = try await controllerManaged(etcd: nil)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-direct-\(UUID().uuidString).db")
        defer { try? FileManager.default.removeItem(at: tmp) }
        sqlite.directWritesPerSecond = try await direct(try SQLiteStore(path: tmp.path), count: 5000)
        log("SQLite store alone: \(Int(sqlite.directWritesPerSecond)) writes/s")
        rows("SQLite", sqlite)
        if !skipEtcd && EtcdProcess.available {
            let e1 = try EtcdProcess()
            var etcd = try await measure(etcd: e1)
            e1.stop()
            let e3 = try EtcdProcess()
            (etcd.controllerMB, etcd.controllerSeconds) = try await controllerManaged(etcd: e3)
            e3.stop()
            let e2 = try EtcdProcess()
            etcd.directWritesPerSecond = try await direct(try EtcdStore(servers: [e2.url]), count: 5000)
            e2.stop()
            log("etcd store alone: \(Int(etcd.directWritesPerSecond)) writes/s")
            rows("etcd", etcd)
        }
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}

/// `switchyard server` on a fresh data dir (on etcd when given) and a client for it, once it has
/// written its kubeconfig.
final class BenchServer {
    let dir: URL
    let process: Process
    let client: KubeClient

    private init(dir: URL, process: Process, client: KubeClient) {
        self.dir = dir
        self.process = process
        self.client = client
    }

    /// The server alone: the scheduler and the controllers it runs by default are left out
    /// (`--disable-…`), so its figures are the API server's; `embedded` keeps them.
    static func start(binary: String, etcd: EtcdProcess?, embedded: Bool = false, arguments: [String]? = nil) async throws -> BenchServer {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-server-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        var args = arguments ?? (embedded ? [] : ["--disable-scheduler", "--disable-controller-manager"])
        // Without the controller manager nothing makes the namespaces' default service accounts,
        // which the ServiceAccount admission plugin requires of every pod: it is off there, as
        // it was when these figures were first taken.
        if args.contains("--disable-controller-manager"), !args.contains("--disable-admission-plugins") {
            args += ["--disable-admission-plugins", "ServiceAccount"]
        }
        p.arguments = ["server", "--data-dir", dir.path, "--port", "0", "--log-level", "warning"] + (etcd.map { ["--etcd-servers", $0.urls.joined(separator: ",")] } ?? []) + args
        p.standardOutput = FileHandle.nullDevice
        do {
            try p.run()
            for _ in 0..<200 {
                if let k = try? Kubeconfig.load(path: dir.appendingPathComponent("kubeconfig").path) {
                    return BenchServer(dir: dir, process: p, client: KubeClient(config: k))
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw ValidationError("the server did not start")
        } catch {
            if p.isRunning { p.terminate(); p.waitUntilExit() }
            try? FileManager.default.removeItem(at: dir)
            throw error
        }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: dir)
    }
}
