import APIAccess
import APIServer
import ClusterPKI
import ArgumentParser
import ControllerKit
import Controllers
import KubeClient
import Scheduler
import Synchronization
import Webhooks
import Foundation
import KubeAPI
import KubeStore
import EtcdClient
import Logging
import NIOSSL
import ProxyRuntime
import HostOS

/// `switchyard server`: the Kubernetes API for kubectl, the proxy and netlab.
struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run the Kubernetes API server (on an embedded SQLite store) that kubectl and the proxy talk to.",
        subcommands: [SnapshotCommand.self])

    @Option(help: "Where the state (state.db) and the clients' kubeconfig are kept.")
    var dataDir = "/var/lib/switchyard"

    @Option(name: .customLong("bind-address"), help: "The address the secure port serves on (0.0.0.0: every address).")
    var bindAddress = "127.0.0.1"

    @Option(name: .customLong("secure-port"), help: """
        Serve HTTPS on this port (0: any free port, written to the kubeconfig), with the certificate         of --tls-cert-file or one the cluster CA in DATA_DIR/pki signs. Default 6443, unless only --port is given.
        """)
    var securePort: Int?

    @Option(help: """
        Also serve plain HTTP on 127.0.0.1:PORT, kube-apiserver's old insecure port, for local tools and tests:         no TLS, so no client certificates; without a token file every request is allowed. Given without         --secure-port, it is the only port (0: any free port, written to the kubeconfig).
        """)
    var port: Int?

    @Option(name: .customLong("advertise-address"), help: """
        The address clients are told to use (written to DATA_DIR/kubeconfig). Default: --bind-address, \
        or for 0.0.0.0 the host's first non-loopback IPv4 address (127.0.0.1 if it has none).
        """)
    var advertiseAddress: String?

    @Option(name: .customLong("tls-san"), help: """
        Another name or IP address for the serving certificate the cluster CA signs (repeatable or comma-separated; \
        k3s's flag): the address of a load balancer in front of several servers.
        """)
    var tlsSANs: [String] = []

    @Option(name: .customLong("service-cluster-ip-range"), help: """
        ClusterIPs are allocated from this CIDR; two CIDRs of different families, comma-separated, make the cluster \
        dual-stack (10.96.0.0/12,fd00:10:96::/112), the first the primary family.
        """)
    var serviceClusterIPRange = "10.96.0.0/12"

    @Option(name: .customLong("service-node-port-range"), help: "NodePorts are allocated from this range (low-high).")
    var serviceNodePortRange = "30000-32767"

    @Option(name: .customLong("etcd-servers"), help: "Keep the state in this etcd cluster (comma-separated http:// or https:// URLs of its members) instead of SQLite; spoken to over gRPC.")
    var etcdServers: String?

    @Option(name: .customLong("etcd-cafile"), help: "The CA that signed the etcd members' serving certificates (else the system's roots).")
    var etcdCAFile: String?

    @Option(name: .customLong("etcd-certfile"), help: "The client certificate for etcd (with --client-cert-auth).")
    var etcdCertFile: String?

    @Option(name: .customLong("etcd-keyfile"), help: "The client certificate's key.")
    var etcdKeyFile: String?

    /// etcd's JSON gateway instead of gRPC: for `switchyard-bench etcd`, which compares the two.
    @Option(name: .customLong("etcd-transport"), help: .hidden)
    var etcdTransport = "grpc"

    @Option(name: .customLong("etcd-servers-overrides"), help: """
        Keep a resource in its own etcd, as kube-apiserver's flag: '/events#http://HOST:PORT;http://…'         (events only). On SQLite, events are always in their own database (DATA_DIR/events.db).
        """)
    var etcdServersOverrides: String?

    @Option(name: .customLong("event-ttl"), help: "How long events are kept after their last occurrence (Go duration).")
    var eventTTL = "1h"

    @Option(name: .customLong("tls-cert-file"), help: "Serve HTTPS with this certificate (PEM; a chain may follow it). The kubeconfig written trusts it.")
    var tlsCertFile: String?

    @Option(name: .customLong("tls-private-key-file"), help: "The private key of --tls-cert-file (PEM).")
    var tlsPrivateKeyFile: String?

    @Option(name: .customLong("kubelet-client-certificate"), help: "The client certificate presented to kubelets for logs and exec (default: one the cluster CA issues, CN kube-apiserver-kubelet-client in system:masters, in DATA_DIR/pki).")
    var kubeletClientCertificate: String?

    @Option(name: .customLong("kubelet-client-key"), help: "The key of --kubelet-client-certificate.")
    var kubeletClientKey: String?

    @Option(name: .customLong("token-auth-file"), help: "Require a bearer token from this file (kube-apiserver's format: token,user,uid[,\"groups\"]); the kubeconfig written carries its first.")
    var tokenAuthFile: String?

    @Option(name: .customLong("authorization-mode"), help: "Authorization modes in order, comma-separated: AlwaysAllow (the default, as kube-apiserver's), Node, RBAC, ABAC, Webhook, AlwaysDeny. RBAC reconciles the default roles and bindings at start.")
    var authorizationMode = "AlwaysAllow"

    @Option(name: .customLong("authorization-policy-file"), help: "ABAC's policy: one JSON Policy (abac.authorization.kubernetes.io/v1beta1) per line.")
    var authorizationPolicyFile: String?

    @Option(name: .customLong("authorization-webhook-config-file"), help: "The Webhook mode's service: a kubeconfig-format file (the cluster is the webhook, the user the server's credentials for it).")
    var authorizationWebhookConfigFile: String?

    @Option(name: .customLong("authorization-webhook-version"), help: "The SubjectAccessReview version sent to the webhook: v1 or v1beta1.")
    var authorizationWebhookVersion = "v1beta1"

    @Option(name: .customLong("authorization-webhook-cache-authorized-ttl"), help: "How long the webhook's allowed answers are cached (Go duration).")
    var authorizationWebhookCacheAuthorizedTTL = "5m0s"

    @Option(name: .customLong("authorization-webhook-cache-unauthorized-ttl"), help: "How long the webhook's other answers are cached (Go duration).")
    var authorizationWebhookCacheUnauthorizedTTL = "30s"

    @Option(name: .customLong("audit-log-path"), help: "Append audit events (audit.k8s.io/v1 Event, one JSON object per line) to this file; '-' for standard output. Needs --audit-policy-file.")
    var auditLogPath: String?

    @Option(name: .customLong("audit-policy-file"), help: "The audit policy (audit.k8s.io/v1 Policy, YAML or JSON): each request's level by its first matching rule.")
    var auditPolicyFile: String?

    @Option(name: .customLong("service-account-signing-key-file"), help: "The ECDSA P-256 key (PEM) service-account tokens are signed with (default: DATA_DIR/sa.key, made on first start).")
    var serviceAccountSigningKeyFile: String?

    @Option(name: .customLong("service-account-issuer"), help: "The tokens' issuer (iss), and the OIDC discovery's.")
    var serviceAccountIssuer = ServiceAccountTokens.defaultIssuer

    @Option(name: .customLong("api-audiences"), help: "The audiences a token must name to authenticate to the API (comma-separated; default: the issuer).")
    var apiAudiences: String?

    @Option(name: .customLong("client-ca-file"), help: "Authenticate clients presenting a certificate signed by this CA: the subject's CN is the user, its O's the groups.")
    var clientCAFile: String?

    @Flag(name: .customLong("enable-bootstrap-token-auth"), help: "Authenticate bootstrap tokens (ID.SECRET) against the bootstrap-token-ID Secrets in kube-system.")
    var enableBootstrapTokenAuth = false

    @Option(name: .customLong("encryption-provider-config"), help: "An EncryptionConfiguration (apiserver.config.k8s.io/v1): the resources whose values are stored encrypted (aescbc, aesgcm, secretbox; identity).")
    var encryptionProviderConfig: String?

    @Option(name: .customLong("admission-control-config-file"), help: "An AdmissionConfiguration (apiserver.config.k8s.io/v1): the PodSecurity plugin's PodSecurityConfiguration (its defaults and exemptions), inline or by path.")
    var admissionControlConfigFile: String?

    @Option(name: .customLong("enable-admission-plugins"), help: "Admission plugins to enable beyond the default ones (comma-separated): NodeRestriction. NamespaceLifecycle, Priority and DefaultTolerationSeconds always run; LimitRanger, PodSecurity, MutatingAdmissionWebhook, ValidatingAdmissionWebhook and ResourceQuota unless disabled.")
    var enableAdmissionPlugins = ""

    @Option(name: .customLong("disable-admission-plugins"), help: "Default admission plugins to turn off (comma-separated): LimitRanger, PodSecurity, MutatingAdmissionWebhook, ValidatingAdmissionWebhook, ResourceQuota.")
    var disableAdmissionPlugins = ""

    @Option(name: .customLong("anonymous-auth"), help: "Serve requests without credentials as system:anonymous (group system:unauthenticated) where authentication is configured; off with AlwaysAllow, as upstream.")
    var anonymousAuth = true

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    @Option(name: .customLong("logging-format"), help: "How log lines are written: text or json (component-base's).")
    var loggingFormat: LoggingFormat = .text

    @Option(name: .customLong("snapshot-interval"), help: "Snapshot the SQLite store this often (Go duration; 0: never), into --snapshot-dir, as k3s schedules etcd snapshots.")
    var snapshotInterval = "0"

    @Option(name: .customLong("snapshot-retention"), help: "How many scheduled snapshots are kept (the oldest go).")
    var snapshotRetention = 5

    @Option(name: .customLong("snapshot-dir"), help: "Where scheduled snapshots go (default: DATA_DIR/snapshots).")
    var snapshotDir: String?

    @Flag(name: .customLong("disable-scheduler"), help: "Do not run the scheduler in this process (run `switchyard scheduler` apart).")
    var disableScheduler = false

    @Flag(name: .customLong("disable-controller-manager"), help: "Do not run the controllers in this process (run `switchyard controller-manager` apart).")
    var disableControllerManager = false

    @OptionGroup(title: "The controllers run in this process (as `switchyard controller-manager` takes them)")
    var controllerFlags: ControllerFlags

    func validate() throws {
        if !disableControllerManager { _ = try controllerFlags.options() }
        _ = try Self.serviceRanges(serviceClusterIPRange)
        guard nodePortRange != nil else { throw ValidationError("--service-node-port-range: low-high within 1-65535, not \(serviceNodePortRange)") }
        if let port { guard (0...65535).contains(port) else { throw ValidationError("--port: 0-65535") } }
        if let securePort { guard (0...65535).contains(securePort) else { throw ValidationError("--secure-port: 0-65535") } }
        guard let bind = IPAddress(bindAddress) else { throw ValidationError("--bind-address \(bindAddress): not an IP address") }
        if securePort == nil && port != nil {
            // Only the insecure port: it is loopback's alone, and certificates are for HTTPS.
            if !bind.isLoopback {
                throw ValidationError("--bind-address \(bindAddress): --port serves plain HTTP on 127.0.0.1 only (kube-apiserver's insecure port); serve other addresses over HTTPS with --secure-port")
            }
            if tlsCertFile != nil || clientCAFile != nil {
                throw ValidationError("--tls-cert-file and --client-ca-file are for the secure port: give --secure-port (only --port serves plain HTTP)")
            }
        }
        if let a = advertiseAddress, IPAddress(a) == nil || IPAddress(a)!.isUnspecified {
            throw ValidationError("--advertise-address \(a): not a unicast IP address")
        }
        for san in tlsSANs.flatMap({ $0.split(separator: ",", omittingEmptySubsequences: false) }).map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let dnsName = san.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
                !label.isEmpty && label.count <= 63 && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") } && label.first != "-" && label.last != "-"
            }
            guard IPAddress(san) != nil || dnsName else { throw ValidationError("--tls-san \(san.debugDescription): neither an IP address nor a DNS name") }
        }
        guard let ttl = GoDuration.seconds(eventTTL), ttl > 0 else { throw ValidationError("--event-ttl \(eventTTL): a positive Go duration (1h, 30m)") }
        _ = try eventServers()
        guard (kubeletClientCertificate == nil) == (kubeletClientKey == nil) else {
            throw ValidationError("--kubelet-client-certificate and --kubelet-client-key go together")
        }
        for file in [kubeletClientCertificate, kubeletClientKey].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: file) {
            throw ValidationError("--kubelet-client-certificate/--kubelet-client-key \(file): cannot read it")
        }
        guard (tlsCertFile == nil) == (tlsPrivateKeyFile == nil) else {
            throw ValidationError("--tls-cert-file and --tls-private-key-file go together")
        }
    }

    /// TLS to etcd, when any of its files is given.
    var etcdTLS: EtcdTLS? {
        etcdCAFile == nil && etcdCertFile == nil && etcdKeyFile == nil ? nil
            : EtcdTLS(caFile: etcdCAFile, certFile: etcdCertFile, keyFile: etcdKeyFile)
    }

    /// The etcd store of these members, with the TLS flags; events written with a lease of
    /// --event-ttl.
    func etcdStore(_ servers: [String]) throws -> EtcdStore {
        let ttl = Int64(GoDuration.seconds(eventTTL) ?? 3600)
        do {
            switch etcdTransport {
            case "grpc":
                return try EtcdStore(servers: servers, tls: etcdTLS?.validated(), expiring: (Self.eventsPrefix, ttl))
            case "gateway":
                return try EtcdStore(transport: EtcdGatewayTransport(endpoints: servers), expiring: (Self.eventsPrefix, ttl))
            default:
                throw ValidationError("--etcd-transport \(etcdTransport): grpc or gateway")
            }
        } catch let e as ValidationError {
            throw e
        } catch {
            throw ValidationError("--etcd-servers \(servers.joined(separator: ",")): \(error)")
        }
    }

    /// The etcd servers `--etcd-servers-overrides` names for events (nil: none named).
    func eventServers() throws -> [String]? {
        guard let o = etcdServersOverrides else { return nil }
        let parts = o.split(separator: "#", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[0] == "/events" || parts[0] == "events" else {
            throw ValidationError("--etcd-servers-overrides \(o): only '/events#SERVERS' is supported")
        }
        let servers = parts[1].split(separator: ";").map { String($0) }
        guard !servers.isEmpty, servers.allSatisfy({ $0.hasPrefix("http://") || $0.hasPrefix("https://") }) else {
            throw ValidationError("--etcd-servers-overrides \(o): servers are http:// URLs separated by ';'")
        }
        return servers
    }

    var nodePortRange: ClosedRange<Int>? {
        let parts = serviceNodePortRange.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 1, parts[0] <= parts[1], parts[1] <= 65535 else { return nil }
        return parts[0]...parts[1]
    }

    func run() async throws {
        bootstrapLogging(Logger.Level(rawValue: logLevel) ?? .info, format: loggingFormat)
        let logger = Logger(label: "switchyard.server")
        // The embedded controllers' flags, the certificate and tokens first: a bad one stops the
        // server before it touches the store.
        let controllerOptions = disableControllerManager ? nil : try controllerFlags.options()
        let access: AccessControl
        var policy: (contents: String, name: String)?
        if let f = authorizationPolicyFile {
            guard let text = try? String(contentsOfFile: f, encoding: .utf8) else { throw ValidationError("--authorization-policy-file \(f): cannot read it") }
            policy = (text, f)
        }
        var webhook: WebhookAuthorizer?
        if let f = authorizationWebhookConfigFile {
            guard let version = WebhookAuthorizer.Version(rawValue: authorizationWebhookVersion) else {
                throw ValidationError("--authorization-webhook-version \(authorizationWebhookVersion): v1 or v1beta1")
            }
            guard let allowedTTL = GoDuration.seconds(authorizationWebhookCacheAuthorizedTTL), allowedTTL >= 0,
                  let deniedTTL = GoDuration.seconds(authorizationWebhookCacheUnauthorizedTTL), deniedTTL >= 0 else {
                throw ValidationError("--authorization-webhook-cache-authorized-ttl and --authorization-webhook-cache-unauthorized-ttl: Go durations (5m0s, 30s)")
            }
            do {
                // Upstream's webhook client waits 30 s for an answer.
                webhook = WebhookAuthorizer(endpoint: try WebhookEndpoint.load(path: f, timeout: .seconds(30)), version: version,
                                            authorizedTTL: .milliseconds(Int64(allowedTTL * 1000)), unauthorizedTTL: .milliseconds(Int64(deniedTTL * 1000)))
            } catch { throw ValidationError("--authorization-webhook-config-file \(f): \(error)") }
        }
        do {
            access = try AccessControl(modes: authorizationMode.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }, policyFile: policy,
                                       webhook: webhook)
        } catch {
            throw ValidationError("--authorization-mode: \(error)")
        }
        var audit: AuditLog?
        if let path = auditLogPath, let policyFile = auditPolicyFile {
            guard let text = try? String(contentsOfFile: policyFile, encoding: .utf8) else { throw ValidationError("--audit-policy-file \(policyFile): cannot read it") }
            do { audit = try AuditLog(policy: text, source: policyFile, path: path) } catch { throw ValidationError("\(error)") }
        } else if auditLogPath != nil {
            logger.warning("no audit policy file given (--audit-policy-file): no audit events are recorded")
        }
        var encryption: [(prefixes: [String], providers: [EncryptingStore.Provider])]?
        if let f = encryptionProviderConfig {
            guard let text = try? String(contentsOfFile: f, encoding: .utf8) else { throw ValidationError("--encryption-provider-config \(f): cannot read it") }
            do {
                guard let config = try JSONSerialization.jsonObject(with: YAMLToJSON.convert(text).serialized()) as? [String: Any] else {
                    throw ValidationError("--encryption-provider-config \(f): not an object")
                }
                encryption = try EncryptingStore.rules(config) { resource, group in
                    Resources.find(group: group, version: Resources.all.first { $0.group == group && $0.resource == resource }?.version ?? "v1",
                                   resource: resource)?.storePrefix ?? "/registry/\(group.isEmpty ? "core" : group)/\(resource)/"
                }
            } catch let e as ValidationError { throw e } catch { throw ValidationError("--encryption-provider-config \(f): \(error)") }
        }
        var podSecurity = PodSecurity.Configuration()
        if let f = admissionControlConfigFile {
            do { podSecurity = try Self.podSecurityConfiguration(file: f) } catch { throw ValidationError("--admission-control-config-file \(f): \(error)") }
        }
        func pluginList(_ s: String) -> Set<String> { Set(s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }) }
        var plugins = pluginList(enableAdmissionPlugins)
        let disabled = pluginList(disableAdmissionPlugins)
        let alwaysOn: Set<String> = ["NamespaceLifecycle", "Priority", "DefaultTolerationSeconds"]
        let defaults = APIHandler.defaultAdmissionPlugins
        if let unknown = plugins.subtracting(alwaysOn.union(defaults).union(["NodeRestriction"])).sorted().first {
            throw ValidationError("--enable-admission-plugins: \(unknown) is not supported yet (supported: \((defaults.union(["NodeRestriction"])).sorted().joined(separator: ", ")); always on: \(alwaysOn.sorted().joined(separator: ", ")))")
        }
        if let unknown = disabled.subtracting(defaults).sorted().first {
            throw ValidationError("--disable-admission-plugins: \(unknown) cannot be turned off (only \(defaults.sorted().joined(separator: ", ")) can; always on: \(alwaysOn.sorted().joined(separator: ", ")))")
        }
        if let both = plugins.intersection(disabled).sorted().first {
            throw ValidationError("\(both) is both in --enable-admission-plugins and in --disable-admission-plugins")
        }
        plugins.formUnion(defaults.subtracting(disabled))
        var tokens: TokenFile?
        if let file = tokenAuthFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("--token-auth-file \(file): cannot read it") }
            do { tokens = try TokenFile(contents: text, source: file) } catch { throw ValidationError("--token-auth-file: \(error)") }
        }
        let lock = try DataDirLock(dataDir)
        let dataDir = self.dataDir, host = bindAddress
        let advertised = advertiseAddress ?? Self.advertised(bind: bindAddress)
        // HTTPS on the secure port unless only the insecure one is asked for.
        let secure = securePort ?? (port == nil ? 6443 : nil)
        var tls: TLSConfiguration?
        var ca: [UInt8]?
        var credentials = ComponentCredentials()
        var generatedCA: ClusterPKI?
        var kubeletClient = kubeletClientCertificate.map { KubeletClientCredentials(certificateFile: $0, keyFile: kubeletClientKey ?? "") }
        if secure != nil {
            do {
                let pki = try ClusterPKI.loadOrCreate(in: dataDir + "/pki")
                generatedCA = pki
                let serving: (cert: String, key: String)
                if let cert = tlsCertFile, let key = tlsPrivateKeyFile {
                    serving = (cert, key)
                    do { ca = try APIServer.certificatesPEM(file: cert) } catch { throw ValidationError("--tls-cert-file \(cert): \(error)") }
                } else {
                    let sans = tlsSANs.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
                    serving = try pki.servingCertificate(dnsNames: Self.servingNames() + sans.filter { IPAddress($0) == nil },
                                                         addresses: Self.servingAddresses(bind: bindAddress, advertised: advertised,
                                                                                          serviceRange: serviceClusterIPRange) + sans.filter { IPAddress($0) != nil })
                    ca = Array(pki.caPEM.utf8)
                }
                // Client certificates of the cluster CA (the admin's, the components') always
                // authenticate, those of --client-ca-file's too.
                do {
                    tls = try APIServer.tlsConfiguration(certificateFile: serving.cert, keyFile: serving.key,
                                                         clientCAFiles: [clientCAFile, pki.caCertFile].compactMap { $0 })
                } catch {
                    throw ValidationError("--tls-cert-file \(serving.cert), --tls-private-key-file \(serving.key)\(clientCAFile.map { ", --client-ca-file \($0)" } ?? ""): \(error)")
                }
                // With a token file the kubeconfig carries its first token, as before; otherwise
                // the admin's certificate (kubeadm's admin.conf), and each embedded component its own.
                // kubeadm's apiserver-kubelet-client pair, for the kubelets' API.
                if kubeletClient == nil {
                    try pki.clientCertificate(name: "apiserver-kubelet-client", commonName: "kube-apiserver-kubelet-client", organizations: ["system:masters"])
                    kubeletClient = KubeletClientCredentials(certificateFile: pki.dir + "/apiserver-kubelet-client.crt",
                                                             keyFile: pki.dir + "/apiserver-kubelet-client.key")
                }
                if tokens == nil {
                    credentials.admin = try pki.clientCertificate(name: "admin", commonName: "kubernetes-admin", organizations: ["system:masters"])
                    credentials.scheduler = try pki.clientCertificate(name: "scheduler", commonName: "system:kube-scheduler")
                    credentials.controllerManager = try pki.clientCertificate(name: "controller-manager", commonName: "system:kube-controller-manager")
                }
            } catch let e as ClusterPKI.Failure {
                throw ValidationError("the cluster CA in \(dataDir)/pki: \(e)")
            }
        }
        let main: any Store = try etcdServers.map { try etcdStore($0.split(separator: ",").map(String.init)) }
            ?? SQLiteStore(path: dataDir + "/state.db")
        // Events in a store of their own (their writes, one per scheduled pod and more, do not
        // queue behind the objects'): on SQLite always, on etcd when --etcd-servers-overrides says.
        let eventStore: (any Store)? = try eventServers().map { try etcdStore($0) }
            ?? (etcdServers == nil ? try SQLiteStore(path: dataDir + "/events.db") : nil)
        let routed = RoutedStore(main: main, routes: eventStore.map { [(Self.eventsPrefix, $0)] } ?? [])
        // Every storage call timed for /metrics (etcd_request_duration_seconds), below encryption
        // as upstream times its etcd calls.
        let metrics = APIServerMetrics()
        let measured = MeasuredStore(inner: routed, metrics: metrics)
        let store: any Store = encryption.map { EncryptingStore(inner: measured, rules: $0) } ?? measured
        if let moved = try? await routed.migrate(), moved > 0 { logger.info("moved \(moved) events into their own store") }
        // On etcd, other API servers may share the store: allocations are claimed in it.
        let admission = Admission(allocator: Allocator(serviceRanges: try Self.serviceRanges(serviceClusterIPRange), nodePorts: nodePortRange!,
                                                       claims: etcdServers == nil ? nil : StoreClaims(store: main)))
        try await admission.load(from: store)
        let saTokens: ServiceAccountTokens
        do {
            saTokens = try ServiceAccountTokens.withKey(at: serviceAccountSigningKeyFile ?? dataDir + "/sa.key", issuer: serviceAccountIssuer,
                                                         audiences: apiAudiences.map { $0.split(separator: ",").map(String.init) })
        } catch { throw ValidationError("--service-account-signing-key-file: \(error)") }
        let handler = APIHandler(store: store, admission: admission, access: access, audit: audit, serviceAccountTokens: saTokens,
                                 admissionPlugins: plugins, kubeletClient: kubeletClient, podSecurity: podSecurity, metrics: metrics)
        try await handler.loadCustomResources()
        do {
            try await handler.bootstrap()
            if let warning = try await handler.ensureDefaultServiceCIDR(admission.allocator.serviceRanges) { logger.warning("\(warning)") }
            try await handler.reconcileDefaultPolicy()
        } catch { throw ValidationError("\(error)") }
        let secureServer = secure.map {
            APIServer(handler: handler, host: host, port: $0, tls: tls, tokens: tokens, anonymous: anonymousAuth, clientCA: true,
                      bootstrapTokens: enableBootstrapTokenAuth, logger: logger)
        }
        // Beside HTTPS, the loopback port stays without authentication for local tools (nodes
        // join over HTTPS); alone, it reads bootstrap tokens when asked.
        let insecureServer = port.map {
            APIServer(handler: handler, host: "127.0.0.1", port: $0, tokens: tokens, anonymous: anonymousAuth,
                      bootstrapTokens: enableBootstrapTokenAuth && secure == nil, logger: logger)
        }
        let trusted = ca, clusterCA = generatedCA, token = tokens?.entries.first?.token, creds = credentials
        let startup = StartupSteps(logger: logger)
        let ttl = GoDuration.seconds(eventTTL) ?? 3600
        let eventSweep = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(min(60, ttl / 2)))
                if let n = try? await EventExpiry.sweep(store, ttl: ttl), n > 0 { logger.debug("\(n) events older than --event-ttl removed") }
            }
        }
        defer { eventSweep.cancel() }
        // Scheduled snapshots of the SQLite store, each in one read transaction beside the writes.
        let snapshotEvery = try snapshotSchedule()
        let snapshots = Task { [dataDir, snapshotDir, snapshotRetention] in
            guard let every = snapshotEvery else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(every * 1000)))
                if Task.isCancelled { return }
                let started = Date()
                do {
                    // On a thread of its own: the copy of a large store takes a while, and the
                    // shared threads serve the requests.
                    let (file, info, removed) = try await onThread { [dataDir, snapshotDir, snapshotRetention] in
                        try SQLiteSnapshot.saveScheduled(database: dataDir + "/state.db", dir: snapshotDir ?? dataDir + "/snapshots",
                                                         prefix: "switchyard-snapshot", retention: snapshotRetention)
                    }
                    logger.info("snapshot \(file): \(info) in \(Int(Date().timeIntervalSince(started) * 1000)) ms\(removed.isEmpty ? "" : "; removed \(removed.joined(separator: ", "))")")
                } catch {
                    logger.error("scheduled snapshot failed: \(error)")
                }
            }
        }
        defer { snapshots.cancel() }
        final class Components: Sendable { let tasks = Mutex<[Task<Void, Never>]>([]) }
        let running = Components()
        defer { running.tasks.withLock { $0.forEach { $0.cancel() } } }
        // On SIGTERM the embedded components stop first: their connections would hold the
        // server's graceful shutdown open.
        let deadline = ShutdownDeadline(grace: .milliseconds(3500), command: "switchyard server", logger: logger) {
            running.tasks.withLock { $0.forEach { $0.cancel() } }
        }
        // Custom resources defined through another server over the same store are served here too.
        let definitionsTask = Task {
            while !Task.isCancelled {
                do { try await handler.followCustomResources() } catch { logger.error("following custom resource definitions: \(error); restarting") }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { definitionsTask.cancel() }
        // RBAC's policy follows the store: writes through another server over it count here too.
        let rbacTask = access.rbac == nil ? nil : Task {
            while !Task.isCancelled {
                do { try await handler.followRBAC() } catch { logger.error("following RBAC objects: \(error); restarting") }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { rbacTask?.cancel() }
        // So do the admission webhooks' configurations.
        let webhooksTask = Task {
            while !Task.isCancelled {
                do { try await handler.followWebhooks() } catch { logger.error("following admission webhook configurations: \(error); restarting") }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { webhooksTask.cancel() }
        // The Node mode's graph follows the pods.
        let nodeGraphTask = access.nodeGraph == nil ? nil : Task {
            while !Task.isCancelled {
                do { try await handler.followPodsForNodes() } catch { logger.error("following pods for the Node authorizer: \(error); restarting") }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { nodeGraphTask?.cancel() }
        defer { withExtendedLifetime((lock, deadline)) {} }
        /// The listener clients are told about (the secure one when there is one) is up: the
        /// kubeconfig is written and the embedded components start.
        let disableScheduler = self.disableScheduler
        @Sendable func listening(_ port: Int, secure: Bool) async {
            let url = "\(secure ? "https" : "http")://\(secure ? (advertised.contains(":") ? "[\(advertised)]" : advertised) : "127.0.0.1"):\(port)"
            do {
                try APIServer.writeKubeconfig(APIServer.kubeconfig(server: url, certificateAuthority: secure ? trusted : nil, token: token,
                                                                   clientCertificate: secure ? creds.admin : nil,
                                                                   user: secure && creds.admin != nil ? "kubernetes-admin" : "switchyard"),
                                              to: dataDir + "/kubeconfig")
                let on = !secure || host == advertised ? "" : " (listening on \(host.contains(":") ? "[\(host)]" : host):\(port))"
                logger.info("serving the Kubernetes API at \(url)\(on); kubeconfig in \(dataDir)/kubeconfig")
            } catch {
                logger.error("writing \(dataDir)/kubeconfig: \(error)")
            }
            await startup.done(.listening)
            // The scheduler and the controllers, as k3s runs them: in this process, clients of
            // this server over its own address, each with its own identity when it has a certificate.
            func client(_ cert: (cert: String, key: String)?) -> KubeClient {
                let tls = secure ? trusted.map { HTTPJSONClient.TLS(certificateAuthority: $0, clientCertificate: cert.map { Array($0.cert.utf8) },
                                                                    clientKey: cert.map { Array($0.key.utf8) }) } : nil
                return KubeClient(config: Kubeconfig(server: url, host: secure ? advertised : "127.0.0.1", port: port, tls: tls,
                                                     token: cert == nil ? token : nil))
            }
            if !disableScheduler {
                let scheduler = Scheduler(api: API(client(creds.scheduler), fieldManager: "kube-scheduler"))
                running.tasks.withLock { $0.append(Task { await scheduler.run() }) }
            }
            // The CA clients are told to trust (the cluster CA, or --tls-cert-file's chain).
            if secure, let ca = trusted {
                do { try await handler.publishClusterInfo(server: url, caPEM: String(decoding: ca, as: UTF8.self)) } catch { logger.error("publishing cluster-info: \(error)") }
            }
            if var options = controllerOptions {
                if options.rootCA.isEmpty, let ca = trusted { options.rootCA = String(decoding: ca, as: UTF8.self) }
                // As kubeadm's controller manager: the cluster CA signs, and bootstrap tokens sign
                // cluster-info and are removed when they expire.
                if options.signingCA == nil { options.signingCA = clusterCA }
                options.controllers += ["bootstrapsigner", "tokencleaner"]
                let base = client(creds.controllerManager)
                if let manager = try? ControllerManager(api: API(base, fieldManager: "kube-controller-manager"), options: options,
                                                        credentials: options.useServiceAccountCredentials ? ServiceAccountCredentials(base: base) : nil) {
                    running.tasks.withLock { $0.append(Task { await manager.run(onSynced: { await startup.done(.controllersSynced) }) }) }
                }
            } else {
                await startup.done(.controllersSynced)
            }
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { g in
                if let s = secureServer { g.addTask { try await s.run { port in await listening(port, secure: true) } } }
                if let s = insecureServer {
                    let primary = secureServer == nil
                    g.addTask {
                        try await s.run { port in
                            if primary { await listening(port, secure: false) } else { logger.info("serving plain HTTP (the insecure port) at http://127.0.0.1:\(port)") }
                        }
                    }
                }
                // A signal ends both; one that fails ends the other.
                try await g.next()
                g.cancelAll()
                try await g.waitForAll()
            }
        } catch let e as ListenError {
            let flag = e.port == secure && e.host == host ? "--bind-address \(host) --secure-port \(e.port)" : "--port \(e.port)"
            throw ValidationError("\(flag): \(e.description)")
        }
        logger.info("switchyard server stopped")
    }

    static let eventsPrefix = EventExpiry.prefix

    /// The PodSecurity plugin's part of an AdmissionConfiguration file: its `configuration`, or
    /// the file its `path` names (relative to the first file's directory), as kube-apiserver
    /// reads them; the other plugins' parts are not read.
    static func podSecurityConfiguration(file: String) throws -> PodSecurity.Configuration {
        struct Failure: Error, CustomStringConvertible { var description: String }
        func load(_ path: String) throws -> JSONValue {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Failure(description: "\(path): cannot read it") }
            return try YAMLToJSON.convert(text)
        }
        let doc = try load(file)
        guard doc["kind"]?.string == "AdmissionConfiguration",
              ["apiserver.config.k8s.io/v1", "apiserver.k8s.io/v1alpha1"].contains(doc["apiVersion"]?.string ?? "") else {
            throw Failure(description: "want kind AdmissionConfiguration of apiVersion apiserver.config.k8s.io/v1")
        }
        for (i, plugin) in (doc["plugins"]?.array ?? []).enumerated() where plugin["name"]?.string == "PodSecurity" {
            if let c = plugin["configuration"] { return try PodSecurity.Configuration(c) }
            guard let path = plugin["path"]?.string, !path.isEmpty else { throw Failure(description: "plugins[\(i)]: a configuration or a path") }
            let full = path.hasPrefix("/") ? path : URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent(path).path
            return try PodSecurity.Configuration(try load(full))
        }
        return PodSecurity.Configuration()
    }

    /// The client certificates (PEM) of the admin's kubeconfig and of the embedded components.
    struct ComponentCredentials: Sendable {
        var admin: (cert: String, key: String)?
        var scheduler: (cert: String, key: String)?
        var controllerManager: (cert: String, key: String)?
    }

    /// The serving certificate's DNS names: the Service `kubernetes` by every name a pod may use,
    /// localhost and this host's name, as kubeadm's apiserver certificate holds them.
    static func servingNames() -> [String] {
        var names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"]
        let host = ProcessInfo.processInfo.hostName
        if !host.isEmpty, !names.contains(host), IPAddress(host) == nil { names.append(host) }
        return names
    }

    /// `--service-cluster-ip-range`: one CIDR, or two of different families (the primary first), as
    /// kube-apiserver checks them: an IPv4 range between /8 and /29, an IPv6 one of at most 2^20
    /// addresses (/108) and at least 8 (/125).
    static func serviceRanges(_ flag: String) throws -> [CIDR] {
        let parts = flag.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count <= 2 else { throw ValidationError("--service-cluster-ip-range must not contain more than two entries") }
        var ranges: [CIDR] = []
        for (i, p) in parts.enumerated() {
            let which = parts.count > 1 ? "--service-cluster-ip-range[\(i)]" : "--service-cluster-ip-range"
            guard let c = CIDR(p) else { throw ValidationError("\(which): \"\(p)\" is not a CIDR") }
            if c.family == .ipv4 {
                guard c.prefixLength >= 8, c.prefixLength <= 29 else { throw ValidationError("\(which): an IPv4 CIDR between /8 and /29, not \(p)") }
            } else {
                guard c.prefixLength >= 128 - Allocator.maxRangeBits else {
                    throw ValidationError("specified \(which) is too large; for 128-bit addresses, the mask must be >= \(128 - Allocator.maxRangeBits)")
                }
                guard c.prefixLength <= 125 else { throw ValidationError("\(which): an IPv6 CIDR between /108 and /125, not \(p)") }
            }
            ranges.append(c)
        }
        if ranges.count == 2 && ranges[0].family == ranges[1].family {
            throw ValidationError("--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family")
        }
        return ranges
    }

    /// Its addresses: loopback, the advertised and bound ones, this namespace's own, and the
    /// Service `kubernetes`'s ClusterIP (the range's first address).
    static func servingAddresses(bind: String, advertised: String, serviceRange: String) -> [String] {
        var out = ["127.0.0.1", "::1", advertised]
        if let b = IPAddress(bind), !b.isUnspecified { out.append(bind) }
        out += LocalAddresses.all().map(\.description)
        if let c = (try? serviceRanges(serviceRange))?.first { out.append(Allocator(serviceRanges: [c]).address(range: 0, offset: 1).description) }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }
    }

    /// `--snapshot-interval` in seconds, nil for none; only the SQLite store is snapshotted here
    /// (etcd's own tools snapshot etcd).
    func snapshotSchedule() throws -> Double? {
        guard let every = GoDuration.seconds(snapshotInterval), every >= 0 else { throw ValidationError("--snapshot-interval: a Go duration (1h, 30m; 0 for none)") }
        guard every > 0 else { return nil }
        guard etcdServers == nil else { throw ValidationError("--snapshot-interval: scheduled snapshots are of the SQLite store; on etcd use `switchyard server snapshot save --etcd-servers …`") }
        guard snapshotRetention >= 1 else { throw ValidationError("--snapshot-retention: at least 1") }
        return every
    }

    /// The address to write into the kubeconfig when none is given: the bind address, unless it
    /// is 0.0.0.0 or ::, which no client can connect to from another namespace.
    static func advertised(bind: String) -> String {
        guard let ip = IPAddress(bind), ip.isUnspecified else { return bind }
        return LocalAddresses.all().first { $0.family == .ipv4 && !$0.description.hasPrefix("127.") }?.description ?? "127.0.0.1"
    }
}

/// The data directory, created if missing and held with an exclusive lock (flock on
/// DATA_DIR/server.lock, with the holder's PID in it) for as long as the server runs, as etcd
/// locks its data dir: two servers on one directory would hand out the same ClusterIPs.
final class DataDirLock: @unchecked Sendable {
    let fd: Int32

    init(_ dir: String) throws {
        var st = stat()
        if stat(dir, &st) != 0 {
            // Created here, with its parents.
            var path = dir.hasPrefix("/") ? "" : "."
            for part in dir.split(separator: "/") {
                path += "/" + part
                if mkdir(path, 0o755) != 0 && errno != EEXIST {
                    throw ValidationError("--data-dir \(dir): cannot create \(path): \(String(cString: strerror(errno)))")
                }
            }
        } else if (st.st_mode & S_IFMT) != S_IFDIR {
            throw ValidationError("--data-dir \(dir): exists and is not a directory")
        }
        let path = dir + "/server.lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ValidationError("--data-dir \(dir): cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, buf.count, 0)
            close(fd)
            guard e == EWOULDBLOCK else { throw ValidationError("--data-dir \(dir): cannot lock \(path): \(String(cString: strerror(e)))") }
            let pid = String(decoding: buf.prefix(max(n, 0)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw ValidationError("--data-dir \(dir) is in use by another switchyard server (pid \(pid.isEmpty ? "unknown" : pid)); stop it, or give this one another --data-dir")
        }
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit { close(fd) }
}

/// The server's start-up steps (listening; the embedded controllers' caches synced, or none to
/// wait for). When both are done, the code only start-up ran is unmapped, once.
actor StartupSteps {
    enum Step { case listening, controllersSynced }
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

/// Runs `body` on a thread of its own and waits for it without holding a shared thread.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread { c.resume(with: Result { try body() }) }.start()
    }
}
