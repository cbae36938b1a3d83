import Netlink
import ProxySeam

/// The plan in the two formats users compare with a real node: `ipvsadm -Ln` (a listing, sorted
/// as ipvsadm sorts by default: services by protocol, address, port; real servers by address,
/// port) and `ipvsadm-save -n` (rules `ipvsadm-restore` reads).
public enum IPVSRenderer {
    static func protoName(_ p: UInt8) -> String {
        switch p {
        case IPVSService.tcp: "TCP"
        case IPVSService.udp: "UDP"
        case IPVSService.sctp: "SCTP"
        default: "FWM"
        }
    }

    static func protoFlag(_ p: UInt8) -> String {
        switch p {
        case IPVSService.tcp: "-t"
        case IPVSService.udp: "-u"
        default: "--sctp-service"
        }
    }

    static func forwardName(_ f: IPVSDestination.Forward) -> String {
        switch f {
        case .masquerade: "Masq"
        case .local: "Local"
        case .tunnel: "Tunnel"
        case .directRoute: "Route"
        }
    }

    static func forwardFlag(_ f: IPVSDestination.Forward) -> String {
        switch f {
        case .masquerade: "-m"
        case .local, .directRoute: "-g"
        case .tunnel: "-i"
        }
    }

    static func endpoint(_ a: [UInt8], _ port: UInt16) -> String {
        a.count == 16 ? "[\(IPNet.format(a))]:\(port)" : "\(IPNet.format(a)):\(port)"
    }

    /// ipvsadm's order (its default `--sort`): services by protocol, address, port; real servers by
    /// address, port. ipvsadm compares IPv4 addresses as `(int)(ntohl(a) - ntohl(b))`, which wraps
    /// (192.168.0.1 sorts before 10.0.0.1), and sorts with glibc's qsort, a merge sort; both are
    /// reproduced here so the listing is line for line what ipvsadm prints.
    public static func sorted(_ servers: [(service: IPVSService, reals: [IPVSDestination])]) -> [(service: IPVSService, reals: [IPVSDestination])] {
        let services = mergeSort(servers) { a, b in
            if a.service.proto != b.service.proto { return Int(a.service.proto) - Int(b.service.proto) }
            let d = addressDifference(a.service.address, b.service.address)
            if d != 0 { return d }
            return Int(a.service.port) - Int(b.service.port)
        }
        return services.map { s in
            (s.service, mergeSort(s.reals) { a, b in
                let d = addressDifference(a.address, b.address)
                return d != 0 ? d : Int(a.port) - Int(b.port)
            })
        }
    }

    /// `(int)(ntohl(a) - ntohl(b))` for IPv4; IPv6 addresses compare as memcmp does.
    static func addressDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
        guard a.count == 4, b.count == 4 else {
            for (x, y) in zip(a, b) where x != y { return Int(x) - Int(y) }
            return a.count - b.count
        }
        let ua = a.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }, ub = b.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return Int(Int32(bitPattern: ua &- ub))
    }

    /// glibc's msort: top-down, the left run wins ties (`cmp <= 0`).
    static func mergeSort<T>(_ items: [T], _ cmp: (T, T) -> Int) -> [T] {
        guard items.count > 1 else { return items }
        let n1 = items.count / 2
        let left = mergeSort(Array(items[..<n1]), cmp), right = mergeSort(Array(items[n1...]), cmp)
        var out: [T] = []
        out.reserveCapacity(items.count)
        var i = 0, j = 0
        while i < left.count && j < right.count {
            if cmp(left[i], right[j]) <= 0 { out.append(left[i]); i += 1 } else { out.append(right[j]); j += 1 }
        }
        out += left[i...]
        out += right[j...]
        return out
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

    /// `ipvsadm -Ln` for these virtual servers (counters as the kernel has them, zero when rendered).
    public static func listing(_ servers: [(service: IPVSService, reals: [IPVSDestination])]) -> String {
        var out = "IP Virtual Server version 1.2.1 (size=4096)\n"
        out += "Prot LocalAddress:Port Scheduler Flags\n"
        out += "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        for (s, reals) in sorted(servers) {
            out += "\(protoName(s.proto))  \(endpoint(s.address, s.port)) \(s.scheduler)"
            if s.flags & IPVSService.persistent != 0 {
                out += " persistent \(s.timeout)"
                if !s.isIPv6 && s.netmask != 0xffff_ffff { out += " mask \(IPNet.format(withUnsafeBytes(of: s.netmask.bigEndian) { Array($0) }))" }
                if s.isIPv6 && s.netmask != 128 { out += " mask \(s.netmask)" }
            }
            out += "\n"
            for r in reals {
                out += "  -> \(pad(endpoint(r.address, r.port), 28)) \(pad(forwardName(r.forward), 7)) \(pad(String(r.weight), 6)) "
                out += "\(pad(String(r.activeConnections), 10)) \(pad(String(r.inactiveConnections), 10))\n"
            }
        }
        return out
    }

    /// `ipvsadm-save -n` for these virtual servers.
    public static func save(_ servers: [(service: IPVSService, reals: [IPVSDestination])]) -> String {
        var out = ""
        for (s, reals) in sorted(servers) {
            let vs = "\(protoFlag(s.proto)) \(endpoint(s.address, s.port))"
            out += "-A \(vs) -s \(s.scheduler)"
            if s.flags & IPVSService.persistent != 0 { out += " -p \(s.timeout)" }
            out += "\n"
            for r in reals {
                out += "-a \(vs) -r \(endpoint(r.address, r.port)) \(forwardFlag(r.forward)) -w \(r.weight)\n"
            }
        }
        return out
    }

    /// `render --proxy-mode ipvs`: the plan in one of the two formats, and the addresses
    /// `kube-ipvs0` carries as comment lines at the end.
    public struct Renderer: ProxyRenderer {
        /// `list`: the virtual servers as `ipvsadm -Ln` shows them, then kube-ipvs0's addresses,
        /// the ipsets and the iptables rules under `#` headers; `save`, `ipset` and `iptables`:
        /// one part each, as `ipvsadm-restore`, `ipset restore` and `iptables-restore` take it.
        public enum Format: String, Sendable, CaseIterable { case list, save, ipset, iptables }
        public var options: IPVSOptions
        public var format: Format
        public init(options: IPVSOptions, format: Format) {
            self.options = options
            self.format = format
        }

        public func render(_ snapshot: ProxySnapshot) -> String {
            let rules = IPVSRules.render(snapshot, options: options)
            switch format {
            case .ipset: return rules.ipset
            case .iptables: return rules.iptables
            case .save: return IPVSRenderer.save(IPVSPlan(snapshot, options: options))
            case .list:
                let plan = IPVSPlan(snapshot, options: options)
                var out = IPVSRenderer.listing(plan)
                let ipv6 = options.family == .ipv6
                out += "# \(IPVSPlan.dummyInterface): \(plan.boundAddresses.map { "\($0)/\(ipv6 ? 128 : 32)" }.joined(separator: " "))\n"
                out += "# ipset save\n" + rules.ipset + "# \(ipv6 ? "ip6tables" : "iptables")-restore --noflush\n" + rules.iptables
                return out
            }
        }
    }

    public static func listing(_ plan: IPVSPlan) -> String { listing(plan.servers.map { ($0.service, $0.realServers) }) }
    public static func save(_ plan: IPVSPlan) -> String { save(plan.servers.map { ($0.service, $0.realServers) }) }
}
