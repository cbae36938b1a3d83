import ArgumentParser
import Foundation
import KubeClient
import KubeAPI
import Logging
import ProxyCore
import ProxyIPTables
import ProxyIPVS
import Netlink
import ProxyNFTables
import ProxyUserspace
import ServiceLifecycle

struct Proxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the service proxy, following an API server (--kubeconfig) or manifests on disk (--manifests).",
        discussion: "Serves /healthz on the healthz address and Prometheus /metrics on the metrics address.")

    @OptionGroup var flags: ProxyFlags

    @Option(name: .customLong("manifests"), help: "Manifest file or directory to follow (re-read on change).")
    var manifests: [String] = []

    @Option(name: .customLong("kubeconfig"), help: "Follow Services and EndpointSlices from the API server this kubeconfig names.")
    var kubeconfig: String?

    @Flag(name: .customLong("cleanup"), help: "Remove every rule and chain the proxy created, then exit.")
    var cleanup = false

    @Option(name: .customLong("healthz-bind-address"), help: "ip:port for /healthz (default 0.0.0.0:10256; empty disables).")
    var healthzBindAddress: String?

    @Option(name: .customLong("metrics-bind-address"), help: "ip:port for /metrics (default 127.0.0.1:10249; empty disables).")
    var metricsBindAddress: String?

    @Option(name: .customLong("min-sync-period"), help: "Minimum interval between syncs (Go duration, default 1s).")
    var minSyncPeriod: String?

    @Option(name: .customLong("sync-period"), help: "How often to check that rules are intact (Go duration, default 30s).")
    var syncPeriod: String?

    func run() async throws {
        bootstrapLogging(flags.logLevel)
        let logger = Logger(label: "switchyard.proxy")
        var config = try flags.resolve()
        if let h = healthzBindAddress { config.healthzBindAddress = h }
        if let m = metricsBindAddress { config.metricsBindAddress = m }
        if let s = minSyncPeriod {
            guard let v = KubeProxyConfiguration.parseDuration(s) else { throw ValidationError("--min-sync-period: bad duration \(s)") }
            config.minSyncPeriod = .milliseconds(Int(v * 1000))
        }
        if let s = syncPeriod {
            guard let v = KubeProxyConfiguration.parseDuration(s), v > 0 else { throw ValidationError("--sync-period: bad duration \(s)") }
            config.syncPeriod = .milliseconds(Int(v * 1000))
        }
        if cleanup {
            // Like kube-proxy --cleanup: remove what every mode may have left. The IPVS mode's
            // rules first: they jump to chains whose names the iptables mode shares. A failure
            // there does not keep the other modes' state; it is reported at the end.
            var ipvsFailure: (any Error)?
            do {
                if let ipvs = try? IPVS() {
                    // IPVS, where the kernel has it: every virtual server (as kube-proxy flushes) and kube-ipvs0.
                    try await IPVSProxier(ipvs: ipvs, links: try RouteHandle(), ipt: SystemIPTables(), ipset: SystemIPSet(),
                                          options: IPVSOptions()).cleanup()
                    logger.info("removed the IPVS virtual servers, kube-ipvs0, and the IPVS mode's rules and ipsets")
                } else {
                    try IPVSRules.remove(ipt: SystemIPTables(), ipset: SystemIPSet())
                    logger.info("removed the IPVS mode's rules and ipsets")
                }
            } catch {
                logger.error("removing the IPVS mode's state: \(error)")
                ipvsFailure = error
            }
            let p = IPTablesProxier(ipt: SystemIPTables(), options: IPTablesOptions(config, nodePortIPs: nil))
            try await p.cleanup()
            logger.info("removed kube-proxy iptables rules and chains")
            let n = NFTablesProxier(nft: try SystemNFTables(), options: NFTablesOptions())
            try await n.cleanup()
            logger.info("removed the nftables table ip kube-proxy")
            try UserspaceProxier.removeRules(SystemIPTables())
            logger.info("removed the userspace mode's portal chains")
            if let ipvsFailure { throw ipvsFailure }
            return
        }
        guard manifests.isEmpty != (kubeconfig == nil) else {
            throw ValidationError("give one of --kubeconfig FILE (an API server) or --manifests FILE|DIR")
        }
        let client: KubeClient?
        do {
            client = try kubeconfig.map { KubeClient(config: try Kubeconfig.load(path: $0)) }
        } catch {
            throw ValidationError("--kubeconfig: \(error)")
        }
        if config.effectiveLocalhostNodePorts {
            try? "1".write(toFile: "/proc/sys/net/ipv4/conf/all/route_localnet", atomically: false, encoding: .utf8)
        }
        if let v = try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", encoding: .utf8),
           v.trimmingCharacters(in: .whitespacesAndNewlines) != "0" {
            config.conntrackTCPLiberal = true
        }
        let metrics = ProxyMetrics(mode: config.mode)
        let health = HealthState()
        let backend = try makeBackend(config, flags: flags, metrics: metrics, logger: logger)
        let runner = ProxyRunner(
            tracker: ChangeTracker(node: NodeInfo(name: config.hostname), serviceCIDRs: config.serviceCIDRs),
            backend: backend, metrics: metrics, health: health, healthChecks: ServiceHealthServers(),
            minSyncPeriod: config.minSyncPeriod, syncPeriod: config.syncPeriod, logger: logger)
        var servers: [SimpleHTTPServer] = []
        if let (h, p) = hostPort(config.healthzBindAddress) {
            servers.append(try await SimpleHTTPServer(host: h, port: p) { _, path in
                path == "/healthz" || path == "/livez" ? health.response(path: path)
                    : SimpleResponse(status: .notFound, body: "404 page not found\n")
            })
        }
        if let (h, p) = hostPort(config.metricsBindAddress) {
            servers.append(try await SimpleHTTPServer(host: h, port: p) { _, path in
                path == "/metrics"
                    ? SimpleResponse(headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: metrics.text())
                    : SimpleResponse(status: .notFound, body: "404 page not found\n")
            })
        }
        let watcher: any ServiceLifecycle.Service = client.map { APIWatcher(client: $0, runner: runner, logger: logger) }
            ?? ManifestWatcher(paths: manifests, config: config, runner: runner, logger: logger)
        let group = ServiceGroup(services: [runner, watcher], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        logger.info("switchyard proxy starting", metadata: ["mode": "\(config.mode)", "node": "\(config.hostname)"])
        try await group.run()
        // Connections through the userspace mode get a few seconds to finish.
        if let u = backend as? UserspaceProxier { await u.dataPlane.stop(grace: .seconds(5)) }
        for s in servers { await s.close() }
    }

    func hostPort(_ s: String) -> (String, Int)? {
        guard !s.isEmpty, let i = s.lastIndex(of: ":"), let p = Int(s[s.index(after: i)...]) else { return nil }
        return (String(s[..<i]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), p)
    }
}

/// Re-reads the manifests when a file changes (by modification time and size) and
/// feeds the runner; only what differs is marked changed.
struct ManifestWatcher: ServiceLifecycle.Service {
    let paths: [String]
    let config: ProxyConfig
    let runner: ProxyRunner
    let logger: Logger

    func fingerprint() -> String {
        var s = ""
        for p in paths {
            for f in (try? ManifestLoader.files(at: p)) ?? [] {
                let a = try? FileManager.default.attributesOfItem(atPath: f)
                let m = (a?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                s += "\(f):\(m):\(a?[.size] as? Int ?? 0);"
            }
        }
        return s
    }

    private func load() async throws {
        var set = try loadManifests(paths, logger: logger)
        let feed = ManifestFeed(taking: &set, config: config)
        await runner.update { feed.apply(to: &$0) }
    }

    func run() async throws {
        var last = ""
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let fp = fingerprint()
            if fp != last {
                last = fp
                do {
                    try await load()
                } catch {
                    logger.error("cannot load manifests, keeping the current rules: \(error)")
                }
                // The decoded objects are gone now that the tracker has what it needs of them.
                ResidentMemory.releaseFreeHeapPages()
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}
