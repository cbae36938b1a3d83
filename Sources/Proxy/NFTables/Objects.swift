import CMnl
import CNftnl
import KubeAPI
import ProxySeam

/// An address field of the network header a rule matches on: IPv4's (`ip saddr`) or
/// IPv6's (`ip6 saddr`).
struct IPField: Hashable, Sendable {
    enum Part: String, Sendable { case saddr, daddr }
    var part: Part
    var family: IPFamily

    static let saddr = IPField(part: .saddr, family: .ipv4)
    static let daddr = IPField(part: .daddr, family: .ipv4)
    static func saddr(_ f: IPFamily) -> IPField { IPField(part: .saddr, family: f) }
    static func daddr(_ f: IPFamily) -> IPField { IPField(part: .daddr, family: f) }

    var rawValue: String { part.rawValue }
    /// `ip saddr`, `ip6 daddr`.
    var text: String { "\(family.nftPrefix) \(part.rawValue)" }
    var offset: UInt32 {
        switch (family, part) {
        case (.ipv4, .saddr): return 12
        case (.ipv4, .daddr): return 16
        case (.ipv6, .saddr): return 8
        case (.ipv6, .daddr): return 24
        }
    }
    var length: UInt32 { family == .ipv4 ? 4 : 16 }
}

extension IPFamily {
    /// nft's protocol word and table family: `ip` or `ip6`.
    var nftPrefix: String { self == .ipv4 ? "ip" : "ip6" }
    /// nft's address type: `ipv4_addr` or `ipv6_addr`.
    var addrType: SetDef.KeyType { self == .ipv4 ? .ipv4Addr : .ipv6Addr }
    /// The netfilter protocol family (`NFPROTO_IPV4`, `NFPROTO_IPV6`).
    var nfproto: UInt32 { self == .ipv4 ? UInt32(NFPROTO_IPV4) : UInt32(NFPROTO_IPV6) }
    /// The full prefix length of an address.
    var bits: Int { self == .ipv4 ? 32 : 128 }
}

/// A part of a concatenated set key.
enum KeyPart: Hashable, Sendable {
    case ipDaddr, ipSaddr, l4proto, thDport
    /// `ip6 daddr`, `ip6 saddr`.
    case ip6Daddr, ip6Saddr

    static func daddr(_ f: IPFamily) -> KeyPart { f == .ipv4 ? .ipDaddr : .ip6Daddr }
    static func saddr(_ f: IPFamily) -> KeyPart { f == .ipv4 ? .ipSaddr : .ip6Saddr }

    var text: String {
        switch self {
        case .ipDaddr: return "ip daddr"
        case .ipSaddr: return "ip saddr"
        case .ip6Daddr: return "ip6 daddr"
        case .ip6Saddr: return "ip6 saddr"
        case .l4proto: return "meta l4proto"
        case .thDport: return "th dport"
        }
    }

    /// The 32-bit registers this part takes in a concatenation.
    var registers: Int { self == .ip6Daddr || self == .ip6Saddr ? 4 : 1 }

    /// The expression that loads this part into `reg`.
    func load(_ reg: UInt32) -> Expr {
        let net = UInt32(NFT_PAYLOAD_NETWORK_HEADER.rawValue)
        switch self {
        case .ipDaddr: return .payload(base: net, offset: 16, len: 4, dreg: reg)
        case .ipSaddr: return .payload(base: net, offset: 12, len: 4, dreg: reg)
        case .ip6Daddr: return .payload(base: net, offset: 24, len: 16, dreg: reg)
        case .ip6Saddr: return .payload(base: net, offset: 8, len: 16, dreg: reg)
        case .l4proto: return .meta(key: UInt32(NFT_META_L4PROTO.rawValue), dreg: reg)
        case .thDport: return .payload(base: UInt32(NFT_PAYLOAD_TRANSPORT_HEADER.rawValue), offset: 2, len: 2, dreg: reg)
        }
    }

    /// Loads of `parts` into consecutive registers, as nft lays out a concatenation: the
    /// first at `NFT_REG_1`, each next one after the registers of those before it.
    static func loads(_ parts: [KeyPart]) -> (exprs: [Expr], registers: Int) {
        var out: [Expr] = []
        var at = 0
        for p in parts {
            out.append(p.load(at == 0 ? Reg.r1 : Reg.r32(at)))
            at += p.registers
        }
        return (out, at)
    }
}

/// One value of a set element key part.
enum KeyValue: Hashable, Sendable, Comparable {
    case ip(UInt32)
    /// An IPv6 address, its high and low 64 bits.
    case ip6(UInt64, UInt64)
    case proto(L4Protocol)
    case port(Int)
    case int(UInt32)

    var text: String {
        switch self {
        case .ip(let v): return IPAddress(ipv4: v).description
        case let .ip6(hi, lo): return Self.ipv6Text(hi, lo)
        case .proto(let p): return p.lower
        case .port(let p): return String(p)
        case .int(let v): return String(v)
        }
    }

    /// Register layout: each part padded to 4 bytes; addresses and ports in network
    /// order, protocol numbers and integers (numgen) in host order.
    var bytes: [UInt8] {
        switch self {
        case .ip(let v): return [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
        case let .ip6(hi, lo): return withUnsafeBytes(of: hi.bigEndian) { Array($0) } + withUnsafeBytes(of: lo.bigEndian) { Array($0) }
        case .proto(let p): return [p.number, 0, 0, 0]
        case .port(let p): return [UInt8(p >> 8), UInt8(p & 0xff), 0, 0]
        case .int(let v): return withUnsafeBytes(of: v.littleEndian) { Array($0) }
        }
    }

    static func < (a: KeyValue, b: KeyValue) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    /// An address as a key value.
    init(_ ip: IPAddress) {
        if let v = ip.ipv4Value {
            self = .ip(v)
        } else {
            let b = ip.bytes
            self = .ip6(b[0..<8].reduce(0) { ($0 << 8) | UInt64($1) }, b[8..<16].reduce(0) { ($0 << 8) | UInt64($1) })
        }
    }

    /// The address of `family` as a key value; nil for an address of the other family.
    static func address(_ ip: IPAddress, _ family: IPFamily) -> KeyValue? {
        ip.family == family ? KeyValue(ip) : nil
    }

    /// The address `text` of `family`; nil when it is not one.
    static func address(_ text: String, _ family: IPFamily) -> KeyValue? {
        IPAddress(text).flatMap { address($0, family) }
    }

    /// RFC 5952 text of an IPv6 address (as `inet_ntop` and nft print it), written directly: a
    /// render prints one per element and endpoint, and going through `IPAddress` costs five
    /// allocations each. (IPv4-mapped addresses, which no Service has, print as plain groups.)
    static func ipv6Text(_ hi: UInt64, _ lo: UInt64) -> String {
        let groups = (0..<8).map { i -> UInt16 in
            let half = i < 4 ? hi : lo
            return UInt16(truncatingIfNeeded: half >> UInt64(16 * (3 - i % 4)))
        }
        // The longest run of two or more zero groups (the first of equal ones) becomes `::`.
        var best = (start: -1, length: 0), i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > best.length && j - i >= 2 { best = (i, j - i) }
                i = j
            } else {
                i += 1
            }
        }
        var out = ""
        out.reserveCapacity(39)
        i = 0
        while i < 8 {
            if i == best.start {
                out += "::"
                i += best.length
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(groups[i], radix: 16)
            i += 1
        }
        return out
    }

    /// The family of an address value.
    var family: IPFamily? {
        switch self {
        case .ip: return .ipv4
        case .ip6: return .ipv6
        default: return nil
        }
    }
}

extension L4Protocol {
    var number: UInt8 {
        switch self {
        case .tcp: return 6
        case .udp: return 17
        case .sctp: return 132
        }
    }
}

/// A verdict, in rules and in verdict maps.
enum Verdict: Hashable, Sendable {
    case accept, drop, `return`
    case jump(String)
    case goto(String)

    var text: String {
        switch self {
        case .accept: return "accept"
        case .drop: return "drop"
        case .return: return "return"
        case .jump(let c): return "jump \(c)"
        case .goto(let c): return "goto \(c)"
        }
    }

    var code: Int32 {
        switch self {
        case .accept: return Int32(NF_ACCEPT)
        case .drop: return Int32(NF_DROP)
        case .return: return NFT_RETURN.rawValue
        case .jump: return NFT_JUMP.rawValue
        case .goto: return NFT_GOTO.rawValue
        }
    }

    var chain: String? {
        switch self {
        case .jump(let c), .goto(let c): return c
        default: return nil
        }
    }
}

/// One match or statement of a rule, as kube-proxy writes them. Each renders as
/// the nft text upstream writes and compiles to the expressions `nft` would send.
enum Stmt: Hashable, Sendable {
    /// `ip daddr 10.0.0.1`, `ip saddr != 10.0.0.0/8`.
    case addr(IPField, negate: Bool, CIDR)
    /// `ip daddr @cluster-ips`, `ip daddr != @x`.
    case addrInSet(IPField, negate: Bool, set: String)
    /// `ip saddr != { 10.0.0.0/8, 192.168.0.0/16 }`: an anonymous interval set.
    case addrInList(IPField, negate: Bool, [CIDR])
    /// `meta l4proto tcp`.
    case l4proto(L4Protocol)
    /// `tcp dport 80` (with its implicit `meta l4proto tcp` dependency).
    case dport(L4Protocol, Int)
    /// `ct state new`.
    case ctStateNew
    /// `fib daddr type local`.
    case fibLocal(IPField)
    /// `iifname "cbr0"` or, with a trailing `*`, a prefix match.
    case iifname(String)
    /// `iifname != "cbr0"`.
    case iifnameNot(String)
    /// `meta mark & 0x4000 == 0`.
    case markUnset(UInt32)
    /// `meta mark set meta mark | 0x4000`.
    case markSetOr(UInt32)
    /// `meta mark set meta mark ^ 0x4000`.
    case markSetXor(UInt32)
    /// `ip daddr . meta l4proto . th dport vmap @service-ips`.
    case vmap([KeyPart], set: String)
    /// `numgen random mod 2 vmap { 0 : goto a , 1 : goto b }`.
    case numgenVmap([String])
    /// `update @affinity-… { ip saddr }`.
    case updateSet(String, KeyPart)
    /// `meta l4proto tcp dnat to 10.0.0.1:80`, `… dnat to [fd00::1]:80`.
    case dnat(L4Protocol, KeyValue, Int)
    /// `masquerade fully-random`.
    case masquerade(fullyRandom: Bool)
    /// `reject`.
    case reject
    case verdict(Verdict)
    /// `meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints`:
    /// DNAT to the address and port a data map holds for the key and a random index.
    case dnatMap(L4Protocol, [KeyPart], modulus: Int, set: String)
    /// `ip saddr . ip daddr @endpoint-hairpin`.
    case inConcatSet([KeyPart], set: String)
    /// `mark and 0x4000 != 0`.
    case markIsSet(UInt32)
    /// `ct status dnat`: the connection's destination was NATed.
    case ctStatusDNAT
    /// `meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.1.0.4 . 80 , 1 : 10.1.0.5 . 80 }`:
    /// DNAT to one of the endpoints, picked at random, through an anonymous data map (upstream since v1.36).
    case dnatNumgenMap(L4Protocol, [Destination])

    var text: String {
        switch self {
        case let .addr(f, neg, c):
            let v = c.prefixLength == c.family.bits ? c.address.description : c.network.description
            return "\(f.text) \(neg ? "!= " : "")\(v)"
        case let .addrInSet(f, neg, s): return "\(f.text) \(neg ? "!= " : "")@\(s)"
        case let .addrInList(f, neg, l):
            let items = l.map { $0.prefixLength == $0.family.bits ? $0.address.description : $0.network.description }
            return "\(f.text) \(neg ? "!= " : ""){ \(items.joined(separator: " , ")) }"
        case .l4proto(let p): return "meta l4proto \(p.lower)"
        case let .dport(p, port): return "\(p.lower) dport \(port)"
        case .ctStateNew: return "ct state new"
        case .fibLocal(let f): return "fib \(f.rawValue) type local"
        case .iifname(let n): return "iifname \"\(n)\""
        case .iifnameNot(let n): return "iifname != \"\(n)\""
        case .markUnset(let m): return "mark and \(hex(m)) == 0"
        case .markSetOr(let m): return "mark set mark or \(hex(m))"
        case .markSetXor(let m): return "mark set mark xor \(hex(m))"
        case let .vmap(keys, s): return "\(keys.map(\.text).joined(separator: " . ")) vmap @\(s)"
        case .numgenVmap(let chains):
            let items = chains.enumerated().map { "\($0.offset) : goto \($0.element)" }
            return "numgen random mod \(chains.count) vmap { \(items.joined(separator: " , ")) }"
        case let .updateSet(s, k): return "update @\(s) { \(k.text) }"
        case let .dnat(p, ip, port):
            return ip.family == .ipv6 ? "meta l4proto \(p.lower) dnat to [\(ip.text)]:\(port)" : "meta l4proto \(p.lower) dnat to \(ip.text):\(port)"
        case .masquerade(let fr): return fr ? "masquerade fully-random" : "masquerade"
        case .reject: return "reject"
        case .verdict(let v): return v.text
        case let .dnatMap(p, keys, n, set):
            let k = (keys.map(\.text) + ["numgen random mod \(n)"]).joined(separator: " . ")
            return "meta l4proto \(p.lower) dnat ip to \(k) map @\(set)"
        case let .inConcatSet(keys, set): return "\(keys.map(\.text).joined(separator: " . ")) @\(set)"
        case .markIsSet(let m): return "mark and \(hex(m)) != 0"
        case .ctStatusDNAT: return "ct status dnat"
        case let .dnatNumgenMap(p, dests):
            let items = dests.enumerated().map { "\($0.offset) : \($0.element.ip.text) . \($0.element.port)" }
            let fam = dests.first?.ip.family ?? .ipv4
            return "meta l4proto \(p.lower) dnat \(fam.nftPrefix) addr . port to numgen random mod \(dests.count) map { \(items.joined(separator: " , ")) }"
        }
    }
}

/// An endpoint as DNAT writes it: an address (`.ip` or `.ip6`) and a port.
struct Destination: Hashable, Sendable {
    var ip: KeyValue
    var port: Int
}

/// `0x00004000`: Go's `%#08x`, as upstream writes the mark.
func hex(_ v: UInt32) -> String {
    let h = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - h.count)) + h
}

/// A rule: statements and an optional comment.
struct Rule: Hashable, Sendable {
    var stmts: [Stmt]
    var comment: String?

    init(_ stmts: [Stmt], comment: String? = nil) {
        self.stmts = stmts
        self.comment = comment
    }

    var text: String {
        var s = stmts.map(\.text).joined(separator: " ")
        if let comment { s += " comment \"\(comment)\"" }
        return s
    }
}

/// Where a base chain hooks in.
struct BaseHook: Hashable, Sendable {
    enum Kind: String, Sendable { case filter, nat }
    enum Hook: String, Sendable {
        case prerouting, input, forward, output, postrouting
        var number: UInt32 {
            switch self {
            case .prerouting: return UInt32(NF_INET_PRE_ROUTING.rawValue)
            case .input: return UInt32(NF_INET_LOCAL_IN.rawValue)
            case .forward: return UInt32(NF_INET_FORWARD.rawValue)
            case .output: return UInt32(NF_INET_LOCAL_OUT.rawValue)
            case .postrouting: return UInt32(NF_INET_POST_ROUTING.rawValue)
            }
        }
    }
    var kind: Kind
    var hook: Hook
    var priority: Int32

    /// Priorities as nft spells them relative to the standard ones (`dstnat - 10`).
    var priorityText: String {
        let named: [(String, Int32)] = [("dstnat", -100), ("srcnat", 100), ("filter", 0)]
        for (n, v) in named {
            if priority == v { return n }
            if priority - v == 10 { return "\(n) + 10" }
            if priority - v == -10 { return "\(n) - 10" }
        }
        return String(priority)
    }
}

struct Chain: Hashable, Sendable {
    var name: String
    var base: BaseHook?
    var comment: String?
    var rules: [Rule]

    init(_ name: String, base: BaseHook? = nil, comment: String? = nil, rules: [Rule] = []) {
        self.name = name
        self.base = base
        self.comment = comment
        self.rules = rules
    }
}

/// A named set or map.
struct SetDef: Hashable, Sendable {
    enum KeyType: Hashable, Sendable {
        case ipv4Addr, ipv6Addr, inetProto, inetService
        var id: UInt32 {
            switch self {
            case .ipv4Addr: return 7
            case .ipv6Addr: return 8
            case .inetProto: return 12
            case .inetService: return 13
            }
        }
        var name: String {
            switch self {
            case .ipv4Addr: return "ipv4_addr"
            case .ipv6Addr: return "ipv6_addr"
            case .inetProto: return "inet_proto"
            case .inetService: return "inet_service"
            }
        }
    }
    var name: String
    var key: [KeyType]
    var isVerdictMap: Bool
    /// `flags dynamic,timeout` with this timeout, for affinity sets.
    var timeoutSeconds: Int?
    var comment: String?
    /// A set declared with `typeof` (or any type the key list cannot spell), taken
    /// as nft creates it.
    var raw: RawSetType? = nil

    var typeText: String {
        if let raw { return raw.text }
        return "type " + key.map(\.name).joined(separator: " . ") + (isVerdictMap ? " : verdict" : "")
    }

    var isMap: Bool { isVerdictMap || (raw?.dataLength ?? 0) > 0 }

    /// nft's concatenated type id: 6 bits per part.
    var keyTypeID: UInt32 { key.reduce(0) { ($0 << 6) | $1.id } }
    /// Each part takes a 4-byte register, an IPv6 address four.
    var keyLength: UInt32 { key.reduce(0) { $0 + ($1 == .ipv6Addr ? 16 : 4) } }
}

/// A set whose declaration is given as nft creates it: the text of the
/// declaration, and the key and data types, lengths and user data the kernel holds
/// for it (captured from `nft -f` of that text with nftables 1.0.6).
struct RawSetType: Hashable, Sendable {
    var text: String
    var keyType: UInt32
    var keyLength: UInt32
    var dataType: UInt32
    var dataLength: UInt32
    var userData: [UInt8]
}

/// An element of a named set or map.
struct Element: Hashable, Sendable {
    var key: [KeyValue]
    var verdict: Verdict?
    var comment: String?
    /// The value of a data map element.
    var data: [KeyValue]? = nil

    var keyText: String { key.map(\.text).joined(separator: " . ") }

    var text: String {
        var s = keyText
        if let comment { s += " comment \"\(comment)\"" }
        if let verdict { s += " : \(verdict.text)" }
        if let data { s += " : " + data.map(\.text).joined(separator: " . ") }
        return s
    }
}
