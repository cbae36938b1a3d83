import CMnl
import Foundation

/// A route (main table unless `table` says otherwise).
public struct Route: Sendable, Equatable {
    /// Nil for a default route.
    public var destination: IPNet?
    public var gateway: [UInt8]?
    public var outputIndex: Int32?
    /// `RT_SCOPE_UNIVERSE` (0), `RT_SCOPE_LINK` (253), `RT_SCOPE_HOST` (254).
    public var scope: UInt8
    public var table: UInt32
    /// `RTPROT_BOOT` (3) for routes we add, as `ip route add` does.
    public var proto: UInt8
    public var priority: UInt32?
    /// `RTAX_*` metrics (`RTAX_MTU` = 2, `RTAX_ADVMSS` = 8, …).
    public var metrics: [Int: UInt32]
    public var ipv6: Bool

    public init(destination: IPNet?, gateway: String? = nil, outputIndex: Int32? = nil, scope: UInt8 = 0,
                table: UInt32 = 254, proto: UInt8 = 3, priority: UInt32? = nil, metrics: [Int: UInt32] = [:], ipv6: Bool? = nil) {
        self.destination = destination
        self.gateway = gateway.flatMap(IPNet.parseIP)
        self.outputIndex = outputIndex
        self.scope = scope
        self.table = table
        self.proto = proto
        self.priority = priority
        self.metrics = metrics
        self.ipv6 = ipv6 ?? (destination?.isIPv6 ?? (self.gateway?.count == 16))
    }

    public static let scopeLink: UInt8 = 253
    public static let scopeHost: UInt8 = 254
}

extension RouteHandle {

    public func addRoute(_ r: Route) throws {
        _ = try send(Self.routeMessage(Int32(RTM_NEWROUTE), r, flags: Int32(NLM_F_CREATE | NLM_F_EXCL)),
                     "add route \(r.destination?.description ?? "default")\(r.gateway.map { " via \(IPNet.format($0))" } ?? "")")
    }

    public func deleteRoute(_ r: Route) throws {
        _ = try send(Self.routeMessage(Int32(RTM_DELROUTE), r, flags: 0), "delete route \(r.destination?.description ?? "default")")
    }

    /// Routes of the main table.
    public func routes(ipv6: Bool = false) throws -> [Route] {
        var h = [UInt8](repeating: 0, count: 12)
        h[0] = UInt8(ipv6 ? AF_INET6 : AF_INET)
        let m = Message(type: UInt16(RTM_GETROUTE), flags: Int32(NLM_F_DUMP), header: h)
        return try send(m, "list routes").compactMap { r in
            guard r.type == UInt16(RTM_NEWROUTE), r.payload.count >= 12 else { return nil }
            let p = r.payload
            let a = Attributes(p[12...])
            let table = a.u32(Int(RTA_TABLE.rawValue)) ?? UInt32(p[4])
            guard table == 254 else { return nil }
            var route = Route(destination: a[Int(RTA_DST.rawValue)].map { IPNet(address: $0, prefixLength: Int(p[1])) },
                              outputIndex: a.u32(Int(RTA_OIF.rawValue)).map { Int32(bitPattern: $0) }, scope: p[6], table: table,
                              proto: p[5], priority: a.u32(Int(RTA_PRIORITY.rawValue)), ipv6: p[0] == UInt8(AF_INET6))
            route.gateway = a[Int(RTA_GATEWAY.rawValue)]
            if let mx = a.nested(Int(RTA_METRICS.rawValue)) {
                for (t, v) in mx.all where v.count == 4 { route.metrics[Int(t)] = v.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
            }
            return route
        }
    }
}
