import CloudProvider
import ControllerKit
import Foundation
import KubeAPI
import Logging

/// The cloud controller manager's node controllers, as k8s.io/cloud-provider's:
/// - **cloud-node**: a Node registered with the taint `node.cloudprovider.kubernetes.io/uninitialized`
///   (a kubelet started with `--cloud-provider external`) gets its `spec.providerID`, its
///   addresses, the labels `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone` and
///   `topology.kubernetes.io/region` (and their beta twins) and the provider's own from the
///   cloud, and then loses the taint;
/// - **cloud-node-lifecycle**: every `monitorPeriod`, a Node that is not Ready is asked about:
///   its machine gone, the Node is deleted (event DeletingNode); shut down, it gets the taint
///   `node.cloudprovider.kubernetes.io/shutdown:NoSchedule`, which goes when it is not.
public final class NodeController: Sendable {
    public static let uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
    public static let shutdownTaint = "node.cloudprovider.kubernetes.io/shutdown"

    let api: API
    let cloud: any CloudInstances
    let nodes: Informer<JSONValue>
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    let monitorPeriod: Duration

    public init(api: API, cloud: any CloudInstances, informers: SharedInformers, monitorPeriod: Duration = .seconds(5),
                logger: Logger = Logger(label: "switchyard.cloud-controller-manager")) {
        self.api = api
        self.cloud = cloud
        self.nodes = informers.nodes
        self.monitorPeriod = monitorPeriod
        self.events = EventRecorder(api: api, component: "cloud-node-lifecycle-controller", logger: logger)
        self.logger = logger
        nodes.onChange { [self] c in
            if let n = c.new, Self.hasTaint(n, Self.uninitializedTaint) { await queue.add(c.key) }
        }
    }

    public static func taints(_ n: JSONValue) -> [JSONValue] { n[path: ["spec", "taints"]]?.array ?? [] }
    public static func hasTaint(_ n: JSONValue, _ key: String) -> Bool { taints(n).contains { $0["key"]?.string == key } }

    static func isReady(_ n: JSONValue) -> Bool {
        (n[path: ["status", "conditions"]]?.array ?? []).contains { $0["type"] == "Ready" && $0["status"] == "True" }
    }

    /// Runs until cancelled (the informers are run by their owner).
    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask {
                await self.nodes.waitForSync()
                await runWorkers(self.queue, workers: 1, logger: self.logger, name: "cloud-node") { [self] key in try await initialize(key) }
            }
            g.addTask {
                await self.nodes.waitForSync()
                while !Task.isCancelled {
                    await self.monitor()
                    try? await Task.sleep(for: self.monitorPeriod)
                }
            }
            await g.next()
            g.cancelAll()
        }
    }

    /// cloud-node: one Node's first look at its machine.
    func initialize(_ name: String) async throws {
        guard var node = nodes.get(name), Self.hasTaint(node, Self.uninitializedTaint) else { return }
        let m = try await cloud.instanceMetadata(node)
        if (node[path: ["spec", "providerID"]]?.string ?? "").isEmpty { node[path: ["spec", "providerID"]] = .string(m.providerID) }
        var labels = node[path: ["metadata", "labels"]]?.object ?? [:]
        func label(_ keys: [String], _ value: String) { if !value.isEmpty { for k in keys { labels[k] = .string(value) } } }
        label(["node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"], m.instanceType)
        label(["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"], m.zone)
        label(["topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"], m.region)
        for (k, v) in m.additionalLabels { labels[k] = .string(v) }
        node[path: ["metadata", "labels"]] = .object(labels)
        node[path: ["spec", "taints"]] = .array(Self.taints(node).filter { $0["key"]?.string != Self.uninitializedTaint })
        node = try await api.update(API.path("v1", "nodes", name: name), node)
        if !m.addresses.isEmpty {
            node[path: ["status", "addresses"]] = .array(m.addresses.map(\.json))
            _ = try await api.update(API.path("v1", "nodes", name: name, subresource: "status"), node)
        }
        logger.info("Successfully initialized node \(name) with cloud provider")
    }

    /// cloud-node-lifecycle: the Nodes that are not Ready, asked about once.
    func monitor() async {
        for node in nodes.items where !node.isDeleting {
            do {
                if Self.isReady(node) {
                    if Self.hasTaint(node, Self.shutdownTaint) { try await setShutdownTaint(node, false) }
                    continue
                }
                // A Node whose machine was never initialised is left to cloud-node.
                if Self.hasTaint(node, Self.uninitializedTaint) { continue }
                guard try await cloud.instanceExists(node) else {
                    events.record(node, reason: "DeletingNode", message: "Deleting node \(node.name) because it does not exist in the cloud provider",
                                  kind: "Node", apiVersion: "v1")
                    _ = try await api.delete(API.path("v1", "nodes", name: node.name))
                    continue
                }
                let down = try await cloud.instanceShutdown(node)
                if down != Self.hasTaint(node, Self.shutdownTaint) { try await setShutdownTaint(node, down) }
            } catch let e as APIStatusError where e.isNotFound || e.isConflict {
                continue   // changed meanwhile: the next round sees it
            } catch {
                logger.warning("cloud-node-lifecycle: node \(node.name): \(error)")
            }
        }
    }

    func setShutdownTaint(_ node: JSONValue, _ on: Bool) async throws {
        var n = node
        var taints = Self.taints(n).filter { $0["key"]?.string != Self.shutdownTaint }
        if on { taints.append(["key": .string(Self.shutdownTaint), "effect": "NoSchedule"]) }
        n[path: ["spec", "taints"]] = .array(taints)
        _ = try await api.update(API.path("v1", "nodes", name: node.name), n)
    }
}
