import Foundation
import Testing
import KubeAPI
import APIServer
import ControllerKit
@testable import Scheduler

/// The scheduler against the real API (in memory): it binds, spreads, reports what does not
/// fit as upstream does, and preempts.
@Suite("scheduler against the API")
struct SchedulerTests {
    func start(_ api: API, _ profiles: [Profile] = [.default()]) -> (Scheduler, Task<Void, Never>) {
        let s = Scheduler(api: api, profiles: profiles)
        return (s, Task { await s.run() })
    }

    func nodeOf(_ api: API, _ name: String, ns: String = "default") async -> String? {
        (try? await api.get(API.path("v1", "pods", namespace: ns, name: name)))?[path: ["spec", "nodeName"]]?.string
    }

    @Test func podsAreBoundAndAControllersPodsSpread() async throws {
        let (_, api) = try await HandlerTransport.make()
        for n in ["n1", "n2", "n3"] { _ = try await api.create("/api/v1/nodes", node(n)) }
        let (_, task) = start(api)
        defer { task.cancel() }
        for i in 0..<6 { _ = try await api.create("/api/v1/namespaces/default/pods", pod("web-\(i)", cpu: "100m", owner: "rs-1")) }
        #expect(try await api.eventually { await (0..<6).asyncAllSatisfy { await nodeOf(api, "web-\($0)") != nil } })
        var perNode: [String: Int] = [:]
        for i in 0..<6 { perNode[await nodeOf(api, "web-\(i)") ?? "", default: 0] += 1 }
        #expect(perNode == ["n1": 2, "n2": 2, "n3": 2])
        // The Scheduled event, as upstream words it.
        #expect(try await api.eventually {
            let events = try await api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
            return events.contains { $0["reason"] == "Scheduled" && $0["message"]?.string?.hasPrefix("Successfully assigned default/web-") == true
                && $0["reportingComponent"] == "default-scheduler" && $0["action"] == "Binding" }
        })
    }

    @Test func aPodThatFitsNowhereSaysWhy() async throws {
        let (_, api) = try await HandlerTransport.make()
        _ = try await api.create("/api/v1/nodes", node("small", cpu: "1"))
        _ = try await api.create("/api/v1/nodes", node("tainted", taints: [["key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"]]))
        _ = try await api.create("/api/v1/nodes", node("small2", cpu: "1"))
        let (_, task) = start(api)
        defer { task.cancel() }
        _ = try await api.create("/api/v1/namespaces/default/pods", pod("big", cpu: "2"))
        let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. "
            + "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        #expect(try await api.eventually {
            let p = try await api.get("/api/v1/namespaces/default/pods/big")
            let c = (p[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "PodScheduled" }
            return c?["status"] == "False" && c?["reason"] == "Unschedulable" && c?["message"]?.string == expected
        })
        #expect(try await api.eventually {
            (try await api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []).contains {
                $0["reason"] == "FailedScheduling" && $0["type"] == "Warning" && $0["message"]?.string == expected
            }
        })
        // A node that can take it: the pod is tried again at once (a cluster event) and bound.
        _ = try await api.create("/api/v1/nodes", node("large", cpu: "8"))
        #expect(try await api.eventually { await nodeOf(api, "big") == "large" })
    }

    @Test func requiredAntiAffinityKeepsPodsApart() async throws {
        let (_, api) = try await HandlerTransport.make()
        for n in ["n1", "n2"] { _ = try await api.create("/api/v1/nodes", node(n)) }
        let (_, task) = start(api)
        defer { task.cancel() }
        let anti: JSONValue = ["podAntiAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": [
            ["labelSelector": ["matchLabels": ["app": "db"]], "topologyKey": "kubernetes.io/hostname"]]]]
        for i in 0..<3 { _ = try await api.create("/api/v1/namespaces/default/pods", pod("db-\(i)", labels: ["app": "db"], extra: ["affinity": anti])) }
        #expect(try await api.eventually {
            let placed = await (0..<3).asyncCompactMap { await nodeOf(api, "db-\($0)") }
            return Set(placed) == ["n1", "n2"] && placed.count == 2
        })
        #expect(try await api.eventually {
            let pods = try await api.list("/api/v1/namespaces/default/pods")["items"]?.array ?? []
            return pods.contains { ($0[path: ["status", "conditions"]]?.array ?? []).contains {
                $0["message"]?.string?.hasPrefix("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.") == true } }
        })
    }

    @Test func aHigherPriorityPodPreemptsALowerOne() async throws {
        let (_, api) = try await HandlerTransport.make()
        _ = try await api.create("/api/v1/nodes", node("n1", cpu: "1"))
        _ = try await api.create("/apis/scheduling.k8s.io/v1/priorityclasses", ["metadata": ["name": "high"], "value": 1000])
        let (_, task) = start(api)
        defer { task.cancel() }
        _ = try await api.create("/api/v1/namespaces/default/pods", pod("low", cpu: "800m"))
        #expect(try await api.eventually { await nodeOf(api, "low") == "n1" })
        _ = try await api.create("/api/v1/namespaces/default/pods", pod("urgent", cpu: "800m", extra: ["priorityClassName": "high"]))
        // The victim is deleted (bound: marked, as its kubelet would finish it) and the node nominated.
        #expect(try await api.eventually {
            let low = try await api.get("/api/v1/namespaces/default/pods/low")
            let urgent = try await api.get("/api/v1/namespaces/default/pods/urgent")
            return low[path: ["metadata", "deletionTimestamp"]] != nil && urgent[path: ["status", "nominatedNodeName"]] == "n1"
        })
        // The kubelet's part: the victim goes; the preemptor is bound.
        try await api.delete("/api/v1/namespaces/default/pods/low", options: ["gracePeriodSeconds": 0])
        #expect(try await api.eventually { await nodeOf(api, "urgent") == "n1" })
    }
}

extension Sequence where Element: Sendable {
    func asyncAllSatisfy(_ f: (Element) async -> Bool) async -> Bool {
        for e in self { if !(await f(e)) { return false } }
        return true
    }
    func asyncCompactMap<T>(_ f: (Element) async -> T?) async -> [T] {
        var out: [T] = []
        for e in self { if let x = await f(e) { out.append(x) } }
        return out
    }
}
