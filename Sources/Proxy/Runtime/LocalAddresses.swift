import Foundation
import KubeAPI

/// The machine's addresses (`getifaddrs`), for `--nodeport-addresses`.
public enum LocalAddresses {
    public static func all() -> [IPAddress] {
        var out: [IPAddress] = []
        var ifap: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&ifap) == 0, let first = ifap else { return [] }
        defer { freeifaddrs(ifap) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let cur = p {
            if let sa = cur.pointee.ifa_addr {
                var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                let fam = Int32(sa.pointee.sa_family)
                if fam == AF_INET || fam == AF_INET6 {
                    let len = socklen_t(fam == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
                    if getnameinfo(sa, len, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                        let s = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                        if let ip = IPAddress(s.split(separator: "%").first.map(String.init) ?? s) { out.append(ip) }
                    }
                }
            }
            p = cur.pointee.ifa_next
        }
        return out
    }
}
