import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Testing

/// Authorization as upstream's: the request attributes read from paths, RBAC's rules, bindings,
/// aggregation and escalation checks, the reviews kubectl's `auth` commands make, impersonation,
/// and the words of a refusal.
@Suite struct RBACTests {
    @Test func requestAttributesAreReadAsUpstreamReadsThem() {
        let u = UserInfo(name: "u")
        func p(_ m: String, _ path: String, _ q: [String: String] = [:]) -> String {
            let a = RequestAttributes.parse(user: u, method: m, path: path, query: q)
            return a.isResourceRequest ? "\(a.verb) \(a.apiGroup)/\(a.apiVersion) ns=\(a.namespace) \(a.resource)/\(a.subresource) name=\(a.name)"
                                       : "\(a.verb) path \(a.path)"
        }
        // Upstream's TestGetAPIRequestInfo cases, in this form.
        #expect(p("GET", "/api/v1/namespaces") == "list /v1 ns= namespaces/ name=")
        #expect(p("GET", "/api/v1/namespaces/other") == "get /v1 ns=other namespaces/ name=other")
        #expect(p("GET", "/api/v1/namespaces/other/pods") == "list /v1 ns=other pods/ name=")
        #expect(p("GET", "/api/v1/namespaces/other/pods/foo") == "get /v1 ns=other pods/ name=foo")
        #expect(p("HEAD", "/api/v1/namespaces/other/pods/foo") == "get /v1 ns=other pods/ name=foo")
        #expect(p("GET", "/api/v1/pods") == "list /v1 ns= pods/ name=")
        #expect(p("GET", "/api/v1/namespaces/other/pods/foo/log") == "get /v1 ns=other pods/log name=foo")
        #expect(p("GET", "/api/v1/namespaces/other/pods", ["watch": "true"]) == "watch /v1 ns=other pods/ name=")
        #expect(p("GET", "/api/v1/watch/namespaces/other/pods") == "watch /v1 ns=other pods/ name=")
        #expect(p("GET", "/api/v1/namespaces/other/pods", ["watch": "1", "fieldSelector": "metadata.name=foo"]) == "watch /v1 ns=other pods/ name=foo")
        #expect(p("POST", "/api/v1/namespaces/other/pods") == "create /v1 ns=other pods/ name=")
        #expect(p("PUT", "/api/v1/namespaces/other/pods/foo") == "update /v1 ns=other pods/ name=foo")
        #expect(p("PATCH", "/apis/apps/v1/namespaces/other/deployments/web/scale") == "patch apps/v1 ns=other deployments/scale name=web")
        #expect(p("DELETE", "/api/v1/namespaces/other/pods/foo") == "delete /v1 ns=other pods/ name=foo")
        #expect(p("DELETE", "/api/v1/namespaces/other/pods") == "deletecollection /v1 ns=other pods/ name=")
        #expect(p("PUT", "/api/v1/namespaces/other/finalize") == "update /v1 ns=other namespaces/finalize name=other")
        #expect(p("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin") == "get rbac.authorization.k8s.io/v1 ns= clusterroles/ name=admin")
        // Not resources: discovery, health, anything else.
        #expect(p("GET", "/healthz") == "get path /healthz")
        #expect(p("GET", "/api/v1") == "get path /api/v1")
        #expect(p("GET", "/apis/apps/v1") == "get path /apis/apps/v1")
        #expect(p("POST", "/apis") == "post path /apis")
    }

    @Test func rulesMatchAsUpstreamsRuleAllows() {
        let alice = UserInfo(name: "alice")
        let a = RequestAttributes.resource(alice, verb: "get", group: "", resource: "pods", subresource: "log", namespace: "n", name: "p1")
        #expect(PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods/log"]).allows(a))
        #expect(PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*/log"]).allows(a))
        #expect(!PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods"]).allows(a), "a subresource is named with its resource")
        #expect(!PolicyRule(verbs: ["get"], apiGroups: ["apps"], resources: ["pods/log"]).allows(a))
        #expect(PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods/log"], resourceNames: ["p1"]).allows(a))
        #expect(!PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods/log"], resourceNames: ["p2"]).allows(a))
        let path = RequestAttributes(user: alice, verb: "get", isResourceRequest: false, path: "/apis/apps/v1")
        #expect(PolicyRule(verbs: ["get"], nonResourceURLs: ["/apis/*"]).allows(path))
        #expect(!PolicyRule(verbs: ["get"], nonResourceURLs: ["/apis"]).allows(path))
        #expect(!PolicyRule(verbs: ["get"], apiGroups: ["*"], resources: ["*"]).allows(path), "resource rules do not cover paths")
        // Coverage, for the escalation check: a wildcard covers the specific, not the reverse.
        let all = PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"])
        let pods = PolicyRule(verbs: ["get", "list"], apiGroups: [""], resources: ["pods"])
        #expect(PolicyRule.uncovered(owner: [all], servant: [pods]).isEmpty)
        #expect(PolicyRule.uncovered(owner: [pods], servant: [all]).count == 1)
        #expect(PolicyRule.uncovered(owner: [pods], servant: [PolicyRule(verbs: ["get", "delete"], apiGroups: [""], resources: ["pods"])])
            == [PolicyRule(verbs: ["delete"], apiGroups: [""], resources: ["pods"])])
        let named = PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods"], resourceNames: ["a"])
        #expect(PolicyRule.uncovered(owner: [named], servant: [PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods"])]).count == 1)
        #expect(PolicyRule.uncovered(owner: [pods], servant: [named]).isEmpty)
    }

    static func rbacHandler() async throws -> APIHandler {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: ["RBAC"]))
        try await h.bootstrap()
        try await h.reconcileDefaultPolicy()
        for ns in ["team", "other"] {
            _ = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": .string(ns)]])))
        }
        return h
    }

    static func binding(_ name: String, ns: String, role: String, kind: String = "ClusterRole", user: String) -> Data {
        body(["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": ["name": .string(name)],
              "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": .string(kind), "name": .string(role)],
              "subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": .string(user)]]])
    }

    static func as_(_ user: UserInfo?, _ method: String, _ path: String, _ body: Data = Data(), query: [String: String] = [:]) -> APIRequest {
        var r = APIRequest(method: method, path: path, query: query, body: body)
        r.user = user
        return r
    }

    @Test func rbacDecidesAndRefusesInUpstreamsWords() async throws {
        let h = try await Self.rbacHandler()
        let alice = UserInfo(name: "alice").authenticated(), bob = UserInfo(name: "bob", groups: ["devs"]).authenticated()
        // The default roles are there, aggregated: `admin` holds what `view` holds.
        let admin = await h.handle(Self.as_(nil, "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin"))
        #expect(admin.code == 200)
        let policy = try #require(h.access.rbac).current
        #expect(policy.roleRules(kind: "ClusterRole", name: "admin", namespace: "")?.contains(PolicyRule(verbs: ["get", "list", "watch"], apiGroups: [""], resources: ["namespaces"])) == true)

        var r = await h.handle(Self.as_(alice, "GET", "/api/v1/namespaces/team/pods"))
        #expect(r.code == 403)
        #expect(r.json?["message"]?.string == #"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team""#)
        #expect(r.json?["reason"] == "Forbidden" && r.json?[path: ["details", "kind"]] == "pods")
        r = await h.handle(Self.as_(alice, "GET", "/apis/apps/v1/namespaces/team/deployments/web"))
        #expect(r.json?["message"]?.string == #"deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group "apps" in the namespace "team""#)
        r = await h.handle(Self.as_(.anonymous, "GET", "/api/v1/nodes"))
        #expect(r.json?["message"]?.string == #"nodes is forbidden: User "system:anonymous" cannot list resource "nodes" in API group "" at the cluster scope"#)
        r = await h.handle(Self.as_(.anonymous, "GET", "/metrics"))
        #expect(r.code == 403 && r.json?["message"]?.string == #"forbidden: User "system:anonymous" cannot get path "/metrics""#)
        #expect(await h.handle(Self.as_(.anonymous, "GET", "/version")).code == 200, "system:public-info-viewer")
        #expect(await h.handle(Self.as_(alice, "GET", "/apis")).code == 200, "system:discovery")

        // view in team: reads there, not writes, not elsewhere.
        #expect(await h.handle(Self.as_(nil, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
                                        Self.binding("alice-view", ns: "team", role: "view", user: "alice"))).code == 201)
        #expect(await h.handle(Self.as_(alice, "GET", "/api/v1/namespaces/team/pods")).code == 200)
        #expect(await h.handle(Self.as_(alice, "GET", "/apis/apps/v1/namespaces/team/deployments")).code == 200)
        #expect(await h.handle(Self.as_(alice, "GET", "/api/v1/namespaces/other/pods")).code == 403)
        #expect(await h.handle(Self.as_(alice, "GET", "/api/v1/namespaces/team/secrets")).code == 403, "view does not read secrets")
        r = await h.handle(Self.as_(alice, "POST", "/api/v1/namespaces/team/configmaps", body(["metadata": ["name": "c"]])))
        #expect(r.code == 403)

        // Escalation: bob is admin in team; he may grant what he holds there, and no more.
        #expect(await h.handle(Self.as_(nil, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
                                        Self.binding("bob-admin", ns: "team", role: "admin", user: "bob"))).code == 201)
        let readPods = body(["metadata": ["name": "read-pods"], "rules": [["apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]]]])
        #expect(await h.handle(Self.as_(bob, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles", readPods)).code == 201)
        let readNodes = body(["metadata": ["name": "read-nodes"], "rules": [["apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]]]])
        r = await h.handle(Self.as_(bob, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles", readNodes))
        #expect(r.code == 403)
        #expect(r.json?["message"]?.string == "roles.rbac.authorization.k8s.io \"read-nodes\" is forbidden: user \"bob\" (groups=[\"devs\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}")
        #expect(await h.handle(Self.as_(bob, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
                                        Self.binding("carol-view", ns: "team", role: "view", user: "carol"))).code == 201, "admin covers view")
        r = await h.handle(Self.as_(bob, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
                                    Self.binding("carol-root", ns: "team", role: "cluster-admin", user: "carol")))
        #expect(r.code == 403, "cluster-admin is more than bob holds: \(r.json?.text() ?? "")")
        r = await h.handle(Self.as_(bob, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/other/rolebindings",
                                    Self.binding("carol-view", ns: "other", role: "view", user: "carol")))
        #expect(r.code == 403, "bob is admin in team only")
        r = await h.handle(Self.as_(nil, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                                    body(["metadata": ["name": "bad"], "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"]])))
        #expect(r.code == 422, "a ClusterRoleBinding refers to a ClusterRole")
        // A binding's role does not change; an aggregationRule needs every permission.
        var carol = try #require(await h.handle(Self.as_(nil, "GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings/carol-view")).json)
        carol["roleRef"] = ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"]
        r = await h.handle(Self.as_(nil, "PUT", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings/carol-view", carol.serialized()))
        #expect(r.code == 422 && r.json?["message"]?.string?.contains("cannot change roleRef") == true, "\(r.json?.text() ?? "")")
        _ = await h.handle(Self.as_(nil, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body([
            "metadata": ["name": "role-writer"], "rules": [["apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]]]])))
        _ = await h.handle(Self.as_(nil, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body([
            "metadata": ["name": "bob-role-writer"], "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "role-writer"],
            "subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"]]])))
        r = await h.handle(Self.as_(bob, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body([
            "metadata": ["name": "gather-all"], "aggregationRule": ["clusterRoleSelectors": [["matchLabels": ["kubernetes.io/bootstrapping": "rbac-defaults"]]]]])))
        #expect(r.code == 403 && r.json?["message"]?.string?.hasSuffix("must have cluster-admin privileges to use the aggregationRule") == true, "\(r.json?.text() ?? "")")
    }

    @Test func reviewsAnswerWhatRBACSays() async throws {
        let h = try await Self.rbacHandler()
        let alice = UserInfo(name: "alice", uid: "u-1", groups: ["devs"]).authenticated()
        _ = await h.handle(Self.as_(nil, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
                                    Self.binding("alice-edit", ns: "team", role: "edit", user: "alice")))
        func ssar(_ verb: String, _ resource: String, group: String = "", ns: String) async -> JSONValue? {
            await h.handle(Self.as_(alice, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body([
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": ["resourceAttributes": ["verb": .string(verb), "group": .string(group), "resource": .string(resource), "namespace": .string(ns)]]]))).json
        }
        let yes = await ssar("create", "pods", ns: "team")
        #expect(yes?[path: ["status", "allowed"]] == true)
        #expect(yes?[path: ["status", "reason"]]?.string == #"RBAC: allowed by RoleBinding "alice-edit/team" of ClusterRole "edit" to User "alice""#)
        #expect(await ssar("create", "pods", ns: "other")?[path: ["status", "allowed"]] == false)
        #expect(await ssar("create", "roles", group: "rbac.authorization.k8s.io", ns: "team")?[path: ["status", "allowed"]] == false, "edit does not touch RBAC")
        #expect(await ssar("create", "deployments", group: "apps", ns: "team")?[path: ["status", "allowed"]] == true)
        // Another user's, asked by one who may (cluster-admin through system:masters).
        let sar = await h.handle(Self.as_(nil, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body([
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": ["user": "alice", "resourceAttributes": ["verb": "delete", "resource": "services", "namespace": "team"]]])))
        #expect(sar.code == 201 && sar.json?[path: ["status", "allowed"]] == true)
        let denied = await h.handle(Self.as_(alice, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body([
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": ["user": "bob", "resourceAttributes": ["verb": "get", "resource": "pods"]]])))
        #expect(denied.code == 403, "only who may create subjectaccessreviews asks about others")
        let rules = await h.handle(Self.as_(alice, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", body([
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": ["namespace": "team"]]))).json
        let resourceRules = rules?[path: ["status", "resourceRules"]]?.array ?? []
        #expect(resourceRules.contains { ($0["resources"]?.array ?? []).contains("pods") && ($0["verbs"]?.array ?? []).contains("create") })
        #expect(rules?[path: ["status", "incomplete"]] == false)
        let who = await h.handle(Self.as_(alice, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body([
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"]))).json
        #expect(who?[path: ["status", "userInfo", "username"]] == "alice" && who?[path: ["status", "userInfo", "uid"]] == "u-1")
        #expect(who?[path: ["status", "userInfo", "groups"]] == ["devs", "system:authenticated"])
        // Reviews are answered, never stored or listed.
        #expect(await h.handle(Self.as_(nil, "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")).code == 405)
    }

    @Test func impersonationIsCheckedAndAppliedAsUpstream() async throws {
        let h = try await Self.rbacHandler()
        var r = Self.as_(nil, "GET", "/api/v1/namespaces/team/pods")
        r.impersonation = Impersonation(user: "alice")
        var answer = await h.handle(r)
        #expect(answer.code == 403 && answer.json?["message"]?.string?.contains(#"User "alice" cannot list"#) == true, "\(answer.json?.text() ?? "")")
        r.impersonation = Impersonation(user: "alice", groups: ["system:masters"])
        #expect(await h.handle(r).code == 200, "the impersonated groups count")
        var fromAlice = Self.as_(UserInfo(name: "alice").authenticated(), "GET", "/api/v1/namespaces/team/pods")
        fromAlice.impersonation = Impersonation(user: "bob")
        answer = await h.handle(fromAlice)
        #expect(answer.json?["message"]?.string == #"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#)
    }

    @Test func modesAreCheckedAndChainedInOrder() async throws {
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: ["RBAC", "Magic"]) }
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: ["RBAC", "RBAC"]) }
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: []) }
        let a = RequestAttributes.resource(UserInfo(name: "x"), verb: "get", group: "", resource: "pods", namespace: "n")
        #expect(try await AccessControl(modes: ["AlwaysDeny", "AlwaysAllow"]).authorize(a).allowed, "AlwaysDeny has no opinion: the next decides")
        #expect(try await AccessControl(modes: ["AlwaysAllow", "AlwaysDeny"]).authorize(a).allowed)
        #expect(try await AccessControl(modes: ["AlwaysDeny"]).authorize(a).allowed == false)
        #expect(try await AccessControl(modes: ["AlwaysDeny"]).authorize(RequestAttributes.resource(.unsecured, verb: "get", group: "", resource: "pods")).allowed,
                "system:masters is allowed before any mode is asked")
    }
}
