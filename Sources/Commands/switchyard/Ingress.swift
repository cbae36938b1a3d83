import ArgumentParser
import ControllerKit
import Foundation
import IngressController
import IngressNginx
import KubeAPI
import KubeClient
import Logging

/// ingress-nginx's flags that this controller reads, with its defaults.
struct IngressFlags: ParsableArguments {
    @Option(name: .customLong("controller-class"), help: "The IngressClasses whose spec.controller is this are served.")
    var controllerClass = "k8s.io/ingress-nginx"

    @Option(name: .customLong("ingress-class"), help: "Ingresses with the kubernetes.io/ingress.class annotation of this value are served too.")
    var ingressClass = "nginx"

    @Option(name: .customLong("watch-ingress-without-class"), help: "Serve Ingresses that name no class (true/false; `--watch-ingress-without-class` alone is true).")
    var watchWithoutClass = false

    @Option(name: .customLong("http-port"), help: "nginx's HTTP port.")
    var httpPort = 80

    @Option(name: .customLong("https-port"), help: "nginx's HTTPS port.")
    var httpsPort = 443

    @Option(name: .customLong("bind-address"), help: "The address nginx listens on (default: all).")
    var bindAddress: String?

    @Option(name: .customLong("default-ssl-certificate"), help: "NAMESPACE/NAME of the TLS Secret the catch-all HTTPS server presents (default: unknown names are refused in the handshake).")
    var defaultSSLCertificate: String?

    @Option(name: .customLong("default-backend-service"), help: "NAMESPACE/NAME of the Service requests no rule matches go to (default: 404).")
    var defaultBackendService: String?

    @Option(name: .customLong("run-dir"), help: "Where nginx.conf, the certificates, nginx's pid, logs and temporary files are kept.")
    var runDirectory = "/run/switchyard-ingress"

    @Option(name: .customLong("worker-processes"), help: "nginx's worker_processes.")
    var workerProcesses = "auto"

    @Flag(name: .customLong("access-log"), help: "Have nginx write an access log into the run directory.")
    var accessLog = false

    func options() throws -> NginxOptions {
        var o = NginxOptions()
        o.controllerClass = controllerClass
        o.ingressClass = ingressClass
        o.watchWithoutClass = watchWithoutClass
        guard (1...65535).contains(httpPort), (1...65535).contains(httpsPort), httpPort != httpsPort else {
            throw ValidationError("--http-port and --https-port: two different ports from 1 to 65535")
        }
        o.httpPort = httpPort
        o.httpsPort = httpsPort
        o.bindAddress = bindAddress
        for (flag, value) in [("--default-ssl-certificate", defaultSSLCertificate), ("--default-backend-service", defaultBackendService)] {
            if let v = value, v.split(separator: "/", omittingEmptySubsequences: false).count != 2 || v.hasPrefix("/") || v.hasSuffix("/") {
                throw ValidationError("\(flag): NAMESPACE/NAME, not \(v)")
            }
        }
        o.defaultSSLCertificate = defaultSSLCertificate
        o.defaultBackendService = defaultBackendService
        o.runDirectory = (runDirectory as NSString).standardizingPath
        guard workerProcesses == "auto" || (Int(workerProcesses) ?? 0) > 0 else { throw ValidationError("--worker-processes: auto or a positive number") }
        o.workerProcesses = workerProcesses
        o.accessLog = accessLog
        return o
    }
}

/// `switchyard ingress-controller`: an Ingress controller on nginx, as ingress-nginx.
struct IngressControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingress-controller",
        abstract: "Serve the cluster's Ingresses with nginx (as ingress-nginx): render nginx.conf, reload nginx when it changes, write the Ingresses' status.")

    @Option(help: "The kubeconfig of the API server to work with.")
    var kubeconfig: String?

    @OptionGroup var ingress: IngressFlags

    @Option(name: .customLong("nginx"), help: "The nginx binary.")
    var nginx = "/usr/sbin/nginx"

    @Option(name: .customLong("publish-service"), help: "NAMESPACE/NAME of the Service (type LoadBalancer) the controller is reached through: its addresses are written into the Ingresses' status.")
    var publishService: String?

    @Option(name: .customLong("publish-status-address"), help: "Addresses to write into the Ingresses' status (comma-separated), instead of --publish-service's.")
    var publishStatusAddress: String?

    @Option(name: .customLong("watch-namespace"), help: "Serve only this namespace's Ingresses (default: all).")
    var watchNamespace: String?

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "switchyard.ingress-controller")
        guard let path = kubeconfig else { throw ValidationError("--kubeconfig FILE is required") }
        let client: KubeClient
        do { client = KubeClient(config: try Kubeconfig.load(path: path)) } catch { throw ValidationError("--kubeconfig \(path): \(error)") }
        guard FileManager.default.isExecutableFile(atPath: nginx) else {
            throw ValidationError("--nginx \(nginx): not an executable (Debian: apt-get install nginx)")
        }
        var c = IngressController.Configuration()
        c.nginx = try ingress.options()
        c.nginxBinary = nginx
        c.publishService = publishService
        c.publishStatusAddress = publishStatusAddress.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } } ?? []
        c.watchNamespace = watchNamespace
        let controller = IngressController(api: API(client, fieldManager: "ingress-nginx"), configuration: c, logger: logger)
        logger.info("ingress-controller: class \(c.nginx.controllerClass), nginx on :\(c.nginx.httpPort) and :\(c.nginx.httpsPort), against \(client.config.server)")
        try await runUntilSignalled(logger) { try await controller.run() }
    }
}
