import Foundation
import KubeAPI

/// Why a node cannot take a pod: the reasons `kubectl describe` shows, and whether preempting
/// pods on it could help (upstream's Unschedulable against UnschedulableAndUnresolvable).
public struct FilterFailure: Sendable, Equatable {
    public var plugin: String
    public var reasons: [String]
    public var resolvable: Bool
}

/// What one scheduling cycle computes once for its pod and every plugin reads (upstream's
/// CycleState, filled by the PreFilter and PreScore plugins).
public struct CycleState: Sendable {
    public var pod: PodInfo
    /// Per required affinity term: matching pods per topology value of its key.
    var affinityCounts: [[String: Int]] = []
    /// Whether any pod in the cluster matches the pod's affinity terms at all.
    var affinityMatchesAnything = false
    var antiAffinityCounts: [[String: Int]] = []
    /// `key=value` domains where an existing pod's required anti-affinity forbids this pod.
    var existingAntiAffinity: [String: Int] = [:]
    /// Per hard spread constraint: matching pods per domain, and the smallest count.
    var spreadCounts: [[String: Int]] = []
    var spreadMin: [Int] = []
    /// Per soft (or default) spread constraint: matching pods per domain, and its weight.
    var softSpreadCounts: [[String: Int]] = []
    var softSpreadWeights: [Double] = []
    var softSpread: [TopologySpreadConstraint] = []
    var softSpreadIsDefault = false
    /// Preferred pod (anti-)affinity: the weighted sum per `key=value` domain.
    var preferredAffinityScores: [String: Int64] = [:]
    /// How many nodes have each image (for ImageLocality's spread factor).
    var imageNodes: [String: Int] = [:]
    var totalNodes = 0
}

/// A filter plugin: whether the node can take the pod.
public protocol FilterPlugin: Sendable {
    var name: String { get }
    func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure?
}

/// A score plugin: a raw score per node, normalised to 0…100 over the feasible nodes.
public protocol ScorePlugin: Sendable {
    var name: String { get }
    func score(_ s: CycleState, _ node: NodeInfo) -> Int64
    func normalize(_ scores: inout [Int64])
    /// Whether the plugin has nothing to say about this pod (upstream's PreScore answering
    /// Skip): its score would be the same on every node, so it is not run.
    func skips(_ s: CycleState) -> Bool
}

extension ScorePlugin {
    public func normalize(_ scores: inout [Int64]) {}
    public func skips(_ s: CycleState) -> Bool { false }
}

public let maxNodeScore: Int64 = 100

/// upstream's `DefaultNormalizeScore`: scaled so the highest is 100 (reversed: the lowest).
func defaultNormalize(_ scores: inout [Int64], reverse: Bool) {
    let m = scores.max() ?? 0
    if m == 0 {
        if reverse { for i in scores.indices { scores[i] = maxNodeScore } }
        return
    }
    for i in scores.indices {
        scores[i] = scores[i] * maxNodeScore / m
        if reverse { scores[i] = maxNodeScore - scores[i] }
    }
}

// MARK: filters, in upstream's default order

public struct NodeUnschedulable: FilterPlugin {
    public let name = "NodeUnschedulable"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        guard node.unschedulable else { return nil }
        let tolerated = s.pod.tolerations.contains { $0.tolerates(Taint(key: "node.kubernetes.io/unschedulable", effect: "NoSchedule")) }
        return tolerated ? nil : FilterFailure(plugin: name, reasons: ["node(s) were unschedulable"], resolvable: false)
    }
}

public struct NodeName: FilterPlugin {
    public let name = "NodeName"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        s.pod.nodeName.isEmpty || s.pod.nodeName == node.name
            ? nil : FilterFailure(plugin: name, reasons: ["node(s) didn't match the requested node name"], resolvable: false)
    }
}

public struct TaintTolerationFilter: FilterPlugin {
    public let name = "TaintToleration"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        for t in node.taints where t.effect == "NoSchedule" || t.effect == "NoExecute" {
            if !s.pod.tolerations.contains(where: { $0.tolerates(t) }) {
                return FilterFailure(plugin: name, reasons: ["node(s) had untolerated taint {\(t.key): \(t.value)}"], resolvable: false)
            }
        }
        return nil
    }
}

public struct NodeAffinityFilter: FilterPlugin {
    public let name = "NodeAffinity"
    public init() {}
    public static func matches(_ pod: PodInfo, _ node: NodeInfo) -> Bool {
        for (k, v) in pod.nodeSelector where node.labels[k] != v { return false }
        if let terms = pod.requiredNodeTerms, !terms.contains(where: { $0.matches(node) }) { return false }
        return true
    }
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        Self.matches(s.pod, node) ? nil : FilterFailure(plugin: name, reasons: ["node(s) didn't match Pod's node affinity/selector"], resolvable: false)
    }
}

public struct NodePorts: FilterPlugin {
    public let name = "NodePorts"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        for want in s.pod.hostPorts {
            let clash = node.usedPorts.keys.contains { have in
                have.port == want.port && have.proto == want.proto
                    && (have.ip == want.ip || have.ip == "0.0.0.0" || want.ip == "0.0.0.0")
            }
            if clash { return FilterFailure(plugin: name, reasons: ["node(s) didn't have free ports for the requested pod ports"], resolvable: true) }
        }
        return nil
    }
}

public struct NodeResourcesFitFilter: FilterPlugin {
    public let name = "NodeResourcesFit"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        var reasons: [String] = []
        let req = s.pod.requests, a = node.allocatable, used = node.requested
        if used.pods + 1 > a.pods { reasons.append("Too many pods") }
        if req.milliCPU > 0 && used.milliCPU + req.milliCPU > a.milliCPU { reasons.append("Insufficient cpu") }
        if req.memory > 0 && used.memory + req.memory > a.memory { reasons.append("Insufficient memory") }
        if req.ephemeralStorage > 0 && used.ephemeralStorage + req.ephemeralStorage > a.ephemeralStorage { reasons.append("Insufficient ephemeral-storage") }
        for (k, v) in req.scalar.sorted(by: { $0.key < $1.key }) where v > 0 && (used.scalar[k] ?? 0) + v > (a.scalar[k] ?? 0) {
            reasons.append("Insufficient \(k)")
        }
        return reasons.isEmpty ? nil : FilterFailure(plugin: name, reasons: reasons, resolvable: true)
    }
}

public struct PodTopologySpreadFilter: FilterPlugin {
    public let name = "PodTopologySpread"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        let hard = s.pod.spread.filter { $0.whenUnsatisfiable == "DoNotSchedule" }
        for (i, c) in hard.enumerated() {
            guard let value = node.labels[c.topologyKey] else {
                return FilterFailure(plugin: name, reasons: ["node(s) didn't match pod topology spread constraints (missing required label)"], resolvable: false)
            }
            let selfMatch = c.selector?.matches(s.pod.labels) == true ? 1 : 0
            let skew = (s.spreadCounts[i][value] ?? 0) + selfMatch - s.spreadMin[i]
            if skew > c.maxSkew {
                return FilterFailure(plugin: name, reasons: ["node(s) didn't match pod topology spread constraints"], resolvable: true)
            }
        }
        return nil
    }
}

public struct InterPodAffinityFilter: FilterPlugin {
    public let name = "InterPodAffinity"
    public init() {}
    public func filter(_ s: CycleState, _ node: NodeInfo) -> FilterFailure? {
        // This pod's affinity: every term satisfied in the node's domain (the first of a group may go anywhere its terms allow).
        if !s.pod.affinity.isEmpty {
            var ok = true
            for (i, t) in s.pod.affinity.enumerated() {
                guard let v = node.labels[t.topologyKey], (s.affinityCounts[i][v] ?? 0) > 0 else { ok = false; break }
            }
            if !ok {
                let selfMatch = s.pod.affinity.allSatisfy { $0.selects(s.pod, own: s.pod.namespace, nsLabels: nil) }
                let labelled = s.pod.affinity.allSatisfy { node.labels[$0.topologyKey] != nil }
                if !(selfMatch && !s.affinityMatchesAnything && labelled) {
                    return FilterFailure(plugin: name, reasons: ["node(s) didn't match pod affinity rules"], resolvable: false)
                }
            }
        }
        for (i, t) in s.pod.antiAffinity.enumerated() {
            if let v = node.labels[t.topologyKey], (s.antiAffinityCounts[i][v] ?? 0) > 0 {
                return FilterFailure(plugin: name, reasons: ["node(s) didn't match pod anti-affinity rules"], resolvable: true)
            }
        }
        // Existing pods' anti-affinity against this one (upstream checks it last).
        if !s.existingAntiAffinity.isEmpty, node.labels.contains(where: { s.existingAntiAffinity["\($0.key)=\($0.value)"] ?? 0 > 0 }) {
            return FilterFailure(plugin: name, reasons: ["node(s) didn't satisfy existing pods anti-affinity rules"], resolvable: true)
        }
        return nil
    }
}

// MARK: scores

/// NodeResourcesFit's LeastAllocated strategy over CPU and memory (weights 1 and 1).
public struct LeastAllocated: ScorePlugin {
    public let name = "NodeResourcesFit"
    public init() {}
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        func one(_ requested: Int64, _ capacity: Int64) -> Int64 {
            guard capacity > 0, requested <= capacity else { return 0 }
            return (capacity - requested) * maxNodeScore / capacity
        }
        let cpu = one(node.nonZeroRequested.milliCPU + s.pod.nonZeroRequests.milliCPU, node.allocatable.milliCPU)
        let mem = one(node.nonZeroRequested.memory + s.pod.nonZeroRequests.memory, node.allocatable.memory)
        return (cpu + mem) / 2
    }
}

public struct BalancedAllocation: ScorePlugin {
    public let name = "NodeResourcesBalancedAllocation"
    public init() {}
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        func fraction(_ r: Int64, _ c: Int64) -> Double { c > 0 ? min(1, Double(r) / Double(c)) : 1 }
        let cpu = fraction(node.requested.milliCPU + s.pod.requests.milliCPU, node.allocatable.milliCPU)
        let mem = fraction(node.requested.memory + s.pod.requests.memory, node.allocatable.memory)
        let std = abs(cpu - mem) / 2
        return Int64((1 - std) * Double(maxNodeScore))
    }
}

public struct TaintTolerationScore: ScorePlugin {
    public let name = "TaintToleration"
    public init() {}
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        if node.taints.isEmpty { return 0 }
        let prefer = s.pod.tolerations.filter { $0.effect.isEmpty || $0.effect == "PreferNoSchedule" }
        return Int64(node.taints.filter { t in t.effect == "PreferNoSchedule" && !prefer.contains { $0.tolerates(t) } }.count)
    }
    public func normalize(_ scores: inout [Int64]) { defaultNormalize(&scores, reverse: true) }
}

public struct NodeAffinityScore: ScorePlugin {
    public let name = "NodeAffinity"
    public init() {}
    public func skips(_ s: CycleState) -> Bool { s.pod.preferredNodeTerms.isEmpty }
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        s.pod.preferredNodeTerms.reduce(0) { $0 + ($1.term.matches(node) ? $1.weight : 0) }
    }
    public func normalize(_ scores: inout [Int64]) { defaultNormalize(&scores, reverse: false) }
}

public struct ImageLocality: ScorePlugin {
    public let name = "ImageLocality"
    static let mb: Int64 = 1024 * 1024
    static let minThreshold = 23 * mb, maxContainerThreshold = 1000 * mb
    public init() {}
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        guard !s.pod.images.isEmpty, s.totalNodes > 0 else { return 0 }
        var sum: Int64 = 0
        for n in s.pod.images {
            if let size = node.images[n] {
                sum += Int64(Double(size) * Double(s.imageNodes[n] ?? 1) / Double(s.totalNodes))
            }
        }
        let maxThreshold = Self.maxContainerThreshold * Int64(s.pod.images.count)
        let clamped = min(max(sum, Self.minThreshold), maxThreshold)
        return maxNodeScore * (clamped - Self.minThreshold) / (maxThreshold - Self.minThreshold)
    }
}

public struct InterPodAffinityScore: ScorePlugin {
    public let name = "InterPodAffinity"
    public init() {}
    public func skips(_ s: CycleState) -> Bool { s.preferredAffinityScores.isEmpty }
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        guard !s.preferredAffinityScores.isEmpty else { return 0 }
        var total: Int64 = 0
        for (k, v) in node.labels { total += s.preferredAffinityScores["\(k)=\(v)"] ?? 0 }
        return total
    }
    public func normalize(_ scores: inout [Int64]) {
        guard let lo = scores.min(), let hi = scores.max(), hi > lo else {
            for i in scores.indices { scores[i] = 0 }
            return
        }
        for i in scores.indices { scores[i] = maxNodeScore * (scores[i] - lo) / (hi - lo) }
    }
}

public struct PodTopologySpreadScore: ScorePlugin {
    public let name = "PodTopologySpread"
    public init() {}
    public func skips(_ s: CycleState) -> Bool { s.softSpread.isEmpty }
    public func score(_ s: CycleState, _ node: NodeInfo) -> Int64 {
        var total = 0.0
        for (i, c) in s.softSpread.enumerated() {
            guard let v = node.labels[c.topologyKey] else { continue }
            total += Double((s.softSpreadCounts[i][v] ?? 0) + c.maxSkew - 1) * s.softSpreadWeights[i]
        }
        return Int64(total.rounded())
    }
    public func normalize(_ scores: inout [Int64]) {
        guard let hi = scores.max(), let lo = scores.min() else { return }
        if hi == 0 { for i in scores.indices { scores[i] = maxNodeScore }; return }
        for i in scores.indices { scores[i] = maxNodeScore * (hi + lo - scores[i]) / hi }
    }
}
