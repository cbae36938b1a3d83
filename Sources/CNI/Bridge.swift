import Crypto
import Foundation
import Netlink

/// Runs the IPAM plugin named in the configuration (found in `CNI_PATH`) with the
/// same command and environment, as the spec's delegation does.
public enum Delegate {
    public static func find(_ type: String, in path: [String]) throws -> String {
        for dir in path {
            let p = (dir as NSString).appendingPathComponent(type)
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw CNIError(CNIError.other, "failed to find plugin \"\(type)\" in path \(path)")
    }

    /// Runs `type` with `command`; returns its parsed stdout (nil when it printed nothing).
    @discardableResult
    public static func run(_ type: String, command: String, _ r: CNIRequest) throws -> [String: Any]? {
        let exe = try find(type, in: r.path)
        var env = ProcessInfo.processInfo.environment
        env["CNI_COMMAND"] = command
        let (status, out) = try Exec.run(exe, [], env: env, input: r.raw)
        let obj = out.isEmpty ? nil : (try? JSONSerialization.jsonObject(with: out)) as? [String: Any]
        if status != 0 {
            if let o = obj, let code = o["code"] as? Int {
                throw CNIError(code, o["msg"] as? String ?? "IPAM plugin \(type) failed", details: o["details"] as? String)
            }
            throw CNIError(CNIError.other, "IPAM plugin \(type) \(command) exited with \(status)")
        }
        return obj
    }
}

/// The bridge plugin's configuration, with the reference plugin's names and defaults.
struct BridgeConfig {
    var bridge = "cni0"
    var isGateway = false
    var isDefaultGateway = false
    var forceAddress = false
    var ipMasq = false
    var mtu: UInt32?
    var hairpinMode = false
    var promiscMode = false
    var enableDAD = false
    var ipamType: String

    init(_ r: CNIRequest) throws {
        let c = r.config
        if let b = c["bridge"] as? String, !b.isEmpty { bridge = b }
        isDefaultGateway = c["isDefaultGateway"] as? Bool ?? false
        isGateway = (c["isGateway"] as? Bool ?? false) || isDefaultGateway
        forceAddress = c["forceAddress"] as? Bool ?? false
        ipMasq = c["ipMasq"] as? Bool ?? false
        if let m = c["mtu"] as? Int, m > 0 { mtu = UInt32(m) }
        hairpinMode = c["hairpinMode"] as? Bool ?? false
        promiscMode = c["promiscMode"] as? Bool ?? false
        enableDAD = c["enabledad"] as? Bool ?? false
        if let v = c["vlan"] as? Int, v != 0 {
            throw CNIError(CNIError.unsupportedField, "vlan is not supported by switchyard-bridge yet")
        }
        if c["macspoofchk"] as? Bool == true {
            throw CNIError(CNIError.unsupportedField, "macspoofchk is not supported by switchyard-bridge yet")
        }
        guard let ipam = c["ipam"] as? [String: Any], let t = ipam["type"] as? String, !t.isEmpty else {
            throw CNIError(CNIError.invalidConfig, "the bridge plugin needs an ipam section with a type")
        }
        ipamType = t
    }
}

/// The bridge plugin: a veth pair into the container's namespace attached to a
/// node bridge, addresses from any IPAM plugin, optional gateway and masquerading.
public struct BridgePlugin: CNIPlugin {
    public init() {}

    /// The reference plugins' chain name: `CNI-` and 24 hex digits of sha512(name + id).
    static func chainName(_ network: String, _ id: String) -> String {
        let d = SHA512.hash(data: Data((network + id).utf8))
        return "CNI-" + d.map { String(format: "%02x", $0) }.joined().prefix(24)
    }

    static func comment(_ network: String, _ id: String) -> String { "name: \"\(network)\" id: \"\(id)\"" }

    public func add(_ r: CNIRequest) throws -> CNIResult {
        let cfg = try BridgeConfig(r)
        guard let netnsPath = r.netns else { throw CNIError(CNIError.invalidEnvironment, "CNI_NETNS is required for ADD") }
        guard FileManager.default.fileExists(atPath: netnsPath) else {
            throw CNIError(CNIError.other, "failed to open netns \"\(netnsPath)\": no such file or directory")
        }
        let containerNS = Namespace(path: netnsPath)
        let host = try RouteHandle()
        // 1. The bridge.
        if let l = try host.link(named: cfg.bridge) {
            guard l.kind == "bridge" else { throw CNIError(CNIError.other, "\(cfg.bridge) already exists but is not a bridge") }
        } else {
            do {
                try host.addBridge(cfg.bridge, mtu: cfg.mtu)
            } catch let e as NetlinkError where e.errno == EEXIST {}   // a concurrent ADD made it
        }
        if cfg.promiscMode { try host.setPromiscuous(cfg.bridge, true) }
        try host.setUp(cfg.bridge)

        // 2. The veth pair, made inside the container and its host end sent out.
        let container = try RouteHandle(in: containerNS)
        if try container.link(named: r.ifname) != nil {
            throw CNIError(CNIError.other, "container veth name provided (\(r.ifname)) already exists")
        }
        var hostName = ""
        for _ in 0..<10 {
            hostName = "veth" + String(format: "%08x", UInt32.random(in: 0...UInt32.max))
            if try host.link(named: hostName) == nil { break }
        }
        try container.addVeth(name: r.ifname, peer: hostName, peerNamespace: .current, mtu: cfg.mtu)
        var ipamDone = false
        do {
            try host.setMaster(hostName, cfg.bridge)
            if cfg.hairpinMode { try host.setHairpin(hostName, true) }
            try host.setUp(hostName)
            try container.setUp(r.ifname)

            // 3. Addresses from IPAM.
            guard let ipamOut = try Delegate.run(cfg.ipamType, command: "ADD", r) else {
                throw CNIError(CNIError.other, "IPAM plugin \(cfg.ipamType) returned no result")
            }
            ipamDone = true
            var result = try CNIResult(json: ipamOut)
            guard !result.ips.isEmpty else { throw CNIError(CNIError.other, "IPAM plugin returned missing IP config") }
            if cfg.isDefaultGateway {
                for ip in result.ips where ip.gateway != nil {
                    let dst = ip.isIPv6 ? "::/0" : "0.0.0.0/0"
                    if !result.routes.contains(where: { $0.dst == dst }) { result.routes.append(ResultRoute(dst: dst, gw: ip.gateway)) }
                }
            }
            for i in result.ips.indices { result.ips[i].interface = 2 }

            // 4. The container side: addresses and routes.
            if !cfg.enableDAD && result.ips.contains(where: \.isIPv6) {
                try? containerNS.setSysctl("net.ipv6.conf.\(r.ifname).accept_dad", "0")
            }
            for ip in result.ips {
                guard let a = IPNet(ip.address) else { throw CNIError(CNIError.other, "IPAM returned an invalid address \(ip.address)") }
                try container.addAddress(r.ifname, a, noDAD: !cfg.enableDAD)
            }
            let containerIndex = try container.mustLink(r.ifname).index
            for route in result.routes {
                guard let dst = IPNet(route.dst) else { continue }
                let gw = route.gw ?? result.ips.first { $0.isIPv6 == dst.isIPv6 }?.gateway
                let isDefault = dst.prefixLength == 0
                var metrics: [Int: UInt32] = [:]
                if let m = route.mtu { metrics[2] = UInt32(m) }
                if let m = route.advmss { metrics[8] = UInt32(m) }
                do {
                    try container.addRoute(Route(destination: isDefault ? nil : dst, gateway: gw, outputIndex: containerIndex,
                                                 priority: route.priority.map(UInt32.init), metrics: metrics, ipv6: dst.isIPv6))
                } catch let e as NetlinkError where e.errno == EEXIST {}
            }

            // 5. The gateway on the bridge, forwarding, masquerading.
            if cfg.isGateway {
                for ip in result.ips {
                    guard let gw = ip.gateway, let a = IPNet(ip.address) else { continue }
                    let gwNet = IPNet(address: IPNet.parseIP(gw)!, prefixLength: a.prefixLength)
                    let existing = try host.addresses(of: cfg.bridge).filter { $0.address.isIPv6 == gwNet.isIPv6 }
                    if existing.contains(where: { $0.address == gwNet }) { continue }
                    for e in existing where e.address.network == gwNet.network {
                        guard cfg.forceAddress else {
                            throw CNIError(CNIError.other, "\(cfg.bridge) already has an IP address different from \(gwNet)")
                        }
                        try host.deleteAddress(cfg.bridge, e.address)
                    }
                    try host.addAddress(cfg.bridge, gwNet, noDAD: !cfg.enableDAD)
                    try Namespace.current.setSysctl(gwNet.isIPv6 ? "net.ipv6.conf.all.forwarding" : "net.ipv4.ip_forward", "1")
                }
            }
            if cfg.ipMasq {
                try masquerade(add: true, result.ips, r)
            }
            let br = try host.mustLink(cfg.bridge), hv = try host.mustLink(hostName), cv = try container.mustLink(r.ifname)
            result.interfaces = [ResultInterface(name: br.name, mac: br.macString), ResultInterface(name: hv.name, mac: hv.macString),
                                 ResultInterface(name: cv.name, mac: cv.macString, sandbox: netnsPath)]
            return result
        } catch {
            // Nothing half-done: the veth pair goes (with its host end), and so does the address.
            try? container.deleteLink(r.ifname)
            if ipamDone { _ = try? Delegate.run(cfg.ipamType, command: "DEL", r) }
            throw error
        }
    }

    /// The reference plugins' masquerade rules for the container's addresses, through iptables-restore.
    func masquerade(add: Bool, _ ips: [ResultIP], _ r: CNIRequest) throws {
        let chain = Self.chainName(r.name, r.containerID)
        let comment = Self.comment(r.name, r.containerID).replacingOccurrences(of: "\"", with: "\\\"")
        for ip6 in [false, true] {
            let mine = ips.filter { $0.isIPv6 == ip6 }.compactMap { IPNet($0.address) }
            guard !mine.isEmpty else { continue }
            var s = "*nat\n"
            if add {
                s += ":\(chain) - [0:0]\n"
                for a in mine {
                    s += "-A \(chain) -d \(a.network) -m comment --comment \"\(comment)\" -j ACCEPT\n"
                }
                s += "-A \(chain) ! -d \(ip6 ? "ff00::/8" : "224.0.0.0/4") -m comment --comment \"\(comment)\" -j MASQUERADE\n"
                for a in mine {
                    s += "-A POSTROUTING -s \(a.ip)/\(ip6 ? 128 : 32) -m comment --comment \"\(comment)\" -j \(chain)\n"
                }
            } else {
                for a in mine {
                    s += "-D POSTROUTING -s \(a.ip)/\(ip6 ? 128 : 32) -m comment --comment \"\(comment)\" -j \(chain)\n"
                }
                s += "-F \(chain)\n-X \(chain)\n"
            }
            s += "COMMIT\n"
            let tool = ip6 ? "ip6tables-restore" : "iptables-restore"
            guard let exe = Exec.which(tool) else { throw CNIError(CNIError.other, "\(tool) not found for ipMasq") }
            let (status, _) = try Exec.run(exe, ["-w", "5", "--noflush"], env: ProcessInfo.processInfo.environment, input: Data(s.utf8))
            if add && status != 0 {
                throw CNIError(CNIError.other, "failed to set up IP masquerading for \(mine.map(\.description).joined(separator: ","))")
            }
        }
    }

    public func del(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        // IPAM first: its addresses are freed even when the namespace is gone.
        try Delegate.run(cfg.ipamType, command: "DEL", r)
        guard let path = r.netns, FileManager.default.fileExists(atPath: path), !r.ifname.isEmpty else {
            return
        }
        let container = try RouteHandle(in: Namespace(path: path))
        guard try container.link(named: r.ifname) != nil else { return }
        let addrs = try container.addresses(of: r.ifname).filter { $0.scope == 0 }
        try container.deleteLink(r.ifname)
        if cfg.ipMasq {
            try? masquerade(add: false, addrs.map { ResultIP(address: $0.address.description) }, r)
        }
    }

    public func check(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        try Delegate.run(cfg.ipamType, command: "CHECK", r)
        guard let prev = try r.prevResult else { throw CNIError(CNIError.invalidConfig, "CHECK needs prevResult") }
        guard let path = r.netns else { throw CNIError(CNIError.invalidEnvironment, "CNI_NETNS is required for CHECK") }
        let host = try RouteHandle(), container = try RouteHandle(in: Namespace(path: path))
        let br = try host.mustLink(cfg.bridge)
        guard let cl = try container.link(named: r.ifname) else {
            throw CNIError(CNIError.other, "container interface \(r.ifname) not found")
        }
        let have = Set(try container.addresses(of: r.ifname).map(\.address.description))
        for ip in prev.ips where !have.contains(ip.address) {
            throw CNIError(CNIError.other, "container interface \(r.ifname) lacks \(ip.address)")
        }
        if let hostIf = prev.interfaces.first(where: { $0.sandbox == nil && $0.name != cfg.bridge }) {
            guard let hv = try host.link(named: hostIf.name), hv.master == br.index else {
                throw CNIError(CNIError.other, "host interface \(hostIf.name) is not a port of \(cfg.bridge)")
            }
        }
        _ = cl
    }

    public func gc(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        try Delegate.run(cfg.ipamType, command: "GC", r)
    }

    public func status(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        try Delegate.run(cfg.ipamType, command: "STATUS", r)
    }
}
