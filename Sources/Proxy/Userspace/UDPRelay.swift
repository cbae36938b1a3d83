import CHost
import Foundation

/// A UDP listener for one service port. Each client address gets a flow: a
/// socket connected to the endpoint chosen for it, kept while datagrams pass and
/// closed after `idleTimeout` without any. Replies go back from the listener
/// socket with the source address the client's datagram was sent to (IP_PKTINFO, IPV6_PKTINFO),
/// so the portal rule's NAT entry matches them.
/// - Important: loop-confined.
final class UDPListener: LoopHandler, Terminable, @unchecked Sendable {
    struct ClientKey: Hashable {
        var address: HostAddress
        var port: UInt16
    }

    let loop: EventLoop
    let fd: Int32
    let port: UInt16
    let context: ListenerContext
    let idleTimeout: UInt64
    var flows: [ClientKey: UDPFlow] = [:]
    private var sweepTimer: Int?
    private(set) var closed = false
    /// One receive buffer for the listener and its flows (they share its thread).
    var buffer = [UInt8](repeating: 0, count: 65_536)

    init(loop: EventLoop, fd: Int32, port: UInt16, context: ListenerContext, idleTimeout: Duration) {
        self.loop = loop
        self.fd = fd
        self.port = port
        self.context = context
        let c = idleTimeout.components
        self.idleTimeout = max(1_000_000, UInt64(c.seconds) * 1_000_000_000 + UInt64(c.attoseconds / 1_000_000_000))
    }

    func ready(fd: Int32, events: UInt32) {
        for _ in 0..<64 {
            var addr = ch_ip(), port: UInt16 = 0, local = ch_ip()
            let n = buffer.withUnsafeMutableBytes { ch_ip_recv_from(fd, $0.baseAddress, $0.count, &addr, &port, &local) }
            if n < 0 { return }
            let key = ClientKey(address: HostAddress(addr), port: port)
            var flow = flows[key]
            // A flow whose endpoint was removed moves to a live one.
            let version = context.balancer.version
            if let f = flow, f.version != version {
                if context.balancer.contains(f.endpoint) {
                    f.version = version
                } else {
                    f.close()
                    flow = nil
                }
            }
            if flow == nil {
                flow = open(key, local: local)
            }
            guard let f = flow else { continue }
            f.lastActive = EventLoop.now()
            let sent = buffer.withUnsafeBytes { ch_send(f.fd, $0.baseAddress, n) }
            if sent >= 0 {
                context.stats.carried(sent, toEndpoint: true)
            } else if sent == -Int(ECONNREFUSED) {
                // The endpoint answered an earlier datagram with port unreachable.
                context.stats.dialFailed()
                context.balancer.dropAffinity(client: key.address)
                f.close()
            }
        }
    }

    private func open(_ key: ClientKey, local: ch_ip) -> UDPFlow? {
        var tried: Set<SocketEndpoint> = []
        while let ep = context.balancer.pick(client: key.address, excluding: tried) {
            tried.insert(ep)
            let s = ch_ip_udp_connect(ep.address.c, ep.port)
            if s < 0 {
                context.stats.dialFailed()
                continue
            }
            let f = UDPFlow(listener: self, fd: s, client: key, local: local, endpoint: ep, version: context.balancer.version)
            flows[key] = f
            loop.register(s, events: Epoll.input, f)
            context.stats.opened()
            scheduleSweep()
            return f
        }
        return nil
    }

    /// Sends an endpoint's reply to the client.
    func reply(_ data: UnsafeRawBufferPointer, to f: UDPFlow) {
        let n = ch_ip_send_to(fd, data.baseAddress, data.count, f.client.address.c, f.client.port, f.local)
        if n >= 0 { context.stats.carried(n, toEndpoint: false) }
    }

    private func scheduleSweep() {
        guard sweepTimer == nil, !closed else { return }
        sweepTimer = loop.after(nanoseconds: max(idleTimeout / 2, 10_000_000)) { [weak self] in self?.sweep() }
    }

    private func sweep() {
        sweepTimer = nil
        let now = EventLoop.now()
        for f in flows.values where now - f.lastActive >= idleTimeout { f.close() }
        if !flows.isEmpty { scheduleSweep() }
    }

    func forget(_ f: UDPFlow) {
        if flows[f.client] === f { flows[f.client] = nil }
    }

    func terminate() {
        guard !closed else { return }
        closed = true
        if let t = sweepTimer { loop.cancel(timer: t) }
        for f in Array(flows.values) { f.close() }
        loop.close(fd)
    }
}

/// One client's flow through a UDP listener.
/// - Important: loop-confined.
final class UDPFlow: LoopHandler, @unchecked Sendable {
    unowned let listener: UDPListener
    let fd: Int32
    let client: UDPListener.ClientKey
    /// The address the client sent to (v6 -1: not known).
    let local: ch_ip
    let endpoint: SocketEndpoint
    var version: Int
    var lastActive: UInt64 = EventLoop.now()
    private var closed = false

    init(listener: UDPListener, fd: Int32, client: UDPListener.ClientKey, local: ch_ip, endpoint: SocketEndpoint, version: Int) {
        self.listener = listener
        self.fd = fd
        self.client = client
        self.local = local
        self.endpoint = endpoint
        self.version = version
    }

    func ready(fd: Int32, events: UInt32) {
        for _ in 0..<64 {
            let n = listener.buffer.withUnsafeMutableBytes { ch_recv(fd, $0.baseAddress, $0.count) }
            if n >= 0 {
                lastActive = EventLoop.now()
                let l = listener
                l.buffer.withUnsafeBytes { l.reply(UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: self) }
            } else if n == -Int(EAGAIN) {
                return
            } else {
                // ECONNREFUSED: nothing listens at the endpoint. The next datagram picks again.
                listener.context.stats.dialFailed()
                listener.context.balancer.dropAffinity(client: client.address)
                close()
                return
            }
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        listener.loop.close(fd)
        listener.forget(self)
        listener.context.stats.closed()
    }
}
