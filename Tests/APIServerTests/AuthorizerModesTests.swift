import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Testing

/// The ABAC and Node modes as upstream's: ABAC's policy lines (v1beta1 and v0), and the Node
/// mode's graph: a kubelet reads what its pods use and nothing else.
@Suite struct AuthorizerModesTests {
    static let policy = """
        {"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", "spec": {"user": "alice", "namespace": "*", "resource": "*", "apiGroup": "*"}}
        {"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", "spec": {"user": "bob", "namespace": "caribou", "resource": "pods", "readonly": true}}
        # Everyone authenticated may read every path.
        {"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", "spec": {"group": "system:authenticated", "readonly": true, "nonResourcePath": "*"}}

        {"user": "carol"}
        """

    @Test func abacPoliciesMatchAsUpstreams() async throws {
        let abac = try ABACAuthorizer(contents: Self.policy)
        #expect(abac.policies.count == 4)
        func can(_ user: String, _ verb: String, _ resource: String, group: String = "", ns: String = "") -> Bool {
            abac.authorize(.resource(UserInfo(name: user).authenticated(), verb: verb, group: group, resource: resource, namespace: ns)).allowed
        }
        func path(_ user: String, _ verb: String, _ p: String) -> Bool {
            abac.authorize(RequestAttributes(user: UserInfo(name: user).authenticated(), verb: verb, isResourceRequest: false, path: p)).allowed
        }
        #expect(can("alice", "create", "deployments", group: "apps", ns: "x"))
        #expect(can("bob", "list", "pods", ns: "caribou"))
        #expect(!can("bob", "create", "pods", ns: "caribou"), "readonly")
        #expect(!can("bob", "get", "pods", ns: "other"))
        #expect(!can("bob", "get", "deployments", group: "apps", ns: "caribou"))
        #expect(path("bob", "get", "/version") && !path("bob", "post", "/version"))
        // v0: no namespace and no resource is everything, paths included, in every group.
        #expect(can("carol", "delete", "nodes") && can("carol", "patch", "deployments", group: "apps", ns: "x") && path("carol", "put", "/x"))
        #expect(!can("dave", "get", "pods", ns: "caribou"))
        #expect(abac.authorize(.resource(UserInfo(name: "dave"), verb: "get", group: "", resource: "pods")).reason == "No policy matched.")
        #expect(throws: ABACAuthorizer.Failure.self) { try ABACAuthorizer(contents: "{\"user\": \"a\"}\nnot json\n") }
        #expect(throws: ABACAuthorizer.Failure.self) { try ABACAuthorizer(contents: #"{"apiVersion": "abac.authorization.kubernetes.io/v2", "kind": "Policy"}"#) }
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: ["ABAC"]) }
        #expect(throws: AccessControl.Failure.self) { try AccessControl(modes: ["RBAC"], policyFile: (Self.policy, "p")) }
        #expect(try await AccessControl(modes: ["ABAC"], policyFile: (Self.policy, "p")).authorize(
            .resource(UserInfo(name: "alice"), verb: "delete", group: "", resource: "secrets", namespace: "n")).allowed)
    }

    static func node(_ n: String) -> UserInfo { UserInfo(name: "system:node:\(n)", groups: ["system:nodes", "system:authenticated"]) }

    static func pod(_ name: String, node: String, secret: String, configMap: String, sa: String = "runner") -> JSONValue {
        ["metadata": ["name": .string(name), "namespace": "a"],
         "spec": ["nodeName": .string(node), "serviceAccountName": .string(sa),
                  "volumes": [["name": "s", "secret": ["secretName": .string(secret)]]],
                  "containers": [["name": "c", "image": "x", "envFrom": [["configMapRef": ["name": .string(configMap)]]]]]]]
    }

    @Test func aNodeReadsWhatItsPodsUseAndNothingElse() {
        let graph = NodeGraph()
        let authz = NodeAuthorizer(graph: graph)
        graph.set(pod: Self.pod("p1", node: "node-1", secret: "s1", configMap: "c1"))
        graph.set(pod: Self.pod("p2", node: "node-1", secret: "s1", configMap: "c2"))
        func d(_ node: String, _ verb: String, _ resource: String, _ name: String, ns: String = "a", sub: String = "", group: String = "") -> Decision {
            authz.authorize(.resource(Self.node(node), verb: verb, group: group, resource: resource, subresource: sub, namespace: ns, name: name))
        }
        #expect(d("node-1", "get", "secrets", "s1").allowed)
        #expect(d("node-1", "watch", "configmaps", "c2").allowed)
        #expect(d("node-1", "get", "secrets", "s2") == .noOpinion("no relationship found between node 'node-1' and this object"))
        #expect(!d("node-2", "get", "secrets", "s1").allowed, "another node's pods' secret")
        #expect(d("node-1", "list", "secrets", "") == .noOpinion("No Object name found"))
        #expect(d("node-1", "update", "secrets", "s1") == .noOpinion("can only read resources of this type"))
        #expect(d("node-1", "create", "serviceaccounts", "runner", sub: "token").allowed)
        #expect(!d("node-1", "create", "serviceaccounts", "default", sub: "token").allowed)
        #expect(d("node-1", "update", "leases", "node-1", ns: "kube-node-lease", group: "coordination.k8s.io").allowed)
        #expect(d("node-1", "update", "leases", "node-2", ns: "kube-node-lease", group: "coordination.k8s.io")
            == .noOpinion("can only access node lease with the same name as the requesting node"))
        #expect(d("node-1", "get", "nodes", "node-1", ns: "").allowed)
        // Upstream's AuthorizeNodeWithSelectors: its own Node only, pods bound to it only.
        #expect(d("node-1", "get", "nodes", "node-2", ns: "") == .noOpinion("node 'node-1' cannot read 'node-2', only its own Node object"))
        #expect(d("node-1", "list", "nodes", "", ns: "") == .noOpinion("node 'node-1' cannot read all nodes, only its own Node object"))
        #expect(d("node-1", "patch", "nodes", "node-1", ns: "", sub: "status").allowed, "writes are the node rules' (and NodeRestriction's)")
        // Its own kubelet's API is not a node's to use (nodes/proxy, nodes/log, nodes/pods).
        for sub in ["proxy", "log", "pods", "stats"] { #expect(!d("node-1", "get", "nodes", "node-1", ns: "", sub: sub).allowed, "nodes/\(sub)") }
        #expect(d("node-1", "get", "pods", "p2").allowed)
        #expect(d("node-1", "get", "pods", "elsewhere") == .noOpinion("no relationship found between node 'node-1' and this object"))
        func list(_ node: String, _ verb: String, _ selector: String) -> Decision {
            let a = RequestAttributes.parse(user: Self.node(node), method: "GET", path: "/api/v1/pods",
                                            query: (verb == "watch" ? ["watch": "1"] : [:]).merging(selector.isEmpty ? [:] : ["fieldSelector": selector]) { $1 })
            return authz.authorize(a)
        }
        #expect(list("node-1", "list", "spec.nodeName=node-1").allowed)
        #expect(list("node-1", "watch", "status.phase!=Failed,spec.nodeName==node-1").allowed)
        #expect(list("node-1", "list", "") == .noOpinion("can only list/watch pods with spec.nodeName field selector"))
        #expect(!list("node-1", "watch", "spec.nodeName=node-2").allowed)
        #expect(!list("node-1", "list", "spec.nodeName!=node-1").allowed)
        #expect(d("node-1", "create", "pods", "mirror").allowed && d("node-1", "delete", "pods", "p2").allowed, "mirror pods: NodeRestriction limits them")
        #expect(authz.authorize(.resource(UserInfo(name: "alice"), verb: "get", group: "", resource: "secrets", namespace: "a", name: "s1")) == .noOpinion(""))
        // The secret stays while one pod still uses it; goes with the last.
        graph.remove(namespace: "a", name: "p1")
        #expect(d("node-1", "get", "secrets", "s1").allowed)
        #expect(!d("node-1", "get", "configmaps", "c1").allowed)
        graph.set(pod: Self.pod("p2", node: "node-1", secret: "s3", configMap: "c2"))
        #expect(!d("node-1", "get", "secrets", "s1").allowed && d("node-1", "get", "secrets", "s3").allowed)
        #expect(graph.podCount == 1)
    }

    /// The Node mode in the server: the graph follows the pods through the store's watch, and
    /// a refusal is worded as upstream's (the Node mode's reason after the colon).
    @Test func theServersNodeModeFollowsThePods() async throws {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), access: try AccessControl(modes: ["Node", "RBAC"]))
        try await h.bootstrap()
        try await h.reconcileDefaultPolicy()
        let follower = Task { try await h.followPodsForNodes() }
        defer { follower.cancel() }
        _ = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": "a"]])))
        for s in ["s1", "s2"] {
            #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/a/secrets", body: body(["metadata": ["name": .string(s)]]))).code == 201)
        }
        var p = Self.pod("p1", node: "node-1", secret: "s1", configMap: "c1")
        p["apiVersion"] = "v1"
        p["kind"] = "Pod"
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/a/pods", body: p.serialized())).code == 201)
        func get(_ name: String) async -> APIResponse {
            var r = APIRequest(method: "GET", path: "/api/v1/namespaces/a/secrets/\(name)")
            r.user = Self.node("node-1")
            return await h.handle(r)
        }
        var code = 0
        for _ in 0..<100 where code != 200 {
            code = await get("s1").code
            if code != 200 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(code == 200, "the kubelet reads its pod's secret")
        let other = await get("s2")
        #expect(other.code == 403)
        #expect(other.json?["message"]?.string == #"secrets "s2" is forbidden: User "system:node:node-1" cannot get resource "secrets" in API group "" in the namespace "a": no relationship found between node 'node-1' and this object"#)
    }
}

/// NodeRestriction: a kubelet writes its own Node without touching its taints or restricted
/// labels, creates only mirror pods bound to itself, deletes only its pods.
@Suite struct NodeRestrictionTests {
    @Test func aKubeletTouchesOnlyWhatIsItsOwn() async throws {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), admissionPlugins: ["NodeRestriction"])
        try await h.bootstrap()
        func as_(_ user: UserInfo?, _ m: String, _ p: String, _ b: JSONValue? = nil) async -> APIResponse {
            var r = APIRequest(method: m, path: p, body: b?.serialized() ?? Data())
            r.user = user
            return await h.handle(r)
        }
        let n1 = AuthorizerModesTests.node("node-1")
        #expect(await as_(n1, "POST", "/api/v1/nodes", ["metadata": ["name": "node-1", "labels": ["kubernetes.io/hostname": "node-1"]]]).code == 201)
        var r = await as_(n1, "POST", "/api/v1/nodes", ["metadata": ["name": "node-2"]])
        #expect(r.code == 403 && r.json?["message"]?.string == #"nodes "node-2" is forbidden: node "node-1" is not allowed to modify node "node-2""#)
        _ = await as_(nil, "POST", "/api/v1/nodes", ["metadata": ["name": "node-2"]])
        var other = APIRequest(method: "PATCH", path: "/api/v1/nodes/node-2", contentType: "application/merge-patch+json",
                               body: body(["metadata": ["labels": ["role": "x"]]]))
        other.user = n1
        r = await h.handle(other)
        #expect(r.code == 403 && r.json?["message"]?.string?.contains("is not allowed to modify node \"node-2\"") == true, "labelling another node")
        r = await as_(n1, "POST", "/api/v1/nodes", ["metadata": ["name": "node-1", "labels": ["node-restriction.kubernetes.io/secure": "true"]]])
        #expect(r.code == 403 || r.code == 409)
        var patch = APIRequest(method: "PATCH", path: "/api/v1/nodes/node-1", contentType: "application/merge-patch+json",
                               body: body(["metadata": ["labels": ["node-restriction.kubernetes.io/secure": "true"]]]))
        patch.user = n1
        r = await h.handle(patch)
        #expect(r.json?["message"]?.string == #"nodes "node-1" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/secure"#)
        patch.body = body(["metadata": ["labels": ["topology.kubernetes.io/zone": "a", "team": "x"]]])
        #expect(await h.handle(patch).code == 200, "labels a kubelet may set")
        patch.body = body(["spec": ["taints": [["key": "k", "effect": "NoSchedule"]]]])
        r = await h.handle(patch)
        #expect(r.json?["message"]?.string == #"nodes "node-1" is forbidden: node "node-1" is not allowed to modify taints"#)

        // Pods: mirror pods of its own only; deletes of its own only.
        let pod: JSONValue = ["metadata": ["name": "p"], "spec": ["nodeName": "node-1", "containers": [["name": "c", "image": "x"]]]]
        r = await as_(n1, "POST", "/api/v1/namespaces/default/pods", pod)
        #expect(r.json?["message"]?.string == #"pods "p" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "node-1" can only create mirror pods"#)
        var mirror = pod
        mirror[path: ["metadata", "annotations"]] = ["kubernetes.io/config.mirror": "abc"]
        #expect(await as_(n1, "POST", "/api/v1/namespaces/default/pods", mirror).code == 201)
        var withSecret = mirror
        withSecret[path: ["metadata", "name"]] = "q"
        withSecret[path: ["spec", "volumes"]] = [["name": "s", "secret": ["secretName": "s"]]]
        r = await as_(n1, "POST", "/api/v1/namespaces/default/pods", withSecret)
        #expect(r.json?["message"]?.string == #"pods "q" is forbidden: node "node-1" can not create pods that reference secrets"#)
        _ = await as_(nil, "POST", "/api/v1/namespaces/default/pods", ["metadata": ["name": "other"], "spec": ["nodeName": "node-2", "containers": [["name": "c", "image": "x"]]]])
        r = await as_(n1, "DELETE", "/api/v1/namespaces/default/pods/other")
        #expect(r.json?["message"]?.string == #"pods "other" is forbidden: node "node-1" can only delete pods with spec.nodeName set to itself"#)
        #expect(await as_(n1, "DELETE", "/api/v1/namespaces/default/pods/p").code == 200)
        // Others are not restricted.
        #expect(await as_(UserInfo(name: "admin", groups: ["system:masters"]), "DELETE", "/api/v1/namespaces/default/pods/other").code == 200)
    }
}
