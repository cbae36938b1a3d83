import APIServer
import CloudControllers
import CloudProvider
import ControllerKit
import Foundation
import KubeAPI
import Testing

struct Timeout: Error, CustomStringConvertible {
    var description: String
}

func until(_ what: String, timeout: Duration = .seconds(10), _ check: () async throws -> Bool) async throws {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try await check() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw Timeout(description: "timed out waiting for \(what)")
}

/// The cloud controller manager's controllers against the fake cloud and the real API (in
/// memory): what they ask of the cloud, and what they write.
@Suite("cloud controllers against a fake cloud", .serialized)
struct CloudControllerTests {
    static func node(_ name: String, ready: Bool = true, podCIDR: String? = nil, labels: [String: String] = [:], taints: [JSONValue] = []) -> JSONValue {
        var n: JSONValue = ["apiVersion": "v1", "kind": "Node", "metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })],
                            "spec": ["taints": .array(taints)],
                            "status": ["conditions": [["type": "Ready", "status": .string(ready ? "True" : "False")]]]]
        if let podCIDR { n[path: ["spec", "podCIDR"]] = .string(podCIDR); n[path: ["spec", "podCIDRs"]] = [.string(podCIDR)] }
        return n
    }

    static func addNode(_ api: API, _ n: JSONValue) async throws {
        var created = try await api.create(API.path("v1", "nodes"), n)
        created["status"] = n["status"]
        _ = try await api.update(API.path("v1", "nodes", name: n.name, subresource: "status"), created)
    }

    static func service(_ name: String, type: String = "LoadBalancer", lbClass: String? = nil) -> JSONValue {
        var s: JSONValue = ["apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(name)],
                            "spec": ["type": .string(type), "ports": [["port": 80, "targetPort": 8080]], "selector": ["app": .string(name)]]]
        if let lbClass { s[path: ["spec", "loadBalancerClass"]] = .string(lbClass) }
        return s
    }

    static func events(_ api: API, _ name: String) async throws -> [String] {
        (try await api.list(API.path("v1", "events", namespace: "default"))["items"]?.array ?? [])
            .filter { $0[path: ["involvedObject", "name"]]?.string == name }
            .compactMap { $0["reason"]?.string }
    }

    @Test func aLoadBalancerServiceGetsABalancerFollowsTheNodesAndIsCleanedUp() async throws {
        let (_, api) = try await HandlerTransport.make()
        let cloud = FakeCloud()
        for n in ["node-a", "node-b"] { try await Self.addNode(api, Self.node(n)) }
        try await Self.addNode(api, Self.node("node-x", labels: [ServiceController.excludeLabel: ""]))
        let informers = SharedInformers(api: api)
        let controller = ServiceController(api: api, cloud: cloud, informers: informers)
        let run = Task { await withTaskGroup(of: Void.self) { g in
            g.addTask { await controller.run() }
            g.addTask { await informers.run() }
        } }
        defer { run.cancel() }
        let svcs = API.path("v1", "services", namespace: "default")
        _ = try await api.create(svcs, Self.service("web"))
        _ = try await api.create(svcs, Self.service("internal", type: "ClusterIP"))
        _ = try await api.create(svcs, Self.service("theirs", lbClass: "example.com/other-lb"))

        // Ensured: finalizer, status, events; to the nodes not excluded.
        do {
            try await until("the balancer's address") {
                // (The server's core schema predates `ipMode`, which it prunes.)
                try await api.get(svcs + "/web")[path: ["status", "loadBalancer", "ingress"]]?.array?.first?["ip"] == "192.0.2.1"
            }
        } catch {
            Issue.record("\(error): the cloud was asked \(cloud.calls); the Service is \(try await api.get(svcs + "/web").text())")
            throw error
        }
        let web = try await api.get(svcs + "/web")
        #expect(web[path: ["metadata", "finalizers"]] == [.string(ServiceController.finalizer)])
        #expect(cloud.balancers.values.map(\.nodes) == [["node-a", "node-b"]])
        try await until("the events") { try await Self.events(api, "web").starts(with: ["EnsuringLoadBalancer", "EnsuredLoadBalancer"]) }
        #expect(!cloud.calls.contains { $0.contains("internal") || $0.contains("theirs") }, "\(cloud.calls)")
        #expect(try await api.get(svcs + "/theirs")[path: ["metadata", "finalizers"]] == nil)

        // A new node: the balancer updated, not made again.
        let ensures = cloud.calls.filter { $0.hasPrefix("EnsureLoadBalancer ") }.count
        try await Self.addNode(api, Self.node("node-c"))
        try await until("the new node in the balancer") { cloud.balancers.values.first?.nodes == ["node-a", "node-b", "node-c"] }
        #expect(cloud.calls.filter { $0.hasPrefix("EnsureLoadBalancer ") }.count == ensures)
        #expect(cloud.calls.contains("UpdateLoadBalancer default/web [\"node-a\", \"node-b\", \"node-c\"]"), "\(cloud.calls)")
        try await until("UpdatedLoadBalancer") { try await Self.events(api, "web").contains("UpdatedLoadBalancer") }

        // A failing cloud: the event says so, and the next try succeeds.
        cloud.fail("EnsureLoadBalancer")
        _ = try await api.create(svcs, Self.service("flaky"))
        try await until("SyncLoadBalancerFailed") { try await Self.events(api, "flaky").contains("SyncLoadBalancerFailed") }
        cloud.fail("EnsureLoadBalancer", false)
        try await until("flaky's balancer") { try await api.get(svcs + "/flaky")[path: ["status", "loadBalancer", "ingress"]]?.array?.isEmpty == false }

        // No longer a LoadBalancer: the balancer deleted, the status and the finalizer gone.
        var changed = try await api.get(svcs + "/web")
        // As a client must: the fields only a LoadBalancer may have go with the type.
        changed[path: ["spec", "type"]] = "ClusterIP"
        changed[path: ["spec", "ports"]] = [["port": 80, "targetPort": 8080]]
        for f in ["allocateLoadBalancerNodePorts", "externalTrafficPolicy", "healthCheckNodePort"] { changed[path: ["spec", f]] = nil }
        _ = try await api.update(svcs + "/web", changed)
        try await until("web's balancer deleted") {
            let w = try await api.get(svcs + "/web")
            return w[path: ["metadata", "finalizers"]]?.array?.isEmpty != false && w[path: ["status", "loadBalancer", "ingress"]] == nil
        }
        #expect(cloud.balancers.values.map(\.service) == ["default/flaky"])
        try await until("DeletedLoadBalancer") { try await Self.events(api, "web").contains("DeletedLoadBalancer") }

        // Deleted: the finalizer holds the Service until its balancer is gone.
        _ = try await api.delete(svcs + "/flaky")
        try await until("flaky gone") {
            do { _ = try await api.get(svcs + "/flaky"); return false } catch let e as APIStatusError where e.isNotFound { return true }
        }
        #expect(cloud.balancers.isEmpty)
        #expect(cloud.calls.contains("EnsureLoadBalancerDeleted default/flaky"))
    }

    @Test func newNodesAreInitialisedAndNodesWithoutMachinesGo() async throws {
        let (_, api) = try await HandlerTransport.make()
        let cloud = FakeCloud()
        cloud.setMachine("node-a", .init(metadata: InstanceMetadata(providerID: "fake://node-a", instanceType: "lab.small",
                                                                    addresses: [NodeAddress(type: "InternalIP", address: "10.0.0.11")],
                                                                    zone: "lab-a", region: "lab", additionalLabels: ["lab.switchyard.io/rack": "1"])))
        cloud.setMachine("node-b", .init(metadata: InstanceMetadata(providerID: "fake://node-b")))
        let uninitialized: JSONValue = ["key": .string(NodeController.uninitializedTaint), "value": "true", "effect": "NoSchedule"]
        try await Self.addNode(api, Self.node("node-a", taints: [uninitialized]))
        try await Self.addNode(api, Self.node("node-b", ready: false))
        try await Self.addNode(api, Self.node("node-gone", ready: false))
        let informers = SharedInformers(api: api)
        let controller = NodeController(api: api, cloud: cloud, informers: informers, monitorPeriod: .milliseconds(200))
        let run = Task { await withTaskGroup(of: Void.self) { g in
            g.addTask { await controller.run() }
            g.addTask { await informers.run() }
        } }
        defer { run.cancel() }
        let nodes = API.path("v1", "nodes")
        try await until("node-a initialised") { NodeController.taints(try await api.get(nodes + "/node-a")).isEmpty }
        let a = try await api.get(nodes + "/node-a")
        #expect(a[path: ["spec", "providerID"]] == "fake://node-a")
        #expect(a.labels["node.kubernetes.io/instance-type"] == "lab.small" && a.labels["topology.kubernetes.io/zone"] == "lab-a"
                && a.labels["topology.kubernetes.io/region"] == "lab" && a.labels["failure-domain.beta.kubernetes.io/zone"] == "lab-a"
                && a.labels["lab.switchyard.io/rack"] == "1", "\(a.labels)")
        try await until("node-a's addresses") { try await api.get(nodes + "/node-a")[path: ["status", "addresses"]] == [["type": "InternalIP", "address": "10.0.0.11"]] }
        // Not Ready and no machine: deleted, with upstream's event.
        try await until("node-gone deleted") {
            do { _ = try await api.get(nodes + "/node-gone"); return false } catch let e as APIStatusError where e.isNotFound { return true }
        }
        #expect(try await api.get(nodes + "/node-b").name == "node-b", "its machine exists")
        // Shut down: tainted; back: the taint goes (once Ready).
        cloud.setMachine("node-b", .init(metadata: InstanceMetadata(providerID: "fake://node-b"), shutdown: true))
        try await until("the shutdown taint") { NodeController.hasTaint(try await api.get(nodes + "/node-b"), NodeController.shutdownTaint) }
        cloud.setMachine("node-b", .init(metadata: InstanceMetadata(providerID: "fake://node-b")))
        var b = try await api.get(nodes + "/node-b")
        b[path: ["status", "conditions"]] = [["type": "Ready", "status": "True"]]
        _ = try await api.update(nodes + "/node-b/status", b)
        try await until("the shutdown taint gone") { !NodeController.hasTaint(try await api.get(nodes + "/node-b"), NodeController.shutdownTaint) }
    }

    @Test func eachNodesPodCIDRHasARouteAndStaleRoutesGo() async throws {
        let (_, api) = try await HandlerTransport.make()
        let cloud = FakeCloud()
        for n in ["node-a", "node-b", "node-c"] { cloud.setMachine(n, .init(metadata: InstanceMetadata(providerID: "fake://\(n)"))) }
        cloud.addRoute(CloudRoute(name: "kubernetes-old", targetNode: "node-a", destinationCIDR: "10.244.9.0/24"))
        cloud.addRoute(CloudRoute(name: "kubernetes-gone", targetNode: "node-z", destinationCIDR: "10.244.8.0/24"))
        try await Self.addNode(api, Self.node("node-a", podCIDR: "10.244.1.0/24"))
        try await Self.addNode(api, Self.node("node-b", podCIDR: "10.244.2.0/24"))
        try await Self.addNode(api, Self.node("node-c"))
        let informers = SharedInformers(api: api)
        let controller = RouteController(api: api, cloud: cloud, informers: informers, reconcilePeriod: .milliseconds(300))
        let run = Task { await withTaskGroup(of: Void.self) { g in
            g.addTask { await controller.run() }
            g.addTask { await informers.run() }
        } }
        defer { run.cancel() }
        func routes() -> Set<String> { Set(cloud.currentRoutes.map { "\($0.targetNode) \($0.destinationCIDR)" }) }
        try await until("the routes") { routes() == ["node-a 10.244.1.0/24", "node-b 10.244.2.0/24"] }
        let nodes = API.path("v1", "nodes")
        try await until("NetworkUnavailable=False") {
            (try await api.get(nodes + "/node-a")[path: ["status", "conditions"]]?.array ?? [])
                .contains { $0["type"] == "NetworkUnavailable" && $0["status"] == "False" && $0["reason"] == "RouteCreated" }
        }
        // A node without a CIDR gets it later; a node deleted loses its route.
        var c = try await api.get(nodes + "/node-c")
        c[path: ["spec", "podCIDR"]] = "10.244.3.0/24"
        c[path: ["spec", "podCIDRs"]] = ["10.244.3.0/24"]
        _ = try await api.update(nodes + "/node-c", c)
        _ = try await api.delete(nodes + "/node-b")
        try await until("the routes after") { routes() == ["node-a 10.244.1.0/24", "node-c 10.244.3.0/24"] }
        #expect(cloud.currentRoutes.first { $0.targetNode == "node-a" }?.name.hasPrefix("kubernetes-") == true)
    }
}
