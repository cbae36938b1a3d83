import ArgumentParser
import Foundation
import KubeAPI
import LabCloud
import NetLab

/// Progress and results: progress to stderr, results to stdout.
@Sendable func say(_ s: String) { FileHandle.standardError.write(Data("netlab: \(s)\n".utf8)) }

/// Results to stdout, unbuffered: they show as they come, also through a pipe.
func emit(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }

/// The switchyard binaries sit next to this one.
var binDir: String { URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path }

struct LabOptions: ParsableArguments {
    @Option(help: "The lab's name (namespaces nl-NAME-…, state in /run/switchyard-netlab/NAME).") var name = "lab"
}

struct RuntimeOptions: ParsableArguments {
    @Option(help: "Who runs the pods: containerd (a containerd and switchyard kubelet per node, images from the lab registry) or netns (netlab's own processes, posted as a kubelet would).")
    var runtime = LabState.Runtime.containerd.rawValue

    func validate() throws {
        guard LabState.Runtime(rawValue: runtime) != nil else { throw ValidationError("--runtime: containerd or netns") }
    }
    var chosen: LabState.Runtime { LabState.Runtime(rawValue: runtime) ?? .containerd }
}

struct OutOptions: ParsableArguments {
    @Option(help: "Where results go.") var out = "netlab/out"
}

func mustOpen(_ name: String) throws -> Cluster {
    guard let lab = try Cluster.open(name, progress: say) else { throw ValidationError("no lab \(name): run `netlab up` first") }
    return lab
}

@main
struct NetLabCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netlab",
        abstract: "Kubernetes networking in network namespaces: a lab cluster, the proxy modes compared.",
        subcommands: [Up.self, Down.self, Status.self, Compare.self, Render.self, Demo.self, KubectlCommand.self, ExecCommand.self, ImagesCommand.self,
                      FaultCommand.self, Failover.self, TraceCommand.self, ReportCommand.self, Serve.self, GuestCompare.self, StandInCommand.self, CloudCommand.self, LoadBalancerLatency.self])
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Build the lab: nodes, pods through the CNI plugin, the API server, a proxy per node.")
    @OptionGroup var lab: LabOptions
    @Option(help: "How many nodes.") var nodes = 2
    @Option(help: "The proxy mode on every node: \(Cluster.modes.joined(separator: ", ")), or none.") var proxyMode = "iptables"
    @Option(help: "Also register this many kwok-style fake nodes (capacity and Lease heartbeats, no namespaces) for the scheduler and controllers.")
    var fakeNodes = 0
    @Option(name: .customLong("control-plane"), help: """
        Control-plane members: 1 (one API server on embedded SQLite) or 3 or 5 (per member an etcd member, an API \
        server, a scheduler and a controller manager electing their leaders, the lab cloud's balancer in front).
        """)
    var controlPlane = 1
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        guard (0...10_000).contains(fakeNodes) else { throw ValidationError("--fake-nodes: 0 to 10000") }
        guard [1, 3, 5].contains(controlPlane) else { throw ValidationError("--control-plane: 1, 3 or 5") }
    }

    func run() async throws {
        let c = try await Cluster.up(name: lab.name, nodes: nodes, proxyMode: proxyMode, binDir: binDir, fakeNodes: fakeNodes, runtime: runtime.chosen,
                                     controlPlanes: controlPlane, progress: say)
        if proxyMode != "none" { try await c.waitForProxies() }
        emit(try await c.status())
    }
}

/// Replaces this process with `ip netns exec NS ARGV…` (so a shell run there is interactive and
/// its exit status is ours).
func execInNamespace(_ ns: String, _ argv: [String]) throws -> Never {
    let all = ["ip", "netns", "exec", ns] + argv
    var cargs: [UnsafeMutablePointer<CChar>?] = all.map { strdup($0) } + [nil]
    execvp("ip", &cargs)
    throw ValidationError("running ip netns exec \(ns) \(argv.joined(separator: " ")): \(String(cString: strerror(errno)))")
}

struct KubectlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kubectl",
        abstract: "Run kubectl against the lab's API server from the host (through the control plane's namespace).",
        discussion: "netlab kubectl [--name NAME] ARGS…   e.g. netlab kubectl get pods,svc,endpointslices -o wide")
    @OptionGroup var lab: LabOptions
    @Argument(parsing: .captureForPassthrough, help: "kubectl's arguments.") var args: [String] = []

    func run() throws {
        let c = try mustOpen(lab.name)
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/kubectl" }
        guard let kubectl = (path + ["/usr/lib/google-cloud-sdk/bin/kubectl", "/usr/local/bin/kubectl"]).first(where: FileManager.default.isExecutableFile) else {
            throw ValidationError("kubectl is not installed (looked on PATH and in /usr/lib/google-cloud-sdk/bin)")
        }
        try execInNamespace(c.state.controlPlane, [kubectl, "--kubeconfig", c.kubeconfig] + args)
    }
}

struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in one of the lab's namespaces: a node (node-1), a pod (echo-1), client, control-plane or a control-plane member (cp-2).",
        discussion: "netlab exec [--name NAME] node-1 -- ip route   (without a command: a shell)")
    @OptionGroup var lab: LabOptions
    @Argument(help: "node-N, a pod's name, client, control-plane or cp-N.") var target: String
    @Argument(parsing: .captureForPassthrough, help: "The command (default: $SHELL or sh).") var command: [String] = []

    func run() throws {
        let c = try mustOpen(lab.name)
        let s = c.state
        let ns: String
        switch target {
        case "client": ns = s.client
        case "control-plane", "cp": ns = s.controlPlane
        default:
            if let m = s.members.first(where: { $0.name == target }) { ns = m.netns }
            else if let n = s.nodes.first(where: { $0.name == target }) { ns = n.netns }
            else if let p = s.pods.first(where: { $0.name == target }) {
                guard let found = c.podNamespace(p) else { throw ValidationError("pod \(target)'s network namespace is not found (is it still running?)") }
                ns = found
            }
            else {
                throw ValidationError("no \(target) in lab \(lab.name): one of client, control-plane, \((s.members.map(\.name) + s.nodes.map(\.name) + s.pods.map(\.name)).joined(separator: ", "))")
            }
        }
        var argv = command.first == "--" ? Array(command.dropFirst()) : command
        if argv.isEmpty { argv = [ProcessInfo.processInfo.environment["SHELL"] ?? "sh"] }
        try execInNamespace(ns, argv)
    }
}

/// Internal: netlab starts it in the control plane's namespace.
struct StandInCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stand-in", abstract: "Renew the lab nodes' Leases and run its fake nodes (netlab starts it).",
                                                    shouldDisplay: false)
    @Option var kubeconfig: String
    @Option var nodes: String
    @Option var fakeNodes = 0
    func run() async throws {
        try await StandIn.run(kubeconfig: kubeconfig, nodes: nodes.split(separator: ",").map(String.init), fakeNodes: fakeNodes)
    }
}

/// The `q` quantile of `xs` (not empty) by nearest rank: the smallest value at least a `q`
/// share of them do not exceed.
func nearestRank(_ xs: [Double], _ q: Double) -> Double {
    let s = xs.sorted()
    return s[min(s.count - 1, max(0, Int((Double(s.count) * q).rounded(.up)) - 1))]
}

/// The highly available control plane's figures: each fault → served again.
struct Failover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "failover",
        abstract: "Time the control plane's failover (a lab of --control-plane 3): writes through the balancer after the etcd leader's and an API server's loss, a pod's binding after the leading scheduler's, each against the same step with nothing broken.")
    @OptionGroup var lab: LabOptions
    @Option(help: "Faults of each kind.") var rounds = 5
    func run() async throws {
        guard rounds > 0 else { throw ValidationError("--rounds: at least 1") }
        let c = try mustOpen(lab.name)
        let f = try await c.failover(rounds: rounds)
        let p = nearestRank
        emit("control plane of \(c.state.members.count) members, \(rounds) faults of each kind, from the outside client through the balancer")
        emit(String(format: "baseline: a write acknowledged in p50 %.0f ms, p99 %.0f ms; a pod bound in p50 %.0f ms", p(f.write, 0.5), p(f.write, 0.99), p(f.bind, 0.5)))
        emit(String(format: "etcd leader killed → writes again: p50 %.0f ms, p99 %.0f ms (%.0f× the baseline write's p50)", p(f.etcd, 0.5), p(f.etcd, 0.99), p(f.etcd, 0.5) / p(f.write, 0.5)))
        emit(String(format: "API server killed → writes again: p50 %.0f ms, p99 %.0f ms (%.1f× the baseline write's p50)", p(f.apiServer, 0.5), p(f.apiServer, 0.99), p(f.apiServer, 0.5) / p(f.write, 0.5)))
        emit(String(format: "leading scheduler killed → a new pod bound: p50 %.1f s, p99 %.1f s (the Lease's duration: %.0f s; %.2f× it at p99)", p(f.scheduler, 0.5) / 1000, p(f.scheduler, 0.99) / 1000, f.leaseDuration, p(f.scheduler, 0.99) / 1000 / f.leaseDuration))
    }
}

/// The lab cloud's figure: LoadBalancer Service created → first answer at its address.
struct LoadBalancerLatency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lb-latency",
        abstract: "Time LoadBalancer Services from create to the client's first answer (p50, p99), against NodePort Services in the same run.")
    @OptionGroup var lab: LabOptions
    @Option(help: "Services of each type.") var count = 30
    func run() async throws {
        guard count > 0 else { throw ValidationError("--count: at least 1") }
        let c = try mustOpen(lab.name)
        guard c.state.proxyMode != nil else { throw ValidationError("no proxy runs in lab \(lab.name): `netlab up --proxy-mode iptables` first") }
        let (lb, np) = try await c.loadBalancerLatency(count: count)
        let p = nearestRank
        emit(String(format: "LoadBalancer created → first answer at its address: p50 %.0f ms, p99 %.0f ms (%d Services)", p(lb, 0.5), p(lb, 0.99), lb.count) + ", proxy \(c.state.proxyMode ?? "?")")
        emit(String(format: "NodePort created → first answer on node-1 (baseline): p50 %.0f ms, p99 %.0f ms; LoadBalancer/NodePort p50 %.2f×", p(np, 0.5), p(np, 0.99), p(lb, 0.5) / p(np, 0.5)))
    }
}

/// Internal: netlab starts it in the router's namespace.
struct CloudCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cloud", abstract: "Serve the lab cloud's API and run its balancers and routes (netlab starts it).",
                                                    shouldDisplay: false)
    @Option(help: "Its directory: config.json (from netlab), state.json (its own).") var dir: String
    @Option(help: "ADDRESS:PORT to serve the API on.") var listen: String
    func run() async throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--listen ADDRESS:PORT") }
        let cloud = try LabCloud(dir: dir)
        try cloud.start()
        cloud.startHealthChecks()
        try await cloud.serve(host: String(parts[0]), port: port)
    }
}

struct FaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault",
        abstract: "Break part of the lab, as a crash or a network would, or heal what was broken.",
        discussion: """
            netlab fault kill-etcd [cp-N]                the member's etcd (default: the leader), SIGKILL
            netlab fault kill-apiserver [cp-N]           the member's API server (default: cp-1's)
            netlab fault kill-scheduler [cp-N]           the member's scheduler (default: the one leading)
            netlab fault kill-controller-manager [cp-N]  the member's controller manager (default: the one leading)
            netlab fault kill-node node-N                its kubelet, containerd and proxy killed, its link down
            netlab fault partition A B                   every packet between A and B dropped (cp-N, node-N, client, router)
            netlab fault heal                            all of the above undone: killed processes started again on their data
            """)
    @OptionGroup var lab: LabOptions
    @Argument(help: "kill-etcd, kill-apiserver, kill-scheduler, kill-controller-manager, kill-node, partition or heal.") var fault: String
    @Argument(help: "The member, node or lab parts it applies to.") var targets: [String] = []

    func parsed() throws -> Fault {
        func one(_ make: (String?) -> Fault) throws -> Fault {
            guard targets.count <= 1 else { throw ValidationError("\(fault) takes at most one member name") }
            return make(targets.first)
        }
        switch fault {
        case "kill-etcd": return try one(Fault.killEtcd)
        case "kill-apiserver": return try one(Fault.killAPIServer)
        case "kill-scheduler": return try one(Fault.killScheduler)
        case "kill-controller-manager": return try one(Fault.killControllerManager)
        case "kill-node":
            guard targets.count == 1 else { throw ValidationError("kill-node takes one node name (node-N)") }
            return .killNode(targets[0])
        case "partition":
            guard targets.count == 2 else { throw ValidationError("partition takes two parts: A B (cp-N, node-N, client, router)") }
            return .partition(targets[0], targets[1])
        case "heal":
            guard targets.isEmpty else { throw ValidationError("heal takes no argument") }
            return .heal
        default:
            throw ValidationError("unknown fault \(fault): one of kill-etcd, kill-apiserver, kill-scheduler, kill-controller-manager, kill-node, partition, heal")
        }
    }

    func validate() throws { _ = try parsed() }

    func run() async throws {
        let c = try mustOpen(lab.name)
        emit(try await c.inject(try parsed()))
    }
}

struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove the lab and everything in it (also after a crash).")
    @OptionGroup var lab: LabOptions
    func run() async throws { try await Cluster.down(name: lab.name, progress: say) }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the lab's nodes, pods, Services and proxies.")
    @OptionGroup var lab: LabOptions
    func run() async throws {
        let c = try mustOpen(lab.name)
        guard c.isHealthy() else {
            emit("lab \(lab.name) is not whole (a namespace or the API server is gone); `netlab down --name \(lab.name)` removes what is left")
            throw ExitCode(1)
        }
        emit(try await c.status())
    }
}

struct CompareFlags: ParsableArguments {
    @Option(help: "Numbers of Services to compare at (comma-separated).") var services = "10,1000,10000"
    @Option(help: "Modes to compare (comma-separated; default: every mode this kernel has).") var modes: String?
    @Option(help: "Seconds of each latency loop and of the connection-rate run.") var seconds = 1.0
    @Option(help: "Seconds of each iperf3 run.") var iperfSeconds = 2
    @Option(help: "Concurrent clients for new connections per second.") var concurrency = 4
    @Option(help: "API changes timed per mode (the median is reported).") var changes = 3

    func comparison(out: String) throws -> Comparison {
        var c = Comparison(outDir: out)
        c.scales = try Self.parseScales(services)
        if let modes { c.modes = modes.split(separator: ",").map(String.init) }
        c.measure.seconds = seconds
        c.measure.iperfSeconds = iperfSeconds
        c.measure.concurrency = concurrency
        c.changes = changes
        return c
    }
}

extension CompareFlags {
    static func parseScales(_ s: String) throws -> [Int] {
        try s.split(separator: ",").map {
            guard let n = Int($0.trimmingCharacters(in: .whitespaces)), n >= 2, n <= 50_000 else { throw ValidationError("--services: numbers from 2 to 50000") }
            return n
        }
    }
}

/// Inside the qemu guest: a lab, a comparison of every mode, the rows on stdout, down.
struct GuestCompare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "guest-compare", abstract: "What `demo` runs inside the qemu guest.", shouldDisplay: false)
    @OptionGroup var flags: CompareFlags

    func run() async throws {
        var cmp = try flags.comparison(out: "/run/switchyard-netlab/out")
        cmp.environment = Comparison.environment(guest: true)
        cmp.keepServices = true
        let name = "guest"
        do {
            // The guest runs the pods as netlab's processes: the comparison measures the proxies,
            // and a containerd per node under TCG would only lengthen it.
            let c = try await Cluster.up(name: name, nodes: 2, proxyMode: "none", binDir: binDir, runtime: .netns, progress: say)
            let rows = try await cmp.run(c, progress: say)
            try await Cluster.down(name: name, progress: say)
            let report = Comparison.GuestReport(environment: cmp.environment, rows: rows)
            emit(Comparison.GuestReport.marker + String(decoding: try JSONEncoder().encode(report), as: UTF8.self))
        } catch {
            try? await Cluster.down(name: name, progress: say)
            throw error
        }
    }
}

struct Compare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure every proxy mode against the direct pod-IP path, at several numbers of Services.")
    @OptionGroup var lab: LabOptions
    @OptionGroup var output: OutOptions
    @OptionGroup var flags: CompareFlags
    @Flag(help: "Leave the filler Services in place afterwards.") var keepServices = false

    func run() async throws {
        let c = try mustOpen(lab.name)
        var cmp = try flags.comparison(out: output.out)
        cmp.keepServices = keepServices
        let rows = try await cmp.run(c, progress: say)
        emit(Comparison.markdown(rows, environment: cmp.environment))
        say("wrote \(output.out)/compare.csv, compare.md and compare-*.svg")
    }
}

struct Render: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write every mode's ruleset for the lab's Services, before and after a change, and the diffs.")
    @OptionGroup var lab: LabOptions
    @OptionGroup var output: OutOptions
    func run() async throws {
        let c = try mustOpen(lab.name)
        for f in try await Rendering(outDir: output.out).run(c, progress: say) { emit(f) }
    }
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "All of it: up, traffic through every mode, compare, render, down.")
    @OptionGroup var output: OutOptions
    @OptionGroup var flags: CompareFlags
    @Flag(help: "A run of about a minute: 10 and 100 Services, short measurements, no qemu guest.") var quick = false
    @Option(help: "How many nodes.") var nodes = 2
    @Option(help: "netlab/guest: where the kernel lacks IPVS, a comparison of every mode runs in a qemu guest that has it.")
    var guestScript: String?
    @Option(help: "Numbers of Services for the guest's comparison (TCG is an order of magnitude slower than the host).")
    var guestServices = "10,100"
    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        let name = "demo"
        var flags = self.flags
        if quick {
            flags.services = "10,100"
            flags.seconds = 0.5
            flags.iperfSeconds = 1
            flags.changes = 1
        }
        var cmp = try flags.comparison(out: output.out)
        cmp.keepServices = true   // `down` removes them with everything else
        // No signal handling here: an ignored or blocked signal would be inherited by every
        // command netlab runs. netlab/netlab takes the lab down when this process ends, however
        // it ends; run directly, `switchyard-netlab down --name demo` does it.
        let started = Date()
        do {
            let c = try await Cluster.up(name: name, nodes: nodes, proxyMode: "none", binDir: binDir, runtime: runtime.chosen, progress: say)
            emit(try await c.status())
            for mode in cmp.modes {
                try await c.startProxies(mode: mode)
                try await c.waitForProxies()
                let r = try await c.reach()
                let pods = r.httpPods.sorted().joined(separator: ", ")
                var line = "\(mode): \(r.sample); pods answering: \(pods); UDP: \(r.udpReply ?? "no reply"); NodePort: \(r.nodePortPod ?? "no reply")"
                if let lb = r.loadBalancerIP { line += "; LoadBalancer \(lb): \(r.loadBalancerPods.sorted().joined(separator: ", "))" }
                if let ing = r.ingressIP { line += "; Ingress http://\(Cluster.ingressHost)/ at \(ing): \(r.ingressPods.sorted().joined(separator: ", "))" }
                emit(line)
            }
            try c.stopProxies()
            let rows = try await cmp.run(c, progress: say)
            emit(Comparison.markdown(rows, environment: cmp.environment))
            for f in try await Rendering(outDir: output.out).run(c, progress: say) { say("wrote \(f)") }
        } catch {
            try? await Cluster.down(name: name, progress: say)
            throw error
        }
        try await Cluster.down(name: name, progress: say)
        if quick && !Comparison.availableModes.contains("ipvs") {
            say("--quick: the qemu guest's comparison (the IPVS mode) is left out; run the demo without --quick for it")
        } else if let guestScript, !Comparison.availableModes.contains("ipvs") {
            var g = cmp
            g.scales = try CompareFlags.parseScales(guestServices)
            let rows = try g.runInGuest(guestScript: guestScript, netlab: "\(binDir)/switchyard-netlab", progress: say)
            emit("\nThe same comparison in the qemu guest, where the IPVS mode runs (compare modes within one table only):\n")
            emit(Comparison.markdown(rows, environment: Comparison.environment(guest: true)))
        }
        say(String(format: "demo done in %.0f s; results in %@", Date().timeIntervalSince(started), output.out))
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "What a lab pod runs (inside its namespace): HTTP, TCP echo, UDP, iperf3.", shouldDisplay: false)
    @Option(help: "The pod's network namespace (a name under /run/netns).") var netns: String
    @Option(help: "The pod's name, in every answer.") var name: String
    @Option var http: Int?
    @Option var echo: Int?
    @Option var udp: Int?
    @Option var iperf: Int?
    func run() async throws {
        try await Workload.serve(netns: netns, name: name, http: http, echo: echo, udp: udp, iperf: iperf)
    }
}

struct ImagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "images", abstract: "List the images in the lab registry (what the nodes' containerd pull).")
    @OptionGroup var lab: LabOptions
    func run() async throws {
        let c = try mustOpen(lab.name)
        let images = try await c.registryClient().images()
        let width = max(4, images.map(\.name.count).max() ?? 0)
        func pad(_ s: String) -> String { s + String(repeating: " ", count: max(1, width + 2 - s.count)) }
        emit(pad("NAME") + "DIGEST" + String(repeating: " ", count: 67) + "SIZE")
        for i in images {
            emit(pad(i.name) + i.digest + "  " + String(format: "%.1f MB", Double(i.size) / 1e6))
        }
        emit("registry \(c.state.registry ?? "?") in \(c.state.controlPlane); nodes pull switchyard/NAME:TAG (docker.io is mirrored to it)")
    }
}

struct TraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "trace", abstract: """
        A pod's creation step by step, from the lab's audit log and its components' logs: the request \
        authenticated, authorised, admitted and stored, scheduled, started by the kubelet, then its \
        EndpointSlice and each proxy's sync. `trace pod NAME` or `trace deployment NAME`.
        """)
    @OptionGroup var lab: LabOptions
    @Argument(help: "pod or deployment") var kind: String
    @Argument(help: "Its name.") var name: String
    @Option(name: [.customShort("n"), .customLong("namespace")], help: "Its namespace.") var namespace = "default"
    @Option(name: [.customShort("o"), .customLong("output")], help: "text, json or svg (a timeline).") var output = "text"
    @Option(help: "Also write the timeline (SVG) here; with a deployment, one file per pod (FILE-POD.svg).") var svg: String?

    func validate() throws {
        guard ["pod", "deployment", "deploy", "po", "pods", "deployments"].contains(kind) else { throw ValidationError("trace pod NAME or trace deployment NAME") }
        guard ["text", "json", "svg"].contains(output) else { throw ValidationError("--output: text, json or svg") }
    }

    func run() async throws {
        let c = try mustOpen(lab.name)
        let traces = kind.hasPrefix("po") ? try await c.trace(pod: name, namespace: namespace) : try await c.trace(deployment: name, namespace: namespace)
        switch output {
        case "json": emit(traces.count == 1 && kind.hasPrefix("po") ? traces[0].json.text() : JSONValue.array(traces.map(\.json)).text())
        case "svg": emit(traces.map { $0.svg() }.joined(separator: "\n"))
        default: emit(traces.map { $0.text() }.joined(separator: "\n"))
        }
        if let svg {
            for t in traces {
                let path = traces.count == 1 ? svg : svg.replacingOccurrences(of: ".svg", with: "") + "-\(t.name).svg"
                try Data(t.svg().utf8).write(to: URL(fileURLWithPath: path))
                say("wrote \(path)")
            }
        }
    }
}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: """
        An HTML page (OUT/report/index.html) with the SVG charts it embeds: API requests by verb, \
        resource and client; writes per component and resource; CRI calls per node; the proxy \
        modes' comparison (netlab compare's); the latest pod traces.
        """)
    @OptionGroup var lab: LabOptions
    @OptionGroup var out: OutOptions
    @Option(help: "How many of the newest Ready pods are traced.") var traces = 3

    func run() async throws {
        let c = try mustOpen(lab.name)
        let dir = out.out + "/report"
        let r = try await c.report(out: dir, compareDir: out.out, traces: traces)
        emit("netlab: wrote \(dir)/index.html and \(r.files.count) charts")
    }
}
