import Foundation
import KubeAPI
import ProxySeam

/// Turns a set of manifests into what the change tracker takes, filling in what
/// the API server would have allocated (ClusterIPs, NodePorts, health check node
/// ports) for services that come without them, so that a user can point the proxy
/// at an application's manifests as written.
///
/// Allocation is deterministic and stable: each service hashes to a start point
/// in the range and probes forward, so adding a service does not move the others.
public enum ManifestInput {
    public static let defaultServiceCIDR = CIDR("10.96.0.0/12")!
    public static let nodePortRange = 30000...32767

    public static func prepare(_ set: ManifestSet, serviceCIDR: CIDR = defaultServiceCIDR) -> [Service] {
        var usedIPs = Set<String>()
        var usedPorts = Set<Int>()
        for s in set.services {
            if let ip = s.spec.clusterIP { usedIPs.insert(ip) }
            for p in s.spec.ports ?? [] { if let n = p.nodePort { usedPorts.insert(n) } }
            if let h = s.spec.healthCheckNodePort { usedPorts.insert(h) }
        }
        let base = serviceCIDR.network.address.ipv4Value ?? 0
        let size = UInt32(1) << UInt32(32 - min(max(serviceCIDR.prefixLength, 8), 30))
        var out: [Service] = []
        out.reserveCapacity(set.services.count)
        for var s in set.services.sorted(by: { $0.namespacedName < $1.namespacedName }) {
            let key = s.namespacedName.description
            let type = s.spec.serviceType
            if type != .externalName && (s.spec.clusterIP ?? "").isEmpty && (s.spec.clusterIPs ?? []).isEmpty {
                // Skip the network address and the first host (the API server's `kubernetes` service).
                var off = UInt32(fnv(key) % UInt64(size - 3)) + 2
                var ip = IPAddress(ipv4: base + off).description
                while usedIPs.contains(ip) {
                    off = off + 1 >= size - 1 ? 2 : off + 1
                    ip = IPAddress(ipv4: base + off).description
                }
                usedIPs.insert(ip)
                s.spec.clusterIP = ip
                s.spec.clusterIPs = [ip]
            }
            if type == .nodePort || type == .loadBalancer {
                for i in (s.spec.ports ?? []).indices where (s.spec.ports![i].nodePort ?? 0) == 0 {
                    s.spec.ports![i].nodePort = allocatePort("\(key):\(s.spec.ports![i].port)", &usedPorts)
                }
                if type == .loadBalancer && s.spec.externalTrafficPolicy == "Local" && (s.spec.healthCheckNodePort ?? 0) == 0 {
                    s.spec.healthCheckNodePort = allocatePort("\(key):healthcheck", &usedPorts)
                }
            }
            out.append(s)
        }
        return out
    }

    static func allocatePort(_ key: String, _ used: inout Set<Int>) -> Int {
        let span = nodePortRange.count
        var p = nodePortRange.lowerBound + Int(fnv(key) % UInt64(span))
        while used.contains(p) { p = p == nodePortRange.upperBound ? nodePortRange.lowerBound : p + 1 }
        used.insert(p)
        return p
    }

    static func fnv(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return h
    }

    /// The node as the manifests describe it (labels for topology), or a bare one.
    public static func node(named name: String, in set: ManifestSet, ips: [IPAddress] = []) -> NodeInfo {
        let n = set.nodes.first { $0.metadata.name == name }
        var nodeIPs = ips
        if nodeIPs.isEmpty {
            nodeIPs = (n?.status?.addresses ?? []).filter { $0.type == "InternalIP" }.compactMap { IPAddress($0.address) }
        }
        return NodeInfo(name: name, labels: n?.metadata.labels ?? [:], ips: nodeIPs)
    }
}
