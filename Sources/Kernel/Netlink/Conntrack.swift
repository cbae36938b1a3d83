import CMnl
import Foundation

/// One direction of a tracked connection: addresses (4 or 16 bytes), protocol and ports.
public struct ConntrackTuple: Sendable, Equatable, CustomStringConvertible {
    public var source: [UInt8]
    public var destination: [UInt8]
    public var proto: UInt8
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(source: [UInt8], destination: [UInt8], proto: UInt8, sourcePort: UInt16, destinationPort: UInt16) {
        self.source = source
        self.destination = destination
        self.proto = proto
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    public var description: String {
        "proto \(proto) \(IPNet.format(source)):\(sourcePort) -> \(IPNet.format(destination)):\(destinationPort)"
    }
}

/// A conntrack table entry as `conntrack -L` shows it: the original and reply tuples and the zone.
public struct ConntrackEntry: Sendable, Equatable {
    public var original: ConntrackTuple
    public var reply: ConntrackTuple
    public var zone: UInt16?
}

/// What `conntrack -D -p PROTO [--orig-dst IP] [--orig-port-dst PORT] [--dst-nat IP]` selects.
public struct ConntrackFilter: Sendable {
    public var proto: UInt8
    public var originalDestination: [UInt8]?
    public var originalDestinationPort: UInt16?
    /// `--dst-nat`: the connection was DNATed to this address (the reply comes from it).
    public var natDestination: [UInt8]?

    public init(proto: UInt8, originalDestination: [UInt8]? = nil, originalDestinationPort: UInt16? = nil, natDestination: [UInt8]? = nil) {
        self.proto = proto
        self.originalDestination = originalDestination
        self.originalDestinationPort = originalDestinationPort
        self.natDestination = natDestination
    }

    public func matches(_ e: ConntrackEntry) -> Bool {
        guard e.original.proto == proto else { return false }
        if let d = originalDestination, e.original.destination != d { return false }
        if let p = originalDestinationPort, e.original.destinationPort != p { return false }
        if let n = natDestination, e.reply.source != n { return false }
        return true
    }
}

/// The kernel's connection tracking table over nfnetlink (ctnetlink): list entries and
/// delete them, as conntrack-tools does (a dump, then a delete per matching tuple).
public final class Conntrack: @unchecked Sendable {
    private let sock: NetlinkSocket
    private let lock = NSLock()
    public let namespace: Namespace

    public init(in ns: Namespace = .current) throws {
        namespace = ns
        sock = try NetlinkSocket(NETLINK_NETFILTER, in: ns)
    }

    static func type(_ msg: Int32) -> UInt16 { UInt16((Int32(NFNL_SUBSYS_CTNETLINK) << 8) | msg) }
    static func nfgen(ipv6: Bool) -> [UInt8] { [UInt8(ipv6 ? AF_INET6 : AF_INET), UInt8(NFNETLINK_V0), 0, 0] }

    /// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`: every entry of one address family.
    public static func dumpMessage(ipv6: Bool) -> Message {
        Message(type: type(Int32(IPCTNL_MSG_CT_GET.rawValue)), flags: Int32(NLM_F_DUMP), header: nfgen(ipv6: ipv6))
    }

    /// `IPCTNL_MSG_CT_DELETE` of one entry, named by its original tuple (and zone).
    public static func deleteMessage(_ e: ConntrackEntry) -> Message {
        let v6 = e.original.source.count == 16
        var m = Message(type: type(Int32(IPCTNL_MSG_CT_DELETE.rawValue)), flags: 0, header: nfgen(ipv6: v6))
        m.nest(Int(CTA_TUPLE_ORIG.rawValue)) { m in
            m.nest(Int(CTA_TUPLE_IP.rawValue)) { m in
                m.put(Int(v6 ? CTA_IP_V6_SRC.rawValue : CTA_IP_V4_SRC.rawValue), e.original.source)
                m.put(Int(v6 ? CTA_IP_V6_DST.rawValue : CTA_IP_V4_DST.rawValue), e.original.destination)
            }
            m.nest(Int(CTA_TUPLE_PROTO.rawValue)) { m in
                m.put(Int(CTA_PROTO_NUM.rawValue), u8: e.original.proto)
                m.put(Int(CTA_PROTO_SRC_PORT.rawValue), be16: e.original.sourcePort)
                m.put(Int(CTA_PROTO_DST_PORT.rawValue), be16: e.original.destinationPort)
            }
        }
        if let z = e.zone { m.put(Int(CTA_ZONE.rawValue), be16: z) }
        return m
    }

    static func parseTuple(_ a: Attributes) -> ConntrackTuple? {
        guard let ip = a.nested(Int(CTA_TUPLE_IP.rawValue)), let p = a.nested(Int(CTA_TUPLE_PROTO.rawValue)),
              let proto = p.u8(Int(CTA_PROTO_NUM.rawValue)) else { return nil }
        let src = ip[Int(CTA_IP_V4_SRC.rawValue)] ?? ip[Int(CTA_IP_V6_SRC.rawValue)]
        let dst = ip[Int(CTA_IP_V4_DST.rawValue)] ?? ip[Int(CTA_IP_V6_DST.rawValue)]
        guard let src, let dst else { return nil }
        func port(_ t: UInt32) -> UInt16 { p.u16(Int(t)).map { UInt16(bigEndian: $0) } ?? 0 }
        return ConntrackTuple(source: src, destination: dst, proto: proto,
                              sourcePort: port(CTA_PROTO_SRC_PORT.rawValue), destinationPort: port(CTA_PROTO_DST_PORT.rawValue))
    }

    /// Parses one `IPCTNL_MSG_CT_NEW` payload (nfgenmsg, then attributes).
    static func parseEntry(_ payload: [UInt8]) -> ConntrackEntry? {
        guard payload.count > 4 else { return nil }
        let a = Attributes(payload[4...])
        guard let o = a.nested(Int(CTA_TUPLE_ORIG.rawValue)).flatMap(parseTuple),
              let r = a.nested(Int(CTA_TUPLE_REPLY.rawValue)).flatMap(parseTuple) else { return nil }
        return ConntrackEntry(original: o, reply: r, zone: a.u16(Int(CTA_ZONE.rawValue)).map { UInt16(bigEndian: $0) })
    }

    public func entries(ipv6: Bool = false) throws -> [ConntrackEntry] {
        let msgs = try lock.withLock { try sock.request(Self.dumpMessage(ipv6: ipv6), "dump conntrack table") }
        return msgs.compactMap { Self.parseEntry($0.payload) }
    }

    /// Deletes one entry; one that is already gone is not an error.
    public func delete(_ e: ConntrackEntry) throws {
        do {
            try lock.withLock { _ = try sock.request(Self.deleteMessage(e), "delete conntrack entry \(e.original)") }
        } catch let err as NetlinkError where err.errno == ENOENT {}
    }

    /// Deletes every entry the filter selects; returns how many were deleted.
    @discardableResult
    public func delete(matching f: ConntrackFilter, ipv6: Bool = false) throws -> Int {
        var n = 0
        for e in try entries(ipv6: ipv6) where f.matches(e) {
            try delete(e)
            n += 1
        }
        return n
    }
}
