import KubeAPI

/// One change to the `ip kube-proxy` table: the unit of a transaction, rendered as
/// an `nft -f` line or sent as netlink messages.
enum Op: Equatable, Sendable {
    case addTable
    case deleteTable
    case addSet(SetDef)
    case flushSet(String)
    case deleteSet(String)
    /// Declares a chain (base chains with their hook); rules come as `addRule`.
    case addChain(Chain)
    case flushChain(String)
    case deleteChain(String)
    case addRule(String, Rule)
    case addElements(String, [Element])
    case deleteElements(String, [Element])

    /// The line `nft -f` reads for this change, in the `ip` table.
    var text: String { text(family: .ipv4) }

    /// The line `nft -f` reads for this change, in the table of `family` (`ip6 kube-proxy`).
    func text(family: IPFamily) -> String {
        let t = "\(family.nftPrefix) \(Names.table)"
        switch self {
        case .addTable: return "add table \(t) { comment \"\(Names.tableComment)\" ; }"
        case .deleteTable: return "delete table \(t)"
        case .addSet(let s):
            var body = "\(s.typeText) ;"
            if let timeout = s.timeoutSeconds { body += " flags dynamic,timeout ; timeout \(timeout)s ;" }
            if let c = s.comment { body += " comment \"\(c)\" ;" }
            return "add \(s.isMap ? "map" : "set") \(t) \(s.name) { \(body) }"
        case .flushSet(let s): return "flush set \(t) \(s)"
        case .deleteSet(let s): return "delete set \(t) \(s)"
        case .addChain(let c):
            var parts: [String] = []
            if let b = c.base { parts.append("type \(b.kind.rawValue) hook \(b.hook.rawValue) priority \(b.priority) ;") }
            if let comment = c.comment { parts.append("comment \"\(comment)\" ;") }
            return parts.isEmpty ? "add chain \(t) \(c.name)" : "add chain \(t) \(c.name) { \(parts.joined(separator: " ")) }"
        case .flushChain(let c): return "flush chain \(t) \(c)"
        case .deleteChain(let c): return "delete chain \(t) \(c)"
        case let .addRule(c, r): return "add rule \(t) \(c) \(r.text)"
        case let .addElements(s, els): return "add element \(t) \(s) { \(els.map(\.text).joined(separator: ", ")) }"
        case let .deleteElements(s, els): return "delete element \(t) \(s) { \(els.map(\.keyText).joined(separator: ", ")) }"
        }
    }
}

/// What a transaction plan holds: changes nothing can reach yet, which may go in
/// earlier transactions, and the changes traffic can see, which go in one.
struct Plan: Sendable {
    var prepare: [Op] = []
    var commit: [Op] = []

    var isEmpty: Bool { prepare.isEmpty && commit.isEmpty }
    var opCount: Int { prepare.count + commit.count }
}

/// What the kernel holds of our table, read back over netlink.
public struct KernelTable: Sendable, Equatable {
    public var chains: Set<String>
    /// Named sets and maps (anonymous ones are left out).
    public var sets: Set<String>
    /// The highest number used in an anonymous set name, so new names never clash.
    public var maxAnonymous: UInt32

    public init(chains: Set<String> = [], sets: Set<String> = [], maxAnonymous: UInt32 = 0) {
        self.chains = chains
        self.sets = sets
        self.maxAnonymous = maxAnonymous
    }
}

/// The narrow seam to the kernel's nf_tables, with a fake beside the real one.
protocol NFTablesInterface: AnyObject, Sendable {
    /// Our table as the kernel holds it, or nil when there is none.
    func readTable() throws -> KernelTable?
    /// Rules per chain, for the chains named.
    func ruleCounts(_ chains: [String]) throws -> [String: Int]
    /// Sends each list of changes as one transaction, in order; stops at the first
    /// the kernel rejects (which then changed nothing).
    func apply(_ transactions: [[Op]]) throws
}
