import Foundation
import Netlink
import HostOS

/// Runs a command and returns its status and output; the test kit's only way to
/// touch the system, so every step is visible in a failure message.
public enum Sh {
    @discardableResult
    public static func run(_ args: [String], input: String? = nil, timeout: TimeInterval = 30) throws -> (status: Int32, out: String, err: String) {
        let r = try CommandRunner().run(args, input: input, check: false, timeout: .milliseconds(Int(timeout * 1000)))
        return (r.status, r.stdout, r.stderr)
    }

    /// Runs and throws on a non-zero exit.
    @discardableResult
    public static func must(_ args: [String], input: String? = nil) throws -> String {
        let r = try run(args, input: input)
        guard r.status == 0 else { throw LabError("\(args.joined(separator: " ")) failed (\(r.status)): \(r.err)") }
        return r.out
    }
}

public struct LabError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

public var isRoot: Bool { geteuid() == 0 }

/// Whether bridges in this kernel can filter VLANs (probed once, in a throw-away namespace).
public let kernelCanFilterVLANs: Bool = {
    guard isRoot else { return false }
    let ns = "synkprobe\(getpid())"
    guard (try? Sh.must(["ip", "netns", "add", ns])) != nil else { return false }
    defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
    return (try? Sh.run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge", "vlan_filtering", "1"]))?.status == 0
}()

/// Whether the kernel has IPVS, loading the module if it can (its generic netlink family exists).
public let kernelHasIPVS: Bool = {
    guard isRoot else { return false }
    _ = try? Sh.run(["modprobe", "ip_vs"])
    return (try? GenericNetlink.familyID("IPVS")) != nil
}()

/// A throw-away set of network namespaces with unique names: a node, pods on
/// the node's bridge, and a client outside the cluster. `destroy()` kills every
/// process in them and deletes them; call it in a `defer`.
public final class Lab: @unchecked Sendable {
    public let id: String
    public let node: String
    public let client: String
    public private(set) var pods: [String: String] = [:]   // name -> netns
    public private(set) var podIPs: [String: String] = [:]
    public let nodeClientIP = "10.250.0.1"
    public let clientIP = "10.250.0.2"
    public let bridgeIP = "10.244.1.1"
    private var namespaces: [String] = []
    private var udpServers: [UDPReplyServer] = []

    /// Each live lab notes here which process made it: a test process that crashes runs no
    /// `defer`, and the first lab of the next process deletes what such a process left.
    static let ownersDir = "/run/switchyard-labs"

    /// Deletes the namespaces (`sy<id>…`) of labs whose process is gone, once per process.
    static let sweepDeadOwners: Void = {
        guard let ids = try? FileManager.default.contentsOfDirectory(atPath: ownersDir) else { return }
        var names: [String]?
        for id in ids {
            let file = "\(ownersDir)/\(id)"
            guard let text = try? String(contentsOfFile: file, encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  kill(pid, 0) == -1, errno == ESRCH else { continue }
            if names == nil { names = Netns.list() }
            let left = names!.filter { $0.hasPrefix("sy\(id)") }
            for ns in left {
                for p in Netns.pids(ns) { kill(p, SIGKILL) }
            }
            for ns in left { _ = try? Sh.run(["ip", "netns", "del", ns]) }
            try? FileManager.default.removeItem(atPath: file)
        }
    }()

    public init() throws {
        _ = Lab.sweepDeadOwners
        // Eight hex digits always, so `sy<id>` is a prefix of this lab's namespaces only.
        let hex = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        id = String(repeating: "0", count: 8 - hex.count) + hex
        node = "sy\(id)n"
        client = "sy\(id)c"
        try? FileManager.default.createDirectory(atPath: Lab.ownersDir, withIntermediateDirectories: true)
        try? "\(getpid())\n".write(toFile: "\(Lab.ownersDir)/\(id)", atomically: true, encoding: .utf8)
        try add(node)
        try add(client)
        try Sh.must(["ip", "-n", node, "link", "set", "lo", "up"])
        try Sh.must(["ip", "-n", client, "link", "set", "lo", "up"])
        try Sh.must(["ip", "-n", node, "link", "add", "name", "eth-c", "type", "veth", "peer", "name", "eth0", "netns", client])
        try Sh.must(["ip", "-n", node, "addr", "add", "\(nodeClientIP)/24", "dev", "eth-c"])
        try Sh.must(["ip", "-n", node, "link", "set", "eth-c", "up"])
        try Sh.must(["ip", "-n", client, "addr", "add", "\(clientIP)/24", "dev", "eth0"])
        try Sh.must(["ip", "-n", client, "link", "set", "eth0", "up"])
        try Sh.must(["ip", "-n", client, "route", "add", "default", "via", nodeClientIP])
        // The node's default route points at the outside world (the client side), as a real node's would.
        try Sh.must(["ip", "-n", node, "route", "add", "default", "via", clientIP])
        try Sh.must(["ip", "-n", node, "link", "add", "name", "cbr0", "type", "bridge"])
        try Sh.must(["ip", "-n", node, "addr", "add", "\(bridgeIP)/24", "dev", "cbr0"])
        try Sh.must(["ip", "-n", node, "link", "set", "cbr0", "up"])
        try Sh.must(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    }

    private func add(_ ns: String) throws {
        try Sh.must(["ip", "netns", "add", ns])
        namespaces.append(ns)
    }

    /// A pod namespace on the node's bridge with address 10.244.1.`host`.
    @discardableResult
    public func addPod(_ name: String, host: Int) throws -> String {
        let ns = "sy\(id)p\(name)"
        try add(ns)
        let ip = "10.244.1.\(host)"
        let hostIf = "veth\(name)"
        try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        try Sh.must(["ip", "-n", node, "link", "add", "name", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns])
        try Sh.must(["ip", "-n", node, "link", "set", hostIf, "master", "cbr0", "up"])
        try Sh.must(["ip", "-n", ns, "addr", "add", "\(ip)/24", "dev", "eth0"])
        try Sh.must(["ip", "-n", ns, "link", "set", "eth0", "up"])
        try Sh.must(["ip", "-n", ns, "route", "add", "default", "via", bridgeIP])
        pods[name] = ns
        podIPs[name] = ip
        return ip
    }

    /// The usual pair: pods a (10.244.1.2) and b (10.244.1.3), each answering with its name on
    /// `tcpPort` (and `udpPort`).
    public func addServingPods(tcpPort: Int, udpPort: Int? = nil) throws {
        for (name, host) in [("a", 2), ("b", 3)] {
            try addPod(name, host: host)
            try serve(pod: name, tcpPort: tcpPort, udpPort: udpPort)
        }
    }

    /// Routes from the client to `nets` (service and load balancer ranges) through the node.
    public func routeFromClient(_ nets: String...) throws {
        for net in nets { try Sh.must(["ip", "-n", client, "route", "add", net, "via", nodeClientIP]) }
    }

    /// Starts TCP and UDP servers in a pod that answer with the pod's name.
    public func serve(pod name: String, tcpPort: Int, udpPort: Int? = nil) throws {
        guard let ns = pods[name] else { throw LabError("no pod \(name)") }
        try spawn(ns, ["socat", "TCP-LISTEN:\(tcpPort),fork,reuseaddr", "SYSTEM:echo \(name)"])
        if let udpPort {
            // In-process: socat's UDP-RECVFROM,fork drops a datagram now and then.
            udpServers.append(try UDPReplyServer(netns: ns, port: udpPort, reply: name))
        }
        // Wait until the listeners are up (on a loaded machine the UDP one may come last).
        var waiting: [(flag: String, port: Int)] = [("-ltnH", tcpPort)]
        if let udpPort { waiting.append(("-lunH", udpPort)) }
        try waitForListeners(ns, waiting, pod: name)
    }

    /// Starts a TCP server in a pod that answers with the address the connection came from (to
    /// see whether it was masqueraded).
    public func servePeerAddress(pod name: String, tcpPort: Int) throws {
        guard let ns = pods[name] else { throw LabError("no pod \(name)") }
        try spawn(ns, ["socat", "TCP-LISTEN:\(tcpPort),fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"])
        try waitForListeners(ns, [("-ltnH", tcpPort)], pod: name)
    }

    private func waitForListeners(_ ns: String, _ listeners: [(flag: String, port: Int)], pod name: String) throws {
        do { try Netns.waitForListeners(ns, listeners) } catch { throw LabError("server in \(name) did not start: \(error)") }
    }

    /// Starts a long-running process inside `ns`; it dies with the namespace in `destroy()`.
    /// Its output goes to `log` when one is given (created or truncated), else nowhere.
    public func spawn(_ ns: String, _ args: [String], log: String? = nil) throws {
        let p = CommandRunner.process(["ip", "netns", "exec", ns] + args)
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            p.standardOutput = handle
            p.standardError = handle
        } else {
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
        }
        p.standardInput = FileHandle.nullDevice
        try p.run()
    }

    /// One TCP request from the client namespace (or another namespace); returns the reply or nil.
    public func tcp(_ ip: String, _ port: Int, from ns: String? = nil, timeout: Int = 2) -> String? {
        guard let r = try? Sh.run(["ip", "netns", "exec", ns ?? client, "socat", "-T\(timeout)", "-",
                                   "TCP:\(ip):\(port),connect-timeout=\(timeout)"], input: "",
                                  timeout: TimeInterval(timeout + 3)),
              r.status == 0 else { return nil }
        let s = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? nil : s
    }

    /// One UDP request; returns the reply or nil.
    public func udp(_ ip: String, _ port: Int, from ns: String? = nil, timeout: Int = 1) -> String? {
        Netns.udp(from: ns ?? client, to: ip, port: port, timeout: timeout)
    }

    /// Kills every process in the lab's namespaces and deletes them.
    public func destroy() {
        for s in udpServers { s.stop() }
        udpServers.removeAll()
        for ns in namespaces.reversed() {
            for pid in Netns.pids(ns) { kill(pid, SIGKILL) }
        }
        usleep(50_000)
        for ns in namespaces.reversed() { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        namespaces.removeAll()
        try? FileManager.default.removeItem(atPath: "\(Lab.ownersDir)/\(id)")
    }

    deinit { destroy() }
}
