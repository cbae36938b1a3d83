/// core/v1 Service, with the fields a service proxy reads.
public struct Service: Codable, Hashable, Sendable {
    public var apiVersion: String? = "v1"
    public var kind: String? = "Service"
    public var metadata: ObjectMeta
    public var spec: ServiceSpec
    public var status: ServiceStatus?

    public init(metadata: ObjectMeta, spec: ServiceSpec, status: ServiceStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public var namespacedName: NamespacedName {
        NamespacedName(namespace: metadata.namespace ?? "default", name: metadata.name ?? "")
    }
}

public enum ServiceType: String, Codable, Hashable, Sendable {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    case loadBalancer = "LoadBalancer"
    case externalName = "ExternalName"
}

public struct ServiceSpec: Codable, Hashable, Sendable {
    public var type: String?
    public var clusterIP: String?
    public var clusterIPs: [String]?
    public var ipFamilies: [String]?
    public var ipFamilyPolicy: String?
    public var ports: [ServicePort]?
    public var selector: [String: String]?
    public var externalIPs: [String]?
    public var externalName: String?
    public var loadBalancerIP: String?
    public var loadBalancerSourceRanges: [String]?
    public var loadBalancerClass: String?
    public var allocateLoadBalancerNodePorts: Bool?
    public var sessionAffinity: String?
    public var sessionAffinityConfig: SessionAffinityConfig?
    public var externalTrafficPolicy: String?
    public var internalTrafficPolicy: String?
    public var healthCheckNodePort: Int?
    public var publishNotReadyAddresses: Bool?
    public var trafficDistribution: String?

    public init(type: String? = nil, clusterIP: String? = nil, ports: [ServicePort]? = nil,
                selector: [String: String]? = nil) {
        self.type = type
        self.clusterIP = clusterIP
        self.ports = ports
        self.selector = selector
    }

    /// The service type with the API's default (`ClusterIP`) applied.
    public var serviceType: ServiceType { ServiceType(rawValue: type ?? "ClusterIP") ?? .clusterIP }
}

public struct ServicePort: Codable, Hashable, Sendable {
    public var name: String?
    public var `protocol`: String?
    public var appProtocol: String?
    public var port: Int
    public var targetPort: IntOrString?
    public var nodePort: Int?

    public init(name: String? = nil, protocol: String? = nil, port: Int, targetPort: IntOrString? = nil,
                nodePort: Int? = nil) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort
        self.nodePort = nodePort
    }
}

public struct SessionAffinityConfig: Codable, Hashable, Sendable {
    public var clientIP: ClientIPConfig?
    public init(clientIP: ClientIPConfig? = nil) { self.clientIP = clientIP }
}

public struct ClientIPConfig: Codable, Hashable, Sendable {
    public var timeoutSeconds: Int?
    public init(timeoutSeconds: Int? = nil) { self.timeoutSeconds = timeoutSeconds }
}

public struct ServiceStatus: Codable, Hashable, Sendable {
    public var loadBalancer: LoadBalancerStatus?
    public var conditions: [Condition]?
    public init(loadBalancer: LoadBalancerStatus? = nil) { self.loadBalancer = loadBalancer }
}

public struct LoadBalancerStatus: Codable, Hashable, Sendable {
    public var ingress: [LoadBalancerIngress]?
    public init(ingress: [LoadBalancerIngress]? = nil) { self.ingress = ingress }
}

public struct LoadBalancerIngress: Codable, Hashable, Sendable {
    public var ip: String?
    public var hostname: String?
    public var ipMode: String?
    public init(ip: String? = nil, hostname: String? = nil, ipMode: String? = nil) {
        self.ip = ip
        self.hostname = hostname
        self.ipMode = ipMode
    }
}
