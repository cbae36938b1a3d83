/// An ipset's members, read from `ipset save`, for walking rules that match on it
/// (`-m set --match-set NAME dst,dst,src`). Members are kept in `ipset save`'s own text form
/// (`10.96.0.10,tcp:80`, `192.0.2.50,tcp:80,10.250.0.0/24`, `30080`), and a packet is looked up
/// by building that text from its addresses and ports: one lookup per member, whatever the
/// set's size (a `net` dimension tries each prefix length the set holds).
public struct IPSetMembers: Sendable {
    /// What each of the set's dimensions holds, from its type (`hash:ip,port,net`, `bitmap:port`).
    public enum Dimension: Sendable { case ip, net, port }

    public let type: String
    public let dimensions: [Dimension]
    var members: Set<String> = []
    /// The prefix lengths of the `net` members, longest first.
    var prefixes: [Int] = []

    /// nil for a type the walk does not read (`hash:mac`, `list:set`, …).
    public init?(type: String) {
        let parts = type.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, parts[0] == "hash" || parts[0] == "bitmap" else { return nil }
        var dims: [Dimension] = []
        for d in parts[1].split(separator: ",") {
            switch d {
            case "ip": dims.append(.ip)
            case "net": dims.append(.net)
            case "port": dims.append(.port)
            default: return nil
            }
        }
        guard !dims.isEmpty else { return nil }
        self.type = type
        dimensions = dims
    }

    public var count: Int { members.count }

    /// Adds a member as `ipset save` prints it (or as `ipset add` takes it: numeric protocols,
    /// a /32 (or /128) net, a port range in a bitmap).
    public mutating func add(_ entry: some StringProtocol) {
        let fields = entry.split(separator: ",", omittingEmptySubsequences: false)
        guard fields.count == dimensions.count else { return }
        if dimensions == [.port], let dash = fields[0].firstIndex(of: "-"),
           let a = Int(fields[0][..<dash]), let b = Int(fields[0][fields[0].index(after: dash)...]), a <= b, b - a < 65536 {
            for p in a...b { members.insert(String(p)) }
            return
        }
        var out: [String] = []
        for (d, f) in zip(dimensions, fields) {
            // A host's length: 32 bits, or 128 for IPv6.
            let width = f.contains(":") && d != .port ? 128 : 32
            let host = "/\(width)"
            switch d {
            case .ip:
                out.append(f.hasSuffix(host) ? String(f.dropLast(host.count)) : String(f))
            case .net:
                if let slash = f.firstIndex(of: "/"), let len = Int(f[f.index(after: slash)...]), len < width {
                    guard let c = IPTablesWalk.cidr(String(f)) else { return }
                    out.append("\(IPTablesWalk.text(c.0))/\(len)")
                    if !prefixes.contains(len) { prefixes.append(len); prefixes.sort(by: >) }
                } else {
                    out.append(f.hasSuffix(host) ? String(f.dropLast(host.count)) : String(f))
                    if !prefixes.contains(width) { prefixes.append(width); prefixes.sort(by: >) }
                }
            case .port:
                let pp = f.split(separator: ":", maxSplits: 1)
                if pp.count == 2 {
                    let proto = ["6": "tcp", "17": "udp", "132": "sctp"][String(pp[0])] ?? pp[0].lowercased()
                    out.append("\(proto):\(pp[1])")
                } else {
                    out.append(String(f))
                }
            }
        }
        members.insert(out.joined(separator: ","))
    }

    /// Whether the packet is a member, each dimension taken from the packet's source or
    /// destination as `flags` say (`dst,dst`: its destination address and port).
    public func contains(_ p: IPTablesWalk.Packet, _ flags: [Substring]) -> Bool {
        guard flags.count >= dimensions.count else { return false }
        var parts: [String] = []
        var net: (index: Int, address: IPTablesWalk.Address)?
        for (k, d) in dimensions.enumerated() {
            let dst = flags[k] == "dst"
            switch d {
            case .ip: parts.append(IPTablesWalk.text(dst ? p.destination : p.source))
            case .port:
                let port = dst ? p.port : p.sourcePort
                parts.append(type.hasPrefix("bitmap") ? String(port) : "\(p.proto):\(port)")
            case .net:
                net = (k, dst ? p.destination : p.source)
                parts.append("")
            }
        }
        guard let net else { return members.contains(parts.joined(separator: ",")) }
        for len in prefixes {
            parts[net.index] = len == (net.address.v6 ? 128 : 32) ? IPTablesWalk.text(net.address) : "\(IPTablesWalk.text(net.address.masked(net.address.mask(len))))/\(len)"
            if members.contains(parts.joined(separator: ",")) { return true }
        }
        return false
    }

    /// The sets in `ipset save` text (`create NAME TYPE …` then `add NAME MEMBER` lines); other
    /// lines are not read. Sets of types the walk does not read are left out.
    public static func parse(_ text: some StringProtocol) -> [String: IPSetMembers] {
        var sets: [String: IPSetMembers] = [:]
        for bytes in String(text).utf8.split(separator: 10) {
            let f = bytes.split(separator: 32, maxSplits: 3).map { Substring($0) }
            guard f.count >= 3 else { continue }
            if f[0] == "create", let s = IPSetMembers(type: String(f[2])) {
                sets[String(f[1])] = s
            } else if f[0] == "add" {
                sets[String(f[1])]?.add(f[2])
            }
        }
        return sets
    }
}
