import CRI
import ControllerKit
import Foundation
import KubeAPI
import Logging
import Synchronization

/// The kubelet: registers its Node and keeps its Lease and status, watches the pods bound to
/// it, and runs each through the container runtime with a worker of its own (sandbox, init
/// containers in order, then the containers; restarts by the restart policy with back-off;
/// graceful termination), writing each pod's status back as upstream words it. What runs is
/// found again in the runtime by the labels the kubelet puts on it, so a restarted kubelet
/// adopts its pods without restarting them.
public final class Kubelet: Sendable {
    public let api: API
    public let runtime: any ContainerRuntime
    public let config: KubeletConfiguration
    let logger: Logger
    let events: EventRecorder
    let pods: Informer<JSONValue>
    let workers = Mutex<[String: PodWorker]>([:])
    struct NodeState {
        var nodeIP = ""
        var podCIDR = ""
        var lastReported: JSONValue?
        var lastReportTime = ContinuousClock.now
        var runtimeVersion = Runtime_V1_VersionResponse()
        var node: JSONValue?
        /// The port the kubelet's API listens on (the configured one until a server says).
        var servingPort: Int?
    }
    let node = Mutex(NodeState())
    /// The static pods from `staticPodPath`, by UID (the manifest's hash), and what was wrong
    /// with the manifests last read.
    struct StaticState {
        var pods: [String: JSONValue] = [:]
        var errors: [String] = []
    }
    let statics = Mutex(StaticState())
    /// Wakes the mirror pods' sync (a static pod or a mirror changed).
    let mirrorWakeup = Wakeup()

    /// What `/metrics` serves: pod start-up, the runtime's calls.
    public let metrics = KubeletMetrics()

    public init(api: API, runtime: any ContainerRuntime, config: KubeletConfiguration, logger: Logger = Logger(label: "switchyard.kubelet")) {
        self.api = api
        self.runtime = MeasuredRuntime(inner: runtime, metrics: metrics)
        self.config = config
        self.logger = logger
        events = EventRecorder(api: api, component: "kubelet", host: config.nodeName, style: .core, logger: logger)
        pods = Informer(api, path: "/api/v1/pods", query: ["fieldSelector": "spec.nodeName=\(config.nodeName)"], logger: logger) { $0 }
    }

    public var nodeIP: String { node.withLock { $0.nodeIP } }

    /// The port the kubelet's API is served on, as the Node's `daemonEndpoints` names it: set by
    /// the server once it listens (before `run`), the configured port otherwise.
    public var servingPort: Int {
        get { node.withLock { $0.servingPort ?? config.port } }
        set { node.withLock { $0.servingPort = newValue } }
    }

    /// Runs until cancelled.
    public func run() async throws {
        let version = try await runtime.version()
        let ip = config.nodeIP.isEmpty ? NodeDescription.defaultNodeIP() : config.nodeIP
        node.withLock { $0.runtimeVersion = version; $0.nodeIP = ip }
        try FileManager.default.createDirectory(atPath: config.rootDir, withIntermediateDirectories: true)
        try await register()
        loadStaticPods()
        pods.onChange { [self] change in self.podChanged(change) }
        await withTaskGroup(of: Void.self) { g in
            if !config.staticPodPath.isEmpty {
                g.addTask { await self.staticPodLoop() }
                g.addTask { await self.mirrorLoop() }
            }
            g.addTask { await self.events.run() }
            g.addTask { await self.leaseLoop() }
            g.addTask { await self.statusLoop() }
            g.addTask { await self.pods.run() }
            g.addTask { await self.relistLoop() }
            g.addTask { await self.adoptOrphans() }
            await g.waitForAll()
        }
        // Stopped: the pod workers and their probes stop too (the containers stay, as when a
        // kubelet process exits; the next kubelet adopts them).
        for worker in workers.withLock({ Array($0.values) }) { worker.cancel() }
    }

    // MARK: the node

    func register() async throws {
        let (version, ip) = node.withLock { ($0.runtimeVersion, $0.nodeIP) }
        let capacity = NodeDescription.capacity(rootDir: config.rootDir, maxPods: config.maxPods)
        let object = NodeDescription.registration(config, nodeIP: ip, capacity: capacity, info: NodeDescription.nodeInfo(runtime: version),
                                                kubeletPort: servingPort)
        while !Task.isCancelled {
            do {
                let created = try await api.create("/api/v1/nodes", object)
                node.withLock { $0.node = created }
                logger.info("registered node \(config.nodeName)")
                return
            } catch let e as APIStatusError where e.isAlreadyExists {
                // Registered before (a restarted kubelet): its labels are brought up to date.
                let existing = try await api.mergePatch("/api/v1/nodes/\(config.nodeName)", ["metadata": ["labels": object[path: ["metadata", "labels"]] ?? [:]]])
                node.withLock { $0.node = existing }
                logger.info("node \(config.nodeName) was registered before")
                return
            } catch {
                logger.warning("registering node \(config.nodeName): \(error)")
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    func leaseLoop() async {
        let interval = Duration.seconds(max(1, config.nodeLeaseDurationSeconds / 4))
        while !Task.isCancelled {
            await renewLease()
            try? await Task.sleep(for: interval)
        }
    }

    func renewLease() async {
        await NodeLease.renew(api, node: config.nodeName, durationSeconds: config.nodeLeaseDurationSeconds) { self.node.withLock { $0.node?.uid } ?? "" }
    }

    func statusLoop() async {
        while !Task.isCancelled {
            await updateNodeStatus()
            try? await Task.sleep(for: config.nodeStatusUpdateFrequency)
        }
    }

    /// The node's status: written when it changed (heartbeat times aside) or at least every
    /// `nodeStatusReportFrequency`; the pod CIDR, when it appears, goes into the CNI configuration.
    func updateNodeStatus() async {
        guard let current = try? await api.get("/api/v1/nodes/\(config.nodeName)") else { return }
        node.withLock { $0.node = current }
        if let cidr = current[path: ["spec", "podCIDR"]]?.string, !cidr.isEmpty, cidr != node.withLock({ $0.podCIDR }) {
            writeCNIConfig(cidr)
        }
        var runtimeStatus: Runtime_V1_StatusResponse?
        var runtimeError: String?
        do { runtimeStatus = try await runtime.status() } catch { runtimeError = "\(error)" }
        let images = (try? await runtime.listImages()) ?? []
        let now = Time.now()
        let conditions = NodeDescription.conditions(runtime: runtimeStatus, runtimeError: runtimeError,
                                                    old: current[path: ["status", "conditions"]]?.array ?? [], now: now)
        let (version, ip) = node.withLock { ($0.runtimeVersion, $0.nodeIP) }
        let capacity = JSONValue.object(NodeDescription.capacity(rootDir: config.rootDir, maxPods: config.maxPods).mapValues { .string($0) })
        let status: JSONValue = ["capacity": capacity, "allocatable": capacity, "conditions": .array(conditions),
                                 "addresses": NodeDescription.addresses(config, ip), "nodeInfo": NodeDescription.nodeInfo(runtime: version),
                                 "images": NodeDescription.images(images), "daemonEndpoints": NodeDescription.daemonEndpoints(servingPort)]
        // Compared without the heartbeat times.
        var comparable = status
        comparable["conditions"] = .array(conditions.map { var c = $0; c["lastHeartbeatTime"] = nil; return c })
        let due = node.withLock { s in s.lastReported != comparable || ContinuousClock.now - s.lastReportTime >= config.nodeStatusReportFrequency }
        guard due else { return }
        do {
            let updated = try await api.mergePatch("/api/v1/nodes/\(config.nodeName)/status", ["status": status])
            node.withLock { $0.lastReported = comparable; $0.lastReportTime = .now; $0.node = updated }
        } catch {
            logger.warning("updating node status: \(error)")
        }
    }

    func writeCNIConfig(_ cidr: String) {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: config.cniConfDir, withIntermediateDirectories: true)
            let path = "\(config.cniConfDir)/10-switchyard.conflist"
            let text = NodeDescription.cniConfig(podCIDR: cidr, rootDir: config.rootDir)
            if (try? String(contentsOfFile: path, encoding: .utf8)) != text {
                try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
                logger.info("pod CIDR \(cidr): wrote \(path)")
            }
            node.withLock { $0.podCIDR = cidr }
        } catch {
            logger.error("writing the CNI configuration for \(cidr): \(error)")
        }
    }

    // MARK: pods

    func podChanged(_ change: Change<JSONValue>) {
        // A mirror pod is the API's view of a static pod: nothing runs from it.
        if let subject = change.new ?? change.old, StaticPods.isMirror(subject) {
            mirrorWakeup.signal()
            if let uid = StaticPods.staticUID(ofMirror: subject) { workers.withLock { $0[uid] }?.wake() }
            return
        }
        if let pod = change.new {
            worker(for: pod).update(pod)
        } else if let old = change.old {
            // Gone from the API (deleted at once, or by another): whatever runs of it goes.
            workers.withLock { $0[old.uid] }?.removed()
        }
    }

    func worker(for pod: JSONValue) -> PodWorker {
        workers.withLock { w in
            if let existing = w[pod.uid] { return existing }
            let worker = PodWorker(kubelet: self, pod: pod)
            w[pod.uid] = worker
            worker.start()
            return worker
        }
    }

    func workerFinished(_ uid: String) { _ = workers.withLock { $0.removeValue(forKey: uid) } }

    /// The PLEG: the runtime listed every `relistPeriod`; a pod whose containers or sandboxes
    /// changed state is synced.
    func relistLoop() async {
        var last: [String: String] = [:]
        while !Task.isCancelled {
            try? await Task.sleep(for: config.relistPeriod)
            guard let containers = try? await runtime.listContainers(nil), let sandboxes = try? await runtime.listPodSandbox(nil) else { continue }
            var now: [String: String] = [:]
            for c in containers { now[c.id] = "\(c.labels[Specs.podUIDLabel] ?? "")|\(c.state.rawValue)" }
            for s in sandboxes { now[s.id] = "\(s.labels[Specs.podUIDLabel] ?? "")|\(s.state.rawValue)" }
            var changed = Set<String>()
            for (id, v) in now where last[id] != v { changed.insert(String(v.split(separator: "|").first ?? "")) }
            for (id, v) in last where now[id] == nil { changed.insert(String(v.split(separator: "|").first ?? "")) }
            last = now
            let ws = workers.withLock { $0 }
            for uid in changed { ws[uid]?.wake() }
        }
    }

    /// Sandboxes of pods that are no longer bound here (deleted while the kubelet was down) go,
    /// once the pod list has been seen.
    func adoptOrphans() async {
        await pods.waitForSync()
        guard let sandboxes = try? await runtime.listPodSandbox(nil) else { return }
        let known = Set(pods.items.map(\.uid)).union(statics.withLock { $0.pods.keys })
        for s in sandboxes where !known.contains(s.labels[Specs.podUIDLabel] ?? s.metadata.uid) {
            logger.info("removing sandbox \(s.id) of pod \(s.metadata.namespace)/\(s.metadata.name): the pod is gone")
            if let cs = try? await runtime.listContainers(.with { $0.podSandboxID = s.id }) {
                for c in cs { try? await runtime.stopContainer(c.id, timeout: 0); try? await runtime.removeContainer(c.id) }
            }
            try? await runtime.stopPodSandbox(s.id)
            try? await runtime.removePodSandbox(s.id)
        }
    }

    // MARK: static pods

    /// Reads the manifests: a new static pod starts, one whose manifest went (or changed, which
    /// makes it another pod) stops; the mirrors follow.
    func loadStaticPods() {
        guard !config.staticPodPath.isEmpty else { return }
        let (found, errors) = StaticPods.read(directory: config.staticPodPath, nodeName: config.nodeName)
        let (added, gone, newErrors) = statics.withLock { s -> ([JSONValue], [String], [String]) in
            var next: [String: JSONValue] = [:]
            for p in found { next[p.uid] = s.pods[p.uid] ?? p }
            let added = next.filter { s.pods[$0.key] == nil }.map(\.value)
            let gone = s.pods.keys.filter { next[$0] == nil }
            let newErrors = errors == s.errors ? [] : errors
            s.pods = next
            s.errors = errors
            return (added, gone, newErrors)
        }
        for e in newErrors { logger.warning("static pod manifest \(e)") }
        for p in added {
            logger.info("static pod \(p.key) from \(config.staticPodPath)")
            worker(for: p).update(p)
        }
        for uid in gone { workers.withLock { $0[uid] }?.removed() }
        if !added.isEmpty || !gone.isEmpty { mirrorWakeup.signal() }
    }

    func staticPodLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: config.fileCheckFrequency)
            loadStaticPods()
        }
    }

    /// Keeps one mirror pod per static pod in the API: created when missing, replaced when
    /// deleted or stale, removed when its static pod is gone.
    func mirrorLoop() async {
        await pods.waitForSync()
        while !Task.isCancelled {
            await syncMirrors()
            await mirrorWakeup.wait(timeout: config.fileCheckFrequency)
        }
    }

    func syncMirrors() async {
        let wanted = statics.withLock { $0.pods }
        let mirrors = pods.items.filter(StaticPods.isMirror)
        var kept = Set<String>()
        for m in mirrors {
            let uid = StaticPods.staticUID(ofMirror: m) ?? ""
            if let p = wanted[uid], !m.isDeleting, p.namespace == m.namespace, p.name == m.name {
                kept.insert(uid)
                continue
            }
            logger.info("deleting mirror pod \(m.key)\(m.isDeleting ? " (deleted through the API: it comes back)" : ": its static pod is gone")")
            do {
                _ = try await api.delete(API.path("v1", "pods", namespace: m.namespace, name: m.name),
                                         options: ["kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": ["uid": .string(m.uid)]])
            } catch let e as APIStatusError where e.isNotFound || e.code == 409 {
            } catch {
                logger.warning("deleting mirror pod \(m.key): \(error)")
            }
        }
        let nodeUID = node.withLock { $0.node?.uid } ?? ""
        for (uid, p) in wanted where !kept.contains(uid) {
            do {
                _ = try await api.create(API.path("v1", "pods", namespace: p.namespace, name: nil), StaticPods.mirror(of: p, node: config.nodeName, nodeUID: nodeUID))
                logger.info("created mirror pod \(p.key)")
            } catch let e as APIStatusError where e.isAlreadyExists {
                // A pod of that name that is not this mirror: taken again once it is gone.
            } catch {
                logger.warning("creating mirror pod \(p.key): \(error)")
                mirrorWakeup.signal()
                try? await Task.sleep(for: .seconds(1))
            }
            workers.withLock { $0[uid] }?.wake()
        }
    }

    /// The UID of a static pod's mirror in the API (where its status goes), if it has one.
    func mirrorUID(ofStatic uid: String) -> String? {
        pods.items.first { StaticPods.staticUID(ofMirror: $0) == uid && !$0.isDeleting }?.uid
    }

    func record(_ pod: JSONValue, type: String = "Normal", reason: String, message: String) {
        events.record(pod, type: type, reason: reason, message: message, kind: "Pod", apiVersion: "v1")
    }
}

/// Wakes a waiting worker: at once when signalled, or after the timeout.
final class Wakeup: Sendable {
    struct State { var pending = false; var waiter: CheckedContinuation<Void, Never>? }
    let state = Mutex(State())

    func signal() {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter { s.waiter = nil; return w }
            s.pending = true
            return nil
        }
        w?.resume()
    }

    func wait(timeout: Duration) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.pending { s.pending = false; return true }
                s.waiter = c
                return false
            }
            if ready { c.resume(); return }
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                self?.signal()
            }
        }
    }
}
