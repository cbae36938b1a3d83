import KubeAPI

/// Deletes conntrack entries that would keep sending UDP traffic to endpoints
/// that are gone (upstream's `CleanStaleEntries`).
public protocol ConntrackCleaner: Sendable {
    /// Returns how many entries were deleted (0 where the cleaner cannot tell).
    @discardableResult
    func deleteFlows(to serviceIP: IPAddress, port: Int, proto: L4Protocol, natDestination: String?) throws -> Int
    @discardableResult
    func deleteNodePortFlows(port: Int, proto: L4Protocol, natDestination: String?) throws -> Int
    /// One reconcile pass (a sync's stale-flow cleanup) took `duration`.
    func passed(_ duration: Duration)
}

extension ConntrackCleaner {
    public func passed(_ duration: Duration) {}
}

/// Records what would be deleted; for unit tests.
public final class FakeConntrack: ConntrackCleaner, @unchecked Sendable {
    public private(set) var deleted: [String] = []
    public init() {}
    public func deleteFlows(to serviceIP: IPAddress, port: Int, proto: L4Protocol, natDestination: String?) throws -> Int {
        deleted.append("\(proto.lower) \(serviceIP):\(port) -> \(natDestination ?? "*")")
        return 1
    }
    public func deleteNodePortFlows(port: Int, proto: L4Protocol, natDestination: String?) throws -> Int {
        deleted.append("\(proto.lower) nodeport \(port) -> \(natDestination ?? "*")")
        return 1
    }
}

/// Upstream's rules for which UDP flows go stale, from two snapshots.
public enum StaleFlows {
    public static func clean(previous: ProxySnapshot?, current: ProxySnapshot, changed: Set<NamespacedName>?,
                             cleaner: any ConntrackCleaner) -> [any Error] {
        guard let previous else { return [] }
        var errors: [any Error] = []
        let names: [ServicePortName]
        if let changed {
            names = Set(previous.ports(of: changed)).union(current.ports(of: changed)).sorted()
        } else {
            names = Set(previous.servicePorts.keys).union(current.servicePorts.keys).sorted()
        }
        for name in names where name.proto == .udp {
            let oldInfo = previous.servicePorts[name]
            let newInfo = current.servicePorts[name]
            let oldEps = oldInfo.map { Topology.categorize(previous.endpoints[name] ?? [], for: $0, node: previous.node).allReachable } ?? []
            let newEps = newInfo.map { Topology.categorize(current.endpoints[name] ?? [], for: $0, node: current.node).allReachable } ?? []
            let newSet = Set(newEps.map(\.ip))
            do {
                // Flows DNATed to an endpoint that is gone.
                if let info = oldInfo {
                    for ep in oldEps where !newSet.contains(ep.ip) {
                        for ip in [info.clusterIP] + info.externalIPs + info.loadBalancerVIPs {
                            try cleaner.deleteFlows(to: ip, port: info.port, proto: .udp, natDestination: ep.ip)
                        }
                        if info.nodePort != 0 {
                            try cleaner.deleteNodePortFlows(port: info.nodePort, proto: .udp, natDestination: ep.ip)
                        }
                    }
                }
                // A service that had no endpoints and now has some: flows cached as rejected.
                if let info = newInfo, oldEps.isEmpty, !newEps.isEmpty {
                    for ip in [info.clusterIP] + info.externalIPs + info.loadBalancerVIPs {
                        try cleaner.deleteFlows(to: ip, port: info.port, proto: .udp, natDestination: nil)
                    }
                    if info.nodePort != 0 {
                        try cleaner.deleteNodePortFlows(port: info.nodePort, proto: .udp, natDestination: nil)
                    }
                }
            } catch {
                errors.append(error)
            }
        }
        return errors
    }
}

/// What stale-flow cleanup needs from the previous sync, kept without holding the
/// previous snapshot (which would make the tracker copy the whole snapshot on every
/// change): the UDP service ports with their endpoints, per Service.
public struct UDPFlowHistory: Sendable {
    private var ports: [ServicePortName: ServicePortInfo] = [:]
    private var endpoints: [ServicePortName: [EndpointInfo]] = [:]
    private var byService: [NamespacedName: [ServicePortName]] = [:]
    private var node = NodeInfo(name: "")
    private var primed = false

    public init() {}

    /// Deletes the UDP flows that `current` makes stale (for the changed Services, or
    /// all when `changed` is nil) and remembers the new state of those Services.
    public mutating func update(current: ProxySnapshot, changed: Set<NamespacedName>?,
                                cleaner: (any ConntrackCleaner)?) -> [any Error] {
        var errors: [any Error] = []
        let services: [NamespacedName]
        if let changed {
            services = Array(changed)
        } else {
            var all = Set(byService.keys)
            for name in current.servicePorts.keys where name.proto == .udp { all.insert(name.service) }
            services = Array(all)
        }
        if primed, let cleaner {
            var previous = ProxySnapshot(node: node)
            for svc in services {
                for name in byService[svc] ?? [] {
                    previous.servicePorts[name] = ports[name]
                    previous.endpoints[name] = endpoints[name]
                }
                previous.portsByService[svc] = byService[svc]
            }
            let start = ContinuousClock.now
            errors = StaleFlows.clean(previous: previous, current: current, changed: Set(services), cleaner: cleaner)
            cleaner.passed(ContinuousClock.now - start)
        }
        for svc in services {
            for name in byService[svc] ?? [] {
                ports[name] = nil
                endpoints[name] = nil
            }
            byService[svc] = nil
        }
        func remember(_ name: ServicePortName) {
            guard name.proto == .udp, let info = current.servicePorts[name] else { return }
            ports[name] = info
            endpoints[name] = current.endpoints[name]
            byService[name.service, default: []].append(name)
        }
        for name in current.ports(of: Set(services)) { remember(name) }
        node = current.node
        primed = true
        return errors
    }
}
