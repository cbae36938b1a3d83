import Foundation
@testable import Netlink
import NetnsKit
import Testing

@Suite("netlink message encoding")
struct NetlinkEncodingTests {
    func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    @Test func dummyLinkMatchesTheKernelLayout() {
        let m = RouteHandle.simpleLinkMessage(kind: "dummy", name: "d0", mtu: nil)
        // nlmsghdr: len 56, RTM_NEWLINK (16), REQUEST|CREATE|EXCL (0x601), seq 0, pid 0
        // ifinfomsg: 16 zero bytes
        // IFLA_IFNAME (3): len 7 "d0\0" + 1 pad
        // IFLA_LINKINFO (18|NLA_F_NESTED): len 16 { IFLA_INFO_KIND (1): len 10 "dummy\0" + 2 pad }
        let want = "38000000" + "1000" + "0106" + "00000000" + "00000000"
            + String(repeating: "00", count: 16)
            + "0700" + "0300" + "643000" + "00"
            + "1000" + "1280" + "0a00" + "0100" + "64756d6d7900" + "0000"
        #expect(hex(m.bytes) == want)
    }

    @Test func vethPeerNestsAFamilyHeaderAndTheNamespace() {
        let m = RouteHandle.vethMessage(name: "v0", peer: "eth0", peerNamespaceFD: 7, mtu: 1400, mac: nil, peerMAC: nil)
        let a = Attributes(m.bytes[32...])
        #expect(a.string(3) == "v0")
        #expect(a.u32(4) == 1400)
        let info = a.nested(18)!
        #expect(info.string(1) == "veth")
        let peer = info.nested(2)!.nested(1)!   // IFLA_INFO_DATA -> VETH_INFO_PEER
        // The peer nest starts with its own ifinfomsg (16 bytes), then its attributes.
        let peerAttrs = Attributes(info.nested(2)!.all[0].payload[16...])
        #expect(peerAttrs.string(3) == "eth0")
        #expect(peerAttrs.u32(4) == 1400)
        #expect(peerAttrs.u32(28) == 7, "IFLA_NET_NS_FD")
        _ = peer
    }

    @Test func routeWithGatewayAndMetrics() {
        let r = Route(destination: IPNet("10.1.0.0/16"), gateway: "10.0.0.1", outputIndex: 5, metrics: [2: 1400])
        let m = RouteHandle.routeMessage(24, r, flags: 0x600)
        let b = m.bytes
        // rtmsg: AF_INET, dst_len 16, src 0, tos 0, table main, proto boot, scope universe, unicast
        #expect(hex(Array(b[16..<24])) == "02100000fe030001")
        let a = Attributes(b[28...])
        #expect(a[1] == [10, 1, 0, 0], "RTA_DST")
        #expect(a[5] == [10, 0, 0, 1], "RTA_GATEWAY")
        #expect(a.u32(4) == 5, "RTA_OIF")
        #expect(a.nested(8)?.u32(2) == 1400, "RTA_METRICS / RTAX_MTU")
    }

    @Test func addressCarriesBroadcastLikeIPAddrAdd() {
        let m = RouteHandle.addressMessage(20, index: 3, IPNet("10.1.2.3/24")!, flags: 0)
        #expect(hex(Array(m.bytes[16..<24])) == "0218000003000000")
        let a = Attributes(m.bytes[24...])
        #expect(a[2] == [10, 1, 2, 3])
        #expect(a[4] == [10, 1, 2, 255])
    }

    @Test func genericFamilyRequest() {
        let m = GenericNetlink.familyRequest("IPVS")
        #expect(hex(Array(m.bytes[4..<6])) == "1000", "GENL_ID_CTRL")
        #expect(hex(Array(m.bytes[16..<20])) == "03010000", "CTRL_CMD_GETFAMILY, version 1")
        #expect(Attributes(m.bytes[20...]).string(2) == "IPVS")
    }

    @Test func ipNets() {
        #expect(IPNet("10.1.2.3/16")?.network.description == "10.1.0.0/16")
        #expect(IPNet("fd00::5/64")?.network.description == "fd00::/64")
        #expect(IPNet("10.1.2.3")?.prefixLength == 32)
        #expect(IPNet("10.1.2.3/33") == nil)
        #expect(IPNet("nope") == nil)
    }
}

@Suite("netlink in network namespaces", .enabled(if: isRoot, "needs root for network namespaces"))
struct NetlinkKernelTests {
    @Test func linksAddressesRoutesSysctlsAndFamilies() throws {
        let id = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let host = "synl\(id)h", pod = "synl\(id)p"
        try Sh.must(["ip", "netns", "add", host])
        defer { _ = try? Sh.run(["ip", "netns", "del", host]) }
        try Sh.must(["ip", "netns", "add", pod])
        defer { _ = try? Sh.run(["ip", "netns", "del", pod]) }
        let h = try RouteHandle(in: .named(host))
        let p = try RouteHandle(in: .named(pod))
        try h.addBridge("br0", mtu: 1450)
        try h.addVeth(name: "veth0", peer: "eth0", peerNamespace: .named(pod), mtu: 1450)
        try h.setMaster("veth0", "br0")
        try h.setHairpin("veth0", true)
        try h.setUp("veth0")
        try h.setUp("br0")
        try h.setPromiscuous("br0", true)
        try h.addAddress("br0", IPNet("10.22.0.1/24")!)
        try p.setUp("eth0")
        try p.setUp("lo")
        try p.addAddress("eth0", IPNet("10.22.0.5/24")!)
        try p.addRoute(Route(destination: nil, gateway: "10.22.0.1", outputIndex: try p.mustLink("eth0").index))
        try p.addRoute(Route(destination: IPNet("10.99.0.0/16"), outputIndex: try p.mustLink("eth0").index,
                             scope: Route.scopeLink, metrics: [2: 1400]))
        // What iproute2 sees.
        let br = try h.mustLink("br0")
        let veth = try h.mustLink("veth0")
        #expect(br.kind == "bridge" && br.mtu == 1450 && br.isUp && br.isPromiscuous)
        #expect(veth.kind == "veth" && veth.master == br.index)
        #expect(try Sh.must(["ip", "-n", host, "-d", "link", "show", "veth0"]).contains("hairpin on"))
        #expect(try Sh.must(["ip", "-n", pod, "addr", "show", "eth0"]).contains("inet 10.22.0.5/24 brd 10.22.0.255"))
        let routes = try Sh.must(["ip", "-n", pod, "route"])
        #expect(routes.contains("default via 10.22.0.1 dev eth0"))
        #expect(routes.contains("10.99.0.0/16 dev eth0 scope link mtu 1400"))
        #expect(try p.routes().contains { $0.destination == nil && $0.gateway == [10, 22, 0, 1] })
        #expect(try p.addresses(of: "eth0").map(\.address.description).contains("10.22.0.5/24"))
        // The pod reaches the bridge.
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        listener.arguments = ["ip", "netns", "exec", host, "socat", "-T3", "TCP-LISTEN:7777,bind=10.22.0.1,reuseaddr", "SYSTEM:echo ok"]
        try listener.run()
        defer { listener.terminate() }
        var reply = ""
        for _ in 0..<50 where reply != "ok" {
            reply = (try? Sh.run(["ip", "netns", "exec", pod, "socat", "-T2", "-", "TCP:10.22.0.1:7777,connect-timeout=1"], input: ""))?
                .out.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            if reply != "ok" { usleep(50_000) }
        }
        #expect(reply == "ok")
        // Errors name what was asked and the errno.
        #expect(throws: NetlinkError.self) { try h.addBridge("br0") }
        do { try h.addBridge("br0") } catch let e as NetlinkError {
            #expect(e.errno == EEXIST && e.description.contains("add bridge br0") && e.description.contains("EEXIST"))
        }
        #expect(try h.link(named: "nope") == nil)
        // Sysctls are per namespace.
        try Namespace.named(pod).setSysctl("net.ipv4.ip_forward", "1")
        #expect(try Namespace.named(pod).sysctl("net.ipv4.ip_forward") == "1")
        // Moving a link and deleting it. This machine's kernel has no dummy driver: then a veth moves.
        var moved = "dm0", kind = "dummy"
        do {
            try h.addDummy("dm0")
        } catch let e as NetlinkError where e.errno == EOPNOTSUPP {
            moved = "mv0"
            kind = "veth"
            try h.addVeth(name: "mv0", peer: "mv1", peerNamespace: .named(host))
        }
        try h.moveToNamespace(moved, .named(pod))
        #expect(try h.link(named: moved) == nil)
        #expect(try p.link(named: moved)?.kind == kind)
        try p.deleteLink(moved)
        #expect(try p.link(named: moved) == nil)
        try h.deleteLink("veth0")
        #expect(try p.link(named: "eth0") == nil, "deleting one end of a veth removes the peer")
        // Generic netlink resolves families by name.
        #expect(try GenericNetlink.familyID("nlctrl", in: .named(host)) == 0x10)
        #expect(throws: NetlinkError.self) { try GenericNetlink.familyID("NO-SUCH-FAMILY", in: .named(host)) }
    }
}
