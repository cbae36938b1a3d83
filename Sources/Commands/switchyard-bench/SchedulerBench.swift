import ArgumentParser
import Foundation
import ControllerKit
import FakeNodes
import KubeAPI
import KubeClient

/// The scheduler's and the controllers' figures, each against what the same API server does
/// without them in the same run: scheduling throughput at 1,000 nodes against binding the same
/// pods directly; pod-created-to-bound latency with pods arriving at a steady rate; a
/// Deployment scaled from 0 to 1,000 against creating and binding 1,000 pods directly; the
/// memory of `switchyard scheduler` and `switchyard controller-manager` at that scale.
struct SchedulerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Measure the scheduler and the controllers against direct writes to the same API server.")

    @Option(help: "Fake nodes.") var nodes = 1000
    @Option(help: "Pods scheduled in the throughput run.") var pods = 10_000
    @Option(help: "Pods per second in the latency run.") var rate = 100
    @Option(help: "Pods created in the latency run.") var latencyPods = 1000
    @Option(help: "Nodes the Deployment may use.") var deploymentNodes = 100
    @Option(help: "The Deployment's replicas.") var replicas = 1000
    @Option(help: "Concurrent writers for the direct runs (the scheduler binds 16 at a time).") var writers = 16
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    /// A pod with requests; `direct` ones name a scheduler that does not exist (the bench binds them itself).
    static func pod(_ name: String, ns: String, labels: [String: String] = [:], nodeSelector: [String: String] = [:], direct: Bool = false) -> JSONValue {
        var spec: JSONValue = ["containers": [["name": "c", "image": "registry.example/app:1", "resources": ["requests": ["cpu": "100m", "memory": "64Mi"]]]]]
        if direct { spec["schedulerName"] = "bench-direct" }
        if !nodeSelector.isEmpty { spec["nodeSelector"] = .object(nodeSelector.mapValues { .string($0) }) }
        return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name), "namespace": .string(ns), "labels": .object(labels.mapValues { .string($0) })],
                "spec": spec]
    }

    /// Runs `body(i)` for i in 0..<count with `writers` at once; the seconds it took.
    func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { g in
            let next = Counter()
            for _ in 0..<writers {
                g.addTask {
                    while true {
                        let i = next.take()
                        if i >= count { return }
                        try await body(i)
                    }
                }
            }
            try await g.waitForAll()
        }
        return (ContinuousClock.now - start).seconds
    }

    final class Counter: @unchecked Sendable {
        let lock = NSLock()
        var n = 0
        func take() -> Int { lock.withLock { defer { n += 1 }; return n } }
    }

    /// When each pod of `ns` was first seen bound, from a watch started now.
    static func bindWatch(_ client: KubeClient, ns: String) async throws -> PodWatch {
        try await PodWatch(client, ns: ns, what: "bound") { !($0[path: ["spec", "nodeName"]]?.string ?? "").isEmpty }
    }

    func start(_ binary: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// VmRSS in MB (the log also gets the anonymous and file-backed parts).
    static func rss(_ pid: Int32) -> Double {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            (text.split(separator: "\n").first { $0.hasPrefix(name + ":") }?.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0) / 1024
        }
        log(String(format: "pid %d: VmRSS %.1f MB (anonymous %.1f, file %.1f)", pid, field("VmRSS"), field("RssAnon"), field("RssFile")))
        return field("VmRSS")
    }

    func run() async throws {
        let binary = try switchyardBinary(switchyard)
        let server = try await BenchServer.start(binary: binary, etcd: nil)
        defer { server.stop() }
        let client = server.client
        let kubeconfig = server.dir.appendingPathComponent("kubeconfig").path
        let api = API(client, fieldManager: "bench")
        for ns in ["direct", "sched", "latency", "deploy-direct", "deploy"] {
            _ = try await api.create("/api/v1/namespaces", ["metadata": ["name": .string(ns)]])
        }
        log("registering \(nodes) nodes")
        let fake = FakeNodes(api: api, prefix: "node-", count: nodes, cpu: "32", memory: "256Gi", pods: 110,
                             labels: [:])
        try await fake.register()
        // The Deployment's pool.
        _ = try await concurrently(deploymentNodes) { i in
            _ = try await api.mergePatch("/api/v1/nodes/node-\(i)", ["metadata": ["labels": ["pool": "deploy"]]])
        }
        let nodeCount = nodes
        var lines: [String] = []

        // 1. Throughput: the same pods bound directly, then by the scheduler.
        log("creating \(pods) pods and binding them directly")
        _ = try await concurrently(pods) { i in _ = try await api.create("/api/v1/namespaces/direct/pods", Self.pod("p-\(i)", ns: "direct", direct: true)) }
        // The same watch on both sides: the server streams every binding to a watcher in both runs.
        let directWatch = try await Self.bindWatch(client, ns: "direct")
        let direct = try await concurrently(pods) { i in
            _ = try await api.create("/api/v1/namespaces/direct/pods/p-\(i)/binding",
                                     ["apiVersion": "v1", "kind": "Binding", "metadata": ["name": .string("p-\(i)")],
                                      "target": ["kind": "Node", "name": .string("node-\(i % nodeCount)")]])
        }
        try await directWatch.wait(for: pods, timeout: 120)
        directWatch.stop()
        let directRate = Double(pods) / direct
        try await Self.dropNamespace("direct", api)
        log("direct bindings: \(Int(directRate))/s; creating \(pods) pods for the scheduler")
        _ = try await concurrently(pods) { i in _ = try await api.create("/api/v1/namespaces/sched/pods", Self.pod("p-\(i)", ns: "sched")) }
        let watch = try await Self.bindWatch(client, ns: "sched")
        let scheduler = try start(binary, ["scheduler", "--kubeconfig", kubeconfig, "--leader-elect=false", "--log-level", "warning"])
        defer { if scheduler.isRunning { scheduler.terminate(); scheduler.waitUntilExit() } }
        try await watch.wait(for: pods, timeout: 600)
        watch.stop()
        let times = watch.lock.withLock { Array(watch.seen.values) }.sorted()
        let span = (times.last! - times.first!).seconds
        let schedRate = Double(pods - 1) / span
        // Resident memory once the scheduler is idle (it hands freed pages back every 10 s).
        try await Task.sleep(for: .seconds(12))
        let schedulerRSS = Self.rss(scheduler.processIdentifier)
        lines.append("| Scheduling throughput, \(nodes) nodes, \(pods) pods with requests | \(Int(schedRate)) pods/s | \(Int(directRate)) bindings/s written directly | \(pct(schedRate / directRate)) | at least 80% |")
        log("scheduler: \(Int(schedRate)) pods/s (\(pct(schedRate / directRate)) of direct), RSS \(String(format: "%.1f", schedulerRSS)) MB")
        let recorded = (try await api.list("/api/v1/namespaces/sched/events", query: ["limit": "1"]))[path: ["metadata", "remainingItemCount"]]?.int.map { $0 + 1 } ?? 0
        log("scheduler: \(recorded) Scheduled events recorded for \(pods) pods (the recorder drops what exceeds its queue, as upstream's)")

        // 2. Latency: pods arriving at `rate` per second, created → bound.
        log("latency: \(latencyPods) pods at \(rate)/s")
        let lat = try await Self.bindWatch(client, ns: "latency")
        let created = CreatedTimes()
        let interval = 1.0 / Double(rate)
        let t0 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<latencyPods {
                let due = t0 + .seconds(Double(i) * interval)
                try await Task.sleep(until: due, clock: .continuous)
                g.addTask {
                    let before = ContinuousClock.now
                    _ = try await api.create("/api/v1/namespaces/latency/pods", Self.pod("l-\(i)", ns: "latency"))
                    created.set("l-\(i)", before)
                }
            }
            try await g.waitForAll()
        }
        try await lat.wait(for: latencyPods, timeout: 120)
        lat.stop()
        let latencies = lat.lock.withLock { lat.seen }.compactMap { name, at in created.get(name).map { (at - $0).seconds } }.sorted()
        let p50 = latencies[latencies.count / 2], p99 = switchyard_bench.p99(latencies)
        lines.append("| Scheduling latency (created → bound) p99, \(nodes) nodes, \(rate) pods/s | \(fmt(p99)) (p50 \(fmt(p50))) | — | — | under 50 ms |")
        log("latency p50 \(fmt(p50)), p99 \(fmt(p99))")

        // 3. A Deployment from 0 to `replicas` on `deploymentNodes` nodes, against creating and binding as many pods directly.
        log("deployment: \(replicas) pods created and bound directly on \(deploymentNodes) nodes")
        let pool = deploymentNodes
        let deployDirectWatch = try await Self.bindWatch(client, ns: "deploy-direct")
        let directDeploy = try await concurrently(replicas) { i in
            _ = try await api.create("/api/v1/namespaces/deploy-direct/pods", Self.pod("d-\(i)", ns: "deploy-direct", nodeSelector: ["pool": "deploy"], direct: true))
            _ = try await api.create("/api/v1/namespaces/deploy-direct/pods/d-\(i)/binding",
                                     ["apiVersion": "v1", "kind": "Binding", "metadata": ["name": .string("d-\(i)")],
                                      "target": ["kind": "Node", "name": .string("node-\(i % pool)")]])
        }
        deployDirectWatch.stop()
        try await Self.dropNamespace("deploy-direct", api)
        let manager = try start(binary, ["controller-manager", "--kubeconfig", kubeconfig, "--leader-elect=false", "--log-level", "warning"])
        defer { if manager.isRunning { manager.terminate(); manager.waitUntilExit() } }
        var template = Self.pod("x", ns: "deploy", labels: ["app": "scale"], nodeSelector: ["pool": "deploy"])
        template["metadata"] = ["labels": ["app": "scale"]]
        _ = try await api.create("/apis/apps/v1/namespaces/deploy/deployments",
                                 ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "scale"],
                                  "spec": ["replicas": 0, "selector": ["matchLabels": ["app": "scale"]], "template": template]])
        // The controller manager has synced once the Deployment has its (empty) ReplicaSet.
        for _ in 0..<600 {
            let sets = try await api.list("/apis/apps/v1/namespaces/deploy/replicasets")["items"]?.array ?? []
            if !sets.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let dw = try await Self.bindWatch(client, ns: "deploy")
        let s0 = ContinuousClock.now
        _ = try await api.mergePatch("/apis/apps/v1/namespaces/deploy/deployments/scale", ["spec": ["replicas": .int(Int64(replicas))]])
        try await dw.wait(for: replicas, timeout: 600)
        let deployTime = (ContinuousClock.now - s0).seconds
        dw.stop()
        lines.append("| Deployment 0 → \(replicas) replicas bound, \(deploymentNodes) nodes | \(fmt(deployTime)) | \(fmt(directDeploy)) creating and binding directly | \(String(format: "%.2f×", deployTime / directDeploy)) | within 2× |")
        log("deployment: \(fmt(deployTime)) against \(fmt(directDeploy)) direct")
        // Memory at 1,000 nodes and (about) 10,000 pods plus what the runs added, once idle.
        try await Task.sleep(for: .seconds(12))
        let managerRSS = Self.rss(manager.processIdentifier)
        let total = (try await api.list("/api/v1/pods", query: ["limit": "1"]))[path: ["metadata", "remainingItemCount"]]?.int.map { $0 + 1 } ?? 0
        lines.append("| `switchyard scheduler` RSS, \(nodes) nodes, \(pods) pods | \(String(format: "%.1f MB", schedulerRSS)) | — | — | under 60 MB |")
        lines.append("| `switchyard controller-manager` RSS, \(nodes) nodes, \(total) pods | \(String(format: "%.1f MB", managerRSS)) | — | — | under 60 MB |")
        let table = (["| Figure | Measured | Baseline (same run) | Ratio | Target |", "|---|---|---|---|---|"] + lines).joined(separator: "\n")
        print(table)
        if let out { try (table + "\n").write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// A baseline's pods go at once (grace 0: no kubelet would finish their graceful deletion),
    /// then their namespace, which the namespace controller finalizes once it runs.
    static func dropNamespace(_ ns: String, _ api: API) async throws {
        try await api.delete("/api/v1/namespaces/\(ns)/pods", options: ["kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0])
        try await api.delete("/api/v1/namespaces/\(ns)")
    }

    final class CreatedTimes: @unchecked Sendable {
        let lock = NSLock()
        var at: [String: ContinuousClock.Instant] = [:]
        func set(_ k: String, _ t: ContinuousClock.Instant) { lock.withLock { at[k] = t } }
        func get(_ k: String) -> ContinuousClock.Instant? { lock.withLock { at[k] } }
    }
}
