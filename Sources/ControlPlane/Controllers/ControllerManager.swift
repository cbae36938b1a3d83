import Foundation
import Logging
import KubeAPI
import ClusterPKI
import ControllerKit

/// kube-controller-manager: the controllers `--controllers` names, over one set of shared
/// informers, writing through the API.
public struct ControllerManager: Sendable {
    public let api: API
    public let controllers: [any Controller]
    /// With `--use-service-account-credentials`: the controllers' accounts and their tokens.
    public let credentials: ServiceAccountCredentials?
    let logger: Logger

    /// The service account each controller runs as with `--use-service-account-credentials`
    /// (upstream's names; the three certificate controllers share one, as the two node ones).
    public static let serviceAccounts: [String: String] = [
        "deployment": "deployment-controller", "replicaset": "replicaset-controller", "replicationcontroller": "replication-controller",
        "job": "job-controller", "cronjob": "cronjob-controller", "daemonset": "daemon-set-controller",
        "nodelifecycle": "node-controller", "nodeipam": "node-controller", "serviceaccount": "service-account-controller",
        "root-ca-certificate-publisher": "root-ca-cert-publisher", "garbage-collector": "generic-garbage-collector",
        "pod-garbage-collector": "pod-garbage-collector", "disruption": "disruption-controller",
        "ttl-after-finished": "ttl-after-finished-controller", "namespace": "namespace-controller", "endpoint": "endpoint-controller",
        "endpointslice": "endpointslice-controller", "csrapproving": "certificate-controller", "csrsigning": "certificate-controller",
        "csrcleaner": "certificate-controller", "bootstrapsigner": "bootstrap-signer", "tokencleaner": "token-cleaner",
        "resourcequota": "resourcequota-controller",
    ]

    /// The controllers this manager knows, in kube-controller-manager's names, and whether each
    /// runs by default (`*`).
    public static let known: [(name: String, byDefault: Bool)] = [
        ("deployment", true), ("replicaset", true), ("replicationcontroller", true), ("job", true), ("cronjob", true),
        ("daemonset", true), ("nodelifecycle", true), ("nodeipam", true), ("serviceaccount", true),
        ("root-ca-certificate-publisher", true), ("garbage-collector", true), ("pod-garbage-collector", true),
        ("disruption", true), ("ttl-after-finished", true), ("namespace", true),
        ("endpoint", true), ("endpointslice", true), ("csrapproving", true), ("csrsigning", true), ("csrcleaner", true), ("resourcequota", true),
        ("bootstrapsigner", false), ("tokencleaner", false),
    ]

    public struct Options: Sendable {
        /// `--controllers`: `*` (the defaults), `name`, `-name`.
        public var controllers: [String] = ["*"]
        public var clusterCIDR: String?
        public var allocateNodeCIDRs = false
        public var nodeCIDRMaskSize = 24
        /// The masks of a dual-stack cluster's ranges (`--node-cidr-mask-size-ipv4`, `-ipv6`).
        public var nodeCIDRMaskSizeIPv4 = 24
        public var nodeCIDRMaskSizeIPv6 = 64
        public var nodeMonitorGracePeriod: Double = 40
        public var nodeMonitorPeriod: Double = 5
        /// The CA bundle published as `kube-root-ca.crt` in every namespace.
        public var rootCA: String = ""
        public var concurrentSyncs = 5
        public var maxEndpointsPerSlice = 100
        /// The CA `csrsigning` signs with (`--cluster-signing-cert-file`, `--cluster-signing-key-file`);
        /// without one the controller does not run.
        public var signingCA: ClusterPKI?
        /// `--cluster-signing-duration`: the longest certificate it signs.
        public var signingDuration: TimeInterval = 365 * 86400
        /// `--use-service-account-credentials`: the caller gives the manager its
        /// `ServiceAccountCredentials`.
        public var useServiceAccountCredentials = false
        /// `--resource-quota-sync-period`: how often every quota's usage is counted again.
        public var resourceQuotaSyncPeriod: Double = 300
        public init() {}
    }

    /// Which controllers `--controllers` enables; an unknown name is an error, as upstream's.
    public static func enabled(_ list: [String]) throws -> [String] {
        let names = Set(known.map(\.name))
        for item in list where item != "*" {
            let n = item.hasPrefix("-") ? String(item.dropFirst()) : item
            guard names.contains(n) else { throw APIStatusError(code: 0, reason: "Invalid", message: "\"\(n)\" is not in the list of known controllers") }
        }
        return known.filter { c in
            if list.contains("-" + c.name) { return false }
            if list.contains(c.name) { return true }
            return list.contains("*") && c.byDefault
        }.map(\.name)
    }

    /// `credentials`: each controller writes as its own service account (the informers read as
    /// `api`'s identity).
    public init(api: API, options: Options = Options(), credentials: ServiceAccountCredentials? = nil,
                logger: Logger = Logger(label: "switchyard.controller-manager")) throws {
        self.api = api
        self.logger = logger
        self.credentials = credentials
        var list: [any Controller] = []
        let n = options.concurrentSyncs
        for name in try Self.enabled(options.controllers) {
            let account = Self.serviceAccounts[name]
            let api = account.flatMap { credentials?.api(serviceAccount: $0, fieldManager: "kube-controller-manager") } ?? api
            let before = list.count
            switch name {
            case "deployment": list.append(DeploymentController(api: api, workers: n))
            case "replicaset": list.append(ReplicaSetController(api: api, workers: n))
            case "replicationcontroller": list.append(ReplicaSetController(api: api, kind: "ReplicationController", workers: n))
            default: if let c = Self.make(name, api: api, options: options) { list.append(c) }
            }
            // Only a controller that runs gets its account, as upstream's.
            if list.count > before, let account { credentials?.register(account) }
        }
        controllers = list
    }

    /// The controllers beyond the workload ones (added as they are built).
    static func make(_ name: String, api: API, options: Options) -> (any Controller)? {
        switch name {
        case "job": JobController(api: api)
        case "cronjob": CronJobController(api: api)
        case "ttl-after-finished": TTLAfterFinishedController(api: api)
        case "daemonset": DaemonSetController(api: api)
        case "nodelifecycle": NodeLifecycleController(api: api, gracePeriod: options.nodeMonitorGracePeriod, monitorPeriod: options.nodeMonitorPeriod)
        case "nodeipam":
            // Only with --allocate-node-cidrs and a --cluster-cidr, as upstream.
            options.allocateNodeCIDRs ? options.nodeCIDRSets().map { NodeIPAMController(api: api, sets: $0) } : nil
        case "serviceaccount": NamespaceDefaultsController(api: api, kind: .serviceAccount)
        case "root-ca-certificate-publisher": options.rootCA.isEmpty ? nil : NamespaceDefaultsController(api: api, kind: .rootCA(options.rootCA))
        case "garbage-collector": GarbageCollector(api: api)
        case "pod-garbage-collector": PodGCController(api: api)
        case "disruption": DisruptionController(api: api)
        case "namespace": NamespaceController(api: api)
        case "endpoint": EndpointsController(api: api, workers: options.concurrentSyncs)
        case "csrapproving": CSRApprovingController(api: api)
        case "csrsigning": options.signingCA.map { CSRSigningController(api: api, ca: $0, duration: options.signingDuration) }
        case "csrcleaner": CSRCleanerController(api: api)
        case "resourcequota": ResourceQuotaController(api: api, resync: .milliseconds(Int64(options.resourceQuotaSyncPeriod * 1000)))
        case "bootstrapsigner": BootstrapTokenController(api: api, kind: .signer)
        case "tokencleaner": BootstrapTokenController(api: api, kind: .cleaner)
        case "endpointslice": EndpointSliceController(api: api, maxEndpointsPerSlice: options.maxEndpointsPerSlice, workers: options.concurrentSyncs)
        default: nil
        }
    }

    /// Sets up the informers, waits for them, runs every controller until cancelled.
    /// `onSynced` is called once the caches are filled, before the controllers start.
    public func run(onSynced: @escaping @Sendable () async -> Void = {}) async {
        let informers = SharedInformers(api: api)
        for c in controllers { c.setUp(informers) }
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await informers.run() }
            if let credentials = self.credentials { g.addTask { await credentials.run() } }
            g.addTask {
                await informers.waitForSync()
                if let credentials = self.credentials {
                    await credentials.start()
                    self.logger.info("controller-manager: controllers run as their service accounts in kube-system: \(credentials.accounts.joined(separator: ", "))")
                }
                await onSynced()
                self.logger.info("controller-manager: caches synced; started \(self.controllers.map(\.name).joined(separator: ", "))")
                await withTaskGroup(of: Void.self) { cg in
                    for c in self.controllers { cg.addTask { await c.run() } }
                }
            }
        }
    }
}

extension ControllerManager.Options {
    /// The node ranges of `--cluster-cidr` (one CIDR, or two of different families, comma-separated)
    /// with their masks: `--node-cidr-mask-size` for one CIDR, `--node-cidr-mask-size-ipv4` and
    /// `-ipv6` for two, as kube-controller-manager takes them. nil without a valid set.
    public func nodeCIDRSets() -> [NodeCIDRSet]? { try? nodeCIDRSetsChecked() }

    /// The same, with kube-controller-manager's reason when the flags do not make one.
    public func nodeCIDRSetsChecked() throws -> [NodeCIDRSet] {
        let parts = (clusterCIDR ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty else { throw NodeCIDRError("--allocate-node-cidrs needs a --cluster-cidr") }
        guard parts.count <= 2 else { throw NodeCIDRError("--cluster-cidr: at most two CIDRs (one per family)") }
        var sets: [NodeCIDRSet] = []
        for p in parts {
            guard let c = CIDR(p) else { throw NodeCIDRError("--cluster-cidr: \"\(p)\" is not a CIDR") }
            let mask = parts.count == 1 ? nodeCIDRMaskSize : (c.family == .ipv4 ? nodeCIDRMaskSizeIPv4 : nodeCIDRMaskSizeIPv6)
            let flag = parts.count == 1 ? "--node-cidr-mask-size" : (c.family == .ipv4 ? "--node-cidr-mask-size-ipv4" : "--node-cidr-mask-size-ipv6")
            guard let set = NodeCIDRSet(cluster: c, mask: mask) else {
                throw NodeCIDRError("\(flag) \(mask): between the cluster CIDR's prefix (\(c.prefixLength)) and 16 more, leaving room for addresses")
            }
            sets.append(set)
        }
        if sets.count == 2 && sets[0].cluster.family == sets[1].cluster.family {
            throw NodeCIDRError("--cluster-cidr: two CIDRs must be of different families (dual-stack)")
        }
        return sets
    }
}

public struct NodeCIDRError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
