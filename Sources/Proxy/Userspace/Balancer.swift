import Foundation

/// An IPv4 address and port, in host byte order.
public struct IPv4Endpoint: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: UInt32
    public var port: UInt16

    public init(address: UInt32, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// From `a.b.c.d` and a port; nil for anything else.
    public init?(_ ip: String, port: Int) {
        let parts = ip.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, (0...65535).contains(port) else { return nil }
        var a: UInt32 = 0
        for p in parts {
            guard let b = UInt8(p) else { return nil }
            a = a << 8 | UInt32(b)
        }
        address = a
        self.port = UInt16(port)
    }

    public var ip: String {
        "\(address >> 24).\(address >> 16 & 0xff).\(address >> 8 & 0xff).\(address & 0xff)"
    }

    public var description: String { "\(ip):\(port)" }

    public static func < (a: IPv4Endpoint, b: IPv4Endpoint) -> Bool {
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
    private var endpoints: [IPv4Endpoint] = []
    private var next = 0
    private var affinityTimeout: TimeInterval?
    private var affinity: [UInt32: (endpoint: IPv4Endpoint, lastUsed: TimeInterval)] = [:]
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
    public func update(endpoints new: [IPv4Endpoint], affinityTimeout timeout: TimeInterval?) -> Bool {
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

    public var current: [IPv4Endpoint] { lock.withLock { endpoints } }
    public var isEmpty: Bool { lock.withLock { endpoints.isEmpty } }

    /// Whether `ep` is still one of the endpoints.
    public func contains(_ ep: IPv4Endpoint) -> Bool { lock.withLock { endpoints.contains(ep) } }

    /// The endpoint for a new connection from `client`, skipping `exclude` (endpoints
    /// that already failed for this connection). Nil when none is left.
    public func pick(client: UInt32, excluding exclude: Set<IPv4Endpoint> = []) -> IPv4Endpoint? {
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
    public func dropAffinity(client: UInt32) {
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
