import CMnl
import Foundation

/// A network namespace by path (`/run/netns/NAME`, `/proc/PID/ns/net`), or the
/// caller's own. Work that must happen inside it (opening sockets, writing
/// sysctls) runs on a fresh thread that `setns(2)`es first, so no other thread
/// ever changes namespace.
public struct Namespace: Sendable, Hashable, CustomStringConvertible {
    /// Nil: the namespace of the process.
    public var path: String?

    public init(path: String?) { self.path = path }
    public static let current = Namespace(path: nil)
    /// A namespace `ip netns add NAME` made.
    public static func named(_ name: String) -> Namespace { Namespace(path: "/run/netns/\(name)") }

    public var description: String { path ?? "(own namespace)" }

    /// For single-threaded programs that do one thing and exit (a CNI plugin): `run` then
    /// switches the calling thread into the namespace and back instead of starting a thread.
    /// Never set it in a program whose threads run other work meanwhile.
    nonisolated(unsafe) public static var switchCallingThread = false

    /// Runs `body` inside the namespace and returns its result, on a thread of its own
    /// (a plain pthread, joined before returning) that enters the namespace first.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        guard let path else { return try body() }
        if Self.switchCallingThread { return try runSwitching(path, body) }
        let box = ResultBox<T>()
        let work = NamespaceWork {
            box.result = Result {
                try Self.setns(path)
                return try body()
            }
        }
        var thread = pthread_t()
        let arg = Unmanaged.passRetained(work).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let w = Unmanaged<NamespaceWork>.fromOpaque(raw!).takeRetainedValue()
            w.body()
            return nil
        }, arg)
        guard rc == 0 else {
            Unmanaged<NamespaceWork>.fromOpaque(arg).release()
            throw NetlinkError(errno: rc, what: "start a thread for namespace \(path)")
        }
        pthread_join(thread, nil)
        return try box.result!.get()
    }

    private func runSwitching<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { throw NetlinkError(errno: Foundation.errno, what: "open this thread's network namespace") }
        defer { close(home) }
        try Self.setns(path)
        defer {
            // Work after this must not happen in the wrong namespace: going back cannot be allowed to fail.
            if cmnl_setns(home, cmnl_clone_newnet()) != 0 { fatalError("cannot return to the original network namespace") }
        }
        return try body()
    }

    /// Moves the calling thread into the namespace for the rest of its life: for a thread started
    /// to live there (an event loop, a test server). Everything else goes through `run`, which
    /// never moves a thread it did not start.
    public func enterCallingThread() throws {
        guard let path else { return }
        try Self.setns(path)
    }

    /// The project's one `setns(2)`: the calling thread into the network namespace at `path`.
    private static func setns(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NetlinkError(errno: Foundation.errno, what: "open network namespace \(path)") }
        defer { close(fd) }
        guard cmnl_setns(fd, cmnl_clone_newnet()) == 0 else { throw NetlinkError(errno: Foundation.errno, what: "setns \(path)") }
    }

    /// An open descriptor of the namespace (for `IFLA_NET_NS_FD`); close it after use.
    func openFD() throws -> Int32 {
        let p = path ?? "/proc/thread-self/ns/net"   // the calling thread's, which may differ from the main thread's
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NetlinkError(errno: Foundation.errno, what: "open network namespace \(p)") }
        return fd
    }

    /// `/proc/sys/...` for `net.ipv4.ip_forward`, or for a path relative to /proc/sys as given
    /// (the form to use when a name in it has dots, as `net/ipv6/conf/br0.100/accept_ra`).
    static func sysctlPath(_ key: String) -> String {
        "/proc/sys/" + (key.contains("/") ? key : String(decoding: key.utf8.map { $0 == UInt8(ascii: ".") ? UInt8(ascii: "/") : $0 }, as: UTF8.self))
    }

    /// Writes a sysctl under /proc/sys inside the namespace (`net.ipv4.ip_forward` style
    /// or a path relative to /proc/sys).
    public func setSysctl(_ key: String, _ value: String) throws {
        let path = Self.sysctlPath(key)
        try run {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw NetlinkError(errno: Foundation.errno, what: "open sysctl \(key)") }
            defer { close(fd) }
            let bytes = Array(value.utf8)
            guard write(fd, bytes, bytes.count) == bytes.count else {
                throw NetlinkError(errno: Foundation.errno, what: "write sysctl \(key)=\(value)")
            }
        }
    }

    public func sysctl(_ key: String) throws -> String {
        let path = Self.sysctlPath(key)
        return try run {
            guard let s = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw NetlinkError(errno: ENOENT, what: "read sysctl \(key)")
            }
            return s.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}

final class NamespaceWork: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

struct UnsafeSendable: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// One netlink socket (libmnl), opened inside a namespace: requests with acks, and dumps.
/// - Important: not thread-safe; use one per task.
public final class NetlinkSocket: @unchecked Sendable {
    private let nl: OpaquePointer
    public let portID: UInt32
    private var seq: UInt32
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)

    /// - Parameter proto: `NETLINK_ROUTE`, `NETLINK_GENERIC`, `NETLINK_NETFILTER`, …
    public init(_ proto: Int32, in ns: Namespace = .current) throws {
        nl = try ns.run { () -> UnsafeSendable in
            guard let nl = mnl_socket_open2(proto, Int32(SOCK_CLOEXEC.rawValue)) else {
                throw NetlinkError(errno: Foundation.errno, what: "open netlink socket (protocol \(proto))")
            }
            guard mnl_socket_bind(nl, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
                let e = Foundation.errno
                mnl_socket_close(nl)
                throw NetlinkError(errno: e, what: "bind netlink socket")
            }
            return UnsafeSendable(pointer: nl)
        }.pointer
        portID = mnl_socket_get_portid(nl)
        seq = UInt32(truncatingIfNeeded: time(nil))
        var on: Int32 = 1
        _ = mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { mnl_socket_close(nl) }

    // MARK: the parts, for protocols that frame their own messages (nf_tables batches)

    /// The next sequence number, for a message built elsewhere.
    public func nextSequence() -> UInt32 {
        seq &+= 1
        return seq
    }

    /// Sets a socket buffer's size (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`); 0, or the errno.
    @discardableResult
    public func setBuffer(_ option: Int32, _ size: Int) -> Int32 {
        var v = Int32(clamping: size)
        let r = setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, option, &v, socklen_t(MemoryLayout<Int32>.size))
        return r == 0 ? 0 : Foundation.errno
    }

    /// Sends one message as it is.
    public func send(_ bytes: UnsafeRawBufferPointer, _ what: @autoclosure () -> String) throws {
        guard mnl_socket_sendto(nl, bytes.baseAddress, bytes.count) >= 0 else { throw NetlinkError(errno: Foundation.errno, what: what()) }
    }

    /// Sends the buffers as one message (`sendmsg`: the kernel takes a batch only whole).
    public func send(iovecs: inout [iovec], _ what: @autoclosure () -> String) throws {
        var addr = sockaddr_nl()
        addr.nl_family = sa_family_t(AF_NETLINK)
        let fd = mnl_socket_get_fd(nl)
        let sent = iovecs.withUnsafeMutableBufferPointer { iovp -> Int in
            withUnsafeMutablePointer(to: &addr) { ap in
                var msg = msghdr()
                msg.msg_name = UnsafeMutableRawPointer(ap)
                msg.msg_namelen = socklen_t(MemoryLayout<sockaddr_nl>.size)
                msg.msg_iov = iovp.baseAddress
                msg.msg_iovlen = iovp.count
                return sendmsg(fd, &msg, 0)
            }
        }
        if sent < 0 { throw NetlinkError(errno: Foundation.errno, what: what()) }
    }

    /// Reads, handing every whole message to `each`, until `done` holds.
    public func receive(until done: () -> Bool, bufferSize: Int = 1 << 20, _ what: @autoclosure () -> String,
                        _ each: (UnsafePointer<nlmsghdr>) -> Void) throws {
        var rbuf = [UInt8](repeating: 0, count: bufferSize)
        let header = MemoryLayout<nlmsghdr>.size
        while !done() {
            let n = rbuf.withUnsafeMutableBytes { mnl_socket_recvfrom(nl, $0.baseAddress, $0.count) }
            if n < 0 { throw NetlinkError(errno: Foundation.errno, what: what()) }
            rbuf.withUnsafeBytes { raw in
                var off = 0
                while off + header <= n {
                    let nlh = raw.baseAddress!.advanced(by: off).assumingMemoryBound(to: nlmsghdr.self)
                    let mlen = Int(nlh.pointee.nlmsg_len)
                    if mlen < header || off + mlen > n { break }
                    each(nlh)
                    off += (mlen + 3) & ~3
                }
            }
        }
    }

    /// Sends `msg` with `NLM_F_ACK` and waits for the kernel's answer; returns the
    /// messages that came before the ack (for requests that echo, or `NLM_F_DUMP`).
    /// - Throws: `NetlinkError` with the kernel's errno and `what`.
    @discardableResult
    public func request(_ msg: Message, _ what: @autoclosure () -> String) throws -> [(type: UInt16, payload: [UInt8])] {
        var m = msg
        seq &+= 1
        m.stamp(seq: seq, portID: portID)
        let dump = m.bytes.withUnsafeBytes { ($0.load(fromByteOffset: 6, as: UInt16.self) & UInt16(NLM_F_DUMP)) == UInt16(NLM_F_DUMP) }
        if !dump {
            m.bytes.withUnsafeMutableBytes { p in
                let f = p.load(fromByteOffset: 6, as: UInt16.self) | UInt16(NLM_F_ACK)
                p.storeBytes(of: f, toByteOffset: 6, as: UInt16.self)
            }
        }
        let sent = m.bytes.withUnsafeBytes { mnl_socket_sendto(nl, $0.baseAddress, $0.count) }
        guard sent == m.bytes.count else { throw NetlinkError(errno: Foundation.errno, what: what()) }
        var out: [(UInt16, [UInt8])] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(nl, $0.baseAddress, $0.count) }
            guard n > 0 else { throw NetlinkError(errno: Foundation.errno, what: what()) }
            var off = 0
            while off + 16 <= n {
                let (len, type, mseq) = buffer.withUnsafeBytes { p in
                    (Int(p.load(fromByteOffset: off, as: UInt32.self)), p.load(fromByteOffset: off + 4, as: UInt16.self),
                     p.load(fromByteOffset: off + 8, as: UInt32.self))
                }
                guard len >= 16, off + len <= n else { break }
                defer { off += Message.align(len) }
                guard mseq == seq else { continue }
                if type == UInt16(NLMSG_ERROR) {
                    let code = buffer.withUnsafeBytes { $0.load(fromByteOffset: off + 16, as: Int32.self) }
                    if code == 0 { return out }
                    throw NetlinkError(errno: -code, what: what())
                }
                if type == UInt16(NLMSG_DONE) {
                    // A dump that failed part-way says so in its DONE message.
                    if len >= 20 {
                        let code = buffer.withUnsafeBytes { $0.load(fromByteOffset: off + 16, as: Int32.self) }
                        if code < 0 { throw NetlinkError(errno: -code, what: what()) }
                    }
                    return out
                }
                out.append((type, Array(buffer[(off + 16)..<(off + len)])))
            }
        }
    }
}
