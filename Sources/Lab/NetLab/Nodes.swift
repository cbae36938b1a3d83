import ClusterPKI
import Foundation
import HostOS
import Images
import KubeAPI
import LabServices
import NetnsKit

/// The containerd runtime's lab: a registry in the control plane's namespace with the lab's
/// images, and in every node's namespace a containerd (its own root, state, socket and CNI
/// configuration directory, under the lab's directory) and `switchyard kubelet`. The workloads
/// are Deployments; the scheduler and the controllers embedded in the API server place them
/// and make their pods, the kubelets run them through CRI, containerd attaches them with our
/// CNI plugin.
extension Cluster {
    public static let registryPort = 5000

    static func nodeDir(lab: String, node: String) -> String { "\(LabPaths.dir(lab))/nodes/\(node)" }
    func nodeDir(_ node: LabState.Node) -> String { Self.nodeDir(lab: state.name, node: node.name) }
    /// Under the lab's directory: short enough for a unix socket (a 12-letter lab name, node-9).
    func containerdSocket(_ node: LabState.Node) -> String { "\(nodeDir(node))/containerd.sock" }

    /// A registry client that reaches the lab registry from the host (through the control
    /// plane's namespace).
    public func registryClient() throws -> RegistryClient {
        guard let registry = state.registry else { throw NetLabError("lab \(state.name) has no registry (its pods run as netlab's own processes)") }
        let ns = state.controlPlane
        return try RegistryClient(url: "http://\(registry)") { host, port in
            try inNamespace(ns) {
                guard let fd = TCP.connect(host, port, timeout: 5) else { throw NetLabError("cannot reach the lab registry at \(host):\(port) in \(ns)") }
                return fd
            }
        }
    }

    /// Debian's docker-registry on the underlay, the lab's images built here and pushed.
    func startRegistry() async throws {
        let address = "\(state.serverAddress):\(Self.registryPort)"
        let root = "\(dir)/registry"
        try FileManager.default.createDirectory(atPath: "\(root)/data", withIntermediateDirectories: true)
        let config = RegistryProcess.config(data: "\(root)/data", address: address)
        try Data(config.utf8).write(to: URL(fileURLWithPath: "\(root)/config.yml"))
        try spawn(state.controlPlane, [RegistryProcess.binary, "serve", "\(root)/config.yml"], log: "registry")
        state.registry = address
        try state.save()
        let client = try registryClient()
        var up = false
        for _ in 0..<100 where !up {
            up = await client.ping()
            if !up { try await Task.sleep(for: .milliseconds(100)) }
        }
        guard up else { throw NetLabError("the lab registry did not start; see \(dir)/logs/registry.log") }
        let names = try await LabImages.pushAll(to: client, echo: "\(state.binDir)/switchyard-echo", iperf3: true)
        progress("registry: \(address) in \(state.controlPlane), with \(names.joined(separator: ", ")) (built here)")
    }

    /// The Node objects with their pod ranges (node IPAM's part; the kubelets register into them).
    func createNodes() async throws {
        for node in state.nodes {
            _ = try await must("POST", "/api/v1/nodes", [
                "apiVersion": "v1", "kind": "Node",
                "metadata": ["name": .string(node.name), "labels": ["kubernetes.io/hostname": .string(node.name)]],
                // With a cloud, registered as a kubelet with --cloud-provider external registers:
                // the cloud-node controller initialises it and removes the taint.
                "spec": ["podCIDR": .string(node.podCIDR), "podCIDRs": [.string(node.podCIDR)],
                         "taints": state.router == nil ? [] : [Self.uninitializedTaint]],
            ], okIf: [409])
        }
    }

    /// A containerd and a kubelet in every node's namespace; returns once every Node is Ready.
    func startNodes(timeout: Double = 120) async throws {
        // containerd runs a plugin named `loopback` for every sandbox's lo.
        let loopback = "\(dir)/cni/bin/loopback"
        try? FileManager.default.removeItem(atPath: loopback)
        try FileManager.default.createSymbolicLink(atPath: loopback, withDestinationPath: "switchyard-cni")
        for node in state.nodes {
            let nd = nodeDir(node)
            let options = ContainerdProcess.Options(cniBinDir: "\(dir)/cni/bin", cniConfDir: "\(nd)/cni-conf", registry: state.registry, netns: node.netns)
            let config = try ContainerdProcess.prepare(dir: URL(fileURLWithPath: "\(nd)/containerd"), socket: containerdSocket(node), options)
            try spawn(node.netns, [ContainerdProcess.binary, "--config", config.path, "--log-level", "warn"], log: "containerd-\(node.name)", nsenter: true, keep: true)
        }
        for node in state.nodes {
            var ready = false
            for _ in 0..<200 where !ready {
                ready = FileManager.default.fileExists(atPath: containerdSocket(node))
                if !ready { try await Task.sleep(for: .milliseconds(50)) }
            }
            guard ready else { throw NetLabError("containerd on \(node.name) did not start; see \(dir)/logs/containerd-\(node.name).log") }
        }
        // Each kubelet joins as a kubeadm node's does: with a bootstrap token it asks for its
        // client certificate (system:node:NAME), which the controller manager approves and signs,
        // and renews it before it ends. Its API (:10250) serves only the API server's kubelet
        // client certificate and those the API server allows (TokenReview, SubjectAccessReview),
        // as a kubeadm node's.
        let bootstrap = try await bootstrapKubeconfig()
        let clientCA = try ClusterPKI.loadOrCreate(in: "\(dir)/server/pki").caCertFile
        for node in state.nodes {
            let nd = nodeDir(node)
            try spawn(node.netns, ["\(state.binDir)/switchyard", "kubelet", "--logging-format", "json", "--bootstrap-kubeconfig", bootstrap, "--kubeconfig", "\(nd)/kubelet.conf",
                                   "--rotate-certificates", "--hostname-override", node.name] + (state.router == nil ? [] : ["--cloud-provider", "external"]) + [
                                   "--client-ca-file", clientCA, "--anonymous-auth=false", "--authentication-token-webhook", "--authorization-mode", "Webhook",
                                   "--node-ip", node.address, "--container-runtime-endpoint", "unix://\(containerdSocket(node))",
                                   "--root-dir", "\(nd)/kubelet", "--pod-logs-dir", "\(nd)/pods", "--cni-conf-dir", "\(nd)/cni-conf"],
                      log: "kubelet-\(node.name)", nsenter: true, keep: true)
            progress("\(node.name): containerd (\(containerdSocket(node))) and switchyard kubelet (joining with a bootstrap token)")
        }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let items = try await must("GET", "/api/v1/nodes", nil)["items"]?.array ?? []
            let ready = Set(items.filter { $0[path: ["status", "conditions"]]?.array?.contains { $0["type"] == "Ready" && $0["status"] == "True" } == true }.map(\.name))
            // With a cloud: initialised by the cloud controller manager and their routes made.
            let initialised = Set(items.filter { n in !(n[path: ["spec", "taints"]]?.array ?? []).contains { $0["key"] == Self.uninitializedTaint["key"] }
                && (state.router == nil || n[path: ["status", "conditions"]]?.array?.contains { $0["type"] == "NetworkUnavailable" && $0["status"] == "False" } == true) }.map(\.name))
            if state.nodes.allSatisfy({ ready.contains($0.name) && initialised.contains($0.name) }) { return }
            guard Date() < deadline else {
                throw NetLabError("nodes not Ready (or not initialised by the cloud) within \(Int(timeout)) s: \(state.nodes.map(\.name).filter { !ready.contains($0) || !initialised.contains($0) }.joined(separator: ", ")); see \(dir)/logs/kubelet-*.log and cloud-controller-manager.log")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The echo container (HTTP on 8080, TCP and UDP echo on 9090), ready once it accepts.
    static func echoContainer() -> JSONValue {
        ["name": "echo", "image": "switchyard/echo:latest",
         "ports": [["name": "http", "containerPort": 8080], ["name": "tcp-echo", "containerPort": 9090], ["name": "udp-echo", "containerPort": 9090, "protocol": "UDP"]],
         "readinessProbe": ["tcpSocket": ["port": 9090], "periodSeconds": 1]]
    }

    /// A Deployment of one echo pod per node (on the first two), the first also serving iperf3
    /// and labelled for the `probe` Service; waits for the pods to be Ready.
    func deployWorkloads(timeout: Double = 180) async throws {
        let placed = Array(state.nodes.prefix(2))
        for (i, node) in placed.enumerated() {
            let name = "echo-\(i + 1)"
            var labels: JSONValue = ["app": "echo", "workload": .string(name)]
            var containers = [Self.echoContainer()]
            if i == 0 {
                labels["bench"] = "true"
                containers.append(["name": "iperf3", "image": "switchyard/iperf3:latest", "ports": [["name": "iperf", "containerPort": 5201]]])
            }
            _ = try await must("POST", "/apis/apps/v1/namespaces/default/deployments", [
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": .string(name), "labels": ["netlab": "true"]],
                "spec": ["replicas": 1, "selector": ["matchLabels": ["app": "echo", "workload": .string(name)]],
                         "template": ["metadata": ["labels": labels],
                                      "spec": ["nodeSelector": ["kubernetes.io/hostname": .string(node.name)], "terminationGracePeriodSeconds": 1,
                                               "containers": .array(containers)]]],
            ])
        }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let pods = try await readyPods(selector: "app=echo")
            if pods.count == placed.count {
                state.pods = pods
                try state.save()
                for p in pods { progress("pod \(p.name) on \(p.node): \(p.ip) (http :8080, tcp/udp echo :9090\(p.labels["bench"] == "true" ? ", iperf3 :5201" : ""))") }
                return
            }
            guard Date() < deadline else {
                throw NetLabError("the echo pods are not Ready within \(Int(timeout)) s; see `netlab kubectl describe pods` and \(dir)/logs/kubelet-*.log")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The pods matching `selector` that are Ready with an address, as the lab lists them.
    func readyPods(selector: String) async throws -> [LabState.Pod] {
        let items = try await must("GET", "/api/v1/namespaces/default/pods", nil, query: ["labelSelector": selector])["items"]?.array ?? []
        return items.compactMap { p -> LabState.Pod? in
            guard p[path: ["metadata", "deletionTimestamp"]] == nil,
                  p[path: ["status", "conditions"]]?.array?.contains(where: { $0["type"] == "Ready" && $0["status"] == "True" }) == true,
                  let ip = p[path: ["status", "podIP"]]?.string, let node = p[path: ["spec", "nodeName"]]?.string else { return nil }
            let labels = (p[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
            return LabState.Pod(name: p.name, node: node, netns: "", ip: ip, labels: labels)
        }.sorted { $0.name < $1.name }
    }

    /// A pod of the echo image on `node` through the scheduler (its node selector), Ready.
    func addRuntimePod(name: String, node: String, labels: [String: String], timeout: Double = 120) async throws {
        _ = try await must("POST", "/api/v1/namespaces/default/pods", [
            "apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })],
            "spec": ["nodeSelector": ["kubernetes.io/hostname": .string(node)], "terminationGracePeriodSeconds": 1, "containers": [Self.echoContainer()]],
        ])
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let pod = try await readyPods(selector: labels.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ",")).first(where: { $0.name == name }) {
                state.pods.append(pod)
                try state.save()
                progress("pod \(name) on \(node): \(pod.ip)")
                return
            }
            guard Date() < deadline else {
                _ = try? await must("DELETE", "/api/v1/namespaces/default/pods/\(name)", nil, okIf: [404])
                throw NetLabError("pod \(name) is not Ready within \(Int(timeout)) s; see \(dir)/logs/kubelet-\(node).log")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Deletes a pod and waits until its kubelet has finished it (the object is gone).
    func removeRuntimePod(_ name: String, timeout: Double = 60) async throws {
        _ = try await must("DELETE", "/api/v1/namespaces/default/pods/\(name)", nil, okIf: [404])
        let deadline = Date().addingTimeInterval(timeout)
        while try await api.request("GET", "/api/v1/namespaces/default/pods/\(name)").status != 404 {
            guard Date() < deadline else { throw NetLabError("pod \(name) was not finished within \(Int(timeout)) s") }
            try await Task.sleep(for: .milliseconds(200))
        }
        state.pods.removeAll { $0.name == name }
        try state.save()
    }

    /// The network namespace containerd made for `pod` (a `cni-…` name under /run/netns): the
    /// one whose eth0 holds the pod's address and whose sandbox was started by one of this lab's
    /// containerds (its shim's command line names the lab's socket): another lab, or a test's
    /// node, may have a pod at the same address.
    public func podNamespace(_ pod: LabState.Pod) -> String? {
        if !pod.netns.isEmpty { return pod.netns }
        let ours = LabPaths.dir(state.name) + "/nodes/"
        return Netns.list().filter { $0.hasPrefix("cni-") }.first { ns in
            let out = (try? Sh.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"]))?.out ?? ""
            guard out.contains(" \(pod.ip)/") else { return false }
            return Netns.pids(ns).contains { pid in
                guard let ppid = ProcStat(pid)?.ppid, let cmd = try? String(contentsOfFile: "/proc/\(ppid)/cmdline", encoding: .utf8) else { return false }
                return cmd.contains(ours)
            }
        }
    }

    /// For `down`: the kubelets stopped (they would start again what goes), then every node's
    /// containerd with all it ran (CRI first; what it leaves, by its shims and socket).
    static func stopRuntimes(lab name: String, netns: [String]) async {
        for ns in netns {
            for pid in Netns.pids(ns) {
                let comm = ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                if !comm.hasPrefix("containerd") { kill(pid, SIGKILL) }
            }
        }
        let nodes = "\(LabPaths.dir(name))/nodes"
        for node in ((try? FileManager.default.contentsOfDirectory(atPath: nodes)) ?? []).sorted() {
            let dir = "\(nodes)/\(node)"
            await ContainerdProcess.cleanUp(socket: "\(dir)/containerd.sock", dir: URL(fileURLWithPath: "\(dir)/containerd"))
        }
        ContainerdProcess.unmountAll(under: LabPaths.dir(name))
    }
}
