import CHost
import CUserspace
import Foundation

/// What a listener hands its connections: where to send them and what to count.
final class ListenerContext: @unchecked Sendable {
    let balancer: Balancer
    let stats: PortStats
    /// The timeout of each successive dial attempt; the last repeats.
    let dialTimeouts: [UInt64]
    init(balancer: Balancer, stats: PortStats, dialTimeouts: [Duration]) {
        self.balancer = balancer
        self.stats = stats
        self.dialTimeouts = dialTimeouts.map { UInt64($0.components.seconds) * 1_000_000_000 + UInt64($0.components.attoseconds / 1_000_000_000) }
    }
}

/// Something a loop can tear down when the data plane stops.
protocol Terminable: AnyObject {
    func terminate()
}

/// A TCP listener for one service port: accepts and hands each connection to a `TCPConnection`.
/// - Important: loop-confined.
final class TCPListener: LoopHandler, Terminable, @unchecked Sendable {
    let loop: EventLoop
    let fd: Int32
    let port: UInt16
    let context: ListenerContext
    private(set) var closed = false

    init(loop: EventLoop, fd: Int32, port: UInt16, context: ListenerContext) {
        self.loop = loop
        self.fd = fd
        self.port = port
        self.context = context
    }

    func ready(fd: Int32, events: UInt32) {
        for _ in 0..<64 {
            var addr = ch_ip(), port: UInt16 = 0
            let c = ch_ip_accept(fd, &addr, &port)
            if c == -EMFILE || c == -ENFILE {
                // Out of descriptors: the connection stays queued and epoll would report it
                // again at once. Stop listening for a moment instead of spinning.
                loop.modify(fd, events: 0)
                loop.after(nanoseconds: 100_000_000) { [weak self] in
                    guard let self, !self.closed else { return }
                    self.loop.modify(self.fd, events: Epoll.input)
                }
                return
            }
            if c < 0 { return }   // EAGAIN, or the client gave up while queued
            TCPConnection(loop: loop, client: c, clientAddress: HostAddress(addr), context: context).start()
        }
    }

    func terminate() {
        guard !closed else { return }
        closed = true
        loop.close(fd)
    }
}

/// One proxied TCP connection: dials an endpoint (retrying the next one on failure
/// or timeout), then moves bytes both ways with splice(2) through a pipe, so
/// payload never enters user memory.
///
/// Each direction holds a pipe only while bytes are in flight: an idle connection
/// costs its two sockets, not six descriptors. A read end-of-file is passed on
/// as shutdown(SHUT_WR) once everything before it was written (half-close); an
/// error or reset on either side resets the other.
/// - Important: loop-confined.
final class TCPConnection: LoopHandler, Terminable, @unchecked Sendable {
    struct Direction {
        var pipe: (Int32, Int32)?
        var pending = 0
        var readEOF = false
    }

    enum Moved { case ok, writeFailed, readFailed }

    let loop: EventLoop
    let client: Int32
    let clientAddress: HostAddress
    let context: ListenerContext
    var upstream: Int32 = -1
    var endpoint: SocketEndpoint?
    var tried: Set<SocketEndpoint> = []
    var attempt = 0
    var dialTimer: Int?
    var connected = false
    var finished = false
    /// client -> endpoint, endpoint -> client.
    var up = Direction(), down = Direction()
    var clientInterest: UInt32 = 0, upstreamInterest: UInt32 = 0

    init(loop: EventLoop, client: Int32, clientAddress: HostAddress, context: ListenerContext) {
        self.loop = loop
        self.client = client
        self.clientAddress = clientAddress
        self.context = context
    }

    func start() {
        context.stats.opened()
        loop.register(client, events: 0, self)
        dial()
    }

    private func dial() {
        while let ep = context.balancer.pick(client: clientAddress, excluding: tried) {
            tried.insert(ep)
            var inProgress: Int32 = 0
            let fd = ch_ip_tcp_connect(ep.address.c, ep.port, &inProgress)
            if fd < 0 {
                dialFailed()
                continue
            }
            upstream = fd
            endpoint = ep
            if inProgress == 0 {
                loop.register(fd, events: 0, self)
                established()
                return
            }
            loop.register(fd, events: Epoll.output, self)
            upstreamInterest = Epoll.output
            let timeouts = context.dialTimeouts
            let t = timeouts.isEmpty ? 1_000_000_000 : timeouts[min(attempt, timeouts.count - 1)]
            attempt += 1
            dialTimer = loop.after(nanoseconds: t) { [weak self] in self?.dialTimedOut() }
            return
        }
        // Nowhere to go: the client sees a reset, as it would from a closed port.
        finish(reset: true)
    }

    private func dialFailed() {
        context.stats.dialFailed()
        context.balancer.dropAffinity(client: clientAddress)
    }

    private func dialTimedOut() {
        dialTimer = nil
        guard !connected, !finished, upstream >= 0 else { return }
        retry()
    }

    private func retry() {
        if let t = dialTimer { loop.cancel(timer: t) }
        dialTimer = nil
        dialFailed()
        loop.close(upstream)
        upstream = -1
        upstreamInterest = 0
        dial()
    }

    private func established() {
        connected = true
        if let t = dialTimer { loop.cancel(timer: t) }
        dialTimer = nil
        pump()
    }

    func ready(fd: Int32, events: UInt32) {
        guard !finished else { return }
        if !connected {
            if fd == upstream, events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 {
                if ch_socket_error(upstream) == 0 && events & Epoll.error == 0 {
                    established()
                } else {
                    retry()
                }
            } else if fd == client, events & (Epoll.error | Epoll.hangup) != 0 {
                finish(reset: true)   // the client gave up while we were dialling
            }
            return
        }
        let progressed = pump()
        guard !finished else { return }
        if events & Epoll.error != 0, ch_socket_error(fd) != 0 {
            finish(reset: true)
        } else if events & Epoll.hangup != 0 && !progressed {
            // The peer is gone both ways but bytes from it still wait for the other
            // side to take them: stop listening to this socket until they are written.
            loop.park(fd)
            if fd == client { clientInterest = 0 } else { upstreamInterest = 0 }
        }
    }

    /// Moves what can be moved in both directions and updates the epoll interest.
    /// Returns whether anything happened.
    @discardableResult
    private func pump() -> Bool {
        var progressed = false
        for d in 0..<2 {
            let r = d == 0 ? move(&up, from: client, to: upstream, toEndpoint: true, progressed: &progressed)
                           : move(&down, from: upstream, to: client, toEndpoint: false, progressed: &progressed)
            switch r {
            case .ok:
                break
            case .writeFailed:
                // The receiving side is gone for writing (it closed or reset): this direction
                // ends, the other still delivers what its peer sent (a response to an upload).
                if d == 0 { abandon(&up) } else { abandon(&down) }
                progressed = true
            case .readFailed:
                finish(reset: true)
                return true
            }
        }
        if up.readEOF && up.pending == 0 && down.readEOF && down.pending == 0 {
            finish(reset: false)
            return true
        }
        var ci: UInt32 = 0, ui: UInt32 = 0
        if !up.readEOF && up.pending == 0 { ci |= Epoll.input }
        if up.pending > 0 { ui |= Epoll.output }
        if !down.readEOF && down.pending == 0 { ui |= Epoll.input }
        if down.pending > 0 { ci |= Epoll.output }
        if ci != clientInterest {
            clientInterest = ci
            loop.modify(client, events: ci)
        }
        if ui != upstreamInterest {
            upstreamInterest = ui
            loop.modify(upstream, events: ui)
        }
        return progressed
    }

    /// Ends a direction whose writes fail: what it still held is dropped with its pipe.
    private func abandon(_ d: inout Direction) {
        if let p = d.pipe {
            close(p.0)
            close(p.1)
        }
        d.pipe = nil
        d.pending = 0
        d.readEOF = true
    }

    /// One direction: write what the pipe holds, then read more while the writer keeps up.
    private func move(_ d: inout Direction, from src: Int32, to dst: Int32, toEndpoint: Bool, progressed: inout Bool) -> Moved {
        if d.readEOF && d.pending == 0 { return .ok }
        // Bounded, so one busy connection cannot starve the loop's others.
        for _ in 0..<16 {
            if d.pending > 0, let p = d.pipe {
                let n = cus_splice(p.0, dst, d.pending)
                if n > 0 {
                    d.pending -= n
                    progressed = true
                    context.stats.carried(n, toEndpoint: toEndpoint)
                } else if n == -Int(EAGAIN) {
                    return .ok
                } else if n < 0 {
                    return .writeFailed
                }
                if d.pending > 0 { continue }
            }
            if d.readEOF { break }
            if d.pipe == nil {
                guard let p = try? loop.takePipe() else { return .readFailed }
                d.pipe = p
            }
            let n = cus_splice(src, d.pipe!.1, 1 << 20)
            if n > 0 {
                d.pending = n
                progressed = true
            } else if n == 0 {
                d.readEOF = true
                progressed = true
                _ = ch_shutdown_write(dst)
                break
            } else if n == -Int(EAGAIN) {
                break
            } else {
                return .readFailed
            }
        }
        if d.pending == 0, let p = d.pipe {
            loop.givePipe(p)
            d.pipe = nil
        }
        return .ok
    }

    /// Closes both sockets (with a reset on errors) and returns or closes the pipes.
    private func finish(reset: Bool) {
        guard !finished else { return }
        finished = true
        if let t = dialTimer { loop.cancel(timer: t) }
        for p in [up.pipe, down.pipe].compactMap({ $0 }) {
            // A pipe with bytes left in it cannot be reused.
            if cus_pending(p.0) == 0 { loop.givePipe(p) } else { close(p.0); close(p.1) }
        }
        up.pipe = nil
        down.pipe = nil
        loop.close(client, reset: reset)
        if upstream >= 0 { loop.close(upstream, reset: reset) }
        context.stats.closed()
    }

    func terminate() { finish(reset: true) }
}
