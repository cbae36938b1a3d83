import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Synchronization
import Testing
@testable import Webhooks

/// `--authorization-mode=Webhook`: SubjectAccessReviews POSTed over HTTPS to a real server, its
/// answers decided and cached as upstream's webhook authorizer does, and a failing webhook.
@Suite("webhook authorizer", .serialized) struct WebhookAuthorizerTests {
    /// alice may do anything, mallory is denied outright, anyone else gets no opinion.
    static func policy(_ r: TestWebhookServer.Received) -> (status: Int, body: JSONValue) {
        var review = r.body
        let user = review[path: ["spec", "user"]]?.string ?? ""
        switch user {
        case "alice": review["status"] = ["allowed": true, "reason": "alice may"]
        case "mallory": review["status"] = ["allowed": false, "denied": true, "reason": "mallory is banned"]
        default: review["status"] = ["allowed": false, "reason": .string("no rule for \"\(user)\"")]
        }
        return (200, review)
    }

    static func handler(modes: [String], webhook: WebhookAuthorizer) async throws -> APIHandler {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: modes, webhook: webhook))
        try await h.bootstrap()
        return h
    }

    static func get(_ h: APIHandler, _ user: String, _ path: String = "/api/v1/namespaces/default/pods") async -> APIResponse {
        var r = APIRequest(method: "GET", path: path)
        r.user = UserInfo(name: user, groups: ["devs"]).authenticated()
        return await h.handle(r)
    }

    @Test func theReviewIsUpstreamsSubjectAccessReview() {
        let user = UserInfo(name: "jane", uid: "u-1", groups: ["g1", "g2"], extra: ["scopes": ["a"]])
        let a = RequestAttributes.resource(user, verb: "get", group: "unicorn.example.org", resource: "pods", namespace: "kittens")
        #expect(WebhookAuthorizer.spec(a, version: .v1) == [
            "resourceAttributes": ["namespace": "kittens", "verb": "get", "group": "unicorn.example.org", "resource": "pods"],
            "user": "jane", "groups": ["g1", "g2"], "extra": ["scopes": ["a"]], "uid": "u-1",
        ])
        // v1beta1 names the groups `group`.
        #expect(WebhookAuthorizer.spec(a, version: .v1beta1)["group"] == ["g1", "g2"])
        #expect(WebhookAuthorizer.spec(a, version: .v1beta1)["groups"] == nil)
        let path = RequestAttributes(user: UserInfo(name: "jane"), verb: "get", isResourceRequest: false, path: "/debug/pprof")
        #expect(WebhookAuthorizer.spec(path, version: .v1) == ["nonResourceAttributes": ["path": "/debug/pprof", "verb": "get"], "user": "jane"])
        #expect(WebhookAuthorizer.decision(["allowed": true]) == .allow(""))
        #expect(WebhookAuthorizer.decision(["allowed": false, "denied": true, "reason": "no"]) == .deny("no"))
        #expect(WebhookAuthorizer.decision(["allowed": false, "reason": "maybe"]) == .noOpinion("maybe"))
    }

    @Test func decisionsComeFromTheWebhookAndAreCached() async throws {
        let server = try await TestWebhookServer { Self.policy($0) }
        defer { server.stop() }
        let webhook = WebhookAuthorizer(endpoint: try WebhookEndpoint.load(path: try server.kubeconfig(), timeout: .seconds(60)), version: .v1)
        let h = try await Self.handler(modes: ["Webhook", "RBAC"], webhook: webhook)

        #expect(await Self.get(h, "alice").code == 200)
        let first = try #require(server.requests.first)
        #expect(first.path == "/authorize")
        #expect(first.authorization == "Bearer server-secret", "the kubeconfig's user is the server's credential")
        #expect(first.body["apiVersion"] == "authorization.k8s.io/v1" && first.body["kind"] == "SubjectAccessReview")
        #expect(first.body["spec"] == ["resourceAttributes": ["namespace": "default", "verb": "list", "version": "v1", "resource": "pods"],
                                       "user": "alice", "groups": ["devs", "system:authenticated"]])

        // Denied: no later mode is asked, the webhook's reason is in the message.
        let denied = await Self.get(h, "mallory")
        #expect(denied.code == 403)
        #expect(denied.json?["message"]?.string?.hasSuffix(": mallory is banned") == true, "\(denied.json?["message"] ?? .null)")
        // No opinion: RBAC decides next (and grants bob nothing).
        let bob = await Self.get(h, "bob")
        #expect(bob.code == 403)

        // Again: all three from the cache, allowed and not.
        let calls = server.requests.count
        #expect(await Self.get(h, "alice").code == 200)
        #expect(await Self.get(h, "mallory").code == 403)
        #expect(await Self.get(h, "bob").code == 403)
        #expect(server.requests.count == calls, "cached decisions do not call the webhook")
        #expect(webhook.stats.hits == 3)
        // Another request is another review.
        #expect(await Self.get(h, "alice", "/api/v1/namespaces/other/pods").code == 200)
        #expect(server.requests.count == calls + 1)
    }

    @Test func cachedDecisionsExpireAfterTheirTTL() async throws {
        let server = try await TestWebhookServer { Self.policy($0) }
        defer { server.stop() }
        // A long timeout: on a loaded machine a slow answer must not be retried, which would count twice.
        let webhook = WebhookAuthorizer(endpoint: try WebhookEndpoint.load(path: try server.kubeconfig(), timeout: .seconds(60)),
                                        authorizedTTL: .milliseconds(300), unauthorizedTTL: .zero)
        let a = RequestAttributes.resource(UserInfo(name: "alice"), verb: "get", group: "", resource: "pods", namespace: "n", name: "p")
        let b = RequestAttributes.resource(UserInfo(name: "bob"), verb: "get", group: "", resource: "pods", namespace: "n", name: "p")
        #expect(await webhook.authorize(a).allowed)
        #expect(await webhook.authorize(a).allowed)
        #expect(server.requests.count == 1)
        // The v1beta1 default names the groups `group`.
        #expect(server.requests[0].body["apiVersion"] == "authorization.k8s.io/v1beta1")
        try await Task.sleep(for: .milliseconds(400))
        #expect(await webhook.authorize(a).allowed)
        #expect(server.requests.count == 2, "expired: asked again")
        // A zero TTL caches nothing.
        #expect(await webhook.authorize(b) == .noOpinion("no rule for \"bob\""))
        #expect(await webhook.authorize(b) == .noOpinion("no rule for \"bob\""))
        #expect(server.requests.count == 4)
    }

    @Test func aFailingWebhookIsRetriedThenFailsClosed() async throws {
        let failures = Counter()
        // The first answers are 500s; then it recovers.
        let server = try await TestWebhookServer { r in
            if failures.next() < 2 { return (500, ["message": "overloaded"]) }
            return Self.policy(r)
        }
        defer { server.stop() }
        // A timeout no loaded machine reaches: a request that timed out would be retried and counted.
        let endpoint = try WebhookEndpoint.load(path: try server.kubeconfig(), timeout: .seconds(60))
        let fast = WebhookAuthorizer.Backoff(initial: .milliseconds(10), factor: 1.5, steps: 5)
        let webhook = WebhookAuthorizer(endpoint: endpoint, backoff: fast)
        let a = RequestAttributes.resource(UserInfo(name: "alice"), verb: "get", group: "", resource: "pods", namespace: "n")
        #expect(await webhook.authorize(a).allowed, "retried past two 500s")
        #expect(server.requests.count == 3)

        // Always failing: no opinion with the error; the request fails with 500 unless a later mode allows.
        let broken = try await TestWebhookServer { _ in (503, ["message": "down"]) }
        let brokenHook = WebhookAuthorizer(endpoint: try WebhookEndpoint.load(path: try broken.kubeconfig(), timeout: .seconds(5)), backoff: fast)
        let h = try await Self.handler(modes: ["Webhook", "RBAC"], webhook: brokenHook)
        try await h.reconcileDefaultPolicy()
        let failed = await Self.get(h, "alice")
        #expect(failed.code == 500)
        #expect(failed.json?["reason"] == "InternalError")
        #expect(failed.json?["message"]?.string?.contains("the webhook answered 503") == true, "\(failed.json?["message"] ?? .null)")
        #expect(broken.requests.count == 5, "five tries, as upstream's backoff")
        // system:masters is allowed before the webhook is asked.
        var admin = APIRequest(method: "GET", path: "/api/v1/namespaces/default/pods")
        admin.user = UserInfo(name: "root", groups: ["system:masters"]).authenticated()
        #expect(await h.handle(admin).code == 200)
        #expect(broken.requests.count == 5)
        // kubectl auth can-i reads the error as the review's evaluationError (RBAC's
        // system:basic-user allows the review itself once the webhook has failed).
        let ssar: JSONValue = ["apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                               "spec": ["resourceAttributes": ["verb": "get", "resource": "pods", "namespace": "default"]]]
        var review = APIRequest(method: "POST", path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", contentType: "application/json",
                                body: ssar.serialized())
        review.user = UserInfo(name: "alice").authenticated()
        let answered = await h.handle(review)
        #expect(answered.json?[path: ["status", "allowed"]] == false, "\(answered.json ?? JSONValue.null)")
        #expect(answered.json?[path: ["status", "evaluationError"]]?.string?.contains("503") == true, "\(answered.json ?? JSONValue.null)")
        broken.stop()

        // Nothing listening: the connection fails, the same way.
        let gone = WebhookAuthorizer(endpoint: try WebhookEndpoint(url: "https://127.0.0.1:1/authorize", caBundle: nil, timeout: .seconds(2)), backoff: fast)
        if case .error = await gone.authorize(a) {} else { Issue.record("a webhook that cannot be reached is an error") }
    }

    @Test func aSlowWebhookTimesOut() async throws {
        let server = try await TestWebhookServer { r in
            try? await Task.sleep(for: .seconds(10))
            return Self.policy(r)
        }
        defer { server.stop() }
        let webhook = WebhookAuthorizer(endpoint: try WebhookEndpoint.load(path: try server.kubeconfig(), timeout: .milliseconds(200)),
                                        backoff: .init(initial: .milliseconds(10), factor: 1, steps: 2))
        let start = ContinuousClock.now
        let d = await webhook.authorize(.resource(UserInfo(name: "alice"), verb: "get", group: "", resource: "pods"))
        // Two tries of 200 ms; well before the webhook's 10 s even on a loaded machine.
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(d.reason.contains("context deadline exceeded"), "\(d)")
    }

    @Test func theModeNeedsItsFileAndTheFileItsMode() throws {
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: ["Webhook"]) }
        let endpoint = try WebhookEndpoint(url: "https://127.0.0.1:1/x", caBundle: nil, timeout: .seconds(1))
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: ["RBAC"], webhook: WebhookAuthorizer(endpoint: endpoint)) }
        #expect(throws: WebhookEndpoint.Failure.self) { try WebhookEndpoint(url: "http://127.0.0.1:1/x", caBundle: nil, timeout: .seconds(1)) }
        #expect(throws: WebhookEndpoint.Failure.self) { try WebhookEndpoint.load(path: "/nonexistent/webhook.kubeconfig", timeout: .seconds(1)) }
    }
}

final class Counter: Sendable {
    let value = Mutex(0)
    func next() -> Int { value.withLock { v in defer { v += 1 }; return v } }
}
