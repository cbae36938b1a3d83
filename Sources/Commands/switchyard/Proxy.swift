import ArgumentParser
import Foundation
import KubeClient
import KubeAPI
import Logging
import ProxyModes
import ServiceLifecycle
import ProxySeam
import ProxyRuntime
import HostOS

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
        if cleanup {
            bootstrapLogging(flags.logLevel, format: flags.loggingFormat)
            let logger = Logger(label: "switchyard.proxy")
            // From here on, SIGTERM and SIGINT end the process within 3.5 s whatever it is doing.
            let deadline = ShutdownDeadline(grace: .milliseconds(3500), command: "switchyard proxy", logger: logger)
            // Like kube-proxy --cleanup: remove what every mode may have left, and nothing else.
            // A failure in one mode does not keep the others' state; it is reported at the end.
            let failures = await Leftovers.remove(ProxyModes.all, keeping: nil, logger: logger)
            withExtendedLifetime(deadline) {}
            if let (mode, error) = failures.first {
                throw CleanupFailure(description: "cleanup of the \(mode) mode failed: \(error)")
            }
            return
        }
        try await ProxyProcess(flags: flags, manifests: manifests, kubeconfig: kubeconfig, healthzBindAddress: healthzBindAddress,
                               metricsBindAddress: metricsBindAddress, minSyncPeriod: minSyncPeriod, syncPeriod: syncPeriod).run()
    }
}

/// What `switchyard proxy` runs, given its flags: the mode's backend, the sync runner, the
/// watcher of the API server or the manifests, /healthz and /metrics; with `beside` (the
/// agent's kubelet) in the same service group, started and stopped with it.
struct ProxyProcess {
    var flags: ProxyFlags
    var manifests: [String]
    var kubeconfig: String?
    var healthzBindAddress: String?
    var metricsBindAddress: String?
    var minSyncPeriod: String?
    var syncPeriod: String?
    var command = "switchyard proxy"

    func run(beside: [any ServiceLifecycle.Service] = []) async throws {
        bootstrapLogging(flags.logLevel, format: flags.loggingFormat)
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
        // From here on, SIGTERM and SIGINT end the process within 3.5 s whatever it is doing.
        let deadline = ShutdownDeadline(grace: .milliseconds(3500), command: command, logger: logger)
        guard manifests.isEmpty != (kubeconfig == nil) else {
            throw ValidationError("give one of --kubeconfig FILE (an API server) or --manifests FILE|DIR")
        }
        for m in manifests where m != "-" && !FileManager.default.fileExists(atPath: m) {
            throw ValidationError("--manifests \(m): no such file or directory")
        }
        let healthz = try bindAddress(config.healthzBindAddress, flag: "--healthz-bind-address", example: "0.0.0.0:10256")
        let metricsAddress = try bindAddress(config.metricsBindAddress, flag: "--metrics-bind-address", example: "127.0.0.1:10249")
        let client: KubeClient?
        do {
            client = try kubeconfig.map { KubeClient(config: try Kubeconfig.load(path: $0)) }
        } catch {
            throw ValidationError("--kubeconfig: \(error)")
        }
        // Everything that can fail on bad flags or a busy port first, so a refused start
        // changes nothing in the kernel.
        let families = Self.families(mode(config), config)
        let metrics = ProxyMetrics(mode: config.mode, family: families[0].rawValue)
        let health = HealthState(families: families.map(\.rawValue))
        var servers: [SimpleHTTPServer] = []
        if let (h, p) = healthz {
            servers.append(try await listen("--healthz-bind-address", h, p) { _, path in
                guard path == "/healthz" || path == "/livez" else { return SimpleResponse(status: .notFound, body: "404 page not found\n") }
                let r = health.response(path: path)
                metrics.countHealth(path: path, ok: r.status == .ok)
                return r
            })
        }
        if let (h, p) = metricsAddress {
            servers.append(try await listen("--metrics-bind-address", h, p) { _, path in
                path == "/metrics"
                    ? SimpleResponse(headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: metrics.text())
                    : SimpleResponse(status: .notFound, body: "404 page not found\n")
            })
        }
        if let v = try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", encoding: .utf8),
           v.trimmingCharacters(in: .whitespacesAndNewlines) != "0" {
            config.conntrackTCPLiberal = true
        }
        // One backend and runner per family (upstream's metaproxier): the first family's serves
        // the Services' health checks; /healthz, the registry and the collectors are shared.
        let local = LocalAddresses.all()
        var runners: [ProxyRunner] = []
        var backends: [any ProxyBackend] = []
        for (i, family) in families.enumerated() {
            var c = config
            c.ipFamily = family
            let m = i == 0 ? metrics : ProxyMetrics(mode: config.mode, family: family.rawValue, registry: metrics.registry)
            let env = ModeEnvironment(logger: logger, conntrack: MeasuredConntrack(NetlinkConntrack(), metrics: m), registry: metrics.registry,
                                      addCollector: { metrics.addCollector($0) }, localAddresses: local)
            let backend = try validated { try mode(c).backend(c, env) }
            backends.append(backend)
            runners.append(ProxyRunner(
                tracker: ChangeTracker(family: family, node: NodeInfo(name: config.hostname), serviceCIDRs: config.serviceCIDRs),
                backend: backend, metrics: m, health: health, healthChecks: i == 0 ? ServiceHealthServers() : nil,
                minSyncPeriod: config.minSyncPeriod, syncPeriod: config.syncPeriod, logger: logger))
        }
        if config.effectiveLocalhostNodePorts {
            try? "1".write(toFile: "/proc/sys/net/ipv4/conf/all/route_localnet", atomically: false, encoding: .utf8)
        }
        // Upstream kube-proxy removes the other modes' rules when it starts: rules of a mode that
        // no longer runs must not stay in charge of traffic.
        await Leftovers.remove(ProxyModes.all.filter { $0.name != config.mode }, keeping: config.mode, logger: logger)
        let watcher: any ServiceLifecycle.Service = client.map { APIWatcher(client: $0, runners: runners, logger: logger) }
            ?? ManifestWatcher(paths: manifests, config: config, runners: runners, logger: logger)
        // ServiceLifecycle's own start/stop lines only from -v 4 on.
        var lifecycleLogger = logger
        if flags.verbosity < 4 { lifecycleLogger.logLevel = .info }
        let group = ServiceGroup(services: runners + [watcher] + beside, gracefulShutdownSignals: [.sigterm, .sigint], logger: lifecycleLogger)
        logger.info("switchyard proxy starting", metadata: ["mode": "\(config.mode)", "node": "\(config.hostname)",
                                                            "ipFamilies": "\(families.map(\.rawValue).joined(separator: ","))",
                                                            "source": "\(client == nil ? "manifests " + manifests.joined(separator: ",") : "kubeconfig " + kubeconfig!)"])
        try await group.run()
        // Connections a backend carries itself (the userspace mode's) get a moment to finish, within the deadline.
        for backend in backends { await backend.stop(grace: .seconds(2)) }
        for s in servers { await s.close() }
        logger.info("switchyard proxy stopped")
        withExtendedLifetime(deadline) {}
    }

    /// The families the proxy runs for, the primary first (the node IP's, else IPv4): both when
    /// the mode writes IPv6 rules and the kernel has IPv6, as upstream's kube-proxy runs
    /// dual-stack wherever it can, whatever the cluster's Services are.
    static func families(_ mode: ProxyMode, _ config: ProxyConfig) -> [IPFamily] {
        let primary = config.nodeIPs.first?.family ?? .ipv4
        let ipv6 = ProxyMode.kernelHasIPv6
        let all = mode.families.filter { $0 == .ipv4 || ipv6 }
        guard all.contains(primary) else { return [all.first ?? .ipv4] }
        return [primary] + all.filter { $0 != primary }
    }

    /// A listener for `flag`, or an error that names the flag, the address and what to do.
    func listen(_ flag: String, _ host: String, _ port: Int, handler: @escaping SimpleHTTPServer.Handler) async throws -> SimpleHTTPServer {
        do {
            return try await SimpleHTTPServer(host: host, port: port, handler: handler)
        } catch let e as ListenError {
            throw ValidationError("\(flag) \(host.contains(":") ? "[\(host)]" : host):\(port): \(e.description)")
        }
    }
}

struct CleanupFailure: Error, CustomStringConvertible {
    var description: String
}

/// kube-proxy's IP:PORT bind addresses: nil when empty (disabled), else the host and port.
func bindAddress(_ s: String, flag: String, example: String) throws -> (String, Int)? {
    guard !s.isEmpty else { return nil }
    if let i = s.lastIndex(of: ":"), let p = Int(s[s.index(after: i)...]), (0...65535).contains(p) {
        let host = String(s[..<i]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if IPAddress(host) != nil { return (host, p) }
    }
    throw ValidationError("\(flag) \(s): want IP:PORT, such as \(example) (empty disables it)")
}

/// Re-reads the manifests when a file changes (by modification time and size) and
/// feeds the runner; only what differs is marked changed.
struct ManifestWatcher: ServiceLifecycle.Service, CustomStringConvertible {
    var description: String { "ManifestWatcher(\(paths.joined(separator: ", ")))" }

    let paths: [String]
    let config: ProxyConfig
    let runners: [ProxyRunner]
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
        guard runners.count > 1 else {
            await runners[0].update { feed.apply(to: &$0) }
            return
        }
        // Each runner gets its family's slices (a tracker keeps no other), moved, not copied:
        // `apply` drains them as it reads them.
        for (r, part) in zip(runners, ProxyRunner.split(&feed.slices, among: runners, family: \.addressType)) {
            feed.slices = part
            await r.update { feed.apply(to: &$0) }
        }
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
