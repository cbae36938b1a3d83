import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The service account controller (a `default` ServiceAccount in every active namespace) and
/// the root CA publisher (the `kube-root-ca.crt` ConfigMap with the cluster's CA, `ca.crt`),
/// both recreating what is deleted.
public final class NamespaceDefaultsController: Controller, Sendable {
    public let name: String
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    /// What it keeps in each namespace.
    let kind: Kind
    let namespaces = Mutex<Informer<JSONValue>?>(nil)
    let objects = Mutex<Informer<JSONValue>?>(nil)

    public enum Kind: Sendable {
        case serviceAccount
        case rootCA(String)
    }

    public init(api: API, kind: Kind, logger: Logger = Logger(label: "switchyard.namespace-defaults")) {
        self.api = api
        self.kind = kind
        self.logger = logger
        switch kind {
        case .serviceAccount: name = "serviceaccount"
        case .rootCA: name = "root-ca-certificate-publisher"
        }
    }

    var objectName: String {
        switch kind {
        case .serviceAccount: "default"
        case .rootCA: "kube-root-ca.crt"
        }
    }
    var resource: String {
        switch kind {
        case .serviceAccount: "serviceaccounts"
        case .rootCA: "configmaps"
        }
    }

    public func setUp(_ informers: SharedInformers) {
        let ns = informers.informer("/api/v1/namespaces", slim: Slim.managedFields)
        let objs = informers.informer("/api/v1/\(resource)", slim: Slim.managedFields)
        namespaces.withLock { $0 = ns }
        objects.withLock { $0 = objs }
        ns.onChange { [queue] c in if let n = c.new { await queue.add(n.name) } }
        let wanted = objectName
        objs.onChange { [queue] c in
            if c.new == nil, let o = c.old, o.name == wanted { await queue.add(o.namespace) }
            if let o = c.new, o.name == wanted { await queue.add(o.namespace) }
        }
    }

    public func run() async {
        await runWorkers(queue, workers: 2, logger: logger, name: name) { [self] ns in try await sync(ns) }
    }

    func sync(_ ns: String) async throws {
        guard let n = namespaces.withLock({ $0 })?.get(ns), !n.isDeleting, n[path: ["status", "phase"]]?.string != "Terminating" else { return }
        let existing = objects.withLock({ $0 })?.get("\(ns)/\(objectName)")
        switch kind {
        case .serviceAccount:
            guard existing == nil else { return }
            do {
                _ = try await api.create(API.path("v1", "serviceaccounts", namespace: ns),
                                         ["apiVersion": "v1", "kind": "ServiceAccount", "metadata": ["name": "default", "namespace": .string(ns)]])
            } catch let e as APIStatusError where e.isAlreadyExists {}
        case .rootCA(let ca):
            let data: JSONValue = ["ca.crt": .string(ca)]
            let annotations: JSONValue = ["kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."]
            if let existing {
                guard existing["data"] != data else { return }
                _ = try await api.mergePatch(API.path("v1", "configmaps", namespace: ns, name: objectName), ["data": data])
            } else {
                do {
                    _ = try await api.create(API.path("v1", "configmaps", namespace: ns),
                                             ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string(objectName), "namespace": .string(ns),
                                                                                                    "annotations": annotations], "data": data])
                } catch let e as APIStatusError where e.isAlreadyExists {}
            }
        }
    }
}

/// The disruption controller: each PodDisruptionBudget's status from the pods it selects —
/// expected pods (the selecting controllers' replicas, else the pods), healthy (ready) pods,
/// the desired healthy count from `minAvailable` or `maxUnavailable`, and
/// `disruptionsAllowed`, which the eviction API spends.
public final class DisruptionController: Controller, Sendable {
    public let name = "disruption"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let budgets = Mutex<Informer<JSONValue>?>(nil)
    let pods = Mutex<Informer<JSONValue>?>(nil)
    let sets = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, logger: Logger = Logger(label: "switchyard.disruption")) {
        self.api = api
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let b = informers.informer("/apis/policy/v1/poddisruptionbudgets", slim: Slim.managedFields)
        let p = informers.pods
        budgets.withLock { $0 = b }
        pods.withLock { $0 = p }
        sets.withLock { $0 = informers.informer("/apis/apps/v1/replicasets", slim: Slim.managedFields) }
        b.onChange { [queue] c in await queue.add(c.key) }
        p.onChange { [weak self] c in
            guard let self, let pod = c.new ?? c.old, let b = self.budgets.withLock({ $0 }) else { return }
            for pdb in b.filter({ $0.namespace == pod.namespace }) {
                if let s = pdb[path: ["spec", "selector"]].map(ObjectSelector.init), s.matches(pod.labels) { await self.queue.add(pdb.key) }
            }
        }
    }

    public func run() async {
        await runWorkers(queue, workers: 2, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        guard let pdb = budgets.withLock({ $0 })?.get(key), let podInf = pods.withLock({ $0 }) else { return }
        let selector = pdb[path: ["spec", "selector"]].map(ObjectSelector.init)
        let matched = podInf.filter { $0.namespace == pdb.namespace && selector?.matches($0.labels) == true && PodStatus.isActive($0) }
        // Expected: the replicas of the controllers of the matched pods, else the pods themselves.
        var expected = 0
        var counted = Set<String>()
        let setInf = sets.withLock { $0 }
        for p in matched {
            if let owner = Owners.controller(p), owner.kind == "ReplicaSet", let rs = setInf?.get("\(p.namespace)/\(owner.name)") {
                if counted.insert(owner.uid).inserted { expected += Int(rs[path: ["spec", "replicas"]]?.int ?? 0) }
            } else {
                expected += 1
            }
        }
        let healthy = matched.filter(PodStatus.isReady).count
        var desired = 0
        if let min = IntOrPercent(pdb[path: ["spec", "minAvailable"]]) {
            desired = min.value(of: expected, roundUp: true)
        } else if let max = IntOrPercent(pdb[path: ["spec", "maxUnavailable"]]) {
            desired = Swift.max(0, expected - max.value(of: expected, roundUp: true))
        } else {
            desired = expected
        }
        // Pods evicted but not gone yet count against the budget for two minutes.
        let now = Date()
        var disrupted = pdb[path: ["status", "disruptedPods"]]?.object ?? [:]
        for (name, t) in disrupted {
            let gone = podInf.get("\(pdb.namespace)/\(name)").map(\.isDeleting) ?? true
            if gone || (t.string.flatMap(Time.parse).map { now.timeIntervalSince($0) > 120 } ?? true) { disrupted[name] = nil }
        }
        let healthyNow = healthy - disrupted.count
        let allowed = Swift.max(0, healthyNow - desired)
        var status: [String: JSONValue] = [
            "observedGeneration": pdb[path: ["metadata", "generation"]] ?? 1, "disruptionsAllowed": .int(Int64(allowed)),
            "currentHealthy": .int(Int64(healthy)), "desiredHealthy": .int(Int64(desired)), "expectedPods": .int(Int64(expected)),
        ]
        status["disruptedPods"] = disrupted.isEmpty ? .null : .object(disrupted)
        let old = (pdb[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "DisruptionAllowed" }
        let cs = allowed > 0 ? "True" : "False", reason = allowed > 0 ? "SufficientPods" : "InsufficientPods"
        status["conditions"] = [["type": "DisruptionAllowed", "status": .string(cs), "reason": .string(reason), "message": "",
                                 "observedGeneration": pdb[path: ["metadata", "generation"]] ?? 1,
                                 "lastTransitionTime": old?["status"]?.string == cs ? (old?["lastTransitionTime"] ?? .string(Time.now())) : .string(Time.now())]]
        let current = pdb["status"]?.object ?? [:]
        if status.allSatisfy({ k, v in (current[k] ?? .null) == v }) { return }
        _ = try await api.mergePatch(API.path("policy/v1", "poddisruptionbudgets", namespace: pdb.namespace, name: pdb.name, subresource: "status"),
                                     ["status": .object(status)])
    }
}

/// The namespace controller: a namespace being deleted is emptied — every namespaced resource
/// that discovery lists with `deletecollection` is deleted in it — then its `kubernetes`
/// finalizer is removed through `/finalize` and it is deleted for good. What remains (pods
/// still terminating, objects with finalizers) is told in the namespace's conditions, as
/// upstream's `NamespaceContentRemaining` and `NamespaceFinalizersRemaining`, and looked at again.
public final class NamespaceController: Controller, Sendable {
    public let name = "namespace"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let namespaces = Mutex<Informer<JSONValue>?>(nil)
    /// Namespaced resources that can be deleted by collection, as discovery last told them.
    let discovered = Mutex<(at: Date, paths: [(groupVersion: String, resource: String)])?>(nil)
    public static let finalizer = "kubernetes"

    /// How long after its deletion a namespace is emptied (upstream's namespaceDeletionGracePeriod).
    let deletionGrace: Double

    public init(api: API, deletionGrace: Double = 5, logger: Logger = Logger(label: "switchyard.namespace")) {
        self.api = api
        self.deletionGrace = deletionGrace
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let ns = informers.informer("/api/v1/namespaces", slim: Slim.managedFields)
        namespaces.withLock { $0 = ns }
        // As upstream, a deleted namespace is looked at after a grace of 5 s: a client deleting
        // the namespace and then what is in it (`kubectl delete -f`) deletes each object itself.
        let grace = deletionGrace
        ns.onChange { [queue] c in if let n = c.new, n.isDeleting { queue.add(n.name, after: grace) } }
    }

    public func run() async {
        await runWorkers(queue, workers: 2, logger: logger, name: name) { [self] ns in try await sync(ns) }
    }

    /// The namespaced resources discovery lists with `list` and `deletecollection` (refreshed
    /// every 30 s, so a custom resource defined since is emptied too).
    func resources() async throws -> [(groupVersion: String, resource: String)] {
        if let d = discovered.withLock({ $0 }), Date().timeIntervalSince(d.at) < 30 { return d.paths }
        var versions = ["v1"]
        for g in try await api.get("/apis")["groups"]?.array ?? [] {
            if let gv = g[path: ["preferredVersion", "groupVersion"]]?.string { versions.append(gv) }
        }
        var out: [(String, String)] = []
        for gv in versions {
            let list = try await api.get(gv.contains("/") ? "/apis/\(gv)" : "/api/\(gv)")
            for r in list["resources"]?.array ?? [] {
                guard let name = r["name"]?.string, !name.contains("/"), r["namespaced"]?.bool == true else { continue }
                let verbs = Set((r["verbs"]?.array ?? []).compactMap(\.string))
                if verbs.contains("deletecollection") && verbs.contains("list") { out.append((gv, name)) }
            }
        }
        discovered.withLock { $0 = (Date(), out) }
        return out
    }

    func sync(_ ns: String) async throws {
        let n: JSONValue
        do { n = try await api.get(API.path("v1", "namespaces", name: ns)) } catch let e as APIStatusError where e.isNotFound { return }
        guard n.isDeleting else { return }
        var finalizers = (n[path: ["spec", "finalizers"]]?.array ?? []).compactMap(\.string)
        if finalizers.contains(Self.finalizer) {
            let (remaining, withFinalizers, estimate, failures) = try await deleteContent(ns)
            try await report(n, remaining: remaining, finalizers: withFinalizers, failures: failures)
            if !failures.isEmpty {
                throw APIStatusError(code: 0, reason: "ContentDeletionFailed", message: failures.joined(separator: "; "))
            }
            if !remaining.isEmpty {
                // Pods still terminating: looked at again once their grace is likely over.
                queue.add(ns, after: min(max(estimate, 1), 15))
                return
            }
            finalizers.removeAll { $0 == Self.finalizer }
            var body = n
            body[path: ["spec", "finalizers"]] = .array(finalizers.map { .string($0) })
            do {
                _ = try await api.update(API.path("v1", "namespaces", name: ns, subresource: "finalize"), body)
            } catch let e as APIStatusError where e.isNotFound { return }
        }
        // Finalized: deleted for good (the finalize may have done it already).
        guard finalizers.isEmpty else { return }
        do { try await api.delete(API.path("v1", "namespaces", name: ns)) } catch let e as APIStatusError where e.isNotFound || e.isConflict {}
    }

    /// Deletes every collection in the namespace; returns what remains (resource → count), the
    /// finalizers still on objects (finalizer → count), the longest grace left among pods, and
    /// the collections that could not be deleted.
    func deleteContent(_ ns: String) async throws -> ([String: Int], [String: Int], Double, [String]) {
        var remaining: [String: Int] = [:], withFinalizers: [String: Int] = [:], failures: [String] = []
        var estimate = 0.0
        let now = Date()
        for (gv, resource) in try await resources() {
            let path = API.path(gv, resource, namespace: ns)
            let group = gv.contains("/") ? String(gv.split(separator: "/")[0]) : ""
            let groupResource = group.isEmpty ? resource : "\(resource).\(group)"
            do {
                try await api.delete(path, options: ["kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"])
                let left = try await api.list(path)["items"]?.array ?? []
                if !left.isEmpty { remaining[groupResource] = left.count }
                for o in left {
                    for f in (o[path: ["metadata", "finalizers"]]?.array ?? []).compactMap(\.string) { withFinalizers[f, default: 0] += 1 }
                    if resource == "pods", let t = o[path: ["metadata", "deletionTimestamp"]]?.string.flatMap(Time.parse) {
                        estimate = max(estimate, t.timeIntervalSince(now))
                    }
                }
            } catch let e as APIStatusError where e.isNotFound || e.code == 405 {
                continue
            } catch {
                failures.append("\(groupResource): \(error)")
            }
        }
        return (remaining, withFinalizers, estimate, failures)
    }

    /// The namespace's deletion conditions, with upstream's types, reasons and messages.
    func report(_ n: JSONValue, remaining: [String: Int], finalizers: [String: Int], failures: [String]) async throws {
        func condition(_ type: String, _ on: Bool, _ reasonOn: String, _ reasonOff: String, _ messageOn: String, _ messageOff: String) -> JSONValue {
            ["type": .string(type), "status": on ? "True" : "False", "reason": .string(on ? reasonOn : reasonOff),
             "message": .string(on ? messageOn : messageOff)]
        }
        let wanted = [
            condition("NamespaceDeletionDiscoveryFailure", false, "DiscoveryFailed", "ResourcesDiscovered", "", "All resources successfully discovered"),
            condition("NamespaceDeletionGroupVersionParsingFailure", false, "GroupVersionParsingFailed", "ParsedGroupVersions", "",
                      "All legacy kube types successfully parsed"),
            condition("NamespaceDeletionContentFailure", !failures.isEmpty, "ContentDeletionFailed", "ContentDeleted",
                      "Failed to delete all resource types, \(failures.count) remaining: \(failures.joined(separator: ", "))",
                      "All content successfully deleted, may be waiting on finalization"),
            condition("NamespaceContentRemaining", !remaining.isEmpty, "SomeResourcesRemain", "ContentRemoved",
                      "Some resources are remaining: " + remaining.sorted { $0.key < $1.key }.map { "\($0.key) has \($0.value) resource instances" }.joined(separator: ", "),
                      "All content successfully removed"),
            condition("NamespaceFinalizersRemaining", !finalizers.isEmpty, "SomeFinalizersRemain", "ContentHasNoFinalizers",
                      "Some content in the namespace has finalizers remaining: " + finalizers.sorted { $0.key < $1.key }.map { "\($0.key) in \($0.value) resource instances" }.joined(separator: ", "),
                      "All content-preserving finalizers finished"),
        ]
        let old = n[path: ["status", "conditions"]]?.array ?? []
        let conditions: [JSONValue] = wanted.map { c in
            var c = c
            let before = old.first { $0["type"] == c["type"] }
            let same = before.map { $0["status"] == c["status"] && $0["reason"] == c["reason"] && $0["message"] == c["message"] } ?? false
            c["lastTransitionTime"] = same ? (before?["lastTransitionTime"] ?? .string(Time.now())) : .string(Time.now())
            return c
        }
        if conditions == old && n[path: ["status", "phase"]]?.string == "Terminating" { return }
        _ = try await api.mergePatch(API.path("v1", "namespaces", name: n.name, subresource: "status"),
                                     ["status": ["phase": "Terminating", "conditions": .array(conditions)]])
    }
}
