import CHost
import Foundation
import ProxySeam

/// A listener the data plane holds open, as the proxier refers to it.
public struct ListenerHandle: Sendable, Hashable {
    public var proto: L4Protocol
    public var port: UInt16
    let loop: Int
    let fd: Int32
    /// The listener object, so a closed listener's reused descriptor number is never mistaken for it.
    let id: ObjectIdentifier
}

/// Settings of the data path.
public struct DataPlaneOptions: Sendable {
    /// Run the loops (and so every socket) in this network namespace (a path such as
    /// `/run/netns/NAME`); nil for the proxy's own.
    public var netns: String?
    /// Event-loop threads; each listener and its connections live on one.
    public var loops: Int = max(1, min(4, ProcessInfo.processInfo.activeProcessorCount))
    /// Where listeners bind: 0.0.0.0 (upstream's `--bind-address`) takes every IPv4 address; ::
    /// every IPv6 one (the IPv6 proxier's, IPv6 only). The family of the listeners is its family.
    public var listenAddress: HostAddress = .anyIPv4
    /// Upstream's `--udp-timeout`: how long an idle UDP flow is kept (default 250ms).
    public var udpTimeout: Duration = .milliseconds(250)
    /// Timeouts of successive dial attempts, each to the next endpoint (upstream's
    /// userspace proxy used 250ms, 500ms, 1s, 2s).
    public var dialTimeouts: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2)]
    public var backlog: Int32 = 4096

    public init() {}
}

/// The userspace proxy's sockets: listeners per service port and the connections
/// and flows through them, spread over a few epoll threads.
public final class DataPlane: @unchecked Sendable {
    public let options: DataPlaneOptions
    private let loops: [EventLoop]
    fileprivate let lock = NSLock()
    private var nextLoop = 0
    private var openCalls = 0
    /// Listeners asked for since the start (what a sync cost the data plane).
    public var opened: Int { lock.withLock { openCalls } }
    fileprivate var stopped = false

    public init(options: DataPlaneOptions = DataPlaneOptions()) throws {
        ch_ignore_sigpipe()
        Self.raiseDescriptorLimit()
        self.options = options
        var made: [EventLoop] = []
        do {
            for i in 0..<max(1, options.loops) { made.append(try EventLoop(index: i, netns: options.netns)) }
        } catch {
            for l in made { l.stop() }
            throw error
        }
        loops = made
    }

    /// Each connection holds two sockets and, while bytes are in flight, two pipes:
    /// the soft limit of 1024 would cap the proxy near 250 connections. Go raises it
    /// to the hard limit at start-up; so do we.
    static func raiseDescriptorLimit() {
        var lim = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        }
    }

    private func pickLoop() -> EventLoop {
        lock.withLock {
            let l = loops[nextLoop % loops.count]
            nextLoop += 1
            return l
        }
    }

    /// Opens a listener on `port` (0: any free port) for `proto`, sending its
    /// connections where `balancer` says.
    /// - Throws: `SocketError` (EADDRINUSE when the port is taken).
    public func open(_ proto: L4Protocol, port: UInt16, balancer: Balancer, stats: PortStats) async throws -> ListenerHandle {
        lock.withLock { openCalls += 1 }
        let loop = pickLoop()
        let ctx = ListenerContext(balancer: balancer, stats: stats, dialTimeouts: options.dialTimeouts)
        let addr = options.listenAddress.c, backlog = options.backlog, udpTimeout = options.udpTimeout
        return try await loop.submit { () throws -> ListenerHandle in
            var bound: UInt16 = 0
            switch proto {
            case .tcp:
                let fd = ch_ip_tcp_listen(addr, port, backlog, &bound)
                guard fd >= 0 else { throw SocketError(errno: -fd, what: "listen on TCP port \(port)") }
                let l = TCPListener(loop: loop, fd: fd, port: bound, context: ctx)
                loop.register(fd, events: Epoll.input, l)
                return ListenerHandle(proto: .tcp, port: bound, loop: loop.index, fd: fd, id: ObjectIdentifier(l))
            case .udp:
                let fd = ch_ip_udp_bind(addr, port, &bound)
                guard fd >= 0 else { throw SocketError(errno: -fd, what: "bind UDP port \(port)") }
                let l = UDPListener(loop: loop, fd: fd, port: bound, context: ctx, idleTimeout: udpTimeout)
                loop.register(fd, events: Epoll.input, l)
                return ListenerHandle(proto: .udp, port: bound, loop: loop.index, fd: fd, id: ObjectIdentifier(l))
            case .sctp:
                throw SocketError(errno: EPROTONOSUPPORT, what: "the userspace proxy does not carry SCTP")
            }
        }
    }

    /// Closes a listener. Established TCP connections through it carry on; its UDP flows end.
    public func close(_ h: ListenerHandle) async {
        let loop = loops[h.loop]
        _ = try? await loop.submit { loop.terminate(fd: h.fd, id: h.id) }
    }

    /// Open TCP connections and UDP flows, over all listeners.
    public func descriptorsInUse() async -> Int {
        var n = 0
        for l in loops { n += (try? await l.submit { l.registeredCount }) ?? 0 }
        return n
    }

    /// Descriptors held by empty pipes kept for reuse (a cache, bounded per loop).
    public func pooledDescriptors() async -> Int {
        var n = 0
        for l in loops { n += (try? await l.submit { l.pipePool.count * 2 }) ?? 0 }
        return n
    }

    /// Stops accepting, gives open connections up to `grace` to finish, then resets
    /// what is left and stops the threads.
    public func stop(grace: Duration = .seconds(5)) async {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        for l in loops { _ = try? await l.submit { l.terminateListeners() } }
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline {
            var open = 0
            for l in loops { open += (try? await l.submit { l.registeredCount }) ?? 0 }
            if open == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        for l in loops {
            _ = try? await l.submit { l.terminateAll() }
            l.stop()
        }
    }
}

extension DataPlane {
    /// Resets every connection and stops the threads at once, without waiting for
    /// connections to finish (for tear-down paths that cannot wait).
    public func shutdownNow() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        for l in loops {
            _ = l.execute { l.terminateAll() }
            l.stop()
        }
    }
}

extension EventLoop {
    func terminate(fd: Int32, id: ObjectIdentifier) {
        guard let h = handler(for: fd), ObjectIdentifier(h) == id, let t = h as? any Terminable else { return }
        t.terminate()
    }

    func terminateListeners() {
        for h in allHandlers() where h is TCPListener || h is UDPListener {
            (h as? any Terminable)?.terminate()
        }
    }

    func terminateAll() {
        for h in allHandlers() {
            if let t = h as? any Terminable { t.terminate() } else if let f = h as? UDPFlow { f.close() }
        }
    }
}
