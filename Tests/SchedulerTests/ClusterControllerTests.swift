import Foundation
import Testing
import KubeAPI
import ControllerKit
import KubeClient
@testable import Controllers

@Suite("cluster controllers", .serialized)
struct ClusterControllerTests {
    @Test func aJobRunsItsCompletionsInParallel() async throws {
        let c = try await MiniCluster.start(nodes: 2)
        defer { c.stop() }
        let job: JSONValue = ["apiVersion": "batch/v1", "kind": "Job", "metadata": ["name": "pi"],
                              "spec": ["completions": 5, "parallelism": 2, "template": ["metadata": ["annotations": ["switchyard.dev/fake-run-seconds": "0.2"]],
                                        "spec": ["restartPolicy": "Never", "containers": [["name": "pi", "image": "perl"]]]]]]
        _ = try await c.api.create("/apis/batch/v1/namespaces/default/jobs", job)
        var maxActive = 0
        var done = false
        let deadline = Date().addingTimeInterval(240)
        while Date() < deadline && !done {
            let pods = try await c.pods(selector: "job-name=pi")
            maxActive = max(maxActive, pods.filter { $0[path: ["status", "phase"]] == "Running" || $0[path: ["status", "phase"]] == "Pending" }.count)
            let j = try await c.api.get("/apis/batch/v1/namespaces/default/jobs/pi")
            done = (j[path: ["status", "conditions"]]?.array ?? []).contains { $0["type"] == "Complete" && $0["status"] == "True" }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(done)
        #expect(maxActive <= 2)
        let j = try await c.api.get("/apis/batch/v1/namespaces/default/jobs/pi")
        #expect(j[path: ["status", "succeeded"]] == 5)
        #expect(j[path: ["status", "completionTime"]] != nil)
    }

    @Test func aDaemonSetRunsOnePodPerEligibleNode() async throws {
        let c = try await MiniCluster.start(nodes: 3)
        defer { c.stop() }
        _ = try await c.api.mergePatch("/api/v1/nodes/fake-node-2", ["spec": ["taints": [["key": "dedicated", "value": "db", "effect": "NoSchedule"]]]])
        let ds: JSONValue = ["apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": ["name": "agent"],
                             "spec": ["selector": ["matchLabels": ["app": "agent"]],
                                      "template": ["metadata": ["labels": ["app": "agent"]], "spec": ["containers": [["name": "a", "image": "busybox"]]]]]]
        _ = try await c.api.create("/apis/apps/v1/namespaces/default/daemonsets", ds)
        #expect(try await c.api.eventually() {
            let pods = try await c.pods(selector: "app=agent")
            return Set(pods.compactMap { $0[path: ["spec", "nodeName"]]?.string }) == ["fake-node-0", "fake-node-1"] && pods.count == 2
        })
        #expect(try await c.api.eventually() {
            let d = try await c.api.get("/apis/apps/v1/namespaces/default/daemonsets/agent")
            return d[path: ["status", "desiredNumberScheduled"]] == 2 && d[path: ["status", "numberReady"]] == 2
        })
    }

    /// A node whose Lease stops goes Unknown and is tainted; its pods are evicted after their
    /// toleration (here 1 s) and replaced on the other nodes; when it comes back, the taints go.
    @Test func aSilentNodeIsTaintedAndItsPodsReplaced() async throws {
        // A grace of 5 s against Leases renewed every 0.5 s: on a loaded machine (the whole suite
        // on two cores) a 1.5 s grace let live nodes flap Unknown, and their pods never settled.
        let c = try await MiniCluster.start(nodes: 2) { o in
            o.nodeMonitorGracePeriod = 5
            o.nodeMonitorPeriod = 0.25
        }
        defer { c.stop() }
        var d = deployment("web", replicas: 4)
        d[path: ["spec", "template", "spec", "tolerations"]] = [["key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1]]
        _ = try await c.api.create("/apis/apps/v1/namespaces/default/deployments", d)
        #expect(try await c.api.eventually() { try await c.api.get("/apis/apps/v1/namespaces/default/deployments/web")[path: ["status", "availableReplicas"]] == 4 })
        c.nodes.stop("fake-node-1")
        #expect(try await c.api.eventually() {
            let n = try await c.api.get("/api/v1/nodes/fake-node-1")
            let ready = (n[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "Ready" }
            let taints = Set((n[path: ["spec", "taints"]]?.array ?? []).compactMap { t in t["key"]?.string.map { "\($0):\(t["effect"]?.string ?? "")" } })
            return ready?["status"] == "Unknown" && ready?["reason"] == "NodeStatusUnknown"
                && taints == ["node.kubernetes.io/unreachable:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
        })
        #expect(try await c.api.eventually() {
            let live = try await c.pods(selector: "app=web").filter { !$0.isDeleting }
            return live.count == 4 && live.allSatisfy { $0[path: ["spec", "nodeName"]] == "fake-node-0" }
        })
        let events = try await c.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
        #expect(events.contains { $0["reason"] == "TaintManagerEviction" })
        // Back: it reports Ready, the taints go.
        c.nodes.start("fake-node-1")
        #expect(try await c.api.eventually() {
            let n = try await c.api.get("/api/v1/nodes/fake-node-1")
            let ready = (n[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "Ready" }
            return ready?["status"] == "True" && (n[path: ["spec", "taints"]]?.array ?? []).isEmpty
        })
    }

    @Test func cascadingDeletion() async throws {
        let c = try await MiniCluster.start(nodes: 2)
        defer { c.stop() }
        for name in ["bg", "fg", "orphan"] { _ = try await c.api.create("/apis/apps/v1/namespaces/default/deployments", deployment(name, replicas: 2)) }
        #expect(try await c.api.eventually() { try await c.pods().filter { PodStatus.isReady($0) }.count == 6 })
        // Background (kubectl's default): the deployment goes at once, its sets and pods after.
        try await c.api.delete("/apis/apps/v1/namespaces/default/deployments/bg", options: ["propagationPolicy": "Background"])
        // Foreground: the deployment stays (deletionTimestamp, foregroundDeletion) until its dependents are gone.
        let fg = try await c.api.delete("/apis/apps/v1/namespaces/default/deployments/fg", options: ["propagationPolicy": "Foreground"])
        #expect(fg[path: ["metadata", "finalizers"]] == ["foregroundDeletion"])
        // Orphan: the sets stay, without their owner.
        try await c.api.delete("/apis/apps/v1/namespaces/default/deployments/orphan", options: ["propagationPolicy": "Orphan"])
        let settled = try await c.api.eventually() {
            let sets = try await c.api.list("/apis/apps/v1/namespaces/default/replicasets")["items"]?.array ?? []
            let deployments = try await c.api.list("/apis/apps/v1/namespaces/default/deployments")["items"]?.array ?? []
            let pods = try await c.pods().filter { !$0.isDeleting }
            return deployments.isEmpty && sets.count == 1 && sets[0].name.hasPrefix("orphan-") && sets[0][path: ["metadata", "ownerReferences"]] == nil
                && pods.count == 2 && pods.allSatisfy { $0.name.hasPrefix("orphan-") }
        }
        if !settled {
            // What was left, to tell which step did not happen.
            let sets = try await c.api.list("/apis/apps/v1/namespaces/default/replicasets")["items"]?.array ?? []
            let deployments = try await c.api.list("/apis/apps/v1/namespaces/default/deployments")["items"]?.array ?? []
            let pods = try await c.pods()
            Issue.record("""
                not settled: deployments \(deployments.map { "\($0.name) finalizers=\($0[path: ["metadata", "finalizers"]]?.text() ?? "-")" }), \
                sets \(sets.map { "\($0.name) owners=\($0[path: ["metadata", "ownerReferences"]]?.text() ?? "-") deleting=\($0.isDeleting)" }), \
                pods \(pods.map { "\($0.name) deleting=\($0.isDeleting)" })
                """)
        }
    }

    @Test func namespacesGetTheirDefaultsAndBudgetsTheirStatus() async throws {
        let c = try await MiniCluster.start(nodes: 2) { $0.rootCA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" }
        defer { c.stop() }
        _ = try await c.api.create("/api/v1/namespaces", ["metadata": ["name": "team"]])
        #expect(try await c.api.eventually() {
            let sa = try? await c.api.get("/api/v1/namespaces/team/serviceaccounts/default")
            let ca = try? await c.api.get("/api/v1/namespaces/team/configmaps/kube-root-ca.crt")
            return sa != nil && ca?[path: ["data", "ca.crt"]]?.string?.contains("BEGIN CERTIFICATE") == true
        })
        // The account comes back if deleted.
        try await c.api.delete("/api/v1/namespaces/team/serviceaccounts/default")
        #expect(try await c.api.eventually() { (try? await c.api.get("/api/v1/namespaces/team/serviceaccounts/default")) != nil })
        _ = try await c.api.create("/apis/apps/v1/namespaces/default/deployments", deployment("web", replicas: 3))
        _ = try await c.api.create("/apis/policy/v1/namespaces/default/poddisruptionbudgets",
                                   ["metadata": ["name": "web"], "spec": ["maxUnavailable": 1, "selector": ["matchLabels": ["app": "web"]]]])
        #expect(try await c.api.eventually() {
            let s = try await c.api.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/web")["status"]
            return s?["expectedPods"] == 3 && s?["currentHealthy"] == 3 && s?["desiredHealthy"] == 2 && s?["disruptionsAllowed"] == 1
        })
    }

    /// The resourcequota controller counts a new quota at once, takes deleted objects off, and a
    /// scoped quota counts only the pods its scopes select (admission refuses past it).
    @Test func quotasAreCountedAndScoped() async throws {
        let c = try await MiniCluster.start(nodes: 0, controllers: ["resourcequota"]) { $0.resourceQuotaSyncPeriod = 1 }
        defer { c.stop() }
        let ns = "/api/v1/namespaces/default"
        func pod(_ name: String, cpu: String? = nil, priority: String? = nil) -> JSONValue {
            var container: JSONValue = ["name": "c", "image": "busybox"]
            if let cpu { container["resources"] = ["requests": .object(["cpu": .string(cpu)]), "limits": .object(["cpu": .string(cpu)])] }
            var spec: JSONValue = ["containers": [container]]
            if let priority { spec["priorityClassName"] = .string(priority) }
            return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name)], "spec": spec]
        }
        func used(_ quota: String) async throws -> [String: String] {
            (try await c.api.get("\(ns)/resourcequotas/\(quota)")[path: ["status", "used"]]?.object ?? [:]).compactMapValues(\.string)
        }
        _ = try await c.api.create("\(ns)/configmaps", ["metadata": ["name": "before"]])
        _ = try await c.api.create("\(ns)/resourcequotas", ["metadata": ["name": "all"],
                                                             "spec": ["hard": ["pods": "5", "count/configmaps": "10", "services": "2"]]])
        // Counted as soon as it exists (admission would only count what comes after).
        #expect(try await c.api.eventually(20) { try await used("all") == ["pods": "0", "count/configmaps": "1", "services": "0"] })
        _ = try await c.api.create("\(ns)/resourcequotas", ["metadata": ["name": "besteffort"],
                                                             "spec": ["hard": ["pods": "1"], "scopes": ["BestEffort"]]])
        _ = try await c.api.create("\(ns)/resourcequotas", ["metadata": ["name": "high"],
                                                             "spec": ["hard": ["pods": "1", "requests.cpu": "1"],
                                                                      "scopeSelector": ["matchExpressions": [["scopeName": "PriorityClass", "operator": "In", "values": ["high"]]]]]])
        _ = try await c.api.create("/apis/scheduling.k8s.io/v1/priorityclasses", ["metadata": ["name": "high"], "value": 1000])
        _ = try await c.api.create("\(ns)/pods", pod("plain"))
        _ = try await c.api.create("\(ns)/pods", pod("sized", cpu: "500m"))
        _ = try await c.api.create("\(ns)/pods", pod("urgent", cpu: "500m", priority: "high"))
        // A second BestEffort pod is past its quota; the sized one was not counted by it.
        do {
            _ = try await c.api.create("\(ns)/pods", pod("plain-2"))
            Issue.record("a second BestEffort pod was admitted")
        } catch let e as APIStatusError {
            #expect(e.code == 403 && e.message == "pods \"plain-2\" is forbidden: exceeded quota: besteffort, requested: pods=1, used: pods=1, limited: pods=1", "\(e)")
        }
        do {
            _ = try await c.api.create("\(ns)/pods", pod("urgent-2", cpu: "100m", priority: "high"))
            Issue.record("a second high-priority pod was admitted")
        } catch let e as APIStatusError {
            #expect(e.message.contains("exceeded quota: high, requested: pods=1, used: pods=1, limited: pods=1"), "\(e)")
        }
        #expect(try await c.api.eventually(20) { try await used("all")["pods"] == "3" })
        #expect(try await c.api.eventually(20) { try await used("high") == ["pods": "1", "requests.cpu": "500m"] })
        // Deleted: off the usage (admission only ever adds), within the controller's reaction.
        _ = try await c.api.delete("\(ns)/pods/plain")
        #expect(try await c.api.eventually(20) {
            let besteffort = try await used("besteffort"), all = try await used("all")
            return besteffort == ["pods": "0"] && all["pods"] == "2"
        })
        _ = try await c.api.create("\(ns)/pods", pod("plain-3"))
        #expect(try await c.api.eventually(20) { try await used("all")["pods"] == "3" })
        try await Task.sleep(for: .milliseconds(300))
        // A ConfigMap's deletion is not watched: the periodic count (every second here) takes it
        // off. (Whether it is still counted just after the delete depends on when that count
        // runs, so only its coming is checked.)
        _ = try await c.api.delete("\(ns)/configmaps/before")
        let start = ContinuousClock.now
        #expect(try await c.api.eventually(20) { try await used("all")["count/configmaps"] == "0" })
        #expect(ContinuousClock.now - start < .seconds(5))

        // Scopes as upstream validates them.
        for (spec, message) in [(["hard": ["cpu": "1"], "scopes": ["BestEffort"]], "unsupported scope applied to resource"),
                                (["hard": ["pods": "1"], "scopes": ["Terminating", "NotTerminating"]], "conflicting scopes"),
                                (["hard": ["pods": "1"], "scopes": ["Sometimes"]], "unsupported scope")] as [(JSONValue, String)] {
            do {
                _ = try await c.api.create("\(ns)/resourcequotas", ["metadata": ["name": "bad"], "spec": spec])
                Issue.record("\(spec) was accepted")
            } catch let e as APIStatusError {
                #expect(e.code == 422 && e.message.contains(message), "\(e)")
            }
        }
    }

    @Test func theControllersFlagIsUpstreams() throws {
        // With --use-service-account-credentials, only the controllers that run get accounts
        // (no root CA: its publisher does not run).
        let credentials = ServiceAccountCredentials(base: KubeClient(config: Kubeconfig(server: "http://127.0.0.1:1", host: "127.0.0.1", port: 1)))
        var options = ControllerManager.Options()
        options.controllers = ["deployment", "csrapproving", "csrcleaner", "root-ca-certificate-publisher"]
        let manager = try ControllerManager(api: API(KubeClient(config: Kubeconfig(server: "http://127.0.0.1:1", host: "127.0.0.1", port: 1)), fieldManager: "t"),
                                            options: options, credentials: credentials)
        #expect(manager.controllers.count == 3)
        #expect(credentials.accounts == ["certificate-controller", "deployment-controller"])
        #expect(try ControllerManager.enabled(["*", "-job"]).contains("job") == false)
        #expect(try ControllerManager.enabled(["deployment"]) == ["deployment"])
        #expect(throws: APIStatusError.self) { try ControllerManager.enabled(["*", "bogus"]) }
    }
}
