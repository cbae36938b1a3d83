import Foundation
import HostOS

/// The narrow interface to the kernel's iptables: restore, save, check a chain.
public protocol IPTablesInterface: Sendable {
    /// `iptables-restore --noflush --counters -w`: applies `input` atomically per table.
    func restore(_ input: String) throws
    /// The same with the input in parts (text, or a file's contents), concatenated.
    func restore(input: [CommandRunner.InputPart]) throws
    /// `iptables-save` of the given tables.
    func save(tables: [String]) throws -> String
    /// Whether `chain` exists in `table` (`iptables -S`).
    func chainExists(table: String, chain: String) -> Bool
}

extension IPTablesInterface {
    public func restore(input: [CommandRunner.InputPart]) throws {
        var text = ""
        for p in input {
            switch p {
            case .text(let t): text += t
            case .file(let f): text += try String(contentsOfFile: f, encoding: .utf8)
            }
        }
        try restore(text)
    }
}

/// An `iptables-save` read into tables: the chains each declares and its rules in order, with
/// the chain each is in. The one reader the modes' cleanups and adoption checks share.
public struct IPTablesSave: Sendable {
    public static let builtinChains: Set<String> = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"]
    public private(set) var chains: [String: Set<String>] = [:]
    /// By table: (chain, the whole `-A chain …` line).
    public private(set) var rules: [String: [(chain: String, line: String)]] = [:]

    public init(_ text: String) {
        var table = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix("*") {
                table = String(line.dropFirst())
            } else if line.hasPrefix(":") {
                chains[table, default: []].insert(String(line.dropFirst().split(separator: " ")[0]))
            } else if line.hasPrefix("-A ") {
                rules[table, default: []].append((String(line.dropFirst(3).prefix { $0 != " " }), String(line)))
            }
        }
    }

    /// Whether `table` has exactly this `-A chain spec` line.
    public func contains(table: String, _ line: String) -> Bool { rules[table]?.contains { $0.line == line } ?? false }

    /// The chain or target a rule jumps to (`-j X`).
    public static func jumpTarget(_ spec: String) -> String? {
        guard let r = spec.range(of: "-j ", options: .backwards) else { return nil }
        return spec[r.upperBound...].split(separator: " ").first.map(String.init)
    }
}

/// The real thing, through the iptables binaries; optionally in a named netns.
public struct SystemIPTables: IPTablesInterface {
    public var runner: CommandRunner
    /// ip6tables, ip6tables-restore and ip6tables-save instead of the IPv4 tools.
    public var ipv6: Bool
    public init(runner: CommandRunner = CommandRunner(), ipv6: Bool = false) {
        self.runner = runner
        self.ipv6 = ipv6
    }

    private func tool(_ suffix: String) -> String { (ipv6 ? "ip6tables" : "iptables") + suffix }

    public func restore(_ input: String) throws { try restore(input: [.text(input)]) }

    public func restore(input: [CommandRunner.InputPart]) throws {
        try runner.run([tool("-restore"), "-w", "5", "--noflush", "--counters"], input: input)
    }

    public func save(tables: [String]) throws -> String {
        var out = ""
        for t in tables {
            out += try runner.run([tool("-save"), "-t", t]).stdout
        }
        return out
    }

    public func chainExists(table: String, chain: String) -> Bool {
        (try? runner.run([tool(""), "-w", "5", "-t", table, "-S", chain], check: false).status) == 0
    }

    /// Whether this iptables takes `MASQUERADE --random-fully`: version 1.6.2 or later, as
    /// upstream's `HasRandomFully` decides from `iptables --version` (false if it cannot tell).
    public func hasRandomFully() -> Bool {
        guard let out = try? runner.run([tool(""), "--version"], check: false).stdout else { return false }
        return Self.randomFully(versionOutput: out)
    }

    /// `iptables v1.8.9 (nf_tables)` → true; anything before 1.6.2, or unreadable → false.
    public static func randomFully(versionOutput: String) -> Bool {
        guard let v = versionOutput.split(separator: " ").first(where: { $0.hasPrefix("v") }) else { return false }
        let parts = v.dropFirst().split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 }
        let padded = parts + Array(repeating: 0, count: max(0, 3 - parts.count))
        return padded.lexicographicallyPrecedes([1, 6, 2]) == false
    }
}

/// An in-memory iptables that understands the subset of `iptables-restore` the
/// proxy writes (`:chain`, `-A`, `-I`, `-D`, `-X`, `COMMIT`, with `--noflush`
/// semantics) and refuses what the kernel would refuse. For unit tests.
public final class FakeIPTables: IPTablesInterface, @unchecked Sendable {
    public struct ParseError: Error, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    /// table -> chain -> rules (without the leading `-A chain`).
    public private(set) var tables: [String: [String: [String]]] = [
        "filter": ["INPUT": [], "FORWARD": [], "OUTPUT": []],
        "nat": ["PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": []],
        "mangle": ["PREROUTING": [], "INPUT": [], "FORWARD": [], "OUTPUT": [], "POSTROUTING": []],
    ]
    public private(set) var restores: [String] = []
    public var failNextRestore = false

    public init() {}

    static var builtins: Set<String> { IPTablesSave.builtinChains }

    public func restore(_ input: String) throws {
        restores.append(input)
        if failNextRestore {
            failNextRestore = false
            throw ParseError(line: 0, message: "injected failure")
        }
        var staged = tables
        var current: String?
        var work: [String: [String]] = [:]
        for (i, raw) in input.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let n = i + 1
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("*") {
                current = String(line.dropFirst())
                guard let t = staged[current!] else { throw ParseError(line: n, message: "unknown table") }
                work = t
                continue
            }
            guard let table = current else { throw ParseError(line: n, message: "no table") }
            if line == "COMMIT" {
                staged[table] = work
                current = nil
                continue
            }
            if line.hasPrefix(":") {
                let name = String(line.dropFirst().split(separator: " ")[0])
                work[name] = Self.builtins.contains(name) ? (work[name] ?? []) : []
                continue
            }
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard parts.count >= 2 else { throw ParseError(line: n, message: "bad line") }
            let chain = parts[1]
            switch parts[0] {
            case "-A", "-I", "-D":
                guard work[chain] != nil else { throw ParseError(line: n, message: "chain \(chain) does not exist") }
                var spec = parts.count > 2 ? parts[2] : ""
                var pos = 1
                if parts[0] == "-I", let first = spec.split(separator: " ").first, let p = Int(first) {
                    pos = p
                    spec = String(spec.dropFirst(first.count)).trimmingCharacters(in: .whitespaces)
                }
                if let target = Self.jumpTarget(spec), !Self.isTarget(target), work[target] == nil {
                    throw ParseError(line: n, message: "jump to missing chain \(target)")
                }
                switch parts[0] {
                case "-A": work[chain]!.append(spec)
                case "-I": work[chain]!.insert(spec, at: min(pos - 1, work[chain]!.count))
                default:
                    guard let idx = work[chain]!.firstIndex(of: spec) else {
                        throw ParseError(line: n, message: "-D: no such rule in \(chain)")
                    }
                    work[chain]!.remove(at: idx)
                }
            case "-X":
                guard work[chain] != nil else { throw ParseError(line: n, message: "-X: no chain \(chain)") }
                for (c, rules) in work where c != chain {
                    if rules.contains(where: { Self.jumpTarget($0) == chain }) {
                        throw ParseError(line: n, message: "-X: \(chain) is referenced from \(c)")
                    }
                }
                work[chain] = nil
            default:
                throw ParseError(line: n, message: "unsupported \(parts[0])")
            }
        }
        if current != nil { throw ParseError(line: 0, message: "missing COMMIT") }
        tables = staged
    }

    static func jumpTarget(_ spec: String) -> String? { IPTablesSave.jumpTarget(spec) }

    static func isTarget(_ t: String) -> Bool {
        ["ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "SNAT", "MASQUERADE", "MARK", "REDIRECT"].contains(t)
    }

    public func save(tables wanted: [String]) throws -> String {
        var out = ""
        for t in wanted {
            guard let chains = tables[t] else { continue }
            out += "*\(t)\n"
            for c in chains.keys.sorted() {
                out += Self.builtins.contains(c) ? ":\(c) ACCEPT [0:0]\n" : ":\(c) - [0:0]\n"
            }
            for c in chains.keys.sorted() {
                for r in chains[c]! { out += "-A \(c) \(r)\n" }
            }
            out += "COMMIT\n"
        }
        return out
    }

    public func chainExists(table: String, chain: String) -> Bool { tables[table]?[chain] != nil }

    /// Deletes a chain behind the proxy's back, as another tool might.
    public func flushAll() {
        for t in tables.keys {
            tables[t] = tables[t]!.filter { Self.builtins.contains($0.key) }.mapValues { _ in [] }
        }
    }
}
