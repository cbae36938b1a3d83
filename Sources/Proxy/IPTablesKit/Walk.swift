/// A packet walked through an iptables ruleset (`iptables-save` text, or the `iptables-restore`
/// input `render` writes, whose `-I CHAIN 1` lines insert): chain by chain, rule by rule, as the
/// kernel's nat and filter tables would take a new connection, splitting where a rule matches
/// at random (`-m statistic`). Big chains (KUBE-SERVICES, KUBE-NODEPORTS) are indexed by the
/// destination address and port their rules name, so a packet is matched against the few rules
/// that can take it, in their order, not against every Service.
public struct IPTablesWalk: Sendable {
    /// An IPv4 or IPv6 address as a number (IPv4 in the low 32 bits); a walk takes one family,
    /// as an `iptables-save` or an `ip6tables-save` holds one.
    public struct Address: Hashable, Sendable, Comparable, CustomStringConvertible {
        public var value: UInt128
        public var v6: Bool
        public init(v4: UInt32) { value = UInt128(v4); v6 = false }
        public init(v6 value: UInt128) { self.value = value; v6 = true }
        /// The loopback range: 127.0.0.0/8, or ::1.
        public var isLoopback: Bool { v6 ? value == 1 : value >> 24 == 127 }
        public static func < (a: Address, b: Address) -> Bool { (a.v6 ? 1 : 0, a.value) < (b.v6 ? 1 : 0, b.value) }
        /// The address with the bits outside `mask` cleared.
        public func masked(_ mask: UInt128) -> Address { var a = self; a.value &= mask; return a }
        /// The mask of a prefix of `bits` for this family.
        public func mask(_ bits: Int) -> UInt128 { IPTablesWalk.mask(bits, v6: v6) }
        public var description: String { IPTablesWalk.text(self) }
    }

    /// A prefix of `bits` as a mask, 32 or 128 bits wide.
    public static func mask(_ bits: Int, v6: Bool) -> UInt128 {
        let width = v6 ? 128 : 32
        guard bits > 0 else { return 0 }
        let all: UInt128 = v6 ? ~0 : UInt128(UInt32.max)
        return (all << UInt128(width - min(bits, width))) & all
    }

    public struct Packet: Sendable {
        public var source: Address, sourcePort: Int, destination: Address, port: Int, proto: String
        public var mark: UInt32 = 0
        /// conntrack's states for `--ctstate`: NEW, and DNAT once translated.
        public var states: Set<String> = ["NEW"]
        public var masqueraded = false
        public var probability = 1.0
        public var hops: [(table: String, chain: String, rule: String)] = []
        /// Where it was sent, before any translation.
        public let sentTo: (address: Address, port: Int)
        public init(source: Address, sourcePort: Int, destination: Address, port: Int, proto: String) {
            self.source = source
            self.sourcePort = sourcePort
            self.destination = destination
            self.port = port
            self.proto = proto
            sentTo = (destination, port)
        }
    }

    /// How a way through the tables ended.
    public enum End: Sendable, Equatable {
        case accept, drop, reject, fallThrough

        /// As `explain` says it: accepted (also when nothing decided), dropped, rejected.
        public var verdict: String {
            switch self {
            case .accept, .fallThrough: "accepted"
            case .drop: "dropped"
            case .reject: "rejected"
            }
        }
    }

    public struct Outcome: Sendable {
        public var packet: Packet
        public var end: End

        public init(packet: Packet, end: End) {
            self.packet = packet
            self.end = end
        }

        /// Where a destination NAT sent the packet (`10.244.1.2:8080`, `[fd00::2]:8080`), nil when it was not translated.
        public var translatedTo: String? {
            guard packet.destination != packet.sentTo.address || packet.port != packet.sentTo.port else { return nil }
            let a = IPTablesWalk.text(packet.destination)
            return packet.destination.v6 ? "[\(a)]:\(packet.port)" : "\(a):\(packet.port)"
        }
    }

    /// Every way a new connection from `source` to `destination:port` can go through `ruleset`,
    /// the addresses given as text (`local`: the node's own).
    /// - Throws: `ParseError` for a ruleset it cannot read or an address that is not one.
    public static func walk(_ ruleset: String, source: String, sourcePort: Int, destination: String, port: Int, proto: String,
                            fromNode: Bool, local: [String]) throws -> [Outcome] {
        let w: IPTablesWalk
        do { w = try IPTablesWalk(ruleset) } catch { throw ParseError(description: "the ruleset: \(error)") }
        return try w.walk(source: source, sourcePort: sourcePort, destination: destination, port: port, proto: proto, fromNode: fromNode, local: local)
    }

    /// The same through rules already read.
    /// - Throws: `ParseError` for an address that is not one, or addresses of two families.
    public func walk(source: String, sourcePort: Int, destination: String, port: Int, proto: String, fromNode: Bool, local: [String]) throws -> [Outcome] {
        var w = self
        w.local = Set(local.compactMap(Self.address))
        guard let src = Self.address(source), let dst = Self.address(destination) else {
            throw ParseError(description: "explain takes IPv4 or IPv6 addresses (\(source), \(destination))")
        }
        guard src.v6 == dst.v6 else {
            throw ParseError(description: "the source \(source) and the destination \(destination) are of different families")
        }
        return w.walk(Packet(source: src, sourcePort: sourcePort, destination: dst, port: port, proto: proto), fromNode: fromNode)
    }

    struct Rule {
        var text: String
        var matches: [Match]
        var target: String
        var goto: Bool
        var args: [String: String]
    }

    enum Match {
        case source(Address, UInt128, Bool), destination(Address, UInt128, Bool), proto(String, Bool)
        case dport([Int], Bool), sport([Int], Bool), inInterface(String, Bool), outInterface(String, Bool)
        case addrType(dst: Bool, String, Bool), mark(UInt32, UInt32, Bool), state(Set<String>, Bool)
        case random(Double)
        /// `-m recent --rcheck`: a client seen before (session affinity); a new client is not.
        case recent(Bool)
        /// `-m set --match-set NAME dst,dst`: the packet's addresses and ports in an ipset.
        case set(String, [Substring], Bool)
        /// `-m physdev --physdev-is-in`: the packet came in through a bridge port (walked as a
        /// packet that did not: from outside, or from the node).
        case physdevIn(Bool)
    }

    /// A chain: where its rules' lines are in the text, in order, and (for a long chain) which
    /// of them can take a given destination address or port. A rule is read from its line when
    /// a packet gets to it.
    struct Chain {
        var policy: String?
        var lines: [Range<Int>] = []
        var byDestination: [Address: [Int]] = [:]
        var byPort: [Int: [Int]] = [:]
        var others: [Int] = []
    }

    /// A table's chains, in the order they were first named, and their places by name.
    struct Table {
        var chains: [Chain] = []
        var place: [String: Int] = [:]
        subscript(_ name: String) -> Chain? { place[name].map { chains[$0] } }
        /// The place of a chain, added if new.
        mutating func chain(_ name: String) -> Int {
            if let k = place[name] { return k }
            chains.append(Chain())
            place[name] = chains.count - 1
            return chains.count - 1
        }
    }

    var tables: [String: Table] = [:]
    /// The ruleset's text, which the chains' lines point into.
    let text: [UInt8]
    /// Chains at least this long are indexed.
    static let indexFrom = 32
    /// Addresses `--dst-type LOCAL` and `--src-type LOCAL` take as the node's (127.0.0.0/8 always).
    public var local: Set<Address> = []
    /// Whether long chains are looked up by their index (off: every rule is tried, for the benchmark's baseline).
    public var indexed = true
    /// The ipsets `-m set` rules match on, by name (a set not here has no members).
    public var sets: [String: IPSetMembers] = [:]

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ text: String) throws {
        self.text = Array(text.utf8)
        try self.text.withUnsafeBufferPointer { try self.load($0) }
        for (t, table) in tables {
            for (k, c) in table.chains.enumerated() where c.lines.count >= Self.indexFrom {
                tables[t]?.chains[k] = self.text.withUnsafeBufferPointer { Self.index(c, $0) }
            }
        }
    }

    /// Reads the text line by line, as bytes (a 10,000-Service ruleset is 430,000 lines): each
    /// rule's line goes to its chain; the rules themselves are read when walked.
    mutating func load(_ b: UnsafeBufferPointer<UInt8>) throws {
        var table = ""
        var start = 0, n = 0
        // Room for every chain declared (`:NAME` lines), so the names' table is not regrown.
        var declared = 0
        for k in 1..<max(b.count, 1) where b[k] == 58 && b[k - 1] == 10 { declared += 1 }
        // The table being read (put back in `tables` when the next begins and at the end).
        var chains = Table()
        chains.place.reserveCapacity(declared)
        var current = -1, lastChainBytes = 0..<0
        defer { if !table.isEmpty { tables[table] = chains } }
        while start < b.count {
            var end = start, quotes = 0
            while end < b.count && b[end] != 10 {
                if b[end] == 34 { quotes += 1 } else if b[end] == 92 { end += 1 }   // a quote, or \ and what it escapes
                end += 1
            }
            end = min(end, b.count)
            n += 1
            if quotes % 2 == 1 { throw ParseError(description: "line \(n): an unclosed quote") }
            defer { start = end + 1 }
            var s = start
            while s < end && (b[s] == 32 || b[s] == 9) { s += 1 }
            var e = end
            while e > s && (b[e - 1] == 32 || b[e - 1] == 13) { e -= 1 }
            guard s < e, b[s] != 35 else { continue }   // empty, or a # comment
            let line = UnsafeBufferPointer(rebasing: b[s..<e])
            if b[s] == 42 {   // *table
                if !table.isEmpty { tables[table] = chains }
                table = String(decoding: line.dropFirst(), as: UTF8.self)
                chains = tables[table] ?? Table()
                chains.place.reserveCapacity(declared)
                current = -1
                continue
            }
            if b[s] == 58 {   // :CHAIN POLICY [counters]
                var i = s + 1
                while i < e && b[i] != 32 { i += 1 }
                let name = String(decoding: UnsafeBufferPointer(rebasing: b[(s + 1)..<i]), as: UTF8.self)
                while i < e && b[i] == 32 { i += 1 }
                var j = i
                while j < e && b[j] != 32 { j += 1 }
                let policy = String(decoding: UnsafeBufferPointer(rebasing: b[i..<j]), as: UTF8.self)
                chains.chains[chains.chain(name)].policy = policy.isEmpty || policy == "-" ? nil : policy
                current = -1
                continue
            }
            if line.elementsEqual("COMMIT".utf8) { continue }
            guard !table.isEmpty else { throw ParseError(description: "line \(n): a rule before any *table line") }
            // -A CHAIN …, -I CHAIN [N] …
            var i = s
            while i < e && b[i] != 32 { i += 1 }
            let op = UnsafeBufferPointer(rebasing: b[s..<i])
            let insert = op.elementsEqual("-I".utf8) || op.elementsEqual("--insert".utf8)
            guard insert || op.elementsEqual("-A".utf8) || op.elementsEqual("--append".utf8) else {
                throw ParseError(description: "line \(n): not a rule: \(String(decoding: line, as: UTF8.self))")
            }
            while i < e && b[i] == 32 { i += 1 }
            let nameStart = i
            while i < e && b[i] != 32 { i += 1 }
            guard nameStart < i else { throw ParseError(description: "line \(n): a rule without its chain") }
            // Consecutive rules are often of one chain: its name is decoded once for them.
            if current < 0 || !b[nameStart..<i].elementsEqual(b[lastChainBytes]) {
                current = chains.chain(String(decoding: UnsafeBufferPointer(rebasing: b[nameStart..<i]), as: UTF8.self))
                lastChainBytes = nameStart..<i
            }
            while i < e && b[i] == 32 { i += 1 }
            var position = Int.max
            if insert {
                var j = i, p = 0
                while j < e && b[j] >= 48 && b[j] <= 57 { p = p * 10 + Int(b[j] - 48); j += 1 }
                if j > i && (j == e || b[j] == 32) {
                    position = p
                    i = j
                    while i < e && b[i] == 32 { i += 1 }
                } else {
                    position = 1
                }
            }
            // In place: a copy of the chain per rule would make a long chain's load quadratic.
            if insert {
                chains.chains[current].lines.insert(i..<e, at: min(max(position - 1, 0), chains.chains[current].lines.count))
            } else {
                chains.chains[current].lines.append(i..<e)
            }
        }
    }

    /// A long chain's index: the rules naming one destination address (`-d A` or `-d A/32`,
    /// not negated), those naming one destination port without an address, and the others.
    static func index(_ chain: Chain, _ b: UnsafeBufferPointer<UInt8>) -> Chain {
        var c = chain
        for (k, r) in c.lines.enumerated() {
            if let d = find(b, in: r, option: "-d"), let a = address(UnsafeBufferPointer(rebasing: b[d]), hostMask: true) {
                c.byDestination[a, default: []].append(k)
            } else if let d = find(b, in: r, option: "--dport"), let p = Int(String(decoding: UnsafeBufferPointer(rebasing: b[d]), as: UTF8.self)) {
                c.byPort[p, default: []].append(k)
            } else {
                c.others.append(k)
            }
        }
        return c
    }

    /// `a.b.c.d` (or an IPv6 address) read from bytes, and `a.b.c.d/32` (`…/128`) when
    /// `hostMask`; nil for anything else (a wider range).
    static func address(_ v: UnsafeBufferPointer<UInt8>, hostMask: Bool) -> Address? {
        if v.contains(58) { return address6(v, hostMask: hostMask) }
        var value: UInt32 = 0, octet: UInt32 = 0, dots = 0, digits = 0, i = 0
        while i < v.count {
            let c = v[i]
            if c >= 48 && c <= 57 {
                octet = octet * 10 + UInt32(c - 48)
                digits += 1
                guard octet <= 255, digits <= 3 else { return nil }
            } else if c == 46 {
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | octet; octet = 0; digits = 0; dots += 1
            } else if c == 47 {
                guard hostMask, v.count - i == 3, v[i + 1] == 51, v[i + 2] == 50 else { return nil }   // "/32"
                break
            } else {
                return nil
            }
            i += 1
        }
        guard dots == 3, digits > 0 else { return nil }
        return Address(v4: value << 8 | octet)
    }

    /// An IPv6 address in any of its text forms (`::` once, an IPv4 tail), and `…/128` when `hostMask`.
    static func address6(_ v: UnsafeBufferPointer<UInt8>, hostMask: Bool) -> Address? {
        var end = v.count
        if let slash = v.firstIndex(of: 47) {
            guard hostMask, v.count - slash == 4, v[slash + 1] == 49, v[slash + 2] == 50, v[slash + 3] == 56 else { return nil }   // "/128"
            end = slash
        }
        var head: [UInt16] = [], tail: [UInt16] = []
        var gap = false
        var i = 0
        if end >= 2 && v[0] == 58 && v[1] == 58 { gap = true; i = 2 } else if end >= 1 && v[0] == 58 { return nil }
        while i < end {
            var group: UInt32 = 0, digits = 0
            let start = i
            while i < end, let d = hexDigit(v[i]) {
                group = group << 4 | UInt32(d)
                digits += 1
                i += 1
                guard digits <= 4 else { return nil }
            }
            if i < end && v[i] == 46 {   // an IPv4 tail: a.b.c.d as the last two groups
                guard let four = address(UnsafeBufferPointer(rebasing: v[start..<end]), hostMask: false), !four.v6 else { return nil }
                let x = UInt32(four.value)
                if gap { tail += [UInt16(x >> 16), UInt16(x & 0xffff)] } else { head += [UInt16(x >> 16), UInt16(x & 0xffff)] }
                i = end
                break
            }
            guard digits > 0 else { return nil }
            if gap { tail.append(UInt16(group)) } else { head.append(UInt16(group)) }
            if i == end { break }
            guard v[i] == 58 else { return nil }
            i += 1
            if i < end && v[i] == 58 {
                guard !gap else { return nil }
                gap = true
                i += 1
            } else if i == end {
                return nil
            }
        }
        let groups = head.count + tail.count
        guard gap ? groups <= 7 : groups == 8 else { return nil }
        var value: UInt128 = 0
        for g in head + [UInt16](repeating: 0, count: 8 - groups) + tail { value = value << 16 | UInt128(g) }
        return Address(v6: value)
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 97...102: c - 87
        case 65...70: c - 55
        default: nil
        }
    }

    /// The value of `option` in a line, unless the option is negated (`! -d …`).
    static func find(_ b: UnsafeBufferPointer<UInt8>, in r: Range<Int>, option: StaticString) -> Range<Int>? {
        let o = UnsafeBufferPointer(start: option.utf8Start, count: option.utf8CodeUnitCount)
        var i = r.lowerBound
        let first = o[0]
        while i + o.count < r.upperBound {
            if b[i] == first && (i == r.lowerBound || b[i - 1] == 32) && b[i + o.count] == 32 && b[i..<(i + o.count)].elementsEqual(o) {
                if i >= r.lowerBound + 2 && b[i - 2] == 33 { return nil }
                var v = i + o.count + 1
                while v < r.upperBound && b[v] == 32 { v += 1 }
                var w = v
                while w < r.upperBound && b[w] != 32 { w += 1 }
                return v < w ? v..<w : nil
            }
            i += 1
        }
        return nil
    }

    /// The rule on a chain's line.
    func rule(_ chain: Chain, _ k: Int) -> Rule? {
        text.withUnsafeBufferPointer { b in
            let line = UnsafeBufferPointer(rebasing: b[chain.lines[k]])
            guard let words = try? Self.words(line) else { return nil }
            return try? Self.rule(words, text: String(decoding: line, as: UTF8.self))
        }
    }

    /// A line's words, `"…"` as one (with `\"` inside); a comment's text is not read (it only
    /// names the rule).
    static func words(_ line: UnsafeBufferPointer<UInt8>) throws -> [String] {
        var out: [String] = []
        var i = 0
        var skipNext = false
        while i < line.count {
            while i < line.count && (line[i] == 32 || line[i] == 9) { i += 1 }
            guard i < line.count else { break }
            var word: String
            if line[i] == 34 {   // a quoted word
                var bytes: [UInt8] = []
                i += 1
                var closed = false
                while i < line.count {
                    let c = line[i]
                    if c == 92, i + 1 < line.count { bytes.append(line[i + 1]); i += 2; continue }
                    if c == 34 { closed = true; i += 1; break }
                    bytes.append(c)
                    i += 1
                }
                guard closed else { throw ParseError(description: "an unclosed quote in: \(String(decoding: line, as: UTF8.self))") }
                word = skipNext ? "" : String(decoding: bytes, as: UTF8.self)
            } else {
                let s = i
                while i < line.count && line[i] != 32 && line[i] != 9 { i += 1 }
                word = skipNext ? "" : String(decoding: UnsafeBufferPointer(rebasing: line[s..<i]), as: UTF8.self)
            }
            skipNext = word == "--comment"
            out.append(word)
        }
        return out
    }

    /// `a.b.c.d[/n]` (or an IPv6 prefix) as an address and mask.
    public static func cidr(_ s: String) -> (Address, UInt128)? {
        let parts = s.split(separator: "/", maxSplits: 1)
        guard let a = address(String(parts[0])) else { return nil }
        let width = a.v6 ? 128 : 32
        var bits = width
        if parts.count == 2 {
            if let b = Int(parts[1]), (0...width).contains(b) { bits = b }
            else if let m = address(String(parts[1])), m.v6 == a.v6 { return (a.masked(m.value), m.value) }
            else { return nil }
        }
        let mask = a.mask(bits)
        return (a.masked(mask), mask)
    }

    public static func address(_ s: String) -> Address? {
        var s = s
        return s.withUTF8 { address($0, hostMask: false) }
    }

    /// The address as text: dotted for IPv4, RFC 5952's form for IPv6 (the longest run of zero
    /// groups as `::`, lowercase hex).
    public static func text(_ a: Address) -> String {
        guard a.v6 else {
            let v = UInt32(a.value)
            return "\(v >> 24).\(v >> 16 & 255).\(v >> 8 & 255).\(v & 255)"
        }
        let groups = (0..<8).map { UInt16(truncatingIfNeeded: a.value >> UInt128(112 - 16 * $0)) }
        var best = (start: -1, count: 0), run = (start: -1, count: 0)
        for (k, g) in groups.enumerated() {
            if g == 0 {
                run = run.start < 0 ? (k, 1) : (run.start, run.count + 1)
                if run.count > best.count { best = run }
            } else {
                run = (-1, 0)
            }
        }
        let hex = groups.map { String($0, radix: 16) }
        guard best.count >= 2 else { return hex.joined(separator: ":") }
        let before = hex[..<best.start].joined(separator: ":"), after = hex[(best.start + best.count)...].joined(separator: ":")
        return before + "::" + after
    }

    static func number(_ s: String) -> UInt32? {
        s.hasPrefix("0x") ? UInt32(s.dropFirst(2), radix: 16) : UInt32(s)
    }

    static func valueMask(_ s: String) -> (UInt32, UInt32)? {
        let p = s.split(separator: "/", maxSplits: 1).map(String.init)
        guard let v = number(p[0]) else { return nil }
        return (v, p.count == 2 ? number(p[1]) ?? ~0 : ~0)
    }

    static func ports(_ s: String) -> [Int] {
        s.split(separator: ",").flatMap { part -> [Int] in
            let r = part.split(separator: ":").compactMap { Int($0) }
            return r.count == 2 && r[0] <= r[1] && r[1] - r[0] < 65536 ? Array(r[0]...r[1]) : r
        }
    }

    static func rule(_ w: [String], text: String) throws -> Rule {
        var matches: [Match] = [], target = "", goto = false, args: [String: String] = [:]
        var negate = false, probability: Double?
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < w.count else { throw ParseError(description: "\(w[i - 1]) without a value in: \(text)") }
            return w[i]
        }
        while i < w.count {
            let o = w[i]
            if o == "!" { negate = true; i += 1; continue }
            if !target.isEmpty && o.hasPrefix("--") {
                // The target's own options.
                let next = i + 1 < w.count && !w[i + 1].hasPrefix("-") ? w[i + 1] : ""
                args[o] = next
                i += next.isEmpty ? 1 : 2
                continue
            }
            switch o {
            case "-s", "--source", "--src":
                guard let c = cidr(try value()) else { throw ParseError(description: "a bad address in: \(text)") }
                matches.append(.source(c.0, c.1, negate))
            case "-d", "--destination", "--dst":
                guard let c = cidr(try value()) else { throw ParseError(description: "a bad address in: \(text)") }
                matches.append(.destination(c.0, c.1, negate))
            case "-p", "--protocol": matches.append(.proto(try value().lowercased(), negate))
            case "-i", "--in-interface": matches.append(.inInterface(try value(), negate))
            case "-o", "--out-interface": matches.append(.outInterface(try value(), negate))
            case "--dport", "--destination-port", "--dports", "--destination-ports":
                let ps = ports(try value())
                matches.append(.dport(ps, negate))
            case "--sport", "--source-port", "--sports", "--source-ports": matches.append(.sport(ports(try value()), negate))
            case "--dst-type": matches.append(.addrType(dst: true, try value(), negate))
            case "--src-type": matches.append(.addrType(dst: false, try value(), negate))
            case "--mark":
                guard let vm = valueMask(try value()) else { throw ParseError(description: "a bad mark in: \(text)") }
                matches.append(.mark(vm.0, vm.1, negate))
            case "--ctstate", "--state": matches.append(.state(Set(try value().split(separator: ",").map(String.init)), negate))
            case "--probability": probability = Double(try value())
            case "--rcheck", "--update": matches.append(.recent(negate))
            case "--match-set":
                let name = try value()
                matches.append(.set(name, try value().split(separator: ","), negate))
            case "--physdev-is-in": matches.append(.physdevIn(negate))
            case "-j", "--jump": target = try value()
            case "-g", "--goto": target = try value(); goto = true
            case "-m", "--match", "--comment", "--mode", "--name", "--seconds", "--mask", "--nfacct-name", "--hitcount", "--limit", "--limit-burst":
                _ = try value()
            default: break   // flags without a value (--rsource, --reap, --set): nothing to match
            }
            negate = false
            i += 1
        }
        if let p = probability { matches.append(.random(p)) }
        return Rule(text: text, matches: matches, target: target, goto: goto, args: args)
    }

    // MARK: walking

    enum Verdict { case yes, no, random(Double) }

    func test(_ r: Rule, _ p: Packet, fromNode: Bool) -> Verdict {
        var chance: Double?
        for m in r.matches {
            let ok: Bool
            switch m {
            case .source(let a, let mask, let neg): ok = (p.source.masked(mask) == a) != neg
            case .destination(let a, let mask, let neg): ok = (p.destination.masked(mask) == a) != neg
            case .proto(let pr, let neg): ok = (pr == "all" || pr == p.proto) != neg
            case .dport(let ps, let neg): ok = ps.contains(p.port) != neg
            case .sport(let ps, let neg): ok = ps.contains(p.sourcePort) != neg
            case .inInterface(let name, let neg):
                // Arriving packets come in on an outside interface; the node's own have none.
                ok = (!fromNode && name != "lo" && !name.hasPrefix("kube-")) != neg
            case .outInterface(let name, let neg): ok = ((name == "lo") == p.destination.isLoopback) != neg
            case .addrType(let dst, let type, let neg):
                let a = dst ? p.destination : p.source
                ok = (type == "LOCAL" ? isLocal(a) : false) != neg
            case .mark(let v, let mask, let neg): ok = (p.mark & mask == v) != neg
            case .state(let s, let neg): ok = !s.isDisjoint(with: p.states) != neg
            case .random(let pr): chance = pr; ok = true
            case .recent(let neg): ok = neg
            case .set(let name, let flags, let neg): ok = (sets[name]?.contains(p, flags) ?? false) != neg
            case .physdevIn(let neg): ok = neg
            }
            if !ok { return .no }
        }
        return chance.map { .random($0) } ?? .yes
    }

    /// Whether `a` is the node's own (`--dst-type LOCAL`): loopback, or one of `local`.
    public func isLocal(_ a: Address) -> Bool { a.isLoopback || local.contains(a) }

    /// The rules of a chain that can take `p`, in order.
    func candidates(_ c: Chain, _ p: Packet) -> [Int] {
        if c.lines.count < Self.indexFrom || !indexed { return Array(c.lines.indices) }
        var out = c.others
        out += c.byDestination[p.destination] ?? []
        out += c.byPort[p.port] ?? []
        return out.sorted()
    }

    /// Runs `chain` of `table` on the packet: every way it can end.
    func run(_ table: String, _ chainName: String, _ p: Packet, fromNode: Bool, depth: Int = 0) -> [Outcome] {
        guard depth < 64, let chain = tables[table]?[chainName] else { return [Outcome(packet: p, end: .fallThrough)] }
        let order = candidates(chain, p)
        return from(order[...], chain, table, chainName, p, fromNode: fromNode, depth: depth)
    }

    func from(_ order: ArraySlice<Int>, _ chain: Chain, _ table: String, _ chainName: String, _ packet: Packet, fromNode: Bool, depth: Int) -> [Outcome] {
        let p = packet
        var rest = order
        while let i = rest.first {
            rest = rest.dropFirst()
            guard let r = rule(chain, i) else { continue }
            switch test(r, p, fromNode: fromNode) {
            case .no: continue
            case .yes:
                return apply(r, p, rest, chain, table, chainName, fromNode: fromNode, depth: depth)
            case .random(let pr):
                var taken = p, skipped = p
                taken.probability *= pr
                skipped.probability *= 1 - pr
                var out: [Outcome] = []
                if pr > 0 { out += apply(r, taken, rest, chain, table, chainName, fromNode: fromNode, depth: depth) }
                if pr < 1 { out += from(rest, chain, table, chainName, skipped, fromNode: fromNode, depth: depth) }
                return out
            }
        }
        return [Outcome(packet: p, end: .fallThrough)]
    }

    func apply(_ r: Rule, _ packet: Packet, _ rest: ArraySlice<Int>, _ chain: Chain, _ table: String, _ chainName: String,
               fromNode: Bool, depth: Int) -> [Outcome] {
        var p = packet
        p.hops.append((table, chainName, r.text))
        switch r.target {
        case "ACCEPT": return [Outcome(packet: p, end: .accept)]
        case "DROP": return [Outcome(packet: p, end: .drop)]
        case "REJECT": return [Outcome(packet: p, end: .reject)]
        case "RETURN": return [Outcome(packet: p, end: .fallThrough)]
        case "DNAT":
            if let to = r.args["--to-destination"] {
                // a.b.c.d[:port], [v6][:port], or a bare IPv6 address.
                var host = Substring(to), port: Substring?
                if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
                    let after = host[host.index(after: close)...]
                    port = after.hasPrefix(":") ? after.dropFirst() : nil
                    host = host[host.index(after: host.startIndex)..<close]
                } else if host.filter({ $0 == ":" }).count == 1, let colon = host.firstIndex(of: ":") {
                    port = host[host.index(after: colon)...]
                    host = host[..<colon]
                }
                if let a = Self.address(String(host)) { p.destination = a }
                if let port, let n = Int(port) { p.port = n }
                p.states.insert("DNAT")
            }
            return [Outcome(packet: p, end: .accept)]
        case "REDIRECT":
            // To the node itself, on the given port: loopback from the node, else the address it came to.
            if let to = r.args["--to-ports"], let port = Int(to.split(separator: "-")[0]) {
                let loopback = p.destination.v6 ? Address(v6: 1) : Address(v4: 127 << 24 | 1)
                if fromNode { p.destination = loopback } else if !isLocal(p.destination) { p.destination = local.sorted().first ?? loopback }
                p.port = port
                p.states.insert("DNAT")
            }
            return [Outcome(packet: p, end: .accept)]
        case "MASQUERADE", "SNAT":
            p.masqueraded = true
            return [Outcome(packet: p, end: .accept)]
        case "MARK":
            if let v = r.args["--or-mark"].flatMap(Self.number) { p.mark |= v }
            else if let v = r.args["--xor-mark"].flatMap(Self.number) { p.mark ^= v }
            else if let vm = (r.args["--set-xmark"] ?? r.args["--set-mark"]).flatMap(Self.valueMask) { p.mark = (p.mark & ~vm.1) ^ vm.0 }
            return from(rest, chain, table, chainName, p, fromNode: fromNode, depth: depth)
        case "", "LOG", "NFLOG", "CONNMARK", "TRACE":
            return from(rest, chain, table, chainName, p, fromNode: fromNode, depth: depth)
        default:
            guard tables[table]?[r.target] != nil else {
                return from(rest, chain, table, chainName, p, fromNode: fromNode, depth: depth)
            }
            var out: [Outcome] = []
            for sub in run(table, r.target, p, fromNode: fromNode, depth: depth + 1) {
                if sub.end == .fallThrough {
                    // A goto returns to this chain's caller; a jump comes back here.
                    out += r.goto ? [sub] : from(rest, chain, table, chainName, sub.packet, fromNode: fromNode, depth: depth)
                } else {
                    out.append(sub)
                }
            }
            return out
        }
    }

    /// A built-in chain run to its end: its policy where nothing decided. Ways that already
    /// ended (dropped, rejected) pass through untouched.
    public func hook(_ table: String, _ chain: String, _ packets: [Outcome], fromNode: Bool) -> [Outcome] {
        packets.flatMap { o -> [Outcome] in
            guard o.end == .accept || o.end == .fallThrough else { return [o] }
            return run(table, chain, o.packet, fromNode: fromNode).map { r in
                r.end == .fallThrough ? Outcome(packet: r.packet, end: tables[table]?[chain]?.policy == "DROP" ? .drop : .accept) : r
            }
        }
    }

    /// Every way a new connection's first packet can go: through nat PREROUTING, then filter
    /// INPUT (to the node) or FORWARD and nat POSTROUTING, or, sent by the node, through nat and
    /// filter OUTPUT and nat POSTROUTING (then filter INPUT when it stays on the node).
    public func walk(_ packet: Packet, fromNode: Bool) -> [Outcome] {
        let start = [Outcome(packet: packet, end: .fallThrough)]
        if fromNode {
            var s = hook("nat", "OUTPUT", start, fromNode: true)
            s = hook("filter", "OUTPUT", s, fromNode: true)
            s = hook("nat", "POSTROUTING", s, fromNode: true)
            return s.flatMap { o in isLocal(o.packet.destination) ? hook("filter", "INPUT", [o], fromNode: true) : [o] }
        }
        let s = hook("nat", "PREROUTING", start, fromNode: false)
        return s.flatMap { o -> [Outcome] in
            if isLocal(o.packet.destination) { return hook("filter", "INPUT", [o], fromNode: false) }
            return hook("nat", "POSTROUTING", hook("filter", "FORWARD", [o], fromNode: false), fromNode: false)
        }
    }
}
