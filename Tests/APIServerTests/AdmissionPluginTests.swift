import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Testing

/// The default admission plugins as upstream's: PodSecurity (enforce refuses, warn warns, workloads
/// only warned), LimitRanger (defaults, then min/max), ResourceQuota (counts and compute
/// resources against `hard`, with the usage in the quota's status), each with upstream's words.
@Suite("admission plugins")
struct AdmissionPluginTests {
    static func pod(_ name: String, _ container: JSONValue = ["name": "c", "image": "nginx"], spec: [String: JSONValue] = [:]) -> JSONValue {
        var s: [String: JSONValue] = ["containers": [container]]
        for (k, v) in spec { s[k] = v }
        return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name)], "spec": .object(s)]
    }

    static func namespace(_ h: APIHandler, _ name: String, labels: [String: String]) async {
        let r = await h.post("/api/v1/namespaces", ["metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })]])
        #expect(r.code == 201)
    }

    @Test func podSecurityEnforcesAndWarnsByNamespaceLabels() async throws {
        let h = try await makeHandler()
        await Self.namespace(h, "locked", labels: ["pod-security.kubernetes.io/enforce": "restricted"])
        await Self.namespace(h, "watched", labels: ["pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/warn": "baseline"])
        // A bare pod breaks restricted's four rules: refused, with upstream's message.
        let bare = await h.post("/api/v1/namespaces/locked/pods", Self.pod("bare"))
        #expect(bare.code == 403)
        #expect(bare.json?["message"]?.string == #"pods "bare" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
                "\(bare.json?["message"]?.string ?? "")")
        #expect(bare.json?["reason"] == "Forbidden")
        // One that follows it is stored.
        let good: JSONValue = ["name": "c", "image": "nginx", "securityContext": ["allowPrivilegeEscalation": false, "runAsNonRoot": true,
                               "capabilities": ["drop": ["ALL"]], "seccompProfile": ["type": "RuntimeDefault"]]]
        #expect(await h.post("/api/v1/namespaces/locked/pods", Self.pod("good", good)).code == 201)
        // A privileged one too is refused, privileged named first.
        var privileged = good
        privileged[path: ["securityContext", "privileged"]] = true
        let p = await h.post("/api/v1/namespaces/locked/pods", Self.pod("priv", privileged))
        #expect(p.code == 403 && p.json?["message"]?.string?.contains(#"privileged (container "c" must not set securityContext.privileged=true)"#) == true)
        // A Deployment whose template breaks it is stored, with a warning (workloads are not refused).
        let deployment: JSONValue = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "web"],
                                     "spec": ["selector": ["matchLabels": ["app": "web"]],
                                              "template": ["metadata": ["labels": ["app": "web"]], "spec": ["containers": [["name": "c", "image": "nginx"]]]]]]
        let d = await h.post("/apis/apps/v1/namespaces/locked/deployments", deployment)
        #expect(d.code == 201)
        #expect(d.warnings.contains { $0.hasPrefix(#"would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#) }, "\(d.warnings)")
        // Warn only: stored, with the warning.
        let host = await h.post("/api/v1/namespaces/watched/pods", Self.pod("host", spec: ["hostNetwork": true]))
        #expect(host.code == 201)
        #expect(host.warnings == [#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#], "\(host.warnings)")
        // Without labels nothing is checked; with the plugin off neither.
        #expect(await h.post("/api/v1/namespaces/default/pods", Self.pod("free", privileged)).code == 201)
        let off = APIHandler(store: try SQLiteStore(path: ":memory:"), admissionPlugins: [])
        await Self.namespace(off, "locked", labels: ["pod-security.kubernetes.io/enforce": "restricted"])
        #expect(await off.post("/api/v1/namespaces/locked/pods", Self.pod("bare")).code == 201)
    }

    @Test func limitRangesDefaultAndBound() async throws {
        let h = try await makeHandler()
        let range: JSONValue = ["apiVersion": "v1", "kind": "LimitRange", "metadata": ["name": "limits"],
                                "spec": ["limits": [["type": "Container", "default": ["cpu": "500m", "memory": "256Mi"], "defaultRequest": ["cpu": "100m"],
                                                     "max": ["cpu": "1"], "min": ["cpu": "50m"]]]]]
        #expect(await h.post("/api/v1/namespaces/default/limitranges", range).code == 201)
        let r = await h.post("/api/v1/namespaces/default/pods", Self.pod("plain"))
        #expect(r.code == 201)
        let c = r.json?[path: ["spec", "containers"]]?.array?.first
        #expect(c?[path: ["resources", "limits", "cpu"]] == "500m" && c?[path: ["resources", "limits", "memory"]] == "256Mi")
        #expect(c?[path: ["resources", "requests", "cpu"]] == "100m" && c?[path: ["resources", "requests", "memory"]] == "256Mi")
        #expect(r.json?[path: ["metadata", "annotations", "kubernetes.io/limit-ranger"]] == "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c")
        // Over the max, under the min.
        let big = await h.post("/api/v1/namespaces/default/pods", Self.pod("big", ["name": "c", "image": "nginx", "resources": ["limits": ["cpu": "2"]]]))
        #expect(big.code == 403)
        #expect(big.json?["message"]?.string == #"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#, "\(big.json?["message"]?.string ?? "")")
        let small = await h.post("/api/v1/namespaces/default/pods", Self.pod("small", ["name": "c", "image": "nginx", "resources": ["requests": ["cpu": "10m"]]]))
        #expect(small.code == 403 && small.json?["message"]?.string == #"pods "small" is forbidden: minimum cpu usage per Container is 50m, but request is 10m"#,
                "\(small.json?["message"]?.string ?? "")")
        // Nothing of it in another namespace.
        let other = await h.post("/api/v1/namespaces/other/pods", Self.pod("big", ["name": "c", "image": "nginx", "resources": ["limits": ["cpu": "2"]]]))
        #expect(other.code == 201 && other.json?[path: ["metadata", "annotations", "kubernetes.io/limit-ranger"]] == nil)
    }

    @Test func resourceQuotasCountAndRefuse() async throws {
        let h = try await makeHandler()
        let quota: JSONValue = ["apiVersion": "v1", "kind": "ResourceQuota", "metadata": ["name": "compute"],
                                "spec": ["hard": ["pods": "2", "requests.cpu": "1"]]]
        #expect(await h.post("/api/v1/namespaces/default/resourcequotas", quota).code == 201)
        func withCPU(_ name: String, _ cpu: String?) -> JSONValue {
            Self.pod(name, cpu.map { ["name": "c", "image": "nginx", "resources": ["requests": ["cpu": .string($0)]]] } ?? ["name": "c", "image": "nginx"])
        }
        let missing = await h.post("/api/v1/namespaces/default/pods", withCPU("none", nil))
        #expect(missing.code == 403 && missing.json?["message"]?.string == #"pods "none" is forbidden: failed quota: compute: must specify requests.cpu for: c"#,
                "\(missing.json?["message"]?.string ?? "")")
        #expect(await h.post("/api/v1/namespaces/default/pods", withCPU("a", "400m")).code == 201)
        #expect(await h.post("/api/v1/namespaces/default/pods", withCPU("b", "400m")).code == 201)
        let q = await h.get("/api/v1/namespaces/default/resourcequotas/compute").json
        #expect(q?[path: ["status", "used", "pods"]] == "2" && q?[path: ["status", "used", "requests.cpu"]] == "800m", "\(q?["status"]?.text() ?? "")")
        #expect(q?[path: ["status", "hard", "pods"]] == "2")
        let third = await h.post("/api/v1/namespaces/default/pods", withCPU("c", "400m"))
        #expect(third.code == 403)
        #expect(third.json?["message"]?.string == #"pods "c" is forbidden: exceeded quota: compute, requested: pods=1,requests.cpu=400m, used: pods=2,requests.cpu=800m, limited: pods=2,requests.cpu=1"#,
                "\(third.json?["message"]?.string ?? "")")
        // A pod gone frees its share.
        _ = await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/pods/a", query: ["gracePeriodSeconds": "0"]))
        #expect(await h.post("/api/v1/namespaces/default/pods", withCPU("c", "400m")).code == 201)
        // Object counts.
        let counts: JSONValue = ["apiVersion": "v1", "kind": "ResourceQuota", "metadata": ["name": "objects"], "spec": ["hard": ["count/configmaps": "1", "services.nodeports": "1"]]]
        #expect(await h.post("/api/v1/namespaces/other/resourcequotas", counts).code == 201)
        #expect(await h.post("/api/v1/namespaces/other/configmaps", ["metadata": ["name": "one"]]).code == 201)
        let two = await h.post("/api/v1/namespaces/other/configmaps", ["metadata": ["name": "two"]])
        #expect(two.code == 403 && two.json?["message"]?.string == #"configmaps "two" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"#,
                "\(two.json?["message"]?.string ?? "")")
        let np = await h.post("/api/v1/namespaces/other/services", svc("np", type: "NodePort", ports: [["name": "a", "port": 80], ["name": "b", "port": 81]]))
        #expect(np.code == 403, "\(np.json ?? .null)")
        // Refused by the quota after its cluster IP and node ports were allocated: they went back.
        let allocator = h.admission.allocator
        var held: [Int] = []
        let range = await allocator.nodePorts
        for port in range where !((try? await allocator.take(port: port)) ?? false) { held.append(port) }
        #expect(held.isEmpty, "node ports still held: \(held)")
        for port in range where !held.contains(port) { await allocator.release(port: port) }
        #expect(await h.post("/api/v1/namespaces/other/services", svc("cip")).code == 201)
    }
}
