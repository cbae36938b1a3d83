import Foundation
import Logging
import Synchronization
import KubeAPI

/// Informers shared by every controller of a process, one per collection (client-go's shared
/// informer factory): the pods are listed and watched once, however many controllers read them.
public final class SharedInformers: Sendable {
    public let api: API
    let logger: Logger
    let informers = Mutex<[String: Informer<JSONValue>]>([:])
    let started = Mutex(false)

    public init(api: API, logger: Logger = Logger(label: "switchyard.informers")) {
        self.api = api
        self.logger = logger
    }

    /// The informer of a collection (`/api/v1/pods`), objects slimmed by `slim` when it is first
    /// asked for (what controllers never read is not kept).
    public func informer(_ path: String, slim: (@Sendable (JSONValue) -> JSONValue)? = nil) -> Informer<JSONValue> {
        informers.withLock { all in
            if let i = all[path] { return i }
            let i = Informer<JSONValue>(api, path: path, logger: logger) { o in slim.map { $0(o) } ?? o }
            all[path] = i
            return i
        }
    }

    public var pods: Informer<JSONValue> { informer("/api/v1/pods", slim: Slim.pod) }
    public var nodes: Informer<JSONValue> { informer("/api/v1/nodes", slim: Slim.managedFields) }

    /// Runs every informer asked for so far, until cancelled.
    public func run() async {
        let all = informers.withLock { Array($0.values) }
        await withTaskGroup(of: Void.self) { g in
            for i in all { g.addTask { await i.run() } }
        }
    }

    public func waitForSync() async {
        for i in informers.withLock({ Array($0.values) }) { await i.waitForSync() }
    }
}

/// What controllers keep of objects.
public enum Slim {
    public static func managedFields(_ o: JSONValue) -> JSONValue {
        var o = o
        o[path: ["metadata", "managedFields"]] = nil
        return o
    }

    /// A Pod as controllers read it, and no more (10,000 whole pods as JSON trees would cost
    /// hundreds of megabytes): its identity, labels, owners, the annotations controllers read,
    /// deletion and creation times; the node, tolerations and node affinity, hostname and
    /// subdomain, the containers' ports; the phase, the IP and the Ready condition.
    public static func pod(_ o: JSONValue) -> JSONValue {
        // What pods repeat (a controller's pods share labels, owners, tolerations) is kept once.
        var meta: [String: JSONValue] = [:]
        for k in ["name", "namespace", "uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "creationTimestamp", "finalizers"] {
            if let v = o[path: ["metadata", k]] { meta[k] = v }
        }
        for k in ["labels", "ownerReferences", "generateName"] {
            if let v = o[path: ["metadata", k]] { meta[k] = shared.intern(v) }
        }
        if let a = o[path: ["metadata", "annotations"]]?.object {
            let kept = a.filter { podAnnotations.contains($0.key) }
            if !kept.isEmpty { meta["annotations"] = shared.intern(.object(kept)) }
        }
        var spec: [String: JSONValue] = [:]
        for k in ["nodeName", "tolerations", "schedulerName", "restartPolicy", "hostname", "subdomain"] {
            if let v = o[path: ["spec", k]] { spec[k] = shared.intern(v) }
        }
        // The containers' ports, for the endpoint controllers' named target ports.
        let ports = (o[path: ["spec", "containers"]]?.array ?? []).map { c -> JSONValue in
            ["ports": .array((c["ports"]?.array ?? []).map { p in ["name": p["name"] ?? .null, "containerPort": p["containerPort"] ?? .null,
                                                                 "protocol": p["protocol"] ?? "TCP"] })]
        }
        if ports.contains(where: { $0["ports"]?.array?.isEmpty == false }) { spec["containers"] = shared.intern(.array(ports)) }
        if let na = o[path: ["spec", "affinity", "nodeAffinity"]] { spec["affinity"] = shared.intern(["nodeAffinity": na]) }
        var status: [String: JSONValue] = [:]
        if let phase = o[path: ["status", "phase"]] { status["phase"] = phase }
        if let ip = o[path: ["status", "podIP"]] { status["podIP"] = ip }
        // A dual-stack pod's addresses (a single-stack pod's one is podIP's).
        if let ips = o[path: ["status", "podIPs"]], (ips.array?.count ?? 0) > 1 { status["podIPs"] = ips }
        let conditions = (o[path: ["status", "conditions"]]?.array ?? []).filter { $0["type"] == "Ready" }.map { c -> JSONValue in
            var kept: [String: JSONValue] = [:]
            for k in ["type", "status", "lastTransitionTime"] { kept[k] = c[k] }
            return .object(kept)
        }
        if !conditions.isEmpty { status["conditions"] = .array(conditions) }
        return ["metadata": .object(meta), "spec": .object(spec), "status": .object(status)]
    }

    /// The values slim pods share.
    static let shared = Interner<JSONValue>()

    /// The annotations of pods a controller reads.
    static let podAnnotations: Set<String> = ["batch.kubernetes.io/job-completion-index", "switchyard.dev/fake-run-seconds", "switchyard.dev/fake-exit-code"]
}

/// One reconcile loop: informers feed a work queue of keys, workers reconcile each key,
/// failures are retried with the queue's backoff.
public protocol Controller: Sendable {
    /// kube-controller-manager's name for it (`replicaset`, `deployment`).
    var name: String { get }
    /// Registers its informers and handlers (before they run).
    func setUp(_ informers: SharedInformers)
    /// Runs its workers until cancelled (the informers have synced).
    func run() async
}

/// Workers over a queue: `reconcile(key)` for each key, `workers` at once, retried on error.
public func runWorkers(_ queue: WorkQueue, workers: Int, logger: Logger, name: String,
                       reconcile: @escaping @Sendable (String) async throws -> Void) async {
    await withTaskGroup(of: Void.self) { g in
        for _ in 0..<workers {
            g.addTask {
                while let key = await queue.next() {
                    do {
                        try await reconcile(key)
                        await queue.forget(key)
                    } catch {
                        let retries = await queue.retries(key)
                        if retries < 15 || retries % 10 == 0 { logger.debug("\(name) \(key): \(error); retrying") }
                        await queue.retry(key)
                    }
                    await queue.done(key)
                }
            }
        }
        g.addTask {
            await withTaskCancellationHandler {
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            } onCancel: {
                Task { await queue.shutdown() }
            }
        }
    }
}

/// Owner references: the controller of an object, and references made for one.
public enum Owners {
    /// The uid of the object's controller of `kind`, if any.
    public static func controller(_ o: JSONValue, kind: String? = nil) -> (kind: String, name: String, uid: String)? {
        for r in o[path: ["metadata", "ownerReferences"]]?.array ?? [] where r["controller"]?.bool == true {
            let k = r["kind"]?.string ?? ""
            if let kind, k != kind { return nil }
            return (k, r["name"]?.string ?? "", r["uid"]?.string ?? "")
        }
        return nil
    }

    /// Whether the owner at `path` (read again, not from a cache) is still the one with `uid` and
    /// not being deleted: upstream's `RecheckDeletionTimestamp` before an adoption, so a
    /// controller whose cache has not yet seen its owner's deletion does not adopt back what the
    /// garbage collector has just orphaned.
    public static func canAdopt(_ api: API, path: String, uid: String) async -> Bool {
        guard let fresh = try? await api.get(path) else { return false }
        return fresh.uid == uid && !fresh.isDeleting
    }

    /// An owner reference to `owner` naming it the controller (`blockOwnerDeletion` set, as controllers set it).
    public static func reference(_ owner: JSONValue, apiVersion: String, kind: String) -> JSONValue {
        ["apiVersion": .string(apiVersion), "kind": .string(kind), "name": .string(owner.name), "uid": .string(owner.uid),
         "controller": true, "blockOwnerDeletion": true]
    }
}

/// Pod conditions and times as controllers read them.
public enum PodStatus {
    public static func isReady(_ p: JSONValue) -> Bool {
        (p[path: ["status", "conditions"]]?.array ?? []).contains { $0["type"] == "Ready" && $0["status"] == "True" }
    }

    /// Ready for at least `minReadySeconds` (upstream's `IsPodAvailable`).
    public static func isAvailable(_ p: JSONValue, minReadySeconds: Int64, now: Date = Date()) -> Bool {
        guard let c = (p[path: ["status", "conditions"]]?.array ?? []).first(where: { $0["type"] == "Ready" }), c["status"] == "True" else { return false }
        if minReadySeconds == 0 { return true }
        guard let t = c["lastTransitionTime"]?.string.flatMap(Time.parse) else { return false }
        return now.timeIntervalSince(t) >= Double(minReadySeconds)
    }

    /// Finished: Succeeded or Failed.
    public static func isTerminal(_ p: JSONValue) -> Bool {
        let phase = p[path: ["status", "phase"]]?.string ?? ""
        return phase == "Succeeded" || phase == "Failed"
    }

    public static func isActive(_ p: JSONValue) -> Bool {
        let phase = p[path: ["status", "phase"]]?.string ?? ""
        return phase != "Succeeded" && phase != "Failed" && !p.isDeleting
    }
}

/// RFC 3339 times as the API writes them (through `RFC3339`, without Foundation's formatters,
/// which load ICU and cost more than the request they are for).
public enum Time {
    public static func parse(_ s: String) -> Date? { RFC3339.seconds(s).map { Date(timeIntervalSince1970: $0) } }

    public static func now(_ d: Date = Date()) -> String { RFC3339.format(d.timeIntervalSince1970) }
}
