import ArgumentParser
import ControllerKit
import CRI
import Foundation
import HostOS
import Images
import KubeAPI
import KubeClient
import LabServices
import NetnsKit
import Synchronization

/// Readiness to traffic, the whole path: a pod's readiness probe starts failing → the kubelet
/// marks it not Ready → the EndpointSlice controller marks its endpoint not ready → the node's
/// proxy stops sending it new connections (and back again). Two pods of a Deployment behind a
/// Service on one node (`switchyard agent`: the kubelet on containerd and the iptables proxy),
/// `switchyard server` with its controllers beside it; a client in the node's namespace opens a
/// new connection to the ClusterIP every few milliseconds and notes which pod answers. The
/// baseline is the probe's `periodSeconds`: the kubelet cannot see a change sooner.
struct ReadinessBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "readiness",
        abstract: "Measure readiness change → EndpointSlice updated → traffic moved, through `switchyard agent` on containerd.")

    @Option(help: "Times a pod is made unready (and ready again).") var rounds = 20
    @Option(help: "The readiness probe's periodSeconds.") var period = 1
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "The switchyard-cni binary.") var cni: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        guard RuntimeNode.available else { throw ValidationError("needs root, containerd, runc and docker-registry (scripts/setup.sh)") }
        let binary = try switchyardBinary(switchyard)
        let plugin = cni ?? URL(fileURLWithPath: binary).deletingLastPathComponent().appendingPathComponent("switchyard-cni").path
        guard FileManager.default.isExecutableFile(atPath: plugin) else { throw ValidationError("\(plugin): build switchyard-cni first") }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-readiness-\(getpid())")
        let registry = try RegistryProcess(dir: work.appendingPathComponent("registry"), host: "0.0.0.0")
        defer { registry.stop(); try? FileManager.default.removeItem(at: work) }
        _ = try await LabImages.pushAll(to: try RegistryClient(url: "http://127.0.0.1:\(registry.port)"))
        let node = try await RuntimeNode.make(registryPort: registry.port, pluginBinary: plugin, cniConfig: false)
        do {
            try await measure(binary: binary, node: node)
        } catch {
            await node.close()
            throw error
        }
        await node.close()
    }

    /// When each pod answered, from the client's loop.
    final class Answers: Sendable {
        let log = Mutex<[(at: ContinuousClock.Instant, pod: String)]>([])
        let stop = Atomic<Bool>(false)
    }

    func measure(binary: String, node: RuntimeNode) async throws {
        let server = try await BenchServer.start(binary: binary, etcd: nil, arguments: ["--bind-address", node.hostIP])
        defer { server.stop() }
        let api = API(server.client, fieldManager: "bench")
        let kubeconfig = server.dir.appendingPathComponent("kubeconfig").path
        let agent = CommandRunner.process(["nsenter", "--net=/run/netns/\(node.netns)", binary, "agent", "--kubeconfig", kubeconfig,
                                           "--hostname-override", "node-0", "--node-ip", node.nodeIP,
                                           "--container-runtime-endpoint", node.containerd.endpoint,
                                           "--root-dir", node.dir.appendingPathComponent("kubelet").path,
                                           "--pod-logs-dir", node.dir.appendingPathComponent("pods").path, "--cni-conf-dir", node.cniConfDir,
                                           "--proxy-mode", "iptables", "--healthz-bind-address", "", "--metrics-bind-address", ""])
        agent.standardOutput = FileHandle.nullDevice
        try agent.run()
        defer { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
        // Node IPAM's part (the server's controller manager allocates no CIDRs by default).
        for _ in 0..<200 { if (try? await api.get("/api/v1/nodes/node-0")) != nil { break }; try await Task.sleep(for: .milliseconds(50)) }
        _ = try await api.mergePatch("/api/v1/nodes/node-0", ["spec": ["podCIDR": .string(node.podCIDR)]])
        for _ in 0..<300 {
            let n = try? await api.get("/api/v1/nodes/node-0")
            if n?[path: ["status", "conditions"]]?.array?.first(where: { $0["type"] == "Ready" })?["status"] == "True" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        _ = try await node.cri.pullImage(KubeletBench.image, sandboxConfig: nil)
        let command: JSONValue = ["sh", "-c", "mkdir -p /www && echo $(hostname) > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
        _ = try await api.create("/apis/apps/v1/namespaces/default/deployments", [
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "ready"],
            "spec": ["replicas": 2, "selector": ["matchLabels": ["app": "ready"]],
                     "template": ["metadata": ["labels": ["app": "ready"]],
                                  "spec": ["terminationGracePeriodSeconds": 0,
                                           "containers": [["name": "httpd", "image": .string(KubeletBench.image), "command": command,
                                                           "readinessProbe": ["exec": ["command": ["test", "-f", "/tmp/ready"]],
                                                                              "periodSeconds": .int(Int64(period)), "failureThreshold": 1, "successThreshold": 1]]]]]]])
        let service = try await api.create("/api/v1/namespaces/default/services", [
            "apiVersion": "v1", "kind": "Service", "metadata": ["name": "ready"],
            "spec": ["selector": ["app": "ready"], "ports": [["port": 80, "targetPort": 8080]]]])
        let clusterIP = service[path: ["spec", "clusterIP"]]?.string ?? ""
        var pods: [String] = []
        for _ in 0..<600 where pods.count < 2 {
            let items = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=ready"])["items"]?.array ?? []
            pods = items.filter { $0[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True" }.map(\.name).sorted()
            if pods.count < 2 { try await Task.sleep(for: .milliseconds(100)) }
        }
        guard pods.count == 2 else { throw ValidationError("the Deployment's pods did not become Ready") }
        let containers = try await node.cri.listContainers(nil)
        let byPod = Dictionary(containers.map { ($0.labels["io.kubernetes.pod.name"] ?? "", $0.id) }, uniquingKeysWith: { a, _ in a })

        // The client: a new connection every few milliseconds from inside the node.
        let answers = Answers()
        let netns = node.netns
        let client = Thread {
            _ = try? inNamespace(netns) {
                while !answers.stop.load(ordering: .relaxed) {
                    if let fd = TCP.connect(clusterIP, 80, timeout: 1) {
                        if TCP.send(fd, Array("GET / HTTP/1.0\r\n\r\n".utf8)) {
                            let text = String(decoding: TCP.receiveAll(fd, limit: 4096), as: UTF8.self)
                            if let body = text.components(separatedBy: "\r\n\r\n").dropFirst().first {
                                let pod = body.trimmingCharacters(in: .whitespacesAndNewlines)
                                answers.log.withLock { $0.append((ContinuousClock.now, pod)) }
                            }
                        }
                        close(fd)
                    }
                    usleep(3000)
                }
            }
        }
        client.start()
        defer { answers.stop.store(true, ordering: .relaxed) }
        // The EndpointSlice, polled: when each pod's endpoint last changed readiness.
        let slices = SliceWatch()
        let sliceTask = Task {
            while !Task.isCancelled {
                if let list = try? await api.list("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                                                  query: ["labelSelector": "kubernetes.io/service-name=ready"]) {
                    let now = ContinuousClock.now
                    for s in list["items"]?.array ?? [] {
                        for e in s["endpoints"]?.array ?? [] {
                            let pod = e[path: ["targetRef", "name"]]?.string ?? ""
                            slices.note(pod, ready: e[path: ["conditions", "ready"]]?.bool ?? false, at: now)
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        defer { sliceTask.cancel() }
        try await Task.sleep(for: .seconds(2))

        var away: [Double] = [], back: [Double] = [], sliceAway: [Double] = [], sliceBack: [Double] = []
        for round in 0..<rounds {
            let pod = pods[round % 2]
            guard let id = byPod[pod] else { throw ValidationError("no container for \(pod)") }
            for unready in [true, false] {
                // At a random point of the probe's period: the wait for the next probe is part of
                // what is measured, not fixed by the loop's own rhythm.
                try await Task.sleep(for: .milliseconds(Int.random(in: 0..<(period * 1000))))
                _ = try await node.cri.execSync(id, cmd: ["sh", "-c", unready ? "rm -f /tmp/ready" : "touch /tmp/ready"], timeout: 10)
                let t0 = ContinuousClock.now
                // Settled when the slice says so and the traffic agrees for a while.
                let deadline = t0 + .seconds(Double(period) * 5 + 5)
                var sliceAt: ContinuousClock.Instant?, trafficAt: ContinuousClock.Instant?
                while ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                    if sliceAt == nil, let at = slices.changed(pod, ready: !unready, after: t0) { sliceAt = at }
                    let log = answers.log.withLock { $0.filter { $0.at > t0 } }
                    if trafficAt == nil {
                        if unready {
                            // The last answer from the pod, once a second has passed without another.
                            let last = log.last { $0.pod == pod }?.at ?? t0
                            if ContinuousClock.now - last > .seconds(1), log.contains(where: { $0.at > last }) { trafficAt = last }
                        } else if let first = log.first(where: { $0.pod == pod }) {
                            trafficAt = first.at
                        }
                    }
                    if sliceAt != nil && trafficAt != nil { break }
                }
                guard let sliceAt, let trafficAt else {
                    let recent = answers.log.withLock { $0.suffix(5).map { "\($0.pod) \(fmt(($0.at - t0).seconds))" } }
                    throw ValidationError("round \(round): \(pod) \(unready ? "unready" : "ready") did not settle: endpoint \(sliceAt == nil ? "unchanged" : "changed"), "
                                          + "traffic \(trafficAt == nil ? "unchanged" : "moved"); last answers \(recent)")
                }
                if unready {
                    away.append((trafficAt - t0).seconds); sliceAway.append((sliceAt - t0).seconds)
                } else {
                    back.append((trafficAt - t0).seconds); sliceBack.append((sliceAt - t0).seconds)
                }
                try await Task.sleep(for: .milliseconds(300))
            }
            log("round \(round + 1)/\(rounds): \(pod) out \(fmt(away.last!)) (slice \(fmt(sliceAway.last!))), back \(fmt(back.last!)) (slice \(fmt(sliceBack.last!)))")
        }
        func q(_ a: [Double], _ p: Double) -> Double { let s = a.sorted(); return s[min(s.count - 1, Int(Double(s.count) * p))] }
        let p = Double(period)
        let table = ["| Figure | Measured p50 | Measured p99 | Baseline (periodSeconds) | p99 ratio | Target |", "|---|---|---|---|---|---|",
                     "| Readiness lost → EndpointSlice not ready | \(fmt(q(sliceAway, 0.5))) | \(fmt(q(sliceAway, 0.99))) | \(fmt(p)) | \(String(format: "%.2f×", q(sliceAway, 0.99) / p)) | — |",
                     "| Readiness lost → no new connection reaches the pod | \(fmt(q(away, 0.5))) | \(fmt(q(away, 0.99))) | \(fmt(p)) | \(String(format: "%.2f×", q(away, 0.99) / p)) | p99 under 1.5 × periodSeconds |",
                     "| Readiness back → EndpointSlice ready | \(fmt(q(sliceBack, 0.5))) | \(fmt(q(sliceBack, 0.99))) | \(fmt(p)) | \(String(format: "%.2f×", q(sliceBack, 0.99) / p)) | — |",
                     "| Readiness back → the pod answers again | \(fmt(q(back, 0.5))) | \(fmt(q(back, 0.99))) | \(fmt(p)) | \(String(format: "%.2f×", q(back, 0.99) / p)) | p99 under 1.5 × periodSeconds |"]
            .joined(separator: "\n")
        print(table)
        if let out { try (table + "\n").write(toFile: out, atomically: true, encoding: .utf8) }
        _ = try? await api.mergePatch("/apis/apps/v1/namespaces/default/deployments/ready", ["spec": ["replicas": 0]])
        for _ in 0..<100 {
            if (try? await node.cri.listPodSandbox(nil))?.isEmpty ?? false { break }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Each endpoint's readiness as seen, with when it last changed.
    final class SliceWatch: Sendable {
        let state = Mutex<[String: (ready: Bool, since: ContinuousClock.Instant)]>([:])
        func note(_ pod: String, ready: Bool, at: ContinuousClock.Instant) {
            state.withLock { s in if s[pod]?.ready != ready { s[pod] = (ready, at) } }
        }
        func changed(_ pod: String, ready: Bool, after: ContinuousClock.Instant) -> ContinuousClock.Instant? {
            state.withLock { s in s[pod].flatMap { $0.ready == ready && $0.since > after ? $0.since : nil } }
        }
    }
}
