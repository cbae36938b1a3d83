import APIAccess
import Foundation
import KubeAPI

/// Service-account tokens in the server: the TokenRequest API (`serviceaccounts/NAME/token`,
/// what `kubectl create token` calls), their authentication (the account, and the pod or
/// secret a token is bound to, must still exist with the same uid), TokenReview, and the OIDC
/// discovery documents.
extension APIHandler {
    /// `POST …/serviceaccounts/NAME/token`: a TokenRequest answered with a signed token.
    func tokenRequest(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        guard let sa = t.name, let ns = t.namespace else { throw APIError.pathNotFound(req.path) }
        let account = try await get(t.resource, namespace: ns, name: sa, subresource: nil)
        var duplicates: [String] = []
        var o = try decodeBody(req, duplicates: &duplicates)
        guard o["kind"]?.string ?? "TokenRequest" == "TokenRequest" else {
            throw APIError.badRequest("the body of the request was not a TokenRequest")
        }
        var spec = o["spec"] ?? [:]
        let audiences = (spec["audiences"]?.array ?? []).compactMap(\.string)
        let seconds = spec["expirationSeconds"]?.int ?? 3600
        let tokenRequest = ResourceInfo(group: "authentication.k8s.io", version: "v1", resource: "serviceaccounts", singular: "", kind: "TokenRequest",
                                        namespaced: true, shortNames: [], categories: [], subresources: [])
        if seconds < 600 {
            throw APIError.invalid(tokenRequest, sa, [FieldError("spec.expirationSeconds", "Invalid value: \(seconds): may not specify a duration less than 10 minutes")])
        }
        if seconds > 1 << 32 {
            throw APIError.invalid(tokenRequest, sa, [FieldError("spec.expirationSeconds", "Invalid value: \(seconds): may not specify a duration larger than 2^32 seconds")])
        }
        var bound: [(kind: String, name: String, uid: String)] = []
        if let ref = spec["boundObjectRef"], case .object = ref {
            let kind = ref["kind"]?.string ?? "", name = ref["name"]?.string ?? ""
            let resource: (String, String?)
            switch kind {
            case "Pod": resource = ("pods", ns)
            case "Secret": resource = ("secrets", ns)
            case "Node": resource = ("nodes", nil)
            default:
                throw APIError.invalid(tokenRequest, sa, [FieldError("spec.boundObjectRef.kind", "Unsupported value: \"\(kind)\": supported values: \"Pod\", \"Secret\", \"Node\"")])
            }
            guard let r = registry.find(group: "", version: "v1", resource: resource.0) else { throw APIError.pathNotFound(req.path) }
            let object = try await get(r, namespace: resource.1, name: name, subresource: nil)
            let uid = object[path: ["metadata", "uid"]]?.string ?? ""
            if let want = ref["uid"]?.string, !want.isEmpty, want != uid {
                throw APIError(code: 409, reason: "Conflict", message: "the UID in the bound object reference (\(want)) does not match the UID in record. The object might have been deleted and then recreated")
            }
            if object[path: ["metadata", "deletionTimestamp"]] != nil {
                throw APIError.badRequest("cannot bind token to object \"\(name)\": the object is being deleted")
            }
            bound.append((kind, name, uid))
            var r2 = ref
            r2["uid"] = .string(uid)
            if r2["apiVersion"] == nil { r2["apiVersion"] = "v1" }
            spec["boundObjectRef"] = r2
        }
        let tokens = serviceAccountTokens
        let want = audiences.isEmpty ? tokens.audiences : audiences
        let issued = try tokens.issue(namespace: ns, serviceAccount: sa, uid: account[path: ["metadata", "uid"]]?.string ?? "",
                                      audiences: want, seconds: seconds, bound: bound)
        spec["audiences"] = .array(want.map { .string($0) })
        spec["expirationSeconds"] = .int(seconds)
        o["apiVersion"] = "authentication.k8s.io/v1"
        o["kind"] = "TokenRequest"
        o["metadata"] = ["name": .string(sa), "namespace": .string(ns), "creationTimestamp": .null]
        o["spec"] = spec
        o["status"] = ["token": .string(issued.token), "expirationTimestamp": .string(Self.rfc3339(issued.expires))]
        return APIResponse(code: 201, body: .json(o))
    }

    /// The user a service-account token stands for, or why it does not: signed by this
    /// server, for `audiences`, in time, and its account and bound object still there.
    public func authenticateServiceAccount(_ token: String, audiences: [String]? = nil) async -> Result<UserInfo, ServiceAccountTokens.Failure> {
        // A token that authenticated for the API's audiences within the last 10 s does again
        // without its signature and objects checked (upstream caches successes as long).
        if audiences == nil, let hit = tokenCache.withLock({ c -> UserInfo? in
            guard let e = c[token] else { return nil }
            if ContinuousClock.now < e.until { return e.user }
            c[token] = nil
            return nil
        }) { return .success(hit) }
        let result = await authenticateServiceAccountUncached(token, audiences: audiences)
        if audiences == nil, case .success(let u) = result {
            tokenCache.withLock { c in
                if c.count >= 4096 { c.removeAll() }
                c[token] = (u, ContinuousClock.now + .seconds(10))
            }
        }
        return result
    }

    func authenticateServiceAccountUncached(_ token: String, audiences: [String]?) async -> Result<UserInfo, ServiceAccountTokens.Failure> {
        let claims: ServiceAccountTokens.Claims
        switch serviceAccountTokens.verify(token, audiences: audiences) {
        case .failure(let f): return .failure(f)
        case .success(let c): claims = c
        }
        func exists(_ resource: String, _ ns: String?, _ name: String, uid: String) async -> Bool {
            guard let r = registry.find(group: "", version: "v1", resource: resource),
                  let o = try? await get(r, namespace: ns, name: name, subresource: nil) else { return false }
            return (uid.isEmpty || o[path: ["metadata", "uid"]]?.string == uid) && o[path: ["metadata", "deletionTimestamp"]] == nil
        }
        guard await exists("serviceaccounts", claims.namespace, claims.serviceAccount, uid: claims.serviceAccountUID) else {
            return .failure(.init(description: "invalid bearer token, service account \(claims.namespace)/\(claims.serviceAccount) has been deleted"))
        }
        // A legacy token is good while its Secret holds it, for its account.
        if let secret = claims.legacySecret {
            guard let r = registry.find(group: "", version: "v1", resource: "secrets"),
                  let o = try? await get(r, namespace: claims.namespace, name: secret, subresource: nil),
                  o["type"]?.string == Self.serviceAccountTokenType, o[path: ["metadata", "deletionTimestamp"]] == nil,
                  o[path: ["metadata", "annotations", "kubernetes.io/service-account.name"]]?.string == claims.serviceAccount,
                  o[path: ["data", "token"]]?.string == Data(token.utf8).base64EncodedString() else {
                return .failure(.init(description: "invalid bearer token, Token has been invalidated"))
            }
        }
        for b in claims.bound where b.kind != "Node" {
            guard await exists(b.kind == "Pod" ? "pods" : "secrets", claims.namespace, b.name, uid: b.uid) else {
                return .failure(.init(description: "invalid bearer token, \(b.kind.lowercased()) \"\(b.name)\" bound to the token has been deleted"))
            }
        }
        return .success(claims.user)
    }

    /// `TokenReview`: whether a token authenticates, and as whom.
    func tokenReview(_ o: JSONValue) async -> JSONValue {
        var o = o
        let token = o[path: ["spec", "token"]]?.string ?? ""
        let audiences = (o[path: ["spec", "audiences"]]?.array ?? []).compactMap(\.string)
        switch await authenticateServiceAccount(token, audiences: audiences.isEmpty ? nil : audiences) {
        case .success(let u):
            var user: JSONValue = ["username": .string(u.name), "uid": .string(u.uid), "groups": .array(u.groups.map { .string($0) })]
            if !u.extra.isEmpty { user["extra"] = .object(u.extra.mapValues { .array($0.map { .string($0) }) }) }
            o["status"] = ["authenticated": true, "user": user,
                           "audiences": .array((audiences.isEmpty ? serviceAccountTokens.audiences : audiences).map { .string($0) })]
        case .failure(let f):
            o["status"] = ["authenticated": false, "error": .string(f.description), "user": [:]]
        }
        return o
    }
}

/// Bootstrap tokens (`--enable-bootstrap-token-auth`): `ID.SECRET` (6 and 16 characters of
/// `[a-z0-9]`) authenticates as `system:bootstrap:ID` in `system:bootstrappers` (and the
/// Secret's `auth-extra-groups`) while the `kube-system` Secret `bootstrap-token-ID` of type
/// `bootstrap.kubernetes.io/token` says so: the same secret, `usage-bootstrap-authentication:
/// "true"`, not expired.
extension APIHandler {
    static func bootstrapToken(_ token: String) -> (id: String, secret: String)? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        func ok(_ s: Substring, _ n: Int) -> Bool { s.count == n && s.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") } }
        guard parts.count == 2, ok(parts[0], 6), ok(parts[1], 16) else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    /// The bootstrap token's user, or nil when it does not authenticate (any reason: upstream
    /// gives the client none).
    public func authenticateBootstrapToken(_ token: String, now: Date = Date()) async -> UserInfo? {
        guard let (id, secret) = Self.bootstrapToken(token), let r = registry.find(group: "", version: "v1", resource: "secrets"),
              let s = try? await get(r, namespace: "kube-system", name: "bootstrap-token-\(id)", subresource: nil),
              s["type"]?.string == "bootstrap.kubernetes.io/token", s[path: ["metadata", "deletionTimestamp"]] == nil else { return nil }
        func field(_ k: String) -> String? {
            (s[path: ["data", k]]?.string).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
        }
        guard field("token-id") == id, let stored = field("token-secret"), Array(stored.utf8).count == 16,
              zip(stored.utf8, secret.utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0,
              field("usage-bootstrap-authentication") == "true" else { return nil }
        if let expiration = field("expiration") {
            let f = ISO8601DateFormatter()
            guard let when = f.date(from: expiration), now < when else { return nil }
        }
        var groups = ["system:bootstrappers"]
        for g in (field("auth-extra-groups") ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !g.isEmpty {
            // Only groups under system:bootstrappers: may be added, as upstream validates them.
            guard g.hasPrefix("system:bootstrappers:") else { return nil }
            groups.append(g)
        }
        return UserInfo(name: "system:bootstrap:\(id)", groups: groups).authenticated()
    }
}
