import Foundation
import Logging
import KubeAPI
import ControllerKit

/// kube-scheduler: watches Nodes and Pods, takes the pending pods its profiles name
/// (`spec.schedulerName`) from the scheduling queue one at a time, filters the nodes, scores the
/// feasible ones, assumes the pod on the best and binds it through `pods/binding` in the
/// background. A pod that fits nowhere gets `PodScheduled=False` (reason `Unschedulable`),
/// a `FailedScheduling` event with upstream's message, and, if preempting lower-priority pods
/// would make room, its victims deleted and `status.nominatedNodeName` set.
public actor Scheduler {
    public let api: API
    let profiles: [String: Profile]
    public let queue = SchedulingQueue()
    let events: EventRecorder
    let logger: Logger
    /// Nodes by name, with the pods bound (or assumed) on them, and the order nodes are tried in.
    var nodes: [String: NodeInfo] = [:]
    /// The nodes in the order they are tried (the same objects as `nodes`).
    var nodeOrder: [NodeInfo] = []
    var nextStartIndex = 0
    /// The last cycle's decision (the nodes examined and scored), for the binding's log line.
    var lastDecision: Decision?
    /// Where each known bound or assumed pod is.
    var podNode: [String: String] = [:]
    /// Pods assumed on a node while their binding is in flight.
    var assumed = Set<String>()
    /// Per controller (`kind/uid`), its pods per node: the default topology spreading reads it.
    var controllerPods: [String: [String: Int]] = [:]
    /// The last unschedulable message written for each pod (nothing rewritten if it is the same).
    var lastFailure: [String: String] = [:]
    var bindsInFlight = 0
    let maxBindsInFlight: Int
    var bindWaiters: [CheckedContinuation<Void, Never>] = []
    /// Counters behind `/metrics` (scheduler_schedule_attempts_total by result).
    public private(set) var attempts: [String: Int] = ["scheduled": 0, "unschedulable": 0, "error": 0]
    public private(set) var preemptionAttempts = 0
    /// Pod created → bound latencies (seconds) of the pods this scheduler bound, newest last.
    public private(set) var latencies: [Double] = []
    /// Ties are broken with a fast generator (the system's is a system call per draw, and a
    /// thousand equal nodes tie a thousand times), seeded from the system's once.
    var random = SplitMix64(seed: UInt64.random(in: 0...UInt64.max))

    public init(api: API, profiles: [Profile] = [.default()], events: EventRecorder? = nil, maxBindsInFlight: Int = 16,
                logger: Logger = Logger(label: "switchyard.scheduler")) {
        self.api = api
        self.profiles = Dictionary(uniqueKeysWithValues: profiles.map { ($0.schedulerName, $0) })
        // kube-scheduler records events.k8s.io/v1 Events, reported by the scheduler's name and host.
        self.events = events ?? EventRecorder(api: api, component: profiles.first?.schedulerName ?? "default-scheduler",
                                              host: ProcessInfo.processInfo.hostName, style: .eventsV1)
        self.maxBindsInFlight = maxBindsInFlight
        self.logger = logger
    }

    // MARK: the cache, fed by the informers

    /// How many nodes have each image (ImageLocality's spread), kept as nodes come, change and go.
    var imageNodes: [String: Int] = [:]

    func countImages(of n: NodeInfo, _ delta: Int) {
        for image in n.images.keys {
            imageNodes[image, default: 0] += delta
            if imageNodes[image] == 0 { imageNodes[image] = nil }
        }
    }

    func nodeChanged(_ c: Change<NodeInfo>) async {
        if let old = c.old.flatMap({ nodes[$0.name] }) { countImages(of: old, -1) }
        if let n = c.new, c.old == nil, let known = nodes[n.name] { countImages(of: known, -1) }
        if let n = c.new { countImages(of: n, 1) }
        if let n = c.new {
            if let known = nodes[n.name] {
                known.update(from: n)
            } else {
                nodes[n.name] = n
                nodeOrder.append(n)
            }
            await queue.moveAllToActiveOrBackoff()
        } else if let old = c.old {
            nodes[old.name] = nil
            nodeOrder.removeAll { $0.name == old.name }
            for (k, v) in podNode where v == old.name { podNode[k] = nil }
        }
    }

    func place(_ p: PodInfo, on node: String) {
        let key = p.key
        if let was = podNode[key] {
            nodes[was]?.remove(p)
            if let c = p.controller { controllerPods[c]?[was, default: 1] -= 1 }
        }
        podNode[key] = node
        nodes[node]?.add(p)
        if let c = p.controller { controllerPods[c, default: [:]][node, default: 0] += 1 }
    }

    func unplace(_ p: PodInfo) {
        let key = p.key
        guard let was = podNode.removeValue(forKey: key) else { return }
        nodes[was]?.remove(p)
        if let c = p.controller {
            controllerPods[c]?[was, default: 1] -= 1
            if controllerPods[c]?[was] == 0 { controllerPods[c]?[was] = nil }
            if controllerPods[c]?.isEmpty == true { controllerPods[c] = nil }
        }
    }

    func podChanged(_ c: Change<PodInfo>) async {
        guard let p = c.new else {
            // Gone: found by its key among what this scheduler keeps.
            let key = c.key
            await queue.delete(key)
            assumed.remove(key)
            lastFailure[key] = nil
            if let node = podNode[key] {
                if let info = nodes[node]?.pods[key] { unplace(info) } else { podNode[key] = nil }
                await queue.moveAllToActiveOrBackoff()
            }
            return
        }
        if !p.nodeName.isEmpty {
            // Bound: counted on its node until it finishes or goes.
            assumed.remove(p.key)
            await queue.delete(p.key)
            lastFailure[p.key] = nil
            if p.terminal {
                if podNode[p.key] != nil { unplace(p); await queue.moveAllToActiveOrBackoff() }
            } else if nodes[p.nodeName] != nil || podNode[p.key] != nil {
                place(p, on: p.nodeName)
            } else {
                podNode[p.key] = nil
            }
            return
        }
        if assumed.contains(p.key) { return }
        if profiles[p.schedulerName] != nil && !p.deleting && !p.terminal {
            await queue.add(p)
        }
    }

    // MARK: running

    /// Watches, schedules, until cancelled.
    public func run() async {
        let nodeInformer = Informer<NodeInfo>(api, path: "/api/v1/nodes") { NodeInfo($0) }
        // The scheduler keeps pods itself (on their nodes, in the queue): the informer keeps none.
        let podInformer = Informer<PodInfo>(api, path: "/api/v1/pods", keeps: false) { PodInfo($0) }
        nodeInformer.onChange { [weak self] c in await self?.nodeChanged(c) }
        podInformer.onChange { [weak self] c in await self?.podChanged(c) }
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await nodeInformer.run() }
            g.addTask { await podInformer.run() }
            g.addTask { await self.events.run() }
            g.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    await self.queue.flushBackoff()
                }
            }
            g.addTask {
                await nodeInformer.waitForSync()
                await podInformer.waitForSync()
                self.logger.info("scheduler: caches synced; scheduling")
                await self.loop()
            }
            g.addTask {
                await withTaskCancellationHandler {
                    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                } onCancel: {
                    Task { await self.queue.close() }
                }
            }
            await g.waitForAll()
        }
    }

    func loop() async {
        while !Task.isCancelled, let e = await queue.pop() {
            await scheduleOne(e)
        }
    }

    // MARK: one cycle

    /// The outcome of a scheduling cycle.
    public enum Outcome: Sendable, Equatable {
        case scheduled(node: String)
        case unschedulable(message: String, nominated: String?)
    }

    func scheduleOne(_ e: SchedulingQueue.Entry) async {
        let pod = e.pod
        guard let profile = profiles[pod.schedulerName] else { return }
        let attempted = Date(), cycleStart = ContinuousClock.now
        lastDecision = nil
        switch schedule(pod, profile) {
        case .scheduled(let node):
            assume(pod, on: node)
            // What a trace of the pod shows: when it was queued and tried, the nodes filtered and
            // their scores (upstream logs these at -v 10; here with the binding, at the default level).
            let now = ContinuousClock.now
            var trace = lastDecision ?? Decision(evaluated: 1, feasible: 1, scores: [])
            trace.queued = attempted.addingTimeInterval(-Self.seconds(cycleStart - e.queued))
            trace.attempted = attempted
            trace.decided = attempted.addingTimeInterval(Self.seconds(now - cycleStart))
            trace.attempts = e.attempts + 1
            await acquireBindSlot()
            Task { await self.bind(e, node: node, trace: trace) }
        case .unschedulable(let message, let nominate):
            attempts["unschedulable", default: 0] += 1
            var message = message
            if profile.preemption, nominate == nil {
                let (postMessage, victims, node) = preempt(pod, profile)
                message += postMessage.isEmpty ? "" : " " + postMessage
                if let node, !victims.isEmpty {
                    preemptionAttempts += 1
                    await carryOut(pod, victims: victims, node: node)
                }
            }
            await queue.failed(e, unschedulable: true)
            await reportFailure(pod, message: message)
        }
    }

    /// Filters and scores; the node chosen or why there is none (nothing is changed).
    public func schedule(_ pod: PodInfo, _ profile: Profile) -> Outcome {
        guard !nodeOrder.isEmpty else { return .unschedulable(message: "no nodes available to schedule pods", nominated: nil) }
        let state = prepare(pod)
        // A node nominated by an earlier preemption is tried first.
        if !pod.nominatedNodeName.isEmpty, let n = nodes[pod.nominatedNodeName], filter(state, n, profile) == nil {
            return .scheduled(node: n.name)
        }
        let want = profile.feasibleNodesToFind(nodeOrder.count)
        var feasible: [NodeInfo] = []
        var failures: [String: FilterFailure] = [:]
        var examined = 0
        let count = nodeOrder.count
        feasible.reserveCapacity(min(want, count))
        while examined < count && feasible.count < want {
            let n = nodeOrder[(nextStartIndex + examined) % count]
            examined += 1
            if let f = filter(state, n, profile) { failures[n.name] = f } else { feasible.append(n) }
        }
        nextStartIndex = (nextStartIndex + examined) % max(count, 1)
        if feasible.isEmpty { return .unschedulable(message: Self.fitError(all: count, failures: failures), nominated: nil) }
        if feasible.count == 1 {
            lastDecision = Decision(evaluated: examined, feasible: 1, scores: [])
            return .scheduled(node: feasible[0].name)
        }
        let totals = score(state, feasible, profile)
        lastDecision = Decision(evaluated: examined, feasible: feasible.count,
                                scores: zip(feasible, totals).sorted { $0.1 > $1.1 }.prefix(10).map { ($0.0.name, $0.1) })
        var best = Int64.min, chosen = 0, ties = 0
        for (i, t) in totals.enumerated() {
            if t > best { best = t; chosen = i; ties = 1 } else if t == best {
                ties += 1
                if Int.random(in: 0..<ties, using: &random) == 0 { chosen = i }
            }
        }
        return .scheduled(node: feasible[chosen].name)
    }

    func filter(_ s: CycleState, _ n: NodeInfo, _ profile: Profile) -> FilterFailure? {
        for f in profile.filters { if let failure = f.filter(s, n) { return failure } }
        return nil
    }

    func score(_ s: CycleState, _ feasible: [NodeInfo], _ profile: Profile) -> [Int64] {
        var totals = [Int64](repeating: 0, count: feasible.count)
        for (plugin, weight) in profile.scores where !plugin.skips(s) {
            var scores = feasible.map { plugin.score(s, $0) }
            plugin.normalize(&scores)
            for i in totals.indices { totals[i] += scores[i] * weight }
        }
        return totals
    }

    /// upstream's FitError message: "0/3 nodes are available: 1 node(s) had untolerated taint
    /// {…}, 2 Insufficient cpu." (reasons counted over nodes, sorted).
    public static func fitError(all: Int, failures: [String: FilterFailure]) -> String {
        var histogram: [String: Int] = [:]
        for f in failures.values { for r in f.reasons { histogram[r, default: 0] += 1 } }
        let reasons = histogram.map { "\($0.value) \($0.key)" }.sorted()
        return "0/\(all) nodes are available: \(reasons.joined(separator: ", "))."
    }

    /// The PreFilter and PreScore work of the plugins, once per cycle.
    func prepare(_ pod: PodInfo) -> CycleState {
        var s = CycleState(pod: pod)
        s.totalNodes = nodeOrder.count
        func domains(_ key: String, _ visit: (String, NodeInfo) -> Void) {
            for n in nodes.values { if let v = n.labels[key] { visit(v, n) } }
        }
        // Required pod affinity and anti-affinity: matching pods per domain of each term's key.
        if !pod.affinity.isEmpty || !pod.antiAffinity.isEmpty {
            for t in pod.affinity {
                var counts: [String: Int] = [:]
                domains(t.topologyKey) { v, n in
                    let m = n.pods.values.filter { t.selects($0, own: pod.namespace, nsLabels: nil) }.count
                    if m > 0 { counts[v, default: 0] += m; s.affinityMatchesAnything = true }
                }
                s.affinityCounts.append(counts)
            }
            for t in pod.antiAffinity {
                var counts: [String: Int] = [:]
                domains(t.topologyKey) { v, n in
                    let m = n.pods.values.filter { !$0.deleting && t.selects($0, own: pod.namespace, nsLabels: nil) }.count
                    if m > 0 { counts[v, default: 0] += m }
                }
                s.antiAffinityCounts.append(counts)
            }
        }
        // Existing pods whose required anti-affinity selects this pod.
        for n in nodes.values where n.podsWithAntiAffinity > 0 {
            for other in n.pods.values where !other.antiAffinity.isEmpty {
                for t in other.antiAffinity where t.selects(pod, own: other.namespace, nsLabels: nil) {
                    if let v = n.labels[t.topologyKey] { s.existingAntiAffinity["\(t.topologyKey)=\(v)", default: 0] += 1 }
                }
            }
        }
        // Hard spreading: matching pods per domain among the nodes the pod may go to.
        for c in pod.spread where c.whenUnsatisfiable == "DoNotSchedule" {
            var counts: [String: Int] = [:]
            domains(c.topologyKey) { v, n in
                guard NodeAffinityFilter.matches(pod, n) else { return }
                counts[v, default: 0] += n.pods.values.filter { $0.namespace == pod.namespace && !$0.deleting && c.selector?.matches($0.labels) == true }.count
            }
            s.spreadCounts.append(counts)
            var m = counts.values.min() ?? 0
            if let md = c.minDomains, counts.count < md { m = 0 }
            s.spreadMin.append(m)
        }
        // Soft spreading: the pod's ScheduleAnyway constraints, or upstream's system defaults
        // (3 per hostname, 5 per zone) over the pods of its controller.
        let soft = pod.spread.filter { $0.whenUnsatisfiable == "ScheduleAnyway" }
        if !soft.isEmpty {
            for c in soft {
                var counts: [String: Int] = [:]
                domains(c.topologyKey) { v, n in
                    guard NodeAffinityFilter.matches(pod, n) else { return }
                    counts[v, default: 0] += n.pods.values.filter { $0.namespace == pod.namespace && !$0.deleting && c.selector?.matches($0.labels) == true }.count
                }
                s.softSpread.append(c)
                s.softSpreadCounts.append(counts)
                s.softSpreadWeights.append(log(Double(counts.count + 2)))
            }
        } else if pod.spread.isEmpty, let ctrl = pod.controller {
            let perNode = controllerPods[ctrl] ?? [:]
            var hostCounts: [String: Int] = [:], zoneCounts: [String: Int] = [:]
            var zones = Set<String>()
            for n in nodes.values {
                hostCounts[n.labels["kubernetes.io/hostname"] ?? n.name] = perNode[n.name] ?? 0
                if let z = n.labels["topology.kubernetes.io/zone"] {
                    zones.insert(z)
                    zoneCounts[z, default: 0] += perNode[n.name] ?? 0
                }
            }
            s.softSpreadIsDefault = true
            s.softSpread.append(TopologySpreadConstraint(maxSkew: 3, topologyKey: "kubernetes.io/hostname", whenUnsatisfiable: "ScheduleAnyway", selector: nil))
            s.softSpreadCounts.append(hostCounts)
            s.softSpreadWeights.append(log(Double(hostCounts.count + 2)))
            if !zones.isEmpty {
                s.softSpread.append(TopologySpreadConstraint(maxSkew: 5, topologyKey: "topology.kubernetes.io/zone", whenUnsatisfiable: "ScheduleAnyway", selector: nil))
                s.softSpreadCounts.append(zoneCounts)
                s.softSpreadWeights.append(log(Double(zones.count + 2)))
            }
        }
        // Preferred pod affinity and anti-affinity: weights per domain.
        for (terms, sign) in [(pod.preferredAffinity, Int64(1)), (pod.preferredAntiAffinity, Int64(-1))] {
            for t in terms {
                domains(t.topologyKey) { v, n in
                    let m = n.pods.values.filter { t.selects($0, own: pod.namespace, nsLabels: nil) }.count
                    if m > 0 { s.preferredAffinityScores["\(t.topologyKey)=\(v)", default: 0] += sign * t.weight * Int64(m) }
                }
            }
        }
        for n in pod.images { s.imageNodes[n] = imageNodes[n] ?? 0 }
        return s
    }

    // MARK: binding

    func assume(_ pod: PodInfo, on node: String) {
        var p = pod
        p.nodeName = node
        assumed.insert(p.key)
        place(p, on: node)
    }

    func forget(_ pod: PodInfo) {
        assumed.remove(pod.key)
        unplace(pod)
    }

    func acquireBindSlot() async {
        while bindsInFlight >= maxBindsInFlight {
            await withCheckedContinuation { bindWaiters.append($0) }
        }
        bindsInFlight += 1
    }

    func releaseBindSlot() {
        bindsInFlight -= 1
        if !bindWaiters.isEmpty { bindWaiters.removeFirst().resume() }
    }

    /// One scheduling decision, as the binding's log line tells it.
    struct Decision {
        var evaluated: Int
        var feasible: Int
        /// The best-scored nodes (at most 10), best first.
        var scores: [(node: String, score: Int64)]
        var queued = Date(), attempted = Date(), decided = Date()
        var attempts = 1
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    func bind(_ e: SchedulingQueue.Entry, node: String, trace: Decision? = nil) async {
        let pod = e.pod
        defer { releaseBindSlot() }
        let binding: JSONValue = ["apiVersion": "v1", "kind": "Binding",
                                  "metadata": ["name": .string(pod.name), "namespace": .string(pod.namespace), "uid": .string(pod.uid)],
                                  "target": ["apiVersion": "v1", "kind": "Node", "name": .string(node)]]
        do {
            _ = try await api.create(API.path("v1", "pods", namespace: pod.namespace, name: pod.name, subresource: "binding"), binding)
            attempts["scheduled", default: 0] += 1
            if let created = RFC3339.seconds(pod.creation) {
                latencies.append(Date().timeIntervalSince1970 - created)
                if latencies.count > 100_000 { latencies.removeFirst(50_000) }
            }
            events.record(podRef(pod), reason: "Scheduled", message: "Successfully assigned \(pod.namespace)/\(pod.name) to \(node)", action: "Binding")
            if let t = trace {
                logger.info("Successfully bound pod to node", metadata: [
                    "pod": "\(pod.namespace)/\(pod.name)", "node": "\(node)", "evaluatedNodes": "\(t.evaluated)", "feasibleNodes": "\(t.feasible)",
                    "scores": .string(t.scores.map { "\($0.node)=\($0.score)" }.joined(separator: ",")), "attempts": "\(t.attempts)",
                    "queued": .string(LeaderElector.microTime(t.queued)), "attempted": .string(LeaderElector.microTime(t.attempted)),
                    "decided": .string(LeaderElector.microTime(t.decided))])
            }
        } catch {
            attempts["error", default: 0] += 1
            forget(pod)
            if let e = error as? APIStatusError, e.isNotFound { return }
            logger.warning("binding \(pod.key) to \(node): \(error)")
            await queue.failed(e, unschedulable: false)
        }
    }

    func podRef(_ pod: PodInfo) -> JSONValue {
        ["kind": "Pod", "apiVersion": "v1", "metadata": ["name": .string(pod.name), "namespace": .string(pod.namespace), "uid": .string(pod.uid),
                                                         "resourceVersion": .string(pod.resourceVersion)]]
    }

    func reportFailure(_ pod: PodInfo, message: String) async {
        events.record(podRef(pod), type: "Warning", reason: "FailedScheduling", message: message, action: "Scheduling")
        guard lastFailure[pod.key] != message else { return }
        lastFailure[pod.key] = message
        let condition: JSONValue = ["type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": .string(message),
                                    "lastProbeTime": .null, "lastTransitionTime": .string(Time.now())]
        do {
            _ = try await api.strategicPatch(API.path("v1", "pods", namespace: pod.namespace, name: pod.name, subresource: "status"),
                                             ["status": ["conditions": [condition]]])
        } catch {
            logger.debug("updating the PodScheduled condition of \(pod.key): \(error)")
        }
    }

    // MARK: preemption

    /// DefaultPreemption's dry run: on each node where the pod failed for a reason that
    /// removing pods could fix, the fewest lower-priority victims that make it fit (all
    /// removed, then the most important reprieved while it still fits); the node whose most
    /// important victim matters least wins. Returns the post-filter message, the victims and
    /// the node (nil when preemption cannot help).
    func preempt(_ pod: PodInfo, _ profile: Profile) -> (message: String, victims: [PodInfo], node: String?) {
        if pod.preemptionPolicy == "Never" { return ("preemption: not eligible due to preemptionPolicy=Never.", [], nil) }
        let state = prepare(pod)
        var histogram: [String: Int] = [:]
        var best: (node: String, victims: [PodInfo], key: (Int64, Int64, Int))?
        for node in nodeOrder {
            guard let failure = filter(state, node, profile) else { continue }
            guard failure.resolvable else { histogram["Preemption is not helpful for scheduling", default: 0] += 1; continue }
            let trial = node.copy()
            let lower = node.pods.values.filter { $0.priority < pod.priority && !$0.deleting }
                .sorted { $0.priority != $1.priority ? $0.priority > $1.priority : $0.creation < $1.creation }
            for v in lower { trial.remove(v) }
            guard filter(state, trial, profile) == nil else {
                histogram["No preemption victims found for incoming pod", default: 0] += 1
                continue
            }
            var victims: [PodInfo] = []
            for v in lower {
                trial.add(v)
                if filter(state, trial, profile) != nil {
                    trial.remove(v)
                    victims.append(v)
                }
            }
            let key = (victims.map(\.priority).max() ?? Int64.min, victims.reduce(Int64(0)) { $0 + $1.priority }, victims.count)
            if best == nil || key < best!.key { best = (node.name, victims, key) }
        }
        if let best { return ("", best.victims, best.node) }
        let reasons = histogram.map { "\($0.value) \($0.key)" }.sorted()
        return ("preemption: 0/\(nodeOrder.count) nodes are available: \(reasons.joined(separator: ", ")).", [], nil)
    }

    func carryOut(_ pod: PodInfo, victims: [PodInfo], node: String) async {
        for v in victims {
            events.record(podRef(v), reason: "Preempted", message: "Preempted by pod \(pod.uid) on node \(node)", action: "Preempting")
            let path = API.path("v1", "pods", namespace: v.namespace, name: v.name)
            _ = try? await api.strategicPatch(path + "/status", ["status": ["conditions": [[
                "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                "message": .string("\(pod.schedulerName): preempting to accommodate a higher priority pod"), "lastTransitionTime": .string(Time.now())]]]])
            do { try await api.delete(path) } catch { logger.debug("deleting victim \(v.key): \(error)") }
        }
        _ = try? await api.mergePatch(API.path("v1", "pods", namespace: pod.namespace, name: pod.name, subresource: "status"),
                                      ["status": ["nominatedNodeName": .string(node)]])
    }

    /// What the cache holds now (for tests and `/metrics`).
    public var snapshot: (nodes: Int, pods: Int, assumed: Int) { (nodes.count, podNode.count, assumed.count) }
}

/// SplitMix64: a small, fast pseudo-random generator (for tie-breaking, not for secrets).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
