import CMnl
import Foundation

/// An IPv4 or IPv6 address with a prefix length (`10.1.0.5/16`, `fd00::5/64`).
public struct IPNet: Hashable, Sendable, CustomStringConvertible {
    /// 4 or 16 bytes, network order.
    public var address: [UInt8]
    public var prefixLength: Int

    public init(address: [UInt8], prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `ip/len`, or a bare IP (a host prefix).
    public init?(_ s: String) {
        let parts = s.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let a = IPNet.parseIP(String(first)) else { return nil }
        let maxLen = a.count * 8
        var len = maxLen
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxLen).contains(l) else { return nil }
            len = l
        }
        address = a
        prefixLength = len
    }

    public static func parseIP(_ s: String) -> [UInt8]? {
        if s.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, s, &a) == 1 else { return nil }
            return withUnsafeBytes(of: a) { Array($0) }
        }
        var a = in_addr()
        guard inet_pton(AF_INET, s, &a) == 1 else { return nil }
        return withUnsafeBytes(of: a) { Array($0) }
    }

    public static func format(_ a: [UInt8]) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let fam = a.count == 16 ? AF_INET6 : AF_INET
        _ = a.withUnsafeBytes { inet_ntop(fam, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var isIPv6: Bool { address.count == 16 }
    public var family: UInt8 { UInt8(isIPv6 ? AF_INET6 : AF_INET) }
    public var ip: String { IPNet.format(address) }
    public var description: String { "\(ip)/\(prefixLength)" }

    /// Two lower-case hex digits.
    public static func hex2(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 0xf)]])
    }

    /// The address after `a` (carrying across bytes), as the reference plugins' gateway default.
    public static func next(_ a: [UInt8]) -> [UInt8] {
        var b = a
        for i in b.indices.reversed() {
            b[i] &+= 1
            if b[i] != 0 { break }
        }
        return b
    }

    /// Whether `ip` (same family) lies in this network.
    public func contains(_ ip: [UInt8]) -> Bool {
        guard ip.count == address.count else { return false }
        return IPNet(address: ip, prefixLength: prefixLength).network.address == network.address
    }

    /// The network address (host bits cleared).
    public var network: IPNet {
        var a = address
        for i in 0..<a.count {
            let bits = max(0, min(8, prefixLength - i * 8))
            a[i] &= bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
        return IPNet(address: a, prefixLength: prefixLength)
    }
}

/// A network interface as `RTM_GETLINK` reports it.
public struct Link: Sendable, Equatable {
    public var index: Int32
    public var name: String
    /// `veth`, `bridge`, `dummy`, … (nil for physical and loopback devices).
    public var kind: String?
    public var mtu: UInt32
    public var mac: [UInt8]
    public var flags: UInt32
    /// The index of the bridge (or bond) this link is a port of.
    public var master: Int32?

    public var isUp: Bool { flags & UInt32(IFF_UP) != 0 }
    public var isPromiscuous: Bool { flags & UInt32(IFF_PROMISC) != 0 }
    public var macString: String { mac.map { IPNet.hex2($0) }.joined(separator: ":") }
}

/// An address on a link.
public struct Address: Sendable, Equatable {
    public var index: Int32
    public var address: IPNet
    public var scope: UInt8
}

/// A route (main table unless `table` says otherwise).
public struct Route: Sendable, Equatable {
    /// Nil for a default route.
    public var destination: IPNet?
    public var gateway: [UInt8]?
    public var outputIndex: Int32?
    /// `RT_SCOPE_UNIVERSE` (0), `RT_SCOPE_LINK` (253), `RT_SCOPE_HOST` (254).
    public var scope: UInt8
    public var table: UInt32
    /// `RTPROT_BOOT` (3) for routes we add, as `ip route add` does.
    public var proto: UInt8
    public var priority: UInt32?
    /// `RTAX_*` metrics (`RTAX_MTU` = 2, `RTAX_ADVMSS` = 8, …).
    public var metrics: [Int: UInt32]
    public var ipv6: Bool

    public init(destination: IPNet?, gateway: String? = nil, outputIndex: Int32? = nil, scope: UInt8 = 0,
                table: UInt32 = 254, proto: UInt8 = 3, priority: UInt32? = nil, metrics: [Int: UInt32] = [:], ipv6: Bool? = nil) {
        self.destination = destination
        self.gateway = gateway.flatMap(IPNet.parseIP)
        self.outputIndex = outputIndex
        self.scope = scope
        self.table = table
        self.proto = proto
        self.priority = priority
        self.metrics = metrics
        self.ipv6 = ipv6 ?? (destination?.isIPv6 ?? (self.gateway?.count == 16))
    }

    public static let scopeLink: UInt8 = 253
    public static let scopeHost: UInt8 = 254
}

/// rtnetlink inside one namespace: links, addresses, routes. Each call is one
/// request; errors carry the errno name and what was asked.
public final class RouteHandle: @unchecked Sendable {
    public let namespace: Namespace
    private let sock: NetlinkSocket
    private let lock = NSLock()

    public init(in ns: Namespace = .current) throws {
        namespace = ns
        sock = try NetlinkSocket(NETLINK_ROUTE, in: ns)
    }

    private func send(_ m: Message, _ what: @autoclosure () -> String) throws -> [(type: UInt16, payload: [UInt8])] {
        try lock.withLock { try sock.request(m, what()) }
    }

    // MARK: encoding (pure, for fixtures)

    static func ifinfo(family: UInt8 = UInt8(AF_UNSPEC), index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 16)
        h[0] = family
        withUnsafeBytes(of: index) { for i in 0..<4 { h[4 + i] = $0[i] } }
        withUnsafeBytes(of: flags) { for i in 0..<4 { h[8 + i] = $0[i] } }
        withUnsafeBytes(of: change) { for i in 0..<4 { h[12 + i] = $0[i] } }
        return h
    }

    /// `ip link add NAME type veth peer name PEER netns NS`.
    public static func vethMessage(name: String, peer: String, peerNamespaceFD: Int32?, mtu: UInt32?, mac: [UInt8]?, peerMAC: [UInt8]?,
                                   up: Bool = false, master: Int32? = nil) -> Message {
        let flags: UInt32 = up ? UInt32(IFF_UP) : 0, change: UInt32 = up ? UInt32(IFF_UP) : 0
        var m = Message(type: UInt16(RTM_NEWLINK), flags: Int32(NLM_F_CREATE | NLM_F_EXCL), header: ifinfo(flags: flags, change: change))
        m.put(Int(IFLA_IFNAME), string: name)
        if let master { m.put(Int(IFLA_MASTER), u32: UInt32(bitPattern: master)) }
        if let mtu { m.put(Int(IFLA_MTU), u32: mtu) }
        if let mac { m.put(Int(IFLA_ADDRESS), mac) }
        m.nest(Int(IFLA_LINKINFO)) { m in
            m.put(Int(IFLA_INFO_KIND), string: "veth")
            m.nest(Int(IFLA_INFO_DATA)) { m in
                m.beginNest(Int(VETH_INFO_PEER))
                m.appendRaw(ifinfo())
                m.put(Int(IFLA_IFNAME), string: peer)
                if let mtu { m.put(Int(IFLA_MTU), u32: mtu) }
                if let peerMAC { m.put(Int(IFLA_ADDRESS), peerMAC) }
                if let fd = peerNamespaceFD { m.put(Int(IFLA_NET_NS_FD), u32: UInt32(bitPattern: fd)) }
                m.endNest()
            }
        }
        return m
    }

    /// `ip link add NAME type bridge [vlan_filtering 1]`.
    public static func bridgeMessage(name: String, mtu: UInt32?, vlanFiltering: Bool) -> Message {
        var m = Message(type: UInt16(RTM_NEWLINK), flags: Int32(NLM_F_CREATE | NLM_F_EXCL), header: ifinfo())
        m.put(Int(IFLA_IFNAME), string: name)
        if let mtu { m.put(Int(IFLA_MTU), u32: mtu) }
        m.nest(Int(IFLA_LINKINFO)) { m in
            m.put(Int(IFLA_INFO_KIND), string: "bridge")
            if vlanFiltering { m.nest(Int(IFLA_INFO_DATA)) { $0.put(Int(IFLA_BR_VLAN_FILTERING), u8: 1) } }
        }
        return m
    }

    /// RTM_SETLINK for the bridge family: IFLA_AF_SPEC { IFLA_BRIDGE_FLAGS master, IFLA_BRIDGE_VLAN_INFO }.
    public static func bridgeVLANMessage(index: Int32, vid: UInt16, pvid: Bool, untagged: Bool) -> Message {
        var m = Message(type: UInt16(RTM_SETLINK), flags: 0, header: ifinfo(family: UInt8(AF_BRIDGE), index: index))
        var flags: UInt16 = 0
        if pvid { flags |= UInt16(BRIDGE_VLAN_INFO_PVID) }
        if untagged { flags |= UInt16(BRIDGE_VLAN_INFO_UNTAGGED) }
        m.nest(Int(IFLA_AF_SPEC)) { m in
            m.put(Int(IFLA_BRIDGE_FLAGS), u16: UInt16(BRIDGE_FLAGS_MASTER))
            m.put(Int(IFLA_BRIDGE_VLAN_INFO), withUnsafeBytes(of: flags) { Array($0) } + withUnsafeBytes(of: vid) { Array($0) })
        }
        return m
    }

    public static func simpleLinkMessage(kind: String, name: String, mtu: UInt32?) -> Message {
        var m = Message(type: UInt16(RTM_NEWLINK), flags: Int32(NLM_F_CREATE | NLM_F_EXCL), header: ifinfo())
        m.put(Int(IFLA_IFNAME), string: name)
        if let mtu { m.put(Int(IFLA_MTU), u32: mtu) }
        m.nest(Int(IFLA_LINKINFO)) { m in m.put(Int(IFLA_INFO_KIND), string: kind) }
        return m
    }

    static func addressMessage(_ type: Int32, index: Int32, _ a: IPNet, flags: Int32, scope: UInt8 = 0, noDAD: Bool = false) -> Message {
        var h = [UInt8](repeating: 0, count: 8)
        h[0] = a.family
        h[1] = UInt8(a.prefixLength)
        h[2] = noDAD ? UInt8(IFA_F_NODAD) : 0
        h[3] = scope
        withUnsafeBytes(of: index) { for i in 0..<4 { h[4 + i] = $0[i] } }
        var m = Message(type: UInt16(type), flags: flags, header: h)
        m.put(Int(IFA_LOCAL), a.address)
        m.put(Int(IFA_ADDRESS), a.address)
        if !a.isIPv6 && a.prefixLength < 31 && type == Int32(RTM_NEWADDR) {
            // The broadcast address `ip addr add … brd +` would set.
            var b = a.address
            for i in 0..<4 {
                let bits = max(0, min(8, a.prefixLength - i * 8))
                b[i] |= bits == 8 ? 0 : UInt8(truncatingIfNeeded: 0xff >> bits)
            }
            m.put(Int(IFA_BROADCAST), b)
        }
        return m
    }

    static func routeMessage(_ type: Int32, _ r: Route, flags: Int32) -> Message {
        var h = [UInt8](repeating: 0, count: 12)
        h[0] = UInt8(r.ipv6 ? AF_INET6 : AF_INET)
        h[1] = UInt8(r.destination?.prefixLength ?? 0)
        h[4] = UInt8(truncatingIfNeeded: min(r.table, 255))
        h[5] = r.proto
        h[6] = r.scope
        h[7] = UInt8(RTN_UNICAST)
        var m = Message(type: UInt16(type), flags: flags, header: h)
        if r.table > 255 { m.put(Int(RTA_TABLE.rawValue), u32: r.table) }
        if let d = r.destination { m.put(Int(RTA_DST.rawValue), d.network.address) }
        if let g = r.gateway { m.put(Int(RTA_GATEWAY.rawValue), g) }
        if let o = r.outputIndex { m.put(Int(RTA_OIF.rawValue), i32: o) }
        if let p = r.priority { m.put(Int(RTA_PRIORITY.rawValue), u32: p) }
        if !r.metrics.isEmpty {
            m.nest(Int(RTA_METRICS.rawValue), flagged: false) { m in
                for (k, v) in r.metrics.sorted(by: { $0.key < $1.key }) { m.put(k, u32: v) }
            }
        }
        return m
    }

    // MARK: links

    static func parseLink(_ payload: [UInt8]) -> Link {
        let index = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        let flags = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
        let a = Attributes(payload[16...])
        return Link(index: index, name: a.string(Int(IFLA_IFNAME)) ?? "", kind: a.nested(Int(IFLA_LINKINFO))?.string(Int(IFLA_INFO_KIND)),
                    mtu: a.u32(Int(IFLA_MTU)) ?? 0, mac: a[Int(IFLA_ADDRESS)] ?? [], flags: flags,
                    master: a.u32(Int(IFLA_MASTER)).map { Int32(bitPattern: $0) })
    }

    public func links() throws -> [Link] {
        let m = Message(type: UInt16(RTM_GETLINK), flags: Int32(NLM_F_DUMP), header: Self.ifinfo())
        return try send(m, "list links in \(namespace)").filter { $0.type == UInt16(RTM_NEWLINK) }.map { Self.parseLink($0.payload) }
    }

    /// The link called `name`, or nil.
    public func link(named name: String) throws -> Link? {
        var m = Message(type: UInt16(RTM_GETLINK), flags: 0, header: Self.ifinfo())
        m.put(Int(IFLA_IFNAME), string: name)
        do {
            return try send(m, "get link \(name)").first { $0.type == UInt16(RTM_NEWLINK) }.map { Self.parseLink($0.payload) }
        } catch let e as NetlinkError where e.errno == ENODEV {
            return nil
        }
    }

    public func mustLink(_ name: String) throws -> Link {
        guard let l = try link(named: name) else { throw NetlinkError(errno: ENODEV, what: "no link \(name) in \(namespace)") }
        return l
    }

    /// Creates a veth pair: `name` here, `peer` in `peerNamespace`.
    /// - Parameter up: `name` comes up as it is made (saves a request; the kernel refuses
    ///   IFF_UP in the peer's header, so the peer is brought up separately).
    /// - Parameter master: `name` is made a port of this bridge as it is made.
    public func addVeth(name: String, peer: String, peerNamespace: Namespace, mtu: UInt32? = nil, mac: [UInt8]? = nil, peerMAC: [UInt8]? = nil,
                        up: Bool = false, master: Int32? = nil) throws {
        let fd = try peerNamespace.openFD()
        defer { close(fd) }
        _ = try send(Self.vethMessage(name: name, peer: peer, peerNamespaceFD: fd, mtu: mtu, mac: mac, peerMAC: peerMAC, up: up, master: master),
                     "add veth \(name) with peer \(peer) in \(peerNamespace)")
    }

    public func addBridge(_ name: String, mtu: UInt32? = nil, vlanFiltering: Bool = false) throws {
        _ = try send(Self.bridgeMessage(name: name, mtu: mtu, vlanFiltering: vlanFiltering), "add bridge \(name)")
    }

    /// `bridge vlan add dev NAME vid VID [pvid] [untagged] master`: the VLAN on a bridge port.
    public func addBridgeVLAN(_ name: String, vid: UInt16, pvid: Bool, untagged: Bool) throws {
        try addBridgeVLAN(try mustLink(name), vid: vid, pvid: pvid, untagged: untagged)
    }

    public func addBridgeVLAN(_ l: Link, vid: UInt16, pvid: Bool, untagged: Bool) throws {
        _ = try send(Self.bridgeVLANMessage(index: l.index, vid: vid, pvid: pvid, untagged: untagged), "add vlan \(vid) on \(l.name)")
    }

    public func addDummy(_ name: String, mtu: UInt32? = nil) throws {
        _ = try send(Self.simpleLinkMessage(kind: "dummy", name: name, mtu: mtu), "add dummy link \(name)")
    }

    private func setLink(_ index: Int32, flags: UInt32 = 0, change: UInt32 = 0, _ what: String, _ attrs: (inout Message) -> Void = { _ in }) throws {
        var m = Message(type: UInt16(RTM_NEWLINK), flags: 0, header: Self.ifinfo(index: index, flags: flags, change: change))
        attrs(&m)
        _ = try send(m, what)
    }

    public func setUp(_ name: String, _ up: Bool = true) throws {
        try setUp(try mustLink(name), up)
    }

    /// The `Link` forms skip the lookup by name (one round trip each) when the caller has the link.
    public func setUp(_ l: Link, _ up: Bool = true) throws {
        try setLink(l.index, flags: up ? UInt32(IFF_UP) : 0, change: UInt32(IFF_UP), "set \(l.name) \(up ? "up" : "down")")
    }

    public func setPromiscuous(_ name: String, _ on: Bool) throws {
        let l = try mustLink(name)
        try setLink(l.index, flags: on ? UInt32(IFF_PROMISC) : 0, change: UInt32(IFF_PROMISC), "set \(name) promisc \(on)")
    }

    public func setMTU(_ name: String, _ mtu: UInt32) throws {
        let l = try mustLink(name)
        try setLink(l.index, "set \(name) mtu \(mtu)") { $0.put(Int(IFLA_MTU), u32: mtu) }
    }

    public func setMAC(_ name: String, _ mac: [UInt8]) throws {
        let l = try mustLink(name)
        try setLink(l.index, "set \(name) address") { $0.put(Int(IFLA_ADDRESS), mac) }
    }

    /// Makes `name` a port of `master` (nil: no master).
    /// A per-device IPv4 setting (`net.ipv4.conf.DEV.KEY`) through rtnetlink, with no thread in
    /// the link's namespace needed: IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { key: value } } }.
    public func setIPv4DeviceConf(_ l: Link, _ key: Int32, _ value: UInt32) throws {
        _ = try send(Self.ipv4DeviceConfMessage(index: l.index, key: key, value: value), "set ipv4 conf \(key) on \(l.name)")
    }

    /// Keys for `setIPv4DeviceConf` (the kernel's IPV4_DEVCONF_*).
    public enum IPv4Conf {
        public static let arpNotify = Int32(IPV4_DEVCONF_ARP_NOTIFY)
        public static let forwarding = Int32(IPV4_DEVCONF_FORWARDING)
    }

    public static func ipv4DeviceConfMessage(index: Int32, key: Int32, value: UInt32) -> Message {
        var m = Message(type: UInt16(RTM_NEWLINK), flags: 0, header: ifinfo(index: index))
        m.nest(Int(IFLA_AF_SPEC)) { m in
            m.nest(Int(AF_INET)) { m in
                m.nest(Int(IFLA_INET_CONF)) { $0.put(Int(key), u32: value) }
            }
        }
        return m
    }

    public func setMaster(_ name: String, _ master: String?) throws {
        try setMaster(try mustLink(name), try master.map { try mustLink($0) })
    }

    public func setMaster(_ l: Link, _ master: Link?) throws {
        let mi = master?.index ?? 0
        try setLink(l.index, "set \(l.name) master \(master?.name ?? "none")") { $0.put(Int(IFLA_MASTER), u32: UInt32(bitPattern: mi)) }
    }

    public func moveToNamespace(_ name: String, _ ns: Namespace) throws {
        let l = try mustLink(name)
        let fd = try ns.openFD()
        defer { close(fd) }
        try setLink(l.index, "move \(name) to \(ns)") { $0.put(Int(IFLA_NET_NS_FD), u32: UInt32(bitPattern: fd)) }
    }

    /// Hairpin mode on a bridge port (`bridge link set dev NAME hairpin on`).
    public func setHairpin(_ name: String, _ on: Bool) throws {
        try setHairpin(try mustLink(name), on)
    }

    public func setHairpin(_ l: Link, _ on: Bool) throws {
        var m = Message(type: UInt16(RTM_SETLINK), flags: 0, header: Self.ifinfo(family: UInt8(AF_BRIDGE), index: l.index))
        m.nest(Int(IFLA_PROTINFO)) { $0.put(Int(IFLA_BRPORT_MODE), u8: on ? 1 : 0) }
        _ = try send(m, "set hairpin \(on) on \(l.name)")
    }

    public func deleteLink(_ name: String) throws {
        let l = try mustLink(name)
        let m = Message(type: UInt16(RTM_DELLINK), flags: 0, header: Self.ifinfo(index: l.index))
        _ = try send(m, "delete link \(name)")
    }

    public func deleteLink(index: Int32) throws {
        let m = Message(type: UInt16(RTM_DELLINK), flags: 0, header: Self.ifinfo(index: index))
        _ = try send(m, "delete link #\(index)")
    }

    // MARK: addresses

    public func addAddress(_ name: String, _ a: IPNet, noDAD: Bool = false) throws {
        try addAddress(try mustLink(name), a, noDAD: noDAD)
    }

    public func addAddress(_ l: Link, _ a: IPNet, noDAD: Bool = false) throws {
        _ = try send(Self.addressMessage(Int32(RTM_NEWADDR), index: l.index, a, flags: Int32(NLM_F_CREATE | NLM_F_EXCL), noDAD: noDAD),
                     "add address \(a) to \(l.name)")
    }

    public func deleteAddress(_ name: String, _ a: IPNet) throws {
        let l = try mustLink(name)
        _ = try send(Self.addressMessage(Int32(RTM_DELADDR), index: l.index, a, flags: 0), "delete address \(a) from \(name)")
    }

    public func addresses(of name: String? = nil) throws -> [Address] {
        try addresses(index: try name.map { try mustLink($0).index })
    }

    public func addresses(of l: Link) throws -> [Address] { try addresses(index: l.index) }

    func addresses(index: Int32?) throws -> [Address] {
        let m = Message(type: UInt16(RTM_GETADDR), flags: Int32(NLM_F_DUMP), header: [UInt8](repeating: 0, count: 8))
        return try send(m, "list addresses").compactMap { r in
            guard r.type == UInt16(RTM_NEWADDR), r.payload.count >= 8 else { return nil }
            let idx = r.payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
            if let index, idx != index { return nil }
            let attrs = Attributes(r.payload[8...])
            guard let bytes = attrs[Int(IFA_LOCAL)] ?? attrs[Int(IFA_ADDRESS)] else { return nil }
            return Address(index: idx, address: IPNet(address: bytes, prefixLength: Int(r.payload[1])), scope: r.payload[3])
        }
    }

    // MARK: routes

    public func addRoute(_ r: Route) throws {
        _ = try send(Self.routeMessage(Int32(RTM_NEWROUTE), r, flags: Int32(NLM_F_CREATE | NLM_F_EXCL)),
                     "add route \(r.destination?.description ?? "default")\(r.gateway.map { " via \(IPNet.format($0))" } ?? "")")
    }

    public func deleteRoute(_ r: Route) throws {
        _ = try send(Self.routeMessage(Int32(RTM_DELROUTE), r, flags: 0), "delete route \(r.destination?.description ?? "default")")
    }

    /// Routes of the main table.
    public func routes(ipv6: Bool = false) throws -> [Route] {
        var h = [UInt8](repeating: 0, count: 12)
        h[0] = UInt8(ipv6 ? AF_INET6 : AF_INET)
        let m = Message(type: UInt16(RTM_GETROUTE), flags: Int32(NLM_F_DUMP), header: h)
        return try send(m, "list routes").compactMap { r in
            guard r.type == UInt16(RTM_NEWROUTE), r.payload.count >= 12 else { return nil }
            let p = r.payload
            let a = Attributes(p[12...])
            let table = a.u32(Int(RTA_TABLE.rawValue)) ?? UInt32(p[4])
            guard table == 254 else { return nil }
            var route = Route(destination: a[Int(RTA_DST.rawValue)].map { IPNet(address: $0, prefixLength: Int(p[1])) },
                              outputIndex: a.u32(Int(RTA_OIF.rawValue)).map { Int32(bitPattern: $0) }, scope: p[6], table: table,
                              proto: p[5], priority: a.u32(Int(RTA_PRIORITY.rawValue)), ipv6: p[0] == UInt8(AF_INET6))
            route.gateway = a[Int(RTA_GATEWAY.rawValue)]
            if let mx = a.nested(Int(RTA_METRICS.rawValue)) {
                for (t, v) in mx.all where v.count == 4 { route.metrics[Int(t)] = v.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
            }
            return route
        }
    }
}

