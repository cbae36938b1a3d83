import CMnl
import Foundation

/// rtnetlink's messages, built and read without a socket (so fixtures can compare them byte
/// for byte): links, addresses, routes.
extension RouteHandle {

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

    public static func ipv4DeviceConfMessage(index: Int32, key: Int32, value: UInt32) -> Message {
        var m = Message(type: UInt16(RTM_NEWLINK), flags: 0, header: ifinfo(index: index))
        m.nest(Int(IFLA_AF_SPEC)) { m in
            m.nest(Int(AF_INET)) { m in
                m.nest(Int(IFLA_INET_CONF)) { $0.put(Int(key), u32: value) }
            }
        }
        return m
    }

    static func parseLink(_ payload: [UInt8]) -> Link {
        let index = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        let flags = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
        let a = Attributes(payload[16...])
        return Link(index: index, name: a.string(Int(IFLA_IFNAME)) ?? "", kind: a.nested(Int(IFLA_LINKINFO))?.string(Int(IFLA_INFO_KIND)),
                    mtu: a.u32(Int(IFLA_MTU)) ?? 0, mac: a[Int(IFLA_ADDRESS)] ?? [], flags: flags,
                    master: a.u32(Int(IFLA_MASTER)).map { Int32(bitPattern: $0) })
    }
}
