import Foundation
import Testing
import KubeAPI
import APIServer
import ControllerKit
import FakeNodes
@testable import Controllers
@testable import Scheduler

/// A cluster in memory: the API, the scheduler, the controllers and fake nodes.
struct MiniCluster {
    let handler: APIHandler
    let api: API
    let tasks: [Task<Void, Never>]
    let nodes: FakeNodes

    static func start(nodes count: Int = 3, controllers: [String] = ["*"], cpu: String = "4",
                      configure: (inout ControllerManager.Options) -> Void = { _ in }) async throws -> MiniCluster {
        let (h, api) = try await HandlerTransport.make()
        let fake = FakeNodes(api: api, count: count, cpu: cpu, memory: "8Gi", leaseInterval: 0.5)
        try await fake.register()
        var options = ControllerManager.Options()
        options.controllers = controllers
        configure(&options)
        let manager = try ControllerManager(api: api, options: options)
        let scheduler = Scheduler(api: api)
        return MiniCluster(handler: h, api: api, tasks: [Task { await fake.run() }, Task { await manager.run() }, Task { await scheduler.run() }], nodes: fake)
    }

    func stop() { for t in tasks { t.cancel() } }

    func pods(_ ns: String = "default", selector: String? = nil) async throws -> [JSONValue] {
        try await api.list(API.path("v1", "pods", namespace: ns), query: selector.map { ["labelSelector": $0] } ?? [:])["items"]?.array ?? []
    }
}

func deployment(_ name: String, replicas: Int, image: String = "nginx:1.25", strategy: JSONValue? = nil) -> JSONValue {
    var d: JSONValue = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": .string(name)],
                        "spec": ["replicas": .int(Int64(replicas)), "selector": ["matchLabels": ["app": .string(name)]],
                                 "template": ["metadata": ["labels": ["app": .string(name)]],
                                              "spec": ["containers": [["name": "web", "image": .string(image), "resources": ["requests": ["cpu": "100m"]]]]]]]]
    if let strategy { d[path: ["spec", "strategy"]] = strategy }
    return d
}

@Suite("workload controllers", .serialized)
struct WorkloadControllerTests {
    @Test func aDeploymentBecomesSpreadRunningPods() async throws {
        let c = try await MiniCluster.start(nodes: 3)
        defer { c.stop() }
        _ = try await c.api.create("/apis/apps/v1/namespaces/default/deployments", deployment("web", replicas: 6))
        #expect(try await c.api.eventually() {
            let d = try await c.api.get("/apis/apps/v1/namespaces/default/deployments/web")
            return d[path: ["status", "availableReplicas"]] == 6 && d[path: ["status", "updatedReplicas"]] == 6
                && (d[path: ["status", "conditions"]]?.array ?? []).contains { $0["reason"] == "NewReplicaSetAvailable" }
        })
        let pods = try await c.pods(selector: "app=web")
        #expect(pods.count == 6)
        var perNode: [String: Int] = [:]
        for p in pods { perNode[p[path: ["spec", "nodeName"]]?.string ?? "", default: 0] += 1 }
        #expect(perNode.values.sorted() == [2, 2, 2])
        let rs = try await c.api.list("/apis/apps/v1/namespaces/default/replicasets")["items"]?.array ?? []
        #expect(rs.count == 1)
        #expect(rs.first?[path: ["metadata", "annotations", "deployment.kubernetes.io/revision"]] == "1")
        #expect(rs.first?.name.hasPrefix("web-") == true)
        // Scaled down: the replica set follows, pods go.
        _ = try await c.api.mergePatch("/apis/apps/v1/namespaces/default/deployments/web", ["spec": ["replicas": 2]])
        #expect(try await c.api.eventually() { try await c.pods(selector: "app=web").count == 2 })
    }

    /// An image change rolls: never fewer available pods than replicas - maxUnavailable, never
    /// more than replicas + maxSurge; the old set ends at 0 and stays as history.
    @Test func aRollingUpdateHonoursItsBounds() async throws {
        let c = try await MiniCluster.start(nodes: 3)
        defer { c.stop() }
        let strategy: JSONValue = ["type": "RollingUpdate", "rollingUpdate": ["maxSurge": 1, "maxUnavailable": 1]]
        _ = try await c.api.create("/apis/apps/v1/namespaces/default/deployments", deployment("app", replicas: 4, strategy: strategy))
        #expect(try await c.api.eventually() { try await c.api.get("/apis/apps/v1/namespaces/default/deployments/app")[path: ["status", "availableReplicas"]] == 4 })
        _ = try await c.api.strategicPatch("/apis/apps/v1/namespaces/default/deployments/app",
                                           ["spec": ["template": ["spec": ["containers": [["name": "web", "image": "nginx:1.27"]]]]]])
        var minReady = 4, maxTotal = 0
        let deadline = Date().addingTimeInterval(240)
        var done = false
        while Date() < deadline && !done {
            let pods = try await c.pods(selector: "app=app")
            let live = pods.filter { !$0.isDeleting }
            minReady = min(minReady, live.filter(PodStatus.isReady).count)
            maxTotal = max(maxTotal, live.count)
            let d = try await c.api.get("/apis/apps/v1/namespaces/default/deployments/app")
            done = d[path: ["status", "observedGeneration"]] == d[path: ["metadata", "generation"]] && d[path: ["status", "updatedReplicas"]] == 4 && d[path: ["status", "availableReplicas"]] == 4 && d[path: ["status", "replicas"]] == 4
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(done)
        #expect(minReady >= 3)
        #expect(maxTotal <= 5)
        let sets = try await c.api.list("/apis/apps/v1/namespaces/default/replicasets")["items"]?.array ?? []
        #expect(sets.count == 2)
        #expect(Set(sets.compactMap { $0[path: ["metadata", "annotations", "deployment.kubernetes.io/revision"]]?.string }) == ["1", "2"])
        #expect(sets.first { $0[path: ["metadata", "annotations", "deployment.kubernetes.io/revision"]] == "1" }?[path: ["spec", "replicas"]] == 0)
    }

    @Test func aReplicaSetAdoptsOrphansAndReplacesWhatGoes() async throws {
        let c = try await MiniCluster.start(nodes: 2, controllers: ["replicaset"])
        defer { c.stop() }
        _ = try await c.api.create("/api/v1/namespaces/default/pods", pod("orphan", labels: ["tier": "cache"]))
        let rs: JSONValue = ["apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": ["name": "cache"],
                             "spec": ["replicas": 3, "selector": ["matchLabels": ["tier": "cache"]],
                                      "template": ["metadata": ["labels": ["tier": "cache"]], "spec": ["containers": [["name": "c", "image": "redis"]]]]]]
        _ = try await c.api.create("/apis/apps/v1/namespaces/default/replicasets", rs)
        #expect(try await c.api.eventually() {
            let pods = try await c.pods(selector: "tier=cache")
            return pods.count == 3 && pods.allSatisfy { Owners.controller($0)?.name == "cache" }
        })
        let adopted = try await c.api.get("/api/v1/namespaces/default/pods/orphan")
        #expect(adopted[path: ["metadata", "ownerReferences"]]?.array?.first?["name"] == "cache")
        // A pod deleted is replaced.
        try await c.api.delete("/api/v1/namespaces/default/pods/orphan", options: ["gracePeriodSeconds": 0])
        #expect(try await c.api.eventually() { try await c.pods(selector: "tier=cache").filter { !$0.isDeleting }.count == 3 })
        #expect(try await c.api.eventually { try await c.api.get("/apis/apps/v1/namespaces/default/replicasets/cache")[path: ["status", "replicas"]] == 3 })
    }
}
