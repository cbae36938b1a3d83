import Netlink
import KubeAPI
import CMnl
import CNftnl
import Foundation

/// nf_tables through libnftnl over one netlink socket: no `nft` binary at run time.
public final class SystemNFTables: NFTablesInterface, @unchecked Sendable {
    private let socket: NFTSocket
    private let lock = NSLock()
    private var namer = AnonNamer()
    /// Messages in the last transaction sent, for tests and metrics.
    public private(set) var lastTransactionMessages = 0
    /// Seconds each transaction of the last `apply` took (building and kernel), for benchmarks.
    public private(set) var lastTransactionSeconds: [Double] = []
    /// Largest number of messages sent in one transaction; a full sync is split in
    /// transactions of at most this many.
    public var maxMessagesPerTransaction = 20_000

    /// The table's family: `ip kube-proxy` or, for a dual-stack node's IPv6 proxier, `ip6 kube-proxy`.
    public let family: IPFamily

    /// Opens a socket in the network namespace at `netns` (nil: this process's), for the
    /// table of `family`.
    public init(netns: String? = nil, family: IPFamily = .ipv4) throws {
        socket = try NFTSocket(netns: netns)
        self.family = family
    }

    func readTable() throws -> KernelTable? {
        try lock.withLock {
            guard try tableExists() else { return nil }
            var k = KernelTable()
            try socket.dump({ buf, seq in
                let nlh = nftnl_nlmsg_build_hdr(buf, UInt16(NFT_MSG_GETCHAIN.rawValue), UInt16(family.nfproto), UInt16(NLM_F_DUMP), seq)!
                let c = nftnl_chain_alloc()!
                nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_TABLE.rawValue), Names.table)
                nftnl_chain_nlmsg_build_payload(nlh, c)
                nftnl_chain_free(c)
            }, { nlh in
                let c = nftnl_chain_alloc()!
                defer { nftnl_chain_free(c) }
                guard nftnl_chain_nlmsg_parse(nlh, c) >= 0,
                      String(cString: nftnl_chain_get_str(c, UInt16(NFTNL_CHAIN_TABLE.rawValue))) == Names.table else { return }
                k.chains.insert(String(cString: nftnl_chain_get_str(c, UInt16(NFTNL_CHAIN_NAME.rawValue))))
            })
            try socket.dump({ buf, seq in
                let nlh = nftnl_nlmsg_build_hdr(buf, UInt16(NFT_MSG_GETSET.rawValue), UInt16(family.nfproto), UInt16(NLM_F_DUMP), seq)!
                let s = nftnl_set_alloc()!
                nftnl_set_set_str(s, UInt16(NFTNL_SET_TABLE.rawValue), Names.table)
                nftnl_set_nlmsg_build_payload(nlh, s)
                nftnl_set_free(s)
            }, { nlh in
                let s = nftnl_set_alloc()!
                defer { nftnl_set_free(s) }
                guard nftnl_set_nlmsg_parse(nlh, s) >= 0,
                      String(cString: nftnl_set_get_str(s, UInt16(NFTNL_SET_TABLE.rawValue))) == Names.table else { return }
                let name = String(cString: nftnl_set_get_str(s, UInt16(NFTNL_SET_NAME.rawValue)))
                let flags = nftnl_set_get_u32(s, UInt16(NFTNL_SET_FLAGS.rawValue))
                if flags & UInt32(NFT_SET_ANONYMOUS.rawValue) != 0 {
                    let digits = name.drop { !$0.isNumber }
                    if let n = UInt32(digits) { k.maxAnonymous = max(k.maxAnonymous, n) }
                } else {
                    k.sets.insert(name)
                }
            })
            namer.advance(past: k.maxAnonymous)
            return k
        }
    }

    private func tableExists() throws -> Bool {
        var found = false
        do {
            try socket.dump({ buf, seq in
                let nlh = nftnl_nlmsg_build_hdr(buf, UInt16(NFT_MSG_GETTABLE.rawValue), UInt16(family.nfproto), UInt16(NLM_F_ACK), seq)!
                let t = nftnl_table_alloc()!
                nftnl_table_set_str(t, UInt16(NFTNL_TABLE_NAME.rawValue), Names.table)
                nftnl_table_nlmsg_build_payload(nlh, t)
                nftnl_table_free(t)
            }, { _ in found = true })
        } catch let e as NetlinkError where e.errno == ENOENT {
            return false
        }
        return found
    }

    func ruleCounts(_ chains: [String]) throws -> [String: Int] {
        try lock.withLock {
            var counts: [String: Int] = [:]
            // One dump per chain, filtered by the kernel: the table may hold hundreds of
            // thousands of rules in chains nobody asked about.
            for chain in chains {
                var n = 0
                do {
                    try socket.dump({ buf, seq in
                        let nlh = nftnl_nlmsg_build_hdr(buf, UInt16(NFT_MSG_GETRULE.rawValue), UInt16(family.nfproto), UInt16(NLM_F_DUMP), seq)!
                        let r = nftnl_rule_alloc()!
                        nftnl_rule_set_str(r, UInt16(NFTNL_RULE_TABLE.rawValue), Names.table)
                        nftnl_rule_set_str(r, UInt16(NFTNL_RULE_CHAIN.rawValue), chain)
                        nftnl_rule_nlmsg_build_payload(nlh, r)
                        nftnl_rule_free(r)
                    }, { _ in n += 1 })
                } catch let e as NetlinkError where e.errno == ENOENT {
                    n = 0
                }
                counts[chain] = n
            }
            return counts
        }
    }

    func apply(_ transactions: [[Op]]) throws {
        try lock.withLock {
            lastTransactionSeconds = []
            for ops in transactions where !ops.isEmpty {
                let started = ContinuousClock.now
                defer {
                    lastTransactionSeconds.append((ContinuousClock.now - started).seconds)
                }
                let batch = Batch(socket: socket, family: family)
                let w = TableWriter(batch: batch, table: Names.table, family: family)
                for op in ops { write(op, w) }
                batch.finish()
                lastTransactionMessages = batch.messages
                try socket.commit(batch)
            }
        }
    }

    private func write(_ op: Op, _ w: TableWriter) {
        switch op {
        case .addTable: w.addTable(comment: Names.tableComment)
        case .deleteTable: w.deleteTable()
        case .addSet(let s): w.addSet(s)
        case .flushSet(let s): w.flushSet(s)
        case .deleteSet(let s): w.deleteSet(s)
        case .addChain(let c): w.addChain(c)
        case .flushChain(let c): w.flushChain(c)
        case .deleteChain(let c): w.deleteChain(c)
        case let .addRule(c, r): w.addRule(c, r, namer: &namer)
        case let .addElements(s, e): w.elements(true, s, e)
        case let .deleteElements(s, e): w.elements(false, s, e)
        }
    }
}

/// A fake kernel for unit tests: records every transaction and keeps the table
/// those transactions build, rejecting what the kernel would reject (adding to a
/// chain or set that does not exist, deleting a chain that is still referenced).
public final class FakeNFTables: NFTablesInterface, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var chains: [String: [Rule]] = [:]
    private(set) var sets: [String: [[KeyValue]: Element]] = [:]
    private(set) var hasTable = false
    /// Every transaction applied, in order.
    private(set) var transactions: [[Op]] = []
    /// When set, the next transaction fails with this errno and changes nothing.
    public var failNext: Int32?

    public init() {}

    func readTable() throws -> KernelTable? {
        lock.withLock {
            hasTable ? KernelTable(chains: Set(chains.keys), sets: Set(sets.keys)) : nil
        }
    }

    func ruleCounts(_ names: [String]) throws -> [String: Int] {
        lock.withLock {
            var out: [String: Int] = [:]
            for n in names { out[n] = chains[n]?.count ?? 0 }
            return out
        }
    }

    /// The table as text that two tables with the same rules and elements print alike: chains
    /// and sets sorted by name, each set's elements sorted, anonymous set names without their numbers.
    func canonical() -> String {
        lock.withLock {
            var out = hasTable ? "table\n" : ""
            for (name, rules) in chains.sorted(by: { $0.key < $1.key }) {
                out += "chain \(name)\n" + rules.map { "  \($0)\n" }.joined()
            }
            for (name, elements) in sets.sorted(by: { $0.key < $1.key }) {
                out += "set \(name)\n" + elements.values.map { "  \($0)\n" }.sorted().joined()
            }
            return out.replacing(/__(set|map)[0-9]+/, with: { "__\($0.output.1)" })
        }
    }

    /// Flushes a chain behind the proxy's back, as a user with `nft` might.
    public func tamperFlush(_ chain: String) { lock.withLock { chains[chain] = [] } }

    func apply(_ txs: [[Op]]) throws {
        try lock.withLock {
            for ops in txs where !ops.isEmpty {
                if let e = failNext {
                    failNext = nil
                    throw NetlinkError(errno: e, what: "fake failure")
                }
                let saved = (chains, sets, hasTable)
                do {
                    for op in ops { try apply(op) }
                } catch {
                    (chains, sets, hasTable) = saved
                    throw error
                }
                transactions.append(ops)
            }
        }
    }

    private func apply(_ op: Op) throws {
        func need(_ ok: Bool, _ what: String) throws {
            if !ok { throw NetlinkError(errno: ENOENT, what: what) }
        }
        switch op {
        case .addTable: hasTable = true
        case .deleteTable:
            try need(hasTable, "delete table")
            hasTable = false; chains = [:]; sets = [:]
        case .addSet(let s):
            try need(hasTable, "add set")
            if sets[s.name] == nil { sets[s.name] = [:] }
        case .flushSet(let s): try need(sets[s] != nil, "flush set \(s)"); sets[s] = [:]
        case .deleteSet(let s): try need(sets.removeValue(forKey: s) != nil, "delete set \(s)")
        case .addChain(let c):
            try need(hasTable, "add chain")
            if chains[c.name] == nil { chains[c.name] = [] }
        case .flushChain(let c): try need(chains[c] != nil, "flush chain \(c)"); chains[c] = []
        case .deleteChain(let c):
            try need(chains[c] != nil, "delete chain \(c)")
            if !(chains[c]!.isEmpty) { throw NetlinkError(errno: EBUSY, what: "delete chain \(c) with rules") }
            if referenced(c) { throw NetlinkError(errno: EBUSY, what: "delete chain \(c) still referenced") }
            chains[c] = nil
        case let .addRule(c, r):
            try need(chains[c] != nil, "add rule to \(c)")
            for t in targets(r) { try need(chains[t] != nil, "rule in \(c) jumps to missing \(t)") }
            chains[c]!.append(r)
        case let .addElements(s, els):
            try need(sets[s] != nil, "add element to \(s)")
            for e in els {
                if let t = e.verdict?.chain { try need(chains[t] != nil, "element of \(s) jumps to missing \(t)") }
                sets[s]![e.key] = e
            }
        case let .deleteElements(s, els):
            try need(sets[s] != nil, "delete element of \(s)")
            for e in els { try need(sets[s]!.removeValue(forKey: e.key) != nil, "delete missing element of \(s)") }
        }
    }

    private func targets(_ r: Rule) -> [String] {
        r.stmts.flatMap { s -> [String] in
            switch s {
            case .verdict(let v): return v.chain.map { [$0] } ?? []
            case .numgenVmap(let c): return c
            default: return []
            }
        }
    }

    private func referenced(_ chain: String) -> Bool {
        chains.values.contains { $0.contains { targets($0).contains(chain) } }
            || sets.values.contains { $0.values.contains { $0.verdict?.chain == chain } }
    }

    /// Chain names to rule texts, for assertions.
    public var ruleTexts: [String: [String]] { lock.withLock { chains.mapValues { $0.map(\.text) } } }
    /// Set names to element texts, sorted.
    public var elementTexts: [String: [String]] { lock.withLock { sets.mapValues { $0.values.map(\.text).sorted() } } }
    public var transactionCount: Int { lock.withLock { transactions.count } }
    public var lastTransaction: [String] { lock.withLock { transactions.last?.map(\.text) ?? [] } }
}

extension SystemNFTables {
    /// Times small transactions of each kind against the table the kernel holds now:
    /// a diagnostic for finding where the kernel spends its time. Leaves nothing behind.
    public func probeKernelCosts() throws -> [(String, Double)] {
        func time(_ ops: [Op]) throws -> Double {
            let s = ContinuousClock.now
            try apply([ops])
            return (ContinuousClock.now - s).seconds
        }
        var out: [(String, Double)] = []
        out.append(("empty transaction (add table)", try time([.addTable])))
        out.append(("add element to cluster-ips", try time([.addElements(Names.clusterIPs, [Element(key: [.ip(0x0101_0101)])])])))
        out.append(("delete element from cluster-ips", try time([.deleteElements(Names.clusterIPs, [Element(key: [.ip(0x0101_0101)])])])))
        out.append(("add chain", try time([.addChain(Chain("probe-a"))])))
        out.append(("add rule without verdict", try time([.addRule("probe-a", Rule([.addr(.saddr, negate: false, CIDR("1.2.3.4/32")!)]))])))
        out.append(("add rule with drop", try time([.addRule("probe-a", Rule([.verdict(.drop)]))])))
        out.append(("add rule with jump", try time([.addRule("probe-a", Rule([.verdict(.jump(Names.markForMasquerade))]))])))
        out.append(("add rule with numgen vmap", try time([.addRule("probe-a", Rule([.numgenVmap([Names.markForMasquerade])]))])))
        let el = Element(key: [.ip(0x0101_0101), .proto(.tcp), .port(5)], verdict: .goto("probe-a"))
        out.append(("add element to service-ips (goto)", try time([.addElements(Names.serviceIPs, [el])])))
        out.append(("delete element from service-ips", try time([.deleteElements(Names.serviceIPs, [el])])))
        out.append(("flush and delete chain", try time([.flushChain("probe-a"), .deleteChain("probe-a")])))
        let k = try? readTable()
        if k?.sets.contains(Names.serviceEndpoints) == true {
            let e = Element(key: [.ip(0x0101_0101), .proto(.tcp), .port(5), .int(0)], data: [.ip(0x0202_0202), .port(80)])
            out.append(("add element to service-endpoints (data)", try time([.addElements(Names.serviceEndpoints, [e])])))
            out.append(("delete element from service-endpoints", try time([.deleteElements(Names.serviceEndpoints, [e])])))
            let h = Element(key: [.ip(0x0101_0101), .ip(0x0101_0101)])
            out.append(("add element to endpoint-hairpin", try time([.addElements(Names.endpointHairpin, [h])])))
            out.append(("delete element from endpoint-hairpin", try time([.deleteElements(Names.endpointHairpin, [h])])))
        }
        return out
    }
}
