import ArgumentParser
import ControllerKit
import CRI
import Foundation
import KubeAPI
import KubeClient
import Kubelet
import Logging

/// `switchyard kubelet`: the node agent, kubelet's flags where they apply.
struct KubeletCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kubelet",
        abstract: "Run the kubelet: register this node and run the pods bound to it through a CRI runtime (containerd).")

    @Option(help: "The kubeconfig of the API server.")
    var kubeconfig: String

    @Option(help: "A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1).")
    var config: String?

    @Option(name: .customLong("hostname-override"), help: "The node's name (default: this host's name).")
    var hostnameOverride: String?

    @Option(name: .customLong("node-ip"), help: "The node's address (default: its first global IPv4 address).")
    var nodeIP: String?

    @Option(name: .customLong("container-runtime-endpoint"), help: "The CRI runtime's socket.")
    var runtimeEndpoint = "unix:///run/containerd/containerd.sock"

    @Option(name: .customLong("max-pods"), help: "Pods this node takes at most.")
    var maxPods: Int?

    @Option(name: .customLong("register-with-taints"), help: "Taints to register the node with: key=value:Effect,…")
    var registerWithTaints: String?

    @Option(name: .customLong("node-labels"), help: "Labels to register the node with: key=value,…")
    var nodeLabels: String?

    @Option(name: .customLong("cluster-dns"), help: "The cluster DNS server's address(es), comma-separated.")
    var clusterDNS: String?

    @Option(name: .customLong("cluster-domain"), help: "The cluster's DNS domain.")
    var clusterDomain: String?

    @Option(name: .customLong("root-dir"), help: "Where the kubelet keeps pod volumes and state.")
    var rootDir = "/var/lib/kubelet"

    @Option(name: .customLong("pod-logs-dir"), help: "Where container logs go (podLogsDir).")
    var podLogsDir: String?

    @Option(name: .customLong("cni-conf-dir"), help: "The CNI configuration directory of the runtime; the node's pod CIDR is written there.")
    var cniConfDir = "/etc/cni/net.d"

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    static func pairs(_ s: String, flag: String) throws -> [(String, String)] {
        try s.split(separator: ",").map { item in
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw ValidationError("\(flag): \(item): want key=value") }
            return (kv[0], kv[1])
        }
    }

    func kubeletConfiguration() throws -> KubeletConfiguration {
        var c = KubeletConfiguration(nodeName: (hostnameOverride ?? ProcessInfo.processInfo.hostName).lowercased())
        if let config {
            guard let text = try? String(contentsOfFile: config, encoding: .utf8) else { throw ValidationError("--config \(config): cannot read it") }
            do { try c.apply(try YAMLToJSON.convert(text)) } catch { throw ValidationError("--config \(config): \(error)") }
        }
        if let nodeIP { c.nodeIP = nodeIP }
        if let maxPods { c.maxPods = maxPods }
        if let nodeLabels { c.nodeLabels = Dictionary(try Self.pairs(nodeLabels, flag: "--node-labels"), uniquingKeysWith: { _, b in b }) }
        if let registerWithTaints {
            c.registerWithTaints = try registerWithTaints.split(separator: ",").map { t in
                let parts = t.split(separator: ":", maxSplits: 1).map(String.init)
                let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
                guard parts.count == 2, effects.contains(parts[1]) else { throw ValidationError("--register-with-taints: \(t): want key[=value]:NoSchedule|PreferNoSchedule|NoExecute") }
                let kv = parts[0].split(separator: "=", maxSplits: 1).map(String.init)
                var taint: [String: JSONValue] = ["key": .string(kv[0]), "effect": .string(parts[1])]
                if kv.count == 2 { taint["value"] = .string(kv[1]) }
                return .object(taint)
            }
        }
        if let clusterDNS { c.clusterDNS = clusterDNS.split(separator: ",").map(String.init) }
        if let clusterDomain { c.clusterDomain = clusterDomain }
        c.rootDir = rootDir
        if let podLogsDir { c.podLogsDir = podLogsDir }
        c.cniConfDir = cniConfDir
        return c
    }

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "switchyard.kubelet")
        var c = try kubeletConfiguration()
        let client: KubeClient
        do { client = KubeClient(config: try Kubeconfig.load(path: kubeconfig)) } catch { throw ValidationError("--kubeconfig \(kubeconfig): \(error)") }
        let api = API(client, fieldManager: "kubelet")
        let runtime: CRIClient
        do { runtime = try CRIClient(endpoint: runtimeEndpoint) } catch { throw ValidationError("--container-runtime-endpoint: \(error)") }
        let version: Runtime_V1_VersionResponse
        do { version = try await runtime.version() } catch { throw ValidationError("the container runtime at \(runtimeEndpoint) does not answer: \(error)") }
        c.runtimeName = version.runtimeName
        logger.info("kubelet for node \(c.nodeName): \(version.runtimeName) \(version.runtimeVersion) at \(runtimeEndpoint), API server \(client.config.server)")
        let kubelet = Kubelet(api: api, runtime: runtime, config: c, logger: logger)
        try await runUntilSignalled(logger) { try await kubelet.run() }
    }
}
