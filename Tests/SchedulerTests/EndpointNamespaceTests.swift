import Foundation
import Testing
import KubeAPI
import APIServer
import ControllerKit
@testable import Controllers

/// The EndpointSlice and Endpoints controllers, the namespace controller and the scheduler's
/// events.k8s.io events, against the real API handler.
@Suite("endpoint and namespace controllers", .serialized)
struct EndpointNamespaceTests {
    static func pod(_ i: Int, ready: Bool) -> (JSONValue, JSONValue) {
        (["metadata": ["name": .string("p\(i)"), "labels": ["app": "web"]],
          "spec": ["nodeName": "node-a", "containers": [["name": "c", "image": "x", "ports": [["name": "web", "containerPort": 8080]]]]]],
         ["status": ["phase": "Running", "podIP": .string("10.244.\(i / 200).\(i % 200 + 2)"),
                     "conditions": [["type": "Ready", "status": ready ? "True" : "False"]]]])
    }

    @Test func slicesOfAtMost100EndpointsAndTheLegacyEndpoints() async throws {
        let (h, api) = try await HandlerTransport.make()
        _ = try await api.create("/api/v1/namespaces/default/services", [
            "metadata": ["name": "web", "labels": ["team": "a"]],
            "spec": ["selector": ["app": "web"], "ports": [["name": "http", "port": 80, "targetPort": "web"]]]])
        for i in 0..<150 {
            let (p, status) = Self.pod(i, ready: i != 0)
            _ = try await api.create("/api/v1/namespaces/default/pods", p)
            _ = try await api.mergePatch("/api/v1/namespaces/default/pods/p\(i)/status", status)
        }
        var options = ControllerManager.Options()
        options.controllers = ["endpointslice", "endpoint"]
        let manager = try ControllerManager(api: api, options: options)
        let task = Task { await manager.run() }
        defer { task.cancel() }
        let slicePath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        func slices() async throws -> [JSONValue] { try await api.list(slicePath, query: ["labelSelector": "kubernetes.io/service-name=web"])["items"]?.array ?? [] }
        #expect(try await api.eventually() { try await slices().map { $0["endpoints"]?.array?.count ?? 0 }.sorted() == [50, 100] })
        let got = try await slices()
        // The named target port resolved from the pods' containers; readiness as the pods say;
        // labelled and owned as upstream's.
        #expect(got.allSatisfy { $0["ports"] == [["name": "http", "port": 8080, "protocol": "TCP"]] })
        let endpoints: [JSONValue] = got.flatMap { $0["endpoints"]?.array ?? [] }
        let notReady = endpoints.filter { $0[path: ["conditions", "ready"]]?.bool == false }
        #expect(notReady.count == 1)
        let labels = got.map { ($0[path: ["metadata", "labels"]] ?? [:]).labelsAsStrings }
        #expect(labels.allSatisfy { $0["team"] == "a" && $0["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io" })
        #expect(got.allSatisfy { $0[path: ["metadata", "ownerReferences"]]?.array?.first?["kind"] == "Service" })
        #expect(try await api.eventually() {
            let ep = try await api.get("/api/v1/namespaces/default/endpoints/web")
            return ep["subsets"]?.array?.first?["addresses"]?.array?.count == 149 && ep["subsets"]?.array?.first?["notReadyAddresses"]?.array?.count == 1
        })
        // Settled: nothing more is written.
        try await Task.sleep(for: .milliseconds(500))
        let rev = try await h.store.currentRevision()
        try await Task.sleep(for: .milliseconds(700))
        #expect(try await h.store.currentRevision() == rev)
        // A terminating pod stays in the slices, serving but not ready, and leaves the Endpoints.
        _ = try await api.mergePatch("/api/v1/namespaces/default/pods/p5", ["metadata": ["finalizers": ["example.com/hold"]]])
        try await api.delete("/api/v1/namespaces/default/pods/p5", options: ["gracePeriodSeconds": 0])
        #expect(try await api.eventually() {
            let all: [JSONValue] = try await slices().flatMap { $0["endpoints"]?.array ?? [] }
            let e = all.first { $0[path: ["targetRef", "name"]]?.string == "p5" }
            return e?["conditions"] == ["ready": false, "serving": true, "terminating": true]
        })
        #expect(try await api.eventually() {
            try await api.get("/api/v1/namespaces/default/endpoints/web")["subsets"]?.array?.first?["addresses"]?.array?.count == 148
        })
        // Without a selector the Service's slices go; its Endpoints are then the user's, as upstream.
        _ = try await api.mergePatch("/api/v1/namespaces/default/services/web", ["spec": ["selector": nil]])
        #expect(try await api.eventually() { try await api.list(slicePath)["items"]?.array?.isEmpty == true })
        #expect((try? await api.get("/api/v1/namespaces/default/endpoints/web")) != nil)
        // The Service gone, its Endpoints go.
        try await api.delete("/api/v1/namespaces/default/services/web")
        #expect(try await api.eventually() {
            do { _ = try await api.get("/api/v1/namespaces/default/endpoints/web"); return false } catch let e as APIStatusError { return e.isNotFound }
        })
    }

    /// Deleting a namespace: Terminating at once, emptied by the controller (pods through their
    /// graceful deletion, which the fake nodes finish), held by an object's finalizer (told in
    /// the conditions) until it is removed, then finalized and gone.
    @Test func aNamespaceIsEmptiedThenFinalized() async throws {
        let c = try await MiniCluster.start(nodes: 2)
        defer { c.stop() }
        _ = try await c.api.create("/api/v1/namespaces", ["metadata": ["name": "scratch"]])
        _ = try await c.api.create("/apis/apps/v1/namespaces/scratch/deployments", deployment("web", replicas: 3))
        _ = try await c.api.create("/api/v1/namespaces/scratch/configmaps", ["metadata": ["name": "held", "finalizers": ["example.com/hold"]]])
        #expect(try await c.api.eventually() { try await c.pods("scratch").filter { $0[path: ["status", "phase"]] == "Running" }.count == 3 })
        let d = try await c.api.delete("/api/v1/namespaces/scratch")
        #expect(d[path: ["status", "phase"]] == "Terminating")
        #expect(d[path: ["spec", "finalizers"]] == ["kubernetes"])
        // Nothing new in it; a second delete is told the system is on it.
        await #expect(throws: APIStatusError.self) { _ = try await c.api.create("/api/v1/namespaces/scratch/configmaps", ["metadata": ["name": "late"]]) }
        do { try await c.api.delete("/api/v1/namespaces/scratch"); Issue.record("a second delete succeeded") } catch let e as APIStatusError {
            #expect(e.code == 409 && e.message.contains("The system is ensuring all content is removed from this namespace"))
        }
        #expect(try await c.api.eventually() {
            let n = try await c.api.get("/api/v1/namespaces/scratch")
            let conditions = n[path: ["status", "conditions"]]?.array ?? []
            let f = conditions.first { $0["type"] == "NamespaceFinalizersRemaining" }
            let r = conditions.first { $0["type"] == "NamespaceContentRemaining" }
            return f?["status"] == "True" && f?["message"] == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                && r?["message"] == "Some resources are remaining: configmaps has 1 resource instances"
        })
        #expect(try await c.pods("scratch").isEmpty)
        #expect(try await c.api.list("/apis/apps/v1/namespaces/scratch/deployments")["items"]?.array?.isEmpty == true)
        _ = try await c.api.mergePatch("/api/v1/namespaces/scratch/configmaps/held", ["metadata": ["finalizers": nil]])
        #expect(try await c.api.eventually() {
            do { _ = try await c.api.get("/api/v1/namespaces/scratch"); return false } catch let e as APIStatusError { return e.isNotFound }
        })
    }

    /// The scheduler records events.k8s.io/v1 events, read through both versions.
    @Test func theSchedulerRecordsEventsV1() async throws {
        let c = try await MiniCluster.start(nodes: 1)
        defer { c.stop() }
        _ = try await c.api.create("/api/v1/namespaces/default/pods", ["metadata": ["name": "p"], "spec": ["containers": [["name": "c", "image": "x"]]]])
        #expect(try await c.api.eventually() {
            let events = try await c.api.list("/apis/events.k8s.io/v1/namespaces/default/events")["items"]?.array ?? []
            return events.contains { e in
                e["reason"] == "Scheduled" && e["action"] == "Binding" && e["reportingController"] == "default-scheduler"
                    && e[path: ["regarding", "name"]] == "p" && e["note"] == "Successfully assigned default/p to fake-node-0" && e["eventTime"] != nil
            }
        })
        // The same event in core/v1, as `kubectl describe` reads it.
        let core = try await c.api.list("/api/v1/namespaces/default/events", query: ["fieldSelector": "involvedObject.name=p"])["items"]?.array ?? []
        #expect(core.contains { $0["reason"] == "Scheduled" && $0["message"] == "Successfully assigned default/p to fake-node-0"
                                && $0["reportingComponent"] == "default-scheduler" })
    }
}

extension JSONValue {
    var labelsAsStrings: [String: String] { (object ?? [:]).compactMapValues(\.string) }
}
