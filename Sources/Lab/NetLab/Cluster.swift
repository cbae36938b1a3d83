import CNI
import CHost
import ClusterPKI
import Foundation
import Images
import LabServices
import ProxyModes
import KubeAPI
import KubeClient
import NetnsKit

/// A cluster made of network namespaces: a control-plane namespace that holds the underlay
/// bridge and the API server, N nodes on that bridge (each with a pod bridge and pod CIDR,
/// pods attached by our CNI plugin, routes to the other nodes' pod CIDRs), and a client
/// outside the cluster. Every process it starts runs inside one of its namespaces, so
/// deleting the namespaces' processes and the namespaces removes all of it.
public final class Cluster: @unchecked Sendable {
    public internal(set) var state: LabState
    public let api: KubeClient
    var progress: @Sendable (String) -> Void

    public static let underlay = "10.250.0"
    public static let clusterCIDR = "10.244.0.0/16"
    public static let serviceCIDR = "10.96.0.0/12"
    /// The proxy configurations a node can run: every registered mode's variants.
    public static let modes = ProxyModes.variants.map(\.name)

    init(state: LabState, progress: @escaping @Sendable (String) -> Void) {
        self.state = state
        self.progress = progress
        // The address is ours and well-formed (http://127.0.0.1:8080, the insecure port inside
        // the control plane's namespace).
        var client = try! KubeClient(url: state.localURL)
        // With several API servers, the first that answers on its member's loopback.
        let namespaces = state.members.map(\.netns)
        client.dial = { (host: String, port: Int) throws -> Int32 in
            for ns in namespaces {
                if let fd = try inNamespace(ns, { TCP.connect(host, port, timeout: namespaces.count > 1 ? 1 : 5) }) { return fd }
            }
            throw NetLabError("cannot reach the API server at \(host):\(port) in \(namespaces.joined(separator: ", "))")
        }
        api = client
    }

    public var dir: String { LabPaths.dir(state.name) }
    /// The admin's kubeconfig: the one the server writes, or with several servers, netlab's at their balancer.
    public var kubeconfig: String { state.controlPlanes == nil ? "\(dir)/server/kubeconfig" : "\(dir)/server/admin.kubeconfig" }

    /// A kubeconfig for one component with its own identity: a client certificate of the
    /// cluster CA the server made (`DIR/server/pki`) for `commonName` in `organizations`, as
    /// kubeadm writes kubelet.conf, and the admin kubeconfig's server and CA.
    func componentKubeconfig(_ name: String, commonName: String, organizations: [String] = [], server: String? = nil) throws -> String {
        let pki = try ClusterPKI.loadOrCreate(in: "\(dir)/server/pki")
        let pair = try pki.clientCertificate(name: name, commonName: commonName, organizations: organizations)
        let b64 = { (s: String) in Data(s.utf8).base64EncodedString() }
        return try writeKubeconfig("\(name).kubeconfig", ca: pki.caPEM, user: commonName, server: server,
                                   credentials: ["client-certificate-data: \(b64(pair.cert))", "client-key-data: \(b64(pair.key))"])
    }

    /// `DIR/server/FILE`, a kubeconfig (mode 0600) for the lab's server trusting `ca`, as
    /// `user` with its `credentials` (the user's fields, one per line).
    func writeKubeconfig(_ file: String, ca: String, user: String, server: String? = nil, credentials: [String]) throws -> String {
        let path = "\(dir)/server/\(file)"
        let text = """
            apiVersion: v1
            kind: Config
            clusters:
            - name: netlab
              cluster:
                server: \(server ?? state.kubeconfigURL)
                certificate-authority-data: \(Data(ca.utf8).base64EncodedString())
            contexts:
            - name: netlab
              context:
                cluster: netlab
                user: \(user)
            current-context: netlab
            users:
            - name: \(user)
              user:

            """ + credentials.map { "    \($0)\n" }.joined()
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw NetLabError("cannot write \(path)")
        }
        return path
    }

    /// The lab `name` as its state file describes it, or nil when there is none.
    public static func open(_ name: String, progress: @escaping @Sendable (String) -> Void = { _ in }) throws -> Cluster? {
        try LabPaths.validate(name)
        return try LabState.load(name).map { Cluster(state: $0, progress: progress) }
    }

    // MARK: up

    /// Builds the lab (or finds it already up), deploys the workloads, and starts the proxies
    /// in `proxyMode` ("none" for none). Anything that fails half-way is taken down again.
    public static func up(name: String, nodes: Int, proxyMode: String, binDir: String, fakeNodes: Int = 0, runtime: LabState.Runtime = .containerd,
                          controlPlanes: Int = 1, progress: @escaping @Sendable (String) -> Void) async throws -> Cluster {
        try LabPaths.validate(name)
        guard (1...9).contains(nodes) else { throw NetLabError("--nodes must be between 1 and 9") }
        guard [1, 3, 5].contains(controlPlanes) else { throw NetLabError("--control-plane must be 1, 3 or 5 (an etcd cluster keeps a majority of an odd number)") }
        if controlPlanes > 1 {
            guard runtime == .containerd else { throw NetLabError("--control-plane \(controlPlanes) needs the containerd runtime: the lab cloud's balancer fronts the API servers") }
            guard EtcdProcess.available else { throw NetLabError("--control-plane \(controlPlanes) needs etcd (\(EtcdProcess.binary)): run scripts/setup.sh") }
        }
        guard proxyMode == "none" || modes.contains(proxyMode) else {
            throw NetLabError("unknown proxy mode \(proxyMode): one of none, \(modes.joined(separator: ", "))")
        }
        guard isRoot else { throw NetLabError("netlab needs root: it makes network namespaces") }
        let binaries = ["switchyard", "switchyard-cni", "switchyard-netlab"] + (runtime == .containerd ? ["switchyard-echo"] : [])
        for bin in binaries where !FileManager.default.isExecutableFile(atPath: "\(binDir)/\(bin)") {
            throw NetLabError("\(binDir)/\(bin) is missing: build it first (swift build)")
        }
        if runtime == .containerd {
            let needed = [ContainerdProcess.binary, "/usr/sbin/runc", RegistryProcess.binary, LabImages.busyboxPath, "/usr/bin/iperf3", nginx]
            let missing = needed.filter { !FileManager.default.isExecutableFile(atPath: $0) }
            guard missing.isEmpty else {
                throw NetLabError("the containerd runtime needs \(missing.joined(separator: ", ")): run scripts/setup.sh (or use --runtime netns)")
            }
        }
        if let lab = try open(name, progress: progress) {
            if lab.isHealthy(), lab.state.nodes.count == nodes, lab.state.podRuntime == runtime, lab.state.members.count == controlPlanes {
                progress("lab \(name) is already up (\(lab.state.nodes.count) nodes)")
                if lab.state.proxyMode != proxyMode { try await lab.startProxies(mode: proxyMode) }
                return lab
            }
            progress("lab \(name) is there but not whole (or not as asked): taking it down first")
            try await down(name: name, progress: progress)
        } else if !leftovers(name).isEmpty {
            try await down(name: name, progress: progress)
        }
        let p = LabPaths.prefix(name)
        let state = LabState(
            name: name, controlPlane: p + "cp", client: p + "c", serverAddress: "\(underlay).1", serverPort: 6443,
            nodes: (1...nodes).map { i in
                LabState.Node(name: "node-\(i)", netns: "\(p)n\(i)", address: "\(underlay).\(10 + i)", podCIDR: "10.244.\(i).0/24")
            },
            pods: [], proxyMode: nil, binDir: binDir, runtime: runtime)
        var withCloud = state
        if runtime == .containerd { withCloud.router = p + "r" }
        if controlPlanes > 1 {
            withCloud.controlPlanes = controlPlaneMembers(controlPlanes, prefix: p)
            withCloud.apiAddress = LabCloudNet.apiServerAddress
        }
        let lab = Cluster(state: withCloud, progress: progress)
        do {
            try await lab.build()
            switch runtime {
            case .containerd:
                try await lab.startRegistry()
                try await lab.createNodes()
                try await lab.startCloud()
                try await lab.startNodes()
                try await lab.deployWorkloads()
                try await lab.createServices()
                try await lab.startIngress()
                if fakeNodes > 0 { try lab.startStandIn(fakeNodes: fakeNodes, heartbeats: false) }
            case .netns:
                try await lab.deploy()
                try lab.startStandIn(fakeNodes: fakeNodes, heartbeats: true)
            }
            if proxyMode != "none" { try await lab.startProxies(mode: proxyMode) }
        } catch {
            progress("up failed (\(error)); removing what was made")
            try? await down(name: name, progress: { _ in })
            throw error
        }
        return lab
    }

    func build() async throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: dir)
        try fm.createDirectory(atPath: "\(dir)/logs", withIntermediateDirectories: true)
        try state.save()   // before the first namespace: `down` can always find what follows
        let cp = state.controlPlane
        progress("underlay: bridge ul0 \(Self.underlay).0/24 in \(cp); client \(state.client)")
        for ns in state.namespaces {
            try Sh.must(["ip", "netns", "add", ns])
            try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        }
        try Sh.must(["ip", "-n", cp, "link", "add", "ul0", "type", "bridge"])
        try Sh.must(["ip", "-n", cp, "addr", "add", "\(state.serverAddress)/24", "dev", "ul0"])
        try Sh.must(["ip", "-n", cp, "link", "set", "ul0", "up"])
        // The control plane does not forward; it answers every stray packet (a ClusterIP no
        // proxy handles yet) with an unreachable at once rather than rate-limited.
        try Sh.must(["ip", "netns", "exec", cp, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
        func attach(_ ns: String, _ port: String, _ address: String) throws {
            try Sh.must(["ip", "-n", cp, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            try Sh.must(["ip", "-n", cp, "link", "set", port, "master", "ul0", "up"])
            try Sh.must(["ip", "-n", ns, "addr", "add", "\(address)/24", "dev", "eth0"])
            try Sh.must(["ip", "-n", ns, "link", "set", "eth0", "up"])
        }
        for m in state.members.dropFirst() {
            progress("\(m.name): \(m.netns), \(m.address) on the underlay")
            try attach(m.netns, m.name.replacingOccurrences(of: "-", with: ""), m.address)
        }
        if state.controlPlanes != nil {
            // The API servers' balancer is the cloud's, behind the router.
            for m in state.members { try Sh.must(["ip", "-n", m.netns, "route", "add", "\(LabCloudNet.pool).0/24", "via", LabCloudNet.routerAddress]) }
        }
        let first = state.nodes[0].address
        if let router = state.router {
            // The cloud's router: on the underlay, and the client's gateway on a network of its
            // own. The client reaches Services through the first node (traffic from outside a
            // cluster enters through a node), pods by the routes the route controller makes.
            progress("cloud: router \(router) (\(LabCloudNet.routerAddress) on the underlay), client behind it at \(state.clientAddress)")
            try attach(router, "router", LabCloudNet.routerAddress)
            try Sh.must(["ip", "-n", router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", state.client])
            try Sh.must(["ip", "-n", router, "addr", "add", "\(LabCloudNet.outside).1/24", "dev", "eth1"])
            try Sh.must(["ip", "-n", router, "link", "set", "eth1", "up"])
            try Sh.must(["ip", "-n", state.client, "addr", "add", "\(state.clientAddress)/24", "dev", "eth0"])
            try Sh.must(["ip", "-n", state.client, "link", "set", "eth0", "up"])
            try Sh.must(["ip", "-n", state.client, "route", "add", "default", "via", "\(LabCloudNet.outside).1"])
            try Sh.must(["ip", "-n", router, "route", "add", Self.serviceCIDR, "via", first])
        } else {
            try attach(state.client, "client", state.clientAddress)
            // The client reaches Services and pods through the first node, as traffic from
            // outside a cluster enters through a node.
            try Sh.must(["ip", "-n", state.client, "route", "add", Self.serviceCIDR, "via", first])
            try Sh.must(["ip", "-n", state.client, "route", "add", Self.clusterCIDR, "via", first])
        }
        for (i, node) in state.nodes.enumerated() {
            progress("\(node.name): \(node.netns), \(node.address) on the underlay, pods in \(node.podCIDR)")
            try attach(node.netns, "n\(i + 1)", node.address)
            if state.router != nil {
                // Other nodes' pods and the outside through the router (its routes: the cloud's).
                try Sh.must(["ip", "-n", node.netns, "route", "add", "default", "via", LabCloudNet.routerAddress])
            } else {
                try Sh.must(["ip", "-n", node.netns, "route", "add", "default", "via", state.serverAddress])
                for other in state.nodes where other.name != node.name {
                    try Sh.must(["ip", "-n", node.netns, "route", "add", other.podCIDR, "via", other.address])
                }
            }
            try Sh.must(["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                         "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 60999"])
        }
        try Sh.must(["ip", "netns", "exec", state.client, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 60999"])
        // The CNI plugins, and a network configuration per node.
        try CNIInstaller(binary: "\(state.binDir)/switchyard-cni", binDir: "\(dir)/cni/bin").install()
        for node in state.nodes {
            let conf: [String: Any] = [
                "cniVersion": "1.0.0", "name": "netlab", "type": "switchyard-bridge", "bridge": "cbr0",
                "isGateway": true, "hairpinMode": true,
                "ipam": ["type": "switchyard-host-local", "ranges": [[["subnet": node.podCIDR]]],
                         "routes": [["dst": "0.0.0.0/0"]], "dataDir": "\(dir)/ipam/\(node.name)"],
            ]
            try JSONSerialization.data(withJSONObject: conf, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(dir)/cni/\(node.name).conf"))
        }
        if state.controlPlanes != nil {
            _ = try ClusterPKI.loadOrCreate(in: "\(dir)/server/pki")
            try await startEtcdCluster()
            try await startAPIServers()
            try writeAdminKubeconfig()
            try startElectedComponents()
            return
        }
        // The API server.
        progress("control plane: switchyard server on \(state.kubeconfigURL) (embedded SQLite store in \(dir)/server)")
        // HTTPS on the underlay with the cluster CA it makes (kubelets, proxies and kubectl use
        // the admin kubeconfig it writes), plain HTTP on its namespace's loopback for netlab.
        // Authorization as kubeadm sets it up: each kubelet is system:node:NAME (the Node
        // authorizer, NodeRestriction), each proxy system:kube-proxy (RBAC's system:node-proxier),
        // each controller its own service account bound to its system:controller:NAME role.
        try spawn(cp, ["\(state.binDir)/switchyard", "server", "--data-dir", "\(dir)/server", "--bind-address", state.serverAddress] + (try auditFlags(server: "\(dir)/server")) + [
                       "--secure-port", String(state.serverPort), "--port", String(LabState.insecurePort),
                       "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
                       "--enable-bootstrap-token-auth", "--use-service-account-credentials"], log: "server", keep: true)
        for _ in 0..<200 {
            if FileManager.default.fileExists(atPath: kubeconfig) { return }
            usleep(50_000)
        }
        throw NetLabError("switchyard server did not start; see \(dir)/logs/server.log")
    }

    /// An API server's audit log (`DIR/audit.log`) and policy, and its log lines as JSON: what
    /// `netlab trace` reads.
    func auditFlags(server dir: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let policy = "\(dir)/audit-policy.yaml"
        try Data(LabAuditPolicy.metadataWrites.utf8).write(to: URL(fileURLWithPath: policy))
        return ["--audit-policy-file", policy, "--audit-log-path", "\(dir)/audit.log", "--logging-format", "json"]
    }

    /// The kubelet's part for the lab's nodes until they run kubelets: their Leases renewed
    /// (the node lifecycle controller sees them alive), and `fakeNodes` kwok-style nodes beside
    /// them for the scheduler and the controllers to work at scale.
    func startStandIn(fakeNodes: Int, heartbeats: Bool) throws {
        if fakeNodes > 0 { progress("fake nodes: \(fakeNodes) kwok-style nodes (fake-node-0…), their pods set running, no namespaces") }
        try spawn(state.controlPlane, ["\(state.binDir)/switchyard-netlab", "stand-in", "--kubeconfig", kubeconfig,
                                       "--nodes", heartbeats ? state.nodes.map(\.name).joined(separator: ",") : "", "--fake-nodes", String(fakeNodes)], log: "stand-in")
    }

    /// Starts `args` detached inside `ns` (it outlives netlab), its output in logs/`log`.log.
    /// It is init's child, not netlab's (nothing lingers as a zombie of a long-running netlab)
    /// and inherits no descriptor of ours. With `nsenter`, only the network namespace is
    /// entered: `ip netns exec` also mounts the namespace's sysfs over /sys, which hides the
    /// cgroup filesystem from containerd, runc and the kubelet.
    ///
    /// With `hostname`, it runs in a UTS namespace of its own with that hostname (a member's
    /// processes name their member, as on a machine of its own). With `keep`, the lab's state
    /// records it, so `fault heal` can start it again.
    func spawn(_ ns: String, _ args: [String], log: String, nsenter: Bool = false, hostname: String? = nil, keep: Bool = false) throws {
        guard let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first(where: FileManager.default.isExecutableFile) else {
            throw NetLabError("the ip command (iproute2) is not installed")
        }
        let named = hostname.map { ["/usr/bin/unshare", "--uts", "/bin/sh", "-c", "hostname \"$0\" && exec \"$@\"", $0] + args } ?? args
        let argv = nsenter ? ["/usr/bin/nsenter", "--net=/run/netns/\(ns)"] + named : [ip, "netns", "exec", ns] + named
        try spawnArgv(ns, argv, log: log)
        if keep {
            var c = state.components ?? [:]
            c[log] = LabState.Component(netns: ns, command: args, argv: argv, log: log)
            state.components = c
            try state.save()
        }
    }

    /// Starts `argv` (already wrapped to enter `ns`) detached, its output in logs/`log`.log.
    func spawnArgv(_ ns: String, _ argv: [String], log: String) throws {
        let path = "\(dir)/logs/\(log).log"
        try? FileManager.default.removeItem(atPath: path)
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        let pid = ch_spawn_detached(&cargs, path)
        guard pid > 0 else { throw NetLabError("starting \(argv.joined(separator: " ")) in \(ns): errno \(-pid)") }
    }

    // MARK: workloads

    /// The Node objects, two echo pods (one per node; the first also serves iperf3) and the
    /// Services `echo` (both pods) and `probe` (the first node's pod only, for measurements;
    /// named to sort after compare's `fill-…` Services, so in the iptables mode its rules come
    /// last in KUBE-SERVICES, where a linear chain walk costs the most).
    func deploy() async throws {
        try await createNodes()
        for node in state.nodes {
            _ = try await must("PATCH", "/api/v1/nodes/\(node.name)/status", [
                "status": ["addresses": [["type": "InternalIP", "address": .string(node.address)], ["type": "Hostname", "address": .string(node.name)]],
                           "conditions": [["type": "Ready", "status": "True"]]],
            ], contentType: "application/merge-patch+json")
        }
        for (i, node) in state.nodes.prefix(2).enumerated() {
            var labels = ["app": "echo"]
            if i == 0 { labels["bench"] = "true" }
            try await addPod(name: "echo-\(i + 1)", node: node.name, labels: labels, iperf: i == 0)
        }
        try await createServices()
    }

    /// `echo` (every echo pod; HTTP, TCP and UDP echo; a NodePort) and `probe` (the bench pod).
    func createServices() async throws {
        // With a cloud, a LoadBalancer (a NodePort too): the client reaches it at the balancer's address.
        try await createService("echo", selector: ["app": "echo"], ports: [("http", 80, 8080, "TCP"), ("tcp-echo", 9090, 9090, "TCP"), ("udp-echo", 9090, 9090, "UDP")],
                                type: state.router == nil ? "NodePort" : "LoadBalancer")
        if state.router != nil { progress("service echo: load balancer \(try await loadBalancerIP("echo")) (the lab cloud's)") }
        try await createService("probe", selector: ["bench": "true"], ports: [("tcp-echo", 9090, 9090, "TCP"), ("iperf", 5201, 5201, "TCP")])
    }

    /// A pod: a namespace attached by our CNI plugin on `node`, the echo servers in it, and
    /// its Pod object, Running and Ready with its IP, as a kubelet would post it.
    public func addPod(name: String, node nodeName: String, labels: [String: String], iperf: Bool = false) async throws {
        guard let node = state.nodes.first(where: { $0.name == nodeName }) else { throw NetLabError("no node \(nodeName)") }
        if state.podRuntime == .containerd { return try await addRuntimePod(name: name, node: nodeName, labels: labels) }
        let ns = "\(LabPaths.prefix(state.name))\(node.name.replacingOccurrences(of: "node-", with: "n"))-\(name)"
        guard !state.pods.contains(where: { $0.name == name }) else { throw NetLabError("pod \(name) exists") }
        try Sh.must(["ip", "netns", "add", ns])
        state.pods.append(LabState.Pod(name: name, node: nodeName, netns: ns, ip: "", labels: labels))
        try state.save()
        do {
            try await startPod(name: name, ns: ns, node: node, labels: labels, iperf: iperf)
        } catch {
            // Nothing half-made stays: the object, the processes, the address, the namespace.
            try? await removePod(name)
            throw error
        }
    }

    func startPod(name: String, ns: String, node: LabState.Node, labels: [String: String], iperf: Bool) async throws {
        let nodeName = node.name
        let conf = try String(contentsOfFile: "\(dir)/cni/\(node.name).conf", encoding: .utf8)
        let env = ["CNI_COMMAND=ADD", "CNI_CONTAINERID=\(ns)", "CNI_NETNS=/run/netns/\(ns)", "CNI_IFNAME=eth0", "CNI_PATH=\(dir)/cni/bin"]
        let lo = try Sh.run(["ip", "netns", "exec", node.netns, "env"] + env.map { $0.replacingOccurrences(of: "CNI_IFNAME=eth0", with: "CNI_IFNAME=lo") }
                            + ["\(dir)/cni/bin/switchyard-loopback"], input: #"{"cniVersion":"1.0.0","name":"lo","type":"switchyard-loopback"}"#)
        guard lo.status == 0 else { throw NetLabError("CNI loopback ADD for \(name): \(lo.out)\(lo.err)") }
        let r = try Sh.run(["ip", "netns", "exec", node.netns, "env"] + env + ["\(dir)/cni/bin/switchyard-bridge"], input: conf)
        guard r.status == 0, let result = try? JSONValue.parse(Data(r.out.utf8)),
              let cidr = result["ips"]?.array?.first?["address"]?.string, let ip = cidr.split(separator: "/").first.map(String.init) else {
            throw NetLabError("CNI ADD for pod \(name) on \(nodeName): \(r.out)\(r.err)")
        }
        if let i = state.pods.firstIndex(where: { $0.name == name }) { state.pods[i].ip = ip }
        try state.save()
        var args = ["\(state.binDir)/switchyard-netlab", "serve", "--netns", ns, "--name", name, "--http", "8080", "--echo", "9090", "--udp", "9090"]
        if iperf { args += ["--iperf", "5201"] }
        try spawn(ns, args, log: "pod-\(name)")
        do {
            try Netns.waitForListeners(ns, ([8080, 9090] + (iperf ? [5201] : [])).map { ("-ltnH", $0) })
        } catch {
            throw NetLabError("\(error); see \(dir)/logs")
        }
        var containerPorts: [JSONValue] = [["name": "http", "containerPort": 8080], ["name": "tcp-echo", "containerPort": 9090], ["name": "udp-echo", "containerPort": 9090, "protocol": "UDP"]]
        if iperf { containerPorts.append(["name": "iperf", "containerPort": 5201]) }
        _ = try await must("POST", "/api/v1/namespaces/default/pods", [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })],
            "spec": ["nodeName": .string(nodeName), "containers": [["name": "echo", "image": "switchyard-netlab/echo", "ports": .array(containerPorts)]]],
        ])
        _ = try await must("PATCH", "/api/v1/namespaces/default/pods/\(name)/status", [
            "status": ["phase": "Running", "podIP": .string(ip), "podIPs": [["ip": .string(ip)]], "hostIP": .string(node.address),
                       "conditions": [["type": "Ready", "status": "True"], ["type": "ContainersReady", "status": "True"]],
                       "containerStatuses": [["name": "echo", "ready": true, "restartCount": 0, "image": "switchyard-netlab/echo",
                                              "started": true, "state": ["running": ["startedAt": .string(Self.now())]]]]],
        ], contentType: "application/merge-patch+json")
        progress("pod \(name) on \(nodeName): \(ip) (http :8080, tcp/udp echo :9090\(iperf ? ", iperf3 :5201" : ""))")
    }

    static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date())
    }

    /// Deletes a pod's object, its processes and its namespace, and releases its address.
    public func removePod(_ name: String) async throws {
        guard let i = state.pods.firstIndex(where: { $0.name == name }) else { throw NetLabError("no pod \(name)") }
        if state.podRuntime == .containerd { return try await removeRuntimePod(name) }
        let pod = state.pods[i]
        // The lab plays the kubelet's part: its processes are stopped here, so the object goes at once.
        _ = try await must("DELETE", "/api/v1/namespaces/default/pods/\(name)", ["gracePeriodSeconds": 0], okIf: [404])
        killAll(in: pod.netns)
        if let node = state.nodes.first(where: { $0.name == pod.node }) {
            let conf = try String(contentsOfFile: "\(dir)/cni/\(node.name).conf", encoding: .utf8)
            _ = try? Sh.run(["ip", "netns", "exec", node.netns, "env", "CNI_COMMAND=DEL", "CNI_CONTAINERID=\(pod.netns)", "CNI_NETNS=/run/netns/\(pod.netns)",
                             "CNI_IFNAME=eth0", "CNI_PATH=\(dir)/cni/bin", "\(dir)/cni/bin/switchyard-bridge"], input: conf)
        }
        _ = try? Sh.run(["ip", "netns", "del", pod.netns])
        state.pods.remove(at: i)
        try state.save()
    }

    @discardableResult
    public func createService(_ name: String, selector: [String: String], ports: [(String, Int, Int, String)], type: String = "ClusterIP") async throws -> String {
        let body: JSONValue = [
            "apiVersion": "v1", "kind": "Service",
            "metadata": ["name": .string(name), "labels": ["netlab": "true"]],
            "spec": ["type": .string(type), "selector": .object(selector.mapValues { .string($0) }),
                     "ports": .array(ports.map { ["name": .string($0.0), "port": .int(Int64($0.1)), "targetPort": .int(Int64($0.2)), "protocol": .string($0.3)] })],
        ]
        let created = try await must("POST", "/api/v1/namespaces/default/services", body)
        guard let ip = created["spec"]?["clusterIP"]?.string else { throw NetLabError("service \(name) came back without a clusterIP") }
        return ip
    }

    public func clusterIP(_ service: String) async throws -> String {
        guard let ip = try await must("GET", "/api/v1/namespaces/default/services/\(service)", nil)["spec"]?["clusterIP"]?.string else {
            throw NetLabError("service \(service) has no clusterIP")
        }
        return ip
    }

    /// A bootstrap token for the lab's kubelets, as `kubeadm token create` makes it (a
    /// `bootstrap-token-ID` Secret, an hour, kubeadm's default group), and a bootstrap
    /// kubeconfig with it, the server and its CA: what each kubelet asks for its client
    /// certificate with (TLS bootstrap), as a kubeadm node's kubelet does.
    func bootstrapKubeconfig() async throws -> String {
        func random(_ n: Int) -> String { String((0..<n).map { _ in Array("abcdefghijklmnopqrstuvwxyz0123456789").randomElement()! }) }
        let (id, secret) = (random(6), random(16))
        try await must("POST", "/api/v1/namespaces/kube-system/secrets", [
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": ["name": .string("bootstrap-token-" + id), "namespace": "kube-system"],
            "stringData": ["token-id": .string(id), "token-secret": .string(secret), "usage-bootstrap-authentication": "true",
                           "usage-bootstrap-signing": "true", "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
                           "expiration": .string(RFC3339.format(Date().timeIntervalSince1970 + 3600)),
                           "description": "netlab's kubelets join with it"],
        ])
        let pki = try ClusterPKI.loadOrCreate(in: "\(dir)/server/pki")
        return try writeKubeconfig("bootstrap-kubelet.kubeconfig", ca: pki.caPEM, user: "tls-bootstrap-token-user", credentials: ["token: \(id).\(secret)"])
    }

    /// One API request that must succeed (or answer one of `okIf`); the answer's body.
    @discardableResult
    public func must(_ method: String, _ path: String, _ body: JSONValue?, query: [String: String] = [:], okIf: Set<Int> = [],
                     contentType: String = "application/json") async throws -> JSONValue {
        let r = try await api.request(method, path, query: query, body: body, contentType: contentType)
        guard (200..<300).contains(r.status) || okIf.contains(r.status) else {
            throw NetLabError("\(method) \(path): \(r.status) \(r.body["message"]?.string ?? r.body.text())")
        }
        return r.body
    }

    // MARK: proxies

    public static func proxyArguments(mode: String) -> [String] {
        ProxyModes.variant(mode)?.arguments ?? ["--proxy-mode", mode]
    }

    /// Stops whatever proxies run (cleaning up after them) and starts `mode` on every node.
    public func startProxies(mode: String, minSyncPeriod: String = "100ms") async throws {
        try stopProxies()
        guard mode != "none" else { return }
        guard Self.modes.contains(mode) else { throw NetLabError("unknown proxy mode \(mode)") }
        for node in state.nodes {
            try spawn(node.netns, ["\(state.binDir)/switchyard", "proxy", "--logging-format", "json"] + Self.proxyArguments(mode: mode) + [
                "--hostname-override", node.name, "--cluster-cidr", Self.clusterCIDR,
                "--kubeconfig", try componentKubeconfig("kube-proxy", commonName: "system:kube-proxy"),
                "--min-sync-period", minSyncPeriod, "--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249",
            ], log: "proxy-\(node.name)", keep: true)
        }
        state.proxyMode = mode
        try state.save()
    }

    /// The pid of the proxy on `node`, if one runs.
    public func proxyPID(_ node: LabState.Node) -> Int32? {
        for pid in Netns.pids(node.netns) {
            if let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
               cmd.split(separator: "\0").dropFirst().first == "proxy" { return pid }
        }
        return nil
    }

    /// SIGTERM to the proxies, then `switchyard proxy --cleanup` in every node for every mode's rules.
    public func stopProxies() throws {
        var stopped: [Int32] = []
        for node in state.nodes { if let pid = proxyPID(node) { kill(pid, SIGTERM); stopped.append(pid) } }
        for _ in 0..<100 where stopped.contains(where: Self.isAlive) { usleep(50_000) }
        for pid in stopped where Self.isAlive(pid) { kill(pid, SIGKILL) }
        // Stopped on purpose: not for `fault heal` to start again.
        for node in state.nodes { state.components?["proxy-\(node.name)"] = nil }
        guard state.proxyMode != nil else { try state.save(); return }
        for node in state.nodes {
            _ = try? Sh.run(["ip", "netns", "exec", node.netns, "\(state.binDir)/switchyard", "proxy", "--cleanup"], timeout: 60)
        }
        state.proxyMode = nil
        try state.save()
    }

    // MARK: status and down

    /// Whether `pid` runs: exists and is not a zombie (a process whose parent is gone waits
    /// for init to reap it, and an init that does not reap leaves it so).
    public static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0, let stat = ProcStat(pid) else { return false }
        return !stat.isZombie
    }

    func killAll(in ns: String) {
        for pid in Netns.pids(ns) { kill(pid, SIGKILL) }
    }

    /// Every namespace is there and the API server answers.
    public func isHealthy() -> Bool {
        let present = Set(Netns.list())
        guard state.namespaces.allSatisfy(present.contains) else { return false }
        guard let fd = try? api.dial?("127.0.0.1", LabState.insecurePort) else { return false }
        close(fd)
        return true
    }

    /// Namespaces of lab `name` that exist now.
    public static func leftovers(_ name: String) -> [String] {
        Netns.list().filter { $0.hasPrefix(LabPaths.prefix(name)) }
    }

    /// Removes the lab: every process in its namespaces, the namespaces (with them every link,
    /// rule and route in them), and its state directory. Works from the names alone when the
    /// state file is gone; a lab that does not exist is not an error.
    public static func down(name: String, progress: @escaping @Sendable (String) -> Void) async throws {
        try LabPaths.validate(name)
        let state = try? LabState.load(name)
        let names = Set(leftovers(name) + (state?.namespaces ?? []))
        let present = Set(Netns.list())
        let gone = names.filter(present.contains).sorted()
        // The containerd runtime's nodes first: their pods live in namespaces of containerd's.
        let runtimes = ((try? FileManager.default.contentsOfDirectory(atPath: "\(LabPaths.dir(name))/nodes")) ?? []).count
        if runtimes > 0 { await stopRuntimes(lab: name, netns: gone) }
        for ns in gone {
            for pid in Netns.pids(ns) { kill(pid, SIGKILL) }
        }
        if !gone.isEmpty { usleep(100_000) }
        var failed: [String] = []
        for ns in gone where (try? Sh.run(["ip", "netns", "del", ns]))?.status != 0 { failed.append(ns) }
        try? FileManager.default.removeItem(atPath: LabPaths.dir(name))
        guard failed.isEmpty else { throw NetLabError("could not delete namespaces \(failed.joined(separator: ", "))") }
        let containerds = runtimes > 0 ? ", \(runtimes) containerd with every pod they ran" : ""
        progress(gone.isEmpty && runtimes == 0 ? "lab \(name): nothing to remove" : "lab \(name) removed (\(gone.count) namespaces\(containerds), and everything in them)")
    }

    /// A human summary: nodes, pods, services, proxies.
    public func status() async throws -> String {
        var out = state.controlPlanes == nil ? "lab \(state.name): API server \(state.kubeconfigURL) in namespace \(state.controlPlane) (kubeconfig \(kubeconfig))\n"
            : "lab \(state.name): API servers at \(state.kubeconfigURL) (kubeconfig \(kubeconfig))\n"
        out += "  kubectl: netlab/netlab kubectl\(state.name == "lab" ? "" : " --name \(state.name)") get pods,svc,endpointslices\n"
        out += await controlPlaneStatus()
        if let router = state.router {
            out += "client: \(state.client) (\(state.clientAddress)) behind the router \(router); \(Self.serviceCIDR) via \(state.nodes[0].name), pods by the cloud's routes\n"
            out += cloudStatus()
        } else {
            out += "client: \(state.client) (\(state.clientAddress)), routes \(Self.serviceCIDR) and \(Self.clusterCIDR) via \(state.nodes[0].name)\n"
        }
        for node in state.nodes {
            let proxy = proxyPID(node).map { "proxy \(state.proxyMode ?? "?") running (pid \($0))" } ?? "no proxy running"
            out += "\(node.name): \(node.netns), \(node.address), pods \(node.podCIDR); \(proxy)\n"
        }
        if state.podRuntime == .containerd {
            out += "pods run by containerd through switchyard kubelet on every node; images from the lab registry \(state.registry ?? "?") (netlab images)\n"
            state.pods = (try? await readyPods(selector: "app=echo")) ?? state.pods
        }
        for pod in state.pods {
            let serving = state.podRuntime == .containerd || !Netns.pids(pod.netns).isEmpty
            out += "  pod \(pod.name) on \(pod.node): \(pod.ip)\(serving ? "" : " (not serving)")\n"
        }
        let services = try await must("GET", "/api/v1/services", nil)["items"]?.array ?? []
        out += "\(services.count) services"
        let shown = services.filter { $0["metadata"]?["labels"]?["netlab-fill"] == nil }
        for s in shown {
            let ports = (s["spec"]?["ports"]?.array ?? []).map { "\($0["port"]?.int ?? 0)/\($0["protocol"]?.string ?? "TCP")" }
            out += "\n  \(s["metadata"]?["namespace"]?.string ?? "")/\(s["metadata"]?["name"]?.string ?? ""): \(s["spec"]?["clusterIP"]?.string ?? "") \(ports.joined(separator: ","))"
        }
        if shown.count < services.count { out += "\n  (and \(services.count - shown.count) filler services from compare)" }
        return out
    }
}

extension Cluster {
    /// What the client sees through the proxies now: the `echo` Service's ClusterIP over HTTP
    /// (which pods answered), over UDP, and its NodePort on the first node.
    public struct Reach: Sendable {
        public var httpPods: Set<String> = []
        public var udpReply: String?
        public var nodePortPod: String?
        /// The pods that answered at the balancer's address (a lab with a cloud).
        public var loadBalancerPods: Set<String> = []
        public var loadBalancerIP: String?
        /// The pods that answered through the Ingress (its host, at its balancer's address).
        public var ingressPods: Set<String> = []
        public var ingressIP: String?
        public var sample = ""
    }

    /// Sends up to `tries` HTTP requests (until every echo pod answered), one UDP request and
    /// one NodePort request from the client.
    public func reach(tries: Int = 40) async throws -> Reach {
        let svc = try await must("GET", "/api/v1/namespaces/default/services/echo", nil)
        guard let ip = svc["spec"]?["clusterIP"]?.string else { throw NetLabError("the echo Service has no clusterIP") }
        let nodePort = (svc["spec"]?["ports"]?.array ?? []).first { $0["name"]?.string == "http" }?["nodePort"]?.int
        let pods = Set(state.pods.filter { $0.labels["app"] == "echo" }.map(\.name))
        var r = Reach()
        for _ in 0..<tries where r.httpPods != pods {
            if let body = Measure.httpGet(state.client, ip, 80, timeout: 1) {
                if r.sample.isEmpty { r.sample = "http://\(ip)/ → \(body)" }
                if let name = body.split(separator: " ").first { r.httpPods.insert(String(name)) }
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        for _ in 0..<5 where r.udpReply == nil { r.udpReply = Netns.udp(from: state.client, to: ip, port: 9090) }
        if let nodePort {
            r.nodePortPod = Measure.httpGet(state.client, state.nodes[0].address, Int(nodePort), timeout: 1)?.split(separator: " ").first.map(String.init)
        }
        /// The pods that answer at `ip`:80 (as `host`), asked until all have or `tries` run out.
        func answering(_ ip: String, host: String? = nil) async throws -> Set<String> {
            var seen = Set<String>()
            for _ in 0..<tries where seen != pods {
                if let name = Measure.httpGet(state.client, ip, 80, timeout: 1, host: host)?.split(separator: " ").first {
                    seen.insert(String(name))
                } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            return seen
        }
        if state.router != nil, let lb = svc[path: ["status", "loadBalancer", "ingress"]]?.array?.first?["ip"]?.string {
            r.loadBalancerIP = lb
            r.loadBalancerPods = try await answering(lb)
        }
        if state.router != nil, let ip = try await ingressAddress() {
            r.ingressIP = ip
            r.ingressPods = try await answering(ip, host: Self.ingressHost)
        }
        return r
    }

    /// Until every node's proxy has synced once (healthz 200), or `timeout`.
    public func waitForProxies(timeout: Double = 120) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        for node in state.nodes {
            // A proxy just spawned is, for a moment, `ip netns exec` outside the namespace or not
            // yet exec'ed: it counts as gone only when no proxy has been seen for a second.
            var lastSeen = Date()
            while Measure.httpStatus(node.netns, "127.0.0.1", 10256, "/healthz") != 200 {
                if proxyPID(node) != nil { lastSeen = Date() }
                guard Date().timeIntervalSince(lastSeen) < 1 else {
                    throw NetLabError("the proxy on \(node.name) exited; see \(dir)/logs/proxy-\(node.name).log")
                }
                guard Date() < deadline else { throw NetLabError("the proxy on \(node.name) did not sync within \(Int(timeout)) s") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
