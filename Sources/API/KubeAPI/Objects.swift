/// core/v1 Node.
public struct Node: Codable, Hashable, Sendable {
    public var apiVersion: String? = "v1"
    public var kind: String? = "Node"
    public var metadata: ObjectMeta
    public var spec: NodeSpec?
    public var status: NodeStatus?
    public init(metadata: ObjectMeta, spec: NodeSpec? = nil, status: NodeStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
    public static let zoneLabel = "topology.kubernetes.io/zone"
}

public struct NodeSpec: Codable, Hashable, Sendable {
    public var podCIDR: String?
    public var podCIDRs: [String]?
    public var unschedulable: Bool?
    public var providerID: String?
}

public struct NodeStatus: Codable, Hashable, Sendable {
    public var addresses: [NodeAddress]?
    public var conditions: [Condition]?
}

public struct NodeAddress: Codable, Hashable, Sendable {
    public var type: String
    public var address: String
}

/// core/v1 Pod, the parts the data plane uses.
public struct Pod: Codable, Hashable, Sendable {
    public var apiVersion: String? = "v1"
    public var kind: String? = "Pod"
    public var metadata: ObjectMeta
    public var spec: PodSpec?
    public var status: PodStatus?
    public init(metadata: ObjectMeta, spec: PodSpec? = nil, status: PodStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

public struct PodSpec: Codable, Hashable, Sendable {
    public var nodeName: String?
    public var hostNetwork: Bool?
    public var containers: [Container]?
}

public struct Container: Codable, Hashable, Sendable {
    public var name: String
    public var image: String?
    public var command: [String]?
    public var args: [String]?
    public var ports: [ContainerPort]?
}

public struct ContainerPort: Codable, Hashable, Sendable {
    public var name: String?
    public var containerPort: Int
    public var `protocol`: String?
}

public struct PodStatus: Codable, Hashable, Sendable {
    public var phase: String?
    public var podIP: String?
    public var podIPs: [PodIP]?
    public var hostIP: String?
    public var conditions: [Condition]?
}

public struct PodIP: Codable, Hashable, Sendable {
    public var ip: String
}

/// core/v1 Namespace.
public struct Namespace: Codable, Hashable, Sendable {
    public var apiVersion: String? = "v1"
    public var kind: String? = "Namespace"
    public var metadata: ObjectMeta
    public var status: NamespaceStatus?
    public init(metadata: ObjectMeta) { self.metadata = metadata }
}

public struct NamespaceStatus: Codable, Hashable, Sendable {
    public var phase: String?
}

/// networking.k8s.io/v1 ServiceCIDR: the ranges ClusterIPs come from.
public struct ServiceCIDR: Codable, Hashable, Sendable {
    public var apiVersion: String? = "networking.k8s.io/v1"
    public var kind: String? = "ServiceCIDR"
    public var metadata: ObjectMeta
    public var spec: ServiceCIDRSpec
    public var status: ServiceCIDRStatus?
    public init(metadata: ObjectMeta, spec: ServiceCIDRSpec) {
        self.metadata = metadata
        self.spec = spec
    }
}

public struct ServiceCIDRSpec: Codable, Hashable, Sendable {
    public var cidrs: [String]?
    public init(cidrs: [String]? = nil) { self.cidrs = cidrs }
}

public struct ServiceCIDRStatus: Codable, Hashable, Sendable {
    public var conditions: [Condition]?
}
