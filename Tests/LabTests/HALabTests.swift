import Foundation
import HostOS
import KubeAPI
import LabServices
import NetLab
import NetnsKit
import Synchronization
import Testing

/// The highly available lab as the issue checks it: three etcd members, three API servers, a
/// scheduler and a controller manager on each member, the lab cloud's balancer in front. A
/// writer applies ConfigMaps through the balancer without stopping and a client sends requests
/// through a Service while one etcd member, then an API server, then the leading controller
/// manager are killed: every acknowledged write is there afterwards, writes resume, a rollout
/// started before the faults completes, and no request through the Service fails. Then `heal`
/// brings every member back whole.
/// What the writer and the client record while the faults go on.
final class Shared: Sendable {
    struct Log { var acked: [String] = []; var lastAck = Date(); var longestGap = 0.0; var failedRequests = 0; var requests = 0 }
    let log = Mutex(Log())
    let stop = Atomic<Bool>(false)
}

@Suite("netlab's highly available control plane", .serialized,
       .enabled(if: isRoot && ContainerdProcess.available && RegistryProcess.available && EtcdProcess.available,
                "needs root, containerd, runc, docker-registry and etcd"))
struct HALabTests {
    @Test func writesARolloutAndTrafficSurviveAnEtcdMemberAnAPIServerAndTheControllerManager() async throws {
        try await HeavyLabs.withLab(prefix: "h", tail: 600) { try await run(name: $0, bin: $1) }
    }

    func run(name: String, bin: String) async throws {
        let lab = try await Cluster.up(name: name, nodes: 2, proxyMode: "iptables", binDir: bin, runtime: .containerd, controlPlanes: 3, progress: { _ in })
        try await lab.waitForProxies()
        #expect(lab.state.members.map(\.name) == ["cp-1", "cp-2", "cp-3"])
        let api = try lab.balancedClient()
        // Every component reads the balancer's address from its kubeconfig.
        let kubeconfig = try String(contentsOfFile: lab.kubeconfig, encoding: .utf8)
        #expect(kubeconfig.contains("server: https://\(LabCloudNet.apiServerAddress):6443"))

        // A Service on echo-1's pod alone (the rollout below replaces echo-2's), reached by
        // the outside client at its ClusterIP through node-1's proxy.
        let steady = try await lab.createService("steady", selector: ["workload": "echo-1"], ports: [("http", 80, 8080, "TCP")])
        #expect(try await eventually(tries: 100, every: .milliseconds(100), { lab.clientGet(steady) }, until: { $0 != nil }) != nil)

        let shared = Shared()
        let writer = Task { [shared] in
            var i = 0
            while !shared.stop.load(ordering: .relaxed) {
                i += 1
                let name = "w-\(i)"
                let r = try? await api.request("POST", "/api/v1/namespaces/default/configmaps", body: ["metadata": ["name": .string(name)], "data": ["i": .string("\(i)")]])
                if let r, r.status == 201 {
                    shared.log.withLock { l in
                        l.acked.append(name)
                        l.longestGap = max(l.longestGap, Date().timeIntervalSince(l.lastAck))
                        l.lastAck = Date()
                    }
                } else {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
        }
        let traffic = Task.detached { [shared] in
            while !shared.stop.load(ordering: .relaxed) {
                let ok = lab.clientGet(steady, timeout: 2) != nil
                shared.log.withLock { l in
                    l.requests += 1
                    if !ok { l.failedRequests += 1 }
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }

        // A rollout of echo-2 started before the faults (kubectl rollout restart's annotation),
        // its new pod available only after 15 s, so the rollout ends after the last fault.
        let started = Date()
        let rolled = try await lab.must("PATCH", "/apis/apps/v1/namespaces/default/deployments/echo-2", [
            "spec": ["minReadySeconds": 15, "template": ["metadata": ["annotations": ["kubectl.kubernetes.io/restartedAt": .string(Date().description)]]]]],
            contentType: "application/merge-patch+json")
        let generation = rolled[path: ["metadata", "generation"]]?.int ?? 0

        try await Task.sleep(for: .seconds(2))
        let etcd = try await lab.inject(.killEtcd(nil))
        try await Task.sleep(for: .seconds(4))
        let server = try await lab.inject(.killAPIServer("cp-1"))
        try await Task.sleep(for: .seconds(4))
        let manager = try await lab.inject(.killControllerManager(nil))

        // The rollout completes under the next leader.
        let done = try await eventually(tries: 600, every: .milliseconds(200), {
            try? await lab.must("GET", "/apis/apps/v1/namespaces/default/deployments/echo-2", nil)
        }, until: { d in
            guard let d else { return false }
            return (d[path: ["status", "observedGeneration"]]?.int ?? 0) >= generation && d[path: ["status", "updatedReplicas"]]?.int == 1
                && d[path: ["status", "readyReplicas"]]?.int == 1 && d[path: ["status", "replicas"]]?.int == 1
        })
        #expect(done != nil, "the rollout did not complete after \(etcd); \(server); \(manager)")
        #expect(Date().timeIntervalSince(started) > 15)
        try await Task.sleep(for: .seconds(2))
        shared.stop.store(true, ordering: .relaxed)
        _ = await writer.result
        _ = await traffic.result

        // Every acknowledged write is there, read through the balancer.
        let listed = try await api.request("GET", "/api/v1/namespaces/default/configmaps")
        let present = Set((listed.body["items"]?.array ?? []).compactMap { $0[path: ["metadata", "name"]]?.string })
        let l = shared.log.withLock { $0 }
        #expect(l.acked.count > 50, "\(l.acked.count) writes acknowledged")
        #expect(l.acked.filter { !present.contains($0) }.isEmpty, "acknowledged but missing: \(l.acked.filter { !present.contains($0) }.prefix(10))")
        // Writes resumed within the failover figures' bound after each fault.
        #expect(l.longestGap < 10, "the longest gap between acknowledged writes: \(l.longestGap) s")
        #expect(l.requests > 100 && l.failedRequests == 0, "\(l.failedRequests) of \(l.requests) requests through the Service failed")

        // A partition cuts the two parts' own traffic and nothing else: node-1 loses cp-2 but not
        // cp-3, whose packets cross cp-1's bridge as cp-2's do.
        let node1 = lab.state.nodes[0].netns, cp3 = lab.state.members[2].netns
        func reaches(_ ns: String, _ ip: String) -> Bool {
            guard let fd = (try? inNamespace(ns) { TCP.connect(ip, 6443, timeout: 1) }) ?? nil else { return false }
            close(fd)
            return true
        }
        #expect(reaches(node1, "10.250.0.3"))
        _ = try await lab.inject(.partition("cp-2", "node-1"))
        #expect(!reaches(node1, "10.250.0.3") && reaches(node1, "10.250.0.4") && reaches(cp3, "10.250.0.3"))

        // heal: every member whole again, and leaders where they were or elsewhere.
        _ = try await lab.inject(.heal)
        let whole = try await eventually(tries: 100, every: .milliseconds(300), { try await lab.status() }, until: { !$0.contains("DOWN") })
        #expect(!whole.contains("DOWN"), "\(whole)")
        #expect(lab.state.faults == nil)
        #expect(reaches(node1, "10.250.0.3"), "the partition is lifted")
    }
}
