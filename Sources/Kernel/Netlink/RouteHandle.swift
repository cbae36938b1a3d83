import CMnl
import Foundation

/// rtnetlink inside one namespace: links, addresses, routes. Each call is one
/// request; errors carry the errno name and what was asked.
public final class RouteHandle: @unchecked Sendable {
    public let namespace: Namespace
    let sock: NetlinkSocket
    let lock = NSLock()

    public init(in ns: Namespace = .current) throws {
        namespace = ns
        sock = try NetlinkSocket(NETLINK_ROUTE, in: ns)
    }

    func send(_ m: Message, _ what: @autoclosure () -> String) throws -> [(type: UInt16, payload: [UInt8])] {
        try lock.withLock { try sock.request(m, what()) }
    }
}
