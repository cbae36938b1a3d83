import CMnl
import Foundation

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

/// Links: list, create (veth, bridge, dummy), change, move, delete.
extension RouteHandle {

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

    func setLink(_ index: Int32, flags: UInt32 = 0, change: UInt32 = 0, _ what: String, _ attrs: (inout Message) -> Void = { _ in }) throws {
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
}
