import CHost
import Netlink
import Foundation

/// Runs `body` on a new thread inside the network namespace `netns` (a name under
/// /run/netns) and returns its result; sockets made there belong to that namespace.
public func inNamespace<T: Sendable>(_ netns: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let box = Box<Result<T, any Error>>()
    let done = DispatchSemaphore(value: 0)
    spawnInNamespace(netns) { r in
        defer { done.signal() }
        if r != 0 {
            box.value = .failure(LabError("setns \(netns): errno \(-r)"))
            return
        }
        box.value = Result { try body() }
    }
    done.wait()
    return try box.value!.get()
}

/// Starts a thread (1 MiB stack) that enters the network namespace `netns` (a name under
/// /run/netns) and runs `body` with setns's result: 0, or a negative errno.
func spawnInNamespace(_ netns: String, _ body: @escaping @Sendable (Int32) -> Void) {
    let t = Thread {
        do {
            try Namespace.named(netns).enterCallingThread()
            body(0)
        } catch {
            body(-((error as? NetlinkError)?.errno ?? EINVAL))
        }
    }
    t.stackSize = 1 << 20
    t.start()
}

final class Box<T>: @unchecked Sendable {
    var value: T?
}

/// Plain blocking sockets for test clients and servers (IPv4, and IPv6 where an address is one).
public enum TCP {
    static func address(_ ip: String, _ port: Int) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, ip, &sa.sin_addr)
        return sa
    }

    /// A connected socket (blocking, with send/receive timeouts), or nil.
    public static func connect(_ ip: String, _ port: Int, timeout: TimeInterval = 3) -> Int32? {
        let v6 = ip.contains(":")
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int(suseconds_t((timeout - floor(timeout)) * 1e6)))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let r: Int32
        if v6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET6, ip, &sa.sin6_addr)
            r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var sa = address(ip, port)
            r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        if r != 0 {
            close(fd)
            return nil
        }
        return fd
    }

    /// Sends all of `data`; false on error.
    @discardableResult
    public static func send(_ fd: Int32, _ data: [UInt8]) -> Bool {
        var off = 0
        while off < data.count {
            let n = data[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    /// Reads exactly `count` bytes (less on end of file, error or timeout).
    public static func receive(_ fd: Int32, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            got += n
        }
        return Array(out[..<got])
    }

    /// Reads until end of file (or error/timeout).
    public static func receiveAll(_ fd: Int32, limit: Int = 1 << 20) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16_384)
        while out.count < limit {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buf[..<n]
        }
        return out
    }

    public static func shutdownWrite(_ fd: Int32) { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with a reset (SO_LINGER 0).
    public static func reset(_ fd: Int32) { ch_close_reset(fd) }
}

/// An in-process TCP server in a network namespace, for tests and benchmarks that
/// need more connections than one process per connection allows. It echoes what
/// it receives, prefixed once per connection with `greeting`, and closes its side
/// when the client half-closes.
public final class EchoServer: @unchecked Sendable {
    public let port: Int
    private let wake: Int32
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var _accepted = 0
    private var _open = 0

    /// `dualStack`: on [::], taking connections of both families; else on 0.0.0.0.
    public init(netns: String, port: Int, greeting: String = "", dualStack: Bool = false) throws {
        self.port = port
        wake = ch_eventfd()
        let ready = DispatchSemaphore(value: 0)
        let failure = Box<String>()
        let wakeFD = wake
        spawnInNamespace(netns) { [self] r in
            var bound: UInt16 = 0
            let lfd = r != 0 ? r : dualStack ? ch_tcp_listen_dual(UInt16(port), 4096, &bound) : ch_tcp_listen(0, UInt16(port), 4096, &bound)
            if lfd < 0 {
                failure.value = "echo server in \(netns) on :\(port): errno \(-lfd)"
                ready.signal()
                done.signal()
                return
            }
            ready.signal()
            serve(listener: lfd, wake: wakeFD, greeting: Array(greeting.utf8))
            close(lfd)
            done.signal()
        }
        ready.wait()
        if let f = failure.value {
            done.wait()
            close(wake)
            throw LabError(f)
        }
    }

    /// Connections accepted so far, and open now.
    public var accepted: Int { lock.withLock { _accepted } }
    public var open: Int { lock.withLock { _open } }

    private func serve(listener: Int32, wake: Int32, greeting: [UInt8]) {
        var fds: [pollfd] = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        var buf = [UInt8](repeating: 0, count: 65_536)
        // Bytes a connection could not take yet (a slow reader), per descriptor.
        var backlog: [Int32: [UInt8]] = [:]
        while true {
            let n = poll(&fds, nfds_t(fds.count), 1000)
            if n < 0 && errno != EINTR { break }
            if fds[1].revents != 0 { break }
            var closed = Set<Int32>()
            if fds[0].revents & Int16(POLLIN) != 0 {
                for _ in 0..<256 {
                    var a: UInt32 = 0, p: UInt16 = 0
                    let c = ch_accept(listener, &a, &p)
                    if c < 0 { break }
                    lock.withLock { _accepted += 1; _open += 1 }
                    fds.append(pollfd(fd: c, events: Int16(POLLIN), revents: 0))
                    if !greeting.isEmpty { backlog[c] = greeting }
                }
            }
            for i in 2..<fds.count where fds[i].revents != 0 {
                let fd = fds[i].fd
                if fds[i].revents & Int16(POLLOUT) != 0 || backlog[fd] != nil {
                    var pending = backlog[fd] ?? []
                    let w = pending.withUnsafeBytes { ch_send(fd, $0.baseAddress, $0.count) }
                    if w > 0 { pending.removeFirst(w) }
                    if w < 0 && w != -Int(EAGAIN) {
                        closed.insert(fd)
                        continue
                    }
                    backlog[fd] = pending.isEmpty ? nil : pending
                }
                guard backlog[fd] == nil else { continue }   // read only once caught up
                let r = buf.withUnsafeMutableBytes { ch_recv(fd, $0.baseAddress, $0.count) }
                if r > 0 {
                    let w = buf.withUnsafeBytes { ch_send(fd, $0.baseAddress, r) }
                    if w < r { backlog[fd] = Array(buf[max(0, w)..<r]) }
                } else if r == 0 || r != -Int(EAGAIN) {
                    closed.insert(fd)
                }
            }
            if !closed.isEmpty {
                for fd in closed {
                    close(fd)
                    backlog[fd] = nil
                }
                lock.withLock { _open -= closed.count }
                fds.removeAll { closed.contains($0.fd) }
            }
            for i in 2..<fds.count {
                fds[i].events = backlog[fds[i].fd] == nil ? Int16(POLLIN) : Int16(POLLOUT)
                fds[i].revents = 0
            }
            fds[0].revents = 0
        }
        for i in 2..<fds.count { close(fds[i].fd) }
    }

    /// Stops the server and closes its connections.
    public func stop() {
        ch_eventfd_signal(wake)
        done.wait()
        close(wake)
    }
}

/// The number of descriptors this process has open.
public func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// The resident set size in bytes of this process, or of `pid`; 0 if it cannot be read.
public func residentBytes(pid: Int32? = nil) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid.map(String.init) ?? "self")/statm", encoding: .utf8) else { return 0 }
    let f = s.split(separator: " ")
    return (f.count > 1 ? Int(f[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// An in-process UDP server in a network namespace that answers every datagram
/// with `reply` (a newline appended), to the address it came from. Unlike socat's
/// `UDP-RECVFROM,fork`, which forks per datagram and now and then drops one, it
/// answers every datagram, so a lost reply in a test is the proxy's fault.
public final class UDPReplyServer: @unchecked Sendable {
    private let wake: Int32
    private let done = DispatchSemaphore(value: 0)

    public init(netns: String, port: Int, reply: String) throws {
        wake = ch_eventfd()
        let ready = DispatchSemaphore(value: 0)
        let failure = Box<String>()
        let wakeFD = wake
        let answer = Array((reply + "\n").utf8)
        spawnInNamespace(netns) { [done] r in
            defer { done.signal() }
            var bound: UInt16 = 0
            let fd = r == 0 ? ch_udp_bind(0, UInt16(port), &bound) : r
            if fd < 0 {
                failure.value = "UDP server in \(netns) on :\(port): errno \(-fd)"
                ready.signal()
                return
            }
            ready.signal()
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            var buf = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = poll(&fds, 2, 1000)
                if n < 0 && errno != EINTR { break }
                if fds[1].revents != 0 { break }
                if fds[0].revents != 0 {
                    while true {
                        var a: UInt32 = 0, p: UInt16 = 0, local: UInt32 = 0
                        let got = buf.withUnsafeMutableBytes { ch_recv_from(fd, $0.baseAddress, $0.count, &a, &p, &local) }
                        if got < 0 { break }
                        _ = answer.withUnsafeBytes { ch_send_to(fd, $0.baseAddress, $0.count, a, p, local) }
                    }
                }
                fds[0].revents = 0
            }
            close(fd)
        }
        ready.wait()
        if let f = failure.value {
            done.wait()
            close(wake)
            throw LabError(f)
        }
    }

    public func stop() {
        ch_eventfd_signal(wake)
        done.wait()
        close(wake)
    }
}

/// Opens connections as fast as `concurrency` clients can, each one a full
/// exchange: connect, send one byte, half-close, read the echo to end of file,
/// close. Every loop is bounded by `duration`.
public enum ConnectionRate {
    public struct Result: Sendable {
        public var completed: Int
        public var failed: Int
        public var seconds: Double
        /// Per-connection times (connect to close), seconds, sorted.
        public var latencies: [Double]
        public var perSecond: Double { seconds > 0 ? Double(completed) / seconds : 0 }
        public func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
    }

    public static func run(netns: String, ip: String, port: Int, concurrency: Int, duration: TimeInterval) throws -> Result {
        let lock = NSLock()
        let totals = Box<(completed: Int, failed: Int, latencies: [Double])>()
        totals.value = (0, 0, [])
        let group = DispatchGroup()
        let start = Date()
        let deadline = start.addingTimeInterval(duration)
        let errors = Box<String>()
        for _ in 0..<max(1, concurrency) {
            group.enter()
            spawnInNamespace(netns) { r in
                defer { group.leave() }
                if r != 0 {
                    lock.withLock { errors.value = "setns \(netns): errno \(-r)" }
                    return
                }
                var ok = 0, bad = 0
                var mine: [Double] = []
                mine.reserveCapacity(100_000)
                while Date() < deadline {
                    let t0 = Date()
                    guard let fd = TCP.connect(ip, port, timeout: 2) else {
                        bad += 1
                        usleep(1000)
                        continue
                    }
                    var good = TCP.send(fd, [0x78])
                    TCP.shutdownWrite(fd)
                    good = good && TCP.receiveAll(fd, limit: 16) == [0x78]
                    close(fd)
                    if good {
                        ok += 1
                        mine.append(Date().timeIntervalSince(t0))
                    } else {
                        bad += 1
                    }
                }
                lock.withLock {
                    totals.value!.completed += ok
                    totals.value!.failed += bad
                    totals.value!.latencies += mine
                }
            }
        }
        group.wait()
        if let e = errors.value { throw LabError(e) }
        let t = totals.value!
        return Result(completed: t.completed, failed: t.failed, seconds: Date().timeIntervalSince(start), latencies: t.latencies.sorted())
    }
}
