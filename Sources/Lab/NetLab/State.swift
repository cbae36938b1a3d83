import Foundation

/// What a lab is made of, kept in `<stateDir>/state.json` from the moment its first namespace
/// exists, so `down` removes everything even after netlab (or the machine's patience) died
/// half-way. Namespaces are named `nl-<name>-…`, so a lab without a state file is still found.
public struct LabState: Codable, Sendable {
    public struct Node: Codable, Sendable {
        public var name: String          // node-1 (the Node object and --hostname-override)
        public var netns: String         // nl-<lab>-n1
        public var address: String       // on the underlay, 10.250.0.11
        public var podCIDR: String       // 10.244.1.0/24
    }

    /// One member of a highly available control plane (`up --control-plane 3`): an etcd member,
    /// an API server, a scheduler and a controller manager, in a namespace of its own.
    public struct ControlPlaneMember: Codable, Sendable {
        public var name: String          // cp-1
        public var netns: String         // nl-<lab>-cp (the first: the underlay's), nl-<lab>-cp2, …
        public var address: String       // on the underlay, 10.250.0.1, .3, .4
    }

    /// A process netlab started and can start again (`fault heal`): where, what, its log.
    public struct Component: Codable, Sendable {
        public var netns: String
        /// What runs (its /proc/PID/cmdline), and the whole command line that starts it in `netns`.
        public var command: [String]
        public var argv: [String]
        public var log: String
    }

    public struct Pod: Codable, Sendable {
        public var name: String
        public var node: String
        /// The lab's own namespace for the pod (`netns` runtime); empty for containerd's pods,
        /// whose namespace containerd makes and removes.
        public var netns: String
        public var ip: String
        public var labels: [String: String]
    }

    /// Who runs the pods: `containerd` (a containerd and a kubelet per node, the pods from
    /// Deployments) or `netns` (netlab's own processes in namespaces of its own, posted as a
    /// kubelet would; what the qemu guest's comparison runs).
    public enum Runtime: String, Codable, Sendable, CaseIterable {
        case containerd, netns
    }

    public var name: String
    public var controlPlane: String      // namespace of the API server and the underlay bridge
    public var client: String            // a namespace outside the cluster
    public var serverAddress: String
    public var serverPort: Int
    public var nodes: [Node]
    public var pods: [Pod]
    /// The mode the nodes' proxies run in now, if they run.
    public var proxyMode: String?
    public var binDir: String
    /// nil in the state of a lab from before there was a choice: `netns`.
    public var runtime: Runtime? = nil
    /// The lab registry, `HOST:PORT` on the underlay (containerd runtime).
    public var registry: String? = nil
    /// The router's namespace when the lab has a cloud (containerd runtime): the client sits
    /// behind it, the nodes route through it, its balancers serve LoadBalancer Services.
    public var router: String? = nil
    /// The control plane's members when there are several (nil: one API server, embedded
    /// SQLite, in `controlPlane`).
    public var controlPlanes: [ControlPlaneMember]? = nil
    /// The address clients reach the API servers at when there are several: the lab cloud's
    /// load balancer in front of them.
    public var apiAddress: String? = nil
    /// The control-plane and node processes netlab started, by log name, to start them again.
    public var components: [String: Component]? = nil
    /// What `fault` did that `fault heal` undoes: components killed, nodes cut off, partitions.
    public var faults: [String]? = nil

    public var podRuntime: Runtime { runtime ?? .netns }
    /// The API server's secure port on the underlay: nodes, proxies and kubectl (the kubeconfig).
    public var kubeconfigURL: String { "https://\(apiAddress ?? serverAddress):\(serverPort)" }
    /// Every control-plane member (one for a lab with a single API server).
    public var members: [ControlPlaneMember] { controlPlanes ?? [ControlPlaneMember(name: "cp-1", netns: controlPlane, address: serverAddress)] }
    /// Its insecure port, on the control plane namespace's loopback: netlab's own client.
    public static let insecurePort = 8080
    public var localURL: String { "http://127.0.0.1:\(Self.insecurePort)" }
    public var namespaces: [String] {
        [controlPlane] + (controlPlanes?.dropFirst().map(\.netns) ?? []) + [client] + (router.map { [$0] } ?? []) + nodes.map(\.netns)
            + pods.map(\.netns).filter { !$0.isEmpty }
    }
    /// The client's address: behind the router in a lab with a cloud, on the underlay otherwise.
    public var clientAddress: String { router == nil ? "10.250.0.2" : "\(LabCloudNet.outside).2" }

}

/// Where labs keep their state: `/run/switchyard-netlab/<name>/` (tmpfs, like the namespaces
/// themselves: a reboot forgets both).
public enum LabPaths {
    public static let root = "/run/switchyard-netlab"
    public static func dir(_ name: String) -> String { "\(root)/\(name)" }
    public static func state(_ name: String) -> String { "\(dir(name))/state.json" }
    public static func prefix(_ name: String) -> String { "nl-\(name)-" }

    /// Lab names become namespace and file names: short, lowercase letters and digits.
    public static func validate(_ name: String) throws {
        guard (1...12).contains(name.count), name.allSatisfy({ ($0.isLetter && $0.isLowercase && $0.isASCII) || $0.isNumber }) else {
            throw NetLabError("lab name \(name.debugDescription): use 1 to 12 lowercase letters and digits")
        }
    }
}

public struct NetLabError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

extension LabState {
    public static func load(_ name: String) throws -> LabState? {
        guard let data = FileManager.default.contents(atPath: LabPaths.state(name)) else { return nil }
        do { return try JSONDecoder().decode(LabState.self, from: data) } catch {
            throw NetLabError("\(LabPaths.state(name)) is unreadable (\(error)); `netlab down --name \(name)` removes the lab by its names")
        }
    }

    public func save() throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        let path = LabPaths.state(name)
        try FileManager.default.createDirectory(atPath: LabPaths.dir(name), withIntermediateDirectories: true)
        try e.encode(self).write(to: URL(fileURLWithPath: path + ".tmp"))
        guard rename(path + ".tmp", path) == 0 else { throw NetLabError("rename \(path).tmp: errno \(errno)") }
    }
}

/// The lab cloud's addresses: the router on the underlay and on the outside network (the
/// client's), the balancers' pool, the cloud API's port.
public enum LabCloudNet {
    public static let routerAddress = "10.250.0.254"
    public static let outside = "10.251.0"
    public static let pool = "10.252.0"
    public static let apiPort = 8780
    public static var endpoint: String { "http://\(routerAddress):\(apiPort)" }
    /// The balancer in front of a highly available control plane's API servers.
    public static let apiServerAddress = "\(pool).250"
}
