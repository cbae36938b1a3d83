import Foundation
import Netlink

/// One range of a range set: a subnet, the part of it to hand out, its gateway.
public struct IPRange: Sendable, Equatable {
    public var subnet: IPNet
    public var start: [UInt8]
    public var end: [UInt8]
    public var gateway: [UInt8]?

    /// With the reference plugin's defaults: start after the network address, end
    /// before the IPv4 broadcast address, gateway the first address.
    public init(subnet s: String, rangeStart: String?, rangeEnd: String?, gateway: String?) throws {
        guard let sub = IPNet(s)?.network else { throw CNIError(CNIError.invalidConfig, "invalid subnet \"\(s)\"") }
        subnet = sub
        let first = IPRange.add(sub.address, 1)
        var last = IPRange.broadcast(sub)
        if !sub.isIPv6 { last = IPRange.add(last, -1) }
        func parse(_ v: String?, _ what: String) throws -> [UInt8]? {
            guard let v else { return nil }
            guard let a = IPNet.parseIP(v), a.count == sub.address.count, IPRange.contains(sub, a) else {
                throw CNIError(CNIError.invalidConfig, "\(what) \(v) is not in subnet \(s)")
            }
            return a
        }
        start = try parse(rangeStart, "rangeStart") ?? first
        end = try parse(rangeEnd, "rangeEnd") ?? last
        self.gateway = try parse(gateway, "gateway") ?? first
        guard IPRange.compare(start, end) <= 0 else { throw CNIError(CNIError.invalidConfig, "rangeStart is after rangeEnd in \(s)") }
    }

    public func contains(_ a: [UInt8]) -> Bool {
        a.count == start.count && IPRange.compare(a, start) >= 0 && IPRange.compare(a, end) <= 0
    }

    static func compare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        for i in 0..<min(a.count, b.count) where a[i] != b[i] { return a[i] < b[i] ? -1 : 1 }
        return 0
    }

    static func add(_ a: [UInt8], _ n: Int) -> [UInt8] {
        var out = a
        var carry = n
        var i = out.count - 1
        while carry != 0 && i >= 0 {
            let v = Int(out[i]) + carry
            out[i] = UInt8(truncatingIfNeeded: v)
            carry = v >= 0 ? v >> 8 : -(((-v) + 255) >> 8)
            i -= 1
        }
        return out
    }

    static func broadcast(_ n: IPNet) -> [UInt8] {
        var b = n.address
        for i in 0..<b.count {
            let bits = max(0, min(8, n.prefixLength - i * 8))
            b[i] |= bits == 8 ? 0 : UInt8(truncatingIfNeeded: 0xff >> bits)
        }
        return b
    }

    static func contains(_ n: IPNet, _ a: [UInt8]) -> Bool {
        IPNet(address: a, prefixLength: n.prefixLength).network.address == n.address
    }
}

/// host-local's configuration (`ipam` of the network configuration).
public struct HostLocalConfig {
    public var name: String
    public var rangeSets: [[IPRange]]
    public var routes: [ResultRoute]
    public var dataDir: String

    public static let defaultDataDir = "/var/lib/cni/networks"

    public init(_ r: CNIRequest) throws {
        guard let ipam = r.config["ipam"] as? [String: Any] else { throw CNIError(CNIError.invalidConfig, "IPAM config missing 'ipam' key") }
        name = r.name
        guard !name.isEmpty else { throw CNIError(CNIError.invalidConfig, "the network configuration has no name") }
        dataDir = ipam["dataDir"] as? String ?? Self.defaultDataDir
        var sets: [[IPRange]] = []
        if let subnet = ipam["subnet"] as? String {
            sets.append([try IPRange(subnet: subnet, rangeStart: ipam["rangeStart"] as? String, rangeEnd: ipam["rangeEnd"] as? String,
                                     gateway: ipam["gateway"] as? String)])
        }
        for set in ipam["ranges"] as? [[[String: Any]]] ?? [] {
            var ranges: [IPRange] = []
            for o in set {
                guard let s = o["subnet"] as? String else { throw CNIError(CNIError.invalidConfig, "a range has no subnet") }
                ranges.append(try IPRange(subnet: s, rangeStart: o["rangeStart"] as? String, rangeEnd: o["rangeEnd"] as? String,
                                          gateway: o["gateway"] as? String))
            }
            if ranges.isEmpty { throw CNIError(CNIError.invalidConfig, "empty range set") }
            for (i, a) in ranges.enumerated() {
                if ranges.contains(where: { $0.subnet.isIPv6 != a.subnet.isIPv6 }) {
                    throw CNIError(CNIError.invalidConfig, "a range set mixes IPv4 and IPv6")
                }
                for b in ranges[(i + 1)...] where a.contains(b.start) || a.contains(b.end) || b.contains(a.start) {
                    throw CNIError(CNIError.invalidConfig, "ranges \(a.subnet) and \(b.subnet) overlap")
                }
            }
            sets.append(ranges)
        }
        guard !sets.isEmpty else { throw CNIError(CNIError.invalidConfig, "no IP ranges specified") }
        rangeSets = sets
        routes = try (ipam["routes"] as? [[String: Any]] ?? []).map { o in
            guard let d = o["dst"] as? String, IPNet(d) != nil else { throw CNIError(CNIError.invalidConfig, "route without a valid dst") }
            return ResultRoute(dst: d, gw: o["gw"] as? String)
        }
    }
}

/// host-local's on-disk store, laid out as the reference plugin lays it out:
/// `DATADIR/NAME/IP` holds `CONTAINERID\r\nIFNAME`, `last_reserved_ip.N` the last
/// address handed out from range set N, and `lock` is held (flock) around every change.
public final class HostLocalStore {
    public let dir: String
    private var lockFD: Int32 = -1

    public init(dataDir: String, network: String) throws {
        dir = Files.join(dataDir, network)
        try Files.makeDirectories(dir)
    }

    /// Runs `body` holding the store's lock, so concurrent invocations never hand out one address twice.
    public func locked<T>(_ body: () throws -> T) throws -> T {
        let fd = open(Files.join(dir, "lock"), O_RDWR | O_CREAT | O_CLOEXEC, 0o750)
        guard fd >= 0 else { throw CNIError(CNIError.ioFailure, "cannot open the lock file in \(dir)") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw CNIError(CNIError.ioFailure, "cannot lock \(dir)") }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    func path(_ ip: String) -> String { Files.join(dir, ip) }

    /// Reserves `ip` for the attachment; false if it is taken.
    func reserve(_ ip: String, id: String, ifname: String, rangeSet: Int) throws -> Bool {
        let fd = open(path(ip), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            if errno == EEXIST { return false }
            throw CNIError(CNIError.ioFailure, "cannot reserve \(ip) in \(dir)")
        }
        let content = Array("\(id)\r\n\(ifname)".utf8)
        let ok = write(fd, content, content.count) == content.count
        close(fd)
        guard ok else {
            unlink(path(ip))
            throw CNIError(CNIError.ioFailure, "cannot write the reservation of \(ip)")
        }
        // As the reference store does it: rewritten in place (every access holds the lock).
        let last = Files.join(dir, "last_reserved_ip.\(rangeSet)")
        // Overwritten and then cut to length: truncating to zero first makes ext4 start writeback on close.
        let lfd = open(last, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard lfd >= 0 else { throw CNIError(CNIError.ioFailure, "cannot write \(last)") }
        let text = Array("\(ip)".utf8)
        let wrote = pwrite(lfd, text, text.count, 0) == text.count && ftruncate(lfd, off_t(text.count)) == 0
        close(lfd)
        guard wrote else { throw CNIError(CNIError.ioFailure, "cannot write \(last)") }
        return true
    }

    func lastReserved(_ rangeSet: Int) -> [UInt8]? {
        Files.read(Files.join(dir, "last_reserved_ip.\(rangeSet)"))
            .flatMap { IPNet.parseIP(String($0.filter { !$0.isWhitespace })) }
    }

    /// Every reservation: IP file name and its owner (`id`, `ifname`).
    func reservations() -> [(ip: String, id: String, ifname: String)] {
        Files.list(dir).compactMap { n in
            // Only addresses: skip `lock`, `last_reserved_ip.N` and anything else without parsing.
            guard let c = n.utf8.first, (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || n.contains(":"),
                  IPNet.parseIP(n) != nil else { return nil }
            let fd = open(path(n), O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            let bytes = Files.readAll(fd)
            close(fd)
            // "ID\r\nIFNAME" (older stores: just the ID, maybe with a trailing newline).
            let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
            if let cr = bytes.firstIndex(of: 0x0d), cr + 1 < bytes.count, bytes[cr + 1] == 0x0a {
                return (n, String(decoding: bytes[..<cr], as: UTF8.self), String(decoding: bytes[(cr + 2)...], as: UTF8.self))
            }
            var end = bytes.count
            while end > 0 && isSpace(bytes[end - 1]) { end -= 1 }
            return (n, String(decoding: bytes[..<end], as: UTF8.self), "")
        }
    }

    func release(_ ip: String) { unlink(path(ip)) }
}

/// The host-local IPAM plugin.
public struct HostLocalPlugin: CNIPlugin {
    public init() {}

    /// The addresses the runtime asks for: `CNI_ARGS` `IP=`, `args.cni.ips`, `runtimeConfig.ips`.
    static func requestedIPs(_ r: CNIRequest) throws -> [[UInt8]] {
        var out: [String] = []
        if let ip = r.args["IP"] { out += ip.split(separator: ",").map(String.init) }
        if let a = (r.config["args"] as? [String: Any])?["cni"] as? [String: Any], let ips = a["ips"] as? [String] { out += ips }
        if let rc = r.config["runtimeConfig"] as? [String: Any], let ips = rc["ips"] as? [String] { out += ips }
        return try out.map { s in
            let bare = String(s.split(separator: "/").first ?? "")
            guard let a = IPNet.parseIP(bare) else { throw CNIError(CNIError.invalidConfig, "requested IP \"\(s)\" is not an IP address") }
            return a
        }
    }

    public func add(_ r: CNIRequest) throws -> CNIResult {
        let cfg = try HostLocalConfig(r)
        let store = try HostLocalStore(dataDir: cfg.dataDir, network: cfg.name)
        var requested = try Self.requestedIPs(r)
        return try store.locked {
            var result = CNIResult()
            var reserved: [String] = []
            do {
                for (setIndex, set) in cfg.rangeSets.enumerated() {
                    // A requested address in this set is taken exactly, or not at all.
                    if let i = requested.firstIndex(where: { ip in set.contains { $0.contains(ip) } }) {
                        let ip = requested.remove(at: i)
                        let range = set.first { $0.contains(ip) }!
                        let s = IPNet.format(ip)
                        if ip == range.gateway { throw CNIError(CNIError.other, "requested ip \(s) is subnet's gateway") }
                        guard try store.reserve(s, id: r.containerID, ifname: r.ifname, rangeSet: setIndex) else {
                            throw CNIError(CNIError.other, "requested IP address \(s) is not available in range set \(setIndex)")
                        }
                        reserved.append(s)
                        result.ips.append(ResultIP(address: "\(s)/\(range.subnet.prefixLength)", gateway: range.gateway.map(IPNet.format)))
                        continue
                    }
                    guard let (ip, range) = try next(in: set, setIndex: setIndex, store: store, r: r) else {
                        throw CNIError(CNIError.other, "no IP addresses available in range set: \(set.map { "\(IPNet.format($0.start))-\(IPNet.format($0.end))" }.joined(separator: ","))")
                    }
                    reserved.append(ip)
                    result.ips.append(ResultIP(address: "\(ip)/\(range.subnet.prefixLength)", gateway: range.gateway.map(IPNet.format)))
                }
                if let extra = requested.first {
                    throw CNIError(CNIError.invalidConfig, "requested IP \(IPNet.format(extra)) is in no configured range")
                }
            } catch {
                for ip in reserved { store.release(ip) }
                throw error
            }
            result.routes = cfg.routes
            return result
        }
    }

    /// Round-robin: the first free address after the last one handed out in this set.
    private func next(in set: [IPRange], setIndex: Int, store: HostLocalStore, r: CNIRequest) throws -> (String, IPRange)? {
        // As the reference: an attachment that already has an address in this set gets an error,
        // not a second address (the spec forbids duplicate allocation).
        for res in store.reservations() where res.id == r.containerID && res.ifname == r.ifname {
            if let a = IPNet.parseIP(res.ip), set.contains(where: { $0.contains(a) }) {
                throw CNIError(CNIError.other, "\(res.ip) has been allocated to \(r.containerID), duplicate allocation is not allowed")
            }
        }
        var ri = 0
        var ip = set[0].start
        if let last = store.lastReserved(setIndex), let i = set.firstIndex(where: { $0.contains(last) }) {
            ri = i
            ip = IPRange.add(last, 1)
            if !set[ri].contains(ip) {
                ri = (ri + 1) % set.count
                ip = set[ri].start
            }
        }
        let (firstRange, firstIP) = (ri, ip)
        repeat {
            if ip != set[ri].gateway ?? [] {
                let s = IPNet.format(ip)
                if try store.reserve(s, id: r.containerID, ifname: r.ifname, rangeSet: setIndex) { return (s, set[ri]) }
            }
            ip = IPRange.add(ip, 1)
            if !set[ri].contains(ip) {
                ri = (ri + 1) % set.count
                ip = set[ri].start
            }
        } while !(ri == firstRange && ip == firstIP)
        return nil
    }

    public func del(_ r: CNIRequest) throws {
        // DEL must succeed whatever is missing: no config dir, nothing reserved.
        guard let cfg = try? HostLocalConfig(r) else { return }
        guard let store = try? HostLocalStore(dataDir: cfg.dataDir, network: cfg.name) else { return }
        try store.locked {
            for res in store.reservations() where res.id == r.containerID && (res.ifname == r.ifname || res.ifname.isEmpty) {
                store.release(res.ip)
            }
        }
    }

    public func check(_ r: CNIRequest) throws {
        let cfg = try HostLocalConfig(r)
        let store = try HostLocalStore(dataDir: cfg.dataDir, network: cfg.name)
        let mine = try store.locked { store.reservations().filter { $0.id == r.containerID && $0.ifname == r.ifname } }
        if mine.isEmpty {
            throw CNIError(CNIError.other, "host-local: Failed to find address added by container \(r.containerID)")
        }
    }

    public func gc(_ r: CNIRequest) throws {
        let cfg = try HostLocalConfig(r)
        let store = try HostLocalStore(dataDir: cfg.dataDir, network: cfg.name)
        // Without the list every reservation would look stale: refuse rather than release them all.
        guard let attachments = r.config["cni.dev/valid-attachments"] as? [[String: Any]] else {
            throw CNIError(CNIError.invalidConfig, "GC needs cni.dev/valid-attachments")
        }
        let valid = Set(attachments.compactMap { a -> String? in
            guard let id = a["containerID"] as? String, let i = a["ifname"] as? String else { return nil }
            return id + "\n" + i
        })
        try store.locked {
            for res in store.reservations() where !valid.contains(res.id + "\n" + res.ifname) { store.release(res.ip) }
        }
    }

    public func status(_ r: CNIRequest) throws {
        let cfg = try HostLocalConfig(r)
        _ = try HostLocalStore(dataDir: cfg.dataDir, network: cfg.name)
    }
}
