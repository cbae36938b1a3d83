import CRI
import Foundation
import KubeAPI
@testable import Kubelet
import Testing

/// Lifecycle hooks: postStart after the container starts (its failure kills it), preStop before
/// the stop signal on a graceful stop.
@Suite("lifecycle hooks", .serialized)
struct HookTests {
    final class Calls: @unchecked Sendable {
        let lock = NSLock()
        var list: [String] = []
        func add(_ s: String) { lock.withLock { list.append(s) } }
        var all: [String] { lock.withLock { list } }
    }

    @Test func aFailingPostStartHookKillsTheContainerAndItRestarts() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        let calls = Calls()
        h.runtime.onExec { container, cmd in
            calls.add("\(container): \(cmd.joined(separator: " "))")
            return cmd.last == "fail" ? (1, "no") : (0, "")
        }
        try await h.create("hooked", containers: [container("main", extra: ["lifecycle": ["postStart": ["exec": ["command": ["hook", "fail"]]]]])])
        try await h.eventually("restarted after the hook failed") {
            (try await h.pod("hooked")[path: ["status", "containerStatuses"]]?.array?.first?["restartCount"]?.int ?? 0) >= 1
        }
        // Events are recorded in the background.
        try await h.eventually("the hook's failure is recorded") {
            let events = try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
            return events.contains { $0["reason"] == "FailedPostStartHook" && $0["message"] == "PostStartHook failed" && $0["type"] == "Warning" }
        }
        #expect(calls.all.first == "main: hook fail")
    }

    @Test func aPostStartHookThatPassesLeavesTheContainerRunning() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        let calls = Calls()
        h.runtime.onExec { container, cmd in calls.add("\(container): \(cmd.joined(separator: " "))"); return (0, "") }
        try await h.create("hooked", containers: [container("main", extra: ["lifecycle": ["postStart": ["exec": ["command": ["hook", "ok"]]]]])])
        try await h.eventually("running") { try await h.pod("hooked")[path: ["status", "phase"]] == "Running" }
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await h.pod("hooked")[path: ["status", "containerStatuses"]]?.array?.first?["restartCount"] == 0)
        #expect(calls.all == ["main: hook ok"])
    }

    @Test func preStopRunsBeforeTheStopSignalOnDeletion() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        let calls = Calls()
        let runtime = h.runtime
        h.runtime.onExec { container, cmd in
            // How many containers had been stopped when the hook ran: none.
            calls.add("\(container): \(cmd.joined(separator: " ")) after \(runtime.calls.filter { $0 == "StopContainer" }.count) stops")
            return (0, "")
        }
        try await h.create("stopping", containers: [container("main", extra: ["lifecycle": ["preStop": ["exec": ["command": ["drain", "now"]]]]])],
                           extra: ["terminationGracePeriodSeconds": 5])
        try await h.eventually("running") { try await h.pod("stopping")[path: ["status", "phase"]] == "Running" }
        #expect(calls.all.isEmpty)
        let before = h.runtime.calls.count
        _ = try await h.api.delete("/api/v1/namespaces/default/pods/stopping")
        try await h.eventually("gone") { (try? await h.pod("stopping")) == nil }
        // The hook ran once, before the container was stopped.
        #expect(calls.all == ["main: drain now after 0 stops"])
        let after = Array(h.runtime.calls.dropFirst(before))
        #expect(after.contains("StopContainer"))
    }

    @Test func hooksAreReadAsUpstreamWritesThem() {
        guard case .exec(let cmd)? = LifecycleHook(["exec": ["command": ["a", "b"]]])?.action else { Issue.record("exec"); return }
        #expect(cmd == ["a", "b"])
        guard case .http(_, let port, let path, _, _)? = LifecycleHook(["httpGet": ["path": "/quit", "port": "http"]])?.action else { Issue.record("http"); return }
        #expect(port == "http" && path == "/quit")
        guard case .sleep(let s)? = LifecycleHook(["sleep": ["seconds": 3]])?.action else { Issue.record("sleep"); return }
        #expect(s == 3)
        #expect(LifecycleHook(["tcpSocket": ["port": 80]]) == nil)
        #expect(LifecycleHook(nil) == nil)
    }
}
