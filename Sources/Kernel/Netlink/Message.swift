import CMnl
import Foundation

/// A netlink request being built: the header, a family header, attributes
/// (nested where asked), laid out by libmnl. Pure bytes, so tests compare them
/// with fixtures without a socket or root.
public struct Message {
    public internal(set) var bytes: [UInt8]
    private var nestStack: [Int] = []

    /// - Parameters:
    ///   - type: the message type (`RTM_NEWLINK`, a generic netlink family id, …).
    ///   - flags: `NLM_F_*`; `NLM_F_REQUEST` is always added.
    ///   - header: the family header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `genlmsghdr`, …) as bytes.
    public init(type: UInt16, flags: Int32, header: [UInt8] = []) {
        var buf = [UInt8](repeating: 0, count: 16 + Self.align(header.count))
        buf.withUnsafeMutableBytes { p in
            let nlh = mnl_nlmsg_put_header(p.baseAddress)!
            nlh.pointee.nlmsg_type = type
            nlh.pointee.nlmsg_flags = UInt16(truncatingIfNeeded: Int32(NLM_F_REQUEST) | flags)
            if !header.isEmpty {
                let extra = mnl_nlmsg_put_extra_header(nlh, header.count)!
                header.withUnsafeBytes { extra.copyMemory(from: $0.baseAddress!, byteCount: header.count) }
            }
        }
        bytes = buf
    }

    static func align(_ n: Int) -> Int { (n + 3) & ~3 }

    public var length: Int { bytes.count }

    /// Sets the sequence number and port id (the socket does this before sending).
    mutating func stamp(seq: UInt32, portID: UInt32) {
        bytes.withUnsafeMutableBytes { p in
            let nlh = p.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            nlh.pointee.nlmsg_seq = seq
            nlh.pointee.nlmsg_pid = portID
        }
    }

    /// Appends one attribute with a raw payload (libmnl's `mnl_attr_put`).
    public mutating func put(_ type: Int, _ payload: [UInt8]) {
        let start = bytes.count
        bytes += [UInt8](repeating: 0, count: 4 + Self.align(payload.count))
        bytes.withUnsafeMutableBytes { p in
            let nlh = p.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            nlh.pointee.nlmsg_len = UInt32(start)
            payload.withUnsafeBytes { mnl_attr_put(nlh, UInt16(type), payload.count, $0.baseAddress) }
        }
        precondition(bytes.withUnsafeBytes { Int($0.load(as: UInt32.self)) } == bytes.count)
    }

    public mutating func put(_ type: Int, u8 v: UInt8) { put(type, [v]) }
    public mutating func put(_ type: Int, u16 v: UInt16) { put(type, withUnsafeBytes(of: v) { Array($0) }) }
    public mutating func put(_ type: Int, u32 v: UInt32) { put(type, withUnsafeBytes(of: v) { Array($0) }) }
    public mutating func put(_ type: Int, i32 v: Int32) { put(type, withUnsafeBytes(of: v) { Array($0) }) }
    /// A port or other value the kernel wants in network byte order.
    public mutating func put(_ type: Int, be16 v: UInt16) { put(type, withUnsafeBytes(of: v.bigEndian) { Array($0) }) }
    public mutating func put(_ type: Int, be32 v: UInt32) { put(type, withUnsafeBytes(of: v.bigEndian) { Array($0) }) }
    /// A NUL-terminated string (`mnl_attr_put_strz`).
    public mutating func put(_ type: Int, string: String) { put(type, Array(string.utf8) + [0]) }
    /// A flag attribute without payload.
    public mutating func put(flag type: Int) { put(type, []) }

    /// Opens a nested attribute (`mnl_attr_nest_start`); close it with `endNest`.
    public mutating func beginNest(_ type: Int, flagged: Bool = true) {
        nestStack.append(bytes.count)
        var hdr = [UInt8](repeating: 0, count: 4)
        let t = UInt16(type) | (flagged ? UInt16(NLA_F_NESTED) : 0)
        withUnsafeBytes(of: t) { hdr[2] = $0[0]; hdr[3] = $0[1] }
        bytes += hdr
        setLength()
    }

    /// Closes the innermost nest (`mnl_attr_nest_end`).
    public mutating func endNest() {
        let start = nestStack.removeLast()
        let len = UInt16(bytes.count - start)
        withUnsafeBytes(of: len) { bytes[start] = $0[0]; bytes[start + 1] = $0[1] }
    }

    public mutating func nest(_ type: Int, flagged: Bool = true, _ body: (inout Message) -> Void) {
        beginNest(type, flagged: flagged)
        body(&self)
        endNest()
    }

    /// Appends raw bytes (padded to 4), such as a family header inside a nest.
    public mutating func appendRaw(_ raw: [UInt8]) {
        bytes += raw + [UInt8](repeating: 0, count: Self.align(raw.count) - raw.count)
        setLength()
    }

    private mutating func setLength() {
        let n = UInt32(bytes.count)
        withUnsafeBytes(of: n) { for i in 0..<4 { bytes[i] = $0[i] } }
    }
}

/// Attributes of a received message or a nest, by type (the last of a repeated type wins;
/// `all` keeps every one in order).
public struct Attributes: Sendable {
    public var all: [(type: UInt16, payload: [UInt8])] = []

    /// Parses `bytes` as a run of attributes (libmnl's `mnl_attr_ok`/`mnl_attr_next` walk).
    public init(_ bytes: ArraySlice<UInt8>) {
        let buf = Array(bytes)
        buf.withUnsafeBytes { p in
            guard var attr = p.baseAddress.map({ UnsafeRawPointer($0).assumingMemoryBound(to: nlattr.self) }) else { return }
            let end = p.baseAddress! + p.count
            while mnl_attr_ok(attr, Int32(UnsafeRawPointer(end) - UnsafeRawPointer(attr))) {
                let type = mnl_attr_get_type(attr)
                let len = Int(mnl_attr_get_payload_len(attr))
                let payload = mnl_attr_get_payload(attr)!
                all.append((type, Array(UnsafeRawBufferPointer(start: payload, count: len))))
                attr = UnsafePointer(mnl_attr_next(attr))
            }
        }
    }

    public subscript(_ type: Int) -> [UInt8]? { all.last { Int($0.type) == type }?.payload }

    public func u32(_ type: Int) -> UInt32? {
        guard let p = self[type], p.count >= 4 else { return nil }
        return p.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }

    public func u16(_ type: Int) -> UInt16? {
        guard let p = self[type], p.count >= 2 else { return nil }
        return p.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }
    }

    public func u8(_ type: Int) -> UInt8? { self[type]?.first }

    public func string(_ type: Int) -> String? {
        guard let p = self[type] else { return nil }
        return String(decoding: p.prefix { $0 != 0 }, as: UTF8.self)
    }

    public func nested(_ type: Int) -> Attributes? { self[type].map { Attributes($0[...]) } }
}

/// A failed netlink request: the errno name and what was asked.
public struct NetlinkError: Error, CustomStringConvertible, Equatable {
    public var errno: Int32
    public var what: String
    public init(errno: Int32, what: String) {
        self.errno = errno
        self.what = what
    }
    public var description: String { "\(what): \(Self.name(errno)) (\(String(cString: strerror(errno))))" }

    public static func name(_ e: Int32) -> String {
        switch e {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EEXIST: return "EEXIST"
        case EINVAL: return "EINVAL"
        case EBUSY: return "EBUSY"
        case ENODEV: return "ENODEV"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        case EADDRNOTAVAIL: return "EADDRNOTAVAIL"
        case ENETUNREACH: return "ENETUNREACH"
        case ENOBUFS: return "ENOBUFS"
        case EMSGSIZE: return "EMSGSIZE"
        case EACCES: return "EACCES"
        case ERANGE: return "ERANGE"
        case EAFNOSUPPORT: return "EAFNOSUPPORT"
        case ESRCH: return "ESRCH"
        case ENOMEM: return "ENOMEM"
        case EAGAIN: return "EAGAIN"
        case ELOOP: return "ELOOP"
        case ENOSPC: return "ENOSPC"
        case ENFILE: return "ENFILE"
        default: return "errno \(e)"
        }
    }
}
