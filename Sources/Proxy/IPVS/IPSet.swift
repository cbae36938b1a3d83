import Foundation
import HostOS
import KubeAPI

/// One of the ipsets kube-proxy's IPVS mode keeps, by upstream's name, type and comment (the
/// comment is the `-m comment` text of the iptables rule that matches the set).
public struct IPSetKind: Hashable, Sendable, Comparable {
    public let name: String
    public let type: String
    public let comment: String
    /// The family of the addresses it holds (a `bitmap:port` set holds none, but is still one
    /// family's proxier's).
    public private(set) var family: IPFamily = .ipv4

    /// `ipset create` as upstream runs it.
    public var createLine: String {
        type == "bitmap:port" ? "create \(name) bitmap:port range 0-65535"
            : "create \(name) \(type) family \(family == .ipv6 ? "inet6" : "inet") hashsize 1024 maxelem 65536"
    }

    /// This set as `family`'s proxier keeps it. Both families' sets live side by side on a
    /// dual-stack node, so upstream names the IPv6 ones `KUBE-6-…`, cut to the 31 characters
    /// an ipset name may have (`KUBE-6-LOAD-BALANCER-SOURCE-CID`).
    public func of(_ family: IPFamily) -> IPSetKind {
        guard family == .ipv6, self.family == .ipv4 else { return self }
        var k = IPSetKind(name: String(("KUBE-6-" + name.dropFirst("KUBE-".count)).prefix(31)), type: type, comment: comment)
        k.family = .ipv6
        return k
    }

    /// Every set of `family`'s proxier, in the order upstream creates them.
    public static func all(_ family: IPFamily) -> [IPSetKind] { all.map { $0.of(family) } }

    public static func < (a: IPSetKind, b: IPSetKind) -> Bool { a.name < b.name }

    public static let loopBack = IPSetKind(name: "KUBE-LOOP-BACK", type: "hash:ip,port,ip",
        comment: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose")
    public static let clusterIP = IPSetKind(name: "KUBE-CLUSTER-IP", type: "hash:ip,port",
        comment: "Kubernetes service cluster ip + port for masquerade purpose")
    public static let externalIP = IPSetKind(name: "KUBE-EXTERNAL-IP", type: "hash:ip,port",
        comment: "Kubernetes service external ip + port for masquerade and filter purpose")
    public static let externalIPLocal = IPSetKind(name: "KUBE-EXTERNAL-IP-LOCAL", type: "hash:ip,port",
        comment: "Kubernetes service external ip + port with externalTrafficPolicy=local")
    public static let loadBalancer = IPSetKind(name: "KUBE-LOAD-BALANCER", type: "hash:ip,port",
        comment: "Kubernetes service lb portal")
    public static let loadBalancerLocal = IPSetKind(name: "KUBE-LOAD-BALANCER-LOCAL", type: "hash:ip,port",
        comment: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local")
    public static let loadBalancerFW = IPSetKind(name: "KUBE-LOAD-BALANCER-FW", type: "hash:ip,port",
        comment: "Kubernetes service load balancer ip + port for load balancer with sourceRange")
    public static let loadBalancerSourceCIDR = IPSetKind(name: "KUBE-LOAD-BALANCER-SOURCE-CIDR", type: "hash:ip,port,net",
        comment: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose")
    public static let loadBalancerSourceIP = IPSetKind(name: "KUBE-LOAD-BALANCER-SOURCE-IP", type: "hash:ip,port,ip",
        comment: "Kubernetes service load balancer ip + port + source IP for packet filter purpose")
    public static let nodePortTCP = IPSetKind(name: "KUBE-NODE-PORT-TCP", type: "bitmap:port",
        comment: "Kubernetes nodeport TCP port for masquerade purpose")
    public static let nodePortLocalTCP = IPSetKind(name: "KUBE-NODE-PORT-LOCAL-TCP", type: "bitmap:port",
        comment: "Kubernetes nodeport TCP port with externalTrafficPolicy=local")
    public static let nodePortUDP = IPSetKind(name: "KUBE-NODE-PORT-UDP", type: "bitmap:port",
        comment: "Kubernetes nodeport UDP port for masquerade purpose")
    public static let nodePortLocalUDP = IPSetKind(name: "KUBE-NODE-PORT-LOCAL-UDP", type: "bitmap:port",
        comment: "Kubernetes nodeport UDP port with externalTrafficPolicy=local")
    public static let nodePortSCTP = IPSetKind(name: "KUBE-NODE-PORT-SCTP-HASH", type: "hash:ip,port",
        comment: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'")
    public static let nodePortLocalSCTP = IPSetKind(name: "KUBE-NODE-PORT-LOCAL-SCTP-HASH", type: "hash:ip,port",
        comment: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'")
    public static let healthCheckNodePort = IPSetKind(name: "KUBE-HEALTH-CHECK-NODE-PORT", type: "bitmap:port",
        comment: "Kubernetes health check node port")
    public static let ipvsIPs = IPSetKind(name: "KUBE-IPVS-IPS", type: "hash:ip",
        comment: "Addresses on the ipvs interface")

    /// Every set, in the order upstream creates them.
    public static let all: [IPSetKind] = [
        loopBack, clusterIP, externalIP, externalIPLocal, loadBalancer, loadBalancerLocal, loadBalancerFW,
        loadBalancerSourceCIDR, loadBalancerSourceIP, nodePortTCP, nodePortLocalTCP, nodePortUDP, nodePortLocalUDP,
        nodePortSCTP, nodePortLocalSCTP, healthCheckNodePort, ipvsIPs,
    ]
}

/// The kernel's ipsets, narrowly: what our sets hold, and a batch of changes.
public protocol IPSetInterface: Sendable {
    /// The entries of the sets that exist, by set name, as `ipset save` prints them.
    func save() throws -> [String: Set<String>]
    /// `ipset restore -exist`: `create`, `add`, `del` and `destroy` lines.
    func restore(_ script: String) throws
}

/// The real thing, through the `ipset` binary (as upstream runs it); optionally in a named netns.
public struct SystemIPSet: IPSetInterface {
    public var runner: CommandRunner
    public init(runner: CommandRunner = CommandRunner()) { self.runner = runner }

    public func save() throws -> [String: Set<String>] {
        IPSetSave.parse(try runner.run(["ipset", "save"]).stdout)
    }

    /// Entries go with numeric protocols (`10.96.0.1,6:80`): given `tcp`, ipset looks the name up
    /// in /etc/protocols once per entry, five file syscalls each, which dominates a large restore
    /// (the kernel stores the number either way, and `ipset save` prints the name).
    public func restore(_ script: String) throws {
        try runner.run(["ipset", "restore", "-exist"], input: Self.numericProtocols(script))
    }

    static func numericProtocols(_ script: String) -> String {
        guard script.contains(",tcp:") || script.contains(",udp:") || script.contains(",sctp:") else { return script }
        return script.replacingOccurrences(of: ",tcp:", with: ",6:").replacingOccurrences(of: ",udp:", with: ",17:")
            .replacingOccurrences(of: ",sctp:", with: ",132:")
    }
}

enum IPSetSave {
    /// `create NAME …` and `add NAME ENTRY` lines into entries by set.
    static func parse(_ text: String) -> [String: Set<String>] {
        var sets: [String: Set<String>] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", maxSplits: 3)
            guard f.count >= 2 else { continue }
            if f[0] == "create" { sets[String(f[1]), default: []] = sets[String(f[1])] ?? [] }
            if f[0] == "add", f.count >= 3 { sets[String(f[1]), default: []].insert(String(f[2])) }
        }
        return sets
    }
}

/// An in-memory ipset for unit tests: refuses unknown sets and malformed lines as `ipset` does,
/// stopping at the first bad line (what came before it stays, as with the real `ipset restore`).
public final class FakeIPSet: IPSetInterface, @unchecked Sendable {
    private let lock = NSLock()
    private var sets: [String: Set<String>] = [:]
    public private(set) var restores: [String] = []
    public init() {}

    public func save() throws -> [String: Set<String>] { lock.withLock { sets } }

    public func restore(_ script: String) throws {
        try lock.withLock {
            restores.append(script)
            for (i, line) in script.split(separator: "\n").enumerated() {
                let f = line.split(separator: " ").map(String.init)
                guard f.count >= 2 else { throw IPSetError("line \(i + 1): syntax error") }
                switch f[0] {
                case "create": if sets[f[1]] == nil { sets[f[1]] = [] }
                case "destroy": sets[f[1]] = nil
                case "add", "del":
                    guard f.count >= 3, sets[f[1]] != nil else { throw IPSetError("line \(i + 1): the set \(f[1]) does not exist") }
                    if f[0] == "add" { sets[f[1]]!.insert(f[2]) } else { sets[f[1]]!.remove(f[2]) }
                default: throw IPSetError("line \(i + 1): unknown command \(f[0])")
                }
            }
        }
    }
}

public struct IPSetError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
