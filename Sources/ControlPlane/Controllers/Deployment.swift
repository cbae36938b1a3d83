import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The Deployment controller: a ReplicaSet per pod template (named by the template's hash,
/// `pod-template-hash` label), rolled as the strategy says — RollingUpdate within maxSurge and
/// maxUnavailable, or Recreate (the old pods gone before the new are made) — with revisions
/// (`deployment.kubernetes.io/revision`), the history kept to `revisionHistoryLimit`, pause
/// and resume, and upstream's status and conditions (what `kubectl rollout status` reads).
public final class DeploymentController: Controller, Sendable {
    public let name = "deployment"
    let api: API
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    let workers: Int
    let deployments = Mutex<Informer<JSONValue>?>(nil)
    let sets = Mutex<Informer<JSONValue>?>(nil)
    let pods = Mutex<Informer<JSONValue>?>(nil)
    static let revision = "deployment.kubernetes.io/revision"
    static let hashLabel = "pod-template-hash"

    public init(api: API, workers: Int = 5, logger: Logger = Logger(label: "switchyard.deployment")) {
        self.api = api
        self.workers = workers
        self.logger = logger
        events = EventRecorder(api: api, component: "deployment-controller")
    }

    public func setUp(_ informers: SharedInformers) {
        let d = informers.informer("/apis/apps/v1/deployments", slim: Slim.managedFields)
        let rs = informers.informer("/apis/apps/v1/replicasets", slim: Slim.managedFields)
        let p = informers.pods
        deployments.withLock { $0 = d }
        sets.withLock { $0 = rs }
        pods.withLock { $0 = p }
        d.onChange { [queue] c in await queue.add(c.key) }
        rs.onChange { [weak self] c in
            guard let self, let o = c.new ?? c.old else { return }
            if let owner = Owners.controller(o, kind: "Deployment") {
                await self.queue.add("\(o.namespace)/\(owner.name)")
            } else if c.new != nil, let d = self.deployments.withLock({ $0 }) {
                // An orphan set a deployment's selector matches: adopted.
                for dep in d.filter({ $0.namespace == o.namespace }) where dep[path: ["spec", "selector"]].map({ ObjectSelector($0).matches(o.labels) }) == true {
                    await self.queue.add(dep.key)
                }
            }
        }
        // Recreate waits for the old pods to go.
        p.onChange { [weak self] c in
            guard let self, c.new == nil, let o = c.old, let rsOwner = Owners.controller(o, kind: "ReplicaSet"),
                  let set = self.sets.withLock({ $0 })?.get("\(o.namespace)/\(rsOwner.name)"),
                  let dOwner = Owners.controller(set, kind: "Deployment") else { return }
            await self.queue.add("\(o.namespace)/\(dOwner.name)")
        }
    }

    public func run() async {
        await runWorkers(queue, workers: workers, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    // MARK: helpers

    /// The template without the hash label, as ReplicaSets and the Deployment are compared.
    static func bare(_ template: JSONValue?) -> JSONValue {
        var t = template ?? [:]
        t[path: ["metadata", "labels", hashLabel]] = nil
        if t[path: ["metadata", "labels"]]?.object?.isEmpty == true { t[path: ["metadata", "labels"]] = nil }
        return t
    }

    /// upstream's ComputeHash: FNV-32a over the template (and the collision count), spelled
    /// with `SafeEncodeString`'s alphabet.
    static func hash(_ template: JSONValue, collisionCount: Int64?) -> String {
        var h: UInt32 = 2_166_136_261
        var bytes = Array(bare(template).serialized())
        if let c = collisionCount { bytes += Array(String(c).utf8) }
        for b in bytes {
            h ^= UInt32(b)
            h = h &* 16_777_619
        }
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String(String(h).map { alphabet[Int($0.asciiValue! - 48) % alphabet.count] })
    }

    static func replicas(_ o: JSONValue) -> Int { Int(o[path: ["spec", "replicas"]]?.int ?? 0) }
    static func available(_ o: JSONValue) -> Int { Int(o[path: ["status", "availableReplicas"]]?.int ?? 0) }
    static func revision(_ o: JSONValue) -> Int { Int(o[path: ["metadata", "annotations", revision]]?.string ?? "") ?? 0 }

    // MARK: sync

    func sync(_ key: String) async throws {
        guard let dInf = deployments.withLock({ $0 }), let rsInf = sets.withLock({ $0 }), let podInf = pods.withLock({ $0 }) else { return }
        guard let d = dInf.get(key) else { return }
        let ns = d.namespace
        guard let selectorJSON = d[path: ["spec", "selector"]] else { return }
        let selector = ObjectSelector(selectorJSON)
        if selector.isEmpty { return }
        var owned: [JSONValue] = []
        var adoptable: Bool?
        for rs in rsInf.filter({ $0.namespace == ns }) {
            if let owner = Owners.controller(rs) {
                if owner.uid == d.uid { owned.append(rs) }
            } else if selector.matches(rs.labels), !d.isDeleting {
                if adoptable == nil { adoptable = await Owners.canAdopt(api, path: API.path("apps/v1", "deployments", namespace: ns, name: d.name), uid: d.uid) }
                guard adoptable == true else { continue }
                var refs = rs[path: ["metadata", "ownerReferences"]]?.array ?? []
                refs.append(Owners.reference(d, apiVersion: "apps/v1", kind: "Deployment"))
                if let adopted = try? await api.mergePatch(API.path("apps/v1", "replicasets", namespace: ns, name: rs.name),
                                                           ["metadata": ["ownerReferences": .array(refs), "uid": .string(rs.uid)]]) {
                    owned.append(adopted)
                }
            }
        }
        owned.sort { ($0[path: ["metadata", "creationTimestamp"]]?.string ?? "", $0.name) < ($1[path: ["metadata", "creationTimestamp"]]?.string ?? "", $1.name) }
        if d.isDeleting {
            try await syncStatus(d, all: owned, new: nil)
            return
        }
        let template = Self.bare(d[path: ["spec", "template"]])
        var newRS = owned.first { Self.bare($0[path: ["spec", "template"]]) == template }
        var old = owned.filter { $0.uid != newRS?.uid }
        let paused = d[path: ["spec", "paused"]]?.bool ?? false
        if paused {
            // Paused: only scaled (the active set takes the new replica count), no rollout.
            if let active = newRS ?? old.last(where: { Self.replicas($0) > 0 }), old.allSatisfy({ Self.replicas($0) == 0 || $0.uid == active.uid }) {
                _ = try await scale(active, to: Self.replicas(d), d)
            }
            try await syncStatus(d, all: owned, new: newRS, paused: true)
            return
        }
        let desired = Self.replicas(d)
        let strategy = d[path: ["spec", "strategy", "type"]]?.string ?? "RollingUpdate"
        if strategy == "Recreate" {
            var scaledDown = false
            for rs in old where Self.replicas(rs) > 0 {
                _ = try await scale(rs, to: 0, d)
                scaledDown = true
            }
            if scaledDown { try await syncStatus(d, all: owned, new: newRS); return }
            let oldUIDs = Set(old.map(\.uid))
            let oldPodsLeft = podInf.filter { p in p.namespace == ns && Owners.controller(p).map { oldUIDs.contains($0.uid) } == true }
            if !oldPodsLeft.isEmpty { try await syncStatus(d, all: owned, new: newRS); return }
            if newRS == nil {
                newRS = try await createNew(d, old: old, replicas: desired)
            } else if let rs = newRS {
                newRS = try await ensureRevision(rs, d, old: old)
                if Self.replicas(rs) != desired { newRS = try await scale(newRS!, to: desired, d) }
            }
            try await finish(d, all: old + [newRS].compactMap { $0 }, new: newRS, old: old)
            return
        }
        // RollingUpdate.
        let (maxSurge, maxUnavailable) = Self.rollingParameters(d)
        let maxTotal = desired + maxSurge
        func total(_ sets: [JSONValue]) -> Int { sets.reduce(0) { $0 + Self.replicas($1) } }
        if newRS == nil {
            let current = total(old)
            let start = max(0, min(maxTotal - current, desired))
            newRS = try await createNew(d, old: old, replicas: start)
        } else {
            newRS = try await ensureRevision(newRS!, d, old: old)
            let n = Self.replicas(newRS!)
            if n > desired {
                newRS = try await scale(newRS!, to: desired, d)
            } else if n < desired {
                let current = total(old) + n
                if current < maxTotal {
                    newRS = try await scale(newRS!, to: n + min(maxTotal - current, desired - n), d)
                }
            }
        }
        guard let newSet = newRS else { return }
        // Old sets scaled down as far as availability allows.
        let oldCount = total(old)
        if oldCount > 0 {
            let all = total(old) + Self.replicas(newSet)
            let minAvailable = desired - maxUnavailable
            let newUnavailable = Self.replicas(newSet) - Self.available(newSet)
            var maxScaledDown = all - minAvailable - newUnavailable
            if maxScaledDown > 0 {
                // First the old pods that are not available anyway.
                for i in old.indices where maxScaledDown > 0 {
                    let unhealthy = Self.replicas(old[i]) - Self.available(old[i])
                    guard unhealthy > 0 else { continue }
                    let down = min(maxScaledDown, unhealthy)
                    old[i] = try await scale(old[i], to: Self.replicas(old[i]) - down, d)
                    maxScaledDown -= down
                }
                // Then available ones, oldest first, keeping minAvailable.
                let availableNow = (old + [newSet]).reduce(0) { $0 + min(Self.available($1), Self.replicas($1)) }
                var toScaleDown = availableNow - minAvailable
                for i in old.indices where toScaleDown > 0 && Self.replicas(old[i]) > 0 {
                    let down = min(Self.replicas(old[i]), toScaleDown)
                    old[i] = try await scale(old[i], to: Self.replicas(old[i]) - down, d)
                    toScaleDown -= down
                }
            }
        }
        try await finish(d, all: old + [newSet], new: newSet, old: old)
    }

    static func rollingParameters(_ d: JSONValue) -> (surge: Int, unavailable: Int) {
        let desired = replicas(d)
        let ru = d[path: ["spec", "strategy", "rollingUpdate"]]
        let surge = IntOrPercent(ru?["maxSurge"] ?? "25%")?.value(of: desired, roundUp: true) ?? 0
        var unavailable = IntOrPercent(ru?["maxUnavailable"] ?? "25%")?.value(of: desired, roundUp: false) ?? 0
        if surge == 0 && unavailable == 0 { unavailable = 1 }
        return (surge, min(unavailable, desired))
    }

    func finish(_ d: JSONValue, all: [JSONValue], new: JSONValue?, old: [JSONValue]) async throws {
        // When the rollout is complete, history beyond the limit goes (oldest first).
        if let new, Self.replicas(new) == Self.replicas(d), Self.available(new) >= Self.replicas(d) {
            let limit = Int(d[path: ["spec", "revisionHistoryLimit"]]?.int ?? 10)
            let idle = old.filter { Self.replicas($0) == 0 && ($0[path: ["status", "replicas"]]?.int ?? 0) == 0 && !$0.isDeleting }
                .sorted { Self.revision($0) < Self.revision($1) }
            if idle.count > limit {
                for rs in idle.prefix(idle.count - limit) {
                    _ = try? await api.delete(API.path("apps/v1", "replicasets", namespace: rs.namespace, name: rs.name))
                }
            }
        }
        try await syncStatus(d, all: all, new: new)
    }

    func annotations(_ d: JSONValue, revision: Int?) -> [String: JSONValue] {
        let (surge, _) = Self.rollingParameters(d)
        var a: [String: JSONValue] = ["deployment.kubernetes.io/desired-replicas": .string(String(Self.replicas(d))),
                                      "deployment.kubernetes.io/max-replicas": .string(String(Self.replicas(d) + surge))]
        if let revision { a[Self.revision] = .string(String(revision)) }
        return a
    }

    func createNew(_ d: JSONValue, old: [JSONValue], replicas: Int) async throws -> JSONValue {
        let template = d[path: ["spec", "template"]] ?? [:]
        let collisions = d[path: ["status", "collisionCount"]]?.int
        let hash = Self.hash(template, collisionCount: collisions)
        let revision = (old.map(Self.revision).max() ?? 0) + 1
        var t = template
        t[path: ["metadata", "labels", Self.hashLabel]] = .string(hash)
        var selector = d[path: ["spec", "selector"]] ?? [:]
        selector[path: ["matchLabels", Self.hashLabel]] = .string(hash)
        var ann = annotations(d, revision: revision)
        if let cause = d[path: ["metadata", "annotations", "kubernetes.io/change-cause"]] { ann["kubernetes.io/change-cause"] = cause }
        let rs: JSONValue = ["apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "metadata": ["name": .string("\(d.name)-\(hash)"), "namespace": .string(d.namespace),
                                          "labels": t[path: ["metadata", "labels"]] ?? [:], "annotations": .object(ann),
                                          "ownerReferences": [Owners.reference(d, apiVersion: "apps/v1", kind: "Deployment")]],
                             "spec": ["replicas": .int(Int64(replicas)), "minReadySeconds": d[path: ["spec", "minReadySeconds"]] ?? 0,
                                      "selector": selector, "template": t]]
        do {
            let created = try await api.create(API.path("apps/v1", "replicasets", namespace: d.namespace), rs)
            events.record(d, reason: "ScalingReplicaSet", message: "Scaled up replica set \(created.name) to \(replicas) from 0", kind: "Deployment", apiVersion: "apps/v1")
            _ = try? await api.mergePatch(API.path("apps/v1", "deployments", namespace: d.namespace, name: d.name),
                                          ["metadata": ["annotations": [Self.revision: .string(String(revision))]]])
            return created
        } catch let e as APIStatusError where e.isAlreadyExists {
            // A set of that name exists but is not ours or not this template: count a collision, as upstream.
            _ = try await api.mergePatch(API.path("apps/v1", "deployments", namespace: d.namespace, name: d.name, subresource: "status"),
                                         ["status": ["collisionCount": .int((collisions ?? 0) + 1)]])
            throw e
        }
    }

    /// A set that becomes the new one again (a rollback) takes the next revision.
    func ensureRevision(_ rs: JSONValue, _ d: JSONValue, old: [JSONValue]) async throws -> JSONValue {
        let maxOld = old.map(Self.revision).max() ?? 0
        let current = Self.revision(rs)
        let want = current > maxOld ? current : maxOld + 1
        let ann = annotations(d, revision: want)
        let have = rs[path: ["metadata", "annotations"]]?.object ?? [:]
        if ann.allSatisfy({ have[$0.key] == $0.value }) { return rs }
        let updated = try await api.mergePatch(API.path("apps/v1", "replicasets", namespace: rs.namespace, name: rs.name),
                                               ["metadata": ["annotations": .object(ann)]])
        if d[path: ["metadata", "annotations", Self.revision]]?.string != String(want) {
            _ = try? await api.mergePatch(API.path("apps/v1", "deployments", namespace: d.namespace, name: d.name),
                                          ["metadata": ["annotations": [Self.revision: .string(String(want))]]])
        }
        return updated
    }

    func scale(_ rs: JSONValue, to n: Int, _ d: JSONValue) async throws -> JSONValue {
        let from = Self.replicas(rs)
        if from == n { return rs }
        let updated = try await api.mergePatch(API.path("apps/v1", "replicasets", namespace: rs.namespace, name: rs.name),
                                               ["metadata": ["annotations": .object(annotations(d, revision: nil))], "spec": ["replicas": .int(Int64(n))]])
        events.record(d, reason: "ScalingReplicaSet", message: "Scaled \(n > from ? "up" : "down") replica set \(rs.name) to \(n) from \(from)",
                      kind: "Deployment", apiVersion: "apps/v1")
        return updated
    }

    // MARK: status

    func syncStatus(_ d: JSONValue, all: [JSONValue], new: JSONValue?, paused: Bool = false) async throws {
        let desired = Self.replicas(d)
        let (_, maxUnavailable) = Self.rollingParameters(d)
        func sum(_ f: String) -> Int64 { all.reduce(0) { $0 + ($1[path: ["status", f]]?.int ?? 0) } }
        let available = sum("availableReplicas")
        var status = d["status"]?.object ?? [:]
        let before = JSONValue.object(status)
        status["observedGeneration"] = d[path: ["metadata", "generation"]] ?? 0
        status["replicas"] = .int(sum("replicas"))
        status["updatedReplicas"] = .int(new?[path: ["status", "replicas"]]?.int ?? 0)
        status["readyReplicas"] = .int(sum("readyReplicas"))
        status["availableReplicas"] = .int(available)
        status["unavailableReplicas"] = .int(max(0, Int64(desired) - available))
        for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"] where status[k] == 0 { status[k] = nil }
        var conditions = status["conditions"]?.array ?? []
        let now = Time.now()
        func set(_ type: String, _ s: String, _ reason: String, _ message: String) {
            if let i = conditions.firstIndex(where: { $0["type"]?.string == type }) {
                let same = conditions[i]["status"]?.string == s
                if same && conditions[i]["reason"]?.string == reason && conditions[i]["message"]?.string == message { return }
                conditions[i]["status"] = .string(s)
                conditions[i]["reason"] = .string(reason)
                conditions[i]["message"] = .string(message)
                conditions[i]["lastUpdateTime"] = .string(now)
                if !same { conditions[i]["lastTransitionTime"] = .string(now) }
            } else {
                conditions.append(["type": .string(type), "status": .string(s), "reason": .string(reason), "message": .string(message),
                                   "lastUpdateTime": .string(now), "lastTransitionTime": .string(now)])
            }
        }
        if available >= Int64(desired - maxUnavailable) {
            set("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        } else {
            set("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        }
        let progressing = conditions.first { $0["type"]?.string == "Progressing" }
        if paused {
            set("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        } else if let new {
            let complete = Self.replicas(new) == desired && (new[path: ["status", "availableReplicas"]]?.int ?? 0) >= Int64(desired)
                && (status["replicas"]?.int ?? 0) == Int64(desired)
            if progressing?["reason"]?.string == "DeploymentPaused" {
                set("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
            } else if complete {
                set("Progressing", "True", "NewReplicaSetAvailable", "ReplicaSet \"\(new.name)\" has successfully progressed.")
            } else if progressing == nil || progressing?["reason"]?.string == "NewReplicaSetAvailable" && !complete {
                set("Progressing", "True", progressing == nil ? "NewReplicaSetCreated" : "ReplicaSetUpdated",
                    progressing == nil ? "Created new replica set \"\(new.name)\"" : "ReplicaSet \"\(new.name)\" is progressing.")
            } else if progressing?["reason"]?.string != "ProgressDeadlineExceeded" {
                // Still progressing: the deadline counts from the last progress.
                let deadline = d[path: ["spec", "progressDeadlineSeconds"]]?.int ?? 600
                let last = progressing?["lastUpdateTime"]?.string.flatMap(Time.parse) ?? Date()
                if Date().timeIntervalSince(last) > Double(deadline) {
                    set("Progressing", "False", "ProgressDeadlineExceeded", "ReplicaSet \"\(new.name)\" has timed out progressing.")
                } else {
                    if progressing?["reason"]?.string != "NewReplicaSetCreated" {
                        set("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet \"\(new.name)\" is progressing.")
                    }
                    queue.add(d.key, after: Double(deadline) - Date().timeIntervalSince(last) + 1)
                }
            }
        }
        status["conditions"] = .array(conditions)
        guard JSONValue.object(status) != before else { return }
        var patch = JSONValue.object(status)
        for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"] where status[k] == nil && before[k] != nil {
            patch[k] = .null
        }
        _ = try await api.mergePatch(API.path("apps/v1", "deployments", namespace: d.namespace, name: d.name, subresource: "status"), ["status": patch])
    }
}
