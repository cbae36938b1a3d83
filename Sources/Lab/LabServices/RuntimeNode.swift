import CRI
import Foundation
import HostOS

/// A node with a real runtime, for tests and benchmarks: a network namespace standing for the
/// machine, reached from this one through a veth pair (its pod range routed through it, so a
/// kubelet here probes pods by address), our CNI plugins under the names containerd runs them
/// by, and a containerd of its own inside the namespace. `close()` removes all of it.
public final class RuntimeNode: @unchecked Sendable {
    public let id: String
    public let dir: URL
    public let netns: String
    /// The node's own address (its end of the veth) and the host's end.
    public let nodeIP: String
    public let hostIP: String
    /// The pod range routed to the node.
    public let podCIDR: String
    public let cniBinDir: String
    public let cniConfDir: String
    public let containerd: ContainerdProcess
    public let cri: CRIClient
    let hostLink: String

    public static var available: Bool {
        geteuid() == 0 && ContainerdProcess.available && RegistryProcess.available
    }

    /// An executable of this package as it was built (debug, else release) under `packageRoot`.
    public static func builtBinary(_ name: String, packageRoot: URL) -> String? {
        for d in [".build/debug", ".build/release"] {
            let p = packageRoot.appendingPathComponent(d).appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    public struct SetupError: Error, CustomStringConvertible { public var description: String }

    /// - Parameters:
    ///   - index: picks the addresses: 10.78.INDEX.0/30 for the link, 10.77.INDEX.0/24 for pods.
    ///   - registry: `HOST:PORT` of the lab registry as the node reaches it (nil: `hostIP:registryPort`).
    ///   - cniConfig: write a configuration for the pod range now (else the kubelet does, from
    ///     the Node's `spec.podCIDR`).
    public init(index: Int, registry: String? = nil, registryPort: Int? = nil, pluginBinary: String, cniConfig: Bool = true) async throws {
        id = String(UUID().uuidString.prefix(8)).lowercased()
        let id = self.id
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-node-\(id)")
        netns = "sy-node-\(id)"
        let (dir, netns) = (self.dir, self.netns)
        podCIDR = "10.77.\(index).0/24"
        hostIP = "10.78.\(index).1"
        nodeIP = "10.78.\(index).2"
        hostLink = "syh\(id.prefix(6))"
        cniBinDir = dir.appendingPathComponent("cni-bin").path
        cniConfDir = dir.appendingPathComponent("cni-conf").path
        let (host, inside, hostLink) = (hostLink, "syn\(id.prefix(6))", hostLink)
        let fm = FileManager.default
        var cleanup: [() -> Void] = [{ try? fm.removeItem(at: dir) }]
        do {
            try fm.createDirectory(at: dir, withIntermediateDirectories: true)
            try CommandRunner().run(["ip", "netns", "add", netns])
            cleanup.append { _ = try? CommandRunner().run(["ip", "netns", "del", netns], check: false) }
            let inNode = CommandRunner(netns: netns)
            try inNode.run(["ip", "link", "set", "lo", "up"])
            try CommandRunner().run(["ip", "link", "add", host, "type", "veth", "peer", "name", inside, "netns", netns])
            cleanup.append { _ = try? CommandRunner().run(["ip", "link", "del", hostLink], check: false) }
            try CommandRunner().run(["ip", "addr", "add", "\(hostIP)/30", "dev", host])
            try CommandRunner().run(["ip", "link", "set", host, "up"])
            try inNode.run(["ip", "addr", "add", "\(nodeIP)/30", "dev", inside])
            try inNode.run(["ip", "link", "set", inside, "up"])
            try inNode.run(["ip", "route", "add", "default", "via", hostIP])
            try inNode.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            // Added, not replaced: a range another node (of a test running beside) holds is refused.
            guard (try CommandRunner().run(["ip", "route", "add", podCIDR, "via", nodeIP], check: false)).status == 0 else {
                throw SetupError(description: "the pod range \(podCIDR) is routed already")
            }
            try fm.createDirectory(atPath: cniBinDir, withIntermediateDirectories: true)
            for n in ["switchyard-bridge", "switchyard-host-local", "loopback"] {
                try fm.createSymbolicLink(atPath: "\(cniBinDir)/\(n)", withDestinationPath: pluginBinary)
            }
            try fm.createDirectory(atPath: cniConfDir, withIntermediateDirectories: true)
            if cniConfig {
                let conflist = """
                    {"cniVersion": "1.0.0", "name": "node-\(id)", "plugins": [{"type": "switchyard-bridge", "bridge": "cni0", "isGateway": true,
                      "ipMasq": false, "ipam": {"type": "switchyard-host-local", "dataDir": "\(dir.path)/ipam", "ranges": [[{"subnet": "\(podCIDR)"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}}]}
                    """
                try Data(conflist.utf8).write(to: URL(fileURLWithPath: "\(cniConfDir)/10-node.conflist"))
            }
            let hostIP = self.hostIP
            let reg = registry ?? registryPort.map { "\(hostIP):\($0)" }
            containerd = try ContainerdProcess(dir: dir.appendingPathComponent("containerd"),
                                               .init(cniBinDir: cniBinDir, cniConfDir: cniConfDir, registry: reg, netns: netns))
            cri = try CRIClient(endpoint: containerd.endpoint)
        } catch {
            for c in cleanup.reversed() { c() }
            throw error
        }
    }

    /// A node at a free index (another's range taken, the next random one is tried).
    public static func make(registryPort: Int? = nil, registry: String? = nil, pluginBinary: String, cniConfig: Bool = true) async throws -> RuntimeNode {
        var last: (any Error)?
        for _ in 0..<8 {
            do {
                return try await RuntimeNode(index: Int.random(in: 1...250), registry: registry, registryPort: registryPort, pluginBinary: pluginBinary, cniConfig: cniConfig)
            } catch let e as SetupError {
                last = e
            }
        }
        throw last ?? SetupError(description: "no free pod range")
    }

    public func close() async {
        cri.close()
        await containerd.stop()
        _ = try? CommandRunner().run(["ip", "link", "del", hostLink], check: false)
        _ = try? CommandRunner().run(["ip", "netns", "del", netns], check: false)
        try? FileManager.default.removeItem(at: dir)
    }

    /// The node's pods' veths (those on its bridge).
    public func podLinks() -> String {
        (try? CommandRunner(netns: netns).run(["ip", "-o", "link", "show", "master", "cni0"], check: false))?.stdout ?? ""
    }
}
