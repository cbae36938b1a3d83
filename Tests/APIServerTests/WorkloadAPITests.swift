import Foundation
import Testing
import KubeAPI
@testable import APIServer

extension APIHandler {
    func delete(_ path: String, _ options: JSONValue? = nil) async -> APIResponse {
        await handle(APIRequest(method: "DELETE", path: path, body: options.map(body) ?? Data()))
    }
    func mergePatch(_ path: String, _ j: JSONValue) async -> APIResponse {
        await handle(APIRequest(method: "PATCH", path: path, contentType: "application/merge-patch+json", body: body(j)))
    }
}

func pod(_ name: String, node: String? = nil, labels: [String: String] = [:], extra: [String: JSONValue] = [:]) -> JSONValue {
    var spec: [String: JSONValue] = ["containers": [["name": "c", "image": "nginx:1.25"]]]
    if let node { spec["nodeName"] = .string(node) }
    for (k, v) in extra { spec[k] = v }
    return ["metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })], "spec": .object(spec)]
}

/// The resources the scheduler and the controllers use, and the deletion semantics they rely on.
@Suite("workload and scheduling API")
struct WorkloadAPITests {
    @Test func jobsGetUpstreamsDefaultsAndAGeneratedSelector() async throws {
        let h = try await makeHandler()
        let job: JSONValue = ["metadata": ["name": "pi"], "spec": ["template": ["spec": [
            "restartPolicy": "Never", "containers": [["name": "pi", "image": "perl"]]]]]]
        let r = await h.post("/apis/batch/v1/namespaces/default/jobs", job)
        #expect(r.code == 201)
        let o = try #require(r.json)
        #expect(o[path: ["spec", "completions"]] == 1 && o[path: ["spec", "parallelism"]] == 1 && o[path: ["spec", "backoffLimit"]] == 6)
        let uid = o.uid
        #expect(o[path: ["spec", "selector", "matchLabels", "batch.kubernetes.io/controller-uid"]]?.string == uid)
        #expect(o[path: ["spec", "template", "metadata", "labels", "job-name"]] == "pi")
        // A Job whose pods would restart forever is refused, as upstream refuses it.
        var always = job
        always[path: ["metadata", "name"]] = "always"
        always[path: ["spec", "template", "spec", "restartPolicy"]] = "Always"
        let bad = await h.post("/apis/batch/v1/namespaces/default/jobs", always)
        #expect(bad.code == 422)
        #expect(bad.json?["message"]?.string?.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\"") == true)
        let table = await h.get("/apis/batch/v1/namespaces/default/jobs", accept: "application/json;as=Table;v=v1;g=meta.k8s.io")
        #expect(table.json?["columnDefinitions"]?.array?.prefix(4).compactMap { $0["name"]?.string } == ["Name", "Status", "Completions", "Duration"])
        #expect(table.json?["rows"]?.array?.first?["cells"]?.array?[1] == "Running")
    }

    @Test func cronSchedulesAreParsedAsRobfigParsesThem() throws {
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)   // 2023-11-14 22:13:20 UTC, a Tuesday
        let every5 = try #require(CronSchedule("*/5 * * * *"))
        #expect(every5.next(after: t0) == Date(timeIntervalSince1970: 1_700_000_100))   // 22:15
        let daily = try #require(CronSchedule("@daily"))
        #expect(daily.next(after: t0) == Date(timeIntervalSince1970: 1_700_006_400))   // 00:00 next day
        let mondays = try #require(CronSchedule("30 9 * * mon"))
        #expect(mondays.next(after: t0) == Date(timeIntervalSince1970: 1_700_472_600))   // Monday 20 Nov 09:30
        #expect(CronSchedule("61 * * * *") == nil)
        #expect(CronSchedule("* * *") == nil)
        #expect(CronSchedule("TZ=UTC * * * * *") == nil)
    }

    @Test func aCronJobWithABadScheduleIsRefused() async throws {
        let h = try await makeHandler()
        let cj: JSONValue = ["metadata": ["name": "nightly"], "spec": ["schedule": "0 25 * * *", "jobTemplate": ["spec": ["template": ["spec": [
            "restartPolicy": "OnFailure", "containers": [["name": "c", "image": "busybox"]]]]]]]]
        let r = await h.post("/apis/batch/v1/namespaces/default/cronjobs", cj)
        #expect(r.code == 422)
        #expect(r.json?["message"]?.string?.contains("spec.schedule: Invalid value: \"0 25 * * *\"") == true)
    }

    @Test func podsTakeTheirPriorityFromTheirClass() async throws {
        let h = try await makeHandler()
        try await h.bootstrap()
        #expect(await h.get("/apis/scheduling.k8s.io/v1/priorityclasses/system-node-critical").json?["value"] == 2_000_001_000)
        let reserved = await h.post("/apis/scheduling.k8s.io/v1/priorityclasses", ["metadata": ["name": "system-mine"], "value": 5])
        #expect(reserved.code == 422)
        #expect(await h.post("/apis/scheduling.k8s.io/v1/priorityclasses", ["metadata": ["name": "high"], "value": 1000]).code == 201)
        let p = await h.post("/api/v1/namespaces/default/pods", pod("a", extra: ["priorityClassName": "high"]))
        #expect(p.json?[path: ["spec", "priority"]] == 1000)
        #expect(p.json?[path: ["spec", "preemptionPolicy"]] == "PreemptLowerPriority")
        let none = await h.post("/api/v1/namespaces/default/pods", pod("b"))
        #expect(none.json?[path: ["spec", "priority"]] == 0)
        // DefaultTolerationSeconds: five minutes on a not-ready or unreachable node.
        let tolerations = none.json?[path: ["spec", "tolerations"]]?.array ?? []
        #expect(tolerations.contains { $0["key"] == "node.kubernetes.io/unreachable" && $0["tolerationSeconds"] == 300 })
        let missing = await h.post("/api/v1/namespaces/default/pods", pod("c", extra: ["priorityClassName": "nope"]))
        #expect(missing.code == 403)
        #expect(missing.json?["message"]?.string?.contains("no PriorityClass with name nope was found") == true)
    }

    /// A bound Pod is marked for its kubelet; an unbound one, or one deleted with a grace period
    /// of 0, goes at once.
    @Test func podsAreDeletedGracefully() async throws {
        let h = try await makeHandler()
        #expect(await h.post("/api/v1/namespaces/default/pods", pod("bound", node: "n1")).code == 201)
        #expect(await h.post("/api/v1/namespaces/default/pods", pod("loose")).code == 201)
        let marked = await h.delete("/api/v1/namespaces/default/pods/bound")
        #expect(marked.code == 200)
        #expect(marked.json?[path: ["metadata", "deletionGracePeriodSeconds"]] == 30)
        let still = await h.get("/api/v1/namespaces/default/pods/bound")
        #expect(still.code == 200 && still.json?[path: ["metadata", "deletionTimestamp"]] != nil)
        #expect(await h.delete("/api/v1/namespaces/default/pods/loose").code == 200)
        #expect(await h.get("/api/v1/namespaces/default/pods/loose").code == 404)
        // The kubelet's last word.
        #expect(await h.delete("/api/v1/namespaces/default/pods/bound", ["gracePeriodSeconds": 0]).code == 200)
        #expect(await h.get("/api/v1/namespaces/default/pods/bound").code == 404)
    }

    /// Finalizers hold an object until they are removed; foreground deletion adds its own.
    @Test func finalizersHoldADeletion() async throws {
        let h = try await makeHandler()
        let cm: JSONValue = ["metadata": ["name": "held", "finalizers": ["example.com/hold"]], "data": ["a": "b"]]
        #expect(await h.post("/api/v1/namespaces/default/configmaps", cm).code == 201)
        #expect(await h.delete("/api/v1/namespaces/default/configmaps/held").code == 200)
        #expect(await h.get("/api/v1/namespaces/default/configmaps/held").json?[path: ["metadata", "deletionTimestamp"]] != nil)
        #expect(await h.mergePatch("/api/v1/namespaces/default/configmaps/held", ["metadata": ["finalizers": nil]]).code == 200)
        #expect(await h.get("/api/v1/namespaces/default/configmaps/held").code == 404)

        #expect(await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "fg"]]).code == 201)
        let fg = await h.delete("/api/v1/namespaces/default/configmaps/fg", ["propagationPolicy": "Foreground"])
        #expect(fg.json?[path: ["metadata", "finalizers"]] == ["foregroundDeletion"])
        let bad = await h.delete("/api/v1/namespaces/default/configmaps/fg", ["propagationPolicy": "Sideways"])
        #expect(bad.code == 400 || bad.code == 422)
    }

    /// A binding as upstream's BindingREST makes it: the node, the Binding's annotations and
    /// PodScheduled=True, no managed-fields entry; refused for a wrong uid, a non-Node target,
    /// an assigned, gated or terminating pod.
    @Test func bindingsAssignAPodAsUpstreamDoes() async throws {
        let h = try await makeHandler()
        let created = await h.post("/api/v1/namespaces/default/pods", pod("web", extra: ["schedulerName": "x"]))
        #expect(created.code == 201)
        let uid = created.json?[path: ["metadata", "uid"]]?.string ?? ""
        let managed = created.json?[path: ["metadata", "managedFields"]]
        func binding(_ name: String, node: String = "n1", uid: String? = nil, kind: String = "Node", annotations: [String: JSONValue] = [:]) -> JSONValue {
            var meta: [String: JSONValue] = ["name": .string(name), "annotations": .object(annotations)]
            if let uid { meta["uid"] = .string(uid) }
            return ["apiVersion": "v1", "kind": "Binding", "metadata": .object(meta), "target": ["kind": .string(kind), "name": .string(node)]]
        }
        let wrongUID = await h.post("/api/v1/namespaces/default/pods/web/binding", binding("web", uid: "00000000-0000-0000-0000-000000000000"))
        #expect(wrongUID.code == 409)
        let wrongKind = await h.post("/api/v1/namespaces/default/pods/web/binding", binding("web", kind: "Pod"))
        #expect(wrongKind.code == 422)
        let bound = await h.post("/api/v1/namespaces/default/pods/web/binding", binding("web", uid: uid, annotations: ["example.com/by": "test"]))
        #expect(bound.code == 201)
        let p = await h.get("/api/v1/namespaces/default/pods/web").json
        #expect(p?[path: ["spec", "nodeName"]] == "n1")
        #expect(p?[path: ["metadata", "annotations", "example.com/by"]] == "test")
        let scheduled = p?[path: ["status", "conditions"]]?.array?.first { $0["type"] == "PodScheduled" }
        #expect(scheduled?["status"] == "True")
        #expect(scheduled?["lastTransitionTime"]?.string != nil)
        #expect(p?[path: ["metadata", "managedFields"]] == managed)
        let again = await h.post("/api/v1/namespaces/default/pods/web/binding", binding("web", node: "n2"))
        #expect(again.code == 409)
        #expect(again.json?["message"] == "Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"n1\"")

        #expect(await h.post("/api/v1/namespaces/default/pods", pod("gated", extra: ["schedulingGates": [["name": "example.com/wait"]]])).code == 201)
        let gated = await h.post("/api/v1/namespaces/default/pods/gated/binding", binding("gated"))
        #expect(gated.code == 409)
        #expect(await h.get("/api/v1/namespaces/default/pods/gated").json?[path: ["spec", "nodeName"]] == nil)
        #expect(await h.post("/api/v1/namespaces/default/pods/nobody/binding", binding("nobody")).code == 404)
    }

    /// Eviction honours the PodDisruptionBudget that selects the Pod.
    @Test func evictionsHonourDisruptionBudgets() async throws {
        let h = try await makeHandler()
        for name in ["web-1", "web-2"] {
            #expect(await h.post("/api/v1/namespaces/default/pods", pod(name, node: "n1", labels: ["app": "web"])).code == 201)
            #expect(await h.mergePatch("/api/v1/namespaces/default/pods/\(name)/status", ["status": ["phase": "Running"]]).code == 200)
        }
        let pdb: JSONValue = ["metadata": ["name": "web"], "spec": ["minAvailable": 2, "selector": ["matchLabels": ["app": "web"]]]]
        #expect(await h.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", pdb).code == 201)
        let eviction: JSONValue = ["apiVersion": "policy/v1", "kind": "Eviction", "metadata": ["name": "web-1"]]
        // Not yet observed by the disruption controller.
        let early = await h.post("/api/v1/namespaces/default/pods/web-1/eviction", eviction)
        #expect(early.code == 429)
        let status: JSONValue = ["status": ["observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2]]
        #expect(await h.mergePatch("/apis/policy/v1/namespaces/default/poddisruptionbudgets/web/status", status).code == 200)
        let refused = await h.post("/api/v1/namespaces/default/pods/web-1/eviction", eviction)
        #expect(refused.code == 429)
        #expect(refused.json?[path: ["details", "causes"]]?.array?.first?["message"] == "The disruption budget web needs 2 healthy pods and has 2 currently")
        #expect(await h.mergePatch("/apis/policy/v1/namespaces/default/poddisruptionbudgets/web/status", ["status": ["disruptionsAllowed": 1]]).code == 200)
        let allowed = await h.post("/api/v1/namespaces/default/pods/web-1/eviction", eviction)
        #expect(allowed.code == 201)
        #expect(await h.get("/api/v1/namespaces/default/pods/web-1").json?[path: ["metadata", "deletionTimestamp"]] != nil)
        let after = await h.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/web").json
        #expect(after?[path: ["status", "disruptionsAllowed"]] == 0)
        #expect(after?[path: ["status", "disruptedPods", "web-1"]] != nil)
    }
}
