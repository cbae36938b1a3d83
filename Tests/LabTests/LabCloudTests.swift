import CRI
import Foundation
import HostOS
import KubeAPI
import LabServices
import NetLab
import NetnsKit
import Testing

/// The lab cloud as the issue checks it, in namespaces: the cloud controller manager initialises
/// the nodes and routes their pod ranges through the router; a LoadBalancer Service gets an
/// address of the pool within a second and answers the outside client; `externalTrafficPolicy:
/// Local` goes only to the node with the pod (health-checked) and keeps the client's address;
/// moving the pod moves the balancer's target; deleting the Service releases the balancer;
/// deleting a node's namespace removes its route and its Node.
@Suite("netlab's cloud", .serialized,
       .enabled(if: isRoot && ContainerdProcess.available && RegistryProcess.available, "needs root, containerd, runc and docker-registry"))
struct LabCloudTests {
    @Test func loadBalancersRoutesAndNodesFollowTheCluster() async throws {
        try await HeavyLabs.withLab(prefix: "k", tail: 800) { try await run(name: $0, bin: $1) }
    }

    /// `check` every 100 ms for about `seconds`, through the suite's shared probe loop.
    func eventually(_ seconds: Double, _ check: () async throws -> Bool) async throws -> Bool {
        try await LabTests.eventually(tries: Int(seconds * 10), every: .milliseconds(100), check, until: { $0 })
    }

    func run(name: String, bin: String) async throws {
        let lab = try await Cluster.up(name: name, nodes: 2, proxyMode: "iptables", binDir: bin, runtime: .containerd, progress: { _ in })
        try await lab.waitForProxies()
        // The nodes as the cloud describes them; a route per pod range on the router.
        let nodes = try await lab.must("GET", "/api/v1/nodes", nil)["items"]?.array ?? []
        #expect(nodes.map { $0[path: ["spec", "providerID"]]?.string ?? "" }.sorted() == ["netlab://\(name)/node-1", "netlab://\(name)/node-2"])
        #expect(nodes.allSatisfy { $0[path: ["metadata", "labels", "topology.kubernetes.io/region"]] == "netlab" && ($0[path: ["spec", "taints"]]?.array ?? []).isEmpty })
        let router = try #require(lab.state.router)
        let routes = try Sh.must(["ip", "-n", router, "route"])
        #expect(routes.contains("10.244.1.0/24 via 10.250.0.11") && routes.contains("10.244.2.0/24 via 10.250.0.12"), "\(routes)")

        // The demo's Service answers at its balancer from both pods.
        let r = try await lab.reach()
        #expect(r.loadBalancerIP?.hasPrefix(LabCloudNet.pool + ".") == true && r.loadBalancerPods.count == 2, "\(r.loadBalancerPods)")

        // eTP Local to the pod on node-1: an address within a second, node-2 found unhealthy,
        // every answer from node-1's pod with the client's own address.
        let created = Date()
        try await lab.must("POST", "/api/v1/namespaces/default/services", [
            "apiVersion": "v1", "kind": "Service", "metadata": ["name": "local"],
            "spec": ["type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": ["workload": "echo-1"], "ports": [["port": 8000, "targetPort": 8080]]]])
        let ip = try await lab.loadBalancerIP("local", timeout: 5)
        let took = Date().timeIntervalSince(created)
        #expect(took < 1, "the address came after \(took) s")
        let svc = try await lab.must("GET", "/api/v1/namespaces/default/services/local", nil)
        #expect(svc[path: ["status", "loadBalancer", "ingress"]] == [["ip": .string(ip), "ipMode": "VIP"]])
        #expect(svc[path: ["metadata", "finalizers"]] == ["service.kubernetes.io/load-balancer-cleanup"])
        func targets() -> [String: Bool] {
            let b = lab.cloudGet("/v1/loadbalancers")?["items"]?.array?.first { $0["ip"]?.string == ip }
            return Dictionary(uniqueKeysWithValues: (b?["targets"]?.array ?? []).map { ($0["instance"]?.string ?? "", $0["healthy"]?.bool ?? false) })
        }
        #expect(try await eventually(10) { targets() == ["node-1": true, "node-2": false] }, "\(targets())")
        var answers: [String] = []
        for _ in 0..<10 { answers.append(lab.clientGet(ip, 8000) ?? "no answer") }
        #expect(answers.allSatisfy { $0.hasPrefix("echo-1-") && $0.contains(" \(lab.state.clientAddress):") }, "\(answers)")

        // The pod moves to node-2: so does the balancer's healthy target.
        try await lab.must("PATCH", "/apis/apps/v1/namespaces/default/deployments/echo-1",
                           ["spec": ["template": ["spec": ["nodeSelector": ["kubernetes.io/hostname": "node-2"]]]]], contentType: "application/merge-patch+json")
        #expect(try await eventually(60) { targets() == ["node-1": false, "node-2": true] }, "\(targets())")
        #expect(try await eventually(10) { lab.clientGet(ip, 8000)?.hasPrefix("echo-1-") == true })

        // Deleted: the balancer and its rules go, then the Service.
        try await lab.must("DELETE", "/api/v1/namespaces/default/services/local", nil)
        #expect(try await eventually(10) { try await lab.api.request("GET", "/api/v1/namespaces/default/services/local").status == 404 })
        #expect(targets().isEmpty)
        #expect(!(try Sh.must(["ip", "netns", "exec", router, "nft", "list", "table", "ip", "netlab-cloud"])).contains(ip))

        // node-2 goes (its pods first, so that its containerd leaves nothing): its route
        // becomes a blackhole and goes, then its Node.
        try await lab.must("DELETE", "/apis/apps/v1/namespaces/default/deployments/echo-1", nil)
        try await lab.must("DELETE", "/apis/apps/v1/namespaces/default/deployments/echo-2", nil)
        let cri = try CRIClient(endpoint: "unix://\(LabPaths.dir(name))/nodes/node-2/containerd.sock")
        #expect(try await eventually(60) { try await cri.listPodSandbox(nil).isEmpty })
        cri.close()
        let node2 = try #require(lab.state.nodes.first { $0.name == "node-2" })
        for pid in Netns.pids(node2.netns) { kill(pid, SIGKILL) }
        try await Task.sleep(for: .milliseconds(200))
        _ = try Sh.must(["ip", "netns", "del", node2.netns])
        #expect(try await eventually(20) { !(try Sh.must(["ip", "-n", router, "route"])).contains("10.244.2.0/24") })
        #expect(try await eventually(120) { try await lab.api.request("GET", "/api/v1/nodes/node-2").status == 404 }, "the Node of a gone machine is deleted")
    }
}
