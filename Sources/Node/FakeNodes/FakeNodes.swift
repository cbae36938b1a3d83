import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// Nodes without machines, as kwok makes them: each is registered with capacity, labels and a
/// Ready condition, renews its Lease in `kube-node-lease` every 10 s (as a kubelet does), and
/// plays the kubelet's part for the pods bound to it — they turn Running and Ready at once,
/// with an address from the node's range, and a pod marked for deletion is deleted. Nothing
/// runs; the scheduler and the controllers can be exercised at thousands of nodes.
public final class FakeNodes: Sendable {
    public let api: API
    public let names: [String]
    let cpu: String, memory: String, pods: Int
    let labels: [String: String]
    let logger: Logger
    let stopped = Mutex<Set<String>>([])
    /// The next pod address per node (10.(244+n/256).(n%256).x).
    let nextIP = Mutex<[String: Int]>([:])
    public let leaseInterval: Double
    /// How long a Job's pod runs before it succeeds.
    public let jobRunSeconds: Double

    public init(api: API, prefix: String = "fake-node-", count: Int, cpu: String = "32", memory: String = "256Gi", pods: Int = 110,
                labels: [String: String] = [:], leaseInterval: Double = 10, jobRunSeconds: Double = 1,
                heartbeatOnly: [String] = [], logger: Logger = Logger(label: "switchyard.fakenodes")) {
        self.heartbeatOnly = heartbeatOnly
        self.leaseInterval = leaseInterval
        self.jobRunSeconds = jobRunSeconds
        self.api = api
        names = (0..<count).map { "\(prefix)\($0)" }
        self.cpu = cpu
        self.memory = memory
        self.pods = pods
        self.labels = labels
        self.logger = logger
    }

    /// The Node object of fake node `i`.
    func nodeObject(_ i: Int) -> JSONValue {
        let name = names[i]
        var l = labels
        l["kubernetes.io/hostname"] = name
        l["kubernetes.io/os"] = "linux"
        l["kubernetes.io/arch"] = "amd64"
        l["type"] = "kwok"
        let resources: JSONValue = ["cpu": .string(cpu), "memory": .string(memory), "pods": .string(String(pods)), "ephemeral-storage": "100Gi"]
        let now = Time.now()
        return ["apiVersion": "v1", "kind": "Node",
                "metadata": ["name": .string(name), "labels": .object(l.mapValues { .string($0) }),
                             "annotations": ["node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"]],
                "spec": [:],
                "status": ["capacity": resources, "allocatable": resources, "phase": "Running",
                           "addresses": [["type": "InternalIP", "address": .string(address(i))], ["type": "Hostname", "address": .string(name)]],
                           "conditions": [["type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                                           "lastHeartbeatTime": .string(now), "lastTransitionTime": .string(now)]],
                           "nodeInfo": ["kubeletVersion": "v1.33.0-fake", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
                                        "containerRuntimeVersion": "fake://0", "kernelVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": ""]]]
    }

    func address(_ i: Int) -> String { "10.255.\(i / 256).\(i % 256)" }

    /// Registers the nodes (those that exist are left as they are).
    public func register() async throws {
        try await withThrowingTaskGroup(of: Void.self) { g in
            var running = 0
            for i in names.indices {
                if running >= 16 { try await g.next(); running -= 1 }
                g.addTask {
                    do { _ = try await self.api.create("/api/v1/nodes", self.nodeObject(i)) } catch let e as APIStatusError where e.isAlreadyExists {}
                }
                running += 1
            }
            try await g.waitForAll()
        }
    }

    /// A node stops: its Lease is no longer renewed (the node lifecycle controller notices).
    public func stop(_ name: String) { _ = stopped.withLock { $0.insert(name) } }

    /// A stopped node starts again: it renews its Lease and reports Ready.
    public func start(_ name: String) { _ = stopped.withLock { $0.remove(name) } }

    /// Nodes run elsewhere (netlab's own) whose Leases are renewed here too, as their kubelet would.
    public let heartbeatOnly: [String]

    func renewLeases() async {
        let down = stopped.withLock { $0 }
        await withTaskGroup(of: Void.self) { g in
            var running = 0
            for name in names + heartbeatOnly where !down.contains(name) {
                if running >= 16 { await g.next(); running -= 1 }
                running += 1
                g.addTask {
                    let node = try? await self.api.get("/api/v1/nodes/\(name)")
                    await NodeLease.renew(self.api, node: name) { node?.uid ?? "" }
                    // A node the lifecycle controller marked Unknown while this one was slow
                    // (or stopped) reports Ready again, as a kubelet corrects its status.
                    if let node, self.names.contains(name),
                       (node[path: ["status", "conditions"]]?.array ?? []).first(where: { $0["type"] == "Ready" })?["status"] != "True" {
                        let now = Time.now()
                        _ = try? await self.api.strategicPatch("/api/v1/nodes/\(name)/status", ["status": ["conditions": [
                            ["type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                             "lastHeartbeatTime": .string(now), "lastTransitionTime": .string(now)]]]])
                    }
                }
            }
        }
    }

    func podChanged(_ p: JSONValue, nodes: Set<String>) async {
        let node = p[path: ["spec", "nodeName"]]?.string ?? ""
        guard nodes.contains(node), !stopped.withLock({ $0.contains(node) }) else { return }
        let path = API.path("v1", "pods", namespace: p.namespace, name: p.name)
        if p.isDeleting {
            _ = try? await api.delete(path, options: ["gracePeriodSeconds": 0, "preconditions": ["uid": .string(p.uid)]])
            return
        }
        guard p[path: ["status", "phase"]]?.string == "Pending" || p[path: ["status", "phase"]] == nil else { return }
        let index = names.firstIndex(of: node) ?? 0
        let n = nextIP.withLock { m -> Int in
            let v = m[node, default: 1]
            m[node] = v >= 254 ? 1 : v + 1
            return v
        }
        let ip = "10.\(200 + index / 256 % 50).\(index % 256).\(n)"
        let now = Time.now()
        let conditions: JSONValue = .array(["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"].map {
            ["type": .string($0), "status": "True", "lastTransitionTime": .string(now), "lastProbeTime": .null]
        })
        _ = try? await api.mergePatch(path + "/status", ["status": ["phase": "Running", "conditions": conditions, "podIP": .string(ip),
                                                                    "podIPs": [["ip": .string(ip)]], "hostIP": .string(address(index)),
                                                                    "startTime": .string(now)]])
        // A Job's pod runs to its end (kwok's pod-complete stage): after `jobRunSeconds`, or
        // what the pod's `switchyard.dev/fake-run-seconds` annotation says; it fails if
        // `switchyard.dev/fake-exit-code` is not 0.
        let ownedByJob = (p[path: ["metadata", "ownerReferences"]]?.array ?? []).contains { $0["kind"] == "Job" }
        if ownedByJob {
            let seconds = p[path: ["metadata", "annotations", "switchyard.dev/fake-run-seconds"]]?.string.flatMap(Double.init) ?? jobRunSeconds
            let code = p[path: ["metadata", "annotations", "switchyard.dev/fake-exit-code"]]?.string.flatMap { Int($0) } ?? 0
            Task {
                try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                let end = Time.now()
                let done: JSONValue = .array(["Ready", "ContainersReady"].map {
                    ["type": .string($0), "status": "False", "reason": "PodCompleted", "lastTransitionTime": .string(end), "lastProbeTime": .null]
                })
                _ = try? await self.api.strategicPatch(path + "/status", ["status": ["phase": code == 0 ? "Succeeded" : "Failed", "conditions": done]])
            }
        }
    }

    /// Registers the nodes, then renews their Leases and runs their pods until cancelled.
    public func run() async {
        while !Task.isCancelled {
            do { try await register(); break } catch {
                logger.warning("registering fake nodes: \(error); retrying")
                try? await Task.sleep(for: .seconds(1))
            }
        }
        let nodes = Set(names)
        let pods = Informer<JSONValue>(api, path: "/api/v1/pods") { o in
            nodes.contains(o[path: ["spec", "nodeName"]]?.string ?? "") ? Slim.pod(o) : nil
        }
        pods.onChange { [weak self] c in if let p = c.new { await self?.podChanged(p, nodes: nodes) } }
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await pods.run() }
            g.addTask {
                while !Task.isCancelled {
                    await self.renewLeases()
                    try? await Task.sleep(for: .milliseconds(Int(self.leaseInterval * 1000)))
                }
            }
        }
    }
}
