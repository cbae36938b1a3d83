import ControllerKit
import Foundation
import HostOS
import KubeAPI
import KubeClient
import Kubelet
import LabServices
import NetnsKit
import Testing

/// A process of this package's `switchyard`, its output in a file; SIGTERM, then SIGKILL, when stopped.
final class Running: @unchecked Sendable {
    let process: Process
    let log: URL
    init(_ args: [String], log: URL) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process = CommandRunner.process(args)
        let out = try FileHandle(forWritingTo: log)
        process.standardOutput = out
        process.standardError = out
        try process.run()
    }
    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        for _ in 0..<150 where process.isRunning { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }
}

/// The whole path of the architecture on one node: `switchyard server` (with its scheduler and
/// controllers) beside the node, `switchyard agent` inside the node (the kubelet on containerd
/// and the proxy in the iptables mode), a Deployment and a Service applied through the API: the
/// pods are scheduled, run by containerd, networked by our CNI plugin, and answer through the
/// Service's ClusterIP from the node.
@Suite("switchyard agent", .serialized, .enabled(if: TestNode.available, "needs root, containerd, runc, docker-registry and busybox-static"))
struct AgentTests {
    @Test func aDeploymentRunsAndAnswersThroughItsService() async throws {
        let node = try await TestNode()
        let bin = try builtBinary("switchyard")
        let dir = node.dir
        var processes: [Running] = []
        do {
            let server = try Running([bin, "server", "--data-dir", dir.appendingPathComponent("server").path, "--bind-address", node.node.hostIP,
                                      "--secure-port", "0", "--log-level", "warning"], log: dir.appendingPathComponent("server.log"))
            processes.append(server)
            let kubeconfig = dir.appendingPathComponent("server/kubeconfig").path
            var config: Kubeconfig?
            for _ in 0..<400 where config == nil {
                config = try? Kubeconfig.load(path: kubeconfig)
                if config == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            let api = API(KubeClient(config: try #require(config, "the server did not start: \(server.output)")), fieldManager: "test")
            // A static pod from the node's manifest directory.
            let manifests = dir.appendingPathComponent("manifests")
            try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
            try """
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello", "namespace": "kube-system"},
             "spec": {"terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "main", "image": "switchyard/busybox:latest", "command": ["sh", "-c", "echo static hello; exec sleep 3600"]}]}}
            """.write(to: manifests.appendingPathComponent("hello.json"), atomically: true, encoding: .utf8)
            let kubeletConfig = dir.appendingPathComponent("kubelet.yaml")
            // The file's defaults secure the kubelet's API: no anonymous requests, tokens and
            // decisions asked of the API server; the server's kubelet client certificate is
            // verified against the cluster CA (logs and exec below go through it).
            try """
            apiVersion: kubelet.config.k8s.io/v1beta1
            kind: KubeletConfiguration
            fileCheckFrequency: 1s
            authentication:
              x509:
                clientCAFile: \(dir.appendingPathComponent("server/pki/ca.crt").path)
            """.write(to: kubeletConfig, atomically: true, encoding: .utf8)
            let agent = try Running(["nsenter", "--net=/run/netns/\(node.netns)", bin, "agent", "--kubeconfig", kubeconfig,
                                     "--hostname-override", "node-x", "--node-ip", node.node.nodeIP,
                                     "--container-runtime-endpoint", node.containerd.endpoint,
                                     "--root-dir", dir.appendingPathComponent("kubelet").path, "--pod-logs-dir", dir.appendingPathComponent("pods").path,
                                     "--cni-conf-dir", node.node.cniConfDir, "--proxy-mode", "iptables", "--pod-manifest-path", manifests.path, "--kubelet-config", kubeletConfig.path,
                                     "--healthz-bind-address", "", "--metrics-bind-address", ""],
                                    log: dir.appendingPathComponent("agent.log"))
            processes.append(agent)
            let ready = try await api.eventually(120) {
                try await api.get("/api/v1/nodes/node-x")[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
            }
            #expect(ready, "the node is not Ready:\n\(agent.output)")
            let command: JSONValue = ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && echo starting && echo serving on 8080 && exec httpd -f -p 8080 -h /www"]
            _ = try await api.create("/apis/apps/v1/namespaces/default/deployments", [
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "web"],
                "spec": ["replicas": 2, "selector": ["matchLabels": ["app": "web"]],
                         "template": ["metadata": ["labels": ["app": "web"]],
                                      "spec": ["terminationGracePeriodSeconds": 1,
                                               "containers": [["name": "httpd", "image": "switchyard/busybox:latest", "command": command,
                                                               "ports": [["containerPort": 8080]],
                                                               "readinessProbe": ["httpGet": ["path": "/", "port": 8080], "periodSeconds": 1]]]]]]])
            let service = try await api.create("/api/v1/namespaces/default/services", [
                "apiVersion": "v1", "kind": "Service", "metadata": ["name": "web"],
                "spec": ["selector": ["app": "web"], "ports": [["port": 80, "targetPort": 8080]]]])
            let clusterIP = service[path: ["spec", "clusterIP"]]?.string ?? ""
            let running = try await api.eventually(180) {
                let pods = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=web"])["items"]?.array ?? []
                return pods.count == 2 && pods.allSatisfy { $0[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True" }
            }
            #expect(running, "the Deployment's pods are not Ready:\n\(agent.output.suffix(3000))")
            // Through the ClusterIP from the node (the proxy's rules in the node's namespace): both pods answer.
            var answers = Set<String>()
            for _ in 0..<100 where answers.count < 2 {
                let r = try? CommandRunner(netns: node.netns).run(["curl", "-s", "-m", "2", "http://\(clusterIP):80/"], check: false)
                if let out = r?.stdout, out.hasPrefix("hello from web-") { answers.insert(out) } else { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answers.count == 2, "answers through \(clusterIP): \(answers)\n\(agent.output.suffix(3000))")
            try await logsAndExec(api: api, kubeconfig: kubeconfig, agent: agent, dirForLogs: dir)
            try await echoImage(api: api, node: node, agent: agent)
            // Scaled to zero: the pods go from the API and from the runtime.
            _ = try await api.mergePatch("/apis/apps/v1/namespaces/default/deployments/web", ["spec": ["replicas": 0]])
            let gone = try await api.eventually(120) {
                let pods = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=web"])["items"]?.array ?? []
                return pods.isEmpty
            }
            #expect(gone)
            // Only the static pod is left; its manifest removed, it goes too.
            let onlyStatic = try await api.eventually(60) { try await node.cri.listPodSandbox(nil).map(\.metadata.name) == ["hello-node-x"] }
            #expect(onlyStatic)
            try FileManager.default.removeItem(at: manifests.appendingPathComponent("hello.json"))
            let emptied = try await api.eventually(60) { try await node.cri.listPodSandbox(nil).isEmpty }
            #expect(emptied)
            let mirrorGone = try await api.eventually(30) { (try? await api.get("/api/v1/namespaces/kube-system/pods/hello-node-x")) == nil }
            #expect(mirrorGone)
        } catch {
            Issue.record("\(error)\n\(processes.map { $0.output.suffix(2000) }.joined(separator: "\n"))")
        }
        for p in processes.reversed() { p.stop() }
        await node.close()
    }

    /// The lab's own workload image, `switchyard/echo` (this package's statically linked
    /// `switchyard-echo`, alone in its image): through a Service, HTTP answers with the pod's name
    /// and the client's address, UDP with the pod's name, TCP echoes.
    func echoImage(api: API, node: TestNode, agent: Running) async throws {
        _ = try await api.create("/apis/apps/v1/namespaces/default/deployments", [
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "echo"],
            "spec": ["replicas": 1, "selector": ["matchLabels": ["app": "echo"]],
                     "template": ["metadata": ["labels": ["app": "echo"]],
                                  "spec": ["terminationGracePeriodSeconds": 1,
                                           "containers": [["name": "echo", "image": "switchyard/echo:latest",
                                                           "readinessProbe": ["tcpSocket": ["port": 9090], "periodSeconds": 1]]]]]]])
        let service = try await api.create("/api/v1/namespaces/default/services", [
            "apiVersion": "v1", "kind": "Service", "metadata": ["name": "echo"],
            "spec": ["selector": ["app": "echo"], "ports": [["name": "http", "port": 80, "targetPort": 8080],
                                                            ["name": "udp", "port": 9090, "protocol": "UDP"],
                                                            ["name": "tcp", "port": 9090, "protocol": "TCP"]]]])
        let ip = service[path: ["spec", "clusterIP"]]?.string ?? ""
        var pod = ""
        let ready = try await api.eventually(120) {
            let pods = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=echo"])["items"]?.array ?? []
            pod = pods.first?.name ?? ""
            return pods.first?[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
        }
        #expect(ready, "the echo pod is not Ready:\n\(agent.output.suffix(2000))")
        var http = ""
        for _ in 0..<50 where !http.hasPrefix(pod + " ") {
            http = (try? CommandRunner(netns: node.netns).run(["curl", "-s", "-m", "2", "http://\(ip)/"], check: false))?.stdout ?? ""
            if !http.hasPrefix(pod + " ") { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(http.hasPrefix(pod + " ") && http.hasSuffix("\n"), "HTTP through \(ip): \(http)")
        var udp: String?
        for _ in 0..<20 where udp == nil { udp = Netns.udp(from: node.netns, to: ip, port: 9090) }
        #expect(udp == pod, "UDP through \(ip): \(udp ?? "no answer")")
        let echoed = try CommandRunner(netns: node.netns).run(["sh", "-c", "printf 'ping\\n' | timeout 3 busybox nc \(ip) 9090"], check: false)
        #expect(echoed.stdout == "ping\n", "TCP echo through \(ip): \(echoed)")
        _ = try await api.delete("/apis/apps/v1/namespaces/default/deployments/echo")
    }

    /// `kubectl logs` and `kubectl exec`, as a user runs them: through the API server to the
    /// node's kubelet (HTTPS on its port 10250), the exec over WebSocket (kubectl 1.33); an older
    /// kubectl that only speaks SPDY is told why it cannot.
    func logsAndExec(api: API, kubeconfig: String, agent: Running, dirForLogs: URL) async throws {
        let kubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
        guard FileManager.default.isExecutableFile(atPath: kubectl) else { Issue.record("\(kubectl) is not installed"); return }
        let pods = try await api.list("/api/v1/namespaces/default/pods", query: ["labelSelector": "app=web"])["items"]?.array ?? []
        let pod = try #require(pods.first).name
        func run(_ args: [String], _ k: String = kubectl) throws -> CommandRunner.Result {
            try CommandRunner().run([k, "--kubeconfig", kubeconfig] + args, check: false, timeout: .seconds(30))
        }
        let logs = try run(["logs", pod])
        #expect(logs.status == 0 && logs.stdout == "starting\nserving on 8080\n", "kubectl logs: \(logs)\n\(agent.output.suffix(2000))")
        let tail = try run(["logs", pod, "--tail=1", "--timestamps"])
        #expect(tail.stdout.hasSuffix("Z serving on 8080\n") && !tail.stdout.contains("starting") && tail.stdout.split(separator: "\n").count == 1,
                "kubectl logs --tail=1 --timestamps: \(tail)")
        let wrong = try run(["logs", pod, "-c", "nope"])
        #expect(wrong.status != 0 && wrong.stderr.contains("container nope is not valid for pod \(pod)"), "\(wrong)")
        let noPrevious = try run(["logs", pod, "--previous"])
        #expect(noPrevious.status != 0 && noPrevious.stderr.contains("previous terminated container \"httpd\" in pod \"\(pod)\" not found"), "\(noPrevious)")

        let cat = try run(["exec", pod, "--", "cat", "/www/index.html"])
        #expect(cat.status == 0 && cat.stdout == "hello from \(pod)\n", "kubectl exec: \(cat)\n\(agent.output.suffix(2000))")
        // The ServiceAccount admission plugin's projected volume: the pod's token (bound to it,
        // from TokenRequest through the kubelet), the cluster CA and the namespace.
        let namespace = try run(["exec", pod, "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"])
        #expect(namespace.stdout == "default", "\(namespace)")
        let caFile = try run(["exec", pod, "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"])
        #expect(caFile.stdout.hasPrefix("-----BEGIN CERTIFICATE-----"), "\(caFile)")
        let token = try run(["exec", pod, "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"]).stdout
        let review = try await api.create("/apis/authentication.k8s.io/v1/tokenreviews",
                                          ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": ["token": .string(token)]])
        #expect(review[path: ["status", "user", "username"]] == "system:serviceaccount:default:default"
                && review[path: ["status", "user", "extra", "authentication.kubernetes.io/pod-name"]] == [.string(pod)], "the pod's token: \(review)")
        let failing = try run(["exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(failing.status == 3 && failing.stdout == "out\n" && failing.stderr.contains("err"), "kubectl exec exiting 3: \(failing)")
        // Interactive (-i): stdin reaches the command through the runtime's streaming server.
        let interactive = try CommandRunner().run([kubectl, "--kubeconfig", kubeconfig, "exec", "-i", pod, "--", "sh", "-c", "read x; echo got $x; exit 4"],
                                                  input: "hello\n", check: false, timeout: .seconds(30))
        #expect(interactive.status == 4 && interactive.stdout == "got hello\n", "kubectl exec -i: \(interactive)\n\(agent.output.suffix(2000))")
        // With a TTY (-it, under `script` for a terminal): the command's stdin is a terminal.
        let tty = try CommandRunner().run(["script", "-q", "-e", "-c", "\(kubectl) --kubeconfig \(kubeconfig) exec -it \(pod) -- tty", "/dev/null"],
                                          input: "", check: false, timeout: .seconds(30))
        #expect(tty.status == 0 && tty.stdout.contains("/dev/pts/"), "kubectl exec -it: \(tty)")
        let wrongExec = try run(["exec", pod, "-c", "nope", "--", "true"])
        #expect(wrongExec.status != 0 && wrongExec.stderr.contains("container nope is not valid for pod \(pod)"), "\(wrongExec)")
        let missing = try run(["exec", "no-such-pod", "--", "true"])
        #expect(missing.status != 0 && missing.stderr.contains("pods \"no-such-pod\" not found"), "\(missing)")
        // `kubectl logs -f` follows: what the container writes later comes through.
        let followed = dirForLogs.appendingPathComponent("follow.log")
        let follow = try Running([kubectl, "--kubeconfig", kubeconfig, "logs", "-f", pod], log: followed)
        defer { follow.stop() }
        try await Task.sleep(for: .milliseconds(500))
        _ = try run(["exec", pod, "--", "sh", "-c", "echo written later > /proc/1/fd/1"])
        var seen = ""
        for _ in 0..<50 where !seen.contains("written later") {
            try await Task.sleep(for: .milliseconds(100))
            seen = follow.output
        }
        #expect(seen == "starting\nserving on 8080\nwritten later\n" && follow.process.isRunning, "kubectl logs -f: \(seen)")
        // The static pod: its mirror in the API, Running, its log through the kubelet.
        let mirrorRuns = try await api.eventually(60) {
            (try? await api.get("/api/v1/namespaces/kube-system/pods/hello-node-x"))?[path: ["status", "phase"]] == "Running"
        }
        #expect(mirrorRuns, "the static pod's mirror: \(agent.output.suffix(2000))")
        let staticLogs = try run(["logs", "-n", "kube-system", "hello-node-x"])
        #expect(staticLogs.stdout == "static hello\n", "kubectl logs of the static pod: \(staticLogs)")
        let spdy = "/usr/lib/google-cloud-sdk/bin/kubectl.1.29"
        if FileManager.default.isExecutableFile(atPath: spdy) {
            let old = try run(["exec", pod, "--", "true"], spdy)
            #expect(old.status != 0 && old.stderr.contains("Upgrade request required"), "kubectl 1.29 (SPDY): \(old)")
        }
    }
}

/// A node that joins as kubeadm's do: `switchyard token create --print-join-command` on the
/// control plane, that command on the node. Token discovery checks the server against the CA
/// hash, the kubelet asks for its client certificate with the token, the approver and signer
/// in the controller manager answer, and the node runs as `system:node:NAME` under
/// `--authorization-mode Node,RBAC`; with a 40 s signing duration it rotates its certificate
/// and keeps its heartbeat past the first certificate's end.
@Suite("switchyard agent joining with a token", .serialized, .enabled(if: TestNode.available, "needs root, containerd, runc, docker-registry and busybox-static"))
struct AgentJoinTests {
    @Test func aNodeJoinsWithATokenAndRotatesItsCertificate() async throws {
        let node = try await TestNode()
        let bin = try builtBinary("switchyard")
        let dir = node.dir
        var processes: [Running] = []
        do {
            let server = try Running([bin, "server", "--data-dir", dir.appendingPathComponent("server").path, "--bind-address", node.node.hostIP,
                                      "--secure-port", "0", "--log-level", "warning", "--authorization-mode", "Node,RBAC",
                                      "--enable-admission-plugins", "NodeRestriction", "--enable-bootstrap-token-auth",
                                      "--cluster-signing-duration", "40s", "--use-service-account-credentials"], log: dir.appendingPathComponent("server.log"))
            processes.append(server)
            let kubeconfig = dir.appendingPathComponent("server/kubeconfig").path
            var config: Kubeconfig?
            for _ in 0..<400 where config == nil {
                config = try? Kubeconfig.load(path: kubeconfig)
                if config == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            let api = API(KubeClient(config: try #require(config, "the server did not start: \(server.output)")), fieldManager: "test")
            let join = try CommandRunner().run([bin, "token", "create", "--kubeconfig", kubeconfig, "--print-join-command"], check: false)
            let words = join.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
            #expect(words.count == 8 && words[1] == "agent" && words[6] == "--ca-cert-hash" && words[7].hasPrefix("sha256:"), "\(join)")
            let tokenID = words.count > 5 ? String(words[5].prefix(6)) : ""
            // A wrong pin is refused before anything is asked of the server.
            var wrong = words
            if wrong.count == 8 { wrong[7] = "sha256:" + String(repeating: "0", count: 64) }
            let refused = try CommandRunner().run(["nsenter", "--net=/run/netns/\(node.netns)", bin] + wrong.dropFirst()
                                                  + ["--hostname-override", "node-y", "--root-dir", dir.appendingPathComponent("wrong").path,
                                                     "--container-runtime-endpoint", node.containerd.endpoint], check: false)
            #expect(refused.status != 0 && refused.stderr.contains("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys"), "\(refused)")
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("wrong/kubeconfig").path))

            let root = dir.appendingPathComponent("kubelet")
            let agent = try Running(["nsenter", "--net=/run/netns/\(node.netns)", bin] + words.dropFirst()
                                    + ["--hostname-override", "node-x", "--node-ip", node.node.nodeIP,
                                       "--container-runtime-endpoint", node.containerd.endpoint,
                                       "--root-dir", root.path, "--pod-logs-dir", dir.appendingPathComponent("pods").path,
                                       "--cni-conf-dir", node.node.cniConfDir, "--proxy-mode", "iptables",
                                       "--client-ca-file", dir.appendingPathComponent("server/pki/ca.crt").path, "--anonymous-auth=false",
                                       "--authentication-token-webhook", "--authorization-mode", "Webhook",
                                       "--authorization-webhook-cache-unauthorized-ttl", "2s",
                                       "--healthz-bind-address", "", "--metrics-bind-address", ""],
                                    log: dir.appendingPathComponent("agent.log"))
            processes.append(agent)
            let ready = try await api.eventually(120) {
                try await api.get("/api/v1/nodes/node-x")[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
            }
            #expect(ready, "the node is not Ready:\n\(agent.output.suffix(3000))")
            // The first certificate: asked with the token, approved by the SubjectAccessReview.
            let requests = try await api.list("/apis/certificates.k8s.io/v1/certificatesigningrequests")["items"]?.array ?? []
            let first = requests.first { $0[path: ["spec", "username"]]?.string == "system:bootstrap:" + tokenID }
            #expect(first?[path: ["status", "conditions"]]?.array?.first?["reason"]?.string == "AutoApproved", "\(requests)")
            #expect(first?[path: ["status", "conditions"]]?.array?.first?["message"]?.string == "Auto approving kubelet client certificate after SubjectAccessReview.")
            #expect(first?[path: ["spec", "groups"]]?.array?.contains("system:bootstrappers:kubeadm:default-node-token") == true)
            // The node's kubeconfig names the kubelet's pair; kubectl with it is the node.
            let nodeKubeconfig = root.appendingPathComponent("kubeconfig").path
            let kubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
            let whoami = try CommandRunner().run([kubectl, "--kubeconfig", nodeKubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"], check: false)
            #expect(whoami.stdout == #"system:node:node-x ["system:nodes","system:authenticated"]"#, "\(whoami)")
            let secrets = try CommandRunner().run([kubectl, "--kubeconfig", nodeKubeconfig, "get", "secrets", "-n", "kube-system"], check: false)
            #expect(secrets.status != 0 && secrets.stderr.contains("forbidden"), "a node does not list secrets: \(secrets)")
            try await Self.kubeletAPIAccess(api: api, kubectl: kubectl, kubeconfig: kubeconfig, nodeKubeconfig: nodeKubeconfig, node: node, root: root)

            // Rotation: a second request, by the node itself, approved as a renewal; then the
            // first certificate ends and the node's Lease is still renewed.
            let pem = root.appendingPathComponent("pki/kubelet-client-current.pem")
            let firstPEM = try String(contentsOf: pem, encoding: .utf8)
            let renewed = try await api.eventually(60) {
                let items = try await api.list("/apis/certificates.k8s.io/v1/certificatesigningrequests")["items"]?.array ?? []
                return items.contains { $0[path: ["spec", "username"]]?.string == "system:node:node-x"
                    && $0[path: ["status", "conditions"]]?.array?.first?["message"]?.string == "Auto approving self kubelet client certificate after SubjectAccessReview."
                    && $0[path: ["status", "certificate"]] != nil }
            }
            #expect(renewed, "no renewal:\n\(agent.output.suffix(3000))")
            let rotated = try await api.eventually(20) { (try? String(contentsOf: pem, encoding: .utf8)) != firstPEM }
            #expect(rotated)
            let firstEnd = try #require(Self.notAfter(firstPEM))
            let sleep = firstEnd.timeIntervalSinceNow + 2
            if sleep > 0 { try await Task.sleep(for: .seconds(sleep)) }
            let heartbeat = try await api.eventually(30) {
                let renew = try await api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-x")[path: ["spec", "renewTime"]]?.string
                return renew.flatMap(Time.parse).map { $0 > firstEnd } ?? false
            }
            #expect(heartbeat, "the node's Lease is not renewed after its first certificate ended:\n\(agent.output.suffix(3000))")
            // Renewed when due, not over and over.
            let renewals = try await api.list("/apis/certificates.k8s.io/v1/certificatesigningrequests")["items"]?.array?
                .filter { $0[path: ["spec", "username"]]?.string == "system:node:node-x" }.count ?? 0
            #expect((1...3).contains(renewals), "\(renewals) renewals")
        } catch {
            Issue.record("\(error)\n\(processes.map { $0.output.suffix(2000) }.joined(separator: "\n"))")
        }
        for p in processes.reversed() { p.stop() }
        await node.close()
    }

    /// The kubelet's API (:10250) with `--anonymous-auth=false`, the token webhook and the
    /// Webhook authorizer, as a kubeadm node's: who gets in, and what each may do.
    static func kubeletAPIAccess(api: API, kubectl: String, kubeconfig: String, nodeKubeconfig: String, node: TestNode, root: URL) async throws {
        let port = try await api.get("/api/v1/nodes/node-x")[path: ["status", "daemonEndpoints", "kubeletEndpoint", "Port"]]?.int ?? 0
        let url = "https://\(node.node.nodeIP):\(port)/pods"
        func curl(_ extra: [String]) throws -> String {
            let r = try CommandRunner().run(["curl", "-sk", "--max-time", "20", "-w", " %{http_code}", url] + extra, check: false)
            return r.stdout.replacingOccurrences(of: "\n", with: "")
        }
        #expect(try curl([]) == "Unauthorized 401", "no credentials")
        #expect(try curl(["-H", "Authorization: Bearer not-a-token"]) == "Unauthorized 401", "a bad token")
        // The node's own certificate (system:node:node-x) authenticates, but RBAC gives nodes no
        // nodes/proxy nor nodes/pods.
        let pem = root.appendingPathComponent("pki/kubelet-client-current.pem").path
        let own = try curl(["--cert", pem, "--key", pem])
        #expect(own == "Forbidden (user=system:node:node-x, verb=get, resource=nodes, subresource=proxy) 403", "\(own)")
        // A service account's token: reviewed by the API server (TokenReview), refused by RBAC,
        // then allowed once bound to system:kubelet-api-admin.
        let token = try CommandRunner().run([kubectl, "--kubeconfig", kubeconfig, "create", "token", "default", "-n", "default"], check: false)
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try curl(["-H", "Authorization: Bearer \(token)"])
                == "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource=proxy) 403")
        _ = try await api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": ["name": "default-kubelet-api"],
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"],
            "subjects": [["kind": "ServiceAccount", "name": "default", "namespace": "default"]],
        ])
        // The refusal was kept for the unauthorized TTL (2 s here): a new decision after it.
        let allowed = try await api.eventually(30) {
            let out = try curl(["-H", "Authorization: Bearer \(token)"])
            return out.hasSuffix(" 200") && out.contains("\"kind\":\"PodList\"")
        }
        #expect(allowed)
    }

    static func notAfter(_ pem: String) -> Date? {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-cert-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try? pem.write(to: dir.appendingPathComponent(KubeletClientCertificate.fileName), atomically: true, encoding: .utf8)
        return KubeletClientCertificate.current(certDir: dir.path)?.notAfter
    }
}

/// The kubelet's client-certificate bookkeeping, apart from a cluster.
@Suite("kubelet client certificate")
struct KubeletClientCertificateTests {
    @Test func tokensAndDeadlines() throws {
        #expect(try KubeletClientCertificate.parseToken("abcdef.0123456789abcdef") == ("abcdef", "0123456789abcdef"))
        for bad in ["abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdefg", "abcdef.0123456789abcde!", "abcdef..0123456789abcdef"] {
            #expect(throws: KubeletClientCertificate.Failure.self) { try KubeletClientCertificate.parseToken(bad) }
        }
        let start = Date(timeIntervalSince1970: 1_000_000)
        // A year's certificate: 70 to 90 % through it.
        let year = start.addingTimeInterval(365 * 86400)
        let d = KubeletClientCertificate.rotationDeadline(notBefore: start, notAfter: year)
        #expect(d >= start.addingTimeInterval(0.7 * 365 * 86400) && d <= start.addingTimeInterval(0.9 * 365 * 86400))
        // A short one, backdated five minutes: counted from when it was received, not from notBefore.
        let received = start.addingTimeInterval(300)
        let short = KubeletClientCertificate.rotationDeadline(notBefore: start, notAfter: received.addingTimeInterval(40), received: received, jitter: 0.8)
        #expect(abs(short.timeIntervalSince(received) - 32) < 0.001)
    }
}
