import CHost
import Foundation

/// An address of either family, as the data path holds it: IPv4 in the low 32 bits (host order),
/// or IPv6's 128 bits. Handed to the socket calls by value (`ch_ip`), so dialling allocates nothing.
public struct HostAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt128
    public var isIPv6: Bool

    public init(value: UInt128, isIPv6: Bool) {
        self.value = value
        self.isIPv6 = isIPv6
    }

    /// 0.0.0.0 or ::, where a listener takes every address of its family.
    public static let anyIPv4 = HostAddress(value: 0, isIPv6: false)
    public static let anyIPv6 = HostAddress(value: 0, isIPv6: true)

    /// From an address's text (`10.0.0.1`, `fd00::1`); nil for anything else.
    public init?(_ text: String) {
        var v6 = in6_addr(), v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(value: UInt128(UInt32(bigEndian: v4.s_addr)), isIPv6: false)
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            self.init(value: bytes.reduce(UInt128(0)) { $0 << 8 | UInt128($1) }, isIPv6: true)
        } else {
            return nil
        }
    }

    init(_ c: ch_ip) {
        self.init(value: c.v6 == 1 ? UInt128(c.hi) << 64 | UInt128(c.lo) : UInt128(UInt32(truncatingIfNeeded: c.lo)), isIPv6: c.v6 == 1)
    }

    /// For the socket calls.
    var c: ch_ip { ch_ip(hi: UInt64(truncatingIfNeeded: value >> 64), lo: UInt64(truncatingIfNeeded: value), v6: isIPv6 ? 1 : 0) }

    public var description: String {
        guard isIPv6 else {
            let a = UInt32(truncatingIfNeeded: value)
            return "\(a >> 24).\(a >> 16 & 0xff).\(a >> 8 & 0xff).\(a & 0xff)"
        }
        var a = in6_addr()
        withUnsafeMutableBytes(of: &a) { b in for i in 0..<16 { b[i] = UInt8(truncatingIfNeeded: value >> UInt128(120 - 8 * i)) } }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: HostAddress, b: HostAddress) -> Bool { (a.isIPv6 ? 1 : 0, a.value) < (b.isIPv6 ? 1 : 0, b.value) }
}

/// An endpoint's address and port: where a listener's connections are dialled.
public struct SocketEndpoint: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: HostAddress
    public var port: UInt16

    public init(address: HostAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// From an address's text and a port; nil for anything else.
    public init?(_ ip: String, port: Int) {
        guard (0...65535).contains(port), let a = HostAddress(ip) else { return nil }
        self.init(address: a, port: UInt16(port))
    }

    public var ip: String { address.description }

    /// `10.0.0.1:80`, `[fd00::1]:80`.
    public var description: String { address.isIPv6 ? "[\(ip)]:\(port)" : "\(ip):\(port)" }

    public static func < (a: SocketEndpoint, b: SocketEndpoint) -> Bool {
        (a.address, a.port) < (b.address, b.port)
    }
}

/// Chooses the endpoint for each new connection of one listener: round-robin over
/// the endpoints the proxy core selected, with ClientIP affinity. Shared between
/// the sync (which replaces the endpoint list) and the data path (which reads it
/// on every new connection), so it is guarded by a lock.
///
/// Upstream's userspace `LoadBalancerRR` keeps the same state: an index per
/// service port and an affinity map from client IP to endpoint with a last-used time.
public final class Balancer: @unchecked Sendable {
    private let lock = NSLock()
    private var endpoints: [SocketEndpoint] = []
    private var next = 0
    private var affinityTimeout: TimeInterval?
    private var affinity: [HostAddress: (endpoint: SocketEndpoint, lastUsed: TimeInterval)] = [:]
    private var _version = 0
    /// Increases whenever the endpoint list changes; UDP flows compare it to notice removals.
    public var version: Int { lock.withLock { _version } }
    private let clock: @Sendable () -> TimeInterval

    public init(clock: @escaping @Sendable () -> TimeInterval = { ProcessInfo.processInfo.systemUptime }) {
        self.clock = clock
    }

    /// Replaces the endpoints (kept in the given order) and the affinity setting.
    /// Affinity entries for endpoints that are gone are dropped; with affinity turned
    /// off, all are. Returns whether anything changed.
    @discardableResult
    public func update(endpoints new: [SocketEndpoint], affinityTimeout timeout: TimeInterval?) -> Bool {
        lock.withLock {
            let changed = new != endpoints || timeout != affinityTimeout
            guard changed else { return false }
            if new != endpoints {
                endpoints = new
                _version += 1
                if next >= new.count { next = 0 }
            }
            affinityTimeout = timeout
            if timeout == nil {
                affinity.removeAll()
            } else {
                let live = Set(new)
                affinity = affinity.filter { live.contains($0.value.endpoint) }
            }
            return true
        }
    }

    public var current: [SocketEndpoint] { lock.withLock { endpoints } }
    public var isEmpty: Bool { lock.withLock { endpoints.isEmpty } }

    /// Whether `ep` is still one of the endpoints.
    public func contains(_ ep: SocketEndpoint) -> Bool { lock.withLock { endpoints.contains(ep) } }

    /// The endpoint for a new connection from `client`, skipping `exclude` (endpoints
    /// that already failed for this connection). Nil when none is left.
    public func pick(client: HostAddress, excluding exclude: Set<SocketEndpoint> = []) -> SocketEndpoint? {
        lock.withLock {
            guard !endpoints.isEmpty else { return nil }
            let now = clock()
            if let timeout = affinityTimeout, let a = affinity[client] {
                if now - a.lastUsed <= timeout, !exclude.contains(a.endpoint), endpoints.contains(a.endpoint) {
                    affinity[client] = (a.endpoint, now)
                    return a.endpoint
                }
                affinity[client] = nil
            }
            for _ in 0..<endpoints.count {
                let ep = endpoints[next]
                next = (next + 1) % endpoints.count
                if exclude.contains(ep) { continue }
                if affinityTimeout != nil { affinity[client] = (ep, now) }
                return ep
            }
            return nil
        }
    }

    /// Forgets the client's affinity (its endpoint failed to answer).
    public func dropAffinity(client: HostAddress) {
        lock.withLock { _ = affinity.removeValue(forKey: client) }
    }

    /// Drops affinity entries idle for longer than the timeout.
    public func expireAffinity() {
        lock.withLock {
            guard let timeout = affinityTimeout else { return }
            let now = clock()
            affinity = affinity.filter { now - $0.value.lastUsed <= timeout }
        }
    }

    public var affinityCount: Int { lock.withLock { affinity.count } }
}
