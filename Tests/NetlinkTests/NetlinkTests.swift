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
        // Made up: IFF_UP in ifi_flags and ifi_change of the first end's header (not the peer's).
        let upMsg = RouteHandle.vethMessage(name: "v0", peer: "eth0", peerNamespaceFD: nil, mtu: nil, mac: nil, peerMAC: nil, up: true)
        #expect(hex(Array(upMsg.bytes[24..<32])) == "0100000001000000")
        let peerHeader = Attributes(upMsg.bytes[32...]).nested(18)!.nested(2)!.all[0].payload
        #expect(hex(Array(peerHeader[8..<16])) == "0000000000000000")
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

    @Test func bridgeVLANLikeBridgeVlanAdd() {
        let m = RouteHandle.bridgeVLANMessage(index: 9, vid: 100, pvid: true, untagged: true)
        // RTM_SETLINK (19), ifinfomsg family AF_BRIDGE (7), index 9
        #expect(hex(Array(m.bytes[4..<6])) == "1300")
        #expect(hex(Array(m.bytes[16..<24])) == "0700000009000000")
        let spec = Attributes(m.bytes[32...]).nested(26)!   // IFLA_AF_SPEC
        #expect(spec.u16(0) == 1, "IFLA_BRIDGE_FLAGS = BRIDGE_FLAGS_MASTER")
        #expect(hex(spec[2]!) == "06006400", "bridge_vlan_info: PVID|UNTAGGED, vid 100")
        let br = RouteHandle.bridgeMessage(name: "br0", mtu: nil, vlanFiltering: true)
        let info = Attributes(br.bytes[32...]).nested(18)!
        #expect(info.string(1) == "bridge")
        #expect(info.nested(2)?.u8(7) == 1, "IFLA_BR_VLAN_FILTERING")
    }

    @Test func ipv4DeviceConfNestsUnderAFSpec() {
        let m = RouteHandle.ipv4DeviceConfMessage(index: 4, key: RouteHandle.IPv4Conf.arpNotify, value: 1)
        let inet = Attributes(m.bytes[32...]).nested(26)?.nested(2)   // IFLA_AF_SPEC -> AF_INET
        #expect(inet?.nested(1)?.u32(22) == 1, "IFLA_INET_CONF { IPV4_DEVCONF_ARP_NOTIFY (22): 1 }")
    }

    @Test func conntrackDeleteNamesTheOriginalTuple() {
        let t = ConntrackTuple(source: [10, 0, 0, 2], destination: [10, 96, 0, 10], proto: 17, sourcePort: 40000, destinationPort: 53)
        let r = ConntrackTuple(source: [10, 244, 1, 5], destination: [10, 0, 0, 2], proto: 17, sourcePort: 53, destinationPort: 40000)
        let m = Conntrack.deleteMessage(ConntrackEntry(original: t, reply: r, zone: nil))
        // (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, REQUEST; nfgenmsg AF_INET, v0, res_id 0
        #expect(hex(Array(m.bytes[4..<8])) == "02010100")
        #expect(hex(Array(m.bytes[16..<20])) == "02000000")
        let orig = Attributes(m.bytes[20...]).nested(1)!
        #expect(orig.nested(1)?[1] == [10, 0, 0, 2] && orig.nested(1)?[2] == [10, 96, 0, 10])
        #expect(hex(orig.nested(2)![3]!) == "0035", "destination port in network order")
        #expect(orig.nested(2)?.u8(1) == 17)
        // Parsing the same layout back (as a dump answer carries it) gives the tuple again.
        var answer = Message(type: 0, flags: 0, header: [2, 0, 0, 0])
        for (type, tuple) in [(1, t), (2, r)] {
            answer.nest(type) { m in
                m.nest(1) { $0.put(1, tuple.source); $0.put(2, tuple.destination) }
                m.nest(2) { $0.put(1, u8: tuple.proto); $0.put(2, be16: tuple.sourcePort); $0.put(3, be16: tuple.destinationPort) }
            }
        }
        answer.put(18, be16: 3)
        let e = Conntrack.parseEntry(Array(answer.bytes[16...]))
        #expect(e == ConntrackEntry(original: t, reply: r, zone: 3))
        #expect(ConntrackFilter(proto: 17, originalDestination: [10, 96, 0, 10], originalDestinationPort: 53, natDestination: [10, 244, 1, 5]).matches(e!))
        #expect(!ConntrackFilter(proto: 17, natDestination: [10, 244, 1, 6]).matches(e!))
        #expect(!ConntrackFilter(proto: 6).matches(e!))
    }

    @Test func ipvsServiceAndDestinationLikeIpvsadm() {
        var svc = IPVSService(address: [10, 96, 0, 1], proto: IPVSService.tcp, port: 80, scheduler: "rr", persistence: 10800)
        let m = IPVS.serviceMessage(family: 0x22, 1, svc)   // IPVS_CMD_NEW_SERVICE
        #expect(hex(Array(m.bytes[4..<6])) == "2200", "the family id resolved by name")
        #expect(hex(Array(m.bytes[16..<20])) == "01010000", "IPVS_CMD_NEW_SERVICE, IPVS_GENL_VERSION 1")
        let a = Attributes(m.bytes[20...]).nested(1)!   // IPVS_CMD_ATTR_SERVICE
        #expect(a.u16(1) == 2, "AF_INET, host order")
        #expect(a.u16(2) == 6, "protocol, host order")
        #expect(a[3] == [10, 96, 0, 1] + [UInt8](repeating: 0, count: 12), "a 16-byte nf_inet_addr")
        #expect(hex(a[4]!) == "0050", "port 80 in network order")
        #expect(a.string(6) == "rr")
        #expect(hex(a[7]!) == "01000000ffffffff", "ip_vs_flags { PERSISTENT, mask all }")
        #expect(a.u32(8) == 10800)
        #expect(hex(a[9]!) == "ffffffff", "netmask in network order")
        let v6 = Attributes(IPVS.serviceMessage(family: 0x22, 1, IPVSService(address: IPNet.parseIP("fd00::1")!, proto: 6, port: 80)).bytes[20...]).nested(1)!
        #expect(hex(v6[9]!) == "80000000", "an IPv6 netmask is the prefix length as a plain u32, as libipvs sends it")
        // Delete names the service only.
        let del = Attributes(IPVS.serviceMessage(family: 0x22, 3, svc).bytes[20...]).nested(1)!
        #expect(del[6] == nil && del[7] == nil && del.u16(2) == 6)
        let d = IPVSDestination(address: [10, 244, 1, 2], port: 8080, weight: 0)
        let dm = Attributes(IPVS.destinationMessage(family: 0x22, 5, svc, d).bytes[20...])   // IPVS_CMD_NEW_DEST
        #expect(dm.nested(1)?[6] == nil, "the service is named, not redefined")
        let da = dm.nested(2)!
        #expect(hex(da[2]!) == "1f90" && da.u32(3) == 0 && da.u32(4) == 0 && da.u16(11) == 2, "port, masquerade, weight 0, AF_INET")
        // A listed service reads back (as the kernel answers GET_SERVICE).
        var answer = Message(type: 0x22, flags: 0, header: [1, 1, 0, 0])
        IPVS.putService(&answer, svc, full: true)
        svc.stats = nil
        let back = IPVS.parseService(Array(answer.bytes[16...]))
        #expect(back == svc)
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

    @Test(.enabled(if: kernelCanFilterVLANs, "no bridge VLAN filtering in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func bridgeVLANFilteringOnAPort() throws {
        let ns = "synl\(String(UInt32.random(in: 0...UInt32.max), radix: 16))v"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let h = try RouteHandle(in: .named(ns))
        try h.addBridge("br0", vlanFiltering: true)
        try h.addVeth(name: "v0", peer: "v1", peerNamespace: .named(ns))
        try h.setMaster("v0", "br0")
        try h.addBridgeVLAN("v0", vid: 42, pvid: true, untagged: true)
        #expect(try Sh.must(["ip", "-n", ns, "-d", "link", "show", "br0"]).contains("vlan_filtering 1"))
        let vlans = try Sh.must(["ip", "netns", "exec", ns, "bridge", "vlan", "show", "dev", "v0"])
        #expect(vlans.contains("42 PVID") && vlans.contains("Egress Untagged"), "\(vlans)")
    }

    /// Tracked UDP flows in a namespace: one DNATed, one not; only the selected one is deleted.
    @Test func conntrackListsAndDeletesSelectedFlows() throws {
        let ns = "synl\(String(UInt32.random(in: 0...UInt32.max), radix: 16))t"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        try Sh.must(["ip", "-n", ns, "addr", "add", "10.77.0.1/32", "dev", "lo"])
        try Sh.must(["ip", "-n", ns, "addr", "add", "10.77.0.2/32", "dev", "lo"])
        try Sh.must(["ip", "netns", "exec", ns, "nft", "-f", "-"], input: """
            table ip t {
                chain out {
                    type nat hook output priority -100
                    udp dport 5353 dnat to 10.77.0.2:5354
                }
            }
            """)
        try inNamespace(ns) {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            for port in [5353, 6000] {
                var a = sockaddr_in()
                a.sin_family = sa_family_t(AF_INET)
                a.sin_port = UInt16(port).bigEndian
                a.sin_addr.s_addr = inet_addr("10.77.0.1")
                _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, "x", 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            }
        }
        let ct = try Conntrack(in: .named(ns))
        let all = try ct.entries().filter { $0.original.proto == 17 }
        #expect(all.count == 2, "\(all)")
        let natted = all.first { $0.original.destinationPort == 5353 }
        #expect(natted?.reply.source == [10, 77, 0, 2] && natted?.reply.sourcePort == 5354, "the reply tuple shows the DNAT")
        // What `conntrack -L` shows agrees.
        let listed = try Sh.must(["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "udp", "--orig-port-dst", "5353"])
        #expect(listed.contains("dport=5353") && listed.contains("src=10.77.0.2 dst=") && listed.contains("sport=5354"), "\(listed)")
        let n = try ct.delete(matching: ConntrackFilter(proto: 17, originalDestination: [10, 77, 0, 1], originalDestinationPort: 5353,
                                                        natDestination: [10, 77, 0, 2]))
        #expect(n == 1)
        let left = try ct.entries().filter { $0.original.proto == 17 }
        #expect(left.map(\.original.destinationPort) == [6000])
        #expect(try ct.delete(matching: ConntrackFilter(proto: 17, originalDestinationPort: 5353)) == 0)
    }

    /// The same for IPv6 flows (a dual-stack proxy's IPv6 conntrack cleanup): listed with their
    /// 16-byte tuples, the DNATed one deleted, `conntrack -L -f ipv6` agreeing.
    @Test func conntrackListsAndDeletesIPv6Flows() throws {
        let ns = "synl\(String(UInt32.random(in: 0...UInt32.max), radix: 16))s"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        for a in ["fd00:77::1/128", "fd00:77::2/128"] { try Sh.must(["ip", "-n", ns, "-6", "addr", "add", a, "dev", "lo", "nodad"]) }
        try Sh.must(["ip", "netns", "exec", ns, "nft", "-f", "-"], input: """
            table ip6 t {
                chain out {
                    type nat hook output priority -100
                    udp dport 5353 dnat to [fd00:77::2]:5354
                }
            }
            """)
        try inNamespace(ns) {
            let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            for port in [5353, 6000] {
                var a = sockaddr_in6()
                a.sin6_family = sa_family_t(AF_INET6)
                a.sin6_port = UInt16(port).bigEndian
                inet_pton(AF_INET6, "fd00:77::1", &a.sin6_addr)
                _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, "x", 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            }
        }
        let vip: [UInt8] = [0xfd, 0, 0, 0x77] + [UInt8](repeating: 0, count: 11) + [1]
        let backend: [UInt8] = [0xfd, 0, 0, 0x77] + [UInt8](repeating: 0, count: 11) + [2]
        let ct = try Conntrack(in: .named(ns))
        #expect(try ct.entries().filter { $0.original.proto == 17 }.isEmpty, "IPv4's table has none of them")
        let all = try ct.entries(ipv6: true).filter { $0.original.proto == 17 }
        #expect(all.count == 2, "\(all)")
        let natted = all.first { $0.original.destinationPort == 5353 }
        #expect(natted?.original.destination == vip && natted?.reply.source == backend && natted?.reply.sourcePort == 5354, "\(String(describing: natted))")
        let listed = try Sh.must(["ip", "netns", "exec", ns, "conntrack", "-L", "-f", "ipv6", "-p", "udp", "--orig-port-dst", "5353"])
        #expect(listed.contains("dport=5353") && listed.contains("src=fd00:77::2"), "\(listed)")
        let n = try ct.delete(matching: ConntrackFilter(proto: 17, originalDestination: vip, originalDestinationPort: 5353, natDestination: backend), ipv6: true)
        #expect(n == 1)
        #expect(try ct.entries(ipv6: true).filter { $0.original.proto == 17 }.map(\.original.destinationPort) == [6000])
    }

    /// IPVS in a namespace, against `ipvsadm` (runs where the kernel has IPVS: the qemu guest here).
    @Test(.enabled(if: kernelHasIPVS, "no IPVS in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func ipvsServicesAndRealServersAgreeWithIpvsadm() throws {
        let ns = "synl\(String(UInt32.random(in: 0...UInt32.max), radix: 16))i"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        // Real servers must be unicast addresses for the namespace's routing, which has no local table
        // until it has an address: lo up gives it one (a node always has).
        try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        let ipvs = try IPVS(in: .named(ns))
        func listing() throws -> String { try Sh.must(["ip", "netns", "exec", ns, "ipvsadm", "-Ln"]) }
        var svc = IPVSService(address: [10, 96, 0, 1], proto: IPVSService.tcp, port: 80, scheduler: "rr", persistence: 10800)
        try ipvs.addService(svc)
        try ipvs.addDestination(IPVSDestination(address: [10, 244, 1, 2], port: 8080), to: svc)
        try ipvs.addDestination(IPVSDestination(address: [10, 244, 1, 3], port: 8080, weight: 3), to: svc)
        var out = try listing()
        #expect(out.contains("TCP  10.96.0.1:80 rr persistent 10800"), "\(out)")
        #expect(out.contains("-> 10.244.1.2:8080") && out.contains("-> 10.244.1.3:8080              Masq    3"), "\(out)")
        // UDP and SCTP, and a service ipvsadm made, all listed back.
        try ipvs.addService(IPVSService(address: [10, 96, 0, 10], proto: IPVSService.udp, port: 53, scheduler: "wlc"))
        try ipvs.addService(IPVSService(address: [10, 96, 0, 11], proto: IPVSService.sctp, port: 9000, scheduler: "sh"))
        try Sh.must(["ip", "netns", "exec", ns, "ipvsadm", "-A", "-t", "10.96.0.12:443", "-s", "mh"])
        let listed = try ipvs.services()
        #expect(listed.count == 4)
        #expect(listed.first { $0.sameService(svc) }?.timeout == 10800)
        #expect(listed.contains { $0.port == 443 && $0.scheduler == "mh" && $0.proto == IPVSService.tcp })
        #expect(try ipvs.destinations(of: svc).map(\.weight).sorted() == [1, 3])
        // A scheduler change and a weight of 0 (graceful termination) apply in place.
        svc.scheduler = "wrr"
        try ipvs.updateService(svc)
        var d = IPVSDestination(address: [10, 244, 1, 3], port: 8080, weight: 0)
        try ipvs.updateDestination(d, of: svc)
        out = try listing()
        #expect(out.contains("TCP  10.96.0.1:80 wrr persistent 10800") && out.contains("-> 10.244.1.3:8080              Masq    0"), "\(out)")
        d.weight = 1
        try ipvs.deleteDestination(d, from: svc)
        #expect(try ipvs.destinations(of: svc).count == 1)
        // Errors name what was asked and the errno.
        #expect(throws: NetlinkError.self) { try ipvs.addService(svc) }
        do { try ipvs.addService(svc) } catch let e as NetlinkError { #expect(e.description.contains("EEXIST") && e.description.contains("10.96.0.1:80")) }
        try ipvs.deleteService(svc)
        #expect(try ipvs.services().count == 3)
        try ipvs.flush()
        #expect(try ipvs.services().isEmpty)
        #expect(!(try listing()).contains("-> 10."))
    }
}

