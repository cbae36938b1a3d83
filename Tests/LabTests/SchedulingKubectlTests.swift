import Foundation
import NetnsKit
import Testing

/// Polls `check` every 100 ms until it holds; false after `seconds`.
func waitUntil(_ seconds: Double, _ check: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try check() { return true }
        usleep(100_000)
    }
    return false
}

/// The scheduler and the controller manager, run by `switchyard server` in its process, driven
/// with the oldest and newest kubectl on the machine over three fake nodes.
@Suite("scheduler and controllers with kubectl", .enabled(if: isRoot, "needs root for network namespaces"))
struct SchedulingKubectlTests {
    /// The server, and `switchyard-netlab stand-in` with three fake nodes, in the lab's namespace.
    func start(_ lab: Lab, _ extra: [String] = []) throws -> LabServer {
        let server = try LabServer(lab: lab, arguments: extra)
        let netlab = URL(fileURLWithPath: try switchyardBinary()).deletingLastPathComponent().appendingPathComponent("switchyard-netlab").path
        try lab.spawn(lab.node, [netlab, "stand-in", "--kubeconfig", server.kubeconfig, "--nodes", "", "--fake-nodes", "3"])
        return server
    }

    func wait(_ seconds: Double = 30, _ check: () throws -> Bool) rethrows -> Bool { try waitUntil(seconds, check) }

    @Test(arguments: ["1.27", "1.33"])
    func deploymentsRollAndRollBack(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try start(lab)
        #expect(try wait { try server.kubectl(k, ["get", "nodes", "-o", "name"]).out.split(separator: "\n").count == 3 })
        var r = try server.kubectl(k, ["create", "deployment", "web", "--image=nginx:1.25", "--replicas=6"])
        #expect(r.status == 0, "\(r.err)")
        r = try server.kubectl(k, ["rollout", "status", "deployment/web", "--timeout=60s"])
        #expect(r.status == 0 && r.out.contains("deployment \"web\" successfully rolled out"), "\(r.out)\(r.err)")
        // Spread as upstream's default spreading spreads a controller's pods: two per node.
        r = try server.kubectl(k, ["get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"])
        let perNode = Dictionary(grouping: r.out.split(separator: "\n"), by: { $0 }).mapValues(\.count)
        #expect(perNode.values.sorted() == [2, 2, 2], "\(r.out)")
        // An image change rolls; history has both revisions; undo goes back.
        r = try server.kubectl(k, ["set", "image", "deployment/web", "nginx=nginx:1.27"])
        #expect(r.status == 0, "\(r.err)")
        r = try server.kubectl(k, ["rollout", "status", "deployment/web", "--timeout=60s"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        r = try server.kubectl(k, ["rollout", "history", "deployment/web"])
        #expect(r.status == 0 && r.out.contains("REVISION") && r.out.contains("1 ") && r.out.contains("2 "), "\(r.out)\(r.err)")
        r = try server.kubectl(k, ["rollout", "undo", "deployment/web"])
        #expect(r.status == 0 && r.out.contains("rolled back"), "\(r.out)\(r.err)")
        r = try server.kubectl(k, ["rollout", "status", "deployment/web", "--timeout=60s"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        r = try server.kubectl(k, ["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"])
        #expect(r.out == "nginx:1.25 3", "\(r.out)")
        // Scale, restart, pause and resume.
        #expect(try server.kubectl(k, ["scale", "deployment/web", "--replicas=3"]).status == 0)
        #expect(try wait { try server.kubectl(k, ["get", "pods", "-l", "app=web", "--no-headers"]).out.split(separator: "\n").filter { !$0.contains("Terminating") }.count == 3 })
        #expect(try server.kubectl(k, ["rollout", "restart", "deployment/web"]).status == 0)
        r = try server.kubectl(k, ["rollout", "status", "deployment/web", "--timeout=60s"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(try server.kubectl(k, ["rollout", "pause", "deployment/web"]).status == 0)
        #expect(try server.kubectl(k, ["rollout", "resume", "deployment/web"]).status == 0)
        // Foreground deletion: the replica sets and pods go before the deployment.
        r = try server.kubectl(k, ["delete", "deployment", "web", "--cascade=foreground", "--timeout=60s"])
        #expect(r.status == 0, "\(r.err)")
        #expect(try wait {
            try server.kubectl(k, ["get", "rs,pods", "-l", "app=web", "--no-headers"]).out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        })
    }

    @Test(arguments: ["1.27", "1.33"])
    func unschedulablePodsAndJobs(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try start(lab)
        #expect(try wait { try server.kubectl(k, ["get", "nodes", "-o", "name"]).out.split(separator: "\n").count == 3 })
        let big = """
            apiVersion: v1
            kind: Pod
            metadata: {name: big}
            spec:
              containers: [{name: c, image: nginx, resources: {requests: {cpu: "100"}}}]
            """
        #expect(try server.kubectl(k, ["apply", "-f", "-"], input: big).status == 0)
        let message = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        let described = try wait {
            let d = try server.kubectl(k, ["describe", "pod", "big"]).out
            return d.contains("FailedScheduling") && d.split(whereSeparator: \.isWhitespace).joined(separator: " ").contains(message)
        }
        let text = try server.kubectl(k, ["describe", "pod", "big"]).out
        #expect(described, "\(text)")
        let job = """
            apiVersion: batch/v1
            kind: Job
            metadata: {name: pi}
            spec:
              completions: 5
              parallelism: 2
              template:
                metadata: {annotations: {switchyard.dev/fake-run-seconds: "0.3"}}
                spec:
                  restartPolicy: Never
                  containers: [{name: pi, image: perl, command: [perl, -e, "1"]}]
            """
        #expect(try server.kubectl(k, ["apply", "-f", "-"], input: job).status == 0)
        let r = try server.kubectl(k, ["wait", "--for=condition=complete", "job/pi", "--timeout=60s"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(try server.kubectl(k, ["get", "job", "pi", "-o", "jsonpath={.status.succeeded}"]).out == "5")
        // Namespace deletion empties it.
        #expect(try server.kubectl(k, ["create", "namespace", "scratch"]).status == 0)
        #expect(try server.kubectl(k, ["-n", "scratch", "create", "deployment", "tmp", "--image=nginx", "--replicas=2"]).status == 0)
        #expect(try wait { try server.kubectl(k, ["-n", "scratch", "get", "pods", "--no-headers"]).out.split(separator: "\n").count == 2 })
        #expect(try server.kubectl(k, ["delete", "namespace", "scratch", "--timeout=60s"]).status == 0)
        #expect(try wait { try server.kubectl(k, ["get", "namespace", "scratch"]).status != 0 })
    }
}

/// Two schedulers and two controller managers over one server: one of each leads (holds its
/// Lease and acts); killed, the other takes over within the lease time.
@Suite("leader election", .enabled(if: isRoot, "needs root for network namespaces"))
struct LeaderElectionTests {
    @Test func theOtherTakesOverWhenTheLeaderIsKilled() throws {
        guard let k = kubectlOrRecord("1.33") else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab, arguments: ["--disable-scheduler", "--disable-controller-manager"])
        let bin = try switchyardBinary()
        let election = ["--leader-elect", "--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms"]
        // Each candidate has a kubeconfig of its own, to be told apart (and killed) by it.
        for c in ["a", "b"] { try FileManager.default.copyItem(atPath: server.kubeconfig, toPath: server.kubeconfig + "-\(c)") }
        func holder(_ lease: String) throws -> String {
            try server.kubectl(k, ["-n", "kube-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}"]).out
        }
        func wait(_ seconds: Double, _ check: () throws -> Bool) rethrows -> Bool { try waitUntil(seconds, check) }
        for component in ["scheduler", "controller-manager"] {
            try lab.spawn(lab.node, [bin, component, "--kubeconfig", server.kubeconfig + "-a"] + election)
        }
        #expect(try wait(20) { try !holder("kube-scheduler").isEmpty && !holder("kube-controller-manager").isEmpty })
        let first = (try holder("kube-scheduler"), try holder("kube-controller-manager"))
        for component in ["scheduler", "controller-manager"] {
            try lab.spawn(lab.node, [bin, component, "--kubeconfig", server.kubeconfig + "-b"] + election)
        }
        // The second candidates wait: the holders stay, and the work is done once.
        sleep(2)
        #expect(try holder("kube-scheduler") == first.0 && holder("kube-controller-manager") == first.1)
        let fake = URL(fileURLWithPath: bin).deletingLastPathComponent().appendingPathComponent("switchyard-netlab").path
        try lab.spawn(lab.node, [fake, "stand-in", "--kubeconfig", server.kubeconfig, "--nodes", "", "--fake-nodes", "2"])
        #expect(try server.kubectl(k, ["create", "deployment", "one", "--image=nginx", "--replicas=2"]).status == 0)
        #expect(try wait(30) { try server.kubectl(k, ["get", "pods", "-l", "app=one", "-o", "jsonpath={.items[*].spec.nodeName}"]).out.split(separator: " ").count == 2 })
        // Kill the leaders (SIGKILL: no Lease given up); the others take over within the lease time.
        let killedAt = Date()
        _ = try Sh.run(["pkill", "-9", "-f", server.kubeconfig + "-a"])
        #expect(try wait(15) { try holder("kube-scheduler") != first.0 && holder("kube-controller-manager") != first.1 })
        let handover = Date().timeIntervalSince(killedAt)
        #expect(handover < 3 + 2 + 1, "handed over after \(handover) s")
        // And they act: a scale-up is scheduled.
        #expect(try server.kubectl(k, ["scale", "deployment", "one", "--replicas=4"]).status == 0)
        #expect(try wait(30) { try server.kubectl(k, ["get", "pods", "-l", "app=one", "-o", "jsonpath={.items[*].spec.nodeName}"]).out.split(separator: " ").count == 4 })
        _ = try Sh.run(["pkill", "-9", "-f", server.kubeconfig + "-b"])
    }
}
