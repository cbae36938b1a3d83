#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// IP addresses and CIDRs as the API spells them, parsed strictly.
public enum IPFamily: String, Sendable, Hashable, Codable {
    case ipv4 = "IPv4"
    case ipv6 = "IPv6"
}

/// An IPv4 or IPv6 address kept in canonical text form.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: IPFamily
    /// 4 or 16 bytes, network order.
    public let bytes: [UInt8]

    /// Parses `text` with `inet_pton`, which rejects leading zeros and stray characters.
    public init?(_ text: some StringProtocol) {
        let s = String(text)
        if s.utf8.contains(UInt8(ascii: ":")) {   // not Foundation's contains(_:), which searches through NSString
            var a = in6_addr()
            guard inet_pton(AF_INET6, s, &a) == 1 else { return nil }
            family = .ipv6
            bytes = withUnsafeBytes(of: &a) { Array($0) }
        } else {
            var a = in_addr()
            guard !s.isEmpty, inet_pton(AF_INET, s, &a) == 1 else { return nil }
            family = .ipv4
            bytes = withUnsafeBytes(of: &a) { Array($0) }
        }
    }

    /// From 4 (IPv4) or 16 (IPv6) bytes in network order.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        family = bytes.count == 4 ? .ipv4 : .ipv6
        self.bytes = bytes
    }

    public init(ipv4 value: UInt32) {
        family = .ipv4
        bytes = [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }

    /// The IPv4 address as a host-order integer (nil for IPv6).
    public var ipv4Value: UInt32? {
        guard family == .ipv4 else { return nil }
        return bytes.reduce(0) { ($0 << 8) | UInt32($1) }
    }

    public var description: String {
        if family == .ipv4 {
            return "\(bytes[0]).\(bytes[1]).\(bytes[2]).\(bytes[3])"
        }
        var a = in6_addr()
        withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var isLoopback: Bool {
        family == .ipv4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.family != b.family { return a.family == .ipv4 }
        return a.bytes.lexicographicallyPrecedes(b.bytes)
    }
}

/// A network in CIDR notation (`10.96.0.0/12`).
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    /// Parses `a.b.c.d/n`. Host bits may be set (as Kubernetes accepts for
    /// `loadBalancerSourceRanges`); `network` gives the masked form.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let ip = IPAddress(parts[0]), let n = Int(parts[1]),
              parts[1].allSatisfy(\.isNumber),
              n >= 0, n <= (ip.family == .ipv4 ? 32 : 128) else { return nil }
        address = ip
        prefixLength = n
    }

    public init(address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    public var family: IPFamily { address.family }

    /// The CIDR with host bits cleared.
    public var network: CIDR {
        var b = address.bytes
        for i in 0..<b.count {
            let bitsHere = max(0, min(8, prefixLength - i * 8))
            b[i] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bitsHere))
        }
        let ip: IPAddress
        if address.family == .ipv4 {
            ip = IPAddress(ipv4: b.reduce(0) { ($0 << 8) | UInt32($1) })
        } else {
            ip = IPAddress(b.chunked6())!
        }
        return CIDR(address: ip, prefixLength: prefixLength)
    }

    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.family == address.family else { return false }
        for i in 0..<ip.bytes.count {
            let bitsHere = max(0, min(8, prefixLength - i * 8))
            if bitsHere == 0 { break }
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bitsHere))
            if ip.bytes[i] & mask != address.bytes[i] & mask { return false }
        }
        return true
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

extension Array where Element == UInt8 {
    /// IPv6 bytes to text that `IPAddress.init` parses.
    fileprivate func chunked6() -> String {
        stride(from: 0, to: 16, by: 2).map { String(UInt16(self[$0]) << 8 | UInt16(self[$0 + 1]), radix: 16) }
            .joined(separator: ":")
    }
}
