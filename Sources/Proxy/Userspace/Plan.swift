import Foundation
import IPTablesKit
import KubeAPI
import ProxySeam

/// Settings of the userspace mode, named after the kube-proxy flags they come from.
@dynamicMemberLookup
public struct UserspaceOptions: Sendable {
    /// Where traffic from the node itself is sent (DNAT), as upstream's host portals
    /// do. Nil: the node's primary IP from the Node object; with none known,
    /// REDIRECT (to 127.0.0.1) instead.
    public var hostIP: IPAddress?
    /// `--proxy-port-range`: listeners take the first free ports of this range, in the
    /// order of their service ports; nil lets the kernel choose.
    public var portRange: ClosedRange<Int>?
    /// The settings every mode shares, read as this struct's own (`opts.masqueradeAll`).
    public var common = CommonOptions()
    public subscript<T>(dynamicMember key: WritableKeyPath<CommonOptions, T>) -> T {
        get { common[keyPath: key] }
        set { common[keyPath: key] = newValue }
    }

    public init(hostIP: IPAddress? = nil, nodePortIPs: [IPAddress]? = nil, localhostNodePorts: Bool = true,
                portRange: ClosedRange<Int>? = nil) {
        self.hostIP = hostIP
        common.nodePortIPs = nodePortIPs
        common.localhostNodePorts = localhostNodePorts
        self.portRange = portRange
    }

    /// Parses `--proxy-port-range` as upstream does: `begin-end`, `begin+offset` or
    /// a single port; empty, `0` and `0-0` mean "let the kernel choose".
    public static func parsePortRange(_ s: String) throws -> ClosedRange<Int>? {
        let t = s.trimmingCharacters(in: .whitespaces)
        if t.isEmpty || t == "0" || t == "0-0" { return nil }
        func port(_ p: Substring) throws -> Int {
            guard let v = Int(p), (1...65535).contains(v) else { throw RangeError(text: s) }
            return v
        }
        if let i = t.firstIndex(of: "-") {
            let a = try port(t[..<i]), b = try port(t[t.index(after: i)...])
            guard a <= b else { throw RangeError(text: s) }
            return a...b
        }
        if let i = t.firstIndex(of: "+") {
            let a = try port(t[..<i])
            guard let off = Int(t[t.index(after: i)...]), off >= 0, a + off <= 65535 else { throw RangeError(text: s) }
            return a...(a + off)
        }
        let p = try port(Substring(t))
        return p...p
    }

    public struct RangeError: Error, CustomStringConvertible {
        public var text: String
        public var description: String { "--proxy-port-range: \"\(text)\" is not a port range (begin-end, begin+offset or a port)" }
    }
}

/// A listener the proxy keeps for a service port: one for traffic to the
/// ClusterIP, and a second one for external traffic (NodePort, externalIPs,
/// LoadBalancer IPs) when the two traffic policies pick different endpoints.
public struct ListenerKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var name: ServicePortName
    public var external: Bool

    public static func < (a: ListenerKey, b: ListenerKey) -> Bool {
        a.name != b.name ? a.name < b.name : (!a.external && b.external)
    }

    public var description: String { external ? "\(name) (external)" : name.description }
}

/// Where traffic reaches a listener from: one destination the portal rules redirect.
public struct Portal: Hashable, Sendable {
    public enum Kind: String, Sendable { case clusterIP, externalIP, loadBalancer, nodePort }
    public var kind: Kind
    /// Nil for a NodePort on every local address.
    public var ip: IPAddress?
    public var port: Int
    /// For load balancer IPs with `loadBalancerSourceRanges`: only these sources are redirected.
    public var sourceRanges: [CIDR] = []
}

/// What one listener should look like.
public struct ListenerPlan: Sendable, Equatable {
    public var key: ListenerKey
    public var proto: L4Protocol
    public var endpoints: [SocketEndpoint]
    /// ClientIP affinity timeout in seconds, nil without affinity.
    public var affinityTimeout: TimeInterval?
    public var portals: [Portal]
}

/// The listeners a snapshot asks for, with endpoint selection done by the proxy core.
public enum UserspacePlan {
    /// The DNAT target of host portals: the configured host IP, else the node's first address of
    /// the options' family.
    public static func hostIP(_ snap: ProxySnapshot, options: UserspaceOptions) -> IPAddress? {
        options.hostIP ?? snap.node.ips.first { $0.family == options.family }
    }

    /// The listeners of every service port of `snap`, or of the service ports of `services` only,
    /// for the options' family (a dual-stack node runs a proxier, with listeners, per family).
    public static func listeners(for snap: ProxySnapshot, services: Set<NamespacedName>? = nil,
                                 options: UserspaceOptions) -> [ListenerKey: ListenerPlan] {
        var out: [ListenerKey: ListenerPlan] = [:]
        let family = options.family
        let names = services.map { snap.ports(of: $0) } ?? Array(snap.servicePorts.keys)
        for name in names {
            guard let info = snap.servicePorts[name], info.clusterIP.family == family, name.proto != .sctp else { continue }
            let cat = Topology.categorize(snap.endpoints[name] ?? [], for: info, node: snap.node)
            let d = PolicyDecision(cat, for: info)
            let internalEps = d.hasInternal ? (d.internalIsLocal ? cat.local : cat.cluster) : []
            let externalEps = d.hasExternal ? (d.externalIsLocal ? cat.local : cat.cluster) : []
            let affinity = info.sessionAffinityClientIP ? TimeInterval(info.stickyMaxAgeSeconds) : nil
            var internalPortals = [Portal(kind: .clusterIP, ip: info.clusterIP, port: info.port)]
            var externalPortals: [Portal] = []
            for ip in info.externalIPs where ip.family == family {
                externalPortals.append(Portal(kind: .externalIP, ip: ip, port: info.port))
            }
            for ip in info.loadBalancerVIPs where ip.family == family {
                externalPortals.append(Portal(kind: .loadBalancer, ip: ip, port: info.port,
                                              sourceRanges: info.loadBalancerSourceRanges.filter { $0.family == family }))
            }
            if info.nodePort != 0 {
                if let ips = options.nodePortIPs {
                    for ip in ips where ip.family == family { externalPortals.append(Portal(kind: .nodePort, ip: ip, port: info.nodePort)) }
                } else {
                    externalPortals.append(Portal(kind: .nodePort, ip: nil, port: info.nodePort))
                }
            }
            let ie = endpoints(internalEps, family), ee = endpoints(externalEps, family)
            if externalPortals.isEmpty || ie == ee {
                internalPortals += externalPortals
                externalPortals = []
            }
            let ik = ListenerKey(name: name, external: false)
            out[ik] = ListenerPlan(key: ik, proto: name.proto, endpoints: ie, affinityTimeout: affinity, portals: internalPortals)
            if !externalPortals.isEmpty {
                let ek = ListenerKey(name: name, external: true)
                out[ek] = ListenerPlan(key: ek, proto: name.proto, endpoints: ee, affinityTimeout: affinity, portals: externalPortals)
            }
        }
        return out
    }

    static func endpoints(_ eps: [EndpointInfo], _ family: IPFamily) -> [SocketEndpoint] {
        eps.compactMap { SocketEndpoint($0.ip, port: $0.port) }.filter { $0.address.isIPv6 == (family == .ipv6) }
    }
}

/// kube-proxy's userspace-mode chains (removed upstream in 1.26), which send
/// service traffic to the proxy's listeners.
public enum PortalChains {
    public static let containerPortals = "KUBE-PORTALS-CONTAINER"
    public static let hostPortals = "KUBE-PORTALS-HOST"
    public static let containerNodePorts = "KUBE-NODEPORT-CONTAINER"
    public static let hostNodePorts = "KUBE-NODEPORT-HOST"
    public static let nonLocalNodePorts = "KUBE-NODEPORT-NON-LOCAL"

    /// The jumps from the built-in chains, as upstream's `iptablesInit` adds them,
    /// written the way `iptables-save` prints them (table, chain, the rest).
    /// Portals are prepended (they must come before the NodePort rules); NodePorts appended.
    public static let jumps: [JumpRule] = [
        JumpRule(table: "nat", chain: "PREROUTING", rule: "-m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j \(containerPortals)", position: .prepend),
        JumpRule(table: "nat", chain: "OUTPUT", rule: "-m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j \(hostPortals)", position: .prepend),
        JumpRule(table: "nat", chain: "PREROUTING", rule: "-m addrtype --dst-type LOCAL -m comment --comment \"handle service NodePorts; NOTE: this must be the last rule in the chain\" -j \(containerNodePorts)", position: .append),
        JumpRule(table: "nat", chain: "OUTPUT", rule: "-m addrtype --dst-type LOCAL -m comment --comment \"handle service NodePorts; NOTE: this must be the last rule in the chain\" -j \(hostNodePorts)", position: .append),
        JumpRule(table: "filter", chain: "INPUT", rule: "-m comment --comment \"Ensure that non-local NodePort traffic can flow\" -j \(nonLocalNodePorts)", position: .prepend),
    ]

    /// The chains the portal rules go into, with their tables.
    public static let chains: [(table: String, chain: String)] = [
        ("filter", nonLocalNodePorts), ("nat", containerPortals), ("nat", hostPortals), ("nat", containerNodePorts), ("nat", hostNodePorts),
    ]

    /// The portal rules of one listener on `proxyPort`: `-A` lines of our chains, in
    /// `iptables-save`'s argument order so a save of the live chains compares line by line.
    public static func lines(_ plan: ListenerPlan, proxyPort: UInt16, hostIP: IPAddress?, options: UserspaceOptions) -> [String] {
        var out: [String] = []
        let p = plan.proto.lower
        let comment = quote(plan.key.name.description)
        let redirect = "-j REDIRECT --to-ports \(proxyPort)"
        let v6 = options.family == .ipv6
        let host = v6 ? "/128" : "/32"
        let dnat = hostIP.map { "-j DNAT --to-destination \(joinHostPort($0.description, Int(proxyPort)))" } ?? redirect
        for portal in plan.portals {
            let match = "-p \(p) -m comment --comment \(comment) -m \(p) --dport \(portal.port)"
            switch portal.kind {
            case .nodePort:
                let dst = portal.ip.map { "-d \($0)\(host) " } ?? ""
                out.append("-A \(containerNodePorts) \(dst)\(match) \(redirect)")
                if portal.ip == nil && !options.localhostNodePorts {
                    out.append("-A \(hostNodePorts) ! -d \(v6 ? "::1/128" : "127.0.0.0/8") \(match) \(dnat)")
                } else {
                    out.append("-A \(hostNodePorts) \(dst)\(match) \(dnat)")
                }
                out.append("-A \(nonLocalNodePorts) -p \(p) -m comment --comment \(comment) -m \(p) --dport \(proxyPort) -j ACCEPT")
            default:
                guard let ip = portal.ip else { continue }
                if portal.sourceRanges.isEmpty {
                    out.append("-A \(containerPortals) -d \(ip)\(host) \(match) \(redirect)")
                } else {
                    for r in portal.sourceRanges {
                        out.append("-A \(containerPortals) -s \(r.network) -d \(ip)\(host) \(match) \(redirect)")
                    }
                }
                out.append("-A \(hostPortals) -d \(ip)\(host) \(match) \(dnat)")
            }
        }
        return out
    }

    /// The chain an `-A CHAIN …` line goes to.
    static func chain(of line: String) -> Substring {
        line.dropFirst(3).prefix { $0 != " " }
    }

    /// The portal rules for listeners on `ports`, per chain, in service-port order.
    public static func rules(_ plans: [ListenerPlan], ports: [ListenerKey: UInt16], hostIP: IPAddress?,
                             options: UserspaceOptions) -> [String: [String]] {
        rules(plans.sorted { $0.key < $1.key }.compactMap { plan in
            ports[plan.key].map { lines(plan, proxyPort: $0, hostIP: hostIP, options: options) }
        })
    }

    /// Listeners' lines (each listener's, in the order given) gathered per chain.
    public static func rules(_ lines: [[String]]) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for (_, chain) in chains { out[chain] = [] }
        for l in lines {
            for line in l { out[String(chain(of: line)), default: []].append(line) }
        }
        return out
    }

    /// `iptables-restore` input that replaces the contents of our chains with `rules`.
    /// - Parameter jumps: the jump rules to add (those missing from the built-in chains).
    public static func restoreInput(_ rules: [String: [String]], jumps: [JumpRule]) -> String {
        var text = ["filter": "*filter\n", "nat": "*nat\n"]
        for (table, chain) in chains { text[table]! += ":\(chain) - [0:0]\n" }
        for (table, chain) in chains {
            for r in rules[chain] ?? [] { text[table]! += r + "\n" }
        }
        for j in jumps {
            text[j.table]! += j.addLine + "\n"
        }
        return text["filter"]! + "COMMIT\n" + text["nat"]! + "COMMIT\n"
    }

    /// `iptables-restore --noflush` input that replaces the portal lines `old` with `new` line by
    /// line (`-D` of the lines that went, `-A` of those that came; the order of portal rules does
    /// not matter, each matches its own address and port), or nil when they are the same. Given
    /// the lines of the changed listeners alone, what a change costs does not grow with the
    /// number of Services.
    public static func delta(from old: [String], to new: [String]) -> String? {
        let was = Set(old), now = Set(new)
        var text = ["filter": "", "nat": ""]
        for r in old where !now.contains(r) { text[table(of: r)]! += "-D" + r.dropFirst(2) + "\n" }
        for r in new where !was.contains(r) { text[table(of: r)]! += r + "\n" }
        var s = ""
        for table in ["filter", "nat"] where !text[table]!.isEmpty { s += "*\(table)\n" + text[table]! + "COMMIT\n" }
        return s.isEmpty ? nil : s
    }

    static func table(of line: String) -> String { chain(of: line) == nonLocalNodePorts ? "filter" : "nat" }

    /// `iptables-save` quotes a comment only when it has to.
    static func quote(_ s: String) -> String {
        s.contains(where: { $0 == " " || $0 == "\"" || $0 == "'" }) ? "\"\(s)\"" : s
    }
}
