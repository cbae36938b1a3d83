import CRI
import Foundation
import HostOS
import Images
import LabServices
import Testing

/// A node's runtime for a test: a lab registry with the lab's images (on this namespace's
/// addresses), and a `RuntimeNode` (namespace, veth, our CNI plugins, containerd). `close()`
/// removes all of it.
final class TestNode: @unchecked Sendable {
    let node: RuntimeNode
    let registry: RegistryProcess
    var id: String { node.id }
    var dir: URL { node.dir }
    var netns: String { node.netns }
    var subnet: String { node.podCIDR }
    var containerd: ContainerdProcess { node.containerd }
    var cri: CRIClient { node.cri }

    static var available: Bool { RuntimeNode.available && FileManager.default.isExecutableFile(atPath: LabImages.busyboxPath) }

    /// The plugin binary this package built.
    static func pluginBinary() throws -> String { try builtBinary("switchyard-cni") }

    init() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-node-registry-\(UUID().uuidString.prefix(8))")
        let reg = try RegistryProcess(dir: dir, host: "0.0.0.0")
        do {
            _ = try await LabImages.pushAll(to: try RegistryClient(url: "http://127.0.0.1:\(reg.port)"), echo: try builtBinary("switchyard-echo"))
            node = try await RuntimeNode.make(registryPort: reg.port, pluginBinary: try Self.pluginBinary())
        } catch {
            reg.stop()
            throw error
        }
        registry = reg
    }

    func close() async {
        await node.close()
        registry.stop()
    }

    /// A sandbox configuration as the kubelet writes one.
    func sandboxConfig(_ name: String, namespace: String = "default") -> Runtime_V1_PodSandboxConfig {
        .with {
            $0.metadata = .with { $0.name = name; $0.namespace = namespace; $0.uid = UUID().uuidString.lowercased(); $0.attempt = 0 }
            $0.hostname = name
            $0.logDirectory = dir.appendingPathComponent("logs/\(name)").path
            $0.labels = ["io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace]
            $0.linux = .with { $0.cgroupParent = "" }
        }
    }
}

/// This package's executable `name` as `swift build` made it.
func builtBinary(_ name: String) throws -> String {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    guard let p = RuntimeNode.builtBinary(name, packageRoot: root) else { throw NotBuilt(name: name) }
    return p
}

struct NotBuilt: Error, CustomStringConvertible {
    var name: String
    var description: String { "\(name) is not built: run `swift build` first" }
}

@Suite("containerd through CRI", .serialized, .enabled(if: TestNode.available, "needs root, containerd, runc, docker-registry and busybox-static"))
struct ContainerdTests {
    /// The whole life of one pod as the kubelet drives it: the image pulled from the lab
    /// registry, a sandbox networked by our CNI plugin, a container created, started, exec'd
    /// into, stopped and removed, the sandbox stopped and removed, nothing left.
    @Test func aPodLivesAndGoesThroughCRI() async throws {
        let node = try await TestNode()
        do {
            let cri = node.cri
            let version = try await cri.version()
            #expect(version.runtimeName == "containerd")
            #expect(version.runtimeApiVersion == "v1")
            let ref = try await cri.pullImage("switchyard/busybox:latest", sandboxConfig: nil)
            #expect(ref.hasPrefix("sha256:"))
            let image = try await cri.imageStatus("switchyard/busybox:latest")
            #expect(image?.repoTags.contains("docker.io/switchyard/busybox:latest") == true)
            #expect(try await cri.imageStatus("switchyard/nothing:latest") == nil)

            let config = node.sandboxConfig("web")
            let sandbox = try await cri.runPodSandbox(config, runtimeHandler: "")
            let status = try await cri.podSandboxStatus(sandbox)
            #expect(status.state == .sandboxReady)
            let ip = status.network.ip
            let prefix = node.subnet.split(separator: ".").prefix(3).joined(separator: ".") + "."
            #expect(ip.hasPrefix(prefix), "sandbox IP \(ip) not in \(node.subnet)")

            let container = try await cri.createContainer(sandbox: sandbox, .with {
                $0.metadata = .with { $0.name = "main" }
                $0.image = .with { $0.image = ref }
                $0.command = ["sh", "-c", "echo started; mkdir -p /www; echo hello from $(hostname) > /www/index.html; exec httpd -f -p 8080 -h /www"]
                $0.envs = [.with { $0.key = "GREETING"; $0.value = Data("hello".utf8) }]
                $0.logPath = "main/0.log"
            }, sandboxConfig: config)
            try await cri.startContainer(container)
            let running = try await cri.containerStatus(container)
            #expect(running.state == .containerRunning)
            let exec = try await cri.execSync(container, cmd: ["sh", "-c", "echo $GREETING; hostname"], timeout: 10)
            #expect(exec.exitCode == 0)
            #expect(String(decoding: exec.stdout, as: UTF8.self) == "hello\nweb\n")
            let failing = try await cri.execSync(container, cmd: ["sh", "-c", "exit 3"], timeout: 10)
            #expect(failing.exitCode == 3)
            // The pod's address answers from the node (the bridge's side).
            var answer = ""
            for _ in 0..<50 where answer.isEmpty {
                answer = (try? CommandRunner(netns: node.netns).run(["curl", "-s", "-m", "2", "http://\(ip):8080/"], check: false))?.stdout ?? ""
                if answer.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answer == "hello from web\n")

            try await cri.stopContainer(container, timeout: 2)
            let stopped = try await cri.containerStatus(container)
            #expect(stopped.state == .containerExited)
            #expect(stopped.exitCode == 137 || stopped.exitCode == 143)
            let log = try String(contentsOfFile: config.logDirectory + "/main/0.log", encoding: .utf8)
            #expect(log.contains("stdout F started"))
            try await cri.removeContainer(container)
            try await cri.stopPodSandbox(sandbox)
            try await cri.removePodSandbox(sandbox)
            #expect(try await cri.listPodSandbox(nil).isEmpty)
            #expect(try await cri.listContainers(nil).isEmpty)
            do {
                _ = try await cri.containerStatus(container)
                Issue.record("a removed container still has a status")
            } catch let e as RuntimeError {
                #expect(e.isNotFound)
            }
            // Nothing of the pod left on the node: its veth is gone, its address free again.
            let links = node.node.podLinks()
            #expect(links.isEmpty, "\(links)")
        } catch {
            Issue.record("\(error)\n\(node.containerd.logTail())")
        }
        await node.close()
    }
}
