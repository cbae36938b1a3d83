import ControllerKit
import CRI
import Foundation
import HostOS
import KubeAPI
@testable import Kubelet
import LabServices
import Testing

/// The kubelet with the real runtime: containerd in a node's namespace runs the pod, our CNI
/// plugin (called by containerd's libcni) gives it an address from the node's pod CIDR, and
/// the kubelet reports and ends it.
@Suite("kubelet on containerd", .serialized, .enabled(if: TestNode.available, "needs root, containerd, runc, docker-registry and busybox-static"))
struct KubeletContainerdTests {
    @Test func aPodRunsOnContainerdAndGoesWithoutATrace() async throws {
        let node = try await TestNode()
        let (_, api) = try await HandlerTransport.make()
        var c = KubeletConfiguration(nodeName: "node-\(node.id)")
        c.nodeIP = "192.0.2.20"
        c.rootDir = node.dir.appendingPathComponent("kubelet").path
        c.podLogsDir = node.dir.appendingPathComponent("pods").path
        c.cniConfDir = node.dir.appendingPathComponent("kubelet-cni").path
        c.nodeStatusUpdateFrequency = .milliseconds(500)
        c.relistPeriod = .milliseconds(200)
        let kubelet = Kubelet(api: api, runtime: node.cri, config: c)
        let task = Task { _ = try? await kubelet.run() }
        do {
            let ok = try await api.eventually(60) { (try? await api.get("/api/v1/nodes/\(c.nodeName)")) != nil }
            #expect(ok)
            let command: JSONValue = ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) in $POD_NAMESPACE > /www/index.html && exec httpd -f -p 8080 -h /www"]
            _ = try await api.create("/api/v1/namespaces/default/pods", [
                "apiVersion": "v1", "kind": "Pod", "metadata": ["name": "web"],
                "spec": ["nodeName": .string(c.nodeName), "terminationGracePeriodSeconds": 2,
                         "containers": [["name": "httpd", "image": "switchyard/busybox:latest", "command": command,
                                         "ports": [["name": "http", "containerPort": 8080]],
                                         "readinessProbe": ["httpGet": ["path": "/index.html", "port": "http"], "periodSeconds": 1],
                                         "livenessProbe": ["tcpSocket": ["port": 8080], "periodSeconds": 1, "initialDelaySeconds": 1],
                                         "env": [["name": "POD_NAMESPACE", "valueFrom": ["fieldRef": ["fieldPath": "metadata.namespace"]]]]]]]])
            // Running, and Ready once the HTTP readiness probe has passed.
            let running = try await api.eventually(90) {
                let p = try await api.get("/api/v1/namespaces/default/pods/web")
                return p[path: ["status", "phase"]] == "Running" && p[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
            }
            let pod = try await api.get("/api/v1/namespaces/default/pods/web")
            #expect(running, "\(pod["status"] ?? .null)\n\(node.containerd.logTail())")
            let ip = pod[path: ["status", "podIP"]]?.string ?? ""
            let prefix = node.subnet.split(separator: ".").prefix(3).joined(separator: ".") + "."
            #expect(ip.hasPrefix(prefix), "pod IP \(ip) not in \(node.subnet)")
            let cs = pod[path: ["status", "containerStatuses"]]?.array?.first ?? [:]
            #expect(cs["containerID"]?.string?.hasPrefix("containerd://") == true)
            #expect(cs["restartCount"] == 0)
            #expect(cs["imageID"]?.string?.hasPrefix("sha256:") == true || cs["imageID"]?.string?.contains("@sha256:") == true)
            var answer = ""
            for _ in 0..<50 where answer.isEmpty {
                answer = (try? CommandRunner(netns: node.netns).run(["curl", "-s", "-m", "2", "http://\(ip):8080/"], check: false))?.stdout ?? ""
                if answer.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answer == "hello from web in default\n")
            // The log as the kubelet and kubectl find it: PODLOGS/NS_NAME_UID/CONTAINER/0.log.
            let logDir = "\(c.podLogsDir)/default_web_\(pod.uid)/httpd"
            #expect(FileManager.default.fileExists(atPath: logDir + "/0.log"))

            _ = try await api.delete("/api/v1/namespaces/default/pods/web")
            let gone = try await api.eventually(60) {
                do { _ = try await api.get("/api/v1/namespaces/default/pods/web"); return false } catch let e as APIStatusError { return e.isNotFound }
            }
            #expect(gone)
            #expect(try await node.cri.listPodSandbox(nil).isEmpty)
            #expect(try await node.cri.listContainers(nil).isEmpty)
            let veths = node.node.podLinks()
            #expect(veths.isEmpty, "\(veths)")
        } catch {
            Issue.record("\(error)\n\(node.containerd.logTail())")
        }
        task.cancel()
        await node.close()
    }
}
