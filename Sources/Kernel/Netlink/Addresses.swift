import CMnl
import Foundation

/// An address on a link.
public struct Address: Sendable, Equatable {
    public var index: Int32
    public var address: IPNet
    public var scope: UInt8
    /// `IFA_F_*` (IFA_FLAGS when the kernel sends it, else the header's 8 bits).
    public var flags: UInt32 = 0

    /// Still in duplicate address detection: not usable yet.
    public var isTentative: Bool { flags & UInt32(IFA_F_TENTATIVE) != 0 }
    /// Duplicate address detection found another holder.
    public var dadFailed: Bool { flags & UInt32(IFA_F_DADFAILED) != 0 }
}

extension RouteHandle {

    public func addAddress(_ name: String, _ a: IPNet, noDAD: Bool = false) throws {
        try addAddress(try mustLink(name), a, noDAD: noDAD)
    }

    public func addAddress(_ l: Link, _ a: IPNet, noDAD: Bool = false) throws {
        _ = try send(Self.addressMessage(Int32(RTM_NEWADDR), index: l.index, a, flags: Int32(NLM_F_CREATE | NLM_F_EXCL), noDAD: noDAD),
                     "add address \(a) to \(l.name)")
    }

    public func deleteAddress(_ name: String, _ a: IPNet) throws {
        let l = try mustLink(name)
        _ = try send(Self.addressMessage(Int32(RTM_DELADDR), index: l.index, a, flags: 0), "delete address \(a) from \(name)")
    }

    public func addresses(of name: String? = nil) throws -> [Address] {
        try addresses(index: try name.map { try mustLink($0).index })
    }

    public func addresses(of l: Link) throws -> [Address] { try addresses(index: l.index) }

    func addresses(index: Int32?) throws -> [Address] {
        let m = Message(type: UInt16(RTM_GETADDR), flags: Int32(NLM_F_DUMP), header: [UInt8](repeating: 0, count: 8))
        return try send(m, "list addresses").compactMap { r in
            guard r.type == UInt16(RTM_NEWADDR), r.payload.count >= 8 else { return nil }
            let idx = r.payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
            if let index, idx != index { return nil }
            let attrs = Attributes(r.payload[8...])
            guard let bytes = attrs[Int(IFA_LOCAL)] ?? attrs[Int(IFA_ADDRESS)] else { return nil }
            var flags = UInt32(r.payload[2])
            if let f = attrs[Int(IFA_FLAGS)], f.count >= 4 { flags = f.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
            return Address(index: idx, address: IPNet(address: bytes, prefixLength: Int(r.payload[1])), scope: r.payload[3], flags: flags)
        }
    }
}
