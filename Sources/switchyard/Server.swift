import APIServer
import ArgumentParser
import Foundation
import KubeAPI
import KubeStore
import Logging
import NIOSSL
import ProxyCore

/// `switchyard server`: the Kubernetes API for kubectl, the proxy and netlab.
struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run the Kubernetes API server (on an embedded SQLite store) that kubectl and the proxy talk to.")

    @Option(help: "Where the state (state.db) and the clients' kubeconfig are kept.")
    var dataDir = "/var/lib/switchyard"

    @Option(name: .customLong("bind-address"), help: "The address to serve on.")
    var bindAddress = "127.0.0.1"

    @Option(help: "The port to serve on (0: any free port, written to the kubeconfig).")
    var port = 8080

    @Option(name: .customLong("service-cluster-ip-range"), help: "ClusterIPs are allocated from this IPv4 CIDR.")
    var serviceClusterIPRange = "10.96.0.0/12"

    @Option(name: .customLong("service-node-port-range"), help: "NodePorts are allocated from this range (low-high).")
    var serviceNodePortRange = "30000-32767"

    @Option(name: .customLong("etcd-servers"), help: "Keep the state in this etcd cluster (comma-separated http:// URLs) instead of SQLite.")
    var etcdServers: String?

    @Option(name: .customLong("tls-cert-file"), help: "Serve HTTPS with this certificate (PEM; a chain may follow it). The kubeconfig written trusts it.")
    var tlsCertFile: String?

    @Option(name: .customLong("tls-private-key-file"), help: "The private key of --tls-cert-file (PEM).")
    var tlsPrivateKeyFile: String?

    @Option(name: .customLong("token-auth-file"), help: "Require a bearer token from this file (kube-apiserver's format: token,user,uid[,\"groups\"]); the kubeconfig written carries its first.")
    var tokenAuthFile: String?

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    func validate() throws {
        guard let c = CIDR(serviceClusterIPRange), c.address.family == .ipv4, c.prefixLength >= 8, c.prefixLength <= 29 else {
            throw ValidationError("--service-cluster-ip-range: an IPv4 CIDR between /8 and /29, not \(serviceClusterIPRange)")
        }
        guard nodePortRange != nil else { throw ValidationError("--service-node-port-range: low-high within 1-65535, not \(serviceNodePortRange)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port: 0-65535") }
        guard (tlsCertFile == nil) == (tlsPrivateKeyFile == nil) else {
            throw ValidationError("--tls-cert-file and --tls-private-key-file go together")
        }
    }

    var nodePortRange: ClosedRange<Int>? {
        let parts = serviceNodePortRange.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 1, parts[0] <= parts[1], parts[1] <= 65535 else { return nil }
        return parts[0]...parts[1]
    }

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "switchyard.server")
        // The certificate and tokens first: a bad one stops the server before it touches the store.
        var tokens: TokenFile?
        if let file = tokenAuthFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("--token-auth-file \(file): cannot read it") }
            do { tokens = try TokenFile(contents: text, source: file) } catch { throw ValidationError("--token-auth-file: \(error)") }
        }
        var tls: TLSConfiguration?
        var ca: [UInt8]?
        if let cert = tlsCertFile, let key = tlsPrivateKeyFile {
            do {
                tls = try APIServer.tlsConfiguration(certificateFile: cert, keyFile: key)
                ca = try APIServer.certificatesPEM(file: cert)
            } catch {
                throw ValidationError("--tls-cert-file \(cert), --tls-private-key-file \(key): \(error)")
            }
        }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let store: any Store = try etcdServers.map { try EtcdStore(servers: $0.split(separator: ",").map(String.init)) }
            ?? SQLiteStore(path: dataDir + "/state.db")
        let admission = Admission(allocator: Allocator(serviceRange: CIDR(serviceClusterIPRange)!, nodePorts: nodePortRange!))
        try await admission.load(from: store)
        let handler = APIHandler(store: store, admission: admission)
        // The namespaces every cluster starts with.
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let r = await handler.handle(APIRequest(method: "POST", path: "/api/v1/namespaces",
                                                    body: JSONValue.object(["metadata": ["name": .string(ns)]]).serialized()))
            guard r.code == 201 || r.code == 409 else { throw ValidationError("creating namespace \(ns): \(r.json?.text() ?? "")") }
        }
        let dataDir = self.dataDir, host = bindAddress
        let server = APIServer(handler: handler, host: host, port: port, tls: tls, tokens: tokens, logger: logger)
        let trusted = ca, token = tokens?.entries.first?.token
        let controller = EndpointSliceController(handler: handler)
        let startup = StartupSteps(logger: logger)
        let controllerTask = Task {
            while !Task.isCancelled {
                do { try await controller.run(onSynced: { await startup.done(.controllerSynced) }) } catch { logger.error("endpoint slice controller: \(error); restarting") }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { controllerTask.cancel() }
        try await server.run { port in
            let url = "\(trusted == nil ? "http" : "https")://\(host.contains(":") ? "[\(host)]" : host):\(port)"
            do {
                try APIServer.writeKubeconfig(APIServer.kubeconfig(server: url, certificateAuthority: trusted, token: token), to: dataDir + "/kubeconfig")
                logger.info("serving the Kubernetes API at \(url); kubeconfig in \(dataDir)/kubeconfig")
            } catch {
                logger.error("writing \(dataDir)/kubeconfig: \(error)")
            }
            await startup.done(.listening)
        }
    }
}

/// The server's start-up steps (listening; the EndpointSlice controller's first pass). When both
/// are done, the code only start-up ran is unmapped, once.
actor StartupSteps {
    enum Step { case listening, controllerSynced }
    private var finished = Set<Step>()
    private var trimmed = false
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func done(_ step: Step) {
        finished.insert(step)
        guard finished.count == 2, !trimmed else { return }
        trimmed = true
        ResidentMemory.releaseFreeHeapPages()
        if let kib = ResidentMemory.unmapCleanFilePages() {
            logger.debug("started; unmapped \(kib) KiB of start-up code and read-only data")
        }
    }
}
