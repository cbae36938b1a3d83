import CloudProvider
import Foundation
import HTTPJSON
import KubeAPI

/// `--cloud-provider netlab`: the provider of netlab's lab cloud, a client of the cloud's HTTP
/// API (served from the lab's router namespace; see `netlab/netlab status`). Its
/// `--cloud-config` is a JSON file: `{"endpoint": "http://10.250.0.254:8780"}`.
/// - instances: a Node's machine is the instance of its name; providerIDs are `netlab://LAB/NODE`;
/// - load balancers: an address of the cloud's pool (`spec.loadBalancerIP` or the annotation
///   `service.beta.kubernetes.io/netlab-load-balancer-ip` asks for one), each port forwarded to
///   the Service's NodePort on the nodes, health-checked at `healthCheckNodePort` for
///   `externalTrafficPolicy: Local`; `status.loadBalancer.ingress` gets the address with
///   `ipMode: VIP` (the balancer keeps the client's address and the Service's port);
/// - routes: a route on the router per node pod CIDR.
public struct NetlabCloud: CloudProvider, CloudInstances, CloudLoadBalancer, CloudRoutes {
    public static let requestedIPAnnotation = "service.beta.kubernetes.io/netlab-load-balancer-ip"
    public let providerName = "netlab"
    let client: HTTPJSONClient

    public init(endpoint: String) throws {
        client = try HTTPJSONClient(url: endpoint, peer: "the netlab cloud")
    }

    /// Reads `--cloud-config`.
    public init(configFile: String) throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: configFile)) } catch { throw CloudError("--cloud-config \(configFile): \(error.localizedDescription)") }
        guard let endpoint = (try? JSONValue.parse(data))?["endpoint"]?.string else {
            throw CloudError("--cloud-config \(configFile): want a JSON object with \"endpoint\" (the lab cloud's URL)")
        }
        try self.init(endpoint: endpoint)
    }

    public var instances: (any CloudInstances)? { self }
    public var loadBalancer: (any CloudLoadBalancer)? { self }
    public var routes: (any CloudRoutes)? { self }

    /// One call; nil for 404; the cloud's own message for any other failure.
    func call(_ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> JSONValue? {
        let r: ClientResponse
        do { r = try await client.request(method, path, body: body) } catch { throw CloudError("the netlab cloud: \(method) \(path): \(error)") }
        if r.status == 404 { return nil }
        guard (200..<300).contains(r.status) else {
            throw CloudError("the netlab cloud: \(method) \(path): \(r.status) \(r.body["error"]?.string ?? r.body.text())")
        }
        return r.body
    }

    static func escape(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._"))) ?? s }

    // MARK: CloudInstances

    public func instanceExists(_ node: JSONValue) async throws -> Bool {
        try await call("GET", "/v1/instances/\(Self.escape(node.name))") != nil
    }

    public func instanceShutdown(_ node: JSONValue) async throws -> Bool {
        try await call("GET", "/v1/instances/\(Self.escape(node.name))")?["state"]?.string == "stopped"
    }

    public func instanceMetadata(_ node: JSONValue) async throws -> InstanceMetadata {
        guard let i = try await call("GET", "/v1/instances/\(Self.escape(node.name))") else { throw CloudError("instance \(node.name) not found") }
        return InstanceMetadata(providerID: i["providerID"]?.string ?? "", instanceType: i["instanceType"]?.string ?? "",
                                addresses: (i["addresses"]?.array ?? []).compactMap { a in
                                    a["type"]?.string.flatMap { t in a["address"]?.string.map { NodeAddress(type: t, address: $0) } }
                                },
                                zone: i["zone"]?.string ?? "", region: i["region"]?.string ?? "")
    }

    // MARK: CloudLoadBalancer

    static func status(_ balancer: JSONValue) -> JSONValue {
        ["ingress": [["ip": balancer["ip"] ?? "", "ipMode": "VIP"]]]
    }

    public func getLoadBalancer(clusterName: String, service: JSONValue) async throws -> JSONValue? {
        try await call("GET", "/v1/loadbalancers/\(loadBalancerName(clusterName: clusterName, service: service))").map(Self.status)
    }

    /// What the cloud is asked for: the Service's ports with their NodePorts, the nodes, the
    /// health check of `externalTrafficPolicy: Local`, the address asked for.
    static func request(_ service: JSONValue, nodes: [JSONValue]) -> JSONValue {
        let spec = service["spec"] ?? [:]
        let requested = [spec["loadBalancerIP"]?.string, service[path: ["metadata", "annotations", requestedIPAnnotation]]?.string]
            .compactMap { $0 }.first { !$0.isEmpty } ?? ""
        let local = spec["externalTrafficPolicy"]?.string == "Local"
        return ["service": .string("\(service.namespace)/\(service.name)"), "requestedIP": .string(requested),
                "ports": .array((spec["ports"]?.array ?? []).map { p in
                    ["name": p["name"] ?? "", "protocol": p["protocol"] ?? "TCP", "port": p["port"] ?? 0, "nodePort": p["nodePort"] ?? 0]
                }),
                "targets": .array(nodes.map { .string($0.name) }),
                "healthCheckNodePort": local ? spec["healthCheckNodePort"] ?? 0 : 0]
    }

    public func ensureLoadBalancer(clusterName: String, service: JSONValue, nodes: [JSONValue]) async throws -> JSONValue {
        let name = loadBalancerName(clusterName: clusterName, service: service)
        guard let b = try await call("PUT", "/v1/loadbalancers/\(name)", Self.request(service, nodes: nodes)) else {
            throw CloudError("the netlab cloud does not serve load balancers")
        }
        return Self.status(b)
    }

    public func updateLoadBalancer(clusterName: String, service: JSONValue, nodes: [JSONValue]) async throws {
        _ = try await ensureLoadBalancer(clusterName: clusterName, service: service, nodes: nodes)
    }

    public func ensureLoadBalancerDeleted(clusterName: String, service: JSONValue) async throws {
        _ = try await call("DELETE", "/v1/loadbalancers/\(loadBalancerName(clusterName: clusterName, service: service))")
    }

    // MARK: CloudRoutes

    public func listRoutes(clusterName: String) async throws -> [CloudRoute] {
        let items = try await call("GET", "/v1/routes")?["items"]?.array ?? []
        return items.filter { ($0["name"]?.string ?? "").hasPrefix(clusterName + "-") }.map { r in
            CloudRoute(name: r["name"]?.string ?? "", targetNode: r["targetInstance"]?.string ?? "",
                       destinationCIDR: r["destinationCIDR"]?.string ?? "", blackhole: r["blackhole"]?.bool ?? false)
        }
    }

    public func createRoute(clusterName: String, nameHint: String, route: CloudRoute) async throws {
        _ = try await call("PUT", "/v1/routes/\(Self.escape("\(clusterName)-\(nameHint)"))",
                           ["targetInstance": .string(route.targetNode), "destinationCIDR": .string(route.destinationCIDR)])
    }

    public func deleteRoute(clusterName: String, route: CloudRoute) async throws {
        _ = try await call("DELETE", "/v1/routes/\(Self.escape(route.name))")
    }
}
