import ControllerKit
import Foundation
import KubeAPI
import Logging
import Synchronization

/// kube-controller-manager's `resourcequota` controller: each ResourceQuota's `status.hard` and
/// `status.used`, counted from the namespace's objects (its scopes applied), written when a quota
/// is made or changed, when a pod or Service it may count goes away or a pod ends (upstream's
/// replenishment), and at every `--resource-quota-sync-period` (5 minutes) for the rest. The API
/// server's admission only ever adds to `used`; this is where deletions come off.
public final class ResourceQuotaController: Controller, Sendable {
    public let name = "resourcequota"
    let api: API
    let queue = WorkQueue()
    let resync: Duration
    let logger: Logger
    let quotas = Mutex<Informer<JSONValue>?>(nil)
    /// A group's preferred version, from discovery (for `count/RESOURCE.GROUP`).
    let versions = Mutex<[String: String]>([:])

    public init(api: API, resync: Duration = .seconds(300), logger: Logger = Logger(label: "switchyard.resourcequota")) {
        self.api = api
        self.resync = resync
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let q = informers.informer("/api/v1/resourcequotas", slim: Slim.managedFields)
        quotas.withLock { $0 = q }
        // A namespace's quotas are synced together: its name is the key.
        q.onChange { [queue] c in
            if let o = c.new ?? c.old { await queue.add(o.namespace) }
        }
        let replenish: @Sendable (Change<JSONValue>) async -> Void = { [weak self] c in
            guard let self, let o = c.old ?? c.new else { return }
            let gone = c.new == nil
            let ended = c.new.map { !QuotaAccounting.podCounts($0) } == true && c.old.map(QuotaAccounting.podCounts) == true
            guard gone || ended, self.quotas.withLock({ $0 })?.filter({ $0.namespace == o.namespace }).isEmpty == false else { return }
            await self.queue.add(o.namespace)
        }
        informers.pods.onChange(replenish)
        informers.informer("/api/v1/services", slim: Slim.managedFields).onChange(replenish)
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: resync)
                    for ns in Set(quotas.withLock { $0 }?.items.map(\.namespace) ?? []) { await queue.add(ns) }
                }
            }
            g.addTask { [self] in await runWorkers(queue, workers: 2, logger: logger, name: name) { [self] ns in try await sync(ns) } }
        }
    }

    /// Counts the namespace's usage for each of its quotas and writes the status that changed.
    func sync(_ namespace: String) async throws {
        guard let informer = quotas.withLock({ $0 }) else { return }
        for quota in informer.filter({ $0.namespace == namespace }) {
            let hard = quota[path: ["spec", "hard"]]?.object ?? [:]
            let used = try await QuotaAccounting.usage(Set(hard.keys), quota: quota) { group, resource in
                try await self.objects(group: group, resource: resource, namespace: namespace)
            }
            var usedStatus: [String: JSONValue] = [:]
            for k in hard.keys { usedStatus[k] = .string(QuotaAccounting.format(used[k] ?? 0, for: k)) }
            let status: JSONValue = ["hard": .object(hard), "used": .object(usedStatus)]
            guard quota["status"] != status else { continue }
            var updated = quota
            updated["status"] = status
            do {
                _ = try await api.update(API.path("v1", "resourcequotas", namespace: namespace, name: quota.name, subresource: "status"), updated)
            } catch let e as APIStatusError where e.isConflict || e.isNotFound {
                // Changed or gone meanwhile: its own event brings it back.
            }
        }
    }

    /// The namespace's objects of a resource (nil when it is not served).
    func objects(group: String, resource: String, namespace: String) async throws -> [JSONValue]? {
        var version = "v1"
        if !group.isEmpty {
            if let v = versions.withLock({ $0[group] }) {
                version = v
            } else {
                do {
                    let d = try await api.get("/apis/\(group)")
                    guard let v = d[path: ["preferredVersion", "version"]]?.string else { return nil }
                    versions.withLock { $0[group] = v }
                    version = v
                } catch let e as APIStatusError where e.isNotFound { return nil }
            }
        }
        let gv = group.isEmpty ? version : "\(group)/\(version)"
        do {
            return try await api.list(API.path(gv, resource, namespace: namespace))["items"]?.array ?? []
        } catch let e as APIStatusError where e.isNotFound { return nil }
    }
}
