import KubeAPI

/// What a cloud offers the cloud controller manager, shaped as k8s.io/cloud-provider's
/// `Interface`: each facet may be missing (upstream's `(X, bool)`), and a controller whose facet
/// is missing does not run. Objects are passed as the API serves them.
public protocol CloudProvider: Sendable {
    /// `--cloud-provider`'s name, and the scheme of the providerIDs it gives (`NAME://…`).
    var providerName: String { get }
    /// Instances (upstream's InstancesV2): whether a node's machine exists, is shut down, and
    /// what it is.
    var instances: (any CloudInstances)? { get }
    /// Load balancers for Services of type LoadBalancer.
    var loadBalancer: (any CloudLoadBalancer)? { get }
    /// Routes to each node's pod CIDR.
    var routes: (any CloudRoutes)? { get }
}

/// A node address as `status.addresses` holds it.
public struct NodeAddress: Sendable, Hashable {
    public var type: String
    public var address: String
    public init(type: String, address: String) {
        self.type = type
        self.address = address
    }
    public var json: JSONValue { ["type": .string(type), "address": .string(address)] }
}

/// upstream's InstanceMetadata: what the node controller writes into a new Node.
public struct InstanceMetadata: Sendable, Equatable {
    public var providerID: String
    public var instanceType: String
    public var addresses: [NodeAddress]
    public var zone: String
    public var region: String
    public var additionalLabels: [String: String]
    public init(providerID: String, instanceType: String = "", addresses: [NodeAddress] = [], zone: String = "", region: String = "",
                additionalLabels: [String: String] = [:]) {
        self.providerID = providerID
        self.instanceType = instanceType
        self.addresses = addresses
        self.zone = zone
        self.region = region
        self.additionalLabels = additionalLabels
    }
}

public protocol CloudInstances: Sendable {
    func instanceExists(_ node: JSONValue) async throws -> Bool
    func instanceShutdown(_ node: JSONValue) async throws -> Bool
    func instanceMetadata(_ node: JSONValue) async throws -> InstanceMetadata
}

public protocol CloudLoadBalancer: Sendable {
    /// The balancer's name for a Service (upstream's default: `a` + the UID without dashes, 32
    /// characters at most).
    func loadBalancerName(clusterName: String, service: JSONValue) -> String
    /// The balancer's status if it exists.
    func getLoadBalancer(clusterName: String, service: JSONValue) async throws -> JSONValue?
    /// Creates or updates the balancer for the Service's ports to these nodes; its status
    /// (`{"ingress": [{"ip": …, "ipMode": …}]}`).
    func ensureLoadBalancer(clusterName: String, service: JSONValue, nodes: [JSONValue]) async throws -> JSONValue
    /// The nodes changed, nothing else.
    func updateLoadBalancer(clusterName: String, service: JSONValue, nodes: [JSONValue]) async throws
    /// Gone, or made so; not an error when there was none.
    func ensureLoadBalancerDeleted(clusterName: String, service: JSONValue) async throws
}

extension CloudLoadBalancer {
    public func loadBalancerName(clusterName: String, service: JSONValue) -> String {
        String(("a" + service.uid.replacingOccurrences(of: "-", with: "")).prefix(32))
    }
}

/// A route to a node's pod CIDR.
public struct CloudRoute: Sendable, Hashable {
    public var name: String
    public var targetNode: String
    public var destinationCIDR: String
    /// A route whose node is gone (the cloud keeps it, dropping its packets).
    public var blackhole: Bool
    public init(name: String = "", targetNode: String, destinationCIDR: String, blackhole: Bool = false) {
        self.name = name
        self.targetNode = targetNode
        self.destinationCIDR = destinationCIDR
        self.blackhole = blackhole
    }
}

public protocol CloudRoutes: Sendable {
    func listRoutes(clusterName: String) async throws -> [CloudRoute]
    func createRoute(clusterName: String, nameHint: String, route: CloudRoute) async throws
    func deleteRoute(clusterName: String, route: CloudRoute) async throws
}

public struct CloudError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
