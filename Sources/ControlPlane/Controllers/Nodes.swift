import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The node lifecycle controller: a node whose kubelet has not renewed its Lease (nor posted
/// its status) for `--node-monitor-grace-period` gets its conditions set to Unknown ("Kubelet
/// stopped posting node status."), its pods marked not ready, and the
/// `node.kubernetes.io/unreachable` taints (`not-ready` for a node reporting Ready=False),
/// NoSchedule and NoExecute; the taints go when it is Ready again. Pods on a node with a
/// NoExecute taint they do not tolerate are deleted at once, those tolerating it for
/// `tolerationSeconds` after that (the taint manager's eviction).
public final class NodeLifecycleController: Controller, Sendable {
    public let name = "nodelifecycle"
    let api: API
    let events: EventRecorder
    let logger: Logger
    let grace: Double
    let period: Double
    /// How long a new node may go without posting its status (`--node-startup-grace-period`, 60 s).
    let startupGrace: Double
    let nodes = Mutex<Informer<JSONValue>?>(nil)
    let leases = Mutex<Informer<JSONValue>?>(nil)
    let pods = Mutex<Informer<JSONValue>?>(nil)
    /// Per node, the last heartbeat seen (lease renewTime or Ready's lastHeartbeatTime) and when, on this clock.
    let probes = Mutex<[String: (heartbeat: String, at: Date)]>([:])
    /// Evictions scheduled, by pod uid.
    let scheduled = Mutex<Set<String>>([])
    public static let unreachable = "node.kubernetes.io/unreachable"
    public static let notReady = "node.kubernetes.io/not-ready"

    public init(api: API, gracePeriod: Double = 40, monitorPeriod: Double = 5, startupGracePeriod: Double = 60,
                logger: Logger = Logger(label: "switchyard.nodelifecycle")) {
        self.api = api
        grace = gracePeriod
        startupGrace = startupGracePeriod
        period = monitorPeriod
        self.logger = logger
        events = EventRecorder(api: api, component: "node-controller")
    }

    public func setUp(_ informers: SharedInformers) {
        nodes.withLock { $0 = informers.nodes }
        leases.withLock { $0 = informers.informer(API.path("coordination.k8s.io/v1", "leases", namespace: "kube-node-lease"), slim: Slim.managedFields) }
        let p = informers.pods
        pods.withLock { $0 = p }
        // A pod bound to a tainted node is checked when it arrives.
        p.onChange { [weak self] c in
            guard let self, let pod = c.new, let node = pod[path: ["spec", "nodeName"]]?.string, !node.isEmpty,
                  let n = self.nodes.withLock({ $0 })?.get(node) else { return }
            await self.evictIfUntolerated(pod, node: n)
        }
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask {
                while !Task.isCancelled {
                    await self.monitor()
                    try? await Task.sleep(for: .milliseconds(Int(self.period * 1000)))
                }
            }
        }
    }

    static func taints(_ n: JSONValue) -> [JSONValue] { n[path: ["spec", "taints"]]?.array ?? [] }

    /// One pass over every node.
    func monitor() async {
        guard let nodeInf = nodes.withLock({ $0 }), let leaseInf = leases.withLock({ $0 }) else { return }
        let now = Date()
        for n in nodeInf.items {
            let ready = (n[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "Ready" }
            let beat = [leaseInf.get("kube-node-lease/\(n.name)")?[path: ["spec", "renewTime"]]?.string ?? "",
                        ready?["lastHeartbeatTime"]?.string ?? ""].joined(separator: "|")
            let last = probes.withLock { p -> Date in
                if let seen = p[n.name], seen.heartbeat == beat { return seen.at }
                p[n.name] = (beat, now)
                return now
            }
            // A node that never posted its status has the startup grace period from its creation.
            if ready == nil {
                let created = n[path: ["metadata", "creationTimestamp"]]?.string.flatMap(Time.parse) ?? now
                if now.timeIntervalSince(max(created, last)) > max(grace, startupGrace) {
                    await markUnknown(n, reason: "NodeStatusNeverUpdated", message: "Kubelet never posted node status.")
                    await reconcileTaints(n, ready: "Unknown")
                }
                continue
            }
            var status = ready?["status"]?.string ?? "Unknown"
            if now.timeIntervalSince(last) > grace && status != "Unknown" {
                await markUnknown(n)
                status = "Unknown"
            }
            await reconcileTaints(n, ready: status)
        }
    }

    func markUnknown(_ n: JSONValue, reason: String = "NodeStatusUnknown", message: String = "Kubelet stopped posting node status.") async {
        let now = Time.now()
        var conditions = n[path: ["status", "conditions"]]?.array ?? []
        for type in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            let c: JSONValue = ["type": .string(type), "status": "Unknown", "reason": .string(reason), "message": .string(message),
                                "lastHeartbeatTime": conditions.first { $0["type"]?.string == type }?["lastHeartbeatTime"] ?? .string(now),
                                "lastTransitionTime": .string(now)]
            if let i = conditions.firstIndex(where: { $0["type"]?.string == type }) { conditions[i] = c } else { conditions.append(c) }
        }
        do {
            _ = try await api.strategicPatch(API.path("v1", "nodes", name: n.name, subresource: "status"), ["status": ["conditions": .array(conditions)]])
            logger.info("node \(n.name) hasn't been updated for \(Int(grace)) s: its status is now Unknown")
            events.record(n, reason: "NodeNotReady", message: "Node \(n.name) status is now: NodeNotReady", kind: "Node", apiVersion: "v1")
        } catch {
            logger.debug("marking node \(n.name) unknown: \(error)")
        }
        // Its pods are not ready any more (upstream's MarkPodsNotReady).
        for p in pods.withLock({ $0 })?.filter({ $0[path: ["spec", "nodeName"]]?.string == n.name && PodStatus.isReady($0) }) ?? [] {
            _ = try? await api.strategicPatch(API.path("v1", "pods", namespace: p.namespace, name: p.name, subresource: "status"),
                                              ["status": ["conditions": [["type": "Ready", "status": "False", "lastTransitionTime": .string(now)]]]])
        }
    }

    func reconcileTaints(_ n: JSONValue, ready: String) async {
        let want: String? = ready == "True" ? nil : ready == "False" ? Self.notReady : Self.unreachable
        let current = Self.taints(n)
        var kept = current.filter { t in
            let k = t["key"]?.string ?? ""
            return (k != Self.unreachable && k != Self.notReady) || k == want
        }
        if let want {
            for effect in ["NoSchedule", "NoExecute"] where !kept.contains(where: { $0["key"]?.string == want && $0["effect"]?.string == effect }) {
                var t: JSONValue = ["key": .string(want), "effect": .string(effect)]
                if effect == "NoExecute" { t["timeAdded"] = .string(Time.now()) }
                kept.append(t)
            }
        }
        if kept != current {
            do {
                let updated = try await api.mergePatch(API.path("v1", "nodes", name: n.name),
                                                       ["spec": ["taints": kept.isEmpty ? .null : .array(kept)], "metadata": ["resourceVersion": n[path: ["metadata", "resourceVersion"]] ?? .null]])
                await evictAll(on: updated)
            } catch {
                logger.debug("tainting node \(n.name): \(error)")
            }
        } else if kept.contains(where: { $0["effect"]?.string == "NoExecute" }) {
            await evictAll(on: n)
        }
    }

    func evictAll(on n: JSONValue) async {
        for p in pods.withLock({ $0 })?.filter({ $0[path: ["spec", "nodeName"]]?.string == n.name }) ?? [] {
            await evictIfUntolerated(p, node: n)
        }
    }

    /// The taint manager: a pod that does not tolerate a NoExecute taint goes now; one that
    /// tolerates them all for a while goes when the shortest while is over.
    func evictIfUntolerated(_ p: JSONValue, node n: JSONValue) async {
        guard !p.isDeleting, PodStatus.isActive(p) else { return }
        let taints = Self.taints(n).filter { $0["effect"]?.string == "NoExecute" }
        guard !taints.isEmpty else { return }
        let tolerations = (p[path: ["spec", "tolerations"]]?.array ?? []).map(Toleration.init)
        var wait: Double?
        for t in taints {
            let matching = tolerations.filter { $0.tolerates(Taint(t)) }
            guard !matching.isEmpty else { wait = 0; break }
            // Tolerated for the shortest of the matching tolerations' times (none: forever).
            let seconds = matching.compactMap(\.seconds).min()
            if let seconds {
                let added = t["timeAdded"]?.string.flatMap(Time.parse) ?? Date()
                let left = max(0, Double(seconds) - Date().timeIntervalSince(added))
                wait = min(wait ?? left, left)
            }
        }
        guard let wait else { return }
        let uid = p.uid
        guard scheduled.withLock({ $0.insert(uid).inserted }) else { return }
        Task {
            if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
            defer { _ = self.scheduled.withLock { $0.remove(uid) } }
            // Still there, still on a tainted node?
            guard let now = self.pods.withLock({ $0 })?.get(p.key), now.uid == uid, !now.isDeleting,
                  let node = self.nodes.withLock({ $0 })?.get(n.name),
                  Self.taints(node).contains(where: { $0["effect"]?.string == "NoExecute" }) else { return }
            self.events.record(p, reason: "TaintManagerEviction", message: "Marking for deletion Pod \(p.namespace)/\(p.name)", kind: "Pod", apiVersion: "v1")
            _ = try? await self.api.strategicPatch(API.path("v1", "pods", namespace: p.namespace, name: p.name, subresource: "status"),
                ["status": ["conditions": [["type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                                            "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": .string(Time.now())]]]])
            do { try await self.api.delete(API.path("v1", "pods", namespace: p.namespace, name: p.name)) } catch {
                self.logger.debug("evicting \(p.key): \(error)")
            }
        }
    }
}

/// The ranges of one cluster CIDR handed to nodes: `2^(mask - prefix)` ranges of prefix
/// length `mask`, numbered in address order (upstream's CIDRSet; at most 2^16).
public struct NodeCIDRSet: Sendable, Equatable {
    public let cluster: CIDR
    public let mask: Int

    /// nil unless `mask` is at least the cluster's prefix, at most 16 more, and leaves room for
    /// addresses (IPv4 up to /30, IPv6 up to /126).
    public init?(cluster: CIDR, mask: Int) {
        let bits = cluster.family == .ipv4 ? 32 : 128
        guard mask >= cluster.prefixLength, mask - cluster.prefixLength <= 16, mask <= bits - 2 else { return nil }
        self.cluster = cluster.network
        self.mask = mask
    }

    public var count: UInt32 { UInt32(1) << UInt32(mask - cluster.prefixLength) }

    /// Range `i` as text (`10.244.3.0/24`, `fd00:10:244:3::/64`).
    public func range(_ i: UInt32) -> String {
        var b = cluster.address.bytes
        let n = mask - cluster.prefixLength
        for j in 0..<n where (i >> UInt32(n - 1 - j)) & 1 == 1 {
            let k = cluster.prefixLength + j
            b[k / 8] |= UInt8(0x80 >> (k % 8))
        }
        return "\(IPAddress(bytes: b)!)/\(mask)"
    }

    /// Which range `cidr` is (nil if it is not one of this set's).
    public func index(_ cidr: String) -> UInt32? {
        guard let c = CIDR(cidr), c.prefixLength == mask, cluster.contains(c.address), c.network == c else { return nil }
        var i: UInt32 = 0
        for k in cluster.prefixLength..<mask {
            i = (i << 1) | UInt32((c.address.bytes[k / 8] >> UInt8(7 - k % 8)) & 1)
        }
        return i
    }
}

/// Node IPAM (`--allocate-node-cidrs`, `--cluster-cidr`, `--node-cidr-mask-size[-ipv4|-ipv6]`):
/// each Node without a `spec.podCIDR` gets the next free range of each cluster CIDR (two on a
/// dual-stack cluster: `podCIDRs` of both families, `podCIDR` the first); ranges of deleted
/// nodes are reused.
public final class NodeIPAMController: Controller, Sendable {
    public let name = "nodeipam"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let events: EventRecorder
    let sets: [NodeCIDRSet]
    let nodes = Mutex<Informer<JSONValue>?>(nil)
    /// Per set: the ranges in use, by the node that holds each.
    let used: Mutex<[[UInt32: String]]>

    /// One cluster CIDR and its mask (single-stack).
    public convenience init?(api: API, clusterCIDR: String, maskSize: Int = 24, logger: Logger = Logger(label: "switchyard.nodeipam")) {
        guard let c = CIDR(clusterCIDR), let set = NodeCIDRSet(cluster: c, mask: maskSize) else { return nil }
        self.init(api: api, sets: [set], logger: logger)
    }

    /// One set per cluster CIDR (at most one per family), the primary first.
    public init(api: API, sets: [NodeCIDRSet], logger: Logger = Logger(label: "switchyard.nodeipam")) {
        self.api = api
        self.sets = sets
        used = Mutex(Array(repeating: [:], count: sets.count))
        self.logger = logger
        events = EventRecorder(api: api, component: "cidrAllocator")
    }

    static func podCIDRs(_ n: JSONValue) -> [String] {
        let list = (n[path: ["spec", "podCIDRs"]]?.array ?? []).compactMap(\.string)
        if !list.isEmpty { return list }
        return [n[path: ["spec", "podCIDR"]]?.string].compactMap { $0 }.filter { !$0.isEmpty }
    }

    /// Each of `cidrs` that is a range of a set, by set.
    func located(_ cidrs: [String]) -> [(set: Int, index: UInt32)] {
        let sets = self.sets
        return cidrs.compactMap { c in sets.indices.lazy.compactMap { s in sets[s].index(c).map { (s, $0) } }.first }
    }

    public func setUp(_ informers: SharedInformers) {
        let n = informers.nodes
        nodes.withLock { $0 = n }
        n.onChange { [weak self] c in
            guard let self else { return }
            if let new = c.new {
                let cidrs = Self.podCIDRs(new)
                if cidrs.isEmpty {
                    await self.queue.add(new.name)
                } else {
                    let at = self.located(cidrs)
                    self.used.withLock { u in for (s, i) in at { u[s][i] = new.name } }
                }
            } else if let old = c.old {
                let at = self.located(Self.podCIDRs(old))
                self.used.withLock { u in for (s, i) in at where u[s][i] == old.name { u[s][i] = nil } }
            }
        }
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask { await runWorkers(self.queue, workers: 1, logger: self.logger, name: self.name) { key in try await self.sync(key) } }
        }
    }

    func sync(_ name: String) async throws {
        guard let n = nodes.withLock({ $0 })?.get(name), Self.podCIDRs(n).isEmpty else { return }
        // A range of every set, or none at all.
        let sets = self.sets
        let taken = used.withLock { u -> [UInt32]? in
            var got: [UInt32] = []
            for s in sets.indices {
                guard let i = (0..<sets[s].count).first(where: { u[s][$0] == nil }) else {
                    for (t, i) in got.enumerated() { u[t][i] = nil }
                    return nil
                }
                u[s][i] = name
                got.append(i)
            }
            return got
        }
        guard let taken else {
            events.record(n, type: "Normal", reason: "CIDRNotAvailable", message: "Node \(name) status is now: CIDRNotAvailable", kind: "Node", apiVersion: "v1")
            throw APIStatusError(code: 0, reason: "CIDRNotAvailable", message: "no remaining CIDRs for node \(name)")
        }
        let cidrs = taken.enumerated().map { sets[$0.offset].range($0.element) }
        do {
            _ = try await api.mergePatch(API.path("v1", "nodes", name: name),
                                         ["spec": ["podCIDR": .string(cidrs[0]), "podCIDRs": .array(cidrs.map { .string($0) })]])
            logger.info("node \(name): pod CIDRs \(cidrs.joined(separator: ","))")
        } catch {
            used.withLock { u in for (s, i) in taken.enumerated() where u[s][i] == name { u[s][i] = nil } }
            throw error
        }
    }
}

/// The pod garbage collector: pods bound to nodes that no longer exist are deleted (once the
/// node has been missing for 40 s and is confirmed gone), as are terminating pods that were never
/// bound.
public final class PodGCController: Controller, Sendable {
    public let name = "pod-garbage-collector"
    let api: API
    let logger: Logger
    let period: Double
    let nodes = Mutex<Informer<JSONValue>?>(nil)
    let pods = Mutex<Informer<JSONValue>?>(nil)
    /// When each node pods are bound to was first seen missing.
    let missingSince = Mutex<[String: Date]>([:])
    let quarantine: Double

    public init(api: API, period: Double = 20, quarantine: Double = 40, logger: Logger = Logger(label: "switchyard.podgc")) {
        self.api = api
        self.period = period
        self.quarantine = quarantine
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        nodes.withLock { $0 = informers.nodes }
        pods.withLock { $0 = informers.pods }
    }

    public func run() async {
        while !Task.isCancelled {
            await collect()
            try? await Task.sleep(for: .milliseconds(Int(period * 1000)))
        }
    }

    func collect() async {
        guard let nodeInf = nodes.withLock({ $0 }), let podInf = pods.withLock({ $0 }) else { return }
        for p in podInf.items {
            let node = p[path: ["spec", "nodeName"]]?.string ?? ""
            let path = API.path("v1", "pods", namespace: p.namespace, name: p.name)
            if node.isEmpty {
                if p.isDeleting { _ = try? await api.delete(path, options: ["gracePeriodSeconds": 0]) }
                continue
            }
            guard nodeInf.get(node) == nil else { missingSince.withLock { _ = $0.removeValue(forKey: node) }; continue }
            // Upstream's quarantine: a node missing for 40 s (the cache may lag, a node may be
            // re-registering), and asked for once more, before its pods go.
            let since = missingSince.withLock { m -> Date in
                if let t = m[node] { return t }
                m[node] = Date()
                return Date()
            }
            guard Date().timeIntervalSince(since) >= quarantine else { continue }
            if let e = await Self.missing(api, node), e {
                logger.info("garbage collecting pod \(p.key) bound to deleted node \(node)")
                _ = try? await api.strategicPatch(path + "/status", ["status": ["phase": "Failed", "conditions": [[
                    "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists", "lastTransitionTime": .string(Time.now())]]]])
                _ = try? await api.delete(path, options: ["gracePeriodSeconds": 0])
            }
        }
    }

    static func missing(_ api: API, _ node: String) async -> Bool? {
        do { _ = try await api.get(API.path("v1", "nodes", name: node)); return false } catch let e as APIStatusError where e.isNotFound { return true } catch { return nil }
    }
}
