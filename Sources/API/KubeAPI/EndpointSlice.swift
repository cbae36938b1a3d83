/// discovery.k8s.io/v1 EndpointSlice.
public struct EndpointSlice: Codable, Hashable, Sendable {
    public var apiVersion: String? = "discovery.k8s.io/v1"
    public var kind: String? = "EndpointSlice"
    public var metadata: ObjectMeta
    public var addressType: String
    public var endpoints: [Endpoint]?
    public var ports: [EndpointPort]?

    public init(metadata: ObjectMeta, addressType: String = "IPv4", endpoints: [Endpoint]? = nil,
                ports: [EndpointPort]? = nil) {
        self.metadata = metadata
        self.addressType = addressType
        self.endpoints = endpoints
        self.ports = ports
    }

    /// The label that ties a slice to its Service.
    public static let serviceNameLabel = "kubernetes.io/service-name"
    public static let managedByLabel = "endpointslice.kubernetes.io/managed-by"

    public var serviceName: String? { metadata.labels?[Self.serviceNameLabel] }

    public var namespacedName: NamespacedName {
        NamespacedName(namespace: metadata.namespace ?? "default", name: metadata.name ?? "")
    }
}

public struct Endpoint: Codable, Hashable, Sendable {
    public var addresses: [String]
    public var conditions: EndpointConditions?
    public var hostname: String?
    /// Kept behind a reference: nothing here reads it, and inline it made every endpoint
    /// 56 bytes larger (100,000 endpoints at 10,000 slices).
    public var targetRef: ObjectReference? {
        get { _targetRef?.value }
        set { _targetRef = newValue.map(Boxed.init) }
    }
    private var _targetRef: Boxed<ObjectReference>?
    public var nodeName: String?
    public var zone: String?
    public var hints: EndpointHints?

    enum CodingKeys: String, CodingKey {
        case addresses, conditions, hostname, _targetRef = "targetRef", nodeName, zone, hints
    }

    public init(addresses: [String], conditions: EndpointConditions? = nil, nodeName: String? = nil,
                zone: String? = nil, hints: EndpointHints? = nil, targetRef: ObjectReference? = nil) {
        self.addresses = addresses
        self.conditions = conditions
        self.nodeName = nodeName
        self.zone = zone
        self.hints = hints
        self.targetRef = targetRef
    }
}

public struct EndpointConditions: Codable, Hashable, Sendable {
    public var ready: Bool?
    public var serving: Bool?
    public var terminating: Bool?
    public init(ready: Bool? = nil, serving: Bool? = nil, terminating: Bool? = nil) {
        self.ready = ready
        self.serving = serving
        self.terminating = terminating
    }
}

public struct EndpointHints: Codable, Hashable, Sendable {
    public var forZones: [ForZone]?
    public var forNodes: [ForNode]?
    public init(forZones: [ForZone]? = nil, forNodes: [ForNode]? = nil) {
        self.forZones = forZones
        self.forNodes = forNodes
    }
}

public struct ForZone: Codable, Hashable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

public struct ForNode: Codable, Hashable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

public struct EndpointPort: Codable, Hashable, Sendable {
    public var name: String?
    public var `protocol`: String?
    public var port: Int?
    public var appProtocol: String?
    public init(name: String? = nil, protocol: String? = nil, port: Int? = nil) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
    }
}

/// core/v1 Endpoints (the legacy object the EndpointSlice mirror reads and writes).
public struct Endpoints: Codable, Hashable, Sendable {
    public var apiVersion: String? = "v1"
    public var kind: String? = "Endpoints"
    public var metadata: ObjectMeta
    public var subsets: [EndpointSubset]?
    public init(metadata: ObjectMeta, subsets: [EndpointSubset]? = nil) {
        self.metadata = metadata
        self.subsets = subsets
    }
}

public struct EndpointSubset: Codable, Hashable, Sendable {
    public var addresses: [EndpointAddress]?
    public var notReadyAddresses: [EndpointAddress]?
    public var ports: [CoreEndpointPort]?
}

public struct EndpointAddress: Codable, Hashable, Sendable {
    public var ip: String
    public var hostname: String?
    public var nodeName: String?
    public var targetRef: ObjectReference?
}

public struct CoreEndpointPort: Codable, Hashable, Sendable {
    public var name: String?
    public var port: Int
    public var `protocol`: String?
    public var appProtocol: String?
}

/// A value behind one reference, for a field that is large and rarely set: an optional
/// box costs a pointer where the value itself would be stored inline in every element.
public final class Boxed<Value: Codable & Hashable & Sendable>: Codable, Hashable, Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
    public required init(from decoder: any Decoder) throws { value = try Value(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
    public static func == (a: Boxed, b: Boxed) -> Bool { a.value == b.value }
    public func hash(into hasher: inout Hasher) { hasher.combine(value) }
}
