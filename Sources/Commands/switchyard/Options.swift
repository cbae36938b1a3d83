import ArgumentParser
import Foundation
import KubeAPI
import Logging
import ProxyIPTables
import ProxyIPVS
import Netlink
import ProxyNFTables
import ProxyUserspace
import ProxySeam
import ProxyRuntime
import IPTablesKit

/// Flags shared by `render` and `proxy`, named as kube-proxy names them.
struct ProxyFlags: ParsableArguments {
    @Option(name: .customLong("proxy-mode"), help: "Which proxy mode to use: iptables (the default), nftables, ipvs or userspace.")
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
                if let b = ipt.masqueradeBit { c.masqueradeBit = b }
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
        if let b = masqueradeBit { c.masqueradeBit = b }
        guard (0...31).contains(c.masqueradeBit) else { throw ValidationError("--iptables-masquerade-bit must be between 0 and 31") }
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
        guard ["iptables", "nftables", "userspace", "ipvs"].contains(c.mode) else {
            throw ValidationError("--proxy-mode \(c.mode): unknown mode; one of iptables, nftables, ipvs, userspace")
        }
        return c
    }

    private func cidrs(_ s: String, _ what: String) throws -> [CIDR] {
        try s.split(separator: ",").map {
            guard let c = CIDR($0), c.family == .ipv4 else { throw ValidationError("\(what): \"\($0)\" is not an IPv4 CIDR") }
            return c.network
        }
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
}

func makeIPTablesOptions(_ c: ProxyConfig, live: Bool) -> IPTablesOptions {
    var ips: [IPAddress]? = nil
    if let cidrs = c.nodePortCIDRs {
        // `render` cannot see the node's interfaces; it uses the addresses the CIDRs name exactly.
        ips = live ? LocalAddresses.matching(cidrs) : cidrs.filter { $0.prefixLength == 32 }.map(\.address)
    }
    var o = IPTablesOptions(c, nodePortIPs: ips)
    // A live proxy asks the iptables it runs, as upstream does; `render` writes what current iptables takes.
    if live {
        o.randomFully = SystemIPTables().hasRandomFully()
        o.nfacctCounters = ensureNFAcctCounters()
    }
    return o
}

/// The nfacct counters the iptables mode counts into, created if missing, where the kernel has
/// nfacct (upstream ensures them at every full sync; here once, when the proxy starts).
func ensureNFAcctCounters() -> Set<String> {
    guard NFAcct.isSupported(), let acct = try? NFAcct() else { return [] }
    return Set(NFAcctCounter.all.filter { (try? acct.ensure($0)) != nil })
}

/// The nfacct counters as upstream's custom collectors serve them: each counter's packets, read at scrape.
func nfacctMetricsText(_ counters: Set<String>) -> String {
    guard !counters.isEmpty, let acct = try? NFAcct() else { return "" }
    var out = ""
    for m in NFAcctCounter.metrics where counters.contains(m.counter) {
        guard let v = try? acct.get(m.counter) else { continue }
        out += "# HELP \(m.name) \(m.help)\n# TYPE \(m.name) counter\n\(m.name) \(v.packets)\n"
    }
    return out
}

/// nftables mode takes NodePorts on the node's primary IPs by default, as upstream
/// does (`--nodeport-addresses primary`); with no node IP known, on every local address.
func makeNFTablesOptions(_ c: ProxyConfig, live: Bool) -> NFTablesOptions {
    var ips: [IPAddress]? = nil
    if let cidrs = c.nodePortCIDRs {
        ips = live ? LocalAddresses.matching(cidrs) : cidrs.filter { $0.prefixLength == 32 }.map(\.address)
    } else if !c.nodeIPs.isEmpty {
        ips = c.nodeIPs.filter { $0.family == .ipv4 }
    }
    return NFTablesOptions(c, nodePortIPs: ips)
}

extension ProxyFlags {
    func nftablesOptions(_ c: ProxyConfig, live: Bool) throws -> NFTablesOptions {
        guard let layout = NFTablesLayout(rawValue: nftablesLayout) else {
            throw ValidationError("--nftables-layout must be one of: \(NFTablesLayout.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var o = makeNFTablesOptions(c, live: live)
        o.layout = layout
        return o
    }
}

extension ProxyFlags {
    /// The userspace mode's options. Live, with no node IP configured, host portals
    /// DNAT to the first non-loopback IPv4 address (upstream did the same).
    func ipvsOptions(_ c: ProxyConfig) throws -> IPVSOptions {
        guard IPVSService.schedulers.contains(ipvsScheduler) else {
            throw ValidationError("--ipvs-scheduler: unknown scheduler \(ipvsScheduler) (one of \(IPVSService.schedulers.joined(separator: ", ")))")
        }
        var o = IPVSOptions(c)
        o.scheduler = ipvsScheduler
        if let cidrs = c.nodePortCIDRs { o.nodePortAddresses = cidrs.filter { $0.prefixLength == 32 }.map(\.address) }
        return o
    }

    func userspaceOptions(_ c: ProxyConfig, live: Bool) throws -> UserspaceOptions {
        var o = UserspaceOptions(localhostNodePorts: c.effectiveLocalhostNodePorts)
        o.portRange = try proxyPortRange.flatMap { try UserspaceOptions.parsePortRange($0) }
        if let cidrs = c.nodePortCIDRs {
            o.nodePortIPs = live ? LocalAddresses.matching(cidrs) : cidrs.filter { $0.prefixLength == 32 }.map(\.address)
        }
        o.hostIP = c.nodeIPs.first { $0.family == .ipv4 }
        if live && o.hostIP == nil {
            o.hostIP = LocalAddresses.all().first { $0.family == .ipv4 && !$0.description.hasPrefix("127.") }
        }
        return o
    }

    func dataPlaneOptions() throws -> DataPlaneOptions {
        var d = DataPlaneOptions()
        if let s = udpTimeout {
            guard let v = KubeProxyConfiguration.parseDuration(s), v > 0 else { throw ValidationError("--udp-timeout: bad duration \(s)") }
            d.udpTimeout = .milliseconds(Int(v * 1000))
        }
        return d
    }
}

/// The backend for `--proxy-mode`.
func makeBackend(_ c: ProxyConfig, flags: ProxyFlags, metrics: ProxyMetrics, logger: Logger) throws -> any ProxyBackend {
    let conntrack = MeasuredConntrack(NetlinkConntrack(), metrics: metrics)
    switch c.mode {
    case "ipvs":
        let ipvs: IPVS
        do {
            ipvs = try IPVS()
        } catch let e as NetlinkError {
            throw ValidationError("--proxy-mode ipvs: \(e) (netlab/guest runs a kernel that has it)")
        }
        var o = try flags.ipvsOptions(c)
        o.nodeAddressesFromKernel = true   // looked up at every sync, inside --nodeport-addresses when given
        o.nodePortCIDRs = c.nodePortCIDRs
        o.strictARP = flags.ipvsStrictARP   // the proxier sets kube-proxy's IPVS sysctls at its first sync
        o.randomFully = SystemIPTables().hasRandomFully()
        return IPVSProxier(ipvs: ipvs, links: try RouteHandle(), ipt: SystemIPTables(), ipset: SystemIPSet(), options: o, logger: logger)
    case "userspace":
        return UserspaceProxier(dataPlane: try DataPlane(options: try flags.dataPlaneOptions()), ipt: SystemIPTables(),
                                options: try flags.userspaceOptions(c, live: true), conntrack: conntrack,
                                registry: metrics.registry, logger: logger)
    case "nftables":
        return NFTablesProxier(nft: try SystemNFTables(), options: try flags.nftablesOptions(c, live: true),
                               conntrack: conntrack, logger: logger)
    default:
        let o = makeIPTablesOptions(c, live: true)
        let counters = o.nfacctCounters
        if !counters.isEmpty { metrics.addCollector { nfacctMetricsText(counters) } }
        return IPTablesProxier(ipt: SystemIPTables(), options: o, conntrack: conntrack, logger: logger)
    }
}

func bootstrapLogging(_ level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = level
        return h
    }
}
