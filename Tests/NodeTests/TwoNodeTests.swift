import APIServer
import ControllerKit
import Foundation
import HostOS
import Images
import KubeAPI
import KubeClient
import LabServices
import Testing

/// The issue's check on two nodes: `switchyard server` on the host, two node namespaces joined
/// by an underlay link, each with its containerd and `switchyard agent`; a Deployment of 4
/// `switchyard/echo` replicas spreads over both, each pod's IP from its node's podCIDR; a client
/// pod reaches a pod on the other node directly and every replica through the Service, in every
/// proxy mode this kernel runs (IPVS runs in the guest); a mode change restarts the agents, whose
/// kubelets adopt the running pods without restarting them.
@Suite("two nodes on containerd", .serialized, .enabled(if: TestNode.available, "needs root, containerd, runc, docker-registry and busybox-static"))
struct TwoNodeTests {
    static let modes = ["iptables", "nftables", "userspace"]

    @Test func aDeploymentSpreadsOverTwoNodesAndAnswersInEveryMode() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sy-two-\(UUID().uuidString.prefix(8))")
        let registry = try RegistryProcess(dir: work.appendingPathComponent("registry"), host: "0.0.0.0")
        var nodes: [RuntimeNode] = []
        var processes: [Running] = []
        defer { registry.stop(); try? FileManager.default.removeItem(at: work) }
        do {
            _ = try await LabImages.pushAll(to: try RegistryClient(url: "http://127.0.0.1:\(registry.port)"), echo: try builtBinary("switchyard-echo"))
            let plugin = try builtBinary("switchyard-cni")
            for _ in 0..<2 { nodes.append(try await RuntimeNode.make(registryPort: registry.port, pluginBinary: plugin, cniConfig: false)) }
            // The underlay between the nodes: a veth, and each node's pod range routed over it.
            let a = CommandRunner(netns: nodes[0].netns), b = CommandRunner(netns: nodes[1].netns)
            let link = "syu\(UUID().uuidString.prefix(6).lowercased())"
            let subnet = "10.79.\(Int.random(in: 1...250))"
            try CommandRunner().run(["ip", "link", "add", link + "a", "netns", nodes[0].netns, "type", "veth", "peer", "name", link + "b", "netns", nodes[1].netns])
            try a.run(["ip", "addr", "add", "\(subnet).1/30", "dev", link + "a"]); try a.run(["ip", "link", "set", link + "a", "up"])
            try b.run(["ip", "addr", "add", "\(subnet).2/30", "dev", link + "b"]); try b.run(["ip", "link", "set", link + "b", "up"])
            try a.run(["ip", "route", "add", nodes[1].podCIDR, "via", "\(subnet).2"])
            try b.run(["ip", "route", "add", nodes[0].podCIDR, "via", "\(subnet).1"])

            let bin = try builtBinary("switchyard")
            let server = try Running([bin, "server", "--data-dir", work.appendingPathComponent("server").path, "--bind-address", "0.0.0.0",
                                      "--secure-port", "0", "--log-level", "warning"], log: work.appendingPathComponent("server.log"))
            processes.append(server)
            var config: Kubeconfig?
            for _ in 0..<400 where config == nil {
                config = try? Kubeconfig.load(path: work.appendingPathComponent("server/kubeconfig").path)
                if config == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            let kc = try #require(config, "the server did not start: \(server.output)")
            let port = try #require(URL(string: kc.server)?.port)
            // HTTPS with the admin's certificate, as the server wrote it.
            let api = API(KubeClient(config: kc), fieldManager: "test")
            // Each node reaches the server at the host's end of its own link (an address of the
            // host's, so one of the serving certificate's).
            var kubeconfigs: [String] = []
            let written = try String(contentsOfFile: work.appendingPathComponent("server/kubeconfig").path, encoding: .utf8)
            for (i, n) in nodes.enumerated() {
                let path = work.appendingPathComponent("node-\(i).kubeconfig").path
                try written.replacingOccurrences(of: kc.server, with: "https://\(n.hostIP):\(port)").write(toFile: path, atomically: true, encoding: .utf8)
                kubeconfigs.append(path)
            }
            func startAgents(_ mode: String) throws {
                for (i, n) in nodes.enumerated() {
                    processes.append(try Running(["nsenter", "--net=/run/netns/\(n.netns)", bin, "agent", "--kubeconfig", kubeconfigs[i],
                                                  "--hostname-override", "node-\(i)", "--node-ip", n.nodeIP, "--container-runtime-endpoint", n.containerd.endpoint,
                                                  "--root-dir", n.dir.appendingPathComponent("kubelet").path, "--pod-logs-dir", n.dir.appendingPathComponent("pods").path,
                                                  "--cni-conf-dir", n.cniConfDir, "--proxy-mode", mode, "--cluster-cidr", "10.77.0.0/16",
                                                  "--healthz-bind-address", "", "--metrics-bind-address", ""],
                                                 log: work.appendingPathComponent("agent-\(i)-\(mode).log")))
                }
            }
            try startAgents(Self.modes[0])
            // Node IPAM's part: each node's range (the server allocates none by default).
            for (i, n) in nodes.enumerated() {
                _ = try await api.eventually(60) { (try? await api.get("/api/v1/nodes/node-\(i)")) != nil }
                _ = try await api.mergePatch("/api/v1/nodes/node-\(i)", ["spec": ["podCIDR": .string(n.podCIDR), "podCIDRs": [.string(n.podCIDR)]]])
            }
            let ready = try await api.eventually(120) {
                let items = try await api.list("/api/v1/nodes")["items"]?.array ?? []
                return items.count == 2 && items.allSatisfy { $0[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True" }
            }
            #expect(ready, "the nodes are not Ready: \(processes.map { $0.output.suffix(1500) })")

            _ = try await api.create("/apis/apps/v1/namespaces/default/deployments", [
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "echo"],
                "spec": ["replicas": 4, "selector": ["matchLabels": ["app": "echo"]],
                         "template": ["metadata": ["labels": ["app": "echo"]],
                                      "spec": ["terminationGracePeriodSeconds": 1,
                                               "topologySpreadConstraints": [["maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                                               "whenUnsatisfiable": "DoNotSchedule", "labelSelector": ["matchLabels": ["app": "echo"]]]],
                                               "containers": [["name": "echo", "image": "switchyard/echo:latest",
                                                               "readinessProbe": ["httpGet": ["path": "/", "port": 8080], "periodSeconds": 1]]]]]]])
            let service = try await api.create("/api/v1/namespaces/default/services", [
                "apiVersion": "v1", "kind": "Service", "metadata": ["name": "echo"],
                "spec": ["selector": ["app": "echo"], "ports": [["port": 80, "targetPort": 8080]]]])
            let clusterIP = service[path: ["spec", "clusterIP"]]?.string ?? ""
            // A client pod on node-0, to reach the others from.
            _ = try await api.create("/api/v1/namespaces/default/pods", [
                "apiVersion": "v1", "kind": "Pod", "metadata": ["name": "client"],
                "spec": ["nodeName": "node-0", "terminationGracePeriodSeconds": 0,
                         "containers": [["name": "client", "image": "switchyard/echo:latest", "args": ["--http", "0", "--echo", "0", "--udp", "0"]]]]])
            var echoes: [JSONValue] = []
            let running = try await api.eventually(180) {
                echoes = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=echo"])["items"]?.array ?? []
                let client = try await api.get("/api/v1/namespaces/default/pods/client")
                return echoes.count == 4 && client[path: ["status", "phase"]] == "Running"
                    && echoes.allSatisfy { $0[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True" }
            }
            #expect(running, "the pods are not Ready: \(processes.map { $0.output.suffix(1500) })")
            // Spread over both nodes, each IP from its node's range.
            var byNode: [String: [String]] = [:]
            for p in echoes {
                let node = p[path: ["spec", "nodeName"]]?.string ?? ""
                let ip = p[path: ["status", "podIP"]]?.string ?? ""
                byNode[node, default: []].append(p.name)
                let cidr = nodes[node == "node-0" ? 0 : 1].podCIDR
                #expect(ip.hasPrefix(String(cidr.dropLast(4))), "\(p.name) on \(node): \(ip) is not in \(cidr)")
            }
            #expect(byNode["node-0"]?.count == 2 && byNode["node-1"]?.count == 2, "\(byNode)")
            let names = Set(echoes.map(\.name))
            let restarts = echoes.map { $0[path: ["status", "containerStatuses"]]?.array?.first?["restartCount"] ?? 0 }
            let clientContainer = try #require(try await nodes[0].cri.listContainers(nil).first { $0.labels["io.kubernetes.pod.name"] == "client" }).id

            // Pod to pod across nodes, then every replica through the Service, in each mode.
            let remote = try #require(echoes.first { $0[path: ["spec", "nodeName"]] == "node-1" })
            let remoteIP = remote[path: ["status", "podIP"]]?.string ?? ""
            for (round, mode) in Self.modes.enumerated() {
                if round > 0 {
                    for p in processes.suffix(2) { p.stop() }
                    try startAgents(mode)
                }
                let direct = try await nodes[0].cri.execSync(clientContainer, cmd: ["/bin/switchyard-echo", "get", "http://\(remoteIP):8080/"], timeout: 10)
                let directText = String(decoding: direct.stdout, as: UTF8.self)
                if !directText.hasPrefix(remote.name + " ") {
                    let fromNode = try a.run(["curl", "-s", "-m", "2", "http://\(remoteIP):8080/"], check: false)
                    let routes = try a.run(["ip", "route"], check: false).stdout
                    Issue.record("\(mode): pod to pod across nodes: '\(directText)' code \(direct.exitCode) err \(String(decoding: direct.stderr, as: UTF8.self)); from node-0: \(fromNode); routes: \(routes)")
                }
                var seen = Set<String>()
                for _ in 0..<200 where seen != names {
                    let r = try await nodes[0].cri.execSync(clientContainer, cmd: ["/bin/switchyard-echo", "get", "http://\(clusterIP)/"], timeout: 10)
                    if let name = String(decoding: r.stdout, as: UTF8.self).split(separator: " ").first { seen.insert(String(name)) }
                    if seen != names { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(seen == names, "\(mode): through \(clusterIP) from the client pod: \(seen.sorted()) of \(names.sorted())\n\(processes.suffix(2).map { $0.output.suffix(1500) })")
            }
            // The agents restarted twice; their kubelets adopted the pods: none restarted.
            let after = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=echo"])["items"]?.array ?? []
            #expect(Set(after.map(\.name)) == names)
            #expect(after.map { $0[path: ["status", "containerStatuses"]]?.array?.first?["restartCount"] ?? 0 } == restarts)

            _ = try await api.delete("/apis/apps/v1/namespaces/default/deployments/echo")
            _ = try await api.delete("/api/v1/namespaces/default/pods/client")
            let emptied = try await api.eventually(90) {
                let left0 = try await nodes[0].cri.listPodSandbox(nil), left1 = try await nodes[1].cri.listPodSandbox(nil)
                return left0.isEmpty && left1.isEmpty
            }
            #expect(emptied)
        } catch {
            Issue.record("\(error)\n\(processes.map { $0.output.suffix(2000) }.joined(separator: "\n"))")
        }
        for p in processes.reversed() { p.stop() }
        for n in nodes { await n.close() }
    }
}
