import Synchronization
import ArgumentParser
import Foundation
import KubeAPI
import Logging
import ProxyModes
import ProxySeam
import ProxyRuntime

/// Flags shared by `render` and `proxy`, named as kube-proxy names them.
struct ProxyFlags: ParsableArguments {
    @Option(name: .customLong("proxy-mode"), help: "Which proxy mode to use: \(ProxyModes.names[0]) (the default), \(ProxyModes.names.dropFirst().dropLast().joined(separator: ", ")) or \(ProxyModes.names.last!).")
    var proxyMode: String?

    @Option(name: .customLong("hostname-override"), help: "The name of this node (endpoints on it are local).")
    var hostnameOverride: String?

    @Option(name: .customLong("cluster-cidr"), help: "The pod CIDR range; traffic from outside it to a ClusterIP is masqueraded.")
    var clusterCIDR: String?

    @Option(name: .customLong("nodeport-addresses"), help: "Comma-separated CIDRs (or 'primary') whose local addresses accept NodePort traffic; default all.")
    var nodePortAddresses: String?

    @Flag(name: .customLong("masquerade-all"), help: "SNAT all traffic sent via Service cluster IPs.")
    var masqueradeAll = false

    @Option(name: .customLong("iptables-masquerade-bit"), help: "The bit of the fwmark space that marks packets needing SNAT (0-31).")
    var masqueradeBit: Int?

    @Option(name: .customLong("iptables-localhost-nodeports"), help: "Accept NodePort connections on 127.0.0.1 (true/false).")
    var localhostNodePorts: Bool?

    @Option(name: .customLong("detect-local-mode"), help: "ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix.")
    var detectLocalMode: String?

    @Option(name: .customLong("pod-bridge-interface"), help: "The bridge for BridgeInterface local-traffic detection.")
    var podBridgeInterface: String?

    @Option(name: .customLong("pod-interface-name-prefix"), help: "The interface prefix for InterfaceNamePrefix detection.")
    var podInterfaceNamePrefix: String?

    @Option(name: .customLong("service-cluster-ip-range"), help: "Where ClusterIPs are allocated for manifests that have none (default 10.96.0.0/12).")
    var serviceClusterIPRange: String?

    @Option(name: .customLong("nftables-layout"), help: """
        nftables mode only: 'upstream' (kube-proxy's chains, the default) or 'maps' \
        (plain Services as data-map elements; changes cost the same at any table size).
        """)
    var nftablesLayout: String = "upstream"

    @Option(name: .customLong("proxy-port-range"), help: """
        userspace mode only: host ports for the listeners (begin-end, begin+offset or a port); \
        empty or 0 lets the kernel choose.
        """)
    var proxyPortRange: String?

    @Option(name: .customLong("udp-timeout"), help: "userspace mode only: how long an idle UDP flow is kept (Go duration, default 250ms).")
    var udpTimeout: String?

    @Option(name: .customLong("ipvs-scheduler"), help: "ipvs mode only: the IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh).")
    var ipvsScheduler: String = "rr"

    @Flag(name: .customLong("ipvs-strict-arp"), help: "ipvs mode only: arp_ignore=1 and arp_announce=2, so the node does not answer ARP for kube-ipvs0's addresses.")
    var ipvsStrictARP = false

    @Option(name: .customLong("config"), help: "A KubeProxyConfiguration file; flags override it.")
    var config: String?

    @Option(name: [.customShort("v"), .customLong("v")], help: "Log verbosity (0-9).")
    var verbosity: Int = 0

    @Option(name: .customLong("logging-format"), help: "How log lines are written: text or json (component-base's).")
    var loggingFormat: LoggingFormat = .text

    /// Merges the config file and flags into a `ProxyConfig`.
    func resolve() throws -> ProxyConfig {
        var c = ProxyConfig()
        var detect = "ClusterCIDR"
        var bridge = podBridgeInterface, prefix = podInterfaceNamePrefix
        if let path = config {
            let f = try KubeProxyConfiguration.load(path: path)
            if let m = f.mode, !m.isEmpty { c.mode = m }
            if let h = f.hostnameOverride { c.hostname = h }
            if let cc = f.clusterCIDR, !cc.isEmpty { c.clusterCIDRs = try cidrs(cc, "clusterCIDR") }
            if let n = f.nodePortAddresses { c.nodePortAddresses = n }
            if let ipt = f.iptables {
                if let m = ipt.masqueradeAll { c.masqueradeAll = m }
                if let b = ipt.masqueradeBit { c.masqueradeMark = try mark(b, "iptables.masqueradeBit") }
                if let l = ipt.localhostNodePorts { c.localhostNodePorts = l }
                if let s = ipt.syncPeriod.flatMap(KubeProxyConfiguration.parseDuration) { c.syncPeriod = .milliseconds(Int(s * 1000)) }
                if let s = ipt.minSyncPeriod.flatMap(KubeProxyConfiguration.parseDuration) { c.minSyncPeriod = .milliseconds(Int(s * 1000)) }
            }
            if let s = f.syncPeriod.flatMap(KubeProxyConfiguration.parseDuration) { c.syncPeriod = .milliseconds(Int(s * 1000)) }
            if let s = f.minSyncPeriod.flatMap(KubeProxyConfiguration.parseDuration) { c.minSyncPeriod = .milliseconds(Int(s * 1000)) }
            if let h = f.healthzBindAddress { c.healthzBindAddress = h }
            if let m = f.metricsBindAddress { c.metricsBindAddress = m }
            if let d = f.detectLocalMode, !d.isEmpty { detect = d }
            if let b = f.detectLocal?.bridgeInterface { bridge = b }
            if let p = f.detectLocal?.interfaceNamePrefix { prefix = p }
        }
        if let m = proxyMode { c.mode = m }
        if let h = hostnameOverride { c.hostname = h }
        if c.hostname.isEmpty { c.hostname = ProcessInfo.processInfo.hostName.lowercased() }
        if let cc = clusterCIDR { c.clusterCIDRs = try cidrs(cc, "--cluster-cidr") }
        if let n = nodePortAddresses { c.nodePortAddresses = n.split(separator: ",").map { String($0) } }
        for a in c.nodePortAddresses where a != "primary" && CIDR(a) == nil {
            throw ValidationError("--nodeport-addresses: \"\(a)\" is not a CIDR or 'primary'")
        }
        if masqueradeAll { c.masqueradeAll = true }
        if let b = masqueradeBit { c.masqueradeMark = try mark(b, "--iptables-masquerade-bit") }
        if let l = localhostNodePorts { c.localhostNodePorts = l }
        if let d = detectLocalMode { detect = d }
        switch detect {
        case "ClusterCIDR", "NodeCIDR":
            c.localDetector = c.clusterCIDRs.isEmpty ? .none : .cidrs(c.clusterCIDRs)
        case "BridgeInterface":
            guard let b = bridge, !b.isEmpty else { throw ValidationError("--detect-local-mode=BridgeInterface needs --pod-bridge-interface") }
            c.localDetector = .bridgeInterface(b)
        case "InterfaceNamePrefix":
            guard let p = prefix, !p.isEmpty else { throw ValidationError("--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix") }
            c.localDetector = .interfaceNamePrefix(p)
        default:
            throw ValidationError("--detect-local-mode: unknown mode \"\(detect)\"")
        }
        if let r = serviceClusterIPRange {
            guard let cidr = CIDR(r), cidr.family == .ipv4 else { throw ValidationError("--service-cluster-ip-range: \"\(r)\" is not an IPv4 CIDR") }
            c.serviceCIDRs = [cidr.network]
        }
        guard ProxyModes.named(c.mode) != nil else {
            throw ValidationError("--proxy-mode \(c.mode): unknown mode; one of \(ProxyModes.names.joined(separator: ", "))")
        }
        c.nftables.layout = nftablesLayout
        c.ipvs.scheduler = ipvsScheduler
        if ipvsStrictARP { c.ipvs.strictARP = true }
        c.userspace.portRange = proxyPortRange
        c.userspace.udpIdleTimeout = udpTimeout
        // The chosen mode's own settings are checked now, before anything runs.
        _ = try validated { try mode(c).renderer(c) }
        return c
    }

    private func mark(_ bit: Int, _ what: String) throws -> MasqueradeMark {
        guard let m = MasqueradeMark(bit: bit) else { throw ValidationError("\(what) must be between 0 and 31") }
        return m
    }

    private func cidrs(_ s: String, _ what: String) throws -> [CIDR] {
        let list = try s.split(separator: ",").map {
            guard let c = CIDR($0) else { throw ValidationError("\(what): \"\($0)\" is not a CIDR") }
            return c.network
        }
        // One per family (a dual-stack cluster's two), as kube-proxy takes them.
        guard list.count <= 2, Set(list.map(\.family)).count == list.count else {
            throw ValidationError("\(what): one CIDR, or two of different families (dual-stack), not \(s)")
        }
        return list
    }

    var logLevel: Logger.Level {
        switch verbosity {
        case ...0: return .info
        case 1...3: return .debug
        default: return .trace
        }
    }
}

/// Loads manifests, reporting skipped objects on stderr.
func loadManifests(_ paths: [String], logger: Logger) throws -> ManifestSet {
    let set = try ManifestLoader.load(paths: paths)
    for issue in set.issues {
        logger.error("skipped invalid object: \(issue)")
    }
    return set
}

/// What the tracker takes from a set of manifests. The slices are moved out of the set, so the
/// tracker holds the only reference to them and frees each as it takes it
/// (`ChangeTracker.replaceAll(services:draining:)`); the feed may cross to the runner's actor.
final class ManifestFeed: @unchecked Sendable {
    let services: [Service]
    let node: NodeInfo
    let serviceCIDRs: [ServiceCIDR]
    var slices: [EndpointSlice]

    init(taking set: inout ManifestSet, config: ProxyConfig) {
        services = ManifestInput.prepare(set, serviceCIDR: config.serviceCIDRs.first ?? ManifestInput.defaultServiceCIDR)
        node = ManifestInput.node(named: config.hostname, in: set, ips: config.nodeIPs)
        serviceCIDRs = set.serviceCIDRs
        slices = set.endpointSlices
        set.endpointSlices = []
    }

    /// Fills the tracker (once: the slices are used up).
    func apply(to tracker: inout ChangeTracker) {
        tracker.update(node: node)
        tracker.replaceAll(services: services, draining: &slices, serviceCIDRs: serviceCIDRs)
    }

    /// What a proxy on `config`'s node would program for the set (`render`, `explain -f`).
    static func snapshot(taking set: inout ManifestSet, config: ProxyConfig) -> ProxySnapshot {
        snapshots(taking: &set, config: config, families: [config.ipFamily])[0]
    }

    /// One snapshot per family (a dual-stack node's proxiers each see their family's addresses).
    static func snapshots(taking set: inout ManifestSet, config: ProxyConfig, families: [IPFamily]) -> [ProxySnapshot] {
        let feed = ManifestFeed(taking: &set, config: config)
        return families.enumerated().map { i, family in
            var tracker = ChangeTracker(family: family, node: NodeInfo(name: config.hostname), serviceCIDRs: config.serviceCIDRs)
            // The last family drains the slices; the others leave them for the next.
            let keep = i == families.count - 1 ? [] : feed.slices
            feed.apply(to: &tracker)
            feed.slices = keep
            return tracker.snapshot().0
        }
    }
}

/// The registered mode `config` names (resolve() has checked that there is one).
func mode(_ config: ProxyConfig) -> ProxyMode { ProxyModes.named(config.mode) ?? ProxyModes.standard }

/// Runs `body`, turning a setting a mode cannot work with into a usage error, as the flag's own
/// parsing would (exit status 64, with the usage).
func validated<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ProxyConfigError {
        throw ValidationError(e.description)
    }
}

