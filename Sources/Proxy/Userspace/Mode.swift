import IPTablesKit
import KubeAPI
import ProxySeam

extension ProxyMode {
    /// The userspace mode: kube-proxy's original, removed upstream in v1.26.
    public static let userspace = ProxyMode(
        name: "userspace",
        summary: "a listener per service port that splices TCP and relays UDP to endpoints, with iptables portal rules",
        families: [.ipv4, .ipv6],
        backend: { config, env in
            // The IPv6 proxier of a dual-stack node: its own listeners on ::, its portals in ip6tables.
            UserspaceProxier(dataPlane: try DataPlane(options: try DataPlaneOptions.resolve(config)), ipt: SystemIPTables(ipv6: config.ipFamily == .ipv6),
                                    options: try UserspaceOptions.resolve(config, local: env.localAddresses), conntrack: env.conntrack,
                                    registry: env.registry, logger: env.logger)
        },
        renderer: { config, _ in
            _ = try DataPlaneOptions.resolve(config)   // checked here too: render takes the same flags
            return UserspaceRenderer(options: try UserspaceOptions.resolve(config, local: nil))
        },
        header: { _, command in
            RenderHeader(text: RenderHeader.comments([
                "\(command): not for loading. The portal rules send traffic to listeners that only",
                "a running `switchyard proxy --proxy-mode userspace` has; it writes them itself.",
            ]))
        },
        removeLeftovers: { _ in
            let v4 = try UserspaceProxier.removeRules(SystemIPTables())
            let v6 = ProxyMode.kernelHasIPv6 ? try UserspaceProxier.removeRules(SystemIPTables(ipv6: true)) : false
            return v4 || v6 ? "the userspace mode's portal chains" : nil
        },
        explain: { ruleset, query in try UserspaceProxier.explain(ruleset, query) })
}

extension UserspaceProxier {
    /// A packet through the userspace mode (`switchyard explain`).
    static func explain(_ ruleset: String, _ q: ExplainQuery) throws -> PacketPath {
        PacketPath(query: q, mode: "userspace", outcomes: try UserspaceWalk(ruleset).walk(q))
    }
}

/// A packet through the userspace mode: the portal rules (iptables) to a listener, then the
/// listener's round robin over its endpoints, each dialled from the node (so the pod sees the
/// node's address). The listeners are read from a render's comments; the kernel does not hold
/// them (`--live` is not offered). Read once, walked for each packet.
public struct UserspaceWalk: Sendable {
    struct Listener: Sendable {
        var name: String, proto: String, endpoints: [String]
    }

    /// By the port the portal rules redirect to.
    var listeners: [Int: Listener] = [:]
    var rules: IPTablesWalk

    public init(_ ruleset: String) throws {
        // Lines split as bytes: a 10,000-Service render has as many listener lines.
        for bytes in ruleset.utf8.split(separator: 10) where bytes.starts(with: "#   ".utf8) {
            // "#   NAME PROTO :PORT -> EP EP ... [ClientIP affinity Ns]" or "-> (no endpoints: …)"
            let f = bytes.dropFirst(4).split(separator: 32).map { Substring($0) }
            guard let c = f.firstIndex(where: { $0.hasPrefix(":") }), c >= 1, c + 1 < f.count, f[c + 1] == "->",
                  let port = Int(f[c].dropFirst()) else { continue }
            let rest = f[(c + 2)...]
            // (An IPv6 endpoint is bracketed too: `[fd00::2]:8080`; the affinity note is `[ClientIP …]`.)
            let endpoints = rest.first == "(no" ? [] : rest.prefix { $0 != "[ClientIP" }.map(String.init)
            listeners[port] = Listener(name: f[..<(c - 1)].joined(separator: " "), proto: f[c - 1].lowercased(), endpoints: endpoints)
        }
        guard !listeners.isEmpty else {
            throw ProxyConfigError("the userspace mode's listeners are read from its render (-f, or --rules with what render wrote); this ruleset names none")
        }
        do { rules = try IPTablesWalk(ruleset) } catch { throw ProxyConfigError("the ruleset: \(error)") }
    }

    /// Every way the packet can go.
    public func walk(_ q: ExplainQuery) throws -> [PacketPath.Outcome] {
        let walked: [IPTablesWalk.Outcome]
        do {
            walked = try rules.walk(source: q.source, sourcePort: q.sourcePort, destination: q.destination, port: q.port, proto: q.proto,
                                    fromNode: q.fromNode, local: q.localAddresses)
        } catch { throw ProxyConfigError("\(error)") }
        var outcomes: [PacketPath.Outcome] = []
        for o in walked {
            let p = o.packet
            let hops = PacketPath.Hop.list(p.hops)
            guard o.end == .accept || o.end == .fallThrough, p.states.contains("DNAT"), let l = listeners[p.port], l.proto == q.proto else {
                outcomes.append(PacketPath.Outcome(probability: p.probability, hops: hops, verdict: o.end.verdict, endpoint: o.translatedTo,
                                                   masqueraded: p.masqueraded))
                continue
            }
            let listener = PacketPath.Hop(table: "userspace", chain: "listener :\(p.port)",
                                          rule: l.endpoints.isEmpty ? "\(l.name): no endpoints, the connection is reset"
                                                                    : "\(l.name): round robin over \(l.endpoints.count) endpoint(s), dialled from the node")
            if l.endpoints.isEmpty {
                outcomes.append(PacketPath.Outcome(probability: p.probability, hops: hops + [listener], verdict: "rejected", endpoint: nil, masqueraded: false))
            }
            for e in l.endpoints {
                outcomes.append(PacketPath.Outcome(probability: p.probability / Double(l.endpoints.count), hops: hops + [listener], verdict: "accepted",
                                                   endpoint: e, masqueraded: true))
            }
        }
        return outcomes
    }
}

extension UserspaceOptions {
    /// The options for `config` (its `ipFamily`'s proxier); `local`: the host's addresses for a
    /// running proxy, nil for `render`. Live, with no node IP configured, host portals DNAT to the
    /// first address of the family that is not loopback (nor, for IPv6, link-local), as upstream
    /// did for IPv4.
    static func resolve(_ config: ProxyConfig, local: [IPAddress]?) throws -> UserspaceOptions {
        var o = UserspaceOptions()
        // The family, its node-port addresses; localhost NodePorts on IPv4 only.
        o.common = CommonOptions(config, nodePortIPs: config.nodePortIPs(local: local))
        do {
            o.portRange = try config.userspace.portRange.flatMap { try UserspaceOptions.parsePortRange($0) }
        } catch let e as RangeError {
            throw ProxyConfigError(e.description)
        }
        o.hostIP = config.nodeIPs.first { $0.family == config.ipFamily }
        if let local, o.hostIP == nil {
            o.hostIP = local.first { $0.family == config.ipFamily && !$0.isLoopback && !$0.description.lowercased().hasPrefix("fe80:") }
        }
        return o
    }
}

extension DataPlaneOptions {
    static func resolve(_ config: ProxyConfig) throws -> DataPlaneOptions {
        var d = DataPlaneOptions()
        d.listenAddress = config.ipFamily == .ipv6 ? .anyIPv6 : .anyIPv4
        if let s = config.userspace.udpIdleTimeout {
            guard let v = KubeProxyConfiguration.parseDuration(s), v > 0 else { throw ProxyConfigError("--udp-timeout: bad duration \(s)") }
            d.udpTimeout = .milliseconds(Int(v * 1000))
        }
        return d
    }
}
