import IPTablesKit
import KubeAPI
import ProxySeam

extension ProxyMode {
    /// The userspace mode: kube-proxy's original, removed upstream in v1.26.
    public static let userspace = ProxyMode(
        name: "userspace",
        summary: "a listener per service port that splices TCP and relays UDP to endpoints, with iptables portal rules",
        backend: { config, env in
            UserspaceProxier(dataPlane: try DataPlane(options: try DataPlaneOptions.resolve(config)), ipt: SystemIPTables(),
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
            try UserspaceProxier.removeRules(SystemIPTables()) ? "the userspace mode's portal chains" : nil
        })
}

extension UserspaceOptions {
    /// The options for `config`; `local`: the host's addresses for a running proxy, nil for
    /// `render`. Live, with no node IP configured, host portals DNAT to the first non-loopback
    /// IPv4 address (upstream did the same).
    static func resolve(_ config: ProxyConfig, local: [IPAddress]?) throws -> UserspaceOptions {
        var o = UserspaceOptions(localhostNodePorts: config.effectiveLocalhostNodePorts)
        do {
            o.portRange = try config.userspace.portRange.flatMap { try UserspaceOptions.parsePortRange($0) }
        } catch let e as RangeError {
            throw ProxyConfigError(e.description)
        }
        o.nodePortIPs = config.nodePortIPs(local: local)
        o.hostIP = config.nodeIPs.first { $0.family == .ipv4 }
        if let local, o.hostIP == nil {
            o.hostIP = local.first { $0.family == .ipv4 && !$0.description.hasPrefix("127.") }
        }
        return o
    }
}

extension DataPlaneOptions {
    static func resolve(_ config: ProxyConfig) throws -> DataPlaneOptions {
        var d = DataPlaneOptions()
        if let s = config.userspace.udpIdleTimeout {
            guard let v = KubeProxyConfiguration.parseDuration(s), v > 0 else { throw ProxyConfigError("--udp-timeout: bad duration \(s)") }
            d.udpTimeout = .milliseconds(Int(v * 1000))
        }
        return d
    }
}
