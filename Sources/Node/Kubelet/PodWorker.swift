import CRI
import ControllerKit
import Foundation
import KubeAPI
import Logging
import Synchronization

/// One pod's worker: syncs the pod whenever it changes in the API or in the runtime, when a
/// back-off ends, and at least every `syncFrequency`; ends once the pod is gone from the node.
final class PodWorker: Sendable {
    unowned let kubelet: Kubelet
    let uid: String
    let wakeup = Wakeup()
    struct State {
        var pod: JSONValue
        var removed = false
        /// Why a container waits, set by the kubelet (image pulls, back-off, bad configuration).
        var waiting: [String: (reason: String, message: String)] = [:]
        /// Per container: the current back-off and when its last instance started.
        var backOff: [String: Duration] = [:]
        var pullFailures: [String: Int] = [:]
        var lastStatus: JSONValue?
        /// The UID the last status was written to (a static pod's mirror may be replaced).
        var lastStatusUID = ""
        var task: Task<Void, Never>?
        var nextWake: ContinuousClock.Instant?
        /// Probe workers per running container (by its ID), and their verdicts.
        var probers: [String: [Task<Void, Never>]] = [:]
        var ready: [String: Bool] = [:]
        var started: [String: Bool] = [:]
        /// Whether the pod's start (Pending to Running) was counted.
        var startCounted = false
    }
    let state: Mutex<State>
    /// When this kubelet first saw the pod (`kubelet_pod_start_duration_seconds` counts from it).
    let firstSeen = ContinuousClock.now

    init(kubelet: Kubelet, pod: JSONValue) {
        self.kubelet = kubelet
        uid = pod.uid
        state = Mutex(State(pod: pod))
    }

    var logger: Logger { kubelet.logger }
    var runtime: any ContainerRuntime { kubelet.runtime }
    var config: KubeletConfiguration { kubelet.config }

    func start() {
        let pod = state.withLock { $0.pod }
        logger.info("SyncLoop ADD", metadata: ["source": "api", "pod": "\(pod.key)", "podUID": "\(uid)"])
        let t = Task { await self.loop() }
        state.withLock { $0.task = t }
    }

    /// Stops the worker's loop and its probes, leaving what runs as it is.
    func cancel() {
        let tasks = state.withLock { s in [s.task].compactMap { $0 } + s.probers.values.flatMap { $0 } }
        for t in tasks { t.cancel() }
        wakeup.signal()
    }

    func update(_ pod: JSONValue) {
        state.withLock { $0.pod = pod }
        wakeup.signal()
    }

    func removed() {
        state.withLock { $0.removed = true }
        wakeup.signal()
    }

    func wake() { wakeup.signal() }

    /// Sync again no later than `at`.
    func wake(at: ContinuousClock.Instant) {
        state.withLock { s in if s.nextWake.map({ at < $0 }) ?? true { s.nextWake = at } }
    }

    func loop() async {
        while !Task.isCancelled {
            let finished: Bool
            do {
                finished = try await sync()
            } catch {
                logger.warning("syncing pod \(state.withLock { $0.pod.key }): \(error)")
                finished = false
                wake(at: .now + .seconds(1))
            }
            if finished {
                let probers = state.withLock { s in defer { s.probers = [:] }; return s.probers.values.flatMap { $0 } }
                for t in probers { t.cancel() }
                break
            }
            let timeout = state.withLock { s -> Duration in
                defer { s.nextWake = nil }
                guard let at = s.nextWake else { return config.syncFrequency }
                return max(.milliseconds(10), at - .now)
            }
            await wakeup.wait(timeout: timeout)
        }
        kubelet.workerFinished(uid)
    }

    // MARK: one sync

    struct Observed {
        var sandboxes: [Runtime_V1_PodSandbox]
        var containers: [Runtime_V1_Container]
    }

    func observe() async throws -> Observed {
        let labels = [Specs.podUIDLabel: uid]
        return Observed(sandboxes: try await runtime.listPodSandbox(.with { $0.labelSelector = labels }),
                        containers: try await runtime.listContainers(.with { $0.labelSelector = labels }))
    }

    /// The latest and the previous instance of each container name in `sandbox`.
    func records(_ observed: Observed, sandbox: String?) async -> [String: ContainerRecord] {
        var byName: [String: [Runtime_V1_Container]] = [:]
        for c in observed.containers where sandbox == nil || c.podSandboxID == sandbox {
            byName[c.labels[Specs.containerNameLabel] ?? c.metadata.name, default: []].append(c)
        }
        var out: [String: ContainerRecord] = [:]
        for (name, list) in byName {
            let sorted = list.sorted { ($0.metadata.attempt, $0.createdAt) > ($1.metadata.attempt, $1.createdAt) }
            let current = try? await runtime.containerStatus(sorted[0].id)
            let previous = sorted.count > 1 ? try? await runtime.containerStatus(sorted[1].id) : nil
            out[name] = ContainerRecord(current: current, previous: previous)
        }
        return out
    }

    /// Returns whether the worker is done (the pod is gone from the node).
    func sync() async throws -> Bool {
        let (pod, removed) = state.withLock { ($0.pod, $0.removed) }
        let observed = try await observe()
        if removed {
            await kill(pod, observed, grace: 0, reason: nil)
            await removeAll(observed)
            return true
        }
        let phase = pod[path: ["status", "phase"]]?.string ?? ""
        if pod.isDeleting {
            let grace = pod[path: ["metadata", "deletionGracePeriodSeconds"]]?.int ?? pod[path: ["spec", "terminationGracePeriodSeconds"]]?.int ?? 30
            await kill(pod, observed, grace: grace, reason: "Stopping container")
            let after = try await observe()
            try? await writeStatus(pod, await records(after, sandbox: nil), sandboxReady: false, terminal: true)
            await removeAll(after)
            // The kubelet has the last word on a graceful deletion.
            do {
                _ = try await kubelet.api.delete(API.path("v1", "pods", namespace: pod.namespace, name: pod.name),
                                                 options: ["kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                                           "preconditions": ["uid": .string(uid)]])
            } catch let e as APIStatusError where e.isNotFound || e.code == 409 {}
            return true
        }
        if phase == "Succeeded" || phase == "Failed" {
            // Finished: nothing is restarted; the sandbox stops (its containers have).
            for s in observed.sandboxes where s.state == .sandboxReady { try? await runtime.stopPodSandbox(s.id) }
            return false
        }

        // The sandbox: the newest ready one, or a new one (its predecessor's containers go with it).
        var sandbox = observed.sandboxes.filter { $0.state == .sandboxReady }.max { $0.createdAt < $1.createdAt }
        let sandboxConfigAttempt = UInt32((observed.sandboxes.map(\.metadata.attempt).max() ?? 0) + (observed.sandboxes.isEmpty ? 0 : 1))
        let dns = Specs.DNS(servers: config.clusterDNS, clusterDomain: config.clusterDomain)
        var sandboxConfig = Specs.sandboxConfig(pod, attempt: sandbox?.metadata.attempt ?? sandboxConfigAttempt, logRoot: config.podLogsDir, dns: dns)
        var createdSandbox = false
        if sandbox == nil {
            if !observed.sandboxes.isEmpty {
                kubelet.record(pod, reason: "SandboxChanged", message: "Pod sandbox changed, it will be killed and re-created.")
                await kill(pod, observed, grace: 0, reason: nil)
                await removeAll(observed, volumes: false)
            }
            try FileManager.default.createDirectory(atPath: sandboxConfig.logDirectory, withIntermediateDirectories: true)
            do {
                let creating = ContinuousClock.now
                let id = try await runtime.runPodSandbox(sandboxConfig, runtimeHandler: "")
                sandbox = Runtime_V1_PodSandbox.with { $0.id = id; $0.metadata = sandboxConfig.metadata; $0.state = .sandboxReady }
                createdSandbox = true
                logger.info("Created PodSandbox for pod", metadata: ["pod": "\(pod.key)", "podSandboxID": "\(id)", "elapsed": "\(Self.seconds(.now - creating))"])
            } catch {
                logger.warning("CreatePodSandbox for pod \(pod.key) failed: \(error)")
                kubelet.record(pod, type: "Warning", reason: "FailedCreatePodSandBox", message: "Failed to create pod sandbox: \(error)")
                try? await writeStatus(pod, await records(try await observe(), sandbox: nil), sandboxReady: false, terminal: false)
                wake(at: .now + .seconds(2))
                return false
            }
        }
        let sandboxID = sandbox!.id
        sandboxConfig.metadata.attempt = sandbox!.metadata.attempt
        // Projected service account tokens are written again before they expire.
        do { try await Resolver(api: kubelet.api, rootDir: config.rootDir, nodeIP: kubelet.nodeIP).refreshTokens(pod) } catch { logger.warning("refreshing the tokens of pod \(pod.key): \(error)") }
        let sandboxStatus = try? await runtime.podSandboxStatus(sandboxID)
        let podIP = sandboxStatus?.network.ip ?? ""
        if createdSandbox {
            logger.info("Determined the ip for pod after sandbox changed", metadata: ["pod": "\(pod.key)", "IPs": .array([.string(podIP)])])
        }
        var current = try await observe()
        if await collectGarbage(current) { current = try await observe() }
        let records = await records(current, sandbox: sandboxID)
        let restartPolicy = pod[path: ["spec", "restartPolicy"]]?.string ?? "Always"

        // Init containers, in order: each must have exited 0 before the next starts.
        var initialized = true
        for c in pod[path: ["spec", "initContainers"]]?.array ?? [] {
            let name = c["name"]?.string ?? ""
            let r = records[name]
            if r?.isExited == true && r?.exitCode == 0 { continue }
            initialized = false
            if r?.isRunning == true { break }
            if let r, r.isExited {
                if restartPolicy == "Never" { break }
                if backingOff(pod, name, r) { break }
            }
            await startContainer(pod, c, sandbox: sandboxID, sandboxConfig: sandboxConfig, restartCount: r.map { $0.restartCount + 1 } ?? 0, podIP: podIP)
            break
        }
        if initialized {
            for c in pod[path: ["spec", "containers"]]?.array ?? [] {
                let name = c["name"]?.string ?? ""
                let r = records[name]
                if r?.isRunning == true { continue }
                if let r, r.isExited {
                    let restart = restartPolicy == "Always" || (restartPolicy == "OnFailure" && r.exitCode != 0)
                    if !restart || backingOff(pod, name, r) { continue }
                }
                if let r, r.current?.state == .containerCreated {
                    // Created but not started (the kubelet stopped in between): started now.
                    try? await runtime.startContainer(r.current!.id)
                    continue
                }
                await startContainer(pod, c, sandbox: sandboxID, sandboxConfig: sandboxConfig, restartCount: r.map { $0.restartCount + 1 } ?? 0, podIP: podIP)
            }
        }
        // The containers as they are now, once for the probers and the status.
        let latest = await self.records(try await observe(), sandbox: sandboxID)
        await runProbers(pod, latest, podIP: podIP)
        try await writeStatus(pod, latest, sandboxReady: true, terminal: false, podIP: podIP)
        return false
    }

    // MARK: probes

    /// One prober per probe of each running container; those of containers no longer running stop.
    func runProbers(_ pod: JSONValue, _ records: [String: ContainerRecord], podIP: String) async {
        var running: [String: JSONValue] = [:]
        for c in pod[path: ["spec", "containers"]]?.array ?? [] {
            if let r = records[c["name"]?.string ?? ""], r.isRunning, let id = r.current?.id { running[id] = c }
        }
        let stale = state.withLock { s -> [Task<Void, Never>] in
            var out: [Task<Void, Never>] = []
            for (id, tasks) in s.probers where running[id] == nil {
                out += tasks
                s.probers[id] = nil
                s.ready[id] = nil
                s.started[id] = nil
            }
            return out
        }
        for t in stale { t.cancel() }
        for (id, c) in running {
            guard state.withLock({ $0.probers[id] == nil }) else { continue }
            let probes = [Probe(.startup, c["startupProbe"]), Probe(.liveness, c["livenessProbe"]), Probe(.readiness, c["readinessProbe"])].compactMap { $0 }
            let hasStartup = probes.contains { $0.kind == .startup }
            let tasks = probes.map { p in Task { await self.probe(p, pod: pod, container: c, id: id, podIP: podIP, waitForStartup: hasStartup) } }
            state.withLock { $0.probers[id] = tasks }
        }
    }

    func probe(_ p: Probe, pod: JSONValue, container c: JSONValue, id: String, podIP: String, waitForStartup: Bool) async {
        let name = c["name"]?.string ?? ""
        try? await Task.sleep(for: .milliseconds(Int64(p.initialDelay * 1000)))
        var successes = 0, failures = 0
        while !Task.isCancelled {
            // Liveness and readiness wait for the startup probe to pass.
            if p.kind != .startup && waitForStartup && !state.withLock({ $0.started[id] ?? false }) {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            let (ok, message) = await p.run(container: c, id: id, podIP: podIP, runtime: runtime)
            if Task.isCancelled { return }
            if ok { successes += 1; failures = 0 } else { failures += 1; successes = 0 }
            if !ok { kubelet.record(pod, type: "Warning", reason: "Unhealthy", message: "\(p.kind.rawValue) probe failed: \(message)") }
            switch p.kind {
            case .readiness:
                let changed = state.withLock { s -> Bool in
                    let was = s.ready[id] ?? false
                    let now = ok ? (successes >= p.successThreshold ? true : was) : (failures >= p.failureThreshold ? false : was)
                    s.ready[id] = now
                    return now != was
                }
                if changed {
                    logger.info("SyncLoop (probe)", metadata: ["probe": "readiness", "status": ok ? "ready" : "not ready", "pod": "\(pod.key)", "containerName": "\(name)"])
                    wake()
                }
            case .liveness, .startup:
                if p.kind == .startup && ok {
                    state.withLock { $0.started[id] = true }
                    wake()
                    return
                }
                if failures >= p.failureThreshold {
                    kubelet.record(pod, reason: "Killing", message: "Container \(name) failed \(p.kind.rawValue.lowercased()) probe, will be restarted")
                    // The probe's own terminationGracePeriodSeconds wins over the pod's, as upstream.
                    let grace = p.terminationGracePeriodSeconds ?? pod[path: ["spec", "terminationGracePeriodSeconds"]]?.int ?? 30
                    let spec = (pod[path: ["spec", "containers"]]?.array ?? []).first { $0["name"]?.string == name } ?? [:]
                    await stop(pod, container: spec, id: id, podIP: pod[path: ["status", "podIP"]]?.string ?? "", grace: grace, graceful: true)
                    wake()
                    return
                }
            }
            try? await Task.sleep(for: .milliseconds(Int64(p.period * 1000)))
        }
    }

    /// Whether a container that exited must wait before its restart (CrashLoopBackOff: 10 s,
    /// doubling to 5 min, from when it finished); the first restart is at once.
    func backingOff(_ pod: JSONValue, _ name: String, _ r: ContainerRecord) -> Bool {
        let finished = Double(r.current?.finishedAt ?? 0) / 1e9
        let delay = state.withLock { $0.backOff[name] }
        guard let delay else { return false }
        let elapsed = Date().timeIntervalSince1970 - finished
        let wait = Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18
        if elapsed >= wait {
            return false
        }
        let message = "back-off \(Self.words(delay)) restarting failed container=\(name) pod=\(pod.name)_\(pod.namespace)(\(pod.uid))"
        let first = state.withLock { s -> Bool in
            let fresh = s.waiting[name]?.reason != "CrashLoopBackOff"
            s.waiting[name] = ("CrashLoopBackOff", message)
            return fresh
        }
        if first {
            kubelet.record(pod, type: "Warning", reason: "BackOff", message: "Back-off restarting failed container \(name) in pod \(pod.name)_\(pod.namespace)(\(pod.uid))")
        }
        wake(at: .now + .milliseconds(Int64((wait - elapsed) * 1000) + 10))
        return true
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    static func words(_ d: Duration) -> String {
        let s = d.components.seconds
        return s >= 60 && s % 60 == 0 ? "\(s / 60)m0s" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }

    func ensureImage(_ pod: JSONValue, _ c: JSONValue, _ sandboxConfig: Runtime_V1_PodSandboxConfig) async -> String? {
        let name = c["name"]?.string ?? "", image = c["image"]?.string ?? ""
        let policy = Specs.pullPolicy(c)
        if policy != "Always", let present = try? await runtime.imageStatus(image) {
            kubelet.record(pod, reason: "Pulled", message: "Container image \"\(image)\" already present on machine")
            logger.info("Container image already present on machine", metadata: ["pod": "\(pod.key)", "containerName": "\(name)", "image": "\(image)"])
            return present.id
        }
        if policy == "Never" {
            let message = "Container image \"\(image)\" is not present with pull policy of Never"
            state.withLock { $0.waiting[name] = ("ErrImageNeverPull", message) }
            kubelet.record(pod, type: "Warning", reason: "ErrImageNeverPull", message: message)
            return nil
        }
        // After a failed pull, the next waits (ImagePullBackOff), as the kubelet backs off pulls.
        let failures = state.withLock { $0.pullFailures[name] ?? 0 }
        kubelet.record(pod, reason: "Pulling", message: "Pulling image \"\(image)\"")
        let start = ContinuousClock.now
        do {
            let ref = try await runtime.pullImage(image, sandboxConfig: sandboxConfig)
            let took = (ContinuousClock.now - start)
            let seconds = String(format: "%.3fs", Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
            let size = (try? await runtime.imageStatus(image))?.size ?? 0
            kubelet.record(pod, reason: "Pulled", message: "Successfully pulled image \"\(image)\" in \(seconds) (\(seconds) including waiting). Image size: \(size) bytes.")
            logger.info("Pulled image", metadata: ["pod": "\(pod.key)", "containerName": "\(name)", "image": "\(image)", "elapsed": "\(Self.seconds(took))", "size": "\(size)"])
            state.withLock { $0.pullFailures[name] = nil }
            return ref
        } catch {
            let message = "Failed to pull image \"\(image)\": \(error)"
            kubelet.record(pod, type: "Warning", reason: "Failed", message: message)
            kubelet.record(pod, type: "Warning", reason: "Failed", message: "Error: ErrImagePull")
            state.withLock { $0.waiting[name] = (failures > 0 ? "ImagePullBackOff" : "ErrImagePull", failures > 0 ? "Back-off pulling image \"\(image)\"" : message); $0.pullFailures[name] = failures + 1 }
            // Pulls back off as crashing containers do: the base, doubling, up to the maximum.
            var delay = config.backOff
            for _ in 0..<min(failures, 10) { delay *= 2 }
            wake(at: .now + min(delay, config.maxBackOff) + .milliseconds(10))
            return nil
        }
    }

    func startContainer(_ pod: JSONValue, _ c: JSONValue, sandbox: String, sandboxConfig: Runtime_V1_PodSandboxConfig, restartCount: Int, podIP: String) async {
        let name = c["name"]?.string ?? ""
        guard let ref = await ensureImage(pod, c, sandboxConfig) else { return }
        let resolver = Resolver(api: kubelet.api, rootDir: config.rootDir, nodeIP: kubelet.nodeIP)
        let resolved: Specs.Resolved
        do {
            let env = try await resolver.environment(pod, c, podIP: podIP)
            resolved = Specs.Resolved(env: env, mounts: try await resolver.mounts(pod, c))
        } catch {
            state.withLock { $0.waiting[name] = ("CreateContainerConfigError", "\(error)") }
            kubelet.record(pod, type: "Warning", reason: "Failed", message: "Error: \(error)")
            wake(at: .now + .seconds(2))
            return
        }
        var container = c
        // $(VAR) in command and args, from the container's environment.
        for field in ["command", "args"] {
            if let list = c[field]?.array { container[field] = .array(list.map { .string(Resolver.expand($0.string ?? "", resolved.env)) }) }
        }
        let config = Specs.containerConfig(pod, container, restartCount: restartCount, imageRef: ref, resolved: resolved)
        do {
            let id = try await runtime.createContainer(sandbox: sandbox, config, sandboxConfig: sandboxConfig)
            kubelet.record(pod, reason: "Created", message: "Created container: \(name)")
            logger.info("Created container", metadata: ["pod": "\(pod.key)", "containerName": "\(name)", "containerID": "\(id)"])
            try await runtime.startContainer(id)
            kubelet.record(pod, reason: "Started", message: "Started container \(name)")
            logger.info("Started container", metadata: ["pod": "\(pod.key)", "containerName": "\(name)", "containerID": "\(id)"])
            // postStart: the container counts as started once its hook has run; a hook that
            // fails kills it (and the restart policy decides what follows).
            if let hook = LifecycleHook(c[path: ["lifecycle", "postStart"]]),
               let failure = await hook.run(container: c, id: id, podIP: podIP, timeout: 0, runtime: runtime) {
                logger.warning("postStart hook of container \(name) in pod \(pod.key) failed: \(failure)")
                kubelet.record(pod, type: "Warning", reason: "FailedPostStartHook", message: "PostStartHook failed")
                try? await runtime.stopContainer(id, timeout: pod[path: ["spec", "terminationGracePeriodSeconds"]]?.int ?? 30)
            }
            state.withLock { s in
                s.waiting[name] = nil
                // The next restart waits: 10 s, then twice as long each time, up to 5 min.
                if restartCount > 0 {
                    let next = s.backOff[name].map { $0 * 2 } ?? self.config.backOff
                    s.backOff[name] = min(next, self.config.maxBackOff)
                }
            }
        } catch {
            logger.warning("starting container \(name) of pod \(pod.key) failed: \(error)")
            state.withLock { $0.waiting[name] = ("CreateContainerError", "\(error)") }
            kubelet.record(pod, type: "Warning", reason: "Failed", message: "Error: \(error)")
            wake(at: .now + .seconds(2))
        }
    }

    /// Stops every running container (the stop signal, SIGKILL after `grace` seconds), then the sandboxes.
    func kill(_ pod: JSONValue, _ observed: Observed, grace: Int64, reason: String?) async {
        let specs = (pod[path: ["spec", "containers"]]?.array ?? []) + (pod[path: ["spec", "initContainers"]]?.array ?? [])
        // The pod's address, asked of the runtime only when a preStop hook will run (an httpGet
        // hook goes to it).
        var ip = ""
        let hooked = Set(specs.filter { $0[path: ["lifecycle", "preStop"]] != nil }.compactMap { $0["name"]?.string })
        if reason != nil, grace > 0, observed.containers.contains(where: { $0.state == .containerRunning && hooked.contains($0.metadata.name) }),
           let s = observed.sandboxes.first(where: { $0.state == .sandboxReady }) {
            ip = (try? await runtime.podSandboxStatus(s.id))?.network.ip ?? ""
        }
        let podIP = ip
        await withTaskGroup(of: Void.self) { g in
            for c in observed.containers where c.state == .containerRunning {
                if reason != nil { kubelet.record(pod, reason: "Killing", message: "Stopping container \(c.metadata.name)") }
                let spec = specs.first { $0["name"]?.string == c.metadata.name } ?? [:]
                g.addTask { await self.stop(pod, container: spec, id: c.id, podIP: podIP, grace: grace, graceful: reason != nil) }
            }
        }
        for s in observed.sandboxes where s.state == .sandboxReady { try? await runtime.stopPodSandbox(s.id) }
    }

    /// Stops one container: its preStop hook first (a graceful stop only), within the grace
    /// period; the rest of the period is the stop signal's, then SIGKILL. A pod's deletion and a
    /// failed liveness or startup probe stop a container this way.
    func stop(_ pod: JSONValue, container spec: JSONValue, id: String, podIP: String, grace: Int64, graceful: Bool) async {
        var remaining = grace
        if graceful, grace > 0, let hook = LifecycleHook(spec[path: ["lifecycle", "preStop"]]) {
            let start = ContinuousClock.now
            if let failure = await hook.run(container: spec, id: id, podIP: podIP, timeout: grace, runtime: runtime) {
                logger.warning("preStop hook of container \(spec["name"]?.string ?? id) in pod \(pod.key) failed: \(failure)")
                kubelet.record(pod, type: "Warning", reason: "FailedPreStopHook", message: "PreStopHook failed")
            }
            remaining = max(2, grace - Int64((ContinuousClock.now - start).components.seconds))
        }
        try? await runtime.stopContainer(id, timeout: remaining)
    }

    /// Container garbage collection, as upstream's with `MaxPerPodContainer` 1: of each of the
    /// pod's containers, the newest instance and the one before it (its `lastState`, and
    /// `kubectl logs --previous`) are kept; older exited instances go, with their log files.
    /// Returns whether anything went.
    func collectGarbage(_ observed: Observed) async -> Bool {
        var byName: [String: [Runtime_V1_Container]] = [:]
        for c in observed.containers { byName[c.labels[Specs.containerNameLabel] ?? c.metadata.name, default: []].append(c) }
        var removed = false
        for (_, list) in byName where list.count > 2 {
            let sorted = list.sorted { ($0.metadata.attempt, $0.createdAt) > ($1.metadata.attempt, $1.createdAt) }
            for old in sorted.dropFirst(2) where old.state == .containerExited {
                let logPath = (try? await runtime.containerStatus(old.id))?.logPath ?? ""
                do {
                    try await runtime.removeContainer(old.id)
                    if !logPath.isEmpty { unlink(logPath) }
                    removed = true
                } catch {
                    logger.warning("removing dead container \(old.id) of pod \(state.withLock { $0.pod.key }): \(error)")
                }
            }
        }
        return removed
    }

    /// Removes the pod's containers and sandboxes from the runtime; with `volumes`, its
    /// directory too (a pod that goes; a new sandbox keeps the pod's emptyDir volumes).
    func removeAll(_ observed: Observed, volumes: Bool = true) async {
        for c in observed.containers { try? await runtime.removeContainer(c.id) }
        for s in observed.sandboxes { try? await runtime.removePodSandbox(s.id) }
        if volumes { try? FileManager.default.removeItem(atPath: "\(config.rootDir)/pods/\(uid)") }
    }

    /// Writes the pod's status when it changed (a merge patch naming the pod's uid, so it never
    /// lands on a pod of the same name created since).
    func writeStatus(_ pod: JSONValue, _ records: [String: ContainerRecord], sandboxReady: Bool, terminal: Bool, podIP: String = "") async throws {
        let waiting = state.withLock { $0.waiting }
        let initNames = Set((pod[path: ["spec", "initContainers"]]?.array ?? []).compactMap { $0["name"]?.string })
        var initRecords = records.filter { initNames.contains($0.key) }
        var appRecords = records.filter { !initNames.contains($0.key) }
        for (name, w) in waiting {
            if initNames.contains(name) {
                if !(initRecords[name]?.isRunning ?? false) { initRecords[name, default: ContainerRecord()].waiting = w }
            } else if !(appRecords[name]?.isRunning ?? false) {
                appRecords[name, default: ContainerRecord()].waiting = w
            }
        }
        // Started once its startup probe passed (at once without one); ready once started and,
        // with a readiness probe, once that passed.
        let (readyByID, startedByID) = state.withLock { ($0.ready, $0.started) }
        let specs = Dictionary((pod[path: ["spec", "containers"]]?.array ?? []).map { ($0["name"]?.string ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for (k, r) in appRecords where r.isRunning && r.waiting == nil {
            let id = r.current?.id ?? "", spec = specs[k] ?? [:]
            let started = spec["startupProbe"] == nil || startedByID[id] == true
            appRecords[k]?.started = started
            appRecords[k]?.ready = started && (spec["readinessProbe"] == nil || readyByID[id] == true)
        }
        for (k, r) in initRecords where r.isRunning { initRecords[k]?.started = true }
        var input = PodStatusBuilder.Input(pod: pod, sandboxReady: sandboxReady && !podIP.isEmpty, podIP: podIP, hostIP: kubelet.nodeIP,
                                           initContainers: initRecords, containers: appRecords)
        input.terminal = terminal
        input.runtime = config.runtimeName
        let status = PodStatusBuilder.build(input, now: Time.now())
        var comparable = status
        comparable["conditions"] = .array((status["conditions"]?.array ?? []).map { var c = $0; c["lastTransitionTime"] = nil; return c })
        // A static pod's status goes to its mirror pod, once there is one.
        var target = uid
        if pod[path: ["metadata", "annotations", StaticPods.sourceAnnotation]]?.string == "file" {
            guard let mirror = kubelet.mirrorUID(ofStatic: uid) else { return }
            target = mirror
        }
        guard state.withLock({ ($0.lastStatus, $0.lastStatusUID) }) != (comparable, target) else { return }
        _ = try await kubelet.api.mergePatch(API.path("v1", "pods", namespace: pod.namespace, name: pod.name, subresource: "status"),
                                             ["metadata": ["uid": .string(target)], "status": status])
        // A pod this kubelet saw Pending now runs: its start-up, as upstream counts it.
        let wasPending = ["", "Pending"].contains(pod[path: ["status", "phase"]]?.string ?? "")
        let starts = wasPending && status["phase"]?.string == "Running"
        // A change of phase or readiness at the default level (a pod trace's last kubelet step).
        func readiness(_ j: JSONValue?) -> String {
            (j?["conditions"]?.array ?? []).first { $0["type"]?.string == "Ready" }?["status"]?.string ?? ""
        }
        let before = state.withLock { $0.lastStatus }
        if before?["phase"] != status["phase"] || readiness(before) != readiness(status) {
            logger.info("Status for pod updated successfully", metadata: ["pod": "\(pod.key)", "phase": "\(status["phase"]?.string ?? "")",
                                                                          "ready": "\(readiness(status))"])
        }
        let count = state.withLock { s in
            s.lastStatus = comparable
            s.lastStatusUID = target
            defer { if starts { s.startCounted = true } }
            return starts && !s.startCounted
        }
        if count { kubelet.metrics.podStartDuration.record(.now - firstSeen) }
    }
}
