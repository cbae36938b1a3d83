import CloudProvider
import ControllerKit
import Foundation
import KubeAPI
import Logging
import Synchronization

/// The cloud controller manager's service controller, as k8s.io/cloud-provider's: a Service of
/// type LoadBalancer without a `loadBalancerClass` gets a balancer from the cloud, to every node
/// not labelled `node.kubernetes.io/exclude-from-external-load-balancers` (readiness is the
/// balancer's health checks' business, as upstream's since the stable node set); its address is
/// written into `status.loadBalancer`; the finalizer `service.kubernetes.io/load-balancer-cleanup`
/// keeps the Service until its balancer is deleted, when the Service is deleted or stops wanting
/// one. When only the nodes change the balancer is updated, not made again. Events are
/// upstream's: EnsuringLoadBalancer, EnsuredLoadBalancer, SyncLoadBalancerFailed,
/// UpdatedLoadBalancer, UpdateLoadBalancerFailed, DeletingLoadBalancer, DeletedLoadBalancer.
public final class ServiceController: Sendable {
    public static let finalizer = "service.kubernetes.io/load-balancer-cleanup"
    public static let excludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

    let api: API
    let cloud: any CloudLoadBalancer
    let clusterName: String
    let services: Informer<JSONValue>
    let nodes: Informer<JSONValue>
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    /// What each Service's balancer was last made from: its spec and its nodes.
    struct Applied: Equatable {
        var spec: JSONValue
        var nodes: [String]
    }
    let applied = Mutex<[String: Applied]>([:])
    let nodeSet = Mutex<[String]>([])

    public init(api: API, cloud: any CloudLoadBalancer, clusterName: String = "kubernetes", informers: SharedInformers,
                logger: Logger = Logger(label: "switchyard.cloud-controller-manager")) {
        self.api = api
        self.cloud = cloud
        self.clusterName = clusterName
        self.services = informers.informer("/api/v1/services", slim: Slim.managedFields)
        self.nodes = informers.nodes
        self.events = EventRecorder(api: api, component: "service-controller", logger: logger)
        self.logger = logger
        // Before the informers run, so that no change is missed.
        services.onChange { [self] c in await queue.add(c.key) }
        nodes.onChange { [self] _ in
            // Only a change of the node set touches the balancers.
            let names = eligibleNodes().map(\.name)
            let changed = nodeSet.withLock { s -> Bool in defer { s = names }; return s != names }
            guard changed, services.hasSynced else { return }
            for s in services.filter(Self.wantsLoadBalancer) { await queue.add(s.key) }
        }
    }

    /// A Service this controller makes a balancer for.
    public static func wantsLoadBalancer(_ svc: JSONValue) -> Bool {
        svc[path: ["spec", "type"]]?.string == "LoadBalancer" && (svc[path: ["spec", "loadBalancerClass"]]?.string ?? "").isEmpty
    }

    static func hasFinalizer(_ o: JSONValue) -> Bool {
        (o[path: ["metadata", "finalizers"]]?.array ?? []).contains { $0.string == finalizer }
    }

    /// The nodes balancers send to, by name.
    func eligibleNodes() -> [JSONValue] {
        nodes.filter { n in !n.isDeleting && n.labels[Self.excludeLabel] == nil }.sorted { $0.name < $1.name }
    }

    /// Runs until cancelled (the informers are run by their owner).
    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask {
                await self.services.waitForSync()
                await self.nodes.waitForSync()
                self.nodeSet.withLock { $0 = self.eligibleNodes().map(\.name) }
                await runWorkers(self.queue, workers: 2, logger: self.logger, name: "service-controller") { [self] key in try await sync(key) }
            }
            await g.next()
            g.cancelAll()
        }
    }

    func path(_ svc: JSONValue, status: Bool = false) -> String {
        API.path("v1", "services", namespace: svc.namespace, name: svc.name, subresource: status ? "status" : nil)
    }

    func sync(_ key: String) async throws {
        guard var svc = services.get(key) else {
            applied.withLock { $0[key] = nil }
            return
        }
        if svc.isDeleting || !Self.wantsLoadBalancer(svc) {
            guard Self.hasFinalizer(svc) else { applied.withLock { $0[key] = nil }; return }
            events.record(svc, reason: "DeletingLoadBalancer", message: "Deleting load balancer")
            do {
                try await cloud.ensureLoadBalancerDeleted(clusterName: clusterName, service: svc)
            } catch {
                events.record(svc, type: "Warning", reason: "SyncLoadBalancerFailed", message: "Error syncing load balancer: \(error)")
                throw error
            }
            events.record(svc, reason: "DeletedLoadBalancer", message: "Deleted load balancer")
            applied.withLock { $0[key] = nil }
            if !svc.isDeleting, svc[path: ["status", "loadBalancer", "ingress"]] != nil {
                svc[path: ["status", "loadBalancer"]] = .object([:])
                svc = try await api.update(path(svc, status: true), svc)
            }
            svc[path: ["metadata", "finalizers"]] = .array((svc[path: ["metadata", "finalizers"]]?.array ?? []).filter { $0.string != Self.finalizer })
            _ = try await api.update(path(svc), svc)
            return
        }
        if !Self.hasFinalizer(svc) {
            svc[path: ["metadata", "finalizers"]] = .array((svc[path: ["metadata", "finalizers"]]?.array ?? []) + [.string(Self.finalizer)])
            svc = try await api.update(path(svc), svc)
        }
        let targets = eligibleNodes()
        let want = Applied(spec: svc["spec"] ?? .null, nodes: targets.map(\.name))
        let had = applied.withLock { $0[key] }
        if let had, had.spec == want.spec, svc[path: ["status", "loadBalancer", "ingress"]] != nil {
            guard had.nodes != want.nodes else { return }
            do {
                try await cloud.updateLoadBalancer(clusterName: clusterName, service: svc, nodes: targets)
            } catch {
                events.record(svc, type: "Warning", reason: "UpdateLoadBalancerFailed",
                              message: "Error updating load balancer with new hosts \(want.nodes), error: \(error)")
                throw error
            }
            events.record(svc, reason: "UpdatedLoadBalancer", message: "Updated load balancer with new hosts")
            applied.withLock { $0[key] = want }
            return
        }
        events.record(svc, reason: "EnsuringLoadBalancer", message: "Ensuring load balancer")
        let status: JSONValue
        do {
            status = try await cloud.ensureLoadBalancer(clusterName: clusterName, service: svc, nodes: targets)
        } catch {
            events.record(svc, type: "Warning", reason: "SyncLoadBalancerFailed", message: "Error syncing load balancer: \(error)")
            throw error
        }
        events.record(svc, reason: "EnsuredLoadBalancer", message: "Ensured load balancer")
        if svc[path: ["status", "loadBalancer"]] != status {
            svc[path: ["status", "loadBalancer"]] = status
            _ = try await api.update(path(svc, status: true), svc)
        }
        applied.withLock { $0[key] = want }
    }
}
