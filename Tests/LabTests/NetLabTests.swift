import Foundation
import HostOS
import NetLab
import NetnsKit
import Testing

@Suite("netlab: a two-node cluster in namespaces, pods as netlab's processes", .enabled(if: isRoot, "needs root for network namespaces"))
struct NetLabTests {
    /// Up, the echo Service reached from the client through every mode this kernel has (both
    /// pods over HTTP, UDP, the NodePort), then down from the namespace names alone (as after a
    /// crash that lost the state file): no namespace, process or state left.
    @Test func upReachEveryModeDown() async throws {
        let bin = URL(fileURLWithPath: try switchyardBinary()).deletingLastPathComponent().path
        let hex = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let name = "t" + String(repeating: "0", count: 8 - hex.count) + hex
        do {
            try await upReachEveryModeDown(name: name, bin: bin)
        } catch {
            try? await Cluster.down(name: name, progress: { _ in })
            throw error
        }
    }

    func upReachEveryModeDown(name: String, bin: String) async throws {
        let lab = try await Cluster.up(name: name, nodes: 2, proxyMode: "none", binDir: bin, runtime: .netns, progress: { _ in })
        #expect(lab.state.pods.count == 2)
        #expect(Set(lab.state.pods.map(\.node)) == ["node-1", "node-2"], "a pod on each node: traffic crosses the underlay")
        // A second `up` finds the lab whole and leaves it as it is.
        let again = try await Cluster.up(name: name, nodes: 2, proxyMode: "none", binDir: bin, runtime: .netns, progress: { _ in })
        #expect(again.state.pods.map(\.ip) == lab.state.pods.map(\.ip))
        // `netlab kubectl` and `netlab exec`, from the host, as a user runs them.
        let netlab = bin + "/switchyard-netlab"
        let kubectl = try CommandRunner().run([netlab, "kubectl", "--name", name, "get", "pods", "-o", "name"], check: false)
        #expect(kubectl.status == 0 && kubectl.stdout == "pod/echo-1\npod/echo-2\n", "netlab kubectl: \(kubectl)")
        let route = try CommandRunner().run([netlab, "exec", "--name", name, "node-1", "--", "ip", "-4", "route", "show", "10.244.2.0/24"], check: false)
        #expect(route.stdout.hasPrefix("10.244.2.0/24 via 10.250.0.12"), "netlab exec node-1: \(route)")
        let status = try CommandRunner().run([netlab, "exec", "--name", name, "echo-1", "--", "sh", "-c", "exit 7"], check: false)
        #expect(status.status == 7)
        let unknown = try CommandRunner().run([netlab, "exec", "--name", name, "nowhere", "--", "true"], check: false)
        #expect(unknown.status != 0 && unknown.stderr.contains("no nowhere in lab \(name)"), "\(unknown)")

        var pids: Set<Int32> = []
        for ns in lab.state.namespaces { pids.formUnion(Netns.pids(ns)) }
        for mode in Comparison.availableModes {
            try await lab.startProxies(mode: mode)
            try await lab.waitForProxies()
            for node in lab.state.nodes { if let p = lab.proxyPID(node) { pids.insert(p) } }
            let r = try await lab.reach()
            #expect(r.httpPods == ["echo-1", "echo-2"], "\(mode): both pods through the ClusterIP")
            #expect(["echo-1", "echo-2"].contains(r.udpReply ?? ""), "\(mode): UDP through the ClusterIP")
            #expect(["echo-1", "echo-2"].contains(r.nodePortPod ?? ""), "\(mode): the NodePort on node-1")
        }
        try lab.stopProxies()
        #expect(lab.state.nodes.allSatisfy { lab.proxyPID($0) == nil })

        try FileManager.default.removeItem(atPath: LabPaths.state(name))
        try await Cluster.down(name: name, progress: { _ in })
        #expect(Cluster.leftovers(name).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: LabPaths.dir(name)))
        usleep(100_000)
        #expect(pids.filter(Cluster.isAlive).isEmpty, "every process of the lab is gone")
    }

    /// Bad input is refused before anything is made.
    @Test func badInput() async throws {
        let bin = URL(fileURLWithPath: try switchyardBinary()).deletingLastPathComponent().path
        await #expect(throws: NetLabError.self) { _ = try await Cluster.up(name: "Bad Name", nodes: 2, proxyMode: "none", binDir: bin, progress: { _ in }) }
        await #expect(throws: NetLabError.self) { _ = try await Cluster.up(name: "tbad", nodes: 2, proxyMode: "bogus", binDir: bin, progress: { _ in }) }
        await #expect(throws: NetLabError.self) { _ = try await Cluster.up(name: "tbad", nodes: 0, proxyMode: "none", binDir: bin, progress: { _ in }) }
        #expect(Cluster.leftovers("tbad").isEmpty)
    }
}
