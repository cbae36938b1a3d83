import APIAccess
import Foundation
import KubeAPI
import KubeClient
import Kubelet
import Webhooks

/// Who may use the kubelet's API, as upstream's kubelet decides it for every request on :10250:
/// - authentication: a client certificate verified against `--client-ca-file` (its common name
///   the user, its organizations the groups), else a bearer token reviewed by the API server
///   (`--authentication-token-webhook`), else `system:anonymous` when `--anonymous-auth` allows;
///   a token that does not authenticate is a 401 even then ("Unauthorized");
/// - authorization: `AlwaysAllow`, or `Webhook`: a SubjectAccessReview for the node itself,
///   resource `nodes`, subresource `stats`, `metrics` or `log` by path and `proxy` for anything
///   else, the verb from the method (GET `get`, POST `create`, …). `/pods` and `/healthz` are
///   also allowed by `nodes/pods` and `nodes/healthz` (upstream's fine-grained kubelet
///   authorization, on by default from 1.33), asked before `proxy`. A refusal is a 403 naming
///   the user, the verb and the subresource, as upstream words it.
public struct KubeletAccess: Sendable {
    public var nodeName: String
    public var anonymous: Bool
    /// Whether client certificates are asked for (TLS verifies them against the client CA).
    public var x509: Bool
    public var tokens: WebhookTokenAuthenticator?
    /// nil: `AlwaysAllow`.
    public var authorizer: (any Authorizer)?

    public init(nodeName: String, anonymous: Bool = true, x509: Bool = false, tokens: WebhookTokenAuthenticator? = nil, authorizer: (any Authorizer)? = nil) {
        self.nodeName = nodeName
        self.anonymous = anonymous
        self.x509 = x509
        self.tokens = tokens
        self.authorizer = authorizer
    }

    /// The flags' defaults: anyone may do anything.
    public static let alwaysAllow = KubeletAccess(nodeName: "")

    public struct Refusal: Error, Sendable, Equatable {
        public var status: Int
        public var message: String
    }

    /// Who sends a request with this client certificate (verified) and `Authorization` header.
    public func authenticate(certificate: [UInt8]?, authorization: String?) async -> Result<UserInfo, Refusal> {
        let unauthorized = Refusal(status: 401, message: "Unauthorized")
        if let certificate, let user = UserInfo(clientCertificate: certificate) { return .success(user) }
        // Without the token webhook nothing reads a bearer token: the request goes on as if it
        // had none, as upstream's authenticator chain has no token authenticator then.
        if let tokens, let a = authorization, a.count > 7, a.prefix(7).lowercased() == "bearer " {
            guard a.utf8.count <= UserInfo.maxAuthorizationBytes else { return .failure(unauthorized) }
            let token = String(a.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            guard !token.isEmpty else { return .failure(unauthorized) }
            switch await tokens.authenticate(token: token) {
            case .user(let u): return .success(u.authenticated())
            case .rejected, .error: return .failure(unauthorized)
            }
        }
        return anonymous ? .success(.anonymous) : .failure(unauthorized)
    }

    /// What a request asks of the node, in the order upstream asks it.
    public static func attributes(_ user: UserInfo, method: String, path: String, node: String) -> [RequestAttributes] {
        let verb = ["POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"][method.uppercased()] ?? ""
        func under(_ prefix: String) -> Bool { path == prefix || path.hasPrefix(prefix + "/") }
        var subresources: [String] = []
        if under("/pods") || under("/runningpods") { subresources.append("pods") }
        if under("/healthz") { subresources.append("healthz") }
        if under("/configz") { subresources.append("configz") }
        if under("/stats") { subresources.append("stats") } else if under("/metrics") { subresources.append("metrics") } else if under("/logs") {
            subresources.append("log")
        } else if under("/checkpoint") { subresources.append("checkpoint") } else { subresources.append("proxy") }
        return subresources.map { s in
            var a = RequestAttributes.resource(user, verb: verb, group: "", resource: "nodes", subresource: s, name: node)
            a.apiVersion = "v1"
            a.path = path
            return a
        }
    }

    /// nil when `user` may make the request; the 403 (or, when no decision could be had, the
    /// 500) otherwise.
    public func authorize(_ user: UserInfo, method: String, path: String) async -> Refusal? {
        guard let authorizer else { return nil }
        let asked = Self.attributes(user, method: method, path: path, node: nodeName)
        for a in asked {
            let d = await authorizer.authorize(a)
            if d.allowed { return nil }
            if case .error = d {
                return Refusal(status: 500, message: "Authorization error (user=\(user.name), verb=\(a.verb), resource=nodes, subresource=\(a.subresource))")
            }
        }
        let last = asked.last!
        return Refusal(status: 403, message: "Forbidden (user=\(user.name), verb=\(last.verb), resource=nodes, subresource=\(last.subresource))")
    }

    /// Both: nil when the request may go on.
    public func check(certificate: [UInt8]?, authorization: String?, method: String, path: String) async -> Refusal? {
        switch await authenticate(certificate: certificate, authorization: authorization) {
        case .failure(let r): return r
        case .success(let user): return await authorize(user, method: method, path: path)
        }
    }
}

extension KubeletAccess {
    /// The kubelet's settings made real: the reviews go to the API server of `kubeconfig`, with
    /// the kubelet's own credentials.
    public static func from(_ c: KubeletConfiguration, kubeconfig: Kubeconfig) throws -> KubeletAccess {
        var access = KubeletAccess(nodeName: c.nodeName, anonymous: c.anonymousAuth, x509: !c.clientCAFile.isEmpty)
        func endpoint(_ path: String) throws -> WebhookEndpoint {
            var k = kubeconfig
            k.server = k.server.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path
            return try WebhookEndpoint(kubeconfig: k, timeout: .seconds(10))
        }
        if c.authenticationTokenWebhook {
            access.tokens = WebhookTokenAuthenticator(endpoint: try endpoint("/apis/authentication.k8s.io/v1/tokenreviews"),
                                                      cacheTTL: c.authenticationTokenWebhookCacheTTL)
        }
        if c.authorizationMode == "Webhook" {
            access.authorizer = WebhookAuthorizer(endpoint: try endpoint("/apis/authorization.k8s.io/v1/subjectaccessreviews"), version: .v1,
                                                  authorizedTTL: c.authorizationWebhookCacheAuthorizedTTL,
                                                  unauthorizedTTL: c.authorizationWebhookCacheUnauthorizedTTL)
        }
        return access
    }
}
