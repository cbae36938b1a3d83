import CloudProvider
import ControllerKit
import Foundation
import KubeAPI
import Logging

/// The cloud controller manager's route controller, as k8s.io/cloud-provider's: every node's
/// `spec.podCIDRs` get a route to that node in the cloud; routes of the cluster whose node or CIDR
/// is gone (blackholes too) are deleted; a node whose routes are all there gets the condition
/// `NetworkUnavailable=False` (reason RouteCreated). Reconciled on every node change and every
/// `reconcilePeriod` (`--route-reconciliation-period`, 10 s).
public final class RouteController: Sendable {
    let api: API
    let cloud: any CloudRoutes
    let clusterName: String
    let nodes: Informer<JSONValue>
    let logger: Logger
    let reconcilePeriod: Duration
    let queue = WorkQueue()

    public init(api: API, cloud: any CloudRoutes, clusterName: String = "kubernetes", informers: SharedInformers,
                reconcilePeriod: Duration = .seconds(10), logger: Logger = Logger(label: "switchyard.cloud-controller-manager")) {
        self.api = api
        self.cloud = cloud
        self.clusterName = clusterName
        self.nodes = informers.nodes
        self.reconcilePeriod = reconcilePeriod
        self.logger = logger
        // One key: every reconcile looks at all nodes and all routes, as upstream's.
        nodes.onChange { [self] _ in await queue.add("routes") }
    }

    static func podCIDRs(_ n: JSONValue) -> [String] {
        let list = (n[path: ["spec", "podCIDRs"]]?.array ?? []).compactMap(\.string)
        if !list.isEmpty { return list }
        return (n[path: ["spec", "podCIDR"]]?.string).map { [$0] } ?? []
    }

    /// Runs until cancelled (the informers are run by their owner).
    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask {
                await self.nodes.waitForSync()
                await runWorkers(self.queue, workers: 1, logger: self.logger, name: "route") { [self] _ in try await reconcile() }
            }
            g.addTask {
                await self.nodes.waitForSync()
                while !Task.isCancelled {
                    await self.queue.add("routes")
                    try? await Task.sleep(for: self.reconcilePeriod)
                }
            }
            await g.next()
            g.cancelAll()
        }
    }

    func reconcile() async throws {
        let routes = try await cloud.listRoutes(clusterName: clusterName)
        let all = nodes.items.filter { !$0.isDeleting }
        var wanted = Set<CloudRoute>()
        for n in all { for cidr in Self.podCIDRs(n) { wanted.insert(CloudRoute(targetNode: n.name, destinationCIDR: cidr)) } }
        let have = Set(routes.filter { !$0.blackhole }.map { CloudRoute(targetNode: $0.targetNode, destinationCIDR: $0.destinationCIDR) })
        // Routes that are no one's any more (or whose node is gone) go first: a CIDR given to a
        // new node must not meet its old route.
        for r in routes where r.blackhole || !wanted.contains(CloudRoute(targetNode: r.targetNode, destinationCIDR: r.destinationCIDR)) {
            try await cloud.deleteRoute(clusterName: clusterName, route: r)
            logger.info("Deleted route \(r.name) \(r.destinationCIDR) (node \(r.targetNode))")
        }
        var failed = Set<String>()
        for r in wanted.sorted(by: { ($0.targetNode, $0.destinationCIDR) < ($1.targetNode, $1.destinationCIDR) }) where !have.contains(r) {
            let uid = nodes.get(r.targetNode)?.uid ?? r.targetNode
            do {
                try await cloud.createRoute(clusterName: clusterName, nameHint: uid, route: r)
                logger.info("Created route for node \(r.targetNode) \(r.destinationCIDR)")
            } catch {
                failed.insert(r.targetNode)
                logger.warning("Could not create route for node \(r.targetNode) \(r.destinationCIDR): \(error)")
            }
        }
        for n in all where !Self.podCIDRs(n).isEmpty && !failed.contains(n.name) {
            try await setNetworkAvailable(n)
        }
        if !failed.isEmpty { throw CloudError("routes not created for \(failed.sorted().joined(separator: ", "))") }
    }

    /// `NetworkUnavailable=False`, reason RouteCreated, unless the node says so already.
    func setNetworkAvailable(_ node: JSONValue) async throws {
        var conditions = node[path: ["status", "conditions"]]?.array ?? []
        if conditions.contains(where: { $0["type"] == "NetworkUnavailable" && $0["status"] == "False" && $0["reason"] == "RouteCreated" }) { return }
        let now = JSONValue.string(RFC3339.format(Date().timeIntervalSince1970))
        conditions.removeAll { $0["type"] == "NetworkUnavailable" }
        conditions.append(["type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated",
                           "message": "RouteController created a route", "lastTransitionTime": now, "lastHeartbeatTime": now])
        var n = node
        n[path: ["status", "conditions"]] = .array(conditions)
        _ = try await api.update(API.path("v1", "nodes", name: node.name, subresource: "status"), n)
    }
}
