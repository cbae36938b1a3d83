import Foundation
import KubeAPI
import Logging
import ProxySeam
import HostOS
import IPTablesKit

/// What the proxier last applied for one service port.
struct AppliedService {
    var natTop: [String]
    var filterTop: [String]
    /// The service's chain names, space-separated: one allocation per service instead of one
    /// per chain (110,000 chains at 10,000 services of 10 endpoints).
    private var chainList: String
    var chains: [Substring] { chainList.split(separator: " ") }

    /// Rules in the service's own chains.
    var chainRuleLines: Int

    init(natTop: [String], filterTop: [String], chains: [String], chainRuleLines: Int = 0) {
        self.natTop = natTop
        self.filterTop = filterTop
        chainList = chains.joined(separator: " ")
        self.chainRuleLines = chainRuleLines
    }

    /// Rules this service owns, per table.
    var natRules: Int { natTop.count + chainRuleLines }
}

/// Lines in a text whose lines each end in "\n".
func lineCount(_ s: String) -> Int {
    var s = s
    return s.withUTF8 { buf in
        var n = 0
        for c in buf where c == 10 { n &+= 1 }
        return n
    }
}

/// Results written by several threads at distinct indices (through a raw buffer: no access to
/// a shared array's storage, which exclusivity checking would trap), read after all finished.
final class GeneratedBatch: @unchecked Sendable {
    private let buffer: UnsafeMutableBufferPointer<ServiceRules>
    init(count: Int) {
        buffer = .allocate(capacity: count)
        buffer.initialize(repeating: ServiceRules())
    }
    deinit {
        _ = buffer.deinitialize()
        buffer.deallocate()
    }
    func set(_ i: Int, _ r: ServiceRules) { buffer[i] = r }
    var rules: [ServiceRules] { Array(buffer) }
}

extension IPTablesProxier {
    static let batchSize = 512

    /// The rules of `names`, in order: on every core for a batch big enough to be worth it.
    static func generate(_ names: ArraySlice<ServicePortName>, _ snap: ProxySnapshot, gen: Generator) -> [ServiceRules] {
        let workers = min(ProcessInfo.processInfo.activeProcessorCount, 4, max(1, names.count / 64))
        let out = GeneratedBatch(count: names.count)
        let base = names.startIndex
        let work: @Sendable (Int) -> Void = { w in
            var g = gen
            var i = w
            while i < names.count {
                let name = names[base + i]
                let r = g.rules(for: snap.servicePorts[name]!, endpoints: snap.endpoints[name] ?? [], node: snap.node)
                out.set(i, r)
                i += workers
            }
        }
        if workers <= 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: work) }
        return out.rules
    }
}

/// The restore input for one sync, and what it leaves applied.
struct SyncPlan {
    /// The input in parts, written one after another (a full sync's is tens of MB: no joined
    /// copy, and its service rules may wait in a file).
    var parts: [CommandRunner.InputPart]
    /// The input as one text (for `render`, whose parts are all text).
    var input: String {
        parts.map { if case .text(let t) = $0 { return t } else { return "" } }.joined()
    }
    var isEmpty: Bool { parts.allSatisfy { if case .text(let t) = $0 { return t.isEmpty } else { return false } } }
    var applied: [ServicePortName: AppliedService]
    var full: Bool
    var linesWritten: Int
    /// Rules written per table (`filter`, `nat`), and the change in rules owned (a full sync: the total).
    var rulesWritten: [String: Int] = [:]
    var rulesOwnedChange: [String: Int] = [:]
}

/// kube-proxy's iptables mode.
///
/// A full sync writes the whole ruleset in one `iptables-restore --noflush`; a
/// partial sync writes only the chains of the services that changed, and edits
/// the shared top-level chains with `-D`/`-I` of the affected lines only, so an
/// endpoint change never rewrites KUBE-SERVICES.
public final class IPTablesProxier: ProxyBackend, ProxyRenderer, @unchecked Sendable {
    public let mode = "iptables"
    let ipt: any IPTablesInterface
    let opts: IPTablesOptions
    let conntrack: (any ConntrackCleaner)?
    let logger: Logger
    private let lock = NSLock()

    // State of what is applied; guarded by `lock` (syncs are serialized by the runner).
    private var applied: [ServicePortName: AppliedService] = [:]
    /// Rules owned per table after the last sync, for `…_iptables_total`.
    private var rulesOwned: [String: Int] = [:]
    private var state = KernelState()
    private var lastLargeCluster: Bool?
    private var udpHistory = UDPFlowHistory()

    public init(ipt: any IPTablesInterface, options: IPTablesOptions, conntrack: (any ConntrackCleaner)? = nil,
                logger: Logger = Logger(label: "switchyard.iptables")) {
        self.ipt = ipt
        self.opts = options
        self.conntrack = conntrack
        self.logger = logger
    }

    // MARK: render

    /// The restore input a full sync on a fresh node writes.
    public func render(_ snapshot: ProxySnapshot) -> String {
        // In memory, the spool cannot fail.
        (try? plan(snapshot, changed: nil, existing: Existing(), chainSpool: Spool(), ruleSpool: Spool()))?.input ?? ""
    }

    // MARK: sync

    public func sync(_ request: SyncRequest) async throws -> SyncOutcome {
        try lock.withLock { try syncLocked(request) }
    }

    func syncLocked(_ request: SyncRequest) throws -> SyncOutcome {
        let snap = request.snapshot
        let large = Generator.isLargeCluster(snap)
        var changed = request.changedServices
        if state.mustSyncFully(request) || lastLargeCluster != large { changed = nil }
        var existing: Existing?
        if changed == nil {
            // A full sync adopts what is there: stale chains and jump rules from iptables-save.
            existing = try Existing(save: ipt.save(tables: ["filter", "nat", "mangle"]))
        }
        // A full sync's service rules wait in a file rather than in memory (30 MB at 10,000
        // services); a partial sync's are small.
        var spools = (chains: Spool(), rules: Spool())
        if changed == nil {
            spools = (try Spool(directory: NSTemporaryDirectory()), try Spool(directory: NSTemporaryDirectory()))
        }
        let p = try plan(snap, changed: changed, existing: existing, chainSpool: spools.chains, ruleSpool: spools.rules)
        do {
            if !p.isEmpty { try ipt.restore(input: p.parts) }
        } catch {
            state.forget()
            throw error
        }
        applied = p.applied
        lastLargeCluster = large
        state.synced()
        for e in udpHistory.update(current: snap, changed: changed, cleaner: conntrack) {
            logger.warning("failed to delete stale conntrack entries: \(e)")
        }
        if p.full {
            rulesOwned = p.rulesOwnedChange
        } else {
            for (t, d) in p.rulesOwnedChange { rulesOwned[t, default: 0] += d }
        }
        return SyncOutcome(full: p.full, objectsWritten: p.linesWritten, rulesWritten: p.rulesWritten, rulesOwned: rulesOwned)
    }

    public func needsFullResync() async -> Bool {
        let lost = !ipt.chainExists(table: "mangle", chain: Chains.canary)
        if lost {
            lock.withLock { state.forget() }
            logger.info("canary chain \(Chains.canary) is gone: iptables was flushed, forcing a full resync")
        }
        return lost
    }

    /// Forget what was applied; the next sync is a full one.
    public func forceFullSync() { lock.withLock { state.forget() } }

    // MARK: planning

    /// What is in the kernel, from `iptables-save`: every chain, and the rules of
    /// the built-in chains (where our jump rules live; service chains' rules are not kept).
    struct Existing {
        var chains: [String: Set<String>] = [:]
        var rules: Set<String> = []
        /// How often each rule of `rules` is there (a render loaded twice by hand leaves two).
        var copies: [String: Int] = [:]
        init(save: String) {
            let parsed = IPTablesSave(save)
            chains = parsed.chains
            for (table, rs) in parsed.rules {
                for r in rs where IPTablesSave.builtinChains.contains(r.chain) {
                    rules.insert(table + " " + r.line)
                    copies[table + " " + r.line, default: 0] += 1
                }
            }
        }
        init() {}
    }

    /// Builds the restore input. `changed == nil` is a full sync; `existing == nil`
    /// with a full sync means a fresh node (render).
    func plan(_ snap: ProxySnapshot, changed: Set<NamespacedName>?, existing: Existing?,
              chainSpool natChains: Spool, ruleSpool natRules: Spool) throws -> SyncPlan {
        let large = Generator.isLargeCluster(snap)
        var gen = Generator(opts: opts, largeCluster: large)
        if let changed {
            return partialPlan(snap, changed: changed, gen: &gen)
        }
        var filterChains = ""
        var filterRules = ""
        var lines = 0
        // In memory (render), room for the whole output up front: grown by doubling, a 30 MB
        // string leaves as much again behind in freed copies. Pages reserved and never written
        // are not resident. A sync's spools go to files instead and reserve nothing.
        let endpointCount = snap.totalEndpoints
        natRules.reserveCapacity(snap.servicePorts.count * 700 + endpointCount * 320 + 4096)
        natChains.reserveCapacity((snap.servicePorts.count * 3 + endpointCount) * 32 + 4096)
        for c in Generator.filterChains { filterChains += ":\(c) - [0:0]\n" }
        for c in Generator.natChains { natChains += ":\(c) - [0:0]\n" }
        let postrouting = gen.postroutingRules()
        natRules += postrouting
        var natCount = lineCount(postrouting), filterCount = 0
        if let fw = gen.kubeletFirewallRule {
            filterCount += lineCount(fw)
            filterChains += ":\(Chains.kubeletFirewall) - [0:0]\n"
            filterRules += fw
        } else if existing?.chains["filter"]?.contains(Chains.kubeletFirewall) != true {
            filterChains += ":\(Chains.kubeletFirewall) - [0:0]\n"
        }
        var applied: [ServicePortName: AppliedService] = [:]
        applied.reserveCapacity(snap.servicePorts.count)
        // The chains written, to find stale ones: only needed when the kernel has service chains.
        let trackActive = existing?.chains["nat"]?.contains { Chains.isServiceChain(Substring($0)) } ?? false
        var active = Set<String>()
        // Service ports are generated in batches, each on every core (a port's rules depend on it
        // alone), and written in order: the output is the same, and at most one batch's rules
        // are held at a time.
        let names = snap.sortedNames
        var batchStart = 0
        var batch: [ServiceRules] = []
        for (index, name) in names.enumerated() {
            if index == batchStart + batch.count {
                batchStart = index
                batch = Self.generate(names[index..<min(index + Self.batchSize, names.count)], snap, gen: gen)
            }
            let r = batch[index - batchStart]
            for l in r.filterTop { filterRules += l; filterRules += "\n" }
            for l in r.natTop { natRules += l; natRules += "\n" }
            for c in r.chains {
                natChains += ":"; natChains += c; natChains += " - [0:0]\n"
                if trackActive { active.insert(c) }
            }
            natRules += r.chainRules
            lines += r.natTop.count + r.filterTop.count + r.chains.count
            let a = AppliedService(natTop: r.natTop, filterTop: r.filterTop, chains: r.chains, chainRuleLines: lineCount(r.chainRules))
            natCount += a.natRules
            filterCount += r.filterTop.count
            applied[name] = a
        }
        // Stale service chains left by an earlier run or by services that are gone.
        var stale: [String] = []
        for c in existing?.chains["nat"] ?? [] where Chains.isServiceChain(Substring(c)) && !active.contains(c) {
            stale.append(c)
        }
        stale.sort()
        for c in stale { natChains += ":\(c) - [0:0]\n" }
        for c in stale { natRules += "-X \(c)\n" }
        for l in gen.nodePortJumps() { natRules += l; natRules += "\n"; natCount += 1 }
        let forward = gen.forwardRules()
        filterRules += forward
        filterCount += lineCount(forward)

        // Jumps from the built-in chains, inserted where missing (upstream's EnsureRule(Prepend)).
        var jumps: [String: String] = [:]
        for j in Jumps.all + Jumps.kubelet {
            if let n = existing?.copies["\(j.table) \(j.spec)"] {
                // Present: extra copies (of a render loaded twice) go, one stays.
                for _ in 1..<max(n, 1) { jumps[j.table, default: ""] += j.deleteLine + "\n" }
                continue
            }
            jumps[j.table, default: ""] += "-I \(j.chain) 1 \(j.rule)\n"
        }
        let head = "*filter\n" + filterChains + ":\(Chains.canary) - [0:0]\n" + filterRules + (jumps["filter"] ?? "") + "COMMIT\n*nat\n"
        let tail = (jumps["nat"] ?? "") + "COMMIT\n*mangle\n:\(Chains.canary) - [0:0]\nCOMMIT\n"
        let parts: [CommandRunner.InputPart] = [.text(head), try natChains.finish(), .text(":\(Chains.canary) - [0:0]\n"),
                                                 try natRules.finish(), .text(tail)]
        let counts = ["filter": filterCount, "nat": natCount]
        return SyncPlan(parts: parts, applied: applied, full: true, linesWritten: lines, rulesWritten: counts, rulesOwnedChange: counts)
    }

    private func partialPlan(_ snap: ProxySnapshot, changed: Set<NamespacedName>, gen: inout Generator) -> SyncPlan {
        var applied = self.applied
        var names = Set<ServicePortName>()
        // Ports of changed services, old and new. Scan the old applied keys only for changed services.
        for (k, _) in self.applied where changed.contains(k.service) { names.insert(k) }
        for k in snap.servicePorts.keys where changed.contains(k.service) { names.insert(k) }
        var filterDel: [String] = [], filterAdd: [String] = []
        var natDel: [String] = [], natAdd: [String] = []
        var natChains = "", natRules = "", deletes = ""
        var lines = 0
        var natWritten = 0, natOwned = 0, filterOwned = 0
        for name in names.sorted() {
            let old = self.applied[name]
            var new: AppliedService?
            var r: ServiceRules?
            if let info = snap.servicePorts[name] {
                let rr = gen.rules(for: info, endpoints: snap.endpoints[name] ?? [], node: snap.node)
                r = rr
                new = AppliedService(natTop: rr.natTop, filterTop: rr.filterTop, chains: rr.chains, chainRuleLines: lineCount(rr.chainRules))
            }
            let oldNat = Set(old?.natTop ?? []), newNat = Set(new?.natTop ?? [])
            natDel += (old?.natTop ?? []).filter { !newNat.contains($0) }
            natAdd += (new?.natTop ?? []).filter { !oldNat.contains($0) }
            let oldF = Set(old?.filterTop ?? []), newF = Set(new?.filterTop ?? [])
            filterDel += (old?.filterTop ?? []).filter { !newF.contains($0) }
            filterAdd += (new?.filterTop ?? []).filter { !oldF.contains($0) }
            let newChains = Set(new?.chains.map(String.init) ?? [])
            if let r {
                for c in r.chains { natChains += ":\(c) - [0:0]\n" }
                natRules += r.chainRules
                lines += r.chains.count
                natWritten += new?.chainRuleLines ?? 0
            }
            natOwned += (new?.natRules ?? 0) - (old?.natRules ?? 0)
            filterOwned += (new?.filterTop.count ?? 0) - (old?.filterTop.count ?? 0)
            for c in old?.chains ?? [] where !newChains.contains(String(c)) {
                natChains += ":\(c) - [0:0]\n"
                deletes += "-X \(c)\n"
            }
            applied[name] = new
        }
        lines += natDel.count + natAdd.count + filterDel.count + filterAdd.count
        var s = ""
        if !filterDel.isEmpty || !filterAdd.isEmpty {
            s += "*filter\n"
            for l in filterDel { s += "-D" + l.dropFirst(2) + "\n" }
            for l in filterAdd { s += Self.insertAtTop(l) + "\n" }
            s += "COMMIT\n"
        }
        if !natChains.isEmpty || !natDel.isEmpty || !natAdd.isEmpty {
            s += "*nat\n" + natChains
            for l in natDel { s += "-D" + l.dropFirst(2) + "\n" }
            s += natRules
            for l in natAdd { s += Self.insertAtTop(l) + "\n" }
            s += deletes
            s += "COMMIT\n"
        }
        return SyncPlan(parts: [.text(s)], applied: applied, full: false, linesWritten: lines,
                        rulesWritten: ["filter": filterAdd.count, "nat": natWritten + natAdd.count],
                        rulesOwnedChange: ["filter": filterOwned, "nat": natOwned])
    }

    /// `-A CHAIN spec` → `-I CHAIN 1 spec`: new service rules go first, so the
    /// KUBE-NODEPORTS jump stays last in KUBE-SERVICES.
    static func insertAtTop(_ line: String) -> String {
        let rest = line.dropFirst(3)
        let chain = rest.prefix { $0 != " " }
        return "-I \(chain) 1" + rest.dropFirst(chain.count)
    }

    // MARK: cleanup

    /// Removes every chain and rule this mode creates (upstream's CleanupLeftovers),
    /// leaving other tools' rules alone.
    public func cleanup() async throws {
        try removeLeftovers()
    }

    /// The chains this mode creates (kubelet's KUBE-FIREWALL, which it also creates, is not its to delete).
    static let owned = OwnedChains(
        names: ["nat": [Chains.services, Chains.externalServices, Chains.nodePorts, Chains.postrouting, Chains.markMasq,
                        Chains.forward, Chains.proxyFirewall, Chains.canary],
                "filter": [Chains.services, Chains.externalServices, Chains.nodePorts, Chains.postrouting, Chains.markMasq,
                           Chains.forward, Chains.proxyFirewall, Chains.canary],
                "mangle": [Chains.canary]],
        prefixes: ["nat": Chains.servicePrefixes])

    /// As `cleanup()`; true when there was anything to remove.
    @discardableResult
    public func removeLeftovers() throws -> Bool {
        let removed = try ipt.removeOwned(Self.owned, jumps: Jumps.all)
        lock.withLock {
            applied = [:]
            state.forget()
            udpHistory = UDPFlowHistory()
        }
        return removed
    }
}
