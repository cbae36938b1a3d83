import Foundation
import KubeAPI
import KubeClient
import NetnsKit
import Testing

/// The kubectl binaries the machine has (1.27 and 1.33 are the ones the issue names).
func kubectl(_ version: String) -> String? {
    let p = "/usr/lib/google-cloud-sdk/bin/kubectl.\(version)"
    return FileManager.default.isExecutableFile(atPath: p) ? p : nil
}

/// `kubectl(version)`, or a recorded issue saying it is not installed.
func kubectlOrRecord(_ version: String) -> String? {
    guard let k = kubectl(version) else {
        Issue.record("kubectl \(version) is not installed at /usr/lib/google-cloud-sdk/bin")
        return nil
    }
    return k
}

/// `switchyard server` in a lab's node namespace, on a port of its own, with a fresh data dir.
final class LabServer: @unchecked Sendable {
    let lab: Lab
    let dir: URL
    let kubeconfig: String
    let port: Int

    let etcd: EtcdProcess?

    /// `secure`: HTTPS on the secure port with the certificates the server makes (its cluster
    /// CA; the kubeconfig holds the admin's client certificate).
    /// `sharing`: on this etcd (every member), which other servers may share, instead of one
    /// of its own.
    init(lab: Lab, etcd: Bool = false, sharing shared: EtcdProcess? = nil, secure generated: Bool = false, arguments: [String] = []) throws {
        self.lab = lab
        self.etcd = try shared ?? (etcd ? EtcdProcess(netns: lab.node) : nil)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-server-\(lab.id)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        kubeconfig = dir.appendingPathComponent("kubeconfig").path
        port = Int.random(in: 20000...29999)
        // Plain HTTP on the insecure port, or HTTPS on the secure one for a test's certificates.
        let secure = generated || arguments.contains("--tls-cert-file") || arguments.contains("--client-ca-file")
        try lab.spawn(lab.node, [try switchyardBinary(), "server", "--data-dir", dir.path, secure ? "--secure-port" : "--port", String(port)]
                      + (self.etcd.map { ["--etcd-servers", $0.urls.joined(separator: ",")] } ?? []) + arguments)
        for _ in 0..<100 {
            if FileManager.default.fileExists(atPath: kubeconfig) { return }
            usleep(50_000)
        }
        throw LabError("switchyard server did not start")
    }

    /// kubectl against the server, inside the node namespace.
    @discardableResult
    func kubectl(_ bin: String, _ args: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try Sh.run(["ip", "netns", "exec", lab.node, bin, "--kubeconfig", kubeconfig] + args, input: input)
    }

    deinit { try? FileManager.default.removeItem(at: dir) }
}

@Suite("control plane: switchyard server with kubectl and the proxy", .enabled(if: isRoot, "needs root for network namespaces"))
struct ControlPlaneTests {
    static let service = """
        apiVersion: v1
        kind: Service
        metadata: {name: web, labels: {app: web}}
        spec:
          clusterIP: 10.96.0.50
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: 8080}]
        """

    static func pod(_ name: String) -> String {
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: \(name), labels: {app: web}}
        spec:
          nodeName: node-a
          containers: [{name: web, image: busybox, ports: [{containerPort: 8080}]}]
        """
    }

    /// kubectl makes a Service and Pods (their status set as a kubelet would), the EndpointSlice
    /// controller lists the ready ones, the proxy watching the server programs iptables, traffic
    /// from the client reaches the pods; deleting a pod takes it out of the rules.
    @Test(.enabled(if: kubectl("1.33") != nil, "kubectl 1.33 is not installed"))
    func kubectlServiceAndPodsReachTheProxy() async throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        try lab.addServingPods(tcpPort: 8080)
        try lab.routeFromClient("10.96.0.0/12")
        let server = try LabServer(lab: lab)

        var r = try server.kubectl(k, ["apply", "-f", "-"], input: Self.service + "\n---\n" + Self.pod("web-a") + "\n---\n" + Self.pod("web-b"))
        #expect(r.status == 0, "\(r.err)")
        for (name, ip) in [("web-a", "10.244.1.2"), ("web-b", "10.244.1.3")] {
            r = try server.kubectl(k, ["patch", "pod", name, "--subresource=status", "--type=merge", "-p",
                                       #"{"status":{"phase":"Running","podIP":"\#(ip)","conditions":[{"type":"Ready","status":"True"}]}}"#])
            #expect(r.status == 0, "\(r.err)")
        }
        var slices = ""
        for _ in 0..<50 {
            slices = try server.kubectl(k, ["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[*].endpoints[*].addresses[0]}"]).out
            if slices.split(separator: " ").count == 2 { break }
            usleep(50_000)
        }
        #expect(Set(slices.split(separator: " ")) == ["10.244.1.2", "10.244.1.3"], "endpoint slices: \(slices)")

        try lab.spawn(lab.node, [try switchyardBinary(), "proxy", "--proxy-mode", "iptables", "--hostname-override", "node-a",
                                 "--cluster-cidr", "10.244.0.0/16", "--kubeconfig", server.kubeconfig, "--min-sync-period", "100ms",
                                 "--metrics-bind-address", "", "--healthz-bind-address", ""])
        var seen = Set<String>()
        for _ in 0..<80 where seen.count < 2 {
            if let reply = lab.tcp("10.96.0.50", 80, timeout: 1) { seen.insert(reply) } else { usleep(100_000) }
        }
        #expect(seen == ["a", "b"], "both pods through the ClusterIP")

        // A pod goes: the controller drops it from the slice, the proxy from the rules. (It is
        // bound to node-a, whose kubelet the test plays: without one, a bound pod is only marked.)
        r = try server.kubectl(k, ["delete", "pod", "web-b", "--grace-period=0", "--force"])
        #expect(r.status == 0, "\(r.err)")
        var gone = false
        for _ in 0..<80 {
            if !(try Sh.must(["ip", "netns", "exec", lab.node, "iptables-save", "-t", "nat"])).contains("10.244.1.3:8080") { gone = true; break }
            usleep(100_000)
        }
        #expect(gone, "the deleted pod's endpoint leaves the rules")
        for _ in 0..<4 { #expect(lab.tcp("10.96.0.50", 80) == "a") }
    }

    /// The proxy follows the cluster's ServiceCIDRs as upstream's does: the nftables mode drops
    /// traffic to unallocated ClusterIPs of the server's `kubernetes` ServiceCIDR (no
    /// --service-cluster-ip-range given to the proxy), and of one added with kubectl, until it goes.
    @Test(.enabled(if: kubectl("1.33") != nil, "kubectl 1.33 is not installed"))
    func theProxyFollowsServiceCIDRs() async throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab, arguments: ["--service-cluster-ip-range", "10.96.0.0/16"])
        try lab.spawn(lab.node, [try switchyardBinary(), "proxy", "--proxy-mode", "nftables", "--hostname-override", "node-a",
                                 "--kubeconfig", server.kubeconfig, "--min-sync-period", "100ms",
                                 "--metrics-bind-address", "", "--healthz-bind-address", ""])
        func check() -> String {
            (try? Sh.run(["ip", "netns", "exec", lab.node, "nft", "list", "chain", "ip", "kube-proxy", "cluster-ips-check"]))?.out ?? ""
        }
        func eventually(_ what: (String) -> Bool) -> String {
            var text = ""
            for _ in 0..<100 {
                text = check()
                if what(text) { break }
                usleep(100_000)
            }
            return text
        }
        var text = eventually { $0.contains("10.96.0.0/16") }
        #expect(text.contains("ip daddr 10.96.0.0/16 drop comment \"Drop traffic to unallocated ClusterIPs\""), "\(text)")
        let extra = """
            apiVersion: networking.k8s.io/v1
            kind: ServiceCIDR
            metadata: {name: extra}
            spec: {cidrs: [10.100.0.0/24]}
            """
        var r = try server.kubectl(k, ["create", "-f", "-"], input: extra)
        #expect(r.status == 0, "\(r.err)")
        text = eventually { $0.contains("10.100.0.0/24") }
        #expect(text.contains("10.96.0.0/16") && text.contains("10.100.0.0/24"), "\(text)")
        r = try server.kubectl(k, ["delete", "servicecidr", "extra"])
        #expect(r.status == 0, "\(r.err)")
        text = eventually { !$0.contains("10.100.0.0/24") }
        #expect(!text.contains("10.100.0.0/24") && text.contains("10.96.0.0/16"), "\(text)")
    }

    /// The proxy's metrics as kube-proxy's: a Pod that turns ready after the proxy started is
    /// observed as network programming latency from its slice's last-change-trigger-time (which the
    /// EndpointSlice controller writes), the change counters move, the iptables rule gauges are per
    /// table, and /healthz answers with upstream's fields and is counted.
    @Test(.enabled(if: kubectl("1.33") != nil, "kubectl 1.33 is not installed"))
    func networkProgrammingLatencyFromTheTriggerAnnotation() async throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        var r = try server.kubectl(k, ["apply", "-f", "-"], input: Self.service + "\n---\n" + Self.pod("web-a"))
        #expect(r.status == 0, "\(r.err)")
        func ready(_ name: String, _ ip: String) throws {
            let now = ISO8601DateFormatter().string(from: Date())
            let patch = #"{"status":{"phase":"Running","podIP":"\#(ip)","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"\#(now)"}]}}"#
            let r = try server.kubectl(k, ["patch", "pod", name, "--subresource=status", "--type=merge", "-p", patch])
            #expect(r.status == 0, "\(r.err)")
        }
        try ready("web-a", "10.244.1.2")
        var annotation = ""
        for _ in 0..<50 where annotation.isEmpty {
            annotation = try server.kubectl(k, ["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o",
                                                #"jsonpath={.items[0].metadata.annotations.endpoints\.kubernetes\.io/last-change-trigger-time}"#]).out
            if annotation.isEmpty { usleep(50_000) }
        }
        #expect(annotation.hasSuffix("Z") && annotation.count >= 20, "the controller writes the trigger time: \(annotation)")

        let metricsPort = Int.random(in: 31000...39999)
        try lab.spawn(lab.node, [try switchyardBinary(), "proxy", "--proxy-mode", "iptables", "--hostname-override", "node-a",
                                 "--cluster-cidr", "10.244.0.0/16", "--kubeconfig", server.kubeconfig, "--min-sync-period", "100ms",
                                 "--metrics-bind-address", "127.0.0.1:\(metricsPort)", "--healthz-bind-address", "127.0.0.1:\(metricsPort + 1)"])
        func metrics() -> String {
            (try? Sh.run(["ip", "netns", "exec", lab.node, "curl", "-s", "http://127.0.0.1:\(metricsPort)/metrics"]))?.out ?? ""
        }
        func value(_ text: String, _ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        var text = ""
        for _ in 0..<100 {
            text = metrics()
            if (value(text, #"kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"}"#) ?? 0) > 0 { break }
            usleep(100_000)
        }
        let before = value(text, #"kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}"#) ?? -1
        #expect(before == 0, "slices from before the proxy started are not observed: \(before)")
        let changesBefore = value(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total") ?? -1
        #expect(changesBefore >= 1)

        // A second Pod turns ready: its slice change is observed once the rules are in place. (Its
        // Ready transition time has whole seconds: a second later, it is surely after the proxy's start.)
        sleep(1)
        r = try server.kubectl(k, ["apply", "-f", "-"], input: Self.pod("web-b"))
        #expect(r.status == 0, "\(r.err)")
        try ready("web-b", "10.244.1.3")
        var after = 0.0
        for _ in 0..<100 where after < 1 {
            text = metrics()
            after = value(text, #"kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}"#) ?? 0
            if after < 1 { usleep(100_000) }
        }
        #expect(after >= 1, "network programming latency observed: \(text)")
        let sum = value(text, #"kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}"#) ?? -1
        #expect(sum >= 0 && sum < 30, "a latency of seconds at most: \(sum)")
        #expect((value(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total") ?? 0) > changesBefore)
        #expect((value(text, #"kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="filter"}"#) ?? 0) > 0)
        #expect(value(text, #"kubeproxy_sync_proxy_rules_iptables_last{ip_family="IPv4",table="nat"}"#) != nil)

        let health = try Sh.run(["ip", "netns", "exec", lab.node, "curl", "-s", "http://127.0.0.1:\(metricsPort + 1)/healthz"]).out
        #expect(health.contains(#""healthy": true"#) && health.contains(#""status": {"IPv4": {"#) && health.contains(#""nodeEligible": true"#), "\(health)")
        #expect((value(metrics(), #"kubeproxy_proxy_healthz_total{code="200"}"#) ?? 0) >= 1)
    }

    /// kubectl's generators: 1.33 sends their objects as protobuf, 1.27 as JSON; both must
    /// arrive whole, zero replicas and string target ports included.
    @Test(arguments: ["1.27", "1.33"])
    func kubectlGenerators(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        func must(_ args: [String]) throws -> String {
            let r = try server.kubectl(k, args)
            #expect(r.status == 0, "kubectl \(args.joined(separator: " ")): \(r.err)")
            return r.out
        }
        _ = try must(["create", "namespace", "gen"])
        _ = try must(["-n", "gen", "create", "configmap", "cm", "--from-literal=a=b", "--from-literal=c=d"])
        _ = try must(["-n", "gen", "create", "secret", "generic", "sec", "--from-literal=k=v"])
        _ = try must(["-n", "gen", "create", "deployment", "web", "--image=nginx", "--replicas=0", "--port=80"])
        _ = try must(["-n", "gen", "expose", "deployment", "web", "--port=80", "--target-port=http", "--name=web"])
        _ = try must(["-n", "gen", "run", "p1", "--image=busybox", "--env=A=1", "--labels=app=p1", "--", "sleep", "100"])
        _ = try must(["-n", "gen", "create", "serviceaccount", "sa"])
        #expect(try must(["-n", "gen", "get", "cm", "cm", "-o", "jsonpath={.data.a}{.data.c}"]) == "bd")
        #expect(try must(["-n", "gen", "get", "secret", "sec", "-o", "jsonpath={.data.k} {.type}"]) == "dg== Opaque")
        #expect(try must(["-n", "gen", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]) == "0 nginx 80")
        #expect(try must(["-n", "gen", "get", "svc", "web", "-o", "jsonpath={.spec.selector.app} {.spec.ports[0].targetPort}"]) == "web http")
        #expect(try must(["-n", "gen", "get", "pod", "p1", "-o", "jsonpath={.spec.containers[0].args} {.spec.containers[0].env[0].value} {.metadata.labels.app}"]) == #"["sleep","100"] 1 p1"#)
        #expect(try must(["get", "ns", "gen", "-o", "jsonpath={.status.phase}"]) == "Active")
        #expect(try must(["-n", "gen", "get", "sa", "sa", "-o", "name"]).contains("serviceaccount/sa"))
    }

    /// The kubectl verbs the issue lists, with the oldest and newest kubectl on the machine, on
    /// SQLite and on a real etcd.
    @Test(arguments: ["1.27", "1.33"], EtcdProcess.available ? ["sqlite", "etcd"] : ["sqlite"])
    func kubectlVerbs(version: String, store: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab, etcd: store == "etcd")
        func must(_ args: [String], input: String? = nil) throws -> String {
            let r = try server.kubectl(k, args, input: input)
            #expect(r.status == 0, "kubectl \(args.joined(separator: " ")): \(r.err)")
            return r.out
        }
        let app = """
            apiVersion: v1
            kind: Namespace
            metadata: {name: demo}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: cfg, namespace: demo}
            data: {a: "1"}
            ---
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: d1, namespace: demo}
            spec:
              replicas: 1
              selector: {matchLabels: {app: d1}}
              template:
                metadata: {labels: {app: d1}}
                spec: {containers: [{name: c, image: nginx}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: svc, namespace: demo}
            spec: {selector: {app: d1}, ports: [{port: 80}]}
            """
        #expect(try must(["create", "-f", "-"], input: app).contains("deployment.apps/d1 created"))
        // Apply twice, the second time with a change.
        _ = try must(["apply", "-f", "-"], input: app)
        let changed = try must(["apply", "-f", "-"], input: app.replacingOccurrences(of: "a: \"1\"", with: "a: \"2\""))
        #expect(changed.contains("configmap/cfg configured"))
        #expect(try must(["-n", "demo", "get", "cm", "cfg", "-o", "jsonpath={.data.a}"]) == "2")
        // Tables.
        let table = try must(["-n", "demo", "get", "svc,deploy"])
        #expect(table.contains("CLUSTER-IP") && table.contains("UP-TO-DATE") && table.contains("service/svc"))
        // Scale, label, patch, describe.
        _ = try must(["-n", "demo", "scale", "deploy", "d1", "--replicas=3"])
        #expect(try must(["-n", "demo", "get", "deploy", "d1", "-o", "jsonpath={.spec.replicas}"]) == "3")
        _ = try must(["-n", "demo", "label", "cm", "cfg", "tier=x"])
        #expect(try must(["-n", "demo", "get", "cm", "-l", "tier=x", "-o", "name"]).contains("configmap/cfg"))
        _ = try must(["-n", "demo", "patch", "cm", "cfg", "--type=json", "-p", #"[{"op":"add","path":"/data/b","value":"3"}]"#])
        _ = try must(["-n", "demo", "patch", "deploy", "d1", "-p", #"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}}}"#])
        #expect(try must(["-n", "demo", "get", "deploy", "d1", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]) == "nginx:2")
        #expect(try must(["-n", "demo", "describe", "deploy", "d1"]).contains("3 desired"))
        // get -w sees a change made while it watches.
        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        watch.arguments = ["timeout", "6", "ip", "netns", "exec", lab.node, k, "--kubeconfig", server.kubeconfig, "-n", "demo", "get", "cm", "-w", "--no-headers"]
        let pipe = Pipe()
        watch.standardOutput = pipe
        watch.standardError = FileHandle.nullDevice
        try watch.run()
        usleep(1_500_000)
        _ = try must(["-n", "demo", "create", "-f", "-"], input: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\n")
        watch.waitUntilExit()
        let watched = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(watched.contains("late"), "get -w: \(watched)")
        // Errors kubectl users know.
        let missing = try server.kubectl(k, ["-n", "demo", "get", "cm", "nope"])
        #expect(missing.status != 0 && missing.err.contains("configmaps \"nope\" not found"))
        let dup = try server.kubectl(k, ["create", "-f", "-"], input: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: demo}\n")
        #expect(dup.status != 0 && dup.err.contains("already exists"))
        let bad = try server.kubectl(k, ["create", "-f", "-"], input: "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name, namespace: demo}\nspec: {ports: [{port: 80}]}\n")
        #expect(bad.status != 0 && bad.err.contains("is invalid"))
        // Delete.
        _ = try must(["delete", "-f", "-"], input: app)
        var nsGone = false
        for _ in 0..<100 {
            if try server.kubectl(k, ["get", "ns", "demo"]).status != 0 { nsGone = true; break }
            usleep(50_000)
        }
        #expect(nsGone)
    }
}

actor Acks {
    var names: [String] = []
    var count: Int { names.count }
    func add(_ n: String) { names.append(n) }
}

@Suite("switchyard server durability")
struct ServerDurabilityTests {
    /// Starts `switchyard server` on a data dir; returns the process and its client. A port
    /// another test holds (a random one can be taken: the userspace proxies' ranges, clients'
    /// ephemeral ports) makes the server exit at once: it is tried again on another port.
    static func start(_ dir: URL, port: Int) throws -> (Process, KubeClient) {
        var lastError = ""
        for attempt in 0..<5 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: try switchyardBinary())
            p.arguments = ["server", "--data-dir", dir.path, "--port", String(port + attempt * 97), "--log-level", "warning"]
            let errors = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = errors
            try? FileManager.default.removeItem(at: dir.appendingPathComponent("kubeconfig"))
            try p.run()
            // Up to a minute: beside the whole suite a debug server's start takes seconds.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline && p.isRunning {
                if let k = try? Kubeconfig.load(path: dir.appendingPathComponent("kubeconfig").path) {
                    // Its later warnings go nowhere, as before (the pipe is not read again).
                    errors.fileHandleForReading.readabilityHandler = { _ = $0.availableData }
                    return (p, KubeClient(config: k))
                }
                usleep(50_000)
            }
            if p.isRunning { p.terminate() }
            p.waitUntilExit()
            lastError = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }
        throw LabError("switchyard server did not start: \(lastError)")
    }

    /// Writes stream in while the server is killed with SIGKILL; after a restart on the same
    /// data dir every write that was acknowledged (201) is there.
    @Test func sigkillLosesNoAcknowledgedWrite() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-kill-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let port = Int.random(in: 30000...39999)
        let (server, client) = try Self.start(dir, port: port)
        let acks = Acks()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    for i in 0..<100_000 {
                        let name = "w\(w)-\(i)"
                        guard let r = try? await client.request("POST", "/api/v1/namespaces/default/configmaps",
                                                                body: ["metadata": ["name": .string(name)], "data": ["i": .string(String(i))]]) else { break }
                        if r.status == 201 { await acks.add(name) } else { break }
                    }
                }
            }
            group.addTask {
                // Killed mid-stream once a good number of writes went through (however loaded the machine is).
                for _ in 0..<600 where await acks.count < 200 { try await Task.sleep(for: .milliseconds(100)) }
                kill(server.processIdentifier, SIGKILL)
            }
            try await group.waitForAll()
        }
        let acked = await acks.names
        server.waitUntilExit()
        #expect(acked.count >= 200, "the writers got writes in before the kill: \(acked.count)")
        let (again, client2) = try Self.start(dir, port: port + 1)
        defer { again.terminate(); again.waitUntilExit() }
        let list = try await client2.request("GET", "/api/v1/namespaces/default/configmaps")
        let stored = Set(list.body["items"]?.array?.compactMap { $0[path: ["metadata", "name"]]?.string } ?? [])
        let lost = Set(acked).subtracting(stored)
        #expect(lost.isEmpty, "\(lost.count) acknowledged writes lost of \(acked.count)")
    }

    /// SIGTERM ends open watches and the server exits, rather than waiting out their timeout.
    @Test func sigtermEndsWatchesAndExits() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-term-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (server, client) = try Self.start(dir, port: Int.random(in: 40000...44999))
        let stream = try await client.watch("/api/v1/namespaces/default/configmaps", query: ["resourceVersion": "0"])
        try await Task.sleep(for: .milliseconds(300))
        server.terminate()
        let start = Date()
        var ended = false
        do {
            for try await _ in stream {}
            ended = true
        } catch {
            ended = true
        }
        let watchEnded = Date().timeIntervalSince(start)
        server.waitUntilExit()
        let exited = Date().timeIntervalSince(start)
        // Far below the watch's own timeout (1,800 s); the exit, which closes the store (a WAL
        // checkpoint and sync), is given more room: the whole suite shares two cores with a VM.
        #expect(ended && watchEnded < 10, "the watch ends: \(watchEnded) s")
        #expect(exited < 30, "the server exits: \(exited) s (the watch ended after \(watchEnded) s)")
    }
}

@Suite("KubeClient informer against switchyard server", .enabled(if: isRoot, "needs root for network namespaces"))
struct InformerTests {
    /// The list comes in pages (here of 2) and arrives whole; the watch then starts from the
    /// list's version, so a later write is the next event and nothing listed comes again.
    @Test func pagedListThenWatch() async throws {
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        var client = try KubeClient(url: "http://127.0.0.1:\(server.port)")
        let ns = lab.node
        client.dial = { (host: String, port: Int) throws -> Int32 in
            try inNamespace(ns) {
                guard let fd = TCP.connect(host, port) else { throw LabError("cannot reach \(host):\(port)") }
                return fd
            }
        }
        for i in 0..<7 {
            let r = try await client.request("POST", "/api/v1/namespaces/default/configmaps", body: ["metadata": ["name": .string("cm\(i)")], "data": ["i": .string("\(i)")]])
            #expect(r.status == 201)
        }
        var informer = Informer(client: client, path: "/api/v1/namespaces/default/configmaps")
        informer.pageSize = 2
        let events = Box<[InformerEvent]>([])
        let task = Task { await informer.run { e in events.append(e) } }
        defer { task.cancel() }
        for _ in 0..<100 where events.value.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        guard case .replace(let items)? = events.value.first else { Issue.record("no list: \(events.value)"); return }
        #expect(Set(items.compactMap { $0[path: ["metadata", "name"]]?.string }) == Set((0..<7).map { "cm\($0)" }))
        try await Task.sleep(for: .milliseconds(300))   // the watch is open
        _ = try await client.request("POST", "/api/v1/namespaces/default/configmaps", body: ["metadata": ["name": "late"]])
        for _ in 0..<100 where events.value.count < 2 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(events.value.count == 2)
        if case .upsert(let o)? = events.value.last { #expect(o[path: ["metadata", "name"]]?.string == "late") } else { Issue.record("no event for the write: \(events.value)") }
    }
}

final class Box<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ v: T) { _value = v }
    var value: T { lock.withLock { _value } }
    func append<E>(_ e: E) where T == [E] { lock.withLock { _value.append(e) } }
}

@Suite("switchyard server over TLS", .enabled(if: isRoot, "needs root for network namespaces"))
struct TLSServerTests {
    /// A self-signed certificate for 127.0.0.1 and its key, made with openssl.
    static func certificate(_ dir: URL, _ name: String) throws -> (cert: String, key: String) {
        let cert = dir.appendingPathComponent("\(name).crt").path, key = dir.appendingPathComponent("\(name).key").path
        try Sh.must(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=\(name)", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        return (cert, key)
    }

    /// kubectl and the proxy reach a server that serves HTTPS, trusting it through the
    /// kubeconfig the server wrote; a client trusting another certificate is refused, one told to
    /// skip verification is not.
    @Test(.enabled(if: kubectl("1.33") != nil, "kubectl 1.33 is not installed"))
    func kubectlAndTheProxyOverHTTPS() async throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-tls-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let serving = try Self.certificate(dir, "serving")
        let other = try Self.certificate(dir, "other")
        try lab.addServingPods(tcpPort: 8080)
        try lab.routeFromClient("10.96.0.0/12")
        let tokens = dir.appendingPathComponent("tokens.csv").path
        try "s3cret,admin,1,\"system:masters\"\nother,viewer,2\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        let server = try LabServer(lab: lab, arguments: ["--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                                                         "--token-auth-file", tokens])
        let written = try String(contentsOfFile: server.kubeconfig, encoding: .utf8)
        #expect(written.contains("server: https://127.0.0.1:\(server.port)") && written.contains("certificate-authority-data: "))
        #expect(written.contains(#"token: "s3cret""#))
        let mode = try FileManager.default.attributesOfItem(atPath: server.kubeconfig)[.posixPermissions] as? Int
        #expect(mode == 0o600, "the kubeconfig carries a token: its owner's alone")

        var r = try server.kubectl(k, ["apply", "-f", "-"], input: ControlPlaneTests.service + "\n---\n" + ControlPlaneTests.pod("web-a"))
        #expect(r.status == 0, "\(r.err)")
        r = try server.kubectl(k, ["patch", "pod", "web-a", "--subresource=status", "--type=merge", "-p",
                                   #"{"status":{"phase":"Running","podIP":"10.244.1.2","conditions":[{"type":"Ready","status":"True"}]}}"#])
        #expect(r.status == 0, "\(r.err)")

        // The proxy follows the server over HTTPS, as it would a real cluster's.
        try lab.spawn(lab.node, [try switchyardBinary(), "proxy", "--proxy-mode", "iptables", "--hostname-override", "node-a",
                                 "--cluster-cidr", "10.244.0.0/16", "--kubeconfig", server.kubeconfig, "--min-sync-period", "100ms",
                                 "--metrics-bind-address", "", "--healthz-bind-address", ""])
        var reply: String?
        for _ in 0..<80 where reply == nil {
            reply = lab.tcp("10.96.0.50", 80, timeout: 1)
            if reply == nil { usleep(100_000) }
        }
        #expect(reply == "a", "the pod through the ClusterIP")

        // KubeClient directly: the written kubeconfig (its token sent as a bearer), no token or
        // another one, another certificate as the authority, and verification skipped.
        let ns = lab.node
        func client(_ kubeconfig: String) throws -> KubeClient {
            var c = KubeClient(config: try Kubeconfig.parse(kubeconfig))
            c.dial = { (host: String, port: Int) throws -> Int32 in
                try inNamespace(ns) {
                    guard let fd = TCP.connect(host, port) else { throw LabError("cannot reach \(host):\(port)") }
                    return fd
                }
            }
            return c
        }
        let trusted = try client(written)
        #expect(trusted.config.token == "s3cret")
        #expect(try await trusted.request("GET", "/api/v1/namespaces/default/services/web").body[path: ["spec", "clusterIP"]] == "10.96.0.50")
        let anonymous = try client(written.replacingOccurrences(of: #"token: "s3cret""#, with: "username: x"))
        let denied = try await anonymous.request("GET", "/api/v1/namespaces")
        #expect(denied.status == 401 && denied.body["reason"] == "Unauthorized")
        #expect(try await anonymous.request("GET", "/version").status == 200, "/version is public")
        #expect(try await client(written.replacingOccurrences(of: #"token: "s3cret""#, with: "token: wrong")).request("GET", "/api/v1/namespaces").status == 401)
        #expect(try await client(written.replacingOccurrences(of: #"token: "s3cret""#, with: "token: other")).request("GET", "/api/v1/namespaces").status == 200)
        let otherPEM = try Data(contentsOf: URL(fileURLWithPath: other.cert)).base64EncodedString()
        let wrongCA = written.replacingOccurrences(of: #"certificate-authority-data: \S+"#, with: "certificate-authority-data: \(otherPEM)",
                                                       options: .regularExpression)
        await #expect(throws: (any Error).self, "a server whose certificate the authority did not sign is refused") {
            _ = try await client(wrongCA).request("GET", "/version")
        }
        let skip = wrongCA.replacingOccurrences(of: "certificate-authority-data:", with: "insecure-skip-tls-verify: true\n    x-unused:")
        #expect(try await client(skip).request("GET", "/version").status == 200)
    }
}
