import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The ReplicaSet controller (and, with `kind: ReplicationController`, the replication
/// controller): keeps `spec.replicas` active pods from the template, adopting orphans its
/// selector matches and releasing pods it no longer matches; creates in slow-start batches
/// (1, 2, 4, … at most 500 per sync), deletes the least useful pods first (unbound, pending,
/// not ready, newest); waits for its own creations and deletions to be observed before acting
/// again (upstream's expectations); writes `status` (replicas, fullyLabeled, ready, available,
/// observedGeneration).
public final class ReplicaSetController: Controller, Sendable {
    public let name: String
    let api: API
    let kind: String
    let groupVersion: String
    let resource: String
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    let workers: Int
    let sets = Mutex<Informer<JSONValue>?>(nil)
    let podInformer = Mutex<Informer<JSONValue>?>(nil)
    /// Creations and deletions issued and not yet seen, per set.
    let expectations = Mutex<[String: (adds: Int, deletes: Set<String>, at: Date)]>([:])
    public static let burstReplicas = 500

    public init(api: API, kind: String = "ReplicaSet", workers: Int = 5, logger: Logger = Logger(label: "switchyard.replicaset")) {
        self.api = api
        self.kind = kind
        if kind == "ReplicationController" {
            name = "replicationcontroller"; groupVersion = "v1"; resource = "replicationcontrollers"
        } else {
            name = "replicaset"; groupVersion = "apps/v1"; resource = "replicasets"
        }
        self.workers = workers
        self.logger = logger
        events = EventRecorder(api: api, component: kind == "ReplicationController" ? "replication-controller" : "replicaset-controller")
    }

    func selector(_ rs: JSONValue) -> ObjectSelector? {
        guard let s = rs[path: ["spec", "selector"]] else { return nil }
        if kind == "ReplicationController" {
            return ObjectSelector(matchLabels: (s.object ?? [:]).compactMapValues(\.string))
        }
        return ObjectSelector(s)
    }

    public func setUp(_ informers: SharedInformers) {
        let sets = informers.informer(API.path(groupVersion, resource), slim: Slim.managedFields)
        let pods = informers.pods
        self.sets.withLock { $0 = sets }
        podInformer.withLock { $0 = pods }
        sets.onChange { [queue] c in await queue.add(c.key) }
        pods.onChange { [weak self] c in await self?.podChanged(c) }
    }

    func podChanged(_ c: Change<JSONValue>) async {
        let p = c.new ?? c.old!
        if let owner = Owners.controller(p), owner.kind == kind {
            let key = "\(p.namespace)/\(owner.name)"
            observe(key, pod: p, added: c.old == nil && c.new != nil, deleted: c.new == nil)
            await queue.add(key)
            // A pod whose labels changed may leave the set, or join another.
            if let old = c.old, let new = c.new, old.labels != new.labels { await enqueueMatching(new) }
            return
        }
        // An orphan: every set whose selector matches it may adopt it.
        if c.new != nil { await enqueueMatching(p) }
    }

    func enqueueMatching(_ p: JSONValue) async {
        guard let sets = self.sets.withLock({ $0 }) else { return }
        for rs in sets.filter({ $0.namespace == p.namespace }) {
            if let s = selector(rs), !s.isEmpty, s.matches(p.labels) { await queue.add(rs.key) }
        }
    }

    func observe(_ key: String, pod: JSONValue, added: Bool, deleted: Bool) {
        expectations.withLock { e in
            guard var x = e[key] else { return }
            if added && x.adds > 0 { x.adds -= 1 }
            if deleted { x.deletes.remove(pod.name) }
            e[key] = x
        }
    }

    /// Whether the last creations and deletions were all observed (or are five minutes old, as upstream gives up).
    func satisfied(_ key: String) -> Bool {
        expectations.withLock { e in
            guard let x = e[key] else { return true }
            if (x.adds <= 0 && x.deletes.isEmpty) || Date().timeIntervalSince(x.at) > 300 { e[key] = nil; return true }
            return false
        }
    }

    public func run() async {
        await runWorkers(queue, workers: workers, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        guard let sets = self.sets.withLock({ $0 }), let pods = podInformer.withLock({ $0 }) else { return }
        guard let rs = sets.get(key) else {
            expectations.withLock { $0[key] = nil }
            return
        }
        let ns = rs.namespace
        guard let sel = selector(rs), !sel.isEmpty else { return }
        // The pods it owns, and orphans it adopts; owned pods it no longer selects are released.
        var owned: [JSONValue] = []
        var adoptable: Bool?
        for p in pods.filter({ $0.namespace == ns }) {
            let owner = Owners.controller(p)
            let matches = sel.matches(p.labels)
            if let owner {
                guard owner.uid == rs.uid else { continue }
                if matches { owned.append(p) } else if !rs.isDeleting { try? await release(p, from: rs) }
            } else if matches, !p.isDeleting, !rs.isDeleting {
                if adoptable == nil { adoptable = await Owners.canAdopt(api, path: API.path(groupVersion, resource, namespace: ns, name: rs.name), uid: rs.uid) }
                guard adoptable == true else { continue }
                if let adopted = try? await adopt(p, by: rs) { owned.append(adopted) }
            }
        }
        let active = owned.filter(PodStatus.isActive)
        if satisfied(key) && !rs.isDeleting {
            try await manage(rs, active: active)
        }
        try await updateStatus(rs, owned: owned, active: active, selector: sel)
    }

    func adopt(_ p: JSONValue, by rs: JSONValue) async throws -> JSONValue {
        var refs = p[path: ["metadata", "ownerReferences"]]?.array ?? []
        refs.append(Owners.reference(rs, apiVersion: groupVersion, kind: kind))
        return try await api.mergePatch(API.path("v1", "pods", namespace: p.namespace, name: p.name),
                                        ["metadata": ["ownerReferences": .array(refs), "uid": .string(p.uid)]])
    }

    func release(_ p: JSONValue, from rs: JSONValue) async throws {
        let refs = (p[path: ["metadata", "ownerReferences"]]?.array ?? []).filter { $0["uid"]?.string != rs.uid }
        _ = try await api.mergePatch(API.path("v1", "pods", namespace: p.namespace, name: p.name),
                                     ["metadata": ["ownerReferences": refs.isEmpty ? .null : .array(refs), "uid": .string(p.uid)]])
    }

    func manage(_ rs: JSONValue, active: [JSONValue]) async throws {
        let want = Int(rs[path: ["spec", "replicas"]]?.int ?? 1)
        let diff = active.count - want
        let key = rs.key
        if diff < 0 {
            let n = min(-diff, Self.burstReplicas)
            expectations.withLock { $0[key] = (n, [], Date()) }
            let template = rs[path: ["spec", "template"]] ?? [:]
            var pod: JSONValue = ["apiVersion": "v1", "kind": "Pod",
                                  "metadata": ["generateName": .string(rs.name + "-"), "namespace": .string(rs.namespace),
                                               "ownerReferences": [Owners.reference(rs, apiVersion: groupVersion, kind: kind)]],
                                  "spec": template["spec"] ?? [:]]
            if let l = template[path: ["metadata", "labels"]] { pod[path: ["metadata", "labels"]] = l }
            if let a = template[path: ["metadata", "annotations"]] { pod[path: ["metadata", "annotations"]] = a }
            let newPod = pod
            let created = try await slowStart(n) { [api, events] in
                let p = try await api.create(API.path("v1", "pods", namespace: rs.namespace), newPod)
                events.record(rs, reason: "SuccessfulCreate", message: "Created pod: \(p.name)", kind: self.kind, apiVersion: self.groupVersion)
            }
            if created < n {
                // The rest will not be seen: expect only what was made.
                expectations.withLock { e in if var x = e[key] { x.adds -= n - created; e[key] = x } }
                throw APIStatusError(code: 0, reason: "FailedCreate", message: "created \(created) of \(n) pods")
            }
        } else if diff > 0 {
            let victims = Array(Self.ranked(active).prefix(min(diff, Self.burstReplicas)))
            expectations.withLock { $0[key] = (0, Set(victims.map(\.name)), Date()) }
            try await withThrowingTaskGroup(of: Void.self) { g in
                for v in victims {
                    g.addTask { [api, events] in
                        do {
                            try await api.delete(API.path("v1", "pods", namespace: v.namespace, name: v.name))
                            events.record(rs, reason: "SuccessfulDelete", message: "Deleted pod: \(v.name)", kind: self.kind, apiVersion: self.groupVersion)
                        } catch let e as APIStatusError where e.isNotFound {
                            self.observe(key, pod: v, added: false, deleted: true)
                        }
                    }
                }
                try await g.waitForAll()
            }
        }
    }

    /// upstream's slowStartBatch: batches of 1, 2, 4, … run concurrently within a batch; stops
    /// at the first batch with a failure. Returns how many succeeded.
    func slowStart(_ count: Int, _ body: @escaping @Sendable () async throws -> Void) async throws -> Int {
        var done = 0, batch = 1
        while done < count {
            let size = min(batch, count - done)
            let ok = await withTaskGroup(of: Bool.self) { g in
                for _ in 0..<size { g.addTask { (try? await body()) != nil } }
                var n = 0
                for await r in g where r { n += 1 }
                return n
            }
            done += ok
            if ok < size { return done }
            batch *= 2
        }
        return done
    }

    /// Which pods go first when scaling down (upstream's ActivePods ordering): unbound before
    /// bound, pending before running, not ready before ready, recently ready before long
    /// ready, more restarts first, newer before older.
    static func ranked(_ pods: [JSONValue]) -> [JSONValue] {
        func phaseRank(_ p: JSONValue) -> Int {
            switch p[path: ["status", "phase"]]?.string ?? "" {
            case "Pending": 0
            case "Unknown": 1
            default: 2
            }
        }
        return pods.sorted { a, b in
            let aBound = !(a[path: ["spec", "nodeName"]]?.string ?? "").isEmpty, bBound = !(b[path: ["spec", "nodeName"]]?.string ?? "").isEmpty
            if aBound != bBound { return !aBound }
            if phaseRank(a) != phaseRank(b) { return phaseRank(a) < phaseRank(b) }
            let ar = PodStatus.isReady(a), br = PodStatus.isReady(b)
            if ar != br { return !ar }
            let ac = a[path: ["metadata", "creationTimestamp"]]?.string ?? "", bc = b[path: ["metadata", "creationTimestamp"]]?.string ?? ""
            if ac != bc { return ac > bc }
            return a.name > b.name
        }
    }

    func updateStatus(_ rs: JSONValue, owned: [JSONValue], active: [JSONValue], selector: ObjectSelector) async throws {
        let templateLabels = (rs[path: ["spec", "template", "metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
        let minReady = rs[path: ["spec", "minReadySeconds"]]?.int ?? 0
        var status = rs["status"]?.object ?? [:]
        let old = JSONValue.object(status)
        status["replicas"] = .int(Int64(active.count))
        status["fullyLabeledReplicas"] = .int(Int64(active.filter { p in templateLabels.allSatisfy { p.labels[$0.key] == $0.value } }.count))
        status["readyReplicas"] = .int(Int64(active.filter(PodStatus.isReady).count))
        status["availableReplicas"] = .int(Int64(active.filter { PodStatus.isAvailable($0, minReadySeconds: minReady) }.count))
        status["observedGeneration"] = rs[path: ["metadata", "generation"]] ?? 0
        if kind == "ReplicaSet" { status["terminatingReplicas"] = nil }
        guard JSONValue.object(status) != old else { return }
        _ = try await api.mergePatch(API.path(groupVersion, resource, namespace: rs.namespace, name: rs.name, subresource: "status"),
                                     ["status": .object(status)])
        // Pods that become available later bring it back (upstream requeues after minReadySeconds).
        if minReady > 0, (status["readyReplicas"]?.int ?? 0) > (status["availableReplicas"]?.int ?? 0) {
            queue.add(rs.key, after: Double(minReady) + 1)
        }
    }
}
