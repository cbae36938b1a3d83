import CRI
import Foundation
import HostOS
import Images
import LabServices
import Testing

/// A node's runtime for a test: a lab registry with the lab's images, a network namespace
/// standing for the node, our CNI plugins under the names containerd runs them by, and a
/// containerd of its own inside the namespace. `close()` removes all of it.
final class TestNode: @unchecked Sendable {
    let id = String(UUID().uuidString.prefix(8)).lowercased()
    let dir: URL
    let netns: String
    let registry: RegistryProcess
    let containerd: ContainerdProcess
    let cri: CRIClient
    let subnet: String

    static var available: Bool {
        geteuid() == 0 && ContainerdProcess.available && RegistryProcess.available && FileManager.default.isExecutableFile(atPath: LabImages.busyboxPath)
    }

    /// The plugin binary this package built.
    static func pluginBinary() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for d in [".build/debug", ".build/release"] {
            let p = root.appendingPathComponent(d).appendingPathComponent("switchyard-cni").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw NotBuilt()
    }

    init(subnet: String = "10.77.\(Int.random(in: 1...250)).0/24") async throws {
        self.subnet = subnet
        let id = self.id
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-node-\(id)")
        let netns = "sy-node-\(id)"
        self.dir = dir
        self.netns = netns
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        var cleanup: [() -> Void] = [{ try? fm.removeItem(at: dir) }]
        do {
            try CommandRunner().run(["ip", "netns", "add", netns])
            cleanup.append { _ = try? CommandRunner().run(["ip", "netns", "del", netns], check: false) }
            try CommandRunner(netns: netns).run(["ip", "link", "set", "lo", "up"])
            // The node reached from this process as from a machine beside it: a veth pair, and
            // the node's pod range routed through it (a kubelet here probes the pods by address).
            let third = subnet.split(separator: ".")[2]
            let (host, inside) = ("syh\(id.prefix(6))", "syn\(id.prefix(6))")
            try CommandRunner().run(["ip", "link", "add", host, "type", "veth", "peer", "name", inside, "netns", netns])
            try CommandRunner().run(["ip", "addr", "add", "10.78.\(third).1/30", "dev", host])
            try CommandRunner().run(["ip", "link", "set", host, "up"])
            try CommandRunner(netns: netns).run(["ip", "addr", "add", "10.78.\(third).2/30", "dev", inside])
            try CommandRunner(netns: netns).run(["ip", "link", "set", inside, "up"])
            try CommandRunner(netns: netns).run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            try CommandRunner().run(["ip", "route", "add", subnet, "via", "10.78.\(third).2"])
            let reg = try RegistryProcess(dir: dir.appendingPathComponent("registry"), netns: netns)
            cleanup.append { reg.stop() }
            _ = try await LabImages.pushAll(to: try reg.client())
            // Our plugins, by the names a network configuration and containerd use.
            let bin = dir.appendingPathComponent("cni-bin").path
            try fm.createDirectory(atPath: bin, withIntermediateDirectories: true)
            let plugin = try Self.pluginBinary()
            for n in ["switchyard-bridge", "switchyard-host-local", "loopback"] {
                try fm.createSymbolicLink(atPath: "\(bin)/\(n)", withDestinationPath: plugin)
            }
            let conf = dir.appendingPathComponent("cni-conf").path
            try fm.createDirectory(atPath: conf, withIntermediateDirectories: true)
            let conflist = """
                {"cniVersion": "1.0.0", "name": "node-\(id)", "plugins": [{"type": "switchyard-bridge", "bridge": "cni0", "isGateway": true,
                  "ipMasq": false, "ipam": {"type": "switchyard-host-local", "dataDir": "\(dir.path)/ipam", "ranges": [[{"subnet": "\(subnet)"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}}]}
                """
            try Data(conflist.utf8).write(to: URL(fileURLWithPath: "\(conf)/10-node.conflist"))
            var o = ContainerdProcess.Options(cniBinDir: bin, cniConfDir: conf, registry: reg.address, netns: netns)
            o.sandboxImage = "docker.io/switchyard/pause:latest"
            containerd = try ContainerdProcess(dir: dir.appendingPathComponent("containerd"), o)
            registry = reg
            cri = try CRIClient(endpoint: containerd.endpoint)
        } catch {
            for c in cleanup.reversed() { c() }
            throw error
        }
    }

    func close() async {
        cri.close()
        await containerd.stop()
        registry.stop()
        _ = try? CommandRunner().run(["ip", "link", "del", "syh\(id.prefix(6))"], check: false)
        _ = try? CommandRunner().run(["ip", "netns", "del", netns], check: false)
        try? FileManager.default.removeItem(at: dir)
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

struct NotBuilt: Error, CustomStringConvertible {
    var description: String { "switchyard-cni is not built: run `swift build` first" }
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
            let links = try CommandRunner(netns: node.netns).run(["ip", "-o", "link", "show", "master", "cni0"]).stdout
            #expect(links.isEmpty, "\(links)")
        } catch {
            Issue.record("\(error)\n\(node.containerd.logTail())")
        }
        await node.close()
    }
}
