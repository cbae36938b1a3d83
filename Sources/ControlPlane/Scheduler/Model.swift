import Foundation
import KubeAPI
import ControllerKit

/// Amounts of the resources the scheduler counts: CPU in thousandths, the rest in units.
public struct ResourceAmounts: Sendable, Equatable {
    public var milliCPU: Int64 = 0
    public var memory: Int64 = 0
    public var ephemeralStorage: Int64 = 0
    public var pods: Int64 = 0
    /// Extended resources (`nvidia.com/gpu`, `hugepages-2Mi`) by name.
    public var scalar: [String: Int64] = [:]

    public init(milliCPU: Int64 = 0, memory: Int64 = 0, ephemeralStorage: Int64 = 0, pods: Int64 = 0) {
        self.milliCPU = milliCPU
        self.memory = memory
        self.ephemeralStorage = ephemeralStorage
        self.pods = pods
    }

    /// A `ResourceList` (`{"cpu": "100m", "memory": "64Mi"}`).
    public init(list: JSONValue?) {
        for (k, v) in list?.object ?? [:] {
            switch k {
            case "cpu": milliCPU = Quantity.milli(v)
            case "memory": memory = Quantity.value(v)
            case "ephemeral-storage": ephemeralStorage = Quantity.value(v)
            case "pods": pods = Quantity.value(v)
            default: scalar[k] = Quantity.value(v)
            }
        }
    }

    public mutating func add(_ o: ResourceAmounts) {
        milliCPU += o.milliCPU
        memory += o.memory
        ephemeralStorage += o.ephemeralStorage
        pods += o.pods
        for (k, v) in o.scalar { scalar[k, default: 0] += v }
    }

    public mutating func subtract(_ o: ResourceAmounts) {
        milliCPU -= o.milliCPU
        memory -= o.memory
        ephemeralStorage -= o.ephemeralStorage
        pods -= o.pods
        for (k, v) in o.scalar { scalar[k, default: 0] -= v }
    }

    /// Each resource the larger of the two (an init container's request against the rest).
    public mutating func raise(to o: ResourceAmounts) {
        milliCPU = max(milliCPU, o.milliCPU)
        memory = max(memory, o.memory)
        ephemeralStorage = max(ephemeralStorage, o.ephemeralStorage)
        for (k, v) in o.scalar { scalar[k] = max(scalar[k] ?? 0, v) }
    }
}

extension NodeSelectorTerm {
    public func matches(_ node: NodeInfo) -> Bool { matches(labels: node.labels, name: node.name) }
}

/// One pod affinity or anti-affinity term: pods matching the selector (in the namespaces
/// named, or the pod's own) in the same `topologyKey` domain.
public struct PodAffinityTerm: Sendable, Equatable {
    public var selector: ObjectSelector?
    public var namespaces: [String]
    public var namespaceSelector: ObjectSelector?
    public var topologyKey: String
    public var weight: Int64

    public init(_ v: JSONValue, weight: Int64 = 0) {
        selector = v["labelSelector"].map(ObjectSelector.init)
        namespaces = (v["namespaces"]?.array ?? []).compactMap(\.string)
        namespaceSelector = v["namespaceSelector"].map(ObjectSelector.init)
        topologyKey = v["topologyKey"]?.string ?? ""
        self.weight = weight
    }

    /// Whether `other` (in namespace `ns` with `nsLabels`) is one the term selects, for a pod in `own`.
    public func selects(_ other: PodInfo, own: String, nsLabels: [String: String]?) -> Bool {
        guard let selector, selector.matches(other.labels) else { return false }
        if namespaces.isEmpty && namespaceSelector == nil { return other.namespace == own }
        if namespaces.contains(other.namespace) { return true }
        if let namespaceSelector, let nsLabels { return namespaceSelector.matches(nsLabels) }
        return false
    }
}

public struct TopologySpreadConstraint: Sendable, Equatable {
    public var maxSkew: Int
    public var topologyKey: String
    public var whenUnsatisfiable: String
    public var selector: ObjectSelector?
    public var minDomains: Int?

    public init(_ v: JSONValue) {
        maxSkew = Int(v["maxSkew"]?.int ?? 1)
        topologyKey = v["topologyKey"]?.string ?? ""
        whenUnsatisfiable = v["whenUnsatisfiable"]?.string ?? "DoNotSchedule"
        selector = v["labelSelector"].map(ObjectSelector.init)
        minDomains = v["minDomains"]?.int.map(Int.init)
    }

    public init(maxSkew: Int, topologyKey: String, whenUnsatisfiable: String, selector: ObjectSelector?) {
        self.maxSkew = maxSkew
        self.topologyKey = topologyKey
        self.whenUnsatisfiable = whenUnsatisfiable
        self.selector = selector
    }
}

/// What the scheduler needs of a Pod, decoded once (10,000 pods as JSON trees would cost
/// hundreds of megabytes).
public struct PodInfo: Sendable {
    public var namespace: String
    public var name: String
    public var uid: String
    public var resourceVersion: String
    public var labels: [String: String]
    public var nodeName: String
    public var nominatedNodeName: String
    public var schedulerName: String
    public var priority: Int64
    public var preemptionPolicy: String
    public var phase: String
    public var deleting: Bool
    public var creation: String
    /// The effective request (upstream's `computePodResourceRequest`: the containers' sum, raised
    /// to any init container's, plus the overhead), and the same with upstream's non-zero
    /// defaults (100m CPU, 200 MiB) for scoring.
    public var requests: ResourceAmounts
    public var nonZeroRequests: ResourceAmounts
    public var hostPorts: [HostPort]
    public var nodeSelector: [String: String]
    public var requiredNodeTerms: [NodeSelectorTerm]?
    public var preferredNodeTerms: [(weight: Int64, term: NodeSelectorTerm)]
    public var tolerations: [Toleration]
    public var affinity: [PodAffinityTerm]
    public var antiAffinity: [PodAffinityTerm]
    public var preferredAffinity: [PodAffinityTerm]
    public var preferredAntiAffinity: [PodAffinityTerm]
    public var spread: [TopologySpreadConstraint]
    /// The containers' images, normalised as nodes report them.
    public var images: [String]
    /// The controller owning the pod (`kind/uid`), for the default spreading.
    public var controller: String?

    public struct HostPort: Sendable, Hashable {
        public var ip: String
        public var proto: String
        public var port: Int64
    }

    public var key: String { "\(namespace)/\(name)" }

    /// The strings and lists pods repeat (scheduler names, policies, images, tolerations), kept once.
    static let strings = Interner<String>()
    static let tolerationLists = Interner<[Toleration]>()
    static let labelSets = Interner<[String: String]>()

    public init(_ o: JSONValue) {
        let spec = o["spec"] ?? [:]
        namespace = Self.strings.intern(o.namespace)
        name = o.name
        uid = o.uid
        resourceVersion = o[path: ["metadata", "resourceVersion"]]?.string ?? ""
        labels = Self.labelSets.intern(o.labels)
        nodeName = spec["nodeName"]?.string ?? ""
        nominatedNodeName = o[path: ["status", "nominatedNodeName"]]?.string ?? ""
        schedulerName = Self.strings.intern(spec["schedulerName"]?.string ?? "default-scheduler")
        priority = spec["priority"]?.int ?? 0
        preemptionPolicy = Self.strings.intern(spec["preemptionPolicy"]?.string ?? "PreemptLowerPriority")
        phase = Self.strings.intern(o[path: ["status", "phase"]]?.string ?? "")
        deleting = o.isDeleting
        creation = o[path: ["metadata", "creationTimestamp"]]?.string ?? ""
        var req = ResourceAmounts(), nonZero = ResourceAmounts()
        var ports: [HostPort] = []
        var images: [String] = []
        for c in spec["containers"]?.array ?? [] {
            let r = ResourceAmounts(list: c[path: ["resources", "requests"]])
            req.add(r)
            var nz = r
            if c[path: ["resources", "requests", "cpu"]] == nil { nz.milliCPU = 100 }
            if c[path: ["resources", "requests", "memory"]] == nil { nz.memory = 200 * 1024 * 1024 }
            nonZero.add(nz)
            for p in c["ports"]?.array ?? [] {
                if let hp = p["hostPort"]?.int, hp > 0 {
                    ports.append(HostPort(ip: p["hostIP"]?.string ?? "0.0.0.0", proto: p["protocol"]?.string ?? "TCP", port: hp))
                }
            }
            if let i = c["image"]?.string { images.append(Self.strings.intern(ImageNames.normalized(i))) }
        }
        for c in spec["initContainers"]?.array ?? [] {
            let r = ResourceAmounts(list: c[path: ["resources", "requests"]])
            // A sidecar (restartPolicy Always) runs beside the containers.
            if c["restartPolicy"]?.string == "Always" { req.add(r); nonZero.add(r) } else { req.raise(to: r); nonZero.raise(to: r) }
        }
        let overhead = ResourceAmounts(list: spec["overhead"])
        req.add(overhead)
        nonZero.add(overhead)
        requests = req
        nonZeroRequests = nonZero
        hostPorts = ports
        self.images = images
        nodeSelector = (spec["nodeSelector"]?.object ?? [:]).compactMapValues(\.string)
        let na = spec[path: ["affinity", "nodeAffinity"]]
        requiredNodeTerms = na?[path: ["requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"]]?.array?.map(NodeSelectorTerm.init)
        preferredNodeTerms = (na?["preferredDuringSchedulingIgnoredDuringExecution"]?.array ?? []).map {
            ($0["weight"]?.int ?? 0, NodeSelectorTerm($0["preference"] ?? [:]))
        }
        tolerations = Self.tolerationLists.intern((spec["tolerations"]?.array ?? []).map(Toleration.init))
        let pa = spec[path: ["affinity", "podAffinity"]], paa = spec[path: ["affinity", "podAntiAffinity"]]
        affinity = (pa?["requiredDuringSchedulingIgnoredDuringExecution"]?.array ?? []).map { PodAffinityTerm($0) }
        antiAffinity = (paa?["requiredDuringSchedulingIgnoredDuringExecution"]?.array ?? []).map { PodAffinityTerm($0) }
        preferredAffinity = (pa?["preferredDuringSchedulingIgnoredDuringExecution"]?.array ?? []).map {
            PodAffinityTerm($0["podAffinityTerm"] ?? [:], weight: $0["weight"]?.int ?? 0)
        }
        preferredAntiAffinity = (paa?["preferredDuringSchedulingIgnoredDuringExecution"]?.array ?? []).map {
            PodAffinityTerm($0["podAffinityTerm"] ?? [:], weight: $0["weight"]?.int ?? 0)
        }
        spread = (spec["topologySpreadConstraints"]?.array ?? []).map(TopologySpreadConstraint.init)
        controller = (o[path: ["metadata", "ownerReferences"]]?.array ?? []).first { $0["controller"]?.bool == true }
            .map { "\($0["kind"]?.string ?? "")/\($0["uid"]?.string ?? "")" }
    }

    /// Whether it is done with its node's resources (finished).
    public var terminal: Bool { phase == "Succeeded" || phase == "Failed" }
}

/// What the scheduler knows of a Node: what it offers, what its pods take. A class: the
/// plugins read it in place (a thousand copies per cycle would cost more than the cycle); only
/// the scheduler's actor changes it, and preemption's dry runs work on a `copy()`.
public final class NodeInfo: @unchecked Sendable {
    public var name: String
    public var labels: [String: String]
    public var taints: [Taint]
    public var unschedulable: Bool
    public var allocatable: ResourceAmounts
    /// Image names (every name of each image) and sizes.
    public var images: [String: Int64]
    public var requested = ResourceAmounts()
    public var nonZeroRequested = ResourceAmounts()
    public var pods: [String: PodInfo] = [:]
    public var usedPorts: [PodInfo.HostPort: Int] = [:]
    /// The pods with required anti-affinity terms (checked against every incoming pod).
    public var podsWithAntiAffinity = 0

    public required init(_ o: JSONValue) {
        name = o.name
        labels = o.labels
        taints = (o[path: ["spec", "taints"]]?.array ?? []).map(Taint.init)
        unschedulable = o[path: ["spec", "unschedulable"]]?.bool ?? false
        allocatable = ResourceAmounts(list: o[path: ["status", "allocatable"]] ?? o[path: ["status", "capacity"]])
        var images: [String: Int64] = [:]
        for i in o[path: ["status", "images"]]?.array ?? [] {
            let size = i["sizeBytes"]?.int ?? 0
            for n in (i["names"]?.array ?? []).compactMap(\.string) { images[ImageNames.normalized(n)] = size }
        }
        self.images = images
    }

    public init(name: String, labels: [String: String] = [:], taints: [Taint] = [], allocatable: ResourceAmounts) {
        self.name = name
        self.labels = labels
        self.taints = taints
        unschedulable = false
        self.allocatable = allocatable
        images = [:]
    }

    init(copying n: NodeInfo) {
        name = n.name
        labels = n.labels
        taints = n.taints
        unschedulable = n.unschedulable
        allocatable = n.allocatable
        images = n.images
        requested = n.requested
        nonZeroRequested = n.nonZeroRequested
        pods = n.pods
        usedPorts = n.usedPorts
        podsWithAntiAffinity = n.podsWithAntiAffinity
    }

    /// An independent copy (preemption's dry runs change it).
    public func copy() -> NodeInfo { NodeInfo(copying: self) }

    /// The node as it is apart from its pods (labels, taints, allocatable), keeping the pods.
    public func update(from n: NodeInfo) {
        labels = n.labels
        taints = n.taints
        unschedulable = n.unschedulable
        allocatable = n.allocatable
        images = n.images
    }

    public func add(_ p: PodInfo) {
        if let old = pods[p.key] { remove(old) }
        pods[p.key] = p
        requested.add(p.requests)
        requested.pods += 1
        nonZeroRequested.add(p.nonZeroRequests)
        for hp in p.hostPorts { usedPorts[hp, default: 0] += 1 }
        if !p.antiAffinity.isEmpty { podsWithAntiAffinity += 1 }
    }

    public func remove(_ p: PodInfo) {
        guard let old = pods.removeValue(forKey: p.key) else { return }
        requested.subtract(old.requests)
        requested.pods -= 1
        nonZeroRequested.subtract(old.nonZeroRequests)
        for hp in old.hostPorts {
            usedPorts[hp, default: 1] -= 1
            if usedPorts[hp] == 0 { usedPorts[hp] = nil }
        }
        if !old.antiAffinity.isEmpty { podsWithAntiAffinity -= 1 }
    }
}

/// Image names as the kubelet reports them and pods name them (`nginx` is
/// `docker.io/library/nginx:latest`).
public enum ImageNames {
    public static func normalized(_ name: String) -> String {
        var n = name
        if !n.contains("@") {
            let last = n.split(separator: "/").last.map(String.init) ?? n
            if !last.contains(":") { n += ":latest" }
        }
        let first = n.split(separator: "/").first.map(String.init) ?? n
        if !n.contains("/") { return "docker.io/library/" + n }
        if !(first.contains(".") || first.contains(":") || first == "localhost") { return "docker.io/" + n }
        return n
    }
}
