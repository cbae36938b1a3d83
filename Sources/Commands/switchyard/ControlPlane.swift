import ArgumentParser
import ClusterPKI
import ControllerKit
import Controllers
import Foundation
import HostOS
import KubeAPI
import KubeClient
import Logging
import Scheduler

/// Flags every control-plane component shares, named as upstream's.
struct ComponentFlags: ParsableArguments {
    @Option(help: "The kubeconfig of the API server to work with.")
    var kubeconfig: String?

    @Option(name: .customLong("leader-elect"), help: "Take part in leader election through a Lease before acting (true/false; `--leader-elect` alone is true).")
    var leaderElect: Bool?

    @Option(name: .customLong("leader-elect-lease-duration"), help: "How long a leader's Lease holds without renewal (Go duration).")
    var leaseDuration = "15s"

    @Option(name: .customLong("leader-elect-renew-deadline"), help: "How long the leader tries to renew before it stops leading.")
    var renewDeadline = "10s"

    @Option(name: .customLong("leader-elect-retry-period"), help: "How often candidates try to take, and the leader to renew, the Lease.")
    var retryPeriod = "2s"

    @Option(name: .customLong("leader-elect-resource-namespace"), help: "The namespace of the Lease.")
    var leaseNamespace = "kube-system"

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    @Option(name: .customLong("logging-format"), help: "How log lines are written: text or json (component-base's).")
    var loggingFormat: LoggingFormat = .text

    func durations() throws -> (Double, Double, Double) {
        guard let l = GoDuration.seconds(leaseDuration), let r = GoDuration.seconds(renewDeadline), let p = GoDuration.seconds(retryPeriod) else {
            throw ValidationError("--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period: Go durations (15s, 10s, 2s)")
        }
        guard l > r, r > p, p > 0 else { throw ValidationError("leader election: the lease duration must exceed the renew deadline, which must exceed the retry period") }
        return (l, r, p)
    }

    func client(_ path: String?) throws -> KubeClient {
        guard let path = path ?? kubeconfig else { throw ValidationError("--kubeconfig FILE is required") }
        do { return KubeClient(config: try Kubeconfig.load(path: path)) } catch { throw ValidationError("--kubeconfig \(path): \(error)") }
    }
}

/// Runs `work` while leading (when `elect`), or at once; returns when it ends or leadership is lost.
func runLeading(_ api: API, elect: Bool, name: String, flags: ComponentFlags, logger: Logger, _ work: @escaping @Sendable () async -> Void) async throws {
    guard elect else { await work(); return }
    let (l, r, p) = try flags.durations()
    var elector = LeaderElector(api: api, namespace: flags.leaseNamespace, name: name, logger: logger)
    elector.leaseDuration = l
    elector.renewDeadline = r
    elector.retryPeriod = p
    await elector.run(lead: work)
    if !Task.isCancelled { throw ValidationError("leaderelection lost") }
}

/// `switchyard scheduler`: kube-scheduler.
struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Run the scheduler (kube-scheduler): bind pending pods to nodes through the API server.")

    @OptionGroup var flags: ComponentFlags

    @Option(help: "A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1): profiles, plugins, leader election.")
    var config: String?

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: flags.logLevel) ?? .info, format: flags.loggingFormat)
        let logger = Logger(label: "switchyard.scheduler")
        var c = SchedulerConfiguration()
        if let config {
            guard let text = try? String(contentsOfFile: config, encoding: .utf8) else { throw ValidationError("--config \(config): cannot read it") }
            do { c = try SchedulerConfiguration.parse(text, source: config) } catch { throw ValidationError("\(error)") }
        }
        let client = try flags.client(c.kubeconfig)
        let api = API(client, fieldManager: "kube-scheduler")
        let scheduler = Scheduler(api: api, profiles: c.profiles, logger: logger)
        logger.info("scheduler: profiles \(c.profiles.map(\.schedulerName).joined(separator: ", ")) against \(client.config.server)")
        let elect = flags.leaderElect ?? c.leaderElect, lease = c.resourceName, flags = self.flags
        try await runUntilSignalled(logger) {
            try await runLeading(api, elect: elect, name: lease, flags: flags, logger: logger) { await scheduler.run() }
        }
    }
}

/// `switchyard controller-manager`: kube-controller-manager.
struct ControllerManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller-manager",
        abstract: "Run the controllers (kube-controller-manager): deployments, replica sets, jobs, nodes, garbage collection, …")

    @OptionGroup var flags: ComponentFlags
    @OptionGroup var controllers: ControllerFlags

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: flags.logLevel) ?? .info, format: flags.loggingFormat)
        let logger = Logger(label: "switchyard.controller-manager")
        let client = try flags.client(nil)
        let api = API(client, fieldManager: "kube-controller-manager")
        let manager: ControllerManager
        let options = try controllers.options()
        do {
            manager = try ControllerManager(api: api, options: options, credentials: options.useServiceAccountCredentials ? ServiceAccountCredentials(base: client) : nil)
        } catch let e as APIStatusError { throw ValidationError("--controllers: \(e.message)") }
        try await runUntilSignalled(logger) {
            try await runLeading(api, elect: flags.leaderElect ?? true, name: "kube-controller-manager", flags: flags, logger: logger) { await manager.run() }
        }
    }
}

/// kube-controller-manager's flags that this one reads.
struct ControllerFlags: ParsableArguments {
    @Option(name: .customLong("controllers"), help: "Controllers to run: '*' (the defaults), NAME, -NAME; comma-separated. Known: \(ControllerManager.known.map(\.name).joined(separator: ", ")).")
    var controllers = "*"

    @Option(name: .customLong("cluster-cidr"), help: "The pods' CIDR, or two of different families (dual-stack), comma-separated; with --allocate-node-cidrs each Node gets a range of each.")
    var clusterCIDR: String?

    @Option(name: .customLong("allocate-node-cidrs"), help: "Give each Node a spec.podCIDR from --cluster-cidr (true/false).")
    var allocateNodeCIDRs: Bool?

    @Option(name: .customLong("node-cidr-mask-size"), help: "The prefix length of each Node's range (single-stack).")
    var nodeCIDRMaskSize: Int?

    @Option(name: .customLong("node-cidr-mask-size-ipv4"), help: "The prefix length of each Node's IPv4 range on a dual-stack cluster.")
    var nodeCIDRMaskSizeIPv4 = 24

    @Option(name: .customLong("node-cidr-mask-size-ipv6"), help: "The prefix length of each Node's IPv6 range on a dual-stack cluster.")
    var nodeCIDRMaskSizeIPv6 = 64

    @Option(name: .customLong("node-monitor-grace-period"), help: "How long a node may be silent before it is marked Unknown (Go duration).")
    var nodeMonitorGracePeriod = "40s"

    @Option(name: .customLong("node-monitor-period"), help: "How often nodes are checked.")
    var nodeMonitorPeriod = "5s"

    @Option(name: .customLong("root-ca-file"), help: "The CA bundle published in every namespace as the kube-root-ca.crt ConfigMap.")
    var rootCAFile: String?

    @Option(name: .customLong("concurrent-deployment-syncs"), help: "Workers per workload controller.")
    var concurrentSyncs = 5

    @Option(name: .customLong("max-endpoints-per-slice"), help: "The most endpoints an EndpointSlice holds (1 to 1000).")
    var maxEndpointsPerSlice = 100

    @Option(name: .customLong("cluster-signing-cert-file"), help: "The CA certificate csrsigning signs with (PEM; with --cluster-signing-key-file).")
    var clusterSigningCertFile: String?

    @Option(name: .customLong("cluster-signing-key-file"), help: "The CA's ECDSA P-256 key (PEM).")
    var clusterSigningKeyFile: String?

    @Option(name: .customLong("cluster-signing-duration"), help: "The longest certificate csrsigning signs (Go duration).")
    var clusterSigningDuration = "8760h0m0s"

    @Option(name: .customLong("resource-quota-sync-period"), help: "How often the resourcequota controller counts every quota's usage again (Go duration).")
    var resourceQuotaSyncPeriod = "5m0s"

    @Option(name: .customLong("use-service-account-credentials"), help: "Run each controller as its own service account in kube-system (deployment-controller, node-controller, …), bound to its system:controller:NAME role (true/false; alone: true).")
    var useServiceAccountCredentials: Bool?

    func options() throws -> ControllerManager.Options {
        var o = ControllerManager.Options()
        o.controllers = controllers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        o.clusterCIDR = clusterCIDR
        o.allocateNodeCIDRs = allocateNodeCIDRs ?? false
        let dual = (clusterCIDR ?? "").contains(",")
        if dual && nodeCIDRMaskSize != nil { throw ValidationError("usage of --node-cidr-mask-size is not allowed with dual-stack clusters") }
        o.nodeCIDRMaskSize = nodeCIDRMaskSize ?? (clusterCIDR.flatMap(CIDR.init)?.family == .ipv6 ? 64 : 24)
        o.nodeCIDRMaskSizeIPv4 = nodeCIDRMaskSizeIPv4
        o.nodeCIDRMaskSizeIPv6 = nodeCIDRMaskSizeIPv6
        if o.allocateNodeCIDRs {
            do { _ = try o.nodeCIDRSetsChecked() } catch { throw ValidationError("\(error)") }
        }
        guard let g = GoDuration.seconds(nodeMonitorGracePeriod), let p = GoDuration.seconds(nodeMonitorPeriod), g > 0, p > 0 else {
            throw ValidationError("--node-monitor-grace-period, --node-monitor-period: Go durations (40s, 5s)")
        }
        o.nodeMonitorGracePeriod = g
        o.nodeMonitorPeriod = p
        if let f = rootCAFile {
            guard let text = try? String(contentsOfFile: f, encoding: .utf8) else { throw ValidationError("--root-ca-file \(f): cannot read it") }
            o.rootCA = text
        }
        o.concurrentSyncs = max(1, concurrentSyncs)
        guard (1...1000).contains(maxEndpointsPerSlice) else { throw ValidationError("--max-endpoints-per-slice \(maxEndpointsPerSlice): between 1 and 1000") }
        o.maxEndpointsPerSlice = maxEndpointsPerSlice
        switch (clusterSigningCertFile, clusterSigningKeyFile) {
        case (let c?, let k?):
            do { o.signingCA = try ClusterPKI.signer(certFile: c, keyFile: k) } catch { throw ValidationError("--cluster-signing-cert-file, --cluster-signing-key-file: \(error)") }
        case (nil, nil): break
        default: throw ValidationError("--cluster-signing-cert-file and --cluster-signing-key-file go together")
        }
        guard let d = GoDuration.seconds(clusterSigningDuration), d >= 1 else { throw ValidationError("--cluster-signing-duration \(clusterSigningDuration): a Go duration (8760h0m0s)") }
        o.signingDuration = d
        o.useServiceAccountCredentials = useServiceAccountCredentials ?? false
        guard let q = GoDuration.seconds(resourceQuotaSyncPeriod), q >= 1 else { throw ValidationError("--resource-quota-sync-period \(resourceQuotaSyncPeriod): a Go duration of a second or more (5m0s)") }
        o.resourceQuotaSyncPeriod = q
        do { _ = try ControllerManager.enabled(o.controllers) } catch let e as APIStatusError { throw ValidationError("--controllers: \(e.message)") }
        return o
    }
}

/// Runs `body` until it ends or SIGTERM/SIGINT arrives (then it is cancelled). Meanwhile the
/// process hands back what it no longer uses, as Go's scavenger does for upstream's components:
/// the code only start-up ran (once, after the first lists), and freed heap pages every 10 s
/// (a watch event's parse is freed at once; the pages would otherwise stay resident).
func runUntilSignalled(_ logger: Logger, _ body: @escaping @Sendable () async throws -> Void) async throws {
    let work = Task { try await body() }
    let upkeep = Task.detached(priority: .background) {
        try? await Task.sleep(for: .seconds(5))
        ResidentMemory.releaseFreeHeapPages()
        ResidentMemory.unmapCleanFilePages()
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(10))
            ResidentMemory.releaseFreeHeapPages()
        }
    }
    defer { upkeep.cancel() }
    let signals = [SIGTERM, SIGINT].map { sig -> any DispatchSourceSignal in
        signal(sig, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: sig)
        s.setEventHandler { logger.info("received \(sig == SIGTERM ? "SIGTERM" : "SIGINT"); stopping"); work.cancel() }
        s.resume()
        return s
    }
    defer { signals.forEach { $0.cancel() } }
    try await work.value
}
