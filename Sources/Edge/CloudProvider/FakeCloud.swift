import KubeAPI
import Synchronization

/// A cloud in memory, as k8s.io/cloud-provider's fake: machines by node name, balancers by
/// name with the nodes they send to, routes; every call recorded; failures on demand. For the
/// controllers' unit tests, beside the lab cloud.
public final class FakeCloud: CloudProvider, CloudInstances, CloudLoadBalancer, CloudRoutes, Sendable {
    public struct Machine: Sendable, Equatable {
        public var metadata: InstanceMetadata
        public var shutdown = false
        public init(metadata: InstanceMetadata, shutdown: Bool = false) {
            self.metadata = metadata
            self.shutdown = shutdown
        }
    }

    public struct Balancer: Sendable, Equatable {
        public var service: String
        public var ip: String
        public var ports: [Int64]
        public var nodes: [String]
    }

    struct State {
        var machines: [String: Machine] = [:]
        var balancers: [String: Balancer] = [:]
        var routes: [CloudRoute] = []
        var calls: [String] = []
        var failing: Set<String> = []
        var nextIP = 1
    }
    let state = Mutex(State())
    public let providerName = "fake"
    /// The pool balancers take their addresses from (`POOL.N`).
    let pool: String

    public init(pool: String = "192.0.2") { self.pool = pool }

    public var instances: (any CloudInstances)? { self }
    public var loadBalancer: (any CloudLoadBalancer)? { self }
    public var routes: (any CloudRoutes)? { self }

    // MARK: what tests set and read

    public func setMachine(_ node: String, _ m: Machine?) { state.withLock { $0.machines[node] = m } }
    /// Calls of this name (`EnsureLoadBalancer`, …) throw until `fail(_:false)`.
    public func fail(_ call: String, _ on: Bool = true) { state.withLock { if on { $0.failing.insert(call) } else { $0.failing.remove(call) } } }
    public var calls: [String] { state.withLock { $0.calls } }
    public var balancers: [String: Balancer] { state.withLock { $0.balancers } }
    public var currentRoutes: [CloudRoute] { state.withLock { $0.routes } }
    public func addRoute(_ r: CloudRoute) { state.withLock { $0.routes.append(r) } }

    func call(_ name: String, _ detail: String) throws {
        let failing = state.withLock { s -> Bool in
            s.calls.append("\(name) \(detail)")
            return s.failing.contains(name)
        }
        if failing { throw CloudError("\(name): the fake cloud was told to fail") }
    }

    // MARK: CloudInstances

    public func instanceExists(_ node: JSONValue) async throws -> Bool {
        try call("InstanceExists", node.name)
        return state.withLock { $0.machines[node.name] != nil }
    }

    public func instanceShutdown(_ node: JSONValue) async throws -> Bool {
        try call("InstanceShutdown", node.name)
        return state.withLock { $0.machines[node.name]?.shutdown ?? false }
    }

    public func instanceMetadata(_ node: JSONValue) async throws -> InstanceMetadata {
        try call("InstanceMetadata", node.name)
        guard let m = state.withLock({ $0.machines[node.name] }) else { throw CloudError("instance \(node.name) not found") }
        return m.metadata
    }

    // MARK: CloudLoadBalancer

    public func getLoadBalancer(clusterName: String, service: JSONValue) async throws -> JSONValue? {
        let name = loadBalancerName(clusterName: clusterName, service: service)
        try call("GetLoadBalancer", name)
        return state.withLock { $0.balancers[name] }.map { ["ingress": [["ip": .string($0.ip), "ipMode": "VIP"]]] }
    }

    public func ensureLoadBalancer(clusterName: String, service: JSONValue, nodes: [JSONValue]) async throws -> JSONValue {
        let name = loadBalancerName(clusterName: clusterName, service: service)
        try call("EnsureLoadBalancer", "\(service.namespace)/\(service.name) \(nodes.map(\.name).sorted())")
        let ports = (service[path: ["spec", "ports"]]?.array ?? []).compactMap { $0["port"]?.int }
        let ip = state.withLock { s -> String in
            let ip = s.balancers[name]?.ip ?? service[path: ["spec", "loadBalancerIP"]]?.string ?? {
                defer { s.nextIP += 1 }
                return "\(pool).\(s.nextIP)"
            }()
            s.balancers[name] = Balancer(service: "\(service.namespace)/\(service.name)", ip: ip, ports: ports, nodes: nodes.map(\.name).sorted())
            return ip
        }
        return ["ingress": [["ip": .string(ip), "ipMode": "VIP"]]]
    }

    public func updateLoadBalancer(clusterName: String, service: JSONValue, nodes: [JSONValue]) async throws {
        let name = loadBalancerName(clusterName: clusterName, service: service)
        try call("UpdateLoadBalancer", "\(service.namespace)/\(service.name) \(nodes.map(\.name).sorted())")
        try state.withLock { s in
            guard s.balancers[name] != nil else { throw CloudError("load balancer \(name) not found") }
            s.balancers[name]?.nodes = nodes.map(\.name).sorted()
        }
    }

    public func ensureLoadBalancerDeleted(clusterName: String, service: JSONValue) async throws {
        let name = loadBalancerName(clusterName: clusterName, service: service)
        try call("EnsureLoadBalancerDeleted", "\(service.namespace)/\(service.name)")
        _ = state.withLock { $0.balancers.removeValue(forKey: name) }
    }

    // MARK: CloudRoutes

    public func listRoutes(clusterName: String) async throws -> [CloudRoute] {
        try call("ListRoutes", clusterName)
        return state.withLock { s in
            s.routes.map { r in
                var r = r
                r.blackhole = s.machines[r.targetNode] == nil
                return r
            }
        }
    }

    public func createRoute(clusterName: String, nameHint: String, route: CloudRoute) async throws {
        try call("CreateRoute", "\(route.targetNode) \(route.destinationCIDR)")
        state.withLock { s in
            var r = route
            r.name = "\(clusterName)-\(nameHint)"
            s.routes.removeAll { $0.destinationCIDR == r.destinationCIDR }
            s.routes.append(r)
        }
    }

    public func deleteRoute(clusterName: String, route: CloudRoute) async throws {
        try call("DeleteRoute", "\(route.targetNode) \(route.destinationCIDR)")
        state.withLock { s in s.routes.removeAll { $0.destinationCIDR == route.destinationCIDR && $0.targetNode == route.targetNode } }
    }
}
