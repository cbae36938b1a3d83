import APIAccess
import Foundation
import Synchronization
import KubeAPI
import KubeStore
import APISchema

/// A request, apart from the transport.
public struct APIRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    public var contentType: String?
    public var accept: String?
    public var body: Data
    /// The client's `User-Agent`: its first word names the field manager of a write that names none.
    public var userAgent: String?
    /// Who sent it, as authentication found (nil: no authentication configured, the old
    /// insecure port's privileged user).
    public var user: UserInfo?
    /// The impersonation headers, if any.
    public var impersonation: Impersonation?
    /// The client's address (for the audit log's `sourceIPs`).
    public var sourceIP: String?
    /// When it arrived and how long authenticating it took (the audit log's
    /// `requestReceivedTimestamp` and latency annotations); made at `handle` when not given.
    public var latency: RequestLatency?

    public init(method: String, path: String, query: [String: String] = [:], contentType: String? = nil,
                accept: String? = nil, body: Data = Data(), userAgent: String? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.contentType = contentType
        self.accept = accept
        self.body = body
        self.userAgent = userAgent
    }
}

/// A response, apart from the transport: one JSON document, or a stream of them (a watch).
public struct APIResponse: Sendable {
    public enum Body: Sendable {
        case json(JSONValue)
        case text(String)
        /// Watch events, one JSON document per line, until the stream ends.
        case stream(AsyncThrowingStream<Data, any Error>)
        /// Bytes of another type (the protobuf OpenAPI document).
        case bytes(Data, type: String)
        /// Text passed on as it comes (a container's log from its kubelet).
        case textStream(AsyncThrowingStream<Data, any Error>)
    }
    public var code: Int
    public var body: Body
    /// `Warning` headers (RFC 7234's, as kube-apiserver sends them: `299 - "text"`).
    public var warnings: [String] = []
    public var contentType: String {
        switch body {
        case .text, .textStream: return "text/plain; charset=utf-8"
        case .bytes(_, let type): return type
        default: return "application/json"
        }
    }

    /// Told the encoded answer's size once the transport has it (`apiserver_response_sizes`).
    public var sized: (@Sendable (Int) -> Void)?

    public var json: JSONValue? { if case .json(let j) = body { return j } else { return nil } }

    static func ok(_ j: JSONValue, _ code: Int = 200, warnings: [String] = []) -> APIResponse {
        APIResponse(code: code, body: .json(j), warnings: warnings)
    }
    static func error(_ e: APIError) -> APIResponse { APIResponse(code: e.code, body: .json(e.status)) }
}

/// The Kubernetes REST API over a `Store`: discovery, and get, list, watch, create, update,
/// patch and delete of the served resources. Transport-free, so tests drive it directly; the
/// HTTP server is a thin adapter around `handle`.
public final class APIHandler: Sendable {
    public let store: any Store
    /// Open watch streams, ended by `closeWatches()` when the server shuts down; once it has,
    /// a watch that arrives late is ended as soon as it starts.
    struct Watches {
        var open: [UUID: AsyncThrowingStream<Data, any Error>.Continuation] = [:]
        var closed = false
    }
    let watches = Mutex(Watches())
    /// Watch events as sent to watchers without selectors, encoded once for all of them.
    let watchEncodings = WatchEncodings()
    public let version: JSONValue
    let admission: Admission
    /// What is served, built-in and custom, and its schemas.
    public let registry = Registry()
    /// The schemas objects are checked against and the OpenAPI documents serve.
    var schemas: SchemaSet { registry.schemas }
    /// The OpenAPI documents of what is served (rebuilt on first use after a definition changes).
    var openAPI: OpenAPI { registry.openAPI }
    /// The largest body accepted (kube-apiserver's limit is 3 MiB for a write).
    public static let maxBodySize = 3 * 1024 * 1024

    /// Who may do what (`--authorization-mode`).
    public let access: AccessControl
    /// The audit log, when one is kept (`--audit-log-path` with `--audit-policy-file`).
    public let audit: AuditLog?
    /// Service-account tokens: issued by TokenRequest, read by authentication.
    public let serviceAccountTokens: ServiceAccountTokens
    /// The admission plugins enabled beyond those always on: PodSecurity (on by default, as
    /// upstream's), NodeRestriction (`--enable-admission-plugins`).
    public let admissionPlugins: Set<String>
    /// The plugins on unless `--disable-admission-plugins` names them, as upstream's defaults.
    public static let defaultAdmissionPlugins: Set<String> = ["LimitRanger", "ServiceAccount", "DefaultIngressClass", "PodSecurity", "ResourceQuota", "MutatingAdmissionWebhook",
                                                               "ValidatingAdmissionWebhook", "CertificateApproval", "CertificateSigning",
                                                               "CertificateSubjectRestriction"]
    /// A handler made in code (tests, benchmarks over the handler) runs the defaults but
    /// ServiceAccount: nothing makes the namespaces' `default` accounts there, which that plugin
    /// requires of every pod. `switchyard server` runs them all.
    public static let inProcessAdmissionPlugins = defaultAdmissionPlugins.subtracting(["ServiceAccount"])
    /// The PodSecurity plugin's configuration (its defaults and exemptions).
    public let podSecurity: PodSecurity.Configuration
    /// The admission webhooks' configurations as last read, and the client that calls them.
    let webhookAdmission: WebhookAdmission
    /// What the server presents to kubelets for logs and exec (none: it presents nothing).
    public let kubeletClient: KubeletClientCredentials?
    /// Tokens that authenticated lately, and as whom (for 10 s).
    let tokenCache = Mutex<[String: (user: UserInfo, until: ContinuousClock.Instant)]>([:])

    /// What `/metrics` serves: the requests, the storage calls, the objects stored.
    public let metrics: APIServerMetrics

    public init(store: any Store, admission: Admission = Admission(), access: AccessControl = try! AccessControl(), audit: AuditLog? = nil,
                serviceAccountTokens: ServiceAccountTokens = .ephemeral(), admissionPlugins: Set<String> = APIHandler.inProcessAdmissionPlugins,
                kubeletClient: KubeletClientCredentials? = nil, podSecurity: PodSecurity.Configuration = PodSecurity.Configuration(),
                metrics: APIServerMetrics = APIServerMetrics()) {
        self.metrics = metrics
        self.podSecurity = podSecurity
        self.serviceAccountTokens = serviceAccountTokens
        self.kubeletClient = kubeletClient
        self.admissionPlugins = admissionPlugins
        self.store = store
        webhookAdmission = WebhookAdmission(store: store)
        self.admission = admission
        self.access = access
        self.audit = audit
        version = ["major": "1", "minor": "33", "gitVersion": "v1.33.0-switchyard", "gitCommit": "", "gitTreeState": "clean",
                   "buildDate": "2026-11-27T00:00:00Z", "goVersion": "swift6", "compiler": "swift", "platform": "linux/amd64"]
    }

    /// Ends every open watch (clients re-watch elsewhere, or after a restart, from their last
    /// resourceVersion): a server shutting down does not wait for them.
    public func closeWatches() {
        let open = watches.withLock { w in
            defer { w.open.removeAll(); w.closed = true }
            return Array(w.open.values)
        }
        for c in open { c.finish() }
    }

    public var openWatches: Int { watches.withLock { $0.open.count } }

    public func handle(_ req: APIRequest) async -> APIResponse {
        let start = ContinuousClock.now
        let latency = req.latency ?? RequestLatency()
        var record: AuditLog.Record?
        var response: APIResponse
        let warnings = AdmissionWarnings()
        // Read once: the metrics' labels, and (with its user) what authorizers and the audit log see.
        let attributes = RequestAttributes.parse(user: .unsecured, method: req.method, path: req.path, query: req.query)
        let counted = APIServerMetrics.labels(attributes, req)
        metrics.begin(counted)
        do {
            var user = req.user ?? .unsecured
            if let imp = req.impersonation { user = try await impersonate(imp, as: user) }
            // The attributes are read when something asks for them: an authorizer, the audit log.
            if !access.allowsAll || audit != nil {
                var a = attributes
                a.user = user
                let authorizing = ContinuousClock.now
                let d = await access.authorize(a)
                latency.authorized(in: .now - authorizing)
                record = audit?.begin(req, a, decision: d, received: latency.received)
                guard d.allowed else { throw AccessControl.refusal(a, d) }
            }
            var r = try await AccessControl.$currentUser.withValue(user) {
                try await AdmissionWarnings.$current.withValue(warnings) {
                    try await APIServerMetrics.$openLongRunning.withValue(counted.longRunning ? counted : nil) {
                        try await RequestLatency.$current.withValue(record == nil ? nil : latency) { try await route(req) }
                    }
                }
            }
            let added = warnings.all
            if !added.isEmpty { r.warnings += added }
            // RBAC's policy follows a write to it at once (this server's own writes).
            if access.rbac != nil, req.method != "GET", r.code < 300, req.path.contains("/\(Self.rbacGroup)/") {
                try? await refreshRBAC()
            }
            // So do the admission webhooks.
            if req.method != "GET", r.code < 300, req.path.contains("/\(WebhookAdmission.group)/") { invalidateWebhooks() }
            response = r
        } catch let e as APIError {
            response = .error(e)
        } catch let e as JSONValue.ParseError {
            response = .error(.badRequest(e.description))
        } catch {
            response = .error(.internal("\(error)"))
        }
        var labels = counted
        // Refused or not found, and not something served: one label set for all such requests.
        if response.code >= 400, labels.resource.isEmpty ? !APIServerMetrics.knownPaths.contains(labels.subresource)
                                                         : registry.find(group: labels.group, version: labels.version, resource: labels.resource) == nil {
            labels.unmatched()
        }
        metrics.end(labels, code: response.code, elapsed: .now - start)
        if labels.verb == "GET" || labels.verb == "LIST" {
            let metrics = self.metrics
            response.sized = { [labels] in metrics.sized(labels, $0) }
        }
        return audit?.finish(record, response, annotations: warnings.annotations, latency: latency) ?? response
    }

    // MARK: routing

    /// Where a path points.
    struct Target {
        var resource: ResourceInfo
        var namespace: String?
        var name: String?
        var subresource: String?
    }

    func route(_ req: APIRequest) async throws -> APIResponse {
        let seg = req.path.split(separator: "/").map(String.init)
        switch seg.first {
        case nil:
            return .ok(["paths": .array((["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
                + registry.groups.flatMap { g in ["/apis/\(g.group)"] + g.versions.map { "/apis/\(g.group)/\($0)" } }).map { .string($0) })])
        case "version" where seg.count == 1: return .ok(version)
        // The service-account issuer's OIDC discovery, as upstream serves it.
        case ".well-known" where seg.count == 2 && seg[1] == "openid-configuration":
            return .ok(serviceAccountTokens.openIDConfiguration())
        case "openid" where seg.count == 3 && seg[1] == "v1" && seg[2] == "jwks":
            return .ok(serviceAccountTokens.jwks)
        case "healthz", "livez", "readyz": return APIResponse(code: 200, body: .text("ok"))
        case "metrics" where seg.count == 1:
            return APIResponse(code: 200, body: .bytes(Data(metrics.text(objects: await storedObjects()).utf8), type: "text/plain; version=0.0.4; charset=utf-8"))
        case "openapi" where seg.count == 2 && seg[1] == "v2":
            return openAPI.v2(accept: req.accept)
        case "openapi" where seg.count == 2 && seg[1] == "v3":
            return openAPI.index()
        case "openapi" where seg.count > 2 && seg[1] == "v3":
            return openAPI.v3(seg[2...].joined(separator: "/"), accept: req.accept)
        case "api":
            if seg.count == 1 {
                if let v = Discovery.aggregatedVersion(req.accept) { return Discovery.aggregated(core: true, version: v, resources: registry.resources) }
                return .ok(["kind": "APIVersions", "versions": ["v1"],
                            "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": ""]]])
            }
            guard seg[1] == "v1" else { throw APIError.pathNotFound(req.path) }
            if seg.count == 2 { return .ok(resourceList(group: "", version: "v1")) }
            return try await serve(req, group: "", version: "v1", rest: Array(seg[2...]))
        case "apis":
            if seg.count == 1, let v = Discovery.aggregatedVersion(req.accept) {
                return Discovery.aggregated(core: false, version: v, resources: registry.resources)
            }
            if seg.count == 1 { return .ok(["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(registry.groups.map(groupJSON))]) }
            guard let g = registry.groups.first(where: { $0.group == seg[1] }) else { throw APIError.pathNotFound(req.path) }
            if seg.count == 2 { return .ok(groupJSON(g).merging(["kind": "APIGroup", "apiVersion": "v1"])) }
            guard g.versions.contains(seg[2]) else { throw APIError.pathNotFound(req.path) }
            if seg.count == 3 { return .ok(resourceList(group: g.group, version: seg[2])) }
            return try await serve(req, group: g.group, version: seg[2], rest: Array(seg[3...]))
        default:
            throw APIError.pathNotFound(req.path)
        }
    }

    func groupJSON(_ g: (group: String, versions: [String])) -> JSONValue {
        let gvs: [JSONValue] = g.versions.map { ["groupVersion": .string("\(g.group)/\($0)"), "version": .string($0)] }
        return ["name": .string(g.group), "versions": .array(gvs), "preferredVersion": gvs.first ?? .null]
    }

    func resourceList(group: String, version: String) -> JSONValue {
        let rs = registry.resources.filter { $0.group == group && $0.version == version }
        return ["kind": "APIResourceList", "apiVersion": "v1", "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"),
                "resources": .array(rs.flatMap(\.discovery))]
    }

    func serve(_ req: APIRequest, group: String, version: String, rest: [String]) async throws -> APIResponse {
        func res(_ name: String) throws -> ResourceInfo {
            guard let r = registry.find(group: group, version: version, resource: name) else { throw APIError.pathNotFound(req.path) }
            return r
        }
        let t: Target
        if rest.count >= 3, rest[0] == "namespaces", let r = registry.find(group: group, version: version, resource: rest[2]), r.namespaced {
            guard rest.count <= 5 else { throw APIError.pathNotFound(req.path) }
            t = Target(resource: r, namespace: rest[1], name: rest.count > 3 ? rest[3] : nil, subresource: rest.count > 4 ? rest[4] : nil)
        } else {
            guard rest.count <= 3 else { throw APIError.pathNotFound(req.path) }
            let r = try res(rest[0])
            // A namespaced resource without a namespace: a list or watch across all of them.
            if r.namespaced && rest.count > 1 { throw APIError.pathNotFound(req.path) }
            t = Target(resource: r, namespace: nil, name: rest.count > 1 ? rest[1] : nil, subresource: rest.count > 2 ? rest[2] : nil)
        }
        if let sub = t.subresource, !t.resource.subresources.contains(sub) { throw APIError.pathNotFound(req.path) }
        if t.resource.strategy is ReviewStrategy { return try await review(req, t, user: AccessControl.currentUser) }
        switch (req.method, t.name) {
        case ("GET", nil):
            return isWatch(req) ? try await watch(req, t) : try await list(req, t)
        case ("GET", _?) where t.subresource == "log":
            return try await podLog(req, t)
        case ("GET", _?) where t.subresource == "exec", ("POST", _?) where t.subresource == "exec":
            return try await execWithoutUpgrade(req, t)
        case ("GET", let name?):
            let o = try await get(t.resource, namespace: t.namespace, name: name, subresource: t.subresource)
            // `kubectl get KIND NAME` asks for a Table of the one object, as for a list.
            if t.subresource == nil && Tables.wanted(req.accept) {
                let rv = o[path: ["metadata", "resourceVersion"]]?.string ?? ""
                return .ok(Tables.table([o], t.resource, meta: ["resourceVersion": .string(rv)], includeObject: req.query["includeObject"]))
            }
            return .ok(o)
        case ("POST", nil):
            guard !t.resource.namespaced || t.namespace != nil else {
                throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
            }
            return try await create(req, t)
        case ("POST", _?) where t.subresource == "binding":
            return try await bind(req, t)
        case ("POST", _?) where t.subresource == "eviction":
            return try await evict(req, t)
        case ("POST", _?) where t.subresource == "token":
            return try await tokenRequest(req, t)
        case ("PUT", _?):
            return try await update(req, t)
        case ("PATCH", _?):
            return try await patch(req, t)
        case ("DELETE", _?):
            return try await delete(req, t)
        case ("DELETE", nil):
            return try await deleteCollection(req, t)
        default:
            throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
        }
    }

    func isWatch(_ req: APIRequest) -> Bool { ["1", "true"].contains(req.query["watch"] ?? "") }
}
