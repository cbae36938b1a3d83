import CloudProvider
import ControllerKit
import KubeAPI
import Logging

/// cloud-controller-manager: the controllers a provider has the facets for, on shared informers.
public final class CloudControllerManager: Sendable {
    /// The controllers by upstream's names, and the provider facet each needs.
    public static let known = ["cloud-node", "cloud-node-lifecycle", "service", "route"]

    public struct Options: Sendable {
        public var controllers: [String] = known
        public var clusterName = "kubernetes"
        /// `--configure-cloud-routes`: the route controller runs (with `--allocate-node-cidrs`, upstream's condition).
        public var configureCloudRoutes = true
        public var nodeMonitorPeriod: Duration = .seconds(5)
        public var routeReconciliationPeriod: Duration = .seconds(10)
        public init() {}
    }

    let informers: SharedInformers
    let runners: [@Sendable () async -> Void]
    public let running: [String]

    public init(api: API, cloud: any CloudProvider, options: Options, logger: Logger = Logger(label: "switchyard.cloud-controller-manager")) throws {
        informers = SharedInformers(api: api, logger: logger)
        var runners: [@Sendable () async -> Void] = []
        var running: [String] = []
        for name in options.controllers {
            guard Self.known.contains(name) else { throw CloudError("unknown controller \(name): one of \(Self.known.joined(separator: ", "))") }
            switch name {
            case "cloud-node", "cloud-node-lifecycle":
                // One type holds both (initialisation and lifecycle), started once.
                guard !running.contains("cloud-node"), !running.contains("cloud-node-lifecycle") else { running.append(name); continue }
                guard let instances = cloud.instances else { logger.warning("\(name): the \(cloud.providerName) cloud has no instances; not started"); continue }
                let c = NodeController(api: api, cloud: instances, informers: informers, monitorPeriod: options.nodeMonitorPeriod, logger: logger)
                runners.append { await c.run() }
            case "service":
                guard let lb = cloud.loadBalancer else { logger.warning("service: the \(cloud.providerName) cloud has no load balancers; not started"); continue }
                let c = ServiceController(api: api, cloud: lb, clusterName: options.clusterName, informers: informers, logger: logger)
                runners.append { await c.run() }
            default:
                guard options.configureCloudRoutes else { continue }
                guard let routes = cloud.routes else { logger.warning("route: the \(cloud.providerName) cloud has no routes; not started"); continue }
                let c = RouteController(api: api, cloud: routes, clusterName: options.clusterName, informers: informers,
                                        reconcilePeriod: options.routeReconciliationPeriod, logger: logger)
                runners.append { await c.run() }
            }
            running.append(name)
        }
        self.runners = runners
        self.running = running
    }

    /// Runs the informers and the controllers until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            for r in runners { g.addTask { await r() } }
            g.addTask { await self.informers.run() }
            await g.next()
            g.cancelAll()
        }
    }
}
