import APIAccess
@testable import APIServer
import Foundation
import HTTPTypes
import HummingbirdCore
import KubeAPI
import KubeStore
import NIOCore
import Testing

/// Service-account tokens as upstream's: signed JWTs with upstream's claims, refused when forged
/// (another key, `none`, HS256), tampered with, for another audience or expired; the
/// TokenRequest API; valid only while the account and the pod they are bound to exist;
/// TokenReview; the issuer's OIDC discovery.
@Suite struct ServiceAccountTokenTests {
    static func b64(_ s: String) -> String {
        Data(s.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    @Test func forgedTamperedAndStaleTokensAreRefused() throws {
        let t = ServiceAccountTokens.ephemeral()
        let now = Date()
        let good = try t.issue(namespace: "ns", serviceAccount: "sa", uid: "u1", audiences: t.audiences, seconds: 3600, now: now)
        guard case .success(let c) = t.verify(good.token, now: now) else { Issue.record("a good token is refused"); return }
        #expect(c.user.name == "system:serviceaccount:ns:sa" && c.user.uid == "u1")
        #expect(c.user.groups == ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"])
        #expect(ServiceAccountTokens.looksLikeJWT(good.token) && !ServiceAccountTokens.looksLikeJWT("s3cret"))
        func refused(_ token: String, at: Date = Date(), audiences: [String]? = nil) -> String? {
            if case .failure(let f) = t.verify(token, audiences: audiences, now: at) { return f.description }
            return nil
        }
        let parts = good.token.split(separator: ".").map(String.init)
        // Another key, the `none` algorithm, HS256, a changed claim, another audience, too late.
        let other = try ServiceAccountTokens.ephemeral().issue(namespace: "ns", serviceAccount: "sa", uid: "u1", audiences: t.audiences, seconds: 3600)
        #expect(refused(other.token) != nil)
        #expect(refused(Self.b64(#"{"alg":"none"}"#) + "." + parts[1] + ".") == "invalid bearer token, unexpected signature algorithm")
        #expect(refused(Self.b64(#"{"alg":"HS256","kid":"x"}"#) + "." + parts[1] + "." + parts[2]) == "invalid bearer token, unexpected signature algorithm")
        let claims = String(decoding: Data(base64Encoded: parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
                                                + String(repeating: "=", count: (4 - parts[1].count % 4) % 4))!, as: UTF8.self)
        let forged = Self.b64(claims.replacingOccurrences(of: "system:serviceaccount:ns:sa", with: "system:serviceaccount:kube-system:admin"))
        #expect(refused(parts[0] + "." + forged + "." + parts[2]) != nil)
        #expect(refused(good.token, audiences: ["vault"])?.contains("is invalid for the target audiences") == true)
        #expect(refused(good.token, at: now.addingTimeInterval(3601)) == "invalid bearer token, service account token has expired")
        #expect(refused("a.b.c") != nil && refused("") != nil)
        let jwk = try #require(t.jwks["keys"]?.array?.first)
        #expect(jwk["kid"]?.string == t.keyID && jwk["x"]?.string?.count == 43 && jwk["y"]?.string?.count == 43 && jwk["crv"] == "P-256")
    }

    @Test func tokenRequestsAndTheirLifetime() async throws {
        let h = try await makeHandler()
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/serviceaccounts", body: body(["metadata": ["name": "runner"]]))).code == 201)
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/pods", body: body([
            "metadata": ["name": "p"], "spec": ["containers": [["name": "c", "image": "x"]]]]))).code == 201)
        func request(_ spec: JSONValue) async -> APIResponse {
            await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/serviceaccounts/runner/token",
                                      body: body(["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec])))
        }
        let short = await request(["expirationSeconds": 60])
        #expect(short.code == 422 && short.json?["message"]?.string?.contains("may not specify a duration less than 10 minutes") == true)
        let plain = await request([:])
        #expect(plain.code == 201 && plain.json?[path: ["spec", "expirationSeconds"]] == 3600)
        let token = try #require(plain.json?[path: ["status", "token"]]?.string)
        guard case .success(let u) = await h.authenticateServiceAccount(token) else { Issue.record("the token does not authenticate"); return }
        #expect(u.name == "system:serviceaccount:default:runner")
        let bound = await request(["boundObjectRef": ["kind": "Pod", "apiVersion": "v1", "name": "p"]])
        let podToken = try #require(bound.json?[path: ["status", "token"]]?.string)
        guard case .success(let pu) = await h.authenticateServiceAccount(podToken) else { Issue.record("the pod-bound token does not authenticate"); return }
        #expect(pu.extra["authentication.kubernetes.io/pod-name"] == ["p"])
        #expect(await request(["boundObjectRef": ["kind": "ConfigMap", "name": "x"]]).code == 422)
        #expect(await request(["boundObjectRef": ["kind": "Pod", "name": "nope"]]).code == 404)

        // TokenReview says the same.
        let review = await h.handle(APIRequest(method: "POST", path: "/apis/authentication.k8s.io/v1/tokenreviews", body: body([
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": ["token": .string(token)]])))
        #expect(review.code == 201 && review.json?[path: ["status", "authenticated"]] == true)
        #expect(review.json?[path: ["status", "user", "username"]] == "system:serviceaccount:default:runner")

        // The pod goes: its token with it. The account goes: every token of it (once the 10 s
        // for which a success is remembered have passed: here, the cache is emptied).
        #expect(await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/pods/p", body: body(["gracePeriodSeconds": 0]))).code == 200)
        if case .failure = await h.authenticateServiceAccount(podToken) { Issue.record("a success is not remembered") }
        h.tokenCache.withLock { $0.removeAll() }
        if case .success = await h.authenticateServiceAccount(podToken) { Issue.record("a token bound to a deleted pod still authenticates") }
        if case .failure = await h.authenticateServiceAccount(token) { Issue.record("the account's unbound token stopped working with the pod") }
        #expect(await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/serviceaccounts/runner")).code == 200)
        h.tokenCache.withLock { $0.removeAll() }
        guard case .failure(let f) = await h.authenticateServiceAccount(token) else { Issue.record("a deleted account's token authenticates"); return }
        #expect(f.description == "invalid bearer token, service account default/runner has been deleted")

        // The issuer's discovery.
        let config = await h.handle(APIRequest(method: "GET", path: "/.well-known/openid-configuration")).json
        #expect(config?["issuer"] == "https://kubernetes.default.svc.cluster.local" && config?["id_token_signing_alg_values_supported"] == ["ES256"])
        #expect(await h.handle(APIRequest(method: "GET", path: "/openid/v1/jwks")).json?["keys"]?.array?.first?["kid"]?.string == h.serviceAccountTokens.keyID)
    }

    static func request(_ path: String, authorization: String? = nil) -> Request {
        var fields = HTTPFields()
        if let authorization { fields[.authorization] = authorization }
        return Request(head: HTTPRequest(method: .get, scheme: "http", authority: "x", path: path, headerFields: fields),
                       body: RequestBody(buffer: ByteBuffer()))
    }

    /// Over HTTP: a service account is who its token says, under RBAC; a bad JWT is a 401.
    @Test func theServerAuthenticatesServiceAccountsUnderRBAC() async throws {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: ["RBAC"]))
        try await h.bootstrap()
        try await h.reconcileDefaultPolicy()
        _ = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/serviceaccounts", body: body(["metadata": ["name": "runner"]])))
        let token = try #require(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/serviceaccounts/runner/token",
                                                            body: body(["spec": [:]]))).json?[path: ["status", "token"]]?.string)
        let denied = await APIServer.respond(h, Self.request("/api/v1/namespaces/default/pods", authorization: "Bearer \(token)"))
        #expect(denied.status.code == 403)
        _ = await h.handle(APIRequest(method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body: body([
            "metadata": ["name": "runner-view"], "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"],
            "subjects": [["kind": "ServiceAccount", "name": "runner"]]])))
        #expect(await APIServer.respond(h, Self.request("/api/v1/namespaces/default/pods", authorization: "Bearer \(token)")).status.code == 200)
        let forged = try ServiceAccountTokens.ephemeral().issue(namespace: "default", serviceAccount: "runner", uid: "", audiences: h.serviceAccountTokens.audiences, seconds: 3600)
        #expect(await APIServer.respond(h, Self.request("/api/v1/namespaces/default/pods", authorization: "Bearer \(forged.token)")).status.code == 401)
        #expect(await APIServer.respond(h, Self.request("/openid/v1/jwks", authorization: "Bearer \(token)")).status.code == 200,
                "system:service-account-issuer-discovery")
    }
}

/// Bootstrap tokens as kubeadm makes them: a kube-system Secret per token.
@Suite struct BootstrapTokenTests {
    static func secret(_ id: String, _ secret: String, extra: [String: JSONValue] = [:]) -> Data {
        var data: [String: JSONValue] = ["token-id": .string(id), "token-secret": .string(secret), "usage-bootstrap-authentication": "true",
                                         "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"]
        for (k, v) in extra { data[k] = v }
        return body(["metadata": ["name": .string("bootstrap-token-\(id)")], "type": "bootstrap.kubernetes.io/token", "stringData": .object(data)])
    }

    @Test func aBootstrapTokenIsWhoItsSecretSays() async throws {
        let h = try await makeHandler()
        _ = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": "kube-system"]])))
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/kube-system/secrets", body: Self.secret("abcdef", "0123456789abcdef"))).code == 201)
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/kube-system/secrets", body: Self.secret("old000", "0123456789abcdef",
                                                                                                                          extra: ["expiration": "2020-01-01T00:00:00Z"]))).code == 201)
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/kube-system/secrets", body: Self.secret("nouse0", "0123456789abcdef",
                                                                                                                          extra: ["usage-bootstrap-authentication": "false"]))).code == 201)
        let stored = await h.handle(APIRequest(method: "GET", path: "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef")).json
        #expect(stored?["stringData"] == nil && stored?[path: ["data", "token-id"]] == "YWJjZGVm", "stringData is merged into data")
        let u = await h.authenticateBootstrapToken("abcdef.0123456789abcdef")
        #expect(u?.name == "system:bootstrap:abcdef")
        #expect(u?.groups == ["system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token", "system:authenticated"])
        #expect(await h.authenticateBootstrapToken("abcdef.0123456789abcdee") == nil, "another secret")
        #expect(await h.authenticateBootstrapToken("old000.0123456789abcdef") == nil, "expired")
        #expect(await h.authenticateBootstrapToken("nouse0.0123456789abcdef") == nil, "not for authentication")
        #expect(await h.authenticateBootstrapToken("zzzzzz.0123456789abcdef") == nil, "no such token")
        #expect(APIHandler.bootstrapToken("ABCDEF.0123456789abcdef") == nil && APIHandler.bootstrapToken("abcdef.0123") == nil)
        // Over HTTP, with --enable-bootstrap-token-auth.
        let ok = await APIServer.respond(h, ServiceAccountTokenTests.request("/api/v1/namespaces", authorization: "Bearer abcdef.0123456789abcdef"),
                                         bootstrapTokens: true)
        #expect(ok.status.code == 200)
        let bad = await APIServer.respond(h, ServiceAccountTokenTests.request("/api/v1/namespaces", authorization: "Bearer abcdef.0123456789abcdee"),
                                          bootstrapTokens: true)
        #expect(bad.status.code == 401)
    }
}
