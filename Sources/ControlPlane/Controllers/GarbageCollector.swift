import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The garbage collector: objects whose owners (`metadata.ownerReferences`) are all gone are
/// deleted (background propagation); an owner deleted with `propagationPolicy: Orphan` (the
/// `orphan` finalizer) has its dependents' references to it removed first; one deleted with
/// Foreground (`foregroundDeletion`) has its dependents deleted, in the foreground too, and
/// goes once they have. It follows the kinds controllers own and are owned by.
public final class GarbageCollector: Controller, Sendable {
    public let name = "garbage-collector"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    /// The collections it follows: (kind, apiVersion, collection path, namespaced).
    static let followed: [(kind: String, apiVersion: String, resource: String, namespaced: Bool)] = [
        ("Pod", "v1", "pods", true), ("ReplicationController", "v1", "replicationcontrollers", true), ("Node", "v1", "nodes", false),
        ("ReplicaSet", "apps/v1", "replicasets", true), ("Deployment", "apps/v1", "deployments", true),
        ("DaemonSet", "apps/v1", "daemonsets", true), ("StatefulSet", "apps/v1", "statefulsets", true),
        ("Job", "batch/v1", "jobs", true), ("CronJob", "batch/v1", "cronjobs", true),
        ("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", true), ("Lease", "coordination.k8s.io/v1", "leases", true),
    ]

    struct Node: Sendable {
        var kind: String, apiVersion: String, resource: String
        var namespace: String, name: String
        var owners: [String]
        var deleting: Bool
        var finalizers: [String]
        var path: String { API.path(apiVersion, resource, namespace: namespace.isEmpty ? nil : namespace, name: name) }
    }
    struct Graph {
        var nodes: [String: Node] = [:]
        var dependents: [String: Set<String>] = [:]
        /// Owners referred to but never seen (uid → a reference to one of their dependents).
        var absent: Set<String> = []
    }
    let graph = Mutex(Graph())
    let synced = Mutex(false)

    public init(api: API, logger: Logger = Logger(label: "switchyard.garbagecollector")) {
        self.api = api
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        for f in Self.followed {
            let inf = f.kind == "Pod" ? informers.pods : f.kind == "Node" ? informers.nodes
                : informers.informer(API.path(f.apiVersion, f.resource), slim: Slim.managedFields)
            inf.onChange { [weak self] c in await self?.changed(c, f.kind, f.apiVersion, f.resource) }
        }
    }

    func changed(_ c: Change<JSONValue>, _ kind: String, _ apiVersion: String, _ resource: String) async {
        var toCheck: [String] = []
        if let o = c.new {
            let uid = o.uid
            let owners = (o[path: ["metadata", "ownerReferences"]]?.array ?? []).compactMap { $0["uid"]?.string }
            let finalizers = (o[path: ["metadata", "finalizers"]]?.array ?? []).compactMap(\.string)
            graph.withLock { g in
                if let old = g.nodes[uid] { for ow in old.owners { g.dependents[ow]?.remove(uid) } }
                g.nodes[uid] = Node(kind: kind, apiVersion: apiVersion, resource: resource, namespace: o.namespace, name: o.name,
                                    owners: owners, deleting: o.isDeleting, finalizers: finalizers)
                for ow in owners { g.dependents[ow, default: []].insert(uid) }
                g.absent.remove(uid)
            }
            // A dependent whose owner is not known is checked; an owner being deleted with a policy is processed.
            if !owners.isEmpty { toCheck.append("check:\(uid)") }
            if o.isDeleting && (finalizers.contains("orphan") || finalizers.contains("foregroundDeletion")) { toCheck.append("owner:\(uid)") }
        } else if let o = c.old {
            let uid = o.uid
            let deps = graph.withLock { g -> [String] in
                if let old = g.nodes.removeValue(forKey: uid) {
                    for ow in old.owners {
                        g.dependents[ow]?.remove(uid)
                        // An owner waiting for its dependents in the foreground is looked at again.
                        if g.nodes[ow]?.deleting == true { toCheck.append("owner:\(ow)") }
                    }
                }
                g.absent.insert(uid)
                return Array(g.dependents[uid] ?? [])
            }
            toCheck += deps.map { "check:\($0)" }
        }
        for k in toCheck { await queue.add(k) }
    }

    public func run() async {
        synced.withLock { $0 = true }
        // Everything already known is checked once the caches are in.
        let all = graph.withLock { g in g.nodes.filter { !$0.value.owners.isEmpty }.map { "check:\($0.key)" } + g.nodes.filter { $0.value.deleting }.map { "owner:\($0.key)" } }
        for k in all { await queue.add(k) }
        await runWorkers(queue, workers: 4, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        if key.hasPrefix("check:") { try await checkDependent(String(key.dropFirst(6))) } else { try await processOwner(String(key.dropFirst(6))) }
    }

    /// Whether the owner `uid` of `dependent` still exists: known in the graph, or (not followed,
    /// or not seen yet) found by the API with that uid.
    func ownerExists(_ uid: String, dependent: Node, reference: JSONValue?) async throws -> Bool {
        if graph.withLock({ $0.nodes[uid] }) != nil { return true }
        guard let ref = reference, let kind = ref["kind"]?.string, let name = ref["name"]?.string,
              let f = Self.followed.first(where: { $0.kind == kind }) else { return true }
        do {
            let o = try await api.get(API.path(f.apiVersion, f.resource, namespace: f.namespaced ? dependent.namespace : nil, name: name))
            return o.uid == uid
        } catch let e as APIStatusError where e.isNotFound {
            return false
        }
    }

    func checkDependent(_ uid: String) async throws {
        guard let node = graph.withLock({ $0.nodes[uid] }), !node.owners.isEmpty else { return }
        // The references as stored (the graph keeps only uids).
        let current: JSONValue
        do { current = try await api.get(node.path) } catch let e as APIStatusError where e.isNotFound { return }
        guard current.uid == uid else { return }
        let refs = current[path: ["metadata", "ownerReferences"]]?.array ?? []
        var alive: [JSONValue] = [], waitingForeground = false
        for r in refs {
            guard let ou = r["uid"]?.string else { continue }
            if try await ownerExists(ou, dependent: node, reference: r) {
                alive.append(r)
                if let o = graph.withLock({ $0.nodes[ou] }), o.deleting, o.finalizers.contains("foregroundDeletion") { waitingForeground = true }
            }
        }
        if alive.isEmpty {
            logger.debug("deleting \(node.kind) \(node.namespace)/\(node.name): its owners are gone")
            _ = try? await api.delete(node.path, options: ["propagationPolicy": "Background", "preconditions": ["uid": .string(uid)]])
        } else if alive.count < refs.count {
            // Some owners are gone: the references to them go.
            _ = try await api.mergePatch(node.path, ["metadata": ["ownerReferences": .array(alive), "uid": .string(uid)]])
        } else if waitingForeground && !node.deleting {
            _ = try? await api.delete(node.path, options: ["propagationPolicy": "Foreground", "preconditions": ["uid": .string(uid)]])
        }
    }

    func processOwner(_ uid: String) async throws {
        guard let owner = graph.withLock({ $0.nodes[uid] }), owner.deleting else { return }
        let deps = graph.withLock { g in (g.dependents[uid] ?? []).compactMap { d in g.nodes[d].map { (d, $0) } } }
        if owner.finalizers.contains("orphan") {
            for (duid, d) in deps {
                guard let o = try? await api.get(d.path), o.uid == duid else { continue }
                let refs = (o[path: ["metadata", "ownerReferences"]]?.array ?? []).filter { $0["uid"]?.string != uid }
                _ = try await api.mergePatch(d.path, ["metadata": ["ownerReferences": refs.isEmpty ? .null : .array(refs), "uid": .string(duid)]])
            }
            try await removeFinalizer("orphan", from: owner, uid: uid)
            return
        }
        if owner.finalizers.contains("foregroundDeletion") {
            if deps.isEmpty {
                try await removeFinalizer("foregroundDeletion", from: owner, uid: uid)
                return
            }
            for (duid, d) in deps where !d.deleting {
                _ = try? await api.delete(d.path, options: ["propagationPolicy": "Foreground", "preconditions": ["uid": .string(duid)]])
            }
            // Dependents going away bring it back (their deletion events).
        }
    }

    func removeFinalizer(_ f: String, from owner: Node, uid: String) async throws {
        let o: JSONValue
        do { o = try await api.get(owner.path) } catch let e as APIStatusError where e.isNotFound { return }
        guard o.uid == uid else { return }
        let kept = (o[path: ["metadata", "finalizers"]]?.array ?? []).filter { $0.string != f }
        _ = try await api.mergePatch(owner.path, ["metadata": ["finalizers": kept.isEmpty ? .null : .array(kept),
                                                               "resourceVersion": o[path: ["metadata", "resourceVersion"]] ?? .null]])
    }
}
