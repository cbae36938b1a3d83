/// The endpoints each traffic policy uses, chosen once for all modes.
public struct CategorizedEndpoints: Sendable {
    /// Endpoints for Cluster traffic policy.
    public var cluster: [EndpointInfo] = []
    /// Endpoints for Local traffic policy.
    public var local: [EndpointInfo] = []
    /// The union, sorted: every endpoint some rule may send traffic to.
    public var allReachable: [EndpointInfo] = []
    /// Whether the service has any usable endpoint anywhere.
    public var hasAny = false
}

/// Upstream's `CategorizeEndpoints`: ready endpoints, serving+terminating as a
/// fallback, Local policies and topology (hints and trafficDistribution).
public enum Topology {
    public static func categorize(_ endpoints: [EndpointInfo], for svc: ServicePortInfo, node: NodeInfo) -> CategorizedEndpoints {
        var out = CategorizedEndpoints()
        if svc.usesClusterEndpoints {
            let mode = topologyMode(endpoints, node: node)
            out.cluster = endpoints.filter { $0.ready && availableForTopology($0, mode: mode, node: node) }
            if out.cluster.isEmpty {
                out.cluster = endpoints.filter { $0.serving && $0.terminating }
            }
            if !out.cluster.isEmpty { out.hasAny = true }
        }
        if !svc.usesLocalEndpoints {
            out.allReachable = out.cluster
            return out
        }
        var localReady = false
        var localServingTerminating = false
        for ep in endpoints {
            if ep.ready {
                out.hasAny = true
                if ep.isLocal { localReady = true }
            } else if ep.serving && ep.terminating {
                out.hasAny = true
                if ep.isLocal { localServingTerminating = true }
            }
        }
        if localReady {
            out.local = endpoints.filter { $0.isLocal && $0.ready }
        } else if localServingTerminating {
            out.local = endpoints.filter { $0.isLocal && $0.serving && $0.terminating }
        }
        if !svc.usesClusterEndpoints {
            out.allReachable = out.local
            return out
        }
        var merged: [String: EndpointInfo] = [:]
        for ep in out.cluster { merged[ep.endpoint] = ep }
        for ep in out.local { merged[ep.endpoint] = ep }
        out.allReachable = merged.values.sorted()
        return out
    }

    enum Mode { case none, sameNode, sameZone }

    static func topologyMode(_ endpoints: [EndpointInfo], node: NodeInfo) -> Mode {
        var hasForNode = false, allNodeHints = true
        var hasForZone = false, allZoneHints = true
        var anyReady = false
        let zone = node.zone
        for ep in endpoints where ep.ready {
            anyReady = true
            if ep.nodeHints.isEmpty { allNodeHints = false } else if ep.nodeHints.contains(node.name) { hasForNode = true }
            if ep.zoneHints.isEmpty { allZoneHints = false } else if ep.zoneHints.contains(zone) { hasForZone = true }
        }
        guard anyReady else { return .none }
        if allNodeHints && hasForNode { return .sameNode }
        if allZoneHints && hasForZone { return .sameZone }
        return .none
    }

    static func availableForTopology(_ ep: EndpointInfo, mode: Mode, node: NodeInfo) -> Bool {
        switch mode {
        case .none: return true
        case .sameNode: return ep.nodeHints.contains(node.name)
        case .sameZone: return ep.zoneHints.contains(node.zone)
        }
    }
}

/// Which policy chains a service port needs and where its internal and external
/// traffic goes, as upstream's iptables and nftables proxiers both decide it.
public struct PolicyDecision: Sendable {
    /// The service has a usable endpoint somewhere.
    public let hasEndpoints: Bool
    /// The Cluster-policy chain exists (it has endpoints and some traffic uses it).
    public let usesClusterChain: Bool
    /// The Local-policy chain exists.
    public let usesLocalChain: Bool
    /// Internal (ClusterIP) traffic goes to the Local-policy chain.
    public let internalIsLocal: Bool
    /// Internal traffic has somewhere to go.
    public let hasInternal: Bool
    /// External traffic goes to the Local-policy chain.
    public let externalIsLocal: Bool
    /// External traffic has somewhere to go.
    public let hasExternal: Bool

    public init(_ cat: CategorizedEndpoints, for info: ServicePortInfo) {
        hasEndpoints = cat.hasAny
        usesClusterChain = !cat.cluster.isEmpty && info.usesClusterEndpoints
        usesLocalChain = !cat.local.isEmpty && info.usesLocalEndpoints
        internalIsLocal = info.internalPolicyLocal
        hasInternal = cat.hasAny && !(info.internalPolicyLocal && cat.local.isEmpty)
        externalIsLocal = info.externalPolicyLocal
        hasExternal = cat.hasAny && !(info.externalPolicyLocal && cat.local.isEmpty)
    }
}
