import CRI
import Foundation
import HostOS
import LabServices
import NetLab
import NetnsKit
import Testing

/// netlab as the issue has it: the pods are Deployments that the scheduler places, each node's
/// containerd runs them (images from the lab registry), our CNI plugin attaches them; the echo
/// Service answers through every mode; a pod added and deleted leaves nothing on its node; `down`
/// from the namespace names alone removes containerd, its pods, their namespaces and mounts.
@Suite("netlab on containerd", .serialized,
       .enabled(if: isRoot && ContainerdProcess.available && RegistryProcess.available, "needs root, containerd, runc and docker-registry"))
struct NetLabContainerdTests {
    @Test func deploymentsOnContainerdAnswerInEveryModeAndDownLeavesNothing() async throws {
        let bin = URL(fileURLWithPath: try switchyardBinary()).deletingLastPathComponent().path
        let hex = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let name = "c" + String(repeating: "0", count: 8 - hex.count) + hex
        await HeavyLabs.oneAtATime {
            do {
                try await run(name: name, bin: bin)
            } catch {
                let logs = (try? FileManager.default.contentsOfDirectory(atPath: "\(LabPaths.dir(name))/logs")) ?? []
                let tails = logs.sorted().map { "\($0): " + String(((try? String(contentsOfFile: "\(LabPaths.dir(name))/logs/\($0)", encoding: .utf8)) ?? "").suffix(800)) }
                try? await Cluster.down(name: name, progress: { _ in })
                Issue.record("\(error)\n\(tails.joined(separator: "\n"))")
            }
        }
    }

    func run(name: String, bin: String) async throws {
        let lab = try await Cluster.up(name: name, nodes: 2, proxyMode: "none", binDir: bin, runtime: .containerd, progress: { _ in })
        let pods = lab.state.pods
        #expect(pods.count == 2)
        #expect(pods.map(\.node).sorted() == ["node-1", "node-2"], "one echo Deployment per node: \(pods.map(\.node))")
        for p in pods {
            let node = try #require(lab.state.nodes.first { $0.name == p.node })
            #expect(p.ip.hasPrefix(String(node.podCIDR.dropLast(4))), "\(p.name) on \(p.node): \(p.ip) is not in \(node.podCIDR)")
            #expect(p.name.hasPrefix("echo-1-") || p.name.hasPrefix("echo-2-"), "a Deployment's pod: \(p.name)")
        }
        // Run by that node's containerd: its sandbox is there, under the pod's name.
        let dir = LabPaths.dir(name)
        let cri = try CRIClient(endpoint: "unix://\(dir)/nodes/node-1/containerd.sock")
        let sandboxes = try await cri.listPodSandbox(nil)
        cri.close()
        let first = try #require(pods.first { $0.node == "node-1" })
        #expect(sandboxes.map(\.metadata.name) == [first.name], "node-1's containerd: \(sandboxes.map(\.metadata.name))")

        // The registry's images, kubectl's view, a shell in the pod's namespace.
        let netlab = bin + "/switchyard-netlab"
        let images = try CommandRunner().run([netlab, "images", "--name", name], check: false)
        for image in ["switchyard/busybox:latest", "switchyard/echo:latest", "switchyard/iperf3:latest", "switchyard/pause:latest"] {
            #expect(images.stdout.contains(image + " "), "netlab images: \(images)")
        }
        let deployments = try CommandRunner().run([netlab, "kubectl", "--name", name, "get", "deployments", "-o",
                                                   "jsonpath={range .items[*]}{.metadata.name}={.status.readyReplicas} {end}"], check: false)
        #expect(deployments.stdout == "echo-1=1 echo-2=1 ", "\(deployments)")
        // Each kubelet joined with the bootstrap token: a client certificate asked for, approved, issued.
        let csrs = try CommandRunner().run([netlab, "kubectl", "--name", name, "get", "csr", "-o",
                                            "jsonpath={range .items[*]}{.spec.signerName} {.status.conditions[0].reason} {.status.certificate}{\"\\n\"}{end}"], check: false)
        let issued = csrs.stdout.split(separator: "\n").filter { $0.hasPrefix("kubernetes.io/kube-apiserver-client-kubelet AutoApproved LS0t") }
        #expect(issued.count == 2, "\(csrs)")
        // kubectl exec and logs go through the API server to the node's kubelet, whose API takes
        // only the server's kubelet client certificate (x509 against the cluster CA, then a
        // SubjectAccessReview).
        let viaServer = try CommandRunner().run([netlab, "kubectl", "--name", name, "exec", first.name, "--",
                                                 "/bin/switchyard-echo", "get", "http://127.0.0.1:8080/"], check: false)
        #expect(viaServer.status == 0 && viaServer.stdout.contains(first.name), "kubectl exec: \(viaServer)")
        let logs = try CommandRunner().run([netlab, "kubectl", "--name", name, "logs", first.name], check: false)
        #expect(logs.status == 0, "kubectl logs: \(logs)")
        let inPod = try CommandRunner().run([netlab, "exec", "--name", name, first.name, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"], check: false)
        #expect(inPod.stdout.contains(" \(first.ip)/24 "), "netlab exec \(first.name): \(inPod)")
        let podNamespaces = pods.compactMap { lab.podNamespace($0) }
        #expect(podNamespaces.count == 2 && podNamespaces.allSatisfy { $0.hasPrefix("cni-") }, "\(podNamespaces)")

        let names = Set(pods.map(\.name))
        for mode in Comparison.availableModes {
            try await lab.startProxies(mode: mode)
            try await lab.waitForProxies()
            let r = try await lab.reach()
            #expect(r.httpPods == names, "\(mode): both pods through the ClusterIP")
            #expect(names.contains(r.udpReply ?? ""), "\(mode): UDP through the ClusterIP")
            #expect(names.contains(r.nodePortPod ?? ""), "\(mode): the NodePort on node-1")
            #expect(r.loadBalancerPods == names, "\(mode): both pods through the lab cloud's balancer \(r.loadBalancerIP ?? "(none)")")
            #expect(r.ingressPods == names, "\(mode): both pods through the Ingress at \(r.ingressIP ?? "(none)")")
        }

        // A pod joins through the scheduler and goes: its node keeps nothing of it.
        try await lab.addPod(name: "echo-extra", node: "node-2", labels: ["app": "echo"])
        let extra = try #require(lab.state.pods.first { $0.name == "echo-extra" })
        #expect(extra.node == "node-2" && extra.ip.hasPrefix("10.244.2."), "\(extra)")
        let r = try await lab.reach()
        #expect(r.httpPods.contains("echo-extra"), "the new pod answers through the Service: \(r.httpPods)")
        let extraNamespace = try #require(lab.podNamespace(extra))
        let ipam = "\(dir)/nodes/node-2/kubelet/cni/networks/switchyard"
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: ipam)) ?? []).contains(extra.ip), "host-local holds \(extra.ip) in \(ipam)")
        try await lab.removePod("echo-extra")
        let cri2 = try CRIClient(endpoint: "unix://\(dir)/nodes/node-2/containerd.sock")
        let left = try await cri2.listPodSandbox(nil).map(\.metadata.name)
        cri2.close()
        #expect(!left.contains("echo-extra"), "node-2's containerd still has \(left)")
        #expect(!Netns.list().contains(extraNamespace), "the pod's namespace is gone")
        let reserved = (try? FileManager.default.contentsOfDirectory(atPath: ipam)) ?? []
        #expect(!reserved.contains(extra.ip), "the pod's address is released: \(reserved)")
        try lab.stopProxies()

        // Down from the names alone: containerd, its shims, the pods, their namespaces, the mounts.
        var pids: Set<Int32> = []
        for ns in lab.state.namespaces { pids.formUnion(Netns.pids(ns)) }
        for ns in podNamespaces { pids.formUnion(Netns.pids(ns)) }
        #expect(pids.count > 8)
        try FileManager.default.removeItem(atPath: LabPaths.state(name))
        try await Cluster.down(name: name, progress: { _ in })
        #expect(Cluster.leftovers(name).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir))
        #expect(Set(Netns.list()).isDisjoint(with: podNamespaces), "containerd's pod namespaces are gone")
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        #expect(!mounts.contains(dir + "/"), "nothing stays mounted under \(dir)")
        usleep(200_000)
        #expect(pids.filter(Cluster.isAlive).isEmpty, "every process of the lab is gone: \(pids.filter(Cluster.isAlive))")
    }
}
