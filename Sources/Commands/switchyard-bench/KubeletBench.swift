import ArgumentParser
import ControllerKit
import CRI
import Foundation
import HostOS
import Images
import KubeAPI
import KubeClient
import LabServices

/// The kubelet's figures against containerd alone: pod start-up (created → Ready) for pods
/// spread over two nodes with their images present, against the same sandboxes and containers
/// run through CRI directly in the same run; the kubelet's memory with its pods running.
struct KubeletBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kubelet",
        abstract: "Measure pod start-up through `switchyard kubelet` on containerd against containerd alone.")

    @Option(help: "Pods started (spread over the nodes).") var pods = 30
    @Option(help: "Nodes, each with a containerd and a kubelet of its own.") var nodes = 2
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "The switchyard-cni binary.") var cni: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        let binary = try switchyardBinary(switchyard)
        try await Self.withNodes(nodes, binary: binary, cni: cni, tag: "kubelet") { lab, _ in try await measure(binary: binary, lab: lab) }
    }

    /// `count` runtime nodes (each its containerd, our CNI plugin, images from a registry of the
    /// lab's images), given to `body` with a work directory; all of it gone after, also on failure.
    static func withNodes(_ count: Int, binary: String, cni: String?, tag: String, _ body: ([RuntimeNode], URL) async throws -> Void) async throws {
        guard RuntimeNode.available else { throw ValidationError("needs root, containerd, runc and docker-registry (scripts/setup.sh)") }
        let plugin = cni ?? URL(fileURLWithPath: binary).deletingLastPathComponent().appendingPathComponent("switchyard-cni").path
        guard FileManager.default.isExecutableFile(atPath: plugin) else { throw ValidationError("\(plugin): build switchyard-cni first") }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-\(tag)-\(getpid())")
        let registry = try RegistryProcess(dir: work.appendingPathComponent("registry"), host: "0.0.0.0")
        defer { registry.stop(); try? FileManager.default.removeItem(at: work) }
        _ = try await LabImages.pushAll(to: try RegistryClient(url: "http://127.0.0.1:\(registry.port)"))
        var lab: [RuntimeNode] = []
        do {
            for _ in 0..<count { lab.append(try await RuntimeNode.make(registryPort: registry.port, pluginBinary: plugin, cniConfig: false)) }
            try await body(lab, work)
        } catch {
            for n in lab { await n.close() }
            throw error
        }
        for n in lab { await n.close() }
    }

    static let image = "switchyard/busybox:latest"

    func measure(binary: String, lab: [RuntimeNode]) async throws {
        let server = try await BenchServer.start(binary: binary, etcd: nil)
        defer { server.stop() }
        let api = API(server.client, fieldManager: "bench")
        let kubeconfig = server.dir.appendingPathComponent("kubeconfig").path
        let kubelets = try await Self.startKubelets(binary: binary, lab: lab, kubeconfig: kubeconfig, api: api)
        defer { for k in kubelets where k.isRunning { k.terminate(); k.waitUntilExit() } }
        log("\(lab.count) nodes ready; pulling the image on each")
        for n in lab { _ = try await n.cri.pullImage(Self.image, sandboxConfig: nil); _ = try await n.cri.pullImage("switchyard/pause:latest", sandboxConfig: nil) }

        // 1. containerd alone: the same sandboxes and containers through CRI, all at once.
        log("containerd alone: \(pods) pods")
        let direct = try await directRun(lab, tag: "direct")
        try await cleanRuntime(lab)

        // 2. The kubelets: pods created (bound to the nodes round robin), each timed to Ready.
        log("kubelet: \(pods) pods")
        let latencies = try await Self.timeStartup(server.client, api, pods: pods, nodes: lab.count, namespace: "startup")
        try await Task.sleep(for: .seconds(3))
        let rss = kubelets.map { SchedulerBench.rss($0.processIdentifier) }
        func q(_ a: [Double], _ p: Double) -> Double { a[min(a.count - 1, Int(Double(a.count) * p))] }
        let (kp50, kp99, dp50, dp99) = (q(latencies, 0.5), q(latencies, 0.99), q(direct, 0.5), q(direct, 0.99))
        log("kubelet p50 \(fmt(kp50)) p99 \(fmt(kp99)); containerd alone p50 \(fmt(dp50)) p99 \(fmt(dp99)); RSS \(rss.map { String(format: "%.1f", $0) })")
        let table = ["| Figure | Measured | Baseline (same run) | Ratio | Target |", "|---|---|---|---|---|",
                     "| Pod start-up (created → Ready), \(pods) pods over \(lab.count) nodes, p50 | \(fmt(kp50)) | \(fmt(dp50)) containerd alone (sandbox + container through CRI) | \(String(format: "%.2f×", kp50 / dp50)) | — |",
                     "| Pod start-up (created → Ready), \(pods) pods over \(lab.count) nodes, p99 | \(fmt(kp99)) | \(fmt(dp99)) containerd alone | \(String(format: "%.2f×", kp99 / dp99)) | p99 ≤ 5 s (SLO); within 1.5× of containerd alone |",
                     "| `switchyard kubelet` RSS, \(pods / lab.count) pods each | \(String(format: "%.1f MB", rss.max() ?? 0)) (max of \(lab.count)) | — | — | under 40 MB |"].joined(separator: "\n")
        print(table)
        if let out { try (table + "\n").write(toFile: out, atomically: true, encoding: .utf8) }
        try await SchedulerBench.dropNamespace("startup", api)
        try await Task.sleep(for: .seconds(3))
    }

    /// A kubelet per node against the server (`extra` arguments after the usual), each node given
    /// its pod CIDR as node IPAM would; back once every node is Ready.
    static func startKubelets(binary: String, lab: [RuntimeNode], kubeconfig: String, api: API, extra: [String] = ["--log-level", "warning"]) async throws -> [Process] {
        var kubelets: [Process] = []
        do {
            for (i, n) in lab.enumerated() {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: binary)
                p.arguments = ["kubelet", "--kubeconfig", kubeconfig, "--hostname-override", "node-\(i)", "--node-ip", n.nodeIP,
                               "--container-runtime-endpoint", n.containerd.endpoint, "--root-dir", n.dir.appendingPathComponent("kubelet").path,
                               "--pod-logs-dir", n.dir.appendingPathComponent("pods").path, "--cni-conf-dir", n.cniConfDir,
                               // Both on this host: each its own port for its API.
                               "--port", "0"] + extra
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                kubelets.append(p)
            }
            // Node IPAM's part: each node's range, which its kubelet writes for the CNI plugin.
            for (i, n) in lab.enumerated() {
                for _ in 0..<200 { if (try? await api.get("/api/v1/nodes/node-\(i)")) != nil { break }; try await Task.sleep(for: .milliseconds(50)) }
                _ = try await api.mergePatch("/api/v1/nodes/node-\(i)", ["spec": ["podCIDR": .string(n.podCIDR)]])
            }
            for i in lab.indices {
                var ready = false
                for _ in 0..<600 where !ready {
                    let node = try await api.get("/api/v1/nodes/node-\(i)")
                    ready = node[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
                    if !ready { try await Task.sleep(for: .milliseconds(100)) }
                }
                guard ready else { throw ValidationError("node-\(i) did not become Ready (its runtime's network)") }
            }
            return kubelets
        } catch {
            for k in kubelets where k.isRunning { k.terminate(); k.waitUntilExit() }
            throw error
        }
    }

    /// Pod `p-i`, bound to the nodes round robin: one container of the image, sleeping.
    static func pod(_ i: Int, nodes: Int) -> JSONValue {
        ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string("p-\(i)")],
         "spec": ["nodeName": .string("node-\(i % nodes)"), "terminationGracePeriodSeconds": 0,
                  "containers": [["name": "main", "image": .string(image), "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]]]]]
    }

    /// `pods` pods created at once in a new `namespace`, bound to the nodes round robin: each
    /// one's time from its create to its Ready status seen through a watch, sorted.
    static func timeStartup(_ client: KubeClient, _ api: API, pods: Int, nodes: Int, namespace: String) async throws -> [Double] {
        _ = try await api.create("/api/v1/namespaces", ["metadata": ["name": .string(namespace)]])
        let watch = try await PodWatch(client, ns: namespace, what: "Ready") {
            $0[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
        }
        var created: [String: ContinuousClock.Instant] = [:]
        try await withThrowingTaskGroup(of: (String, ContinuousClock.Instant).self) { g in
            for i in 0..<pods {
                g.addTask {
                    let t = ContinuousClock.now
                    _ = try await api.create("/api/v1/namespaces/\(namespace)/pods", pod(i, nodes: nodes))
                    return ("p-\(i)", t)
                }
            }
            for try await (name, t) in g { created[name] = t }
        }
        try await watch.wait(for: pods, timeout: 300)
        watch.stop()
        return watch.lock.withLock { watch.seen }.compactMap { name, at in created[name].map { (at - $0).seconds } }.sorted()
    }

    /// Every pod's sandbox and container through CRI, all at once: each pod's time to its
    /// container started.
    func directRun(_ lab: [RuntimeNode], tag: String) async throws -> [Double] {
        let start = ContinuousClock.now
        return try await withThrowingTaskGroup(of: Double.self) { g in
            for i in 0..<pods {
                let n = lab[i % lab.count]
                g.addTask {
                    let config = Runtime_V1_PodSandboxConfig.with {
                        $0.metadata = .with { $0.name = "\(tag)-\(i)"; $0.namespace = "bench"; $0.uid = UUID().uuidString.lowercased() }
                        $0.hostname = "\(tag)-\(i)"
                        $0.logDirectory = n.dir.appendingPathComponent("direct-logs/\(tag)-\(i)").path
                        $0.linux = .with { _ in }
                    }
                    let sandbox = try await n.cri.runPodSandbox(config, runtimeHandler: "")
                    let c = try await n.cri.createContainer(sandbox: sandbox, .with {
                        $0.metadata = .with { $0.name = "main" }
                        $0.image = .with { $0.image = Self.image }
                        $0.command = ["sleep", "3600"]
                        $0.logPath = "main/0.log"
                    }, sandboxConfig: config)
                    try await n.cri.startContainer(c)
                    return (ContinuousClock.now - start).seconds
                }
            }
            var out: [Double] = []
            for try await t in g { out.append(t) }
            return out.sorted()
        }
    }

    func cleanRuntime(_ lab: [RuntimeNode]) async throws {
        for n in lab {
            for s in try await n.cri.listPodSandbox(nil) {
                try? await n.cri.stopPodSandbox(s.id)
                try? await n.cri.removePodSandbox(s.id)
            }
        }
    }
}
