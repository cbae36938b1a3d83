import Foundation
import KubeAPI
import ProxySeam

/// A packet walked through the nftables mode's table (`switchyard explain --proxy-mode nftables`),
/// read from the script a render or a full sync writes (`add table`, `add set|map`, `add chain`,
/// `add rule`, `add element`). The base chains are taken in the order netfilter runs them for a
/// new connection: arriving, the prerouting hooks by priority, then input (to the node's own
/// address) or forward, then postrouting; sent by the node, the output hooks, then postrouting
/// (then, to its own address, back in over lo: prerouting's filter chains and input).
/// Each rule is matched against the packet as it is at that point (its destination translated
/// once a `dnat` ran); `numgen random mod N` splits the walk into N ways of 1/N each.
public struct NFTWalk: Sendable {
    public struct Chain: Sendable {
        public var name: String
        public var hook: String?
        public var priority: Int
        public var rules: [String] = []
        /// `filter`, `nat` or `route`, for a base chain.
        public var type: String?
    }

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    public var table = "kube-proxy"
    /// The table's family, `ip` or `ip6`, as its `add table` or `table` line says.
    public var family = "ip"
    public var chains: [String: Chain] = [:]
    /// Sets' and maps' elements as written (`10.96.0.10 . tcp . 80 : goto service-…`).
    public private(set) var elements: [String: [String]] = [:]
    /// Each set's or map's elements by their key, where the key is exact (a lookup is then one
    /// dictionary access, as the kernel's hash does); those with prefixes or ranges beside.
    struct Index: Sendable {
        var exact: [String: [String]] = [:]
        var other: [String] = []
    }
    var indexes: [String: Index] = [:]

    static func key(_ element: String) -> String {
        let k = element.components(separatedBy: " : ").first ?? element
        return k.components(separatedBy: " . ").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " . ")
    }

    static func index(_ elements: [String: [String]]) -> [String: Index] {
        var out: [String: Index] = [:]
        for (name, list) in elements {
            var i = Index()
            for e in list {
                let k = key(e)
                if k.contains("/") || k.contains("-") { i.other.append(e) } else { i.exact[k, default: []].append(e) }
            }
            out[name] = i
        }
        return out
    }

    /// The elements of a set or map (`@name`) or an inline `{ … }` whose key holds for `values`.
    func matching(_ spec: String, _ values: [String]) -> [String] {
        if spec.hasPrefix("@"), let i = indexes[String(spec.dropFirst())] {
            return (i.exact[values.joined(separator: " . ")] ?? []) + i.other.filter { Self.keyMatches(Self.key($0), values) }
        }
        return members(spec).filter { Self.keyMatches(Self.key($0), values) }
    }

    /// The statements of an nft script (comments and blank lines skipped).
    public init(script: String) throws {
        for raw in script.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true).map(String.init)
            guard words.count >= 4, words[0] == "add" else { continue }
            switch words[1] {
            case "table":
                family = words[2]
                table = words[3]
            case "chain":
                guard words.count >= 5 else { continue }
                let name = words[4]
                var c = chains[name] ?? Chain(name: name, hook: nil, priority: 0)
                if let t = line.range(of: "type ") { c.type = line[t.upperBound...].split(separator: " ").first.map(String.init) }
                if let h = line.range(of: "hook ") {
                    let rest = line[h.upperBound...].split(separator: " ")
                    c.hook = rest.first.map(String.init)
                    if rest.count >= 3, rest[1] == "priority" {
                        let p = rest[2].trimmingCharacters(in: CharacterSet(charactersIn: ";"))
                        c.priority = Int(p) ?? ["filter": 0, "dstnat": -100, "srcnat": 100, "mangle": -150, "raw": -300][p] ?? 0
                    }
                }
                chains[name] = c
            case "rule":
                guard words.count >= 6 else { throw Failure(description: "a rule without a body: \(line)") }
                let name = words[4]
                chains[name, default: Chain(name: name, hook: nil, priority: 0)].rules.append(words[5])
            case "element":
                guard words.count >= 6 else { continue }
                let name = words[4]
                var body = words[5].trimmingCharacters(in: .whitespaces)
                if body.hasPrefix("{") { body.removeFirst() }
                if body.hasSuffix("}") { body.removeLast() }
                elements[name, default: []] += Self.splitTop(body, ",").map { Self.stripComment($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            default:
                continue
            }
        }
        guard chains.values.contains(where: { $0.hook != nil }) else { throw Failure(description: "no base chain in the script: not an nftables table") }
        indexes = Self.index(elements)
    }

    /// The table as `nft list table ip kube-proxy` prints it (blocks), read as the statements a
    /// script would hold.
    public init(listing: String) throws {
        var script: [String] = []
        var table = "kube-proxy"
        var family = "ip"
        var block: (kind: String, name: String)?
        var elements: String?
        var firstLine = true
        for raw in listing.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            if var e = elements {
                e += " " + line
                elements = e
                if Self.depth(e) == 0 {
                    if let b = block, let open = e.firstIndex(of: "{") { script.append("add element \(family) \(table) \(b.name) \(e[open...])") }
                    elements = nil
                }
                continue
            }
            if line.hasPrefix("table ") {
                let w = line.split(separator: " ")
                if w.count >= 3 { family = String(w[1]) }
                table = w.dropFirst(2).first.map(String.init) ?? table
                if script.isEmpty { script.append("add table \(family) \(table)") }
                continue
            }
            if line == "}" { block = nil; continue }
            let words = line.split(separator: " ").map(String.init)
            if ["set", "map", "chain"].contains(words[0]), words.count >= 3, words.last == "{" {
                block = (words[0], words[1])
                firstLine = true
                if words[0] == "chain" { script.append("add chain \(family) \(table) \(words[1])") }
                continue
            }
            guard let b = block else { continue }
            if b.kind != "chain" {
                if line.hasPrefix("elements = ") {
                    let e = String(line.dropFirst("elements = ".count))
                    if Self.depth(e) == 0 { script.append("add element \(family) \(table) \(b.name) \(e)") } else { elements = e }
                }
                continue
            }
            defer { firstLine = false }
            if firstLine, line.hasPrefix("type ") {
                // type nat hook prerouting priority dstnat; policy accept;
                let parts = line.split(separator: ";").first.map(String.init) ?? line
                let w = parts.split(separator: " ").map(String.init)
                guard let h = w.firstIndex(of: "hook"), h + 1 < w.count, let pr = w.firstIndex(of: "priority") else { continue }
                let named = ["filter": 0, "dstnat": -100, "srcnat": 100, "mangle": -150, "raw": -300, "security": 50]
                var priority = 0
                var k = pr + 1
                if k < w.count { priority = Int(w[k]) ?? named[w[k]] ?? 0; k += 1 }
                if k + 1 < w.count, let n = Int(w[k + 1]) { priority += w[k] == "-" ? -n : n }
                script[script.count - 1] = "add chain \(family) \(table) \(b.name) { type \(w[1]) hook \(w[h + 1]) priority \(priority) ; }"
                continue
            }
            if line.hasPrefix("comment ") || line.hasPrefix("policy ") { continue }
            script.append("add rule \(family) \(table) \(b.name) \(line)")
        }
        try self.init(script: script.joined(separator: "\n"))
    }

    static func depth(_ s: String) -> Int { s.reduce(0) { $0 + ($1 == "{" ? 1 : $1 == "}" ? -1 : 0) } }

    /// `s` split at `separator` outside braces and quotes.
    static func splitTop(_ s: String, _ separator: Character) -> [String] {
        var out: [String] = [], cur = "", depth = 0, quoted = false
        for ch in s {
            if ch == "\"" { quoted.toggle() }
            if !quoted { if ch == "{" { depth += 1 } else if ch == "}" { depth -= 1 } }
            if ch == separator && depth == 0 && !quoted { out.append(cur); cur = "" } else { cur.append(ch) }
        }
        out.append(cur)
        return out
    }

    /// An element or rule without its `comment "…"`.
    static func stripComment(_ s: String) -> String {
        guard let r = s.range(of: " comment \"") else { return s }
        guard let end = s[r.upperBound...].firstIndex(of: "\"") else { return String(s[..<r.lowerBound]) }
        return String(s[..<r.lowerBound]) + String(s[s.index(after: end)...])
    }

    /// Words, with `{ … }` kept as one word.
    static func words(_ s: String) -> [String] {
        var out: [String] = [], cur = "", depth = 0, quoted = false
        for ch in s {
            if ch == "\"" { quoted.toggle() }
            if !quoted { if ch == "{" { depth += 1 } else if ch == "}" { depth -= 1 } }
            if ch == " " && depth == 0 && !quoted {
                if !cur.isEmpty { out.append(cur); cur = "" }
            } else { cur.append(ch) }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    // MARK: the packet

    /// An IPv4 or IPv6 address, as one number.
    public struct Address: Hashable, Sendable {
        public var value: UInt128
        public var v6: Bool
        public var isLoopback: Bool { v6 ? value == 1 : value >> 24 == 127 }
    }

    public struct Packet: Sendable {
        public var source: Address
        public var destination: Address
        public var sourcePort: Int
        public var port: Int
        public var proto: String
        public var mark: UInt32 = 0
        public var translated: (Address, Int)?
        public var masqueraded = false
        public var probability = 1.0
        public var hops: [(table: String, chain: String, rule: String)] = []
    }

    public struct Outcome: Sendable {
        public var packet: Packet
        /// `accepted`, `rejected` or `dropped`.
        public var verdict: String
        public var endpoint: String? {
            packet.translated.map { $0.0.v6 ? "[\(NFTWalk.text($0.0))]:\($0.1)" : "\(NFTWalk.text($0.0)):\($0.1)" }
        }
    }

    static func address(_ s: Substring) -> Address? {
        if s.utf8.contains(UInt8(ascii: ":")) {
            guard let ip = IPAddress(s), ip.family == .ipv6 else { return nil }
            return Address(value: ip.bytes.reduce(0) { ($0 << 8) | UInt128($1) }, v6: true)
        }
        let parts = s.split(separator: ".")
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard let b = UInt8(p) else { return nil }
            v = v << 8 | UInt32(b)
        }
        return Address(value: UInt128(v), v6: false)
    }

    /// `0x00004000` or `16384`.
    static func number(_ s: String) -> UInt32? {
        s.hasPrefix("0x") ? UInt32(s.dropFirst(2), radix: 16) : UInt32(s)
    }

    static func text(_ a: Address) -> String {
        if a.v6 {
            let bytes = (0..<16).map { UInt8(truncatingIfNeeded: a.value >> UInt128(8 * (15 - $0))) }
            return IPAddress(bytes: bytes)!.description
        }
        let v = UInt32(truncatingIfNeeded: a.value)
        return "\(v >> 24).\(v >> 16 & 255).\(v >> 8 & 255).\(v & 255)"
    }

    /// Whether `a` is `spec`: an address, a CIDR, or a range `a-b`, of its family.
    static func contains(_ spec: String, _ a: Address) -> Bool {
        if let slash = spec.firstIndex(of: "/") {
            let width = a.v6 ? 128 : 32
            guard let base = address(spec[..<slash]), base.v6 == a.v6, let bits = Int(spec[spec.index(after: slash)...]),
                  (0...width).contains(bits) else { return false }
            let all: UInt128 = a.v6 ? ~0 : UInt128(UInt32.max)
            let mask: UInt128 = bits == 0 ? 0 : (all << UInt128(width - bits)) & all
            return a.value & mask == base.value & mask
        }
        // A range `a-b` (IPv6 addresses hold no dash).
        if let dash = spec.firstIndex(of: "-"), let lo = address(spec[..<dash]), let hi = address(spec[spec.index(after: dash)...]) {
            return lo.v6 == a.v6 && (lo.value...hi.value).contains(a.value)
        }
        return address(Substring(spec)) == a
    }

    struct Context {
        var local: [Address]
        var fromNode: Bool
        var localSource: Bool { fromNode || local.contains(packetSource) || packetSource.isLoopback }
        var packetSource: Address
        func isLocal(_ a: Address) -> Bool { a.isLoopback || local.contains(a) }
    }

    /// The value of one selector for the packet (`ip daddr`, `ip6 saddr`, `meta l4proto`, `th dport`, …).
    static func value(_ selector: String, _ p: Packet) -> String? {
        switch selector {
        case "ip daddr", "ip6 daddr": return text(p.translated?.0 ?? p.destination)
        case "ip saddr", "ip6 saddr": return text(p.source)
        case "meta l4proto": return p.proto
        case "th dport": return String(p.translated?.1 ?? p.port)
        // What nft lists for `th dport` where the protocol is known.
        case "tcp dport", "udp dport", "sctp dport": return selector.hasPrefix(p.proto) ? String(p.translated?.1 ?? p.port) : nil
        default: return nil
        }
    }

    static let selectors = ["ip daddr", "ip saddr", "ip6 daddr", "ip6 saddr", "meta l4proto", "th dport", "tcp dport", "udp dport", "sctp dport"]

    /// Whether a concatenated key (`10.96.0.10 . tcp . 80`) holds for the packet's values.
    static func keyMatches(_ key: String, _ values: [String]) -> Bool {
        let parts = key.components(separatedBy: " . ").map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == values.count else { return false }
        for (k, v) in zip(parts, values) {
            if let a = address(Substring(v)) { if !contains(k, a) { return false } } else if k != v { return false }
        }
        return true
    }

    /// A set's or an inline `{ … }`'s members.
    func members(_ spec: String) -> [String] {
        if spec.hasPrefix("@") { return elements[String(spec.dropFirst())] ?? [] }
        var body = spec
        if body.hasPrefix("{") { body.removeFirst() }
        if body.hasSuffix("}") { body.removeLast() }
        return Self.splitTop(body, ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    // MARK: walking

    /// Every way a new connection goes, from `source` to `destination:port/proto`.
    public func walk(source: String, sourcePort: Int = 40000, destination: String, port: Int, proto: String, fromNode: Bool, local: [String]) throws -> [Outcome] {
        guard let s = Self.address(Substring(source)), let d = Self.address(Substring(destination)), s.v6 == d.v6 else {
            throw Failure(description: "--src and --dst must be addresses of one family")
        }
        guard d.v6 == (family == "ip6") else {
            throw Failure(description: "an IPv\(d.v6 ? 6 : 4) packet cannot be walked through the table \(family) \(table)")
        }
        let ctx = Context(local: local.compactMap { Self.address(Substring($0)) }, fromNode: fromNode, packetSource: s)
        let start = Packet(source: s, destination: d, sourcePort: sourcePort, port: port, proto: proto)
        // The hooks in order; within one, base chains by priority.
        func bases(_ hook: String) -> [Chain] { chains.values.filter { $0.hook == hook }.sorted { ($0.priority, $0.name) < ($1.priority, $1.name) } }
        var done: [Outcome] = []
        let ways = try run(bases(fromNode ? "output" : "prerouting"), start, ctx, &done)
        // Routing: to the node itself or onwards (the node's own packets leave through postrouting).
        var after: [Packet] = []
        for p in ways {
            if fromNode { after.append(p); continue }
            let dest = p.translated?.0 ?? p.destination
            after += try run(bases(ctx.isLocal(dest) ? "input" : "forward"), p, ctx, &done)
        }
        for p in after {
            let dest = p.translated?.0 ?? p.destination
            if !fromNode && ctx.isLocal(dest) { done.append(Outcome(packet: p, verdict: "accepted")); continue }
            for q in try run(bases("postrouting"), p, ctx, &done) {
                // The node's packet to its own address comes back in over lo: through prerouting's
                // filter chains (its nat was done on the way out), then input.
                let to = q.translated?.0 ?? q.destination
                var delivered = [q]
                if fromNode && ctx.isLocal(to) {
                    delivered = try run(bases("prerouting").filter { $0.type != "nat" }, q, ctx, &done).flatMap { try run(bases("input"), $0, ctx, &done) }
                }
                done += delivered.map { Outcome(packet: $0, verdict: "accepted") }
            }
        }
        return done
    }

    /// The packet through base chains in order: the ways that go on (accepted by every one),
    /// the others ended in `done`.
    func run(_ bases: [Chain], _ p: Packet, _ ctx: Context, _ done: inout [Outcome]) throws -> [Packet] {
        var ways = [p]
        for b in bases {
            var next: [Packet] = []
            for w in ways {
                for (q, v) in try chain(b.name, w, ctx, depth: 0) {
                    switch v {
                    case "drop": done.append(Outcome(packet: q, verdict: "dropped"))
                    case "reject": done.append(Outcome(packet: q, verdict: "rejected"))
                    default: next.append(q)
                    }
                }
            }
            ways = next
        }
        return ways
    }

    /// One chain: the ways out of it and how each ended (`accept`, `drop`, `reject`, or
    /// `continue` when it ran out of rules or returned).
    func chain(_ name: String, _ p: Packet, _ ctx: Context, depth: Int) throws -> [(Packet, String)] {
        guard depth < 32 else { throw Failure(description: "chains nest deeper than 32 at \(name)") }
        guard let c = chains[name] else { throw Failure(description: "no chain \(name)") }
        return try rules(c.rules[...], c, p, ctx, depth: depth)
    }

    func rules(_ list: ArraySlice<String>, _ c: Chain, _ p: Packet, _ ctx: Context, depth: Int) throws -> [(Packet, String)] {
        guard let rule = list.first else { return [(p, "continue")] }
        let rest = list.dropFirst()
        var out: [(Packet, String)] = []
        for (q, end) in try apply(Self.words(Self.stripComment(rule)), rule: rule, c, p, ctx, depth: depth) {
            switch end {
            case "next": out += try rules(rest, c, q, ctx, depth: depth)
            case "return": out.append((q, "continue"))
            default:
                if end.hasPrefix("jump ") {
                    for (r, v) in try chain(String(end.dropFirst(5)), q, ctx, depth: depth + 1) {
                        if v == "continue" { out += try rules(rest, c, r, ctx, depth: depth) } else { out.append((r, v)) }
                    }
                } else if end.hasPrefix("goto ") {
                    out += try chain(String(end.dropFirst(5)), q, ctx, depth: depth + 1)
                } else {
                    out.append((q, end))
                }
            }
        }
        return out
    }

    /// One rule's words applied to the packet: the ways it leaves the rule, each with what comes
    /// next (`next`: the following rule; `jump X`, `goto X`, `accept`, `drop`, `reject`, `return`).
    func apply(_ w: [String], rule: String, _ c: Chain, _ p: Packet, _ ctx: Context, depth: Int) throws -> [(Packet, String)] {
        var p = p
        var i = 0
        var hopped = false
        func hop() { if !hopped { p.hops.append((table: "\(family) \(table)", chain: c.name, rule: rule)); hopped = true } }
        // A selector (or a concatenation of them) at i: its values and where it ends.
        func selector(_ at: Int) -> (values: [String], next: Int)? {
            var j = at, values: [String] = []
            while j + 1 < w.count, Self.selectors.contains("\(w[j]) \(w[j + 1])") {
                guard let v = Self.value("\(w[j]) \(w[j + 1])", p) else { return nil }
                values.append(v)
                j += 2
                if j < w.count, w[j] == "." { j += 1 } else { break }
            }
            return values.isEmpty ? nil : (values, j)
        }
        while i < w.count {
            let word = w[i]
            if let (values, j) = selector(i) {
                guard j < w.count else { throw Failure(description: "a selector without a value: \(rule)") }
                var negate = false
                var k = j
                if w[k] == "!=" { negate = true; k += 1 }
                guard k < w.count else { throw Failure(description: "a selector without a value: \(rule)") }
                if w[k] == "vmap" {
                    guard k + 1 < w.count else { throw Failure(description: "vmap without a map: \(rule)") }
                    // A verdict map: the first element whose key holds.
                    for e in matching(w[k + 1], values) {
                        let kv = e.components(separatedBy: " : ")
                        guard kv.count == 2 else { continue }
                        hop()
                        let verdict = kv[1].trimmingCharacters(in: .whitespaces)
                        return [(p, verdict == "continue" ? "next" : verdict)]
                    }
                    return [(p, "next")]
                }
                let spec = w[k]
                let held: Bool
                if spec.hasPrefix("@") || spec.hasPrefix("{") {
                    held = !matching(spec, values).isEmpty
                } else if values.count == 1, let a = Self.address(Substring(values[0])) {
                    held = Self.contains(spec, a)
                } else {
                    held = values.joined(separator: " . ") == spec
                }
                if held == negate { return [(p, "next")] }
                i = k + 1
                continue
            }
            switch word {
            case "ct":
                guard i + 2 < w.count else { throw Failure(description: "ct without a state: \(rule)") }
                // A new connection: state new (until translated it is still the first packet);
                // status dnat once a dnat ran.
                if w[i + 1] == "state" { if !w[i + 2].split(separator: ",").contains("new") { return [(p, "next")] } }
                else if w[i + 1] == "status" { if w[i + 2] == "dnat" && p.translated == nil { return [(p, "next")] } }
                i += 3
            case "fib":
                // fib daddr|saddr type local
                guard i + 3 < w.count else { throw Failure(description: "fib without a type: \(rule)") }
                var k = i + 3
                var negate = false
                if w[k] == "!=" { negate = true; k += 1 }
                let isLocal = w[i + 1] == "daddr" ? ctx.isLocal(p.translated?.0 ?? p.destination) : ctx.localSource
                let holds = w[k] == "local" ? isLocal : !isLocal
                if holds == negate { return [(p, "next")] }
                i = k + 1
            case "meta" where i + 1 < w.count && w[i + 1] == "mark":
                // `meta mark`, as nft lists `mark`.
                i += 1
            case "mark":
                var k = i + 1
                if k < w.count, w[k] == "set" {
                    // mark set [meta] mark or|xor|||^ VALUE
                    k += 1
                    if k < w.count, w[k] == "meta" { k += 1 }
                    k += 1
                    guard k + 1 < w.count, let v = Self.number(w[k + 1]) else { throw Failure(description: "mark set: \(rule)") }
                    hop()
                    p.mark = ["or", "|"].contains(w[k]) ? p.mark | v : ["xor", "^"].contains(w[k]) ? p.mark ^ v : v
                    i = k + 2
                } else {
                    // mark and|& VALUE [!=|==] CMP
                    guard k + 2 < w.count, ["and", "&"].contains(w[k]), let v = Self.number(w[k + 1]) else { throw Failure(description: "mark: \(rule)") }
                    k += 2
                    var unequal = false
                    if w[k] == "!=" { unequal = true; k += 1 } else if w[k] == "==" { k += 1 }
                    guard k < w.count, let cmp = Self.number(w[k]) else { throw Failure(description: "mark: \(rule)") }
                    let masked = p.mark & v
                    if (unequal ? masked != cmp : masked == cmp) == false { return [(p, "next")] }
                    i = k + 1
                }
            case "numgen":
                // numgen random mod N vmap { i : verdict, … }: a way per element.
                guard i + 4 < w.count, let n = Int(w[i + 3]), n > 0, w[i + 4] == "vmap", i + 5 < w.count else { throw Failure(description: "numgen: \(rule)") }
                hop()
                var ways: [(Packet, String)] = []
                for e in members(w[i + 5]) {
                    let kv = e.components(separatedBy: " : ")
                    guard kv.count == 2 else { continue }
                    var q = p
                    q.probability *= 1 / Double(n)
                    ways.append((q, kv[1].trimmingCharacters(in: .whitespaces)))
                }
                return ways
            case "dnat":
                hop()
                // dnat to A:P, or dnat ip addr . port to numgen random mod N map { i : A . P, … }
                if i + 2 < w.count, w[i + 1] == "to" {
                    // A:P, or [A]:P for IPv6.
                    let target = w[i + 2]
                    guard let colon = target.lastIndex(of: ":"),
                          let a = Self.address(target[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))[...]),
                          let port = Int(target[target.index(after: colon)...]) else {
                        throw Failure(description: "dnat to: \(rule)")
                    }
                    p.translated = (a, port)
                    return [(p, "accept")]
                }
                // The key: selectors and one `numgen random mod N`, joined by "."; then `map`.
                guard let to = w.firstIndex(of: "to"), let mapAt = w[to...].firstIndex(of: "map"), mapAt + 1 < w.count else {
                    throw Failure(description: "dnat: \(rule)")
                }
                var items: [String?] = []   // a selector's value, or nil for the random index
                var n = 0
                var k = to + 1
                while k < mapAt {
                    if w[k] == "." { k += 1; continue }
                    if w[k] == "numgen", k + 3 < mapAt, let mod = Int(w[k + 3]), mod > 0 {
                        n = mod
                        items.append(nil)
                        k += 4
                    } else if k + 1 < mapAt, let v = Self.value("\(w[k]) \(w[k + 1])", p) {
                        items.append(v)
                        k += 2
                    } else {
                        throw Failure(description: "dnat: \(rule)")
                    }
                }
                guard n > 0 else { throw Failure(description: "dnat without numgen: \(rule)") }
                var ways: [(Packet, String)] = []
                for index in 0..<n {
                    let key = items.map { $0 ?? String(index) }
                    guard let entry = matching(w[mapAt + 1], key).first else { continue }
                    let kv = entry.components(separatedBy: " : ")
                    guard kv.count == 2 else { continue }
                    let value = kv[1]
                    let target = value.components(separatedBy: " . ")
                    guard target.count == 2, let a = Self.address(Substring(target[0].trimmingCharacters(in: .whitespaces))),
                          let port = Int(target[1].trimmingCharacters(in: .whitespaces)) else { continue }
                    var q = p
                    q.probability *= 1 / Double(n)
                    q.translated = (a, port)
                    ways.append((q, "accept"))
                }
                return ways
            case "masquerade":
                hop()
                p.masqueraded = true
                return [(p, "accept")]
            case "update":
                // update @set { ip saddr }: affinity, remembered for later connections.
                hop()
                i += 3
            case "jump", "goto":
                guard i + 1 < w.count else { throw Failure(description: "\(word) without a chain: \(rule)") }
                hop()
                return [(p, "\(word) \(w[i + 1])")]
            case "accept", "drop", "reject", "return":
                hop()
                return [(p, word)]
            case "counter", "fully-random", "random", "persistent":
                i += 1
            default:
                // Something this walk does not read: the rule is passed over.
                return [(p, "next")]
            }
        }
        if hopped { return [(p, "next")] }
        hop()
        return [(p, "next")]
    }
}
