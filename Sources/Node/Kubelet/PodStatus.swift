import CRI
import Foundation
import KubeAPI

/// What the kubelet knows of one of a pod's containers: the runtime's status of its latest and
/// previous instances, why it is waiting when the kubelet holds it back (image pulls,
/// back-off, a configuration it could not build), and its probes' verdicts.
public struct ContainerRecord: Sendable {
    public var current: Runtime_V1_ContainerStatus?
    public var previous: Runtime_V1_ContainerStatus?
    public var waiting: (reason: String, message: String)?
    public var ready = false
    public var started = false
    public init(current: Runtime_V1_ContainerStatus? = nil, previous: Runtime_V1_ContainerStatus? = nil) {
        self.current = current
        self.previous = previous
    }

    public var isRunning: Bool { current?.state == .containerRunning }
    public var isExited: Bool { current?.state == .containerExited }
    public var exitCode: Int32 { current?.exitCode ?? 0 }
    public var restartCount: Int { current.map { Int($0.annotations[Specs.restartCountAnnotation] ?? "") ?? Int($0.metadata.attempt) } ?? 0 }
}

/// A pod's status as the kubelet writes it (upstream's generateAPIPodStatus and getPhase):
/// the phase from its containers' states and the restart policy, the five conditions with
/// upstream's reasons and messages, and each container's state, last state, readiness,
/// restarts, image and IDs.
public enum PodStatusBuilder {
    public struct Input: Sendable {
        public var pod: JSONValue
        public var sandboxReady: Bool
        public var podIP: String
        public var hostIP: String
        public var initContainers: [String: ContainerRecord]
        public var containers: [String: ContainerRecord]
        /// The pod is being torn down for good (deleted, or finished): its phase is final.
        public var terminal = false
        /// The runtime's name, the scheme of container IDs in the API (`containerd://ID`).
        public var runtime = "containerd"
        public init(pod: JSONValue, sandboxReady: Bool, podIP: String, hostIP: String,
                    initContainers: [String: ContainerRecord], containers: [String: ContainerRecord]) {
            self.pod = pod
            self.sandboxReady = sandboxReady
            self.podIP = podIP
            self.hostIP = hostIP
            self.initContainers = initContainers
            self.containers = containers
        }
    }

    static func time(_ ns: Int64) -> JSONValue { ns > 0 ? .string(RFC3339.format(Double(ns) / 1e9)) : .null }

    static func state(_ s: Runtime_V1_ContainerStatus, _ scheme: String) -> JSONValue {
        switch s.state {
        case .containerRunning:
            return ["running": ["startedAt": time(s.startedAt)]]
        case .containerExited:
            var reason = s.reason
            if reason.isEmpty { reason = s.exitCode == 0 ? "Completed" : "Error" }
            var t: [String: JSONValue] = ["exitCode": .int(Int64(s.exitCode)), "reason": .string(reason), "startedAt": time(s.startedAt),
                                          "finishedAt": time(s.finishedAt), "containerID": .string("\(scheme)://\(s.id)")]
            if !s.message.isEmpty { t["message"] = .string(s.message) }
            return ["terminated": .object(t)]
        default:
            return ["waiting": ["reason": "ContainerCreating"]]
        }
    }

    static func containerStatus(_ c: JSONValue, _ r: ContainerRecord, waitingReason: String, scheme: String) -> JSONValue {
        var o: [String: JSONValue] = ["name": c["name"] ?? "", "image": c["image"] ?? "", "imageID": "", "ready": .bool(r.ready),
                                      "restartCount": .int(Int64(r.restartCount)), "started": .bool(r.started && r.isRunning)]
        if let w = r.waiting {
            var waiting: [String: JSONValue] = ["reason": .string(w.reason)]
            if !w.message.isEmpty { waiting["message"] = .string(w.message) }
            o["state"] = ["waiting": .object(waiting)]
        } else if let cur = r.current {
            o["state"] = cur.state == .containerCreated || cur.state == .containerUnknown ? ["waiting": ["reason": .string(waitingReason)]] : state(cur, scheme)
        } else {
            o["state"] = ["waiting": ["reason": .string(waitingReason)]]
        }
        if let cur = r.current {
            o["containerID"] = .string("\(scheme)://\(cur.id)")
            o["imageID"] = .string(cur.imageRef)
        }
        // The previous instance's end, or the current one's while it waits to be restarted.
        if let prev = r.previous, prev.state == .containerExited {
            o["lastState"] = state(prev, scheme)
        } else if r.waiting != nil, let cur = r.current, cur.state == .containerExited {
            o["lastState"] = state(cur, scheme)
        } else {
            o["lastState"] = [:]
        }
        return .object(o)
    }

    public static func build(_ input: Input, now: String) -> JSONValue {
        let pod = input.pod
        let spec = pod["spec"] ?? [:]
        let restartPolicy = spec["restartPolicy"]?.string ?? "Always"
        let inits = spec["initContainers"]?.array ?? []
        let apps = spec["containers"]?.array ?? []

        // Init containers: done when each has exited 0 (a restartable one — a sidecar — when started).
        var pendingInit: [String] = []
        var initFailed = false
        for c in inits {
            let name = c["name"]?.string ?? ""
            let r = input.initContainers[name] ?? ContainerRecord()
            let sidecar = c["restartPolicy"]?.string == "Always"
            if sidecar ? r.isRunning && r.started : (r.isExited && r.exitCode == 0) { continue }
            if !sidecar, r.isExited, r.exitCode != 0, restartPolicy == "Never" { initFailed = true }
            pendingInit.append(name)
        }
        let initialized = pendingInit.isEmpty

        // getPhase over the app containers.
        var waiting = 0, running = 0, stopped = 0, succeeded = 0
        for c in apps {
            let r = input.containers[c["name"]?.string ?? ""] ?? ContainerRecord()
            if r.isRunning && r.waiting == nil { running += 1 }
            else if r.isExited && r.waiting == nil { stopped += 1; if r.exitCode == 0 { succeeded += 1 } }
            else if r.waiting != nil, r.isExited { stopped += 1; if r.exitCode == 0 { succeeded += 1 } }
            else { waiting += 1 }
        }
        var phase: String
        if initFailed { phase = "Failed" }
        else if !initialized { phase = "Pending" }
        else if waiting > 0 { phase = "Pending" }
        else if running > 0 { phase = "Running" }
        else if stopped > 0 {
            if input.terminal { phase = stopped == succeeded ? "Succeeded" : "Failed" }
            else if restartPolicy == "Always" { phase = "Running" }
            else if stopped == succeeded { phase = "Succeeded" }
            else if restartPolicy == "Never" { phase = "Failed" }
            else { phase = "Running" }
        } else { phase = "Pending" }
        // A phase once terminal stays so (upstream never leaves Succeeded or Failed).
        if let old = pod[path: ["status", "phase"]]?.string, old == "Succeeded" || old == "Failed" { phase = old }

        let unready = apps.compactMap { c -> String? in
            let n = c["name"]?.string ?? ""
            return (input.containers[n]?.ready ?? false) ? nil : n
        }
        func list(_ names: [String]) -> String { "[" + names.joined(separator: " ") + "]" }
        let finished = phase == "Succeeded" || phase == "Failed"
        var conditions: [(String, Bool, String, String)] = []
        conditions.append(("PodReadyToStartContainers", input.sandboxReady, "", ""))
        if initialized || finished {
            conditions.append(("Initialized", true, phase == "Succeeded" && !initialized ? "PodCompleted" : "", ""))
        } else {
            conditions.append(("Initialized", false, "ContainersNotInitialized", "containers with incomplete status: \(list(pendingInit))"))
        }
        if finished && phase == "Succeeded" {
            conditions.append(("ContainersReady", false, "PodCompleted", ""))
            conditions.append(("Ready", false, "PodCompleted", ""))
        } else if unready.isEmpty && initialized {
            conditions.append(("ContainersReady", true, "", ""))
            conditions.append(("Ready", true, "", ""))
        } else {
            let message = initialized ? "containers with unready status: \(list(unready))" : "containers with incomplete status: \(list(pendingInit))"
            let reason = initialized ? "ContainersNotReady" : "ContainersNotInitialized"
            conditions.append(("ContainersReady", false, reason, message))
            conditions.append(("Ready", false, reason, message))
        }
        let old = pod[path: ["status", "conditions"]]?.array ?? []
        var outConditions: [JSONValue] = conditions.map { type, ok, reason, message in
            let status = ok ? "True" : "False"
            let since = PodStatusBuilder.transitionTime(type, status, old: old, now: now)
            var c: [String: JSONValue] = ["type": .string(type), "status": .string(status), "lastProbeTime": .null, "lastTransitionTime": since]
            if !reason.isEmpty { c["reason"] = .string(reason) }
            if !message.isEmpty { c["message"] = .string(message) }
            return .object(c)
        }
        // PodScheduled and any other condition (readiness gates' targets) stay as written.
        let mine = Set(conditions.map(\.0))
        outConditions += old.filter { !mine.contains($0["type"]?.string ?? "") }
        // A pod placed on the node directly (spec.nodeName set at creation) is scheduled too.
        if !outConditions.contains(where: { $0["type"]?.string == "PodScheduled" }) {
            outConditions.append(["type": "PodScheduled", "status": "True", "lastProbeTime": .null, "lastTransitionTime": .string(now)])
        }
        outConditions.sort { order($0["type"]?.string ?? "") < order($1["type"]?.string ?? "") }

        var status: [String: JSONValue] = ["phase": .string(phase), "conditions": .array(outConditions), "hostIP": .string(input.hostIP),
                                           "hostIPs": input.hostIP.isEmpty ? [] : [["ip": .string(input.hostIP)]],
                                           "qosClass": .string(Specs.QoS.of(pod).rawValue)]
        if !input.podIP.isEmpty {
            status["podIP"] = .string(input.podIP)
            status["podIPs"] = [["ip": .string(input.podIP)]]
        }
        status["startTime"] = pod[path: ["status", "startTime"]] ?? .string(now)
        status["containerStatuses"] = .array(apps.map { c in
            containerStatus(c, input.containers[c["name"]?.string ?? ""] ?? ContainerRecord(), waitingReason: initialized ? "ContainerCreating" : "PodInitializing", scheme: input.runtime)
        })
        if !inits.isEmpty {
            status["initContainerStatuses"] = .array(inits.map { c in
                containerStatus(c, input.initContainers[c["name"]?.string ?? ""] ?? ContainerRecord(), waitingReason: "PodInitializing", scheme: input.runtime)
            })
        }
        return .object(status)
    }

    /// A condition's `lastTransitionTime`: the previous one while its status holds, else now.
    static func transitionTime(_ type: String, _ status: String, old: [JSONValue], now: String) -> JSONValue {
        let previous = old.first { $0["type"]?.string == type }
        return previous?["status"]?.string == status ? previous?["lastTransitionTime"] ?? .string(now) : .string(now)
    }

    /// The order the kubelet lists conditions in.
    static func order(_ type: String) -> Int {
        ["PodReadyToStartContainers": 0, "Initialized": 1, "Ready": 2, "ContainersReady": 3, "PodScheduled": 4][type] ?? 5
    }
}
