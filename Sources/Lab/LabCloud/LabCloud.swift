import Foundation
import KubeAPI
import Logging
import NetnsKit
import Synchronization

/// The lab's cloud: what a provider's API offers a cloud controller manager, for a netlab
/// cluster, served from the lab's router namespace (between the outside client and the nodes).
/// - **instances**: the lab's nodes; one exists while its network namespace does;
/// - **routes**: a kernel route on the router per route (`ip route replace CIDR via NODE`),
///   a blackhole while its instance is gone;
/// - **load balancers**: an address from the pool, each port DNAT'ed by nftables on the router
///   to the Service's NodePort on the healthy targets, picked at random per connection; health
///   checked every half second (the `healthCheckNodePort`'s `/healthz` for
///   `externalTrafficPolicy: Local`, a TCP connect to the NodePort otherwise); with no target
///   healthy, every target gets traffic, as cloud balancers fail open. A balancer may instead
///   name `backends`, addresses on the lab's networks (a control plane's API servers, as a
///   provider's load balancer fronts them): each port goes to the same port (or `nodePort`, when
///   given) on the healthy ones, checked by a TCP connect, with the source masqueraded, since the
///   backends and their clients may share a network.
/// The state is kept in `DIR/state.json` and applied again when the cloud starts.
public final class LabCloud: Sendable {
    public struct Instance: Codable, Sendable, Equatable {
        public var name: String
        public var netns: String
        public var address: String
        public var zone: String
        public var region: String
        public var instanceType: String
        public init(name: String, netns: String, address: String, zone: String, region: String = "netlab", instanceType: String = "netlab.standard") {
            self.name = name
            self.netns = netns
            self.address = address
            self.zone = zone
            self.region = region
            self.instanceType = instanceType
        }
    }

    /// What netlab tells its cloud: the machines, the balancers' address pool, the lab's name.
    public struct Configuration: Codable, Sendable {
        public var lab: String
        public var instances: [Instance]
        /// The first three octets of the /24 the balancers' addresses come from.
        public var pool: String
        public init(lab: String, instances: [Instance], pool: String) {
            self.lab = lab
            self.instances = instances
            self.pool = pool
        }
    }

    public struct Route: Codable, Sendable, Equatable {
        public var name: String
        public var targetInstance: String
        public var destinationCIDR: String
    }

    public struct Port: Codable, Sendable, Equatable {
        public var name: String
        public var `protocol`: String
        public var port: Int
        public var nodePort: Int
    }

    public struct Balancer: Codable, Sendable, Equatable {
        public var name: String
        /// NAMESPACE/NAME of the Service, for people.
        public var service: String
        public var ip: String
        public var ports: [Port]
        public var targets: [String]
        /// `externalTrafficPolicy: Local`'s port, checked at `/healthz`; 0: the NodePort is.
        public var healthCheckNodePort: Int
        /// Addresses to send to instead of the targets' (nil: the targets').
        public var backends: [String]? = nil

        /// What the health checks are of: the backends, or the target instances.
        var members: [String] { backends ?? targets }
    }

    struct State: Codable, Equatable {
        var routes: [Route] = []
        var balancers: [Balancer] = []
    }

    struct Runtime {
        var state = State()
        /// Per balancer, per target: consecutive failed checks (absent: never checked).
        var failures: [String: [String: Int]] = [:]
        var appliedRules = ""
        var appliedRoutes: [String: String] = [:]
        /// What state.json holds (written only when the state changes, not per health check).
        var saved: State?
    }

    public let configuration: Configuration
    let dir: String
    let logger: Logger
    let runtime = Mutex(Runtime())
    /// Where `nft` and `ip` are; a test may point them elsewhere.
    let commands: @Sendable ([String], String?) throws -> (status: Int32, out: String, err: String)

    public static let table = "netlab-cloud"

    public init(dir: String, logger: Logger = Logger(label: "netlab.cloud"),
                commands: @escaping @Sendable ([String], String?) throws -> (status: Int32, out: String, err: String) = { try Sh.run($0, input: $1) }) throws {
        self.dir = dir
        self.logger = logger
        self.commands = commands
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/config.json"))
        configuration = try JSONDecoder().decode(Configuration.self, from: data)
        if let saved = try? Data(contentsOf: URL(fileURLWithPath: "\(dir)/state.json")) {
            let state = try JSONDecoder().decode(State.self, from: saved)
            runtime.withLock { $0.state = state }
        }
    }

    public static func write(_ c: Configuration, dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try e.encode(c).write(to: URL(fileURLWithPath: "\(dir)/config.json"))
    }

    // MARK: instances

    func instance(_ name: String) -> Instance? { configuration.instances.first { $0.name == name } }

    /// An instance exists while its node's namespace does (deleting it is the machine going away).
    func exists(_ i: Instance) -> Bool { FileManager.default.fileExists(atPath: "/run/netns/\(i.netns)") }

    func json(_ i: Instance) -> JSONValue {
        ["name": .string(i.name), "providerID": .string("netlab://\(configuration.lab)/\(i.name)"), "instanceType": .string(i.instanceType),
         "zone": .string(i.zone), "region": .string(i.region), "state": "running",
         "addresses": [["type": "InternalIP", "address": .string(i.address)], ["type": "Hostname", "address": .string(i.name)]]]
    }

    // MARK: the router's data plane

    /// Applies the state to the kernel (what changed) and saves it. Called with the lock held.
    func apply(_ r: inout Runtime) throws {
        // Routes: replaced when their next hop changed, deleted when gone.
        var want: [String: String] = [:]
        for route in r.state.routes {
            if let i = instance(route.targetInstance), exists(i) { want[route.destinationCIDR] = "via \(i.address)" } else { want[route.destinationCIDR] = "blackhole" }
        }
        for (cidr, how) in want where r.appliedRoutes[cidr] != how {
            let args = how == "blackhole" ? ["ip", "route", "replace", "blackhole", cidr] : ["ip", "route", "replace", cidr] + how.split(separator: " ").map(String.init)
            let out = try commands(args, nil)
            guard out.status == 0 else { throw CloudFailure(500, "\(args.joined(separator: " ")): \(out.err)") }
            r.appliedRoutes[cidr] = how
        }
        for cidr in r.appliedRoutes.keys where want[cidr] == nil {
            _ = try commands(["ip", "route", "del", cidr], nil)
            r.appliedRoutes[cidr] = nil
        }
        // Balancers: one nftables table, replaced whole in one transaction when it changes.
        let rules = render(r)
        if rules != r.appliedRules {
            let out = try commands(["nft", "-f", "-"], "table ip \(Self.table) {}\ndelete table ip \(Self.table)\n" + rules)
            guard out.status == 0 else { throw CloudFailure(500, "nft: \(out.err)") }
            r.appliedRules = rules
        }
        guard r.saved != r.state else { return }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        try e.encode(r.state).write(to: URL(fileURLWithPath: "\(dir)/state.json"), options: .atomic)
        r.saved = r.state
    }

    /// The targets a balancer sends to now: the healthy ones, or all when none is.
    static func healthy(_ b: Balancer, _ failures: [String: Int]?) -> [String] {
        let ok = b.members.filter { (failures?[$0] ?? 0) < 2 }
        return ok.isEmpty ? b.members : ok
    }

    func render(_ r: Runtime) -> String {
        var lines = ["table ip \(Self.table) {", "\tchain prerouting {", "\t\ttype nat hook prerouting priority dstnat; policy accept;"]
        for b in r.state.balancers.sorted(by: { $0.ip < $1.ip }) {
            let healthy = Self.healthy(b, r.failures[b.name])
            let addresses = b.backends != nil ? healthy.sorted()
                : healthy.compactMap { t in instance(t).flatMap { exists($0) ? $0.address : nil } }.sorted()
            for p in b.ports {
                let proto = p.protocol.lowercased()
                let match = "\t\tip daddr \(b.ip) \(proto) dport \(p.port)"
                if addresses.isEmpty {
                    lines.append(match + (proto == "tcp" ? " reject with tcp reset" : " reject"))
                } else if addresses.count == 1 {
                    lines.append(match + " dnat ip to \(addresses[0]):\(p.nodePort)")
                } else {
                    let map = addresses.enumerated().map { "\($0.offset) : \($0.element) . \(p.nodePort)" }.joined(separator: ", ")
                    lines.append(match + " dnat ip to numgen random mod \(addresses.count) map { \(map) }")
                }
            }
        }
        lines.append("\t}")
        let direct = r.state.balancers.filter { $0.backends != nil }.map(\.ip).sorted()
        if !direct.isEmpty {
            lines += ["\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;"]
            lines += direct.map { "\t\tct original ip daddr \($0) masquerade" }
            lines.append("\t}")
        }
        lines += ["}", ""]
        return lines.joined(separator: "\n")
    }

    /// Applies the saved state (a restarted cloud) and sets the router up to forward.
    public func start() throws {
        _ = try commands(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0"], nil)
        try runtime.withLock { try apply(&$0) }
    }

    // MARK: health checks

    /// Checks every balancer's targets every `interval`, on a thread of its own (checks block),
    /// and applies what changed. Runs until the process ends.
    public func startHealthChecks(interval: TimeInterval = 0.5) {
        let t = Thread { [self] in
            while true {
                checkOnce()
                Thread.sleep(forTimeInterval: interval)
            }
        }
        t.start()
    }

    func checkOnce() {
        let balancers = runtime.withLock { $0.state.balancers }
        var results: [String: [String: Bool]] = [:]
        for b in balancers {
            if let backends = b.backends {
                for a in backends { results[b.name, default: [:]][a] = b.ports.first.map { Self.tcpOK(a, $0.nodePort, udp: $0.protocol == "UDP") } ?? false }
                continue
            }
            for t in b.targets {
                guard let i = instance(t), exists(i) else { results[b.name, default: [:]][t] = false; continue }
                results[b.name, default: [:]][t] = b.healthCheckNodePort > 0
                    ? httpStatus(i.address, b.healthCheckNodePort, "/healthz", timeout: 0.4) == 200
                    : b.ports.first.map { Self.tcpOK(i.address, $0.nodePort, udp: $0.protocol == "UDP") } ?? false
            }
        }
        runtime.withLock { r in
            for (b, targets) in results {
                for (t, ok) in targets {
                    let before = r.failures[b]?[t]
                    let now = ok ? 0 : (before ?? 0) + 1
                    if before != now { r.failures[b, default: [:]][t] = now }
                }
            }
            do { try apply(&r) } catch { logger.error("applying the balancers' health: \(error)") }
        }
    }

    static func tcpOK(_ ip: String, _ port: Int, udp: Bool) -> Bool {
        if udp { return true }   // nothing to connect to: a UDP port counts as up
        guard let fd = TCP.connect(ip, port, timeout: 0.4) else { return false }
        close(fd)
        return true
    }

}

/// A refused or failed cloud call: its HTTP status and message.
public struct CloudFailure: Error, CustomStringConvertible {
    public var status: Int
    public var description: String
    public init(_ status: Int, _ description: String) {
        self.status = status
        self.description = description
    }
}
