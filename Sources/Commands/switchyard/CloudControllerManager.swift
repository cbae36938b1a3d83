import ArgumentParser
import CloudControllers
import CloudProvider
import ControllerKit
import Foundation
import KubeAPI
import Logging
import NetlabCloudProvider

/// `switchyard cloud-controller-manager`: the cloud controller manager, with upstream's flags.
struct CloudControllerManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cloud-controller-manager",
        abstract: "Tie the cluster to a cloud (cloud-controller-manager): nodes' machines, routes to pod ranges, load balancers for Services.")

    @OptionGroup var flags: ComponentFlags

    @Option(name: .customLong("cloud-provider"), help: "The cloud: netlab (the lab cloud of switchyard-netlab).")
    var cloudProvider: String?

    @Option(name: .customLong("cloud-config"), help: "The provider's configuration file (netlab: {\"endpoint\": URL}).")
    var cloudConfig: String?

    @Option(name: .customLong("controllers"), help: "Controllers to run: '*' (all), NAME, -NAME; comma-separated. Known: \(CloudControllerManager.known.joined(separator: ", ")).")
    var controllers = "*"

    @Option(name: .customLong("cluster-name"), help: "The cluster's name, a prefix of its cloud resources' names.")
    var clusterName = "kubernetes"

    @Option(name: .customLong("configure-cloud-routes"), help: "Create routes for the nodes' pod ranges in the cloud (true/false).")
    var configureCloudRoutes = true

    @Option(name: .customLong("node-monitor-period"), help: "How often the cloud is asked about nodes that are not Ready (Go duration).")
    var nodeMonitorPeriod = "5s"

    @Option(name: .customLong("route-reconciliation-period"), help: "How often every route is checked (Go duration).")
    var routeReconciliationPeriod = "10s"

    static func controllerList(_ flag: String) throws -> [String] {
        var out: [String] = []
        var removed: Set<String> = []
        for item in flag.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            if item == "*" { out += CloudControllerManager.known; continue }
            let name = item.hasPrefix("-") ? String(item.dropFirst()) : item
            guard CloudControllerManager.known.contains(name) else {
                throw ValidationError("--controllers: unknown controller \(name): one of \(CloudControllerManager.known.joined(separator: ", "))")
            }
            if item.hasPrefix("-") { removed.insert(name) } else { out.append(name) }
        }
        var seen = Set<String>()
        return out.filter { !removed.contains($0) && seen.insert($0).inserted }
    }

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: flags.logLevel) ?? .info, format: flags.loggingFormat)
        let logger = Logger(label: "switchyard.cloud-controller-manager")
        guard let name = cloudProvider else { throw ValidationError("--cloud-provider is required: netlab") }
        let cloud: any CloudProvider
        switch name {
        case "netlab":
            guard let file = cloudConfig else { throw ValidationError("--cloud-provider netlab needs --cloud-config FILE ({\"endpoint\": URL})") }
            do { cloud = try NetlabCloud(configFile: file) } catch { throw ValidationError("\(error)") }
        default:
            throw ValidationError("--cloud-provider \(name): unknown cloud provider; known: netlab")
        }
        var options = CloudControllerManager.Options()
        options.controllers = try Self.controllerList(controllers)
        options.clusterName = clusterName
        options.configureCloudRoutes = configureCloudRoutes
        guard let monitor = GoDuration.seconds(nodeMonitorPeriod), monitor > 0, let routes = GoDuration.seconds(routeReconciliationPeriod), routes > 0 else {
            throw ValidationError("--node-monitor-period, --route-reconciliation-period: Go durations (5s, 10s)")
        }
        options.nodeMonitorPeriod = .milliseconds(Int(monitor * 1000))
        options.routeReconciliationPeriod = .milliseconds(Int(routes * 1000))
        let api = API(try flags.client(nil), fieldManager: "cloud-controller-manager")
        let manager: CloudControllerManager
        do { manager = try CloudControllerManager(api: api, cloud: cloud, options: options, logger: logger) } catch { throw ValidationError("\(error)") }
        logger.info("cloud-controller-manager: cloud \(name), controllers \(manager.running.joined(separator: ", "))")
        try await runUntilSignalled(logger) {
            try await runLeading(api, elect: flags.leaderElect ?? true, name: "cloud-controller-manager", flags: flags, logger: logger) { await manager.run() }
        }
    }
}
