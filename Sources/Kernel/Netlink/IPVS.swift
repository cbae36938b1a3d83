import CMnl
import Foundation

/// Counters of a virtual service or real server, as `ipvsadm -Ln --stats --rate` shows them.
public struct IPVSStats: Sendable, Equatable {
    public var connections: UInt64 = 0
    public var inPackets: UInt64 = 0
    public var outPackets: UInt64 = 0
    public var inBytes: UInt64 = 0
    public var outBytes: UInt64 = 0
    public var connectionsPerSecond: UInt64 = 0
    public var inPacketsPerSecond: UInt64 = 0
    public var outPacketsPerSecond: UInt64 = 0
    public var inBytesPerSecond: UInt64 = 0
    public var outBytesPerSecond: UInt64 = 0
    public init() {}
}

/// A virtual service: an address, protocol and port (or a firewall mark), its scheduler and
/// persistence. Addresses are 4 or 16 bytes in network order.
public struct IPVSService: Sendable, Equatable {
    public static let persistent: UInt32 = UInt32(IP_VS_SVC_F_PERSISTENT)
    public static let tcp: UInt8 = 6, udp: UInt8 = 17, sctp: UInt8 = 132
    /// The schedulers the kernel ships (`ipvsadm -s`).
    public static let schedulers = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"]

    public var address: [UInt8]
    public var proto: UInt8
    public var port: UInt16
    public var fwmark: UInt32 = 0
    public var scheduler: String = "rr"
    public var flags: UInt32 = 0
    /// Persistence timeout in seconds (with `persistent` in flags).
    public var timeout: UInt32 = 0
    /// The persistence netmask: a prefix length's mask for IPv4, the prefix length for IPv6.
    public var netmask: UInt32
    /// Filled in when listed.
    public var stats: IPVSStats? = nil

    public init(address: [UInt8], proto: UInt8, port: UInt16, scheduler: String = "rr", persistence: UInt32? = nil) {
        self.address = address
        self.proto = proto
        self.port = port
        self.scheduler = scheduler
        netmask = address.count == 16 ? 128 : 0xffff_ffff
        if let persistence {
            flags |= Self.persistent
            timeout = persistence
        }
    }

    public var isIPv6: Bool { address.count == 16 }

    /// Identity: what the kernel looks a service up by.
    public func sameService(_ o: IPVSService) -> Bool {
        address == o.address && proto == o.proto && port == o.port && fwmark == o.fwmark
    }
}

/// A real server of a virtual service.
public struct IPVSDestination: Sendable, Equatable {
    public enum Forward: UInt32, Sendable {
        case masquerade = 0   // IP_VS_CONN_F_MASQ, what kube-proxy uses
        case local = 1
        case tunnel = 2
        case directRoute = 3
    }

    public var address: [UInt8]
    public var port: UInt16
    public var weight: Int32 = 1
    public var forward: Forward = .masquerade
    public var upperThreshold: UInt32 = 0
    public var lowerThreshold: UInt32 = 0
    /// Filled in when listed.
    public var activeConnections: UInt32 = 0
    public var inactiveConnections: UInt32 = 0
    public var persistentConnections: UInt32 = 0
    public var stats: IPVSStats? = nil

    public init(address: [UInt8], port: UInt16, weight: Int32 = 1, forward: Forward = .masquerade) {
        self.address = address
        self.port = port
        self.weight = weight
        self.forward = forward
    }

    public func sameDestination(_ o: IPVSDestination) -> Bool { address == o.address && port == o.port }
}

/// The kernel's IP Virtual Server over generic netlink (the "IPVS" family, resolved by name),
/// as `ipvsadm` drives it: services and real servers added, changed, deleted, listed with their
/// counters, and flushed.
public final class IPVS: @unchecked Sendable {
    public let family: UInt16
    /// The network namespace this handle programs.
    public let namespace: Namespace
    private let sock: NetlinkSocket
    private let lock = NSLock()

    /// - Throws: `NetlinkError` with ENOENT when the kernel has no IPVS (the module is not loaded).
    public init(in ns: Namespace = .current) throws {
        do {
            family = try GenericNetlink.familyID("IPVS", in: ns)
        } catch let e as NetlinkError where e.errno == ENOENT {
            throw NetlinkError(errno: ENOENT, what: "this kernel has no IPVS (generic netlink family \"IPVS\"; modprobe ip_vs)")
        }
        sock = try NetlinkSocket(NETLINK_GENERIC, in: ns)
        namespace = ns
    }

    // MARK: encoding (pure, for fixtures)

    static func header(_ cmd: Int) -> [UInt8] { [UInt8(cmd), UInt8(IPVS_GENL_VERSION), 0, 0] }

    /// The 16-byte `union nf_inet_addr` the kernel reads addresses into.
    static func inetAddress(_ a: [UInt8]) -> [UInt8] { a + [UInt8](repeating: 0, count: max(0, 16 - a.count)) }

    static func putService(_ m: inout Message, _ s: IPVSService, full: Bool) {
        m.nest(Int(IPVS_CMD_ATTR_SERVICE)) { m in
            m.put(Int(IPVS_SVC_ATTR_AF), u16: UInt16(s.isIPv6 ? AF_INET6 : AF_INET))
            if s.fwmark != 0 {
                m.put(Int(IPVS_SVC_ATTR_FWMARK), u32: s.fwmark)
            } else {
                m.put(Int(IPVS_SVC_ATTR_PROTOCOL), u16: UInt16(s.proto))
                m.put(Int(IPVS_SVC_ATTR_ADDR), inetAddress(s.address))
                m.put(Int(IPVS_SVC_ATTR_PORT), be16: s.port)
            }
            guard full else { return }
            m.put(Int(IPVS_SVC_ATTR_SCHED_NAME), string: s.scheduler)
            // struct ip_vs_flags { flags, mask }: every flag bit is set or cleared.
            m.put(Int(IPVS_SVC_ATTR_FLAGS), withUnsafeBytes(of: s.flags) { Array($0) } + withUnsafeBytes(of: UInt32.max) { Array($0) })
            m.put(Int(IPVS_SVC_ATTR_TIMEOUT), u32: s.timeout)
            // An IPv4 mask in network order; for IPv6 the prefix length, as a plain u32 (libipvs does the same).
            if s.isIPv6 { m.put(Int(IPVS_SVC_ATTR_NETMASK), u32: s.netmask) } else { m.put(Int(IPVS_SVC_ATTR_NETMASK), be32: s.netmask) }
        }
    }

    static func putDestination(_ m: inout Message, _ d: IPVSDestination, full: Bool) {
        m.nest(Int(IPVS_CMD_ATTR_DEST)) { m in
            m.put(Int(IPVS_DEST_ATTR_ADDR), inetAddress(d.address))
            m.put(Int(IPVS_DEST_ATTR_PORT), be16: d.port)
            m.put(Int(IPVS_DEST_ATTR_ADDR_FAMILY), u16: UInt16(d.address.count == 16 ? AF_INET6 : AF_INET))
            guard full else { return }
            m.put(Int(IPVS_DEST_ATTR_FWD_METHOD), u32: d.forward.rawValue)
            m.put(Int(IPVS_DEST_ATTR_WEIGHT), u32: UInt32(bitPattern: d.weight))
            m.put(Int(IPVS_DEST_ATTR_U_THRESH), u32: d.upperThreshold)
            m.put(Int(IPVS_DEST_ATTR_L_THRESH), u32: d.lowerThreshold)
        }
    }

    public static func serviceMessage(family: UInt16, _ cmd: Int, _ s: IPVSService) -> Message {
        var m = Message(type: family, flags: 0, header: header(cmd))
        putService(&m, s, full: cmd != IPVS_CMD_DEL_SERVICE)
        return m
    }

    public static func destinationMessage(family: UInt16, _ cmd: Int, _ s: IPVSService, _ d: IPVSDestination) -> Message {
        var m = Message(type: family, flags: 0, header: header(cmd))
        putService(&m, s, full: false)
        putDestination(&m, d, full: cmd != IPVS_CMD_DEL_DEST)
        return m
    }

    static func parseStats(_ a: Attributes?) -> IPVSStats? {
        guard let a else { return nil }
        func v(_ t: Int) -> UInt64 {
            guard let p = a[Int(t)] else { return 0 }
            if p.count >= 8 { return p.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
            if p.count >= 4 { return UInt64(p.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
            return 0
        }
        var s = IPVSStats()
        s.connections = v(IPVS_STATS_ATTR_CONNS)
        s.inPackets = v(IPVS_STATS_ATTR_INPKTS)
        s.outPackets = v(IPVS_STATS_ATTR_OUTPKTS)
        s.inBytes = v(IPVS_STATS_ATTR_INBYTES)
        s.outBytes = v(IPVS_STATS_ATTR_OUTBYTES)
        s.connectionsPerSecond = v(IPVS_STATS_ATTR_CPS)
        s.inPacketsPerSecond = v(IPVS_STATS_ATTR_INPPS)
        s.outPacketsPerSecond = v(IPVS_STATS_ATTR_OUTPPS)
        s.inBytesPerSecond = v(IPVS_STATS_ATTR_INBPS)
        s.outBytesPerSecond = v(IPVS_STATS_ATTR_OUTBPS)
        return s
    }

    /// One service from a GET_SERVICE answer (genl header, then IPVS_CMD_ATTR_SERVICE).
    static func parseService(_ payload: [UInt8]) -> IPVSService? {
        guard payload.count > 4, let a = Attributes(payload[4...]).nested(Int(IPVS_CMD_ATTR_SERVICE)) else { return nil }
        let af = a.u16(Int(IPVS_SVC_ATTR_AF)) ?? UInt16(AF_INET)
        let len = af == UInt16(AF_INET6) ? 16 : 4
        let addr = Array((a[Int(IPVS_SVC_ATTR_ADDR)] ?? [UInt8](repeating: 0, count: 16)).prefix(len))
        var s = IPVSService(address: addr.count == len ? addr : [UInt8](repeating: 0, count: len),
                            proto: UInt8(truncatingIfNeeded: a.u16(Int(IPVS_SVC_ATTR_PROTOCOL)) ?? 0),
                            port: a.u16(Int(IPVS_SVC_ATTR_PORT)).map { UInt16(bigEndian: $0) } ?? 0,
                            scheduler: a.string(Int(IPVS_SVC_ATTR_SCHED_NAME)) ?? "")
        s.fwmark = a.u32(Int(IPVS_SVC_ATTR_FWMARK)) ?? 0
        if let f = a[Int(IPVS_SVC_ATTR_FLAGS)], f.count >= 4 { s.flags = f.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
        s.timeout = a.u32(Int(IPVS_SVC_ATTR_TIMEOUT)) ?? 0
        s.netmask = a.u32(Int(IPVS_SVC_ATTR_NETMASK)).map { s.isIPv6 ? $0 : UInt32(bigEndian: $0) } ?? s.netmask
        s.stats = parseStats(a.nested(Int(IPVS_SVC_ATTR_STATS64)) ?? a.nested(Int(IPVS_SVC_ATTR_STATS)))
        return s
    }

    /// One real server from a GET_DEST answer (genl header, then IPVS_CMD_ATTR_DEST).
    static func parseDestination(_ payload: [UInt8], ipv6Service: Bool) -> IPVSDestination? {
        guard payload.count > 4, let a = Attributes(payload[4...]).nested(Int(IPVS_CMD_ATTR_DEST)) else { return nil }
        let af = a.u16(Int(IPVS_DEST_ATTR_ADDR_FAMILY)) ?? UInt16(ipv6Service ? AF_INET6 : AF_INET)
        let len = af == UInt16(AF_INET6) ? 16 : 4
        guard let raw = a[Int(IPVS_DEST_ATTR_ADDR)], raw.count >= len else { return nil }
        var d = IPVSDestination(address: Array(raw.prefix(len)),
                                port: a.u16(Int(IPVS_DEST_ATTR_PORT)).map { UInt16(bigEndian: $0) } ?? 0,
                                weight: Int32(bitPattern: a.u32(Int(IPVS_DEST_ATTR_WEIGHT)) ?? 0),
                                forward: IPVSDestination.Forward(rawValue: (a.u32(Int(IPVS_DEST_ATTR_FWD_METHOD)) ?? 0) & 7) ?? .masquerade)
        d.upperThreshold = a.u32(Int(IPVS_DEST_ATTR_U_THRESH)) ?? 0
        d.lowerThreshold = a.u32(Int(IPVS_DEST_ATTR_L_THRESH)) ?? 0
        d.activeConnections = a.u32(Int(IPVS_DEST_ATTR_ACTIVE_CONNS)) ?? 0
        d.inactiveConnections = a.u32(Int(IPVS_DEST_ATTR_INACT_CONNS)) ?? 0
        d.persistentConnections = a.u32(Int(IPVS_DEST_ATTR_PERSIST_CONNS)) ?? 0
        d.stats = parseStats(a.nested(Int(IPVS_DEST_ATTR_STATS64)) ?? a.nested(Int(IPVS_DEST_ATTR_STATS)))
        return d
    }

    // MARK: operations

    private func request(_ m: Message, _ what: @autoclosure () -> String) throws -> [(type: UInt16, payload: [UInt8])] {
        try lock.withLock { try sock.request(m, what()) }
    }

    static func describe(_ s: IPVSService) -> String {
        s.fwmark != 0 ? "fwmark \(s.fwmark)" : "\(s.proto == 6 ? "TCP" : s.proto == 17 ? "UDP" : s.proto == 132 ? "SCTP" : "proto \(s.proto)") \(IPNet.format(s.address)):\(s.port)"
    }

    public func addService(_ s: IPVSService) throws {
        _ = try request(Self.serviceMessage(family: family, IPVS_CMD_NEW_SERVICE, s), "add virtual service \(Self.describe(s))")
    }

    /// Changes the scheduler, persistence and netmask of an existing service.
    public func updateService(_ s: IPVSService) throws {
        _ = try request(Self.serviceMessage(family: family, IPVS_CMD_SET_SERVICE, s), "update virtual service \(Self.describe(s))")
    }

    public func deleteService(_ s: IPVSService) throws {
        _ = try request(Self.serviceMessage(family: family, IPVS_CMD_DEL_SERVICE, s), "delete virtual service \(Self.describe(s))")
    }

    public func services() throws -> [IPVSService] {
        let m = Message(type: family, flags: Int32(NLM_F_DUMP), header: Self.header(IPVS_CMD_GET_SERVICE))
        return try request(m, "list virtual services").compactMap { Self.parseService($0.payload) }
    }

    public func addDestination(_ d: IPVSDestination, to s: IPVSService) throws {
        _ = try request(Self.destinationMessage(family: family, IPVS_CMD_NEW_DEST, s, d),
                        "add real server \(IPNet.format(d.address)):\(d.port) to \(Self.describe(s))")
    }

    /// Changes weight, forwarding and thresholds of an existing real server.
    public func updateDestination(_ d: IPVSDestination, of s: IPVSService) throws {
        _ = try request(Self.destinationMessage(family: family, IPVS_CMD_SET_DEST, s, d),
                        "update real server \(IPNet.format(d.address)):\(d.port) of \(Self.describe(s))")
    }

    public func deleteDestination(_ d: IPVSDestination, from s: IPVSService) throws {
        _ = try request(Self.destinationMessage(family: family, IPVS_CMD_DEL_DEST, s, d),
                        "delete real server \(IPNet.format(d.address)):\(d.port) from \(Self.describe(s))")
    }

    public func destinations(of s: IPVSService) throws -> [IPVSDestination] {
        var m = Message(type: family, flags: Int32(NLM_F_DUMP), header: Self.header(IPVS_CMD_GET_DEST))
        Self.putService(&m, s, full: false)
        return try request(m, "list real servers of \(Self.describe(s))").compactMap { Self.parseDestination($0.payload, ipv6Service: s.isIPv6) }
    }

    /// Removes every virtual service and real server (`ipvsadm -C`).
    public func flush() throws {
        _ = try request(Message(type: family, flags: 0, header: Self.header(IPVS_CMD_FLUSH)), "flush IPVS")
    }
}
