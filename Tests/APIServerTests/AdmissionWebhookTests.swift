import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Synchronization
import Testing
@testable import Webhooks

/// MutatingAdmissionWebhook and ValidatingAdmissionWebhook: configurations defaulted and
/// validated as upstream's, AdmissionReviews POSTed over HTTPS to a real test server, its
/// refusals, patches and warnings applied, selectors and failure policies honoured.
@Suite("admission webhooks", .serialized) struct AdmissionWebhookTests {
    static func handler() async throws -> APIHandler {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"))
        try await h.bootstrap()
        return h
    }

    static func send(_ h: APIHandler, _ method: String, _ path: String, _ body: JSONValue? = nil, user: String = "alice") async -> APIResponse {
        var r = APIRequest(method: method, path: path, contentType: body == nil ? nil : "application/json", body: body?.serialized() ?? Data())
        r.user = UserInfo(name: user, groups: ["system:masters"]).authenticated()
        return await h.handle(r)
    }

    static func webhook(_ name: String, _ server: TestWebhookServer, path: String, rules: JSONValue, extra: [String: JSONValue] = [:]) -> JSONValue {
        var w: [String: JSONValue] = [
            "name": .string(name), "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": ["url": .string(server.url + path), "caBundle": .string(Data(server.caPEM.utf8).base64EncodedString())],
            "rules": rules,
        ]
        for (k, v) in extra { w[k] = v }
        return .object(w)
    }

    static let podRules: JSONValue = [["operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]]]

    static func pod(_ name: String, labels: [String: String] = [:], namespace: String = "default") -> JSONValue {
        ["apiVersion": "v1", "kind": "Pod",
         "metadata": ["name": .string(name), "namespace": .string(namespace), "labels": .object(labels.mapValues { .string($0) })],
         "spec": ["containers": [["name": "c", "image": "busybox"]]]]
    }

    /// Allows unless the object is labelled `deny`; the reviews' answers are built from the request.
    static func answer(_ r: TestWebhookServer.Received) -> (status: Int, body: JSONValue) {
        let request = r.body["request"] ?? [:]
        let uid = request["uid"] ?? ""
        let object = request["object"] == .null ? request["oldObject"] : request["object"]
        var response: [String: JSONValue] = ["uid": uid, "allowed": true]
        switch r.path {
        case "/validate":
            if object?[path: ["metadata", "labels", "deny"]] != nil || object?[path: ["metadata", "name"]] == "protected" {
                response = ["uid": uid, "allowed": false, "status": ["code": 403, "reason": "Forbidden", "message": "objects labelled deny are not welcome"]]
            }
        case "/mutate":
            let patch: JSONValue = [["op": "add", "path": "/metadata/annotations", "value": ["mutated-by": "first.example.com"]]]
            response["patchType"] = "JSONPatch"
            response["patch"] = .string(Data(patch.serialized()).base64EncodedString())
            response["warnings"] = ["the first webhook changed this pod"]
        case "/mutate-second":
            // Sees the first webhook's annotation, and records it in a label.
            let seen = object?[path: ["metadata", "annotations", "mutated-by"]]?.string ?? "nothing"
            let patch: JSONValue = [["op": "add", "path": "/metadata/labels/second-saw", "value": .string(seen.replacingOccurrences(of: ".", with: "-"))]]
            response["patchType"] = "JSONPatch"
            response["patch"] = .string(Data(patch.serialized()).base64EncodedString())
        default: break
        }
        return (200, ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": .object(response)])
    }

    @Test func configurationsAreDefaultedAndValidatedAsUpstreams() async throws {
        let h = try await Self.handler()
        let good: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": ["name": "good"],
                               "webhooks": [["name": "good.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                                             "clientConfig": ["service": ["namespace": "default", "name": "hook"]],
                                             "rules": [["operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]]]]]]
        let created = await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", good)
        #expect(created.code == 201, "\(created.json ?? .null)")
        let w = created.json?["webhooks"]?.array?.first
        #expect(w?["failurePolicy"] == "Fail" && w?["matchPolicy"] == "Equivalent" && w?["timeoutSeconds"] == 10)
        #expect(w?["namespaceSelector"] == [:] && w?["objectSelector"] == [:])
        #expect(w?[path: ["clientConfig", "service", "port"]] == 443 && w?["rules"]?.array?.first?["scope"] == "*")
        #expect(w?["reinvocationPolicy"] == nil, "only mutating webhooks have a reinvocation policy")

        let bad: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": ["name": "bad"],
                              "webhooks": [["name": "short.name", "timeoutSeconds": 31, "clientConfig": ["url": "http://example.com/x"],
                                            "rules": [["operations": ["PATCH"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]]]],
                                           ["name": "twice.example.com", "sideEffects": "Some", "admissionReviewVersions": ["v2"], "clientConfig": [:]],
                                           ["name": "twice.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                                            "clientConfig": ["service": ["namespace": "default", "name": "hook", "port": 0, "path": "x"]]]]]
        let refused = await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", bad)
        #expect(refused.code == 422)
        let causes = Set((refused.json?[path: ["details", "causes"]]?.array ?? []).map { "\($0["field"]?.string ?? ""): \($0["message"]?.string ?? "")" })
        for want in [
            "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
            "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
            "webhooks[0].clientConfig.url: Invalid value: \"http://example.com/x\": 'https' is the only allowed URL scheme",
            "webhooks[0].rules[0].operations[0]: Unsupported value: \"PATCH\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\"",
            "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
            "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
            "webhooks[1].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
            "webhooks[1].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1",
            "webhooks[1].clientConfig: Required value: exactly one of url or service is required",
            "webhooks[2].name: Duplicate value: \"twice.example.com\"",
            "webhooks[2].clientConfig.service.port: Invalid value: 0: port is not valid: must be between 1 and 65535, inclusive",
            "webhooks[2].clientConfig.service.path: Invalid value: \"x\": must start with a '/'",
        ] {
            #expect(causes.contains(want), "missing \(want) in \(causes.sorted())")
        }
        // kubectl get's table: the number of webhooks.
        var table = APIRequest(method: "GET", path: "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                               accept: "application/json;as=Table;v=v1;g=meta.k8s.io")
        table.user = UserInfo(name: "admin", groups: ["system:masters"])
        let columns = (await h.handle(table)).json?["columnDefinitions"]?.array?.compactMap { $0["name"]?.string }
        #expect(columns == ["Name", "Webhooks", "Age"])
    }

    @Test func aValidatingWebhookRefusesAndAMutatingOnePatches() async throws {
        let server = try await TestWebhookServer { Self.answer($0) }
        defer { server.stop() }
        let h = try await Self.handler()
        let validating: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": ["name": "deny"],
                                     "webhooks": [Self.webhook("deny.example.com", server, path: "/validate", rules: Self.podRules)]]
        #expect(await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", validating).code == 201)
        // Two mutating configurations, called in the order of their names.
        for (name, path) in [("a-first", "/mutate"), ("b-second", "/mutate-second")] {
            let m: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": ["name": .string(name)],
                                "webhooks": [Self.webhook("\(name).example.com", server, path: path, rules: Self.podRules)]]
            #expect(await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", m).code == 201)
        }

        let refused = await Self.send(h, "POST", "/api/v1/namespaces/default/pods", Self.pod("bad", labels: ["deny": "yes"]))
        #expect(refused.code == 403)
        #expect(refused.json?["message"] == "admission webhook \"deny.example.com\" denied the request: objects labelled deny are not welcome")
        #expect(await Self.send(h, "GET", "/api/v1/namespaces/default/pods/bad").code == 404, "nothing stored")

        let created = await Self.send(h, "POST", "/api/v1/namespaces/default/pods", Self.pod("good"))
        #expect(created.code == 201, "\(created.json ?? .null)")
        #expect(created.json?[path: ["metadata", "annotations", "mutated-by"]] == "first.example.com")
        #expect(created.json?[path: ["metadata", "labels", "second-saw"]] == "first-example-com", "the second webhook saw the first one's patch")
        #expect(created.warnings.contains("the first webhook changed this pod"))
        // Webhooks see the object defaulted, and the validating one sees the patched object.
        let reviews = server.requests
        let firstMutate = try #require(reviews.first { $0.path == "/mutate" && $0.body[path: ["request", "name"]] == "good" })
        #expect(firstMutate.body[path: ["request", "object", "spec", "containers"]]?.array?.first?["imagePullPolicy"] == "Always")
        let validated = try #require(reviews.last { $0.path == "/validate" })
        #expect(validated.body[path: ["request", "object", "metadata", "labels", "second-saw"]] == "first-example-com")
        // The review as upstream's.
        let request = try #require(firstMutate.body["request"])
        #expect(firstMutate.body["apiVersion"] == "admission.k8s.io/v1" && firstMutate.body["kind"] == "AdmissionReview")
        #expect(request["operation"] == "CREATE" && request["namespace"] == "default" && request["name"] == "good")
        #expect(request["kind"] == ["group": "", "version": "v1", "kind": "Pod"] && request["resource"] == ["group": "", "version": "v1", "resource": "pods"])
        #expect(request[path: ["userInfo", "username"]] == "alice" && request["oldObject"] == .null && request["dryRun"] == false)
        #expect(request[path: ["options", "kind"]] == "CreateOptions")
        #expect(firstMutate.path == "/mutate" && server.requests.allSatisfy { $0.authorization == nil })

        // An update carries the old object.
        var updated = try #require(created.json)
        updated[path: ["metadata", "labels", "tier"]] = "web"
        #expect(await Self.send(h, "PUT", "/api/v1/namespaces/default/pods/good", updated).code == 200)
        let update = try #require(server.requests.last { $0.path == "/validate" })
        #expect(update.body[path: ["request", "operation"]] == "UPDATE")
        #expect(update.body[path: ["request", "oldObject", "metadata", "labels", "tier"]] == nil)
        #expect(update.body[path: ["request", "object", "metadata", "labels", "tier"]] == "web")
    }

    /// `reinvocationPolicy: IfNeeded`: the first webhook runs again because the second changed
    /// the object after it; with `Never` it runs once.
    @Test func ifNeededWebhooksRunAgainAfterALaterChange() async throws {
        for policy in ["IfNeeded", "Never"] {
            let server = try await TestWebhookServer { Self.answer($0) }
            defer { server.stop() }
            let h = try await Self.handler()
            for (name, path, reinvocation) in [("a-first", "/mutate", policy), ("b-second", "/mutate-second", "Never")] {
                let m: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": ["name": .string(name)],
                                    "webhooks": [Self.webhook("\(name).example.com", server, path: path, rules: Self.podRules,
                                                              extra: ["reinvocationPolicy": .string(reinvocation)])]]
                #expect(await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", m).code == 201)
            }
            #expect(await Self.send(h, "POST", "/api/v1/namespaces/default/pods", Self.pod("p")).code == 201)
            let first = server.requests.filter { $0.path.hasPrefix("/mutate?") || $0.path == "/mutate" }
            #expect(first.count == (policy == "IfNeeded" ? 2 : 1), "\(policy): the first webhook was called \(first.count) times")
            if policy == "IfNeeded" {
                #expect(first[1].body[path: ["request", "object", "metadata", "labels", "second-saw"]] == "first-example-com",
                        "called again with the second webhook's change")
            }
            #expect(server.requests.filter { $0.path.hasPrefix("/mutate-second") }.count == 1)
        }
    }

    @Test func deletesAreValidatedAndConfigurationsAreNeverSentToWebhooks() async throws {
        let server = try await TestWebhookServer { Self.answer($0) }
        defer { server.stop() }
        let h = try await Self.handler()
        // Everything, deletes included.
        let all: JSONValue = [["operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]]]
        let config: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": ["name": "protect"],
                                 "webhooks": [Self.webhook("protect.example.com", server, path: "/validate", rules: all)]]
        #expect(await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", config).code == 201)
        let cm: JSONValue = ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "protected", "namespace": "default"]]
        // Created: the webhook refuses the name on every operation, so it is stored past admission by the configuration's absence first.
        #expect(await Self.send(h, "POST", "/api/v1/namespaces/default/configmaps", cm).code == 403)
        #expect(await Self.send(h, "DELETE", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/protect").code == 200,
                "a configuration is never sent to a webhook, so it can always be removed")
        #expect(await Self.send(h, "POST", "/api/v1/namespaces/default/configmaps", cm).code == 201)
        #expect(await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", config).code == 201)
        let delete = await Self.send(h, "DELETE", "/api/v1/namespaces/default/configmaps/protected")
        #expect(delete.code == 403 && delete.json?["message"]?.string?.hasPrefix("admission webhook \"protect.example.com\" denied the request") == true)
        let review = try #require(server.requests.last)
        #expect(review.body[path: ["request", "operation"]] == "DELETE" && review.body[path: ["request", "object"]] == .null)
        #expect(review.body[path: ["request", "oldObject", "metadata", "name"]] == "protected")
        #expect(review.body[path: ["request", "options", "kind"]] == "DeleteOptions")
        #expect(!server.requests.contains { $0.body[path: ["request", "resource", "group"]] == "admissionregistration.k8s.io" })
    }

    @Test func selectorsAndFailurePoliciesDecideWhatIsCalled() async throws {
        let server = try await TestWebhookServer { Self.answer($0) }
        defer { server.stop() }
        let h = try await Self.handler()
        // Only in namespaces labelled webhooks=on, only for objects labelled checked=yes.
        let selective: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": ["name": "selective"],
                                    "webhooks": [Self.webhook("selective.example.com", server, path: "/validate", rules: Self.podRules, extra: [
                                        "namespaceSelector": ["matchLabels": ["webhooks": "on"]],
                                        "objectSelector": ["matchExpressions": [["key": "checked", "operator": "In", "values": ["yes"]]]],
                                    ])]]
        #expect(await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", selective).code == 201)
        for (name, labels) in [("on", ["webhooks": "on"]), ("off", [:])] {
            let ns: JSONValue = ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })]]
            #expect(await Self.send(h, "POST", "/api/v1/namespaces", ns).code == 201)
        }
        #expect(await Self.send(h, "POST", "/api/v1/namespaces/on/pods", Self.pod("a", labels: ["deny": "1", "checked": "yes"], namespace: "on")).code == 403)
        #expect(await Self.send(h, "POST", "/api/v1/namespaces/on/pods", Self.pod("b", labels: ["deny": "1"], namespace: "on")).code == 201,
                "the object selector does not match: not called")
        #expect(await Self.send(h, "POST", "/api/v1/namespaces/off/pods", Self.pod("c", labels: ["deny": "1", "checked": "yes"], namespace: "off")).code == 201,
                "the namespace selector does not match: not called")
        #expect(server.requests.count == 1)

        // Nothing listens: Fail refuses with 500, Ignore lets the write through.
        for (policy, code) in [("Ignore", 201), ("Fail", 500)] {
            let gone: JSONValue = ["apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": ["name": .string("gone-\(policy.lowercased())")],
                                   "webhooks": [["name": "gone.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": .string(policy),
                                                 "timeoutSeconds": 2, "clientConfig": ["url": "https://127.0.0.1:1/mutate"],
                                                 "rules": [["operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]]]]]]
            let made = await Self.send(h, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", gone)
            #expect(made.code == 201, "\(made.json ?? .null)")
            let cm: JSONValue = ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string("cm-\(policy.lowercased())"), "namespace": "default"]]
            let r = await Self.send(h, "POST", "/api/v1/namespaces/default/configmaps", cm)
            #expect(r.code == code, "failurePolicy \(policy): \(r.json ?? .null)")
            if code == 500 {
                #expect(r.json?["message"]?.string?.hasPrefix("Internal error occurred: failed calling webhook \"gone.example.com\": failed to call webhook:") == true,
                        "\(r.json?["message"] ?? .null)")
            }
        }
    }

    @Test func rulesMatchAsUpstreams() {
        func a(_ op: String, _ group: String, _ resource: String, _ sub: String = "", namespaced: Bool = true) -> AdmissionAttributes {
            AdmissionAttributes(operation: op, group: group, version: "v1", resource: resource, subresource: sub, kind: "K", namespaced: namespaced,
                                namespace: namespaced ? "n" : "", name: "x", user: UserInfo(name: "u"), object: nil, oldObject: nil, dryRun: false)
        }
        func rule(_ ops: [String], _ groups: [String], _ resources: [String], scope: String? = nil) -> AdmissionRule {
            var v: JSONValue = ["operations": .array(ops.map { .string($0) }), "apiGroups": .array(groups.map { .string($0) }),
                                "apiVersions": ["*"], "resources": .array(resources.map { .string($0) })]
            if let scope { v["scope"] = .string(scope) }
            return AdmissionRule(v)
        }
        #expect(rule(["CREATE"], [""], ["pods"]).matches(a("CREATE", "", "pods")))
        #expect(!rule(["CREATE"], [""], ["pods"]).matches(a("UPDATE", "", "pods")))
        #expect(!rule(["*"], [""], ["pods"]).matches(a("UPDATE", "", "pods", "status")), "a resource does not cover its subresources")
        #expect(rule(["*"], [""], ["pods/status"]).matches(a("UPDATE", "", "pods", "status")))
        #expect(rule(["*"], [""], ["pods/*"]).matches(a("UPDATE", "", "pods", "status")))
        #expect(rule(["*"], [""], ["pods/*"]).matches(a("UPDATE", "", "pods")), "as upstream's matcher: a `*` subresource matches none too")
        #expect(rule(["*"], ["*"], ["*/status"]).matches(a("UPDATE", "apps", "deployments", "status")))
        #expect(rule(["*"], ["*"], ["*"]).matches(a("DELETE", "apps", "deployments")))
        #expect(!rule(["*"], ["*"], ["*"]).matches(a("DELETE", "apps", "deployments", "scale")))
        #expect(rule(["*"], ["*"], ["*/*"]).matches(a("DELETE", "apps", "deployments", "scale")))
        #expect(!rule(["*"], ["apps"], ["*"]).matches(a("CREATE", "", "pods")))
        #expect(!rule(["*"], ["*"], ["*"], scope: "Cluster").matches(a("CREATE", "", "pods")))
        #expect(rule(["*"], ["*"], ["*"], scope: "Cluster").matches(a("CREATE", "", "nodes", namespaced: false)))
        #expect(!rule(["*"], ["*"], ["*"], scope: "Namespaced").matches(a("CREATE", "", "nodes", namespaced: false)))
    }
}
