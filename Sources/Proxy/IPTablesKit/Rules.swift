/// A rule in a built-in chain that jumps to one of a mode's chains, spelled as `iptables-save`
/// prints it, so a save of the live tables tells whether it is there.
public struct JumpRule: Sendable, Hashable {
    public enum Position: Sendable, Hashable {
        /// Added at the end of the chain (`-A`).
        case append
        /// Added first in the chain (`-I chain 1`): it must run before rules others put there.
        case prepend
    }

    public let table: String
    /// The built-in chain the rule is in.
    public let chain: String
    /// Everything after `-A chain `: the matches, the comment and `-j target`.
    public let rule: String
    public let position: Position

    public init(table: String, chain: String, rule: String, position: Position = .append) {
        self.table = table
        self.chain = chain
        self.rule = rule
        self.position = position
    }

    /// From its parts, in `iptables-save`'s argument order: matches, then the comment, then the target.
    public init(table: String, chain: String, target: String, comment: String = "", match: String = "", position: Position = .append) {
        var parts: [String] = []
        if !match.isEmpty { parts.append(match) }
        if !comment.isEmpty { parts.append("-m comment --comment \"\(comment)\"") }
        parts.append("-j \(target)")
        self.init(table: table, chain: chain, rule: parts.joined(separator: " "), position: position)
    }

    /// The chain it jumps to.
    public var target: String { IPTablesSave.jumpTarget(rule) ?? "" }
    /// The rule as `iptables-save` prints it.
    public var spec: String { "-A \(chain) \(rule)" }
    /// The restore line that adds it where its position says.
    public var addLine: String { position == .prepend ? "-I \(chain) 1 \(rule)" : spec }
    /// The restore line that deletes one copy of it.
    public var deleteLine: String { "-D \(chain) \(rule)" }
}

extension IPTablesSave {
    /// How many copies of `jump` its chain has (a ruleset loaded twice by hand leaves two).
    public func copies(of jump: JumpRule) -> Int {
        rules[jump.table]?.reduce(0) { $0 + ($1.line == jump.spec ? 1 : 0) } ?? 0
    }

    /// The jumps of `jumps` that are not there, in their order.
    public func missing(_ jumps: [JumpRule]) -> [JumpRule] {
        jumps.filter { !contains(table: $0.table, $0.spec) }
    }
}

/// `iptables-restore --noflush` input built table by table: each table's section has its chain
/// declarations (which create a chain, or flush one that exists) before its rule lines, and ends
/// with `COMMIT`; tables come in the order they were first written to.
public struct RestoreText: Sendable {
    private var order: [String] = []
    private var declared: [String: [String]] = [:]
    private var lines: [String: [String]] = [:]

    public init() {}

    /// Creates `chain` in `table`, or empties it if it exists.
    public mutating func declare(_ chain: String, in table: String) {
        touch(table)
        declared[table]!.append(":\(chain) - [0:0]")
    }

    /// A rule line (`-A`, `-I`, `-D`, `-X`, `-F`) for `table`.
    public mutating func add(_ line: String, in table: String) {
        touch(table)
        lines[table]!.append(line)
    }

    private mutating func touch(_ table: String) {
        if declared[table] == nil {
            order.append(table)
            declared[table] = []
            lines[table] = []
        }
    }

    public var isEmpty: Bool { order.isEmpty }

    public var text: String {
        var s = ""
        for t in order {
            s += "*\(t)\n"
            for l in declared[t]! { s += l + "\n" }
            for l in lines[t]! { s += l + "\n" }
            s += "COMMIT\n"
        }
        return s
    }
}

/// The chains a mode owns, by table: exact names, and name prefixes (`KUBE-SVC-`…).
public struct OwnedChains: Sendable {
    public var names: [String: Set<String>]
    public var prefixes: [String: [String]]

    public init(names: [String: Set<String>], prefixes: [String: [String]] = [:]) {
        self.names = names
        self.prefixes = prefixes
    }

    public var tables: [String] { Array(Set(names.keys).union(prefixes.keys)).sorted() }

    public func owns(_ chain: String, in table: String) -> Bool {
        names[table]?.contains(chain) == true || prefixes[table]?.contains { chain.hasPrefix($0) } == true
    }
}

extension IPTablesInterface {
    /// Removes what a mode left: the rules in built-in chains that jump to one of `owned`'s
    /// chains (every copy; only those of `jumps` when given, so the jumps of another mode that
    /// shares a chain name stay), and the chains themselves. A chain that a rule not removed
    /// still jumps to is emptied and kept. One restore, atomic per table; true when there was
    /// anything to remove.
    @discardableResult
    public func removeOwned(_ owned: OwnedChains, jumps: [JumpRule]? = nil) throws -> Bool {
        let tables = owned.tables
        let saved = IPTablesSave(try save(tables: tables))
        var out = RestoreText()
        for t in tables {
            let present = (saved.chains[t] ?? []).filter { owned.owns($0, in: t) }
            guard !present.isEmpty else { continue }
            var kept = Set<String>()
            var deletes: [String] = []
            for (chain, line) in saved.rules[t] ?? [] where !present.contains(chain) {
                guard let target = IPTablesSave.jumpTarget(line), present.contains(target) else { continue }
                let ours = jumps.map { js in js.contains { $0.table == t && $0.spec == line } } ?? true
                if IPTablesSave.builtinChains.contains(chain) && ours { deletes.append("-D" + line.dropFirst(2)) } else { kept.insert(target) }
            }
            for c in present.sorted() { out.declare(c, in: t) }
            for d in deletes { out.add(d, in: t) }
            for c in present.subtracting(kept).sorted() { out.add("-X \(c)", in: t) }
        }
        guard !out.isEmpty else { return false }
        try restore(out.text)
        return true
    }
}

extension RestoreText {
    /// How to load iptables-restore input a render wrote, for the comment lines that open it.
    public static let loadingNote = [
        "Load it with:  iptables-restore --noflush < FILE",
        "--noflush keeps the tables' other rules: without it, iptables-restore empties each table first.",
        "Loading it again rewrites the KUBE-* chains whole and leaves a second copy of each jump from",
        "a built-in chain, which changes nothing (`switchyard proxy --cleanup` removes every copy).",
    ]
}
