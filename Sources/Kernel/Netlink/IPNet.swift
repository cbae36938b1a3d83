import Foundation

/// An IPv4 or IPv6 address with a prefix length (`10.1.0.5/16`, `fd00::5/64`).
public struct IPNet: Hashable, Sendable, CustomStringConvertible {
    /// 4 or 16 bytes, network order.
    public var address: [UInt8]
    public var prefixLength: Int

    public init(address: [UInt8], prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `ip/len`, or a bare IP (a host prefix).
    public init?(_ s: String) {
        let parts = s.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let a = IPNet.parseIP(String(first)) else { return nil }
        let maxLen = a.count * 8
        var len = maxLen
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxLen).contains(l) else { return nil }
            len = l
        }
        address = a
        prefixLength = len
    }

    public static func parseIP(_ s: String) -> [UInt8]? {
        if s.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, s, &a) == 1 else { return nil }
            return withUnsafeBytes(of: a) { Array($0) }
        }
        var a = in_addr()
        guard inet_pton(AF_INET, s, &a) == 1 else { return nil }
        return withUnsafeBytes(of: a) { Array($0) }
    }

    public static func format(_ a: [UInt8]) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let fam = a.count == 16 ? AF_INET6 : AF_INET
        _ = a.withUnsafeBytes { inet_ntop(fam, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var isIPv6: Bool { address.count == 16 }
    public var family: UInt8 { UInt8(isIPv6 ? AF_INET6 : AF_INET) }
    public var ip: String { IPNet.format(address) }
    public var description: String { "\(ip)/\(prefixLength)" }

    /// Two lower-case hex digits.
    public static func hex2(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 0xf)]])
    }

    /// The address after `a` (carrying across bytes), as the reference plugins' gateway default.
    public static func next(_ a: [UInt8]) -> [UInt8] {
        var b = a
        for i in b.indices.reversed() {
            b[i] &+= 1
            if b[i] != 0 { break }
        }
        return b
    }

    /// Whether `ip` (same family) lies in this network.
    public func contains(_ ip: [UInt8]) -> Bool {
        guard ip.count == address.count else { return false }
        return IPNet(address: ip, prefixLength: prefixLength).network.address == network.address
    }

    /// The network address (host bits cleared).
    public var network: IPNet {
        var a = address
        for i in 0..<a.count {
            let bits = max(0, min(8, prefixLength - i * 8))
            a[i] &= bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
        return IPNet(address: a, prefixLength: prefixLength)
    }
}
