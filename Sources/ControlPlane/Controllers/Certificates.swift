import ClusterPKI
import ControllerKit
import Foundation
import KubeAPI
import Logging
import Synchronization

/// The certificate controllers of kube-controller-manager, over CertificateSigningRequests:
/// `csrapproving` approves kubelet client requests that a SubjectAccessReview allows,
/// `csrsigning` signs approved requests of the `kubernetes.io/*` signers with the cluster CA,
/// `csrcleaner` removes old requests.
public enum CertificateRequests {
    static let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
    public static let kubeletClientSigner = "kubernetes.io/kube-apiserver-client-kubelet"

    static func conditions(_ csr: JSONValue) -> [JSONValue] { csr[path: ["status", "conditions"]]?.array ?? [] }
    static func has(_ csr: JSONValue, _ type: String) -> Bool { conditions(csr).contains { $0["type"]?.string == type } }
    static func issued(_ csr: JSONValue) -> Bool { !(csr[path: ["status", "certificate"]]?.string ?? "").isEmpty }

    static func request(_ csr: JSONValue) -> CertificateRequest? {
        guard let b64 = csr[path: ["spec", "request"]]?.string, let d = Data(base64Encoded: b64) else { return nil }
        return try? CertificateRequest(pem: String(decoding: d, as: UTF8.self))
    }

    static func usages(_ csr: JSONValue) -> Set<String> { Set(csr[path: ["spec", "usages"]]?.array?.compactMap(\.string) ?? []) }

    /// Why a request is not a kubelet client certificate's (upstream's `ValidateKubeletClientCSR`,
    /// in its order); nil when it is one.
    public static func kubeletClientProblem(_ r: CertificateRequest, usages: Set<String>) -> String? {
        if r.organizations != ["system:nodes"] { return "subject organization is not system:nodes" }
        if !r.dnsNames.isEmpty { return "DNS subjectAltNames are not allowed" }
        if !r.emailAddresses.isEmpty { return "Email subjectAltNames are not allowed" }
        if !r.ipAddresses.isEmpty { return "IP subjectAltNames are not allowed" }
        if !r.uris.isEmpty { return "URI subjectAltNames are not allowed" }
        if !r.commonName.hasPrefix("system:node:") { return "subject common name does not begin with system:node:" }
        if usages != ["digital signature", "key encipherment", "client auth"] && usages != ["digital signature", "client auth"] {
            return "usages did not match [client auth digital signature key encipherment]"
        }
        return nil
    }

    /// Why a request may not be signed by `signer`; nil when it may.
    static func signerProblem(_ signer: String, _ r: CertificateRequest, usages: Set<String>) -> String? {
        switch signer {
        case kubeletClientSigner:
            return kubeletClientProblem(r, usages: usages)
        case "kubernetes.io/kubelet-serving":
            if r.organizations != ["system:nodes"] { return "subject organization is not system:nodes" }
            if r.dnsNames.isEmpty && r.ipAddresses.isEmpty { return "DNS or IP subjectAltName is required" }
            if !r.emailAddresses.isEmpty { return "Email subjectAltNames are not allowed" }
            if !r.uris.isEmpty { return "URI subjectAltNames are not allowed" }
            if usages != ["digital signature", "key encipherment", "server auth"] && usages != ["digital signature", "server auth"] {
                return "usages did not match [digital signature key encipherment server auth]"
            }
            if !r.commonName.hasPrefix("system:node:") { return "subject common name does not begin with system:node:" }
            return nil
        case "kubernetes.io/kube-apiserver-client":
            if let bad = usages.subtracting(["digital signature", "key encipherment", "client auth"]).sorted().first {
                return "invalid usage for client certificate: \(bad)"
            }
            if !usages.contains("client auth") { return "missing required usage for client certificate: client auth" }
            return nil
        default:
            return nil
        }
    }

    /// The certificate's lifetime: the requested `expirationSeconds`, at least ten minutes and at
    /// most the signer's duration.
    public static func duration(_ csr: JSONValue, max: TimeInterval) -> TimeInterval {
        guard let e = csr[path: ["spec", "expirationSeconds"]]?.int else { return max }
        return Swift.min(max, Swift.max(600, TimeInterval(e)))
    }
}

/// `csrapproving`: a pending `kubernetes.io/kube-apiserver-client-kubelet` request for a node
/// client certificate is approved when a SubjectAccessReview says its requester may create
/// `certificatesigningrequests/selfnodeclient` (a node renewing its own) or `/nodeclient` (a
/// bootstrap token asking for a node's first).
public final class CSRApprovingController: Controller, Sendable {
    public let name = "csrapproving"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let requests = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, logger: Logger = Logger(label: "switchyard.csrapproving")) {
        self.api = api
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let i = informers.informer(CertificateRequests.path, slim: Slim.managedFields)
        requests.withLock { $0 = i }
        i.onChange { [queue] c in if c.new != nil { await queue.add(c.key) } }
    }

    public func run() async {
        await runWorkers(queue, workers: 1, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        guard let csr = requests.withLock({ $0 })?.get(key), !CertificateRequests.issued(csr),
              !CertificateRequests.has(csr, "Approved"), !CertificateRequests.has(csr, "Denied"),
              csr[path: ["spec", "signerName"]]?.string == CertificateRequests.kubeletClientSigner,
              let r = CertificateRequests.request(csr),
              CertificateRequests.kubeletClientProblem(r, usages: CertificateRequests.usages(csr)) == nil else { return }
        let spec = csr["spec"] ?? [:]
        // A node renewing its own certificate first, then one asking for a node's.
        var checks: [(String, String)] = []
        if spec["username"]?.string == r.commonName { checks.append(("selfnodeclient", "Auto approving self kubelet client certificate after SubjectAccessReview.")) }
        checks.append(("nodeclient", "Auto approving kubelet client certificate after SubjectAccessReview."))
        for (sub, message) in checks {
            var review: [String: JSONValue] = [
                "user": spec["username"] ?? "", "groups": spec["groups"] ?? [],
                "resourceAttributes": ["group": "certificates.k8s.io", "resource": "certificatesigningrequests", "verb": "create", "subresource": .string(sub)],
            ]
            if let uid = spec["uid"] { review["uid"] = uid }
            if let extra = spec["extra"] { review["extra"] = extra }
            let answer = try await api.create("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                              ["apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": .object(review)])
            guard answer[path: ["status", "allowed"]]?.bool == true else { continue }
            var approved = csr
            approved[path: ["status", "conditions"]] = .array(CertificateRequests.conditions(csr) + [[
                "type": "Approved", "status": "True", "reason": "AutoApproved", "message": .string(message),
                "lastUpdateTime": .string(Time.now()),
            ]])
            _ = try await api.update(CertificateRequests.path + "/\(csr.name)/approval", approved)
            logger.info("csrapproving: approved \(csr.name) for \(r.commonName)")
            return
        }
        logger.debug("csrapproving: recognized csr \"\(csr.name)\" as a kubelet client certificate but subject access review was not approved")
    }
}

/// `csrsigning`: approved requests of `kubernetes.io/kube-apiserver-client-kubelet`,
/// `kubernetes.io/kube-apiserver-client`, `kubernetes.io/kubelet-serving` and
/// `kubernetes.io/legacy-unknown` get a certificate from the cluster CA (`--cluster-signing-cert-file`,
/// `--cluster-signing-key-file`) for `--cluster-signing-duration`, or a Failed condition
/// (`SignerValidationFailure`) when the request does not suit its signer.
public final class CSRSigningController: Controller, Sendable {
    public let name = "csrsigning"
    static let signers: Set<String> = [CertificateRequests.kubeletClientSigner, "kubernetes.io/kube-apiserver-client",
                                       "kubernetes.io/kubelet-serving", "kubernetes.io/legacy-unknown"]
    let api: API
    let ca: ClusterPKI
    let duration: TimeInterval
    let queue = WorkQueue()
    let logger: Logger
    let requests = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, ca: ClusterPKI, duration: TimeInterval, logger: Logger = Logger(label: "switchyard.csrsigning")) {
        self.api = api
        self.ca = ca
        self.duration = duration
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let i = informers.informer(CertificateRequests.path, slim: Slim.managedFields)
        requests.withLock { $0 = i }
        i.onChange { [queue] c in if c.new != nil { await queue.add(c.key) } }
    }

    public func run() async {
        await runWorkers(queue, workers: 1, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        guard let csr = requests.withLock({ $0 })?.get(key), CertificateRequests.has(csr, "Approved"), !CertificateRequests.has(csr, "Failed"),
              !CertificateRequests.issued(csr), let signer = csr[path: ["spec", "signerName"]]?.string, Self.signers.contains(signer) else { return }
        var out = csr
        let usages = CertificateRequests.usages(csr)
        let problem: String?
        if let r = CertificateRequests.request(csr) {
            problem = CertificateRequests.signerProblem(signer, r, usages: usages)
        } else {
            problem = "unable to parse csr \"\(csr.name)\""
        }
        if let problem {
            out[path: ["status", "conditions"]] = .array(CertificateRequests.conditions(csr) + [[
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": .string(problem), "lastUpdateTime": .string(Time.now()),
            ]])
            logger.info("csrsigning: \(csr.name) failed: \(problem)")
        } else {
            let pem = String(decoding: Data(base64Encoded: csr[path: ["spec", "request"]]?.string ?? "") ?? Data(), as: UTF8.self)
            let ttl = CertificateRequests.duration(csr, max: duration)
            // As upstream's policy: from five minutes ago; a long certificate also ends five minutes early.
            let length = ttl < 8 * 3600 ? ttl : ttl - 300
            let cert = try ca.sign(request: pem, usages: usages.sorted(), duration: length)
            out[path: ["status", "certificate"]] = .string(Data(cert.utf8).base64EncodedString())
            logger.info("csrsigning: signed \(csr.name) (\(signer)) for \(Int(ttl)) s")
        }
        _ = try await api.update(CertificateRequests.path + "/\(csr.name)/status", out)
    }
}

/// `csrcleaner`: approved-and-issued, denied and failed requests go an hour after their
/// condition, pending ones after a day, issued ones whose certificate has expired at once;
/// checked at start and every hour, as upstream's.
public final class CSRCleanerController: Controller, Sendable {
    public let name = "csrcleaner"
    let api: API
    let logger: Logger
    let requests = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, logger: Logger = Logger(label: "switchyard.csrcleaner")) {
        self.api = api
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        requests.withLock { $0 = informers.informer(CertificateRequests.path, slim: Slim.managedFields) }
    }

    /// Whether `csr` is due for removal at `now`.
    public static func expired(_ csr: JSONValue, now: Date = Date()) -> Bool {
        func since(_ type: String) -> TimeInterval? {
            CertificateRequests.conditions(csr).first { $0["type"]?.string == type }?["lastUpdateTime"]?.string.flatMap(Time.parse)
                .map { now.timeIntervalSince($0) }
        }
        if CertificateRequests.issued(csr) {
            if let pem = Data(base64Encoded: csr[path: ["status", "certificate"]]?.string ?? "").map({ String(decoding: $0, as: UTF8.self) }),
               let v = ClusterPKI.validity(pem), v.notAfter < now { return true }
            if let t = since("Approved"), t > 3600 { return true }
        }
        if let t = since("Denied"), t > 3600 { return true }
        if let t = since("Failed"), t > 3600 { return true }
        if CertificateRequests.conditions(csr).isEmpty, let c = csr[path: ["metadata", "creationTimestamp"]]?.string.flatMap(Time.parse),
           now.timeIntervalSince(c) > 86400 { return true }
        return false
    }

    public func run() async {
        while !Task.isCancelled {
            for csr in requests.withLock({ $0 })?.items ?? [] where Self.expired(csr) {
                do {
                    _ = try await api.delete(CertificateRequests.path + "/\(csr.name)")
                    logger.info("csrcleaner: removed \(csr.name)")
                } catch { logger.debug("csrcleaner: \(csr.name): \(error)") }
            }
            try? await Task.sleep(for: .seconds(3600))
        }
    }
}

/// Bootstrap tokens: the `bootstrap-token-ID` Secrets of type `bootstrap.kubernetes.io/token`
/// in `kube-system`.
public struct BootstrapToken: Sendable, Equatable {
    public var id: String
    public var secret: String
    public var expiration: Date?
    public var signing: Bool

    /// The token a Secret holds (its `data`, base64, or `stringData`); nil when it holds none.
    public init?(secret s: JSONValue) {
        guard s["type"]?.string == "bootstrap.kubernetes.io/token" else { return nil }
        func field(_ k: String) -> String? {
            if let b = s[path: ["data", k]]?.string, let d = Data(base64Encoded: b) { return String(decoding: d, as: UTF8.self) }
            return s[path: ["stringData", k]]?.string
        }
        guard let id = field("token-id"), let secret = field("token-secret"), s.name == "bootstrap-token-" + id else { return nil }
        self.id = id
        self.secret = secret
        expiration = field("expiration").flatMap(Time.parse)
        signing = field("usage-bootstrap-signing") == "true"
    }

    public func expired(at now: Date = Date()) -> Bool { expiration.map { $0 <= now } ?? false }
}

/// `bootstrapsigner` (off by default, as upstream; kubeadm and `switchyard server` turn it on):
/// keeps a `jws-kubeconfig-ID` signature of `cluster-info`'s kubeconfig in `kube-public` for
/// every unexpired signing bootstrap token, and none for others.
/// `tokencleaner`: removes bootstrap token Secrets once they expire.
public final class BootstrapTokenController: Controller, Sendable {
    public enum Kind: Sendable { case signer, cleaner }
    public var name: String { kind == .signer ? "bootstrapsigner" : "tokencleaner" }
    let kind: Kind
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let secrets = Mutex<Informer<JSONValue>?>(nil)
    let configMaps = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, kind: Kind, logger: Logger = Logger(label: "switchyard.bootstrap-tokens")) {
        self.api = api
        self.kind = kind
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let s = informers.informer("/api/v1/namespaces/kube-system/secrets", slim: Slim.managedFields)
        secrets.withLock { $0 = s }
        switch kind {
        case .signer:
            let c = informers.informer("/api/v1/namespaces/kube-public/configmaps", slim: Slim.managedFields)
            configMaps.withLock { $0 = c }
            s.onChange { [queue] ch in if (ch.new ?? ch.old)?["type"]?.string == "bootstrap.kubernetes.io/token" { await queue.add("sign") } }
            c.onChange { [queue] ch in if ch.key == "kube-public/cluster-info" { await queue.add("sign") } }
        case .cleaner:
            s.onChange { [queue] ch in if let n = ch.new, BootstrapToken(secret: n) != nil { await queue.add(ch.key) } }
        }
    }

    public func run() async {
        switch kind {
        case .signer:
            // Also when a token expires, which no event tells.
            let ticker = Task { [queue] in
                while !Task.isCancelled {
                    await queue.add("sign")
                    try? await Task.sleep(for: .seconds(30))
                }
            }
            defer { ticker.cancel() }
            await runWorkers(queue, workers: 1, logger: logger, name: name) { [self] _ in try await sign() }
        case .cleaner:
            await runWorkers(queue, workers: 1, logger: logger, name: name) { [self] key in try await clean(key) }
        }
    }

    func sign() async throws {
        guard let info = configMaps.withLock({ $0 })?.get("kube-public/cluster-info"),
              let content = info[path: ["data", "kubeconfig"]]?.string else { return }
        var data = info["data"]?.object ?? [:]
        for k in data.keys where k.hasPrefix("jws-kubeconfig-") { data[k] = nil }
        for s in secrets.withLock({ $0 })?.items ?? [] {
            guard let t = BootstrapToken(secret: s), t.signing, !t.expired() else { continue }
            data["jws-kubeconfig-" + t.id] = .string(BootstrapTokenJWS.sign(content, tokenID: t.id, tokenSecret: t.secret))
        }
        guard JSONValue.object(data) != info["data"] else { return }
        var out = info
        out["data"] = .object(data)
        _ = try await api.update(API.path("v1", "configmaps", namespace: "kube-public", name: "cluster-info"), out)
    }

    func clean(_ key: String) async throws {
        guard let s = secrets.withLock({ $0 })?.get(key), let t = BootstrapToken(secret: s), let expiration = t.expiration else { return }
        let left = expiration.timeIntervalSinceNow
        if left > 0 {
            // Back when it expires (the queue's own retry would come too early or too late).
            Task { [queue] in
                try? await Task.sleep(for: .seconds(left + 0.5))
                await queue.add(key)
            }
            return
        }
        do {
            _ = try await api.delete(API.path("v1", "secrets", namespace: "kube-system", name: s.name))
            logger.info("tokencleaner: removed the expired bootstrap token \(t.id)")
        } catch let e as APIStatusError where e.code == 404 {}
    }
}
