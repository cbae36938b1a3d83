import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The DaemonSet controller: one pod per eligible node (the template's node selector and
/// required affinity match, its taints are tolerated — with the tolerations upstream adds to
/// every daemon pod), each pinned to its node by required node affinity on `metadata.name`
/// for the scheduler to bind; pods on nodes no longer eligible, and extras, deleted; a template
/// change rolled `maxUnavailable` nodes at a time (pods labelled `controller-revision-hash`).
public final class DaemonSetController: Controller, Sendable {
    public let name = "daemonset"
    let api: API
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    let sets = Mutex<Informer<JSONValue>?>(nil)
    let nodes = Mutex<Informer<JSONValue>?>(nil)
    let pods = Mutex<Informer<JSONValue>?>(nil)
    static let hashLabel = "controller-revision-hash"

    public init(api: API, logger: Logger = Logger(label: "switchyard.daemonset")) {
        self.api = api
        self.logger = logger
        events = EventRecorder(api: api, component: "daemonset-controller")
    }

    public func setUp(_ informers: SharedInformers) {
        let s = informers.informer("/apis/apps/v1/daemonsets", slim: Slim.managedFields)
        let n = informers.nodes
        let p = informers.pods
        sets.withLock { $0 = s }
        nodes.withLock { $0 = n }
        pods.withLock { $0 = p }
        s.onChange { [queue] c in await queue.add(c.key) }
        n.onChange { [weak self] _ in
            guard let self else { return }
            for ds in self.sets.withLock({ $0 })?.items ?? [] { await self.queue.add(ds.key) }
        }
        p.onChange { [queue] c in
            if let o = c.new ?? c.old, let owner = Owners.controller(o, kind: "DaemonSet") { await queue.add("\(o.namespace)/\(owner.name)") }
        }
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask { await runWorkers(self.queue, workers: 2, logger: self.logger, name: self.name) { key in try await self.sync(key) } }
        }
    }

    /// The tolerations every daemon pod gets (upstream's AddOrUpdateDaemonPodTolerations).
    static let daemonTolerations: [JSONValue] = [
        ["key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"],
        ["key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"],
        ["key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"],
        ["key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"],
        ["key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"],
        ["key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"],
    ]

    static func eligible(_ template: JSONValue, _ node: JSONValue) -> Bool {
        let labels = node.labels
        for (k, v) in (template[path: ["spec", "nodeSelector"]]?.object ?? [:]).compactMapValues(\.string) where labels[k] != v { return false }
        if let terms = template[path: ["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"]]?.array,
           !terms.contains(where: { NodeSelectorTerm($0).matches(labels: labels, name: node.name) }) {
            return false
        }
        let tolerations = ((template[path: ["spec", "tolerations"]]?.array ?? []) + daemonTolerations).map(Toleration.init)
        for t in (node[path: ["spec", "taints"]]?.array ?? []).map(Taint.init) where t.effect == "NoSchedule" || t.effect == "NoExecute" {
            if !tolerations.contains(where: { $0.tolerates(t) }) { return false }
        }
        return true
    }

    func sync(_ key: String) async throws {
        guard let ds = sets.withLock({ $0 })?.get(key), let nodeInf = nodes.withLock({ $0 }), let podInf = pods.withLock({ $0 }), !ds.isDeleting else { return }
        let template = ds[path: ["spec", "template"]] ?? [:]
        let hash = DeploymentController.hash(template, collisionCount: ds[path: ["status", "collisionCount"]]?.int)
        let owned = podInf.filter { $0.namespace == ds.namespace && Owners.controller($0)?.uid == ds.uid && PodStatus.isActive($0) }
        var byNode: [String: [JSONValue]] = [:]
        for p in owned { byNode[Self.targetNode(p), default: []].append(p) }
        let all = nodeInf.items
        let eligible = all.filter { Self.eligible(template, $0) }
        let eligibleNames = Set(eligible.map(\.name))
        var create: [String] = [], delete: [JSONValue] = []
        for n in eligible {
            let here = byNode[n.name] ?? []
            if here.isEmpty { create.append(n.name) }
            // Extras: the newest go.
            if here.count > 1 { delete += here.sorted { ($0[path: ["metadata", "creationTimestamp"]]?.string ?? "") < ($1[path: ["metadata", "creationTimestamp"]]?.string ?? "") }.dropFirst() }
        }
        for (node, ps) in byNode where !eligibleNames.contains(node) { delete += ps }
        // A rolling update: old pods go while no more than maxUnavailable nodes lack an available pod.
        if ds[path: ["spec", "updateStrategy", "type"]]?.string != "OnDelete" {
            let maxUnavailable = IntOrPercent(ds[path: ["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"]] ?? 1)?.value(of: eligible.count, roundUp: true) ?? 1
            var unavailable = eligible.filter { n in !(byNode[n.name] ?? []).contains { PodStatus.isReady($0) } }.count
            for n in eligible {
                guard unavailable < max(1, maxUnavailable) else { break }
                for p in byNode[n.name] ?? [] where p.labels[Self.hashLabel] != hash && !delete.contains(where: { $0.uid == p.uid }) {
                    delete.append(p)
                    if PodStatus.isReady(p) { unavailable += 1 }
                }
            }
        }
        for p in delete {
            do {
                try await api.delete(API.path("v1", "pods", namespace: p.namespace, name: p.name))
                events.record(ds, reason: "SuccessfulDelete", message: "Deleted pod: \(p.name)", kind: "DaemonSet", apiVersion: "apps/v1")
            } catch let e as APIStatusError where e.isNotFound {}
        }
        for node in create { try await createPod(ds, template: template, hash: hash, node: node) }
        // Status.
        let scheduled = eligible.filter { byNode[$0.name] != nil }.count
        let misscheduled = byNode.keys.filter { !eligibleNames.contains($0) && !$0.isEmpty }.count
        let ready = eligible.filter { (byNode[$0.name] ?? []).contains(where: PodStatus.isReady) }.count
        let updated = eligible.filter { (byNode[$0.name] ?? []).contains { $0.labels[Self.hashLabel] == hash } }.count
        let minReady = ds[path: ["spec", "minReadySeconds"]]?.int ?? 0
        let available = eligible.filter { (byNode[$0.name] ?? []).contains { PodStatus.isAvailable($0, minReadySeconds: minReady) } }.count
        let status: [String: JSONValue] = [
            "desiredNumberScheduled": .int(Int64(eligible.count)), "currentNumberScheduled": .int(Int64(scheduled)),
            "numberMisscheduled": .int(Int64(misscheduled)), "numberReady": .int(Int64(ready)), "updatedNumberScheduled": .int(Int64(updated)),
            "numberAvailable": .int(Int64(available)), "numberUnavailable": .int(Int64(eligible.count - available)),
            "observedGeneration": ds[path: ["metadata", "generation"]] ?? 1,
        ]
        let current = ds["status"]?.object ?? [:]
        if status.allSatisfy({ (current[$0.key] ?? .int(0)) == $0.value }) { return }
        var patch = status
        if available == eligible.count { patch["numberAvailable"] = .int(Int64(available)); patch["numberUnavailable"] = .null }
        _ = try await api.mergePatch(API.path("apps/v1", "daemonsets", namespace: ds.namespace, name: ds.name, subresource: "status"), ["status": .object(patch)])
    }

    /// The node a daemon pod is for: where it is bound, else the node its affinity names.
    static func targetNode(_ p: JSONValue) -> String {
        if let n = p[path: ["spec", "nodeName"]]?.string, !n.isEmpty { return n }
        for term in p[path: ["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"]]?.array ?? [] {
            for f in term["matchFields"]?.array ?? [] where f["key"]?.string == "metadata.name" {
                if let v = f["values"]?.array?.first?.string { return v }
            }
        }
        return ""
    }

    func createPod(_ ds: JSONValue, template: JSONValue, hash: String, node: String) async throws {
        var spec = template["spec"] ?? [:]
        // Pinned to the node: the scheduler binds it there (upstream's ReplaceDaemonSetPodNodeNameNodeAffinity).
        spec[path: ["affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"]] =
            ["nodeSelectorTerms": [["matchFields": [["key": "metadata.name", "operator": "In", "values": [.string(node)]]]]]]
        var tolerations = spec["tolerations"]?.array ?? []
        for t in Self.daemonTolerations where !tolerations.contains(where: { $0["key"] == t["key"] && $0["effect"] == t["effect"] }) { tolerations.append(t) }
        spec["tolerations"] = .array(tolerations)
        var labels = template[path: ["metadata", "labels"]]?.object ?? [:]
        labels[Self.hashLabel] = .string(hash)
        labels["pod-template-generation"] = .string(String(ds[path: ["metadata", "generation"]]?.int ?? 1))
        var meta: [String: JSONValue] = ["generateName": .string(ds.name + "-"), "namespace": .string(ds.namespace), "labels": .object(labels),
                                         "ownerReferences": [Owners.reference(ds, apiVersion: "apps/v1", kind: "DaemonSet")]]
        if let a = template[path: ["metadata", "annotations"]] { meta["annotations"] = a }
        let p = try await api.create(API.path("v1", "pods", namespace: ds.namespace), ["apiVersion": "v1", "kind": "Pod", "metadata": .object(meta), "spec": spec])
        events.record(ds, reason: "SuccessfulCreate", message: "Created pod: \(p.name)", kind: "DaemonSet", apiVersion: "apps/v1")
    }
}
