/// A packet walked through an iptables ruleset (`iptables-save` text, or the `iptables-restore`
/// input `render` writes, whose `-I CHAIN 1` lines insert): chain by chain, rule by rule, as the
/// kernel's nat and filter tables would take a new connection, splitting where a rule matches
/// at random (`-m statistic`). Big chains (KUBE-SERVICES, KUBE-NODEPORTS) are indexed by the
/// destination address and port their rules name, so a packet is matched against the few rules
/// that can take it, in their order, not against every Service.
public struct IPTablesWalk: Sendable {
    public struct Packet: Sendable {
        public var source: UInt32, sourcePort: Int, destination: UInt32, port: Int, proto: String
        public var mark: UInt32 = 0
        /// conntrack's states for `--ctstate`: NEW, and DNAT once translated.
        public var states: Set<String> = ["NEW"]
        public var masqueraded = false
        public var probability = 1.0
        public var hops: [(table: String, chain: String, rule: String)] = []
        public init(source: UInt32, sourcePort: Int, destination: UInt32, port: Int, proto: String) {
            self.source = source
            self.sourcePort = sourcePort
            self.destination = destination
            self.port = port
            self.proto = proto
        }
    }

    /// How a way through the tables ended.
    public enum End: Sendable, Equatable { case accept, drop, reject, fallThrough }

    public struct Outcome: Sendable {
        public var packet: Packet
        public var end: End
    }

    struct Rule {
        var text: String
        var matches: [Match]
        var target: String
        var goto: Bool
        var args: [String: String]
        /// What the index keys it by: a single destination address, or (without one) a port.
        var destination: UInt32?
        var port: Int?
    }

    enum Match {
        case source(UInt32, UInt32, Bool), destination(UInt32, UInt32, Bool), proto(String, Bool)
        case dport([Int], Bool), sport([Int], Bool), inInterface(String, Bool), outInterface(String, Bool)
        case addrType(dst: Bool, String, Bool), mark(UInt32, UInt32, Bool), state(Set<String>, Bool)
        case random(Double)
        /// `-m recent --rcheck`: a client seen before (session affinity); a new client is not.
        case recent(Bool)
    }

    struct Chain {
        var policy: String?
        var rules: [Rule] = []
        var inserted = 0
        var byDestination: [UInt32: [Int]] = [:]
        var byPort: [Int: [Int]] = [:]
        var others: [Int] = []
    }

    var tables: [String: [String: Chain]] = [:]
    /// Addresses `--dst-type LOCAL` and `--src-type LOCAL` take as the node's (127.0.0.0/8 always).
    public var local: Set<UInt32> = []

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ text: String) throws {
        var table = ""
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.drop { $0 == " " }
            if line.isEmpty || line.hasPrefix("#") || line == "COMMIT" { continue }
            if line.hasPrefix("*") { table = String(line.dropFirst()); continue }
            if line.hasPrefix(":") {
                let f = line.dropFirst().split(separator: " ")
                guard let name = f.first else { continue }
                tables[table, default: [:]][String(name), default: Chain()].policy = f.count > 1 && f[1] != "-" ? String(f[1]) : nil
                continue
            }
            guard !table.isEmpty else { throw ParseError(description: "line \(n + 1): a rule before any *table line") }
            var words = try Self.words(line)
            guard words.count >= 2, words[0] == "-A" || words[0] == "-I" || words[0] == "--append" || words[0] == "--insert" else {
                throw ParseError(description: "line \(n + 1): not a rule: \(line)")
            }
            let insert = words[0] == "-I" || words[0] == "--insert"
            let chainName = words[1]
            words.removeFirst(2)
            var position = 1
            if insert, let first = words.first, let p = Int(first) {
                position = p
                words.removeFirst()
            }
            // The rule as it reads after its chain (and position).
            func afterWord(_ s: Substring) -> Substring { s.drop(while: { $0 != " " }).drop(while: { $0 == " " }) }
            var spec = afterWord(afterWord(line))
            if insert, spec.prefix(while: { $0 != " " }).allSatisfy(\.isNumber), !spec.isEmpty { spec = afterWord(spec) }
            let rule = try Self.rule(words, text: String(spec))
            var chain = tables[table]?[chainName] ?? Chain()
            if insert {
                chain.rules.insert(rule, at: min(max(position - 1, 0), chain.rules.count))
            } else {
                chain.rules.append(rule)
            }
            tables[table, default: [:]][chainName] = chain
        }
        for (t, chains) in tables {
            for (name, var c) in chains {
                c.byDestination = [:]; c.byPort = [:]; c.others = []
                for (i, r) in c.rules.enumerated() {
                    if let d = r.destination { c.byDestination[d, default: []].append(i) }
                    else if let p = r.port { c.byPort[p, default: []].append(i) }
                    else { c.others.append(i) }
                }
                tables[t]?[name] = c
            }
        }
    }

    /// A line's words, `"…"` as one (with `\"` inside).
    static func words(_ line: Substring) throws -> [String] {
        var out: [String] = [], cur = "", quoted = false, escaped = false, inWord = false
        for ch in line {
            if escaped { cur.append(ch); escaped = false; continue }
            if quoted {
                if ch == "\\" { escaped = true } else if ch == "\"" { quoted = false } else { cur.append(ch) }
                continue
            }
            if ch == "\"" { quoted = true; inWord = true }
            else if ch == " " || ch == "\t" { if inWord { out.append(cur); cur = ""; inWord = false } }
            else { cur.append(ch); inWord = true }
        }
        guard !quoted else { throw ParseError(description: "an unclosed quote in: \(line)") }
        if inWord { out.append(cur) }
        return out
    }

    /// `a.b.c.d[/n]` as an address and mask.
    public static func cidr(_ s: String) -> (UInt32, UInt32)? {
        let parts = s.split(separator: "/", maxSplits: 1)
        guard let a = address(String(parts[0])) else { return nil }
        var bits = 32
        if parts.count == 2 {
            if let b = Int(parts[1]), (0...32).contains(b) { bits = b }
            else if let m = address(String(parts[1])) { return (a & m, m) }
            else { return nil }
        }
        let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
        return (a & mask, mask)
    }

    public static func address(_ s: String) -> UInt32? {
        let p = s.split(separator: ".", omittingEmptySubsequences: false)
        guard p.count == 4 else { return nil }
        var v: UInt32 = 0
        for x in p {
            guard let b = UInt8(x) else { return nil }
            v = v << 8 | UInt32(b)
        }
        return v
    }

    public static func text(_ a: UInt32) -> String { "\(a >> 24).\(a >> 16 & 255).\(a >> 8 & 255).\(a & 255)" }

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
        var dest: UInt32?, port: Int?, negate = false, probability: Double?
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
                if !negate && c.1 == ~0 { dest = c.0 }
            case "-p", "--protocol": matches.append(.proto(try value().lowercased(), negate))
            case "-i", "--in-interface": matches.append(.inInterface(try value(), negate))
            case "-o", "--out-interface": matches.append(.outInterface(try value(), negate))
            case "--dport", "--destination-port", "--dports", "--destination-ports":
                let ps = ports(try value())
                matches.append(.dport(ps, negate))
                if !negate && ps.count == 1 { port = ps[0] }
            case "--sport", "--source-port", "--sports", "--source-ports": matches.append(.sport(ports(try value()), negate))
            case "--dst-type": matches.append(.addrType(dst: true, try value(), negate))
            case "--src-type": matches.append(.addrType(dst: false, try value(), negate))
            case "--mark":
                guard let vm = valueMask(try value()) else { throw ParseError(description: "a bad mark in: \(text)") }
                matches.append(.mark(vm.0, vm.1, negate))
            case "--ctstate", "--state": matches.append(.state(Set(try value().split(separator: ",").map(String.init)), negate))
            case "--probability": probability = Double(try value())
            case "--rcheck", "--update": matches.append(.recent(negate))
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
        return Rule(text: text, matches: matches, target: target, goto: goto, args: args, destination: dest, port: dest == nil ? port : nil)
    }

    // MARK: walking

    enum Verdict { case yes, no, random(Double) }

    func test(_ r: Rule, _ p: Packet, fromNode: Bool) -> Verdict {
        var chance: Double?
        for m in r.matches {
            let ok: Bool
            switch m {
            case .source(let a, let mask, let neg): ok = (p.source & mask == a) != neg
            case .destination(let a, let mask, let neg): ok = (p.destination & mask == a) != neg
            case .proto(let pr, let neg): ok = (pr == "all" || pr == p.proto) != neg
            case .dport(let ps, let neg): ok = ps.contains(p.port) != neg
            case .sport(let ps, let neg): ok = ps.contains(p.sourcePort) != neg
            case .inInterface(let name, let neg):
                // Arriving packets come in on an outside interface; the node's own have none.
                ok = (!fromNode && name != "lo" && !name.hasPrefix("kube-")) != neg
            case .outInterface(let name, let neg): ok = ((name == "lo") == isLoopback(p.destination)) != neg
            case .addrType(let dst, let type, let neg):
                let a = dst ? p.destination : p.source
                ok = (type == "LOCAL" ? isLocal(a) : false) != neg
            case .mark(let v, let mask, let neg): ok = (p.mark & mask == v) != neg
            case .state(let s, let neg): ok = !s.isDisjoint(with: p.states) != neg
            case .random(let pr): chance = pr; ok = true
            case .recent(let neg): ok = neg
            }
            if !ok { return .no }
        }
        return chance.map { .random($0) } ?? .yes
    }

    func isLoopback(_ a: UInt32) -> Bool { a >> 24 == 127 }
    func isLocal(_ a: UInt32) -> Bool { isLoopback(a) || local.contains(a) }

    /// The rules of a chain that can take `p`, in order.
    func candidates(_ c: Chain, _ p: Packet) -> [Int] {
        if c.rules.count < 32 { return Array(c.rules.indices) }
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
            let r = chain.rules[i]
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
                let parts = to.split(separator: ":", maxSplits: 1)
                if let a = Self.address(String(parts[0])) { p.destination = a }
                if parts.count == 2, let port = Int(parts[1]) { p.port = port }
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

    /// A built-in chain run to its end: its policy where nothing decided.
    func hook(_ table: String, _ chain: String, _ packets: [Outcome], fromNode: Bool) -> [Outcome] {
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
