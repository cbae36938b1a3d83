import ArgumentParser
import ControllerKit
import CRI
import Foundation
import KubeAPI
import KubeClient
import Kubelet
import KubeletServer
import Logging
import ServiceLifecycle

/// The kubelet's flags that `switchyard kubelet` and `switchyard agent` share (kubelet's names).
struct KubeletFlags: ParsableArguments {
    @Option(name: .customLong("node-ip"), help: "The node's address (default: its first global IPv4 address).")
    var nodeIP: String?

    @Option(name: .customLong("container-runtime-endpoint"), help: "The CRI runtime's socket.")
    var runtimeEndpoint = "unix:///run/containerd/containerd.sock"

    @Option(name: .customLong("max-pods"), help: "Pods this node takes at most.")
    var maxPods: Int?

    @Option(name: .customLong("register-with-taints"), help: "Taints to register the node with: key=value:Effect,…")
    var registerWithTaints: String?

    @Option(name: .customLong("cloud-provider"), help: "external: a cloud controller manager initialises the node (it registers with the node.cloudprovider.kubernetes.io/uninitialized taint).")
    var cloudProvider: String?

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

    @Option(name: .customLong("pod-manifest-path"), help: "A directory of pod manifests to run as static pods (their mirror pods appear in the API).")
    var podManifestPath: String?

    @Option(name: .customLong("port"), help: "The port of the kubelet's API, HTTPS (default 10250; 0 takes a free one).")
    var port: Int?

    @Option(name: .customLong("address"), help: "The address the kubelet's API listens on (default 0.0.0.0).")
    var address: String?

    @Option(name: .customLong("tls-cert-file"), help: "The kubelet's serving certificate (default: a self-signed one in --cert-dir).")
    var tlsCertFile: String?

    @Option(name: .customLong("tls-private-key-file"), help: "The key of --tls-cert-file.")
    var tlsPrivateKeyFile: String?

    @Option(name: .customLong("cert-dir"), help: "Where the self-signed serving certificate is kept (default <root-dir>/pki).")
    var certDir: String?

    @Option(name: .customLong("anonymous-auth"), help: "Serve requests to the kubelet's API without credentials as system:anonymous (default true; false with --config, as upstream's file defaults).")
    var anonymousAuth: Bool?

    @Option(name: .customLong("client-ca-file"), help: "Authenticate clients of the kubelet's API presenting a certificate signed by this CA (the API server's kubelet client).")
    var clientCAFile: String?

    @Option(name: .customLong("authentication-token-webhook"), help: "Check bearer tokens to the kubelet's API with a TokenReview to the API server (default false; true with --config).")
    var authenticationTokenWebhook: Bool?

    @Option(name: .customLong("authentication-token-webhook-cache-ttl"), help: "How long TokenReview answers are kept (default 2m0s).")
    var authenticationTokenWebhookCacheTTL: String?

    @Option(name: .customLong("authorization-mode"), help: "AlwaysAllow, or Webhook: each request to the kubelet's API a SubjectAccessReview on nodes/proxy, nodes/log, … (default AlwaysAllow; Webhook with --config).")
    var authorizationMode: String?

    @Option(name: .customLong("authorization-webhook-cache-authorized-ttl"), help: "How long allowed SubjectAccessReview answers are kept (default 5m0s).")
    var authorizationWebhookCacheAuthorizedTTL: String?

    @Option(name: .customLong("authorization-webhook-cache-unauthorized-ttl"), help: "How long refused SubjectAccessReview answers are kept (default 30s).")
    var authorizationWebhookCacheUnauthorizedTTL: String?

    static func pairs(_ s: String, flag: String) throws -> [(String, String)] {
        try s.split(separator: ",").map { item in
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw ValidationError("\(flag): \(item): want key=value") }
            return (kv[0], kv[1])
        }
    }

    /// The configuration: `configFile` (a KubeletConfiguration) first, the flags over it.
    func configuration(nodeName: String, configFile: String?) throws -> KubeletConfiguration {
        var c = KubeletConfiguration(nodeName: nodeName.lowercased())
        if let configFile {
            c.applyFileDefaults()
            guard let text = try? String(contentsOfFile: configFile, encoding: .utf8) else { throw ValidationError("--config \(configFile): cannot read it") }
            do { try c.apply(try YAMLToJSON.convert(text)) } catch { throw ValidationError("--config \(configFile): \(error)") }
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
        switch cloudProvider ?? "" {
        case "": break
        case "external":
            // As upstream's kubelet: the cloud-node controller removes it once it has initialised the node.
            c.registerWithTaints.append(["key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"])
        default: throw ValidationError("--cloud-provider: external or empty (the in-tree providers are gone upstream too)")
        }
        if let clusterDNS { c.clusterDNS = clusterDNS.split(separator: ",").map(String.init) }
        if let clusterDomain { c.clusterDomain = clusterDomain }
        c.rootDir = rootDir
        if let podLogsDir { c.podLogsDir = podLogsDir }
        c.cniConfDir = cniConfDir
        if let port {
            guard (0...65535).contains(port) else { throw ValidationError("--port \(port): not a port") }
            c.port = port
        }
        if let address { c.address = address }
        if let podManifestPath { c.staticPodPath = podManifestPath }
        if let tlsCertFile { c.tlsCertFile = tlsCertFile }
        if let tlsPrivateKeyFile { c.tlsPrivateKeyFile = tlsPrivateKeyFile }
        c.certDir = certDir ?? c.rootDir + "/pki"
        if let anonymousAuth { c.anonymousAuth = anonymousAuth }
        if let clientCAFile { c.clientCAFile = clientCAFile }
        if let authenticationTokenWebhook { c.authenticationTokenWebhook = authenticationTokenWebhook }
        if let authorizationMode {
            guard ["AlwaysAllow", "Webhook"].contains(authorizationMode) else { throw ValidationError("--authorization-mode \(authorizationMode): want AlwaysAllow or Webhook") }
            c.authorizationMode = authorizationMode
        }
        func ttl(_ v: String?, _ flag: String) throws -> Duration? {
            guard let v else { return nil }
            do { return try KubeletConfiguration.duration(v) } catch { throw ValidationError("\(flag) \(v): \(error)") }
        }
        if let d = try ttl(authenticationTokenWebhookCacheTTL, "--authentication-token-webhook-cache-ttl") { c.authenticationTokenWebhookCacheTTL = d }
        if let d = try ttl(authorizationWebhookCacheAuthorizedTTL, "--authorization-webhook-cache-authorized-ttl") { c.authorizationWebhookCacheAuthorizedTTL = d }
        if let d = try ttl(authorizationWebhookCacheUnauthorizedTTL, "--authorization-webhook-cache-unauthorized-ttl") { c.authorizationWebhookCacheUnauthorizedTTL = d }
        if !c.clientCAFile.isEmpty, !FileManager.default.isReadableFile(atPath: c.clientCAFile) {
            throw ValidationError("--client-ca-file \(c.clientCAFile): cannot read it")
        }
        return c
    }

    /// Where a kubelet without a client certificate gets one.
    enum BootstrapSource {
        /// `--bootstrap-kubeconfig`: the server, its CA and a bootstrap token.
        case kubeconfig(String)
        /// `switchyard agent --token`: found by token discovery first.
        case token(server: String, token: String, caCertHashes: [String], skipCAVerification: Bool)
    }

    /// TLS bootstrap when `kubeconfig` cannot be used (missing, or its certificate in
    /// `certDir` expired) and there is a `source`; then, with `rotate`, the rotation task.
    func clientCertificate(nodeName: String, kubeconfig: String, certDir: String, source: BootstrapSource?, rotate: Bool,
                           logger: Logger) async throws -> Task<Void, Never>? {
        let expired = KubeletClientCertificate.current(certDir: certDir).map { $0.notAfter <= Date() } ?? false
        if let source, (try? Kubeconfig.load(path: kubeconfig)) == nil || expired {
            do {
                let client: KubeClient, server: String, ca: String
                switch source {
                case .kubeconfig(let path):
                    let b = try Kubeconfig.load(path: path)
                    guard let pem = b.tls?.certificateAuthority else { throw KubeletClientCertificate.Failure("--bootstrap-kubeconfig \(path): no certificate-authority") }
                    (client, server, ca) = (KubeClient(config: b), b.server, String(decoding: pem, as: UTF8.self))
                case .token(let s, let token, let hashes, let skip):
                    ca = try await KubeletClientCertificate.discover(server: s, token: token, caCertHashes: hashes, skipCAVerification: skip, logger: logger)
                    guard let url = URL(string: s), let host = url.host else { throw ValidationError("--server \(s): not a URL") }
                    client = KubeClient(config: Kubeconfig(server: s, host: host, port: url.port ?? 443, tls: .init(certificateAuthority: Array(ca.utf8)), token: token))
                    server = s
                }
                let (cert, key) = try await KubeletClientCertificate.request(client, nodeName: nodeName, logger: logger)
                try KubeletClientCertificate.store(cert: cert, key: key, certDir: certDir, kubeconfig: kubeconfig, server: server, caPEM: ca)
                logger.info("TLS bootstrap: node \(nodeName) has its client certificate; kubeconfig in \(kubeconfig)")
            } catch let e as ValidationError { throw e } catch {
                throw ValidationError("TLS bootstrap: \(error)")
            }
        }
        guard rotate else { return nil }
        guard KubeletClientCertificate.current(certDir: certDir) != nil else {
            logger.warning("--rotate-certificates: no client certificate of the kubelet's own in \(certDir) to rotate")
            return nil
        }
        return Task { await KubeletClientCertificate.rotate(kubeconfig: kubeconfig, certDir: certDir, nodeName: nodeName, logger: logger) }
    }

    /// The API client, the runtime (asked once with a short deadline: a wrong endpoint is an
    /// error in seconds, while the kubelet's own calls wait for a connection that comes and
    /// goes) and the kubelet over them.
    func kubelet(_ c: KubeletConfiguration, kubeconfig: String, logger: Logger) async throws -> (Kubelet, KubeletAccess) {
        var c = c
        let client: KubeClient
        do { client = KubeClient(config: try Kubeconfig.load(path: kubeconfig)) } catch { throw ValidationError("--kubeconfig \(kubeconfig): \(error)") }
        let access: KubeletAccess
        do { access = try KubeletAccess.from(c, kubeconfig: client.config) } catch { throw ValidationError("the kubelet's API authentication and authorization: \(error)") }
        let runtime: CRIClient
        do { runtime = try CRIClient(endpoint: runtimeEndpoint) } catch { throw ValidationError("--container-runtime-endpoint: \(error)") }
        let version: Runtime_V1_VersionResponse
        do {
            let probe = try CRIClient(endpoint: runtimeEndpoint, timeout: .seconds(10))
            defer { probe.close() }
            version = try await probe.version()
        } catch {
            throw ValidationError("the container runtime at \(runtimeEndpoint) does not answer: \(error)")
        }
        c.runtimeName = version.runtimeName
        logger.info("kubelet for node \(c.nodeName): \(version.runtimeName) \(version.runtimeVersion) at \(runtimeEndpoint), API server \(client.config.server)")
        return (Kubelet(api: API(client, fieldManager: "kubelet"), runtime: runtime, config: c, logger: logger), access)
    }
}

/// `switchyard kubelet`: the node agent, kubelet's flags where they apply.
struct KubeletCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kubelet",
        abstract: "Run the kubelet: register this node and run the pods bound to it through a CRI runtime (containerd).")

    @Option(help: "The kubeconfig of the API server (written by TLS bootstrap when --bootstrap-kubeconfig is given and it is missing or its certificate expired).")
    var kubeconfig: String

    @Option(name: .customLong("bootstrap-kubeconfig"), help: "A kubeconfig with a bootstrap token, with which the kubelet asks for its client certificate (a CertificateSigningRequest) when --kubeconfig has none.")
    var bootstrapKubeconfig: String?

    @Option(name: .customLong("rotate-certificates"), help: "Ask for a new client certificate as the current one nears its end (true/false; `--rotate-certificates` alone is true).")
    var rotateCertificates: Bool?

    @Option(help: "A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1).")
    var config: String?

    @Option(name: .customLong("hostname-override"), help: "The node's name (default: this host's name).")
    var hostnameOverride: String?

    @OptionGroup var flags: KubeletFlags

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    @Option(name: .customLong("logging-format"), help: "How log lines are written: text or json (component-base's).")
    var loggingFormat: LoggingFormat = .text

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: logLevel) ?? .info, format: loggingFormat)
        let logger = Logger(label: "switchyard.kubelet")
        let c = try flags.configuration(nodeName: hostnameOverride ?? ProcessInfo.processInfo.hostName, configFile: config)
        let rotation = try await flags.clientCertificate(nodeName: c.nodeName, kubeconfig: kubeconfig, certDir: c.certDir,
                                                         source: bootstrapKubeconfig.map { .kubeconfig($0) }, rotate: rotateCertificates ?? false, logger: logger)
        defer { rotation?.cancel() }
        let (kubelet, access) = try await flags.kubelet(c, kubeconfig: kubeconfig, logger: logger)
        try await runUntilSignalled(logger) { try await KubeletServer.serve(kubelet, access: access) }
    }
}

/// `switchyard agent`: a node's kubelet and proxy in one process, as k3s's agent runs them, both
/// following the API server the kubeconfig names; the proxy's flags are kube-proxy's, the
/// kubelet's its own (its KubeletConfiguration is `--kubelet-config`, `--config` being the
/// proxy's).
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run a node: the kubelet and the service proxy in one process, following the API server.")

    @Option(help: "The kubeconfig of the API server (the kubelet's and the proxy's); with --token, where the one TLS bootstrap makes is written (default <root-dir>/kubeconfig).")
    var kubeconfig: String?

    @Option(help: "With --token: the API server to join (https://HOST:PORT).")
    var server: String?

    @Option(help: "Join with this bootstrap token (ID.SECRET, from `switchyard token create`): find the cluster through its cluster-info, ask for the node's client certificate.")
    var token: String?

    @Option(name: .customLong("ca-cert-hash"), help: "sha256:HEX of the cluster CA's public key, which cluster-info's CA must match (kubeadm's --discovery-token-ca-cert-hash; repeatable).")
    var caCertHash: [String] = []

    @Flag(name: .customLong("discovery-token-unsafe-skip-ca-verification"), help: "Trust cluster-info's CA without --ca-cert-hash (its token signature is still checked).")
    var skipCAVerification = false

    @Option(name: .customLong("rotate-certificates"), help: "Ask for a new client certificate as the current one nears its end (default: true when joined with --token).")
    var rotateCertificates: Bool?

    @Option(name: .customLong("kubelet-config"), help: "A KubeletConfiguration file.")
    var kubeletConfig: String?

    @OptionGroup var kubelet: KubeletFlags
    @OptionGroup var proxy: ProxyFlags

    @Option(name: .customLong("healthz-bind-address"), help: "The proxy's ip:port for /healthz (default 0.0.0.0:10256; empty disables).")
    var healthzBindAddress: String?

    @Option(name: .customLong("metrics-bind-address"), help: "The proxy's ip:port for /metrics (default 127.0.0.1:10249; empty disables).")
    var metricsBindAddress: String?

    func run() async throws {
        bootstrapLogging(proxy.logLevel, format: proxy.loggingFormat)
        let logger = Logger(label: "switchyard.agent")
        let name = proxy.hostnameOverride ?? ProcessInfo.processInfo.hostName
        let c = try kubelet.configuration(nodeName: name, configFile: kubeletConfig)
        var source: KubeletFlags.BootstrapSource?
        if let token {
            guard let server else { throw ValidationError("--token needs --server") }
            source = .token(server: server, token: token, caCertHashes: caCertHash, skipCAVerification: skipCAVerification)
        } else if server != nil || !caCertHash.isEmpty {
            throw ValidationError("--server and --ca-cert-hash go with --token")
        }
        guard let kubeconfig = kubeconfig ?? (token == nil ? nil : c.rootDir + "/kubeconfig") else { throw ValidationError("--kubeconfig FILE (or --token) is required") }
        let rotation = try await kubelet.clientCertificate(nodeName: c.nodeName, kubeconfig: kubeconfig, certDir: c.certDir, source: source,
                                                           rotate: rotateCertificates ?? (token != nil), logger: logger)
        defer { rotation?.cancel() }
        let (node, access) = try await kubelet.kubelet(c, kubeconfig: kubeconfig, logger: Logger(label: "switchyard.kubelet"))
        var p = ProxyProcess(flags: proxy, manifests: [], kubeconfig: kubeconfig, healthzBindAddress: healthzBindAddress,
                             metricsBindAddress: metricsBindAddress, minSyncPeriod: nil, syncPeriod: nil)
        p.command = "switchyard agent"
        logger.info("agent for node \(c.nodeName): the kubelet and the \(proxy.proxyMode ?? "default") proxy")
        try await p.run(beside: [KubeletService(kubelet: node, access: access)])
    }
}

/// The kubelet as one of a service group's services: it runs until the group shuts down.
struct KubeletService: ServiceLifecycle.Service {
    let kubelet: Kubelet
    let access: KubeletAccess
    func run() async throws {
        try await cancelWhenGracefulShutdown { try await KubeletServer.serve(kubelet, access: access) }
    }
}
