import IPTablesKit
import Crypto
import Foundation
import Netlink

/// Runs the IPAM plugin named in the configuration (found in `CNI_PATH`) with the
/// same command and environment, as the spec's delegation does.
public enum Delegate {
    public static func find(_ type: String, in path: [String]) throws -> String {
        guard !type.isEmpty, !type.contains("/"), type != ".", type != ".." else {
            throw CNIError(CNIError.invalidConfig, "invalid plugin name \"\(type)\"")
        }
        for dir in path {
            let p = Files.join(dir, type)
            if access(p, X_OK) == 0 { return p }
        }
        throw CNIError(CNIError.other, "failed to find plugin \"\(type)\" in path \(path)")
    }

    /// The plugin to run in this process instead of executing `exe`, when `exe` is this very
    /// binary under a name it answers to: the same code, without a second process start.
    static func inProcess(_ exe: String) -> (any CNIPlugin)? {
        guard exe.hasSuffix("host-local"), let me = Exec.selfPath, let it = realpath(exe, nil) else { return nil }
        defer { free(it) }
        return String(cString: it) == me ? HostLocalPlugin() : nil
    }

    /// ADD through the IPAM plugin `type`: its result.
    public static func add(_ type: String, _ r: CNIRequest) throws -> CNIResult {
        let exe = try find(type, in: r.path)
        if let plugin = inProcess(exe) {
            var req = r
            req.command = "ADD"
            return try plugin.add(req)
        }
        guard let out = try run(type, command: "ADD", r) else {
            throw CNIError(CNIError.other, "IPAM plugin \(type) returned no result")
        }
        return try CNIResult(json: out)
    }

    /// Runs `type` with `command`; returns its parsed stdout (nil when it printed nothing).
    @discardableResult
    public static func run(_ type: String, command: String, _ r: CNIRequest) throws -> [String: Any]? {
        let exe = try find(type, in: r.path)
        if let plugin = inProcess(exe) {
            var req = r
            req.command = command
            switch command {
            case "ADD": return try plugin.add(req).json(version: r.cniVersion)
            case "DEL": try plugin.del(req)
            case "CHECK": try plugin.check(req)
            case "GC": try plugin.gc(req)
            case "STATUS": try plugin.status(req)
            default: throw CNIError(CNIError.invalidEnvironment, "unknown CNI_COMMAND \(command)")
            }
            return nil
        }
        var env = ProcessInfo.processInfo.environment
        env["CNI_COMMAND"] = command
        let (status, out) = try Exec.run(exe, [], env: env, input: r.raw)
        let obj = out.isEmpty ? nil : (try? JSON.parse([UInt8](out))) as? [String: Any]
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
    var vlan: UInt16 = 0
    var macSpoofCheck = false
    /// The container interface's MAC, from `CNI_ARGS` `MAC=`, `args.cni.mac` or `runtimeConfig.mac`.
    var mac: [UInt8]?
    /// nil: layer 2 only, no addresses (as the reference plugin allows).
    var ipamType: String?

    init(_ r: CNIRequest) throws {
        let c = r.config
        if let b = c["bridge"] as? String, !b.isEmpty { bridge = b }
        isDefaultGateway = c["isDefaultGateway"] as? Bool ?? false
        isGateway = (c["isGateway"] as? Bool ?? false) || isDefaultGateway
        forceAddress = c["forceAddress"] as? Bool ?? false
        ipMasq = c["ipMasq"] as? Bool ?? false
        if let v = c["mtu"] {
            guard let m = v as? Int, let u = UInt32(exactly: m) else { throw CNIError(CNIError.invalidConfig, "invalid mtu \(v)") }
            if u > 0 { mtu = u }
        }
        hairpinMode = c["hairpinMode"] as? Bool ?? false
        promiscMode = c["promiscMode"] as? Bool ?? false
        enableDAD = c["enabledad"] as? Bool ?? false
        macSpoofCheck = c["macspoofchk"] as? Bool ?? false
        if let raw = c["vlan"] {
            guard let v = raw as? Int, (0...4094).contains(v) else {
                throw CNIError(CNIError.invalidConfig, "invalid VLAN ID \(raw) (must be between 0 and 4094)")
            }
            vlan = UInt16(v)
        }
        var macText = r.args["MAC"]
        if let a = (c["args"] as? [String: Any])?["cni"] as? [String: Any], let m = a["mac"] as? String, !m.isEmpty { macText = m }
        if let rc = c["runtimeConfig"] as? [String: Any], let m = rc["mac"] as? String, !m.isEmpty { macText = m }
        if let t = macText {
            let bytes = t.split(separator: ":").compactMap { UInt8($0, radix: 16) }
            guard bytes.count == 6, t.split(separator: ":").count == 6 else {
                throw CNIError(CNIError.invalidConfig, "invalid MAC address \"\(t)\"")
            }
            mac = bytes
        }
        if let ipam = c["ipam"] as? [String: Any], let t = ipam["type"] as? String, !t.isEmpty { ipamType = t }
    }
}

/// The reference plugins' MAC spoof check: a `bridge nat` table whose PREROUTING chain sends
/// frames from the container's host-side veth to a per-container chain that drops any source
/// MAC but the container's. Programmed with `nft` in one transaction, as the reference does.
struct SpoofCheck {
    static let table = "nat"
    static let baseChain = "PREROUTING"
    var refID: String   // containerID-ifname
    var ifaceChain: String { "cni-br-iface-" + refID }
    var macChain: String { ifaceChain + "-mac" }
    var comment: String { "macspoofchk-" + refID }

    func setupScript(hostInterface: String, mac: String) -> String {
        """
        add table bridge nat
        add chain bridge nat PREROUTING { type filter hook prerouting priority -300 ; policy accept ; }
        add chain bridge nat \(ifaceChain)
        add chain bridge nat \(macChain)
        flush chain bridge nat \(ifaceChain)
        flush chain bridge nat \(macChain)
        add rule bridge nat PREROUTING iifname "\(hostInterface)" jump \(ifaceChain) comment "\(comment)"
        add rule bridge nat \(ifaceChain) jump \(macChain) comment "\(comment)"
        add rule bridge nat \(macChain) ether saddr \(mac) return comment "\(comment)"
        add rule bridge nat \(macChain) drop comment "\(comment)"

        """
    }

    static func nft(_ args: [String], input: String = "") throws -> (Int32, String) {
        guard let exe = Exec.which("nft") else { throw CNIError(CNIError.other, "nft not found for macspoofchk") }
        let (status, out) = try Exec.run(exe, args, env: nil, input: Data(input.utf8))
        return (status, String(decoding: out, as: UTF8.self))
    }

    func setup(hostInterface: String, mac: String) throws {
        let (status, _) = try Self.nft(["-f", "-"], input: setupScript(hostInterface: hostInterface, mac: mac))
        guard status == 0 else { throw CNIError(CNIError.other, "failed to setup spoof-check for \(hostInterface)") }
    }

    /// Removes the jump rule (found by its comment) and both chains, in one transaction.
    func teardown() {
        guard let (status, listing) = try? Self.nft(["-a", "list", "chain", "bridge", "nat", "PREROUTING"]), status == 0 else { return }
        var script = ""
        for line in listing.split(separator: "\n") where line.contains("comment \"\(comment)\"") {
            if let r = line.range(of: "# handle ") {
                script += "delete rule bridge nat PREROUTING handle \(line[r.upperBound...].trimmingCharacters(in: .whitespaces))\n"
            }
        }
        for chain in [ifaceChain, macChain] where listing.isEmpty == false {
            if (try? Self.nft(["list", "chain", "bridge", "nat", chain]))?.0 == 0 { script += "delete chain bridge nat \(chain)\n" }
        }
        if !script.isEmpty { _ = try? Self.nft(["-f", "-"], input: script) }
    }
}

/// The bridge plugin: a veth pair into the container's namespace attached to a
/// node bridge, addresses from any IPAM plugin, optional gateway and masquerading.
public struct BridgePlugin: CNIPlugin {
    public init() {}

    /// The reference plugins' chain name: `CNI-` and 24 hex digits of sha512(name + id).
    static func chainName(_ network: String, _ id: String) -> String {
        let d = SHA512.hash(data: Data((network + id).utf8))
        return "CNI-" + d.map { IPNet.hex2($0) }.joined().prefix(24)
    }

    static func comment(_ network: String, _ id: String) -> String { "name: \"\(network)\" id: \"\(id)\"" }

    /// The comment inside double quotes of an iptables-restore line (`"` and `\` escaped).
    static func quotedComment(_ network: String, _ id: String) -> String {
        String(comment(network, id).flatMap { $0 == "\"" || $0 == "\\" ? ["\\", $0] : [$0] })
    }

    /// The bridge, made if missing (with VLAN filtering when a VLAN is asked for), up, owning its routes.
    @discardableResult
    func ensureBridge(_ host: RouteHandle, _ cfg: BridgeConfig) throws -> Link {
        let br: Link
        if let l = try host.link(named: cfg.bridge) {
            guard l.kind == "bridge" else { throw CNIError(CNIError.other, "\(cfg.bridge) already exists but is not a bridge") }
            br = l
        } else {
            do {
                try host.addBridge(cfg.bridge, mtu: cfg.mtu, vlanFiltering: cfg.vlan != 0)
            } catch let e as NetlinkError where e.errno == EEXIST {   // a concurrent ADD made it
            } catch let e as NetlinkError {
                throw CNIError(CNIError.other, "failed to create bridge \"\(cfg.bridge)\": \(e)")
            }
            br = try host.mustLink(cfg.bridge)
        }
        if cfg.promiscMode && !br.isPromiscuous { try host.setPromiscuous(cfg.bridge, true) }
        try? Namespace.current.setSysctl("net/ipv6/conf/\(cfg.bridge)/accept_ra", "0")
        if !br.isUp { try host.setUp(br) }
        return br
    }

    /// A random host-side veth name, as the reference plugins make them.
    static func randomVethName() -> String {
        let hex = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return "veth" + String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// Runs `create` with fresh random veth names until one is free and returns it, as the
    /// reference retries. An EEXIST is final (rethrown) when `fixedNameTaken` says it was the
    /// pair's other, fixed name that clashed, or after ten tries.
    static func withRandomVethName(_ create: (String) throws -> Void, fixedNameTaken: () throws -> Bool) throws -> String {
        var attempt = 0
        while true {
            let name = randomVethName()
            do {
                try create(name)
                return name
            } catch let e as NetlinkError where e.errno == EEXIST {
                attempt += 1
                if try fixedNameTaken() || attempt == 10 { throw e }
            }
        }
    }

    /// With a VLAN the gateway lives on `BRIDGE.VID`, a veth whose peer is an untagged port of the VLAN.
    func ensureVLANGateway(_ host: RouteHandle, _ cfg: BridgeConfig) throws -> Link {
        let name = "\(cfg.bridge).\(cfg.vlan)"
        if let l = try host.link(named: name) { return l }
        let peer: String
        do {
            peer = try Self.withRandomVethName({ try host.addVeth(name: name, peer: $0, peerNamespace: .current, mtu: cfg.mtu, up: true) },
                                               fixedNameTaken: { try host.link(named: name) != nil })
        } catch let e as NetlinkError where e.errno == EEXIST {
            // A concurrent ADD made it a moment ago; it configures it too.
            return try host.mustLink(name)
        }
        do {
            try host.setMaster(peer, cfg.bridge)
            try host.addBridgeVLAN(peer, vid: cfg.vlan, pvid: true, untagged: true)
            try host.setUp(peer)
            return try host.mustLink(name)
        } catch {
            try? host.deleteLink(name)   // never leave a half-made gateway for later ADDs to reuse
            throw error
        }
    }

    public func add(_ r: CNIRequest) throws -> CNIResult {
        let cfg = try BridgeConfig(r)
        guard let netnsPath = r.netns else { throw CNIError(CNIError.invalidEnvironment, "CNI_NETNS is required for ADD") }
        guard access(netnsPath, F_OK) == 0 else {
            throw CNIError(CNIError.other, "failed to open netns \"\(netnsPath)\": no such file or directory")
        }
        let containerNS = Namespace(path: netnsPath)
        let host = try RouteHandle()
        // 1. The bridge.
        let bridge = try ensureBridge(host, cfg)

        // 2. The veth pair, made on the node with its container end sent into the container: the
        //    host end comes up already a port of the bridge (one request instead of four).
        let container = try RouteHandle(in: containerNS)
        let ifnameTaken = { try container.link(named: r.ifname) != nil }
        let hostName: String
        do {
            hostName = try Self.withRandomVethName({
                try host.addVeth(name: $0, peer: r.ifname, peerNamespace: containerNS, mtu: cfg.mtu, peerMAC: cfg.mac, up: true, master: bridge.index)
            }, fixedNameTaken: ifnameTaken)
        } catch let e as NetlinkError where e.errno == EEXIST {
            guard try ifnameTaken() else { throw e }
            throw CNIError(CNIError.other, "container veth name provided (\(r.ifname)) already exists")
        }
        var ipamDone = false
        var masqueraded = false
        var spoof: SpoofCheck?
        do {
            let hv = try host.mustLink(hostName)
            if cfg.hairpinMode { try host.setHairpin(hv, true) }
            if cfg.vlan != 0 { try host.addBridgeVLAN(hv, vid: cfg.vlan, pvid: true, untagged: true) }
            let containerLink = try container.mustLink(r.ifname)
            try container.setUp(containerLink)
            if cfg.macSpoofCheck {
                let sc = SpoofCheck(refID: "\(r.containerID)-\(r.ifname)")
                spoof = sc
                try sc.setup(hostInterface: hostName, mac: containerLink.macString)
            }

            var result = CNIResult()
            if let ipamType = cfg.ipamType {
                // 3. Addresses from IPAM.
                let ipamResult = try Delegate.add(ipamType, r)
                ipamDone = true
                result.ips = ipamResult.ips
                result.routes = ipamResult.routes
                guard !result.ips.isEmpty else { throw CNIError(CNIError.other, "IPAM plugin returned missing IP config") }
                try configureL3(&result, cfg, r, host: host, bridge: bridge, container: container, containerLink: containerLink,
                                containerNS: containerNS)
                if cfg.ipMasq {
                    masqueraded = true
                    try masquerade(result.ips, r)
                }
            }
            // The bridge's MAC may have changed with its first port or address; the veth ends' have not.
            let br = try host.mustLink(cfg.bridge)
            var interfaces = [ResultInterface(name: br.name, mac: br.macString), ResultInterface(name: hv.name, mac: hv.macString),
                              ResultInterface(name: containerLink.name, mac: containerLink.macString, sandbox: netnsPath)]
            if cfg.vlan != 0 && cfg.isGateway && cfg.ipamType != nil, let g = try host.link(named: "\(cfg.bridge).\(cfg.vlan)") {
                interfaces.append(ResultInterface(name: g.name, mac: g.macString))
            }
            result.interfaces = interfaces
            if let dns = r.config["dns"] as? [String: Any] {
                for (k, v) in dns { if let list = v as? [String] { result.dns[k] = list } }
            }
            return result
        } catch {
            // Nothing half-done: the veth pair goes (with its host end), and so do the address,
            // the masquerade rules and the spoof check.
            try? container.deleteLink(r.ifname)
            if masqueraded { try? removeMasquerade(r) }
            spoof?.teardown()
            if ipamDone, let t = cfg.ipamType { _ = try? Delegate.run(t, command: "DEL", r) }
            throw error
        }
    }

    /// Waits until no IPv6 address of `link` is tentative (10 s at most, as the reference);
    /// an address whose detection failed is an error.
    static func settle(_ h: RouteHandle, _ link: Link, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let v6 = try h.addresses(of: link).filter(\.address.isIPv6)
            if let failed = v6.first(where: \.dadFailed) {
                throw CNIError(CNIError.other, "link \(link.name) has address \(failed.address) in DADFAILED state")
            }
            if !v6.contains(where: \.isTentative) { return }
            guard Date() < deadline else {
                throw CNIError(CNIError.other, "link \(link.name) still has tentative addresses after \(Int(timeout)) seconds")
            }
            usleep(50_000)
        }
    }

    /// Gateways, the default route, the container's addresses and routes, the bridge's gateway
    /// addresses and forwarding, as the reference plugin does them.
    func configureL3(_ result: inout CNIResult, _ cfg: BridgeConfig, _ r: CNIRequest,
                     host: RouteHandle, bridge: Link, container: RouteHandle, containerLink: Link, containerNS: Namespace) throws {
        var defaultFound: Set<Bool> = []   // per family (isIPv6)
        for i in result.ips.indices {
            result.ips[i].interface = 2
            let v6 = result.ips[i].isIPv6
            if result.ips[i].gateway == nil && cfg.isGateway, let a = IPNet(result.ips[i].address) {
                result.ips[i].gateway = IPNet.format(IPNet.next(a.network.address))
            }
            if cfg.isDefaultGateway && !defaultFound.contains(v6) {
                let dst = v6 ? "::/0" : "0.0.0.0/0"
                if !result.routes.contains(where: { $0.dst == dst && $0.gw != nil }) {
                    result.routes.append(ResultRoute(dst: dst, gw: result.ips[i].gateway))
                }
                defaultFound.insert(v6)
            }
        }

        // The container side: addresses and routes.
        if result.ips.contains(where: \.isIPv6) {
            try? containerNS.setSysctl("net/ipv6/conf/\(r.ifname)/accept_dad", cfg.enableDAD ? "1" : "0")
            if cfg.enableDAD { try? containerNS.setSysctl("net/ipv6/conf/\(r.ifname)/enhanced_dad", "1") }
        }
        try? container.setIPv4DeviceConf(containerLink, RouteHandle.IPv4Conf.arpNotify, 1)   // net.ipv4.conf.IF.arp_notify
        for ip in result.ips {
            guard let a = IPNet(ip.address) else { throw CNIError(CNIError.other, "IPAM returned an invalid address \(ip.address)") }
            try container.addAddress(containerLink, a, noDAD: !cfg.enableDAD)
        }
        // As the reference (ip.SettleAddresses): IPv6 addresses out of duplicate address
        // detection before the routes and the result, so the address works when ADD returns.
        if result.ips.contains(where: \.isIPv6) { try Self.settle(container, containerLink) }
        let containerIndex = containerLink.index
        for route in result.routes {
            guard let dst = IPNet(route.dst) else { continue }
            let gw = route.gw ?? result.ips.first { $0.isIPv6 == dst.isIPv6 }?.gateway
            var metrics: [Int: UInt32] = [:]
            func u32(_ v: Int?, _ what: String) throws -> UInt32? {
                guard let v else { return nil }
                guard let u = UInt32(exactly: v) else { throw CNIError(CNIError.invalidConfig, "route \(route.dst): invalid \(what) \(v)") }
                return u
            }
            if let m = try u32(route.mtu, "mtu") { metrics[2] = m }
            if let m = try u32(route.advmss, "advmss") { metrics[8] = m }
            let priority = try u32(route.priority, "priority")
            do {
                try container.addRoute(Route(destination: dst.prefixLength == 0 ? nil : dst, gateway: gw, outputIndex: containerIndex,
                                             priority: priority, metrics: metrics, ipv6: dst.isIPv6))
            } catch let e as NetlinkError where e.errno == EEXIST {}
        }

        // The gateway on the bridge (or its VLAN interface), and forwarding.
        guard cfg.isGateway else { return }
        let gatewayLink = cfg.vlan != 0 ? try ensureVLANGateway(host, cfg) : bridge
        for ip in result.ips {
            guard let gw = ip.gateway, let a = IPNet(ip.address), let gwIP = IPNet.parseIP(gw) else { continue }
            let gwNet = IPNet(address: gwIP, prefixLength: a.prefixLength)
            let existing = try host.addresses(of: gatewayLink).filter { $0.address.isIPv6 == gwNet.isIPv6 && $0.scope == 0 }
            if !existing.contains(where: { $0.address == gwNet }) {
                // As the reference: any other IPv4 address conflicts; IPv6 ones only when the subnets overlap.
                for e in existing where !gwNet.isIPv6 || e.address.network.contains(gwNet.address) || gwNet.network.contains(e.address.address) {
                    guard cfg.forceAddress else {
                        throw CNIError(CNIError.other, "\(gatewayLink.name) already has an IP address different from \(gwNet)")
                    }
                    try host.deleteAddress(gatewayLink.name, e.address)
                }
                do {
                    try host.addAddress(gatewayLink, gwNet, noDAD: !cfg.enableDAD)
                } catch let e as NetlinkError where e.errno == EEXIST {
                    // An ADD beside this one gave the bridge the same address first (the
                    // reference's ensureAddr takes EEXIST as done, too).
                }
            }
            try Namespace.current.setSysctl(gwNet.isIPv6 ? "net.ipv6.conf.all.forwarding" : "net.ipv4.ip_forward", "1")
        }
    }

    /// Applies `script` with `iptables-restore --noflush` (or ip6tables-restore) as one transaction.
    static func restore(_ script: RestoreText, ipv6: Bool, or failure: @autoclosure () -> String) throws {
        let tool = ipv6 ? "ip6tables-restore" : "iptables-restore"
        guard Exec.which(tool) != nil else { throw CNIError(CNIError.other, "\(tool) not found") }
        do {
            try SystemIPTables(ipv6: ipv6).restore(script.text)
        } catch {
            throw CNIError(CNIError.other, failure(), details: "\(error)")
        }
    }

    /// The reference plugins' masquerade rules for the container's addresses, through iptables-restore
    /// (one transaction per family: all of them or none).
    func masquerade(_ ips: [ResultIP], _ r: CNIRequest) throws {
        let chain = Self.chainName(r.name, r.containerID)
        let comment = Self.quotedComment(r.name, r.containerID)
        for ip6 in [false, true] {
            let mine = ips.filter { $0.isIPv6 == ip6 }.compactMap { IPNet($0.address) }
            guard !mine.isEmpty else { continue }
            var s = RestoreText()
            s.declare(chain, in: "nat")
            for a in mine {
                s.add("-A \(chain) -d \(a.network) -m comment --comment \"\(comment)\" -j ACCEPT", in: "nat")
            }
            s.add("-A \(chain) ! -d \(ip6 ? "ff00::/8" : "224.0.0.0/4") -m comment --comment \"\(comment)\" -j MASQUERADE", in: "nat")
            for a in mine {
                s.add(JumpRule(table: "nat", chain: "POSTROUTING", target: chain, comment: comment, match: "-s \(a.ip)/\(ip6 ? 128 : 32)").spec, in: "nat")
            }
            try Self.restore(s, ipv6: ip6, or: "failed to set up IP masquerading for \(mine.map(\.description).joined(separator: ","))")
        }
    }

    public func del(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        // IPAM first: its addresses are freed even when the namespace is gone.
        if let t = cfg.ipamType { try Delegate.run(t, command: "DEL", r) }
        if cfg.macSpoofCheck { SpoofCheck(refID: "\(r.containerID)-\(r.ifname)").teardown() }
        var container: RouteHandle?
        if let path = r.netns, access(path, F_OK) == 0, !r.ifname.isEmpty {
            container = try RouteHandle(in: Namespace(path: path))
        }
        if cfg.ipMasq {
            // The rules name the container's addresses: with the interface still there, one
            // iptables-restore removes them; otherwise the chain is found by name.
            let addrs = (try? container?.link(named: r.ifname)) != nil
                ? ((try? container?.addresses(of: r.ifname)) ?? []).filter { $0.scope == 0 }.map { ResultIP(address: $0.address.description) }
                : []
            if addrs.isEmpty || (try? unmasquerade(addrs, r)) == nil { try removeMasquerade(r) }
        }
        if let container, let path = r.netns {
            try LinkDelete.delete(r.ifname, in: path, handle: container)
        }
    }

    /// Removes the rules `masquerade` made for `ips` and the chain, in one iptables-restore per family.
    func unmasquerade(_ ips: [ResultIP], _ r: CNIRequest) throws {
        let chain = Self.chainName(r.name, r.containerID)
        let comment = Self.quotedComment(r.name, r.containerID)
        for ip6 in [false, true] {
            let mine = ips.filter { $0.isIPv6 == ip6 }.compactMap { IPNet($0.address) }
            guard !mine.isEmpty else { continue }
            var s = RestoreText()
            for a in mine {
                s.add(JumpRule(table: "nat", chain: "POSTROUTING", target: chain, comment: comment, match: "-s \(a.ip)/\(ip6 ? 128 : 32)").deleteLine, in: "nat")
            }
            s.add("-F \(chain)", in: "nat")
            s.add("-X \(chain)", in: "nat")
            try Self.restore(s, ipv6: ip6, or: "failed to remove masquerading for \(chain)")
        }
    }

    /// Deletes this container's masquerade chain and the POSTROUTING rules that jump to it.
    func removeMasquerade(_ r: CNIRequest) throws {
        let chain = Self.chainName(r.name, r.containerID)
        for ip6 in [false, true] {
            guard Exec.which(ip6 ? "ip6tables-save" : "iptables-save") != nil,
                  Exec.which(ip6 ? "ip6tables-restore" : "iptables-restore") != nil else { continue }
            do {
                try SystemIPTables(ipv6: ip6).removeOwned(OwnedChains(names: ["nat": [chain]]))
            } catch {
                throw CNIError(CNIError.other, "failed to remove masquerade chain \(chain)", details: "\(error)")
            }
        }
    }

    public func check(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        if let t = cfg.ipamType { try Delegate.run(t, command: "CHECK", r) }
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
        if let t = cfg.ipamType { try Delegate.run(t, command: "GC", r) }
    }

    public func status(_ r: CNIRequest) throws {
        let cfg = try BridgeConfig(r)
        if let t = cfg.ipamType { try Delegate.run(t, command: "STATUS", r) }
    }
}
