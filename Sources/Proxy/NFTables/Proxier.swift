import Foundation
import KubeAPI
import Logging
import ProxySeam

/// kube-proxy's nftables mode, programmed through libnftnl.
///
/// The proxier keeps the objects each Service contributed at the last sync. A sync
/// regenerates the Services that changed, diffs their objects against what was
/// applied, and sends only the difference: chains created or rewritten, elements
/// added or deleted. Everything traffic can see changes in one transaction; on a
/// full sync, chains and sets nothing references yet go ahead in earlier ones, in
/// slices, because the kernel's cost per transaction grows faster than its size.
public final class NFTablesProxier: ProxyBackend, ProxyRenderer, @unchecked Sendable {
    public let mode = "nftables"
    let nft: any NFTablesInterface
    let opts: NFTablesOptions
    let conntrack: (any ConntrackCleaner)?
    let logger: Logger
    private let lock = NSLock()
    /// Largest number of changes in one preparatory transaction.
    public var prepareSliceSize = 20_000

    // What is applied; guarded by `lock` (the runner serializes syncs anyway).
    private var appliedFixed: FixedObjects?
    private var applied: [NamespacedName: ServiceObjects] = [:]
    /// How many Services hold each shared element (`ServiceObjects.shared`).
    private var sharedRefs: [SetElement: Int] = [:]
    /// False when the kernel may hold something else than `applied` (start, a
    /// failed transaction, drift): the next sync reads the table back first.
    private var state = KernelState()
    private var udpHistory = UDPFlowHistory()
    private var fixedCache: (cidrs: [CIDR], objects: FixedObjects)?
    /// Seconds the last sync spent planning and in the kernel, for benchmarks and logs.
    public private(set) var lastTimings: (plan: Double, kernel: Double, transactions: Int) = (0, 0, 0)

    init(interface: any NFTablesInterface, options: NFTablesOptions, conntrack: (any ConntrackCleaner)?, logger: Logger) {
        self.nft = interface
        self.opts = options
        self.conntrack = conntrack
        self.logger = logger
    }

    /// A proxier programming the kernel through `nft`.
    public convenience init(nft: SystemNFTables, options: NFTablesOptions, conntrack: (any ConntrackCleaner)? = nil,
                            logger: Logger = Logger(label: "switchyard.nftables")) {
        self.init(interface: nft, options: options, conntrack: conntrack, logger: logger)
    }

    /// A proxier over a fake kernel, for tests and for rendering.
    public convenience init(fake: FakeNFTables, options: NFTablesOptions, conntrack: (any ConntrackCleaner)? = nil,
                            logger: Logger = Logger(label: "switchyard.nftables")) {
        self.init(interface: fake, options: options, conntrack: conntrack, logger: logger)
    }

    // MARK: render

    /// The `nft -f` script a sync on a node without our table sends, one change per line.
    public func render(_ snapshot: ProxySnapshot) -> String { render(snapshot, preamble: "") }

    /// The script, after `preamble` (written in place: a large script is not copied to prepend it).
    func render(_ snapshot: ProxySnapshot, preamble: String) -> String {
        let fixed = Generator(opts: opts).fixed(serviceCIDRs: snapshot.serviceCIDRs)
        let plan = Self.fresh(fixed: fixed, services: Self.ordered(desired(snapshot)))
        // Room for the whole script up front (about 110 bytes an operation): grown by doubling, a
        // 40 MB string leaves as much again behind in copies.
        var out = ""
        out.reserveCapacity((plan.prepare.count + plan.commit.count) * 120)
        out += preamble
        let family = opts.family
        let addRule = "add rule \(family.nftPrefix) \(Names.table) "
        for ops in [plan.prepare, plan.commit] {
            for op in ops {
                if case let .addRule(chain, rule) = op {
                    // The common case written in place, without the line as a string of its own.
                    out += addRule; out += chain; out += " "; out += rule.text
                } else {
                    out += op.text(family: family)
                }
                out += "\n"
            }
        }
        return out
    }

    // MARK: sync

    public func sync(_ request: SyncRequest) async throws -> SyncOutcome {
        try lock.withLock { try syncLocked(request) }
    }

    /// The objects of every Service in the snapshot.
    private func desired(_ snap: ProxySnapshot) -> [NamespacedName: ServiceObjects] {
        let gen = Generator(opts: opts)
        var byService: [NamespacedName: [ServicePortInfo]] = [:]
        for (name, info) in snap.servicePorts { byService[name.service, default: []].append(info) }
        var out: [NamespacedName: ServiceObjects] = [:]
        for (svc, ports) in byService {
            let o = gen.objects(for: ports, snapshot: snap)
            if !o.isEmpty { out[svc] = o }
        }
        return out
    }

    func syncLocked(_ request: SyncRequest) throws -> SyncOutcome {
        let started = ContinuousClock.now
        let snap = request.snapshot
        let gen = Generator(opts: opts)
        // The fixed objects depend on the service CIDRs only; regenerating and
        // comparing them (a hundred chains in the maps layout) on every partial sync
        // would cost more than the change itself.
        let fixedChanged = fixedCache?.cidrs != snap.serviceCIDRs
        let fixed = fixedChanged ? gen.fixed(serviceCIDRs: snap.serviceCIDRs) : fixedCache!.objects
        var full = state.mustSyncFully(request)
        var plan: Plan
        // What becomes applied: everything (after a read-back), or these Services
        // changed in place (copying `applied` would cost O(services) per sync).
        var replacement: [NamespacedName: ServiceObjects]?
        var updates: [(NamespacedName, ServiceObjects?)] = []
        var sharedDelta: [SetElement: Int] = [:]
        var rebuildShared = false
        if !state.isKnown {
            let all = desired(snap)
            replacement = all
            rebuildShared = true
            let kernel = try nft.readTable()
            if let kernel {
                plan = Self.adopt(kernel, fixed: fixed, services: Self.ordered(all))
            } else {
                plan = Self.fresh(fixed: fixed, services: Self.ordered(all))
            }
            full = true
        } else {
            // Which Services to regenerate: the changed ones, or all of them.
            var changed: Set<NamespacedName>
            if let c = request.changedServices {
                changed = c
            } else {
                changed = Set(applied.keys)
                for n in snap.servicePorts.keys { changed.insert(n.service) }
            }
            var byService: [NamespacedName: [ServicePortInfo]] = [:]
            for name in snap.ports(of: changed) {
                if let info = snap.servicePorts[name] { byService[name.service, default: []].append(info) }
            }
            var pairs: [(ServiceObjects?, ServiceObjects?)] = []
            for svc in changed.sorted() {
                let new = byService[svc].map { gen.objects(for: $0, snapshot: snap) }.flatMap { $0.isEmpty ? nil : $0 }
                let old = applied[svc]
                if old == new { continue }
                pairs.append((old, new))
                updates.append((svc, new))
            }
            plan = Self.diff(oldFixed: appliedFixed, newFixed: fixedChanged ? fixed : nil, services: pairs,
                             sharedRefs: sharedRefs, sharedDelta: &sharedDelta)
        }
        // Small plans go in one transaction; large ones send what nothing
        // references yet ahead, in slices.
        var txs: [[Op]] = []
        if plan.prepare.count + plan.commit.count <= prepareSliceSize {
            txs = [plan.prepare + plan.commit]
        } else {
            var i = 0
            while i < plan.prepare.count {
                txs.append(Array(plan.prepare[i..<min(plan.prepare.count, i + prepareSliceSize)]))
                i += prepareSliceSize
            }
            txs.append(plan.commit)
        }
        let planned = ContinuousClock.now
        defer {
            let end = ContinuousClock.now
            lastTimings = ((planned - started).seconds, (end - planned).seconds, txs.count)
        }
        do {
            try nft.apply(txs)
        } catch {
            state.forget()
            throw error
        }
        state.synced()
        appliedFixed = fixed
        fixedCache = (snap.serviceCIDRs, fixed)
        if let replacement { applied = replacement }
        for (svc, o) in updates { applied[svc] = o }
        if rebuildShared {
            sharedRefs = [:]
            for o in applied.values { for e in o.shared { sharedRefs[e, default: 0] += 1 } }
        } else {
            for (e, d) in sharedDelta {
                let n = (sharedRefs[e] ?? 0) + d
                sharedRefs[e] = n > 0 ? n : nil
            }
        }
        for e in udpHistory.update(current: snap, changed: full ? nil : request.changedServices, cleaner: conntrack) {
            logger.warning("failed to delete stale conntrack entries: \(e)")
        }
        return SyncOutcome(full: full, objectsWritten: plan.opCount)
    }

    public func needsFullResync() async -> Bool {
        lock.withLock {
            guard state.isKnown, let fixed = appliedFixed else { return false }
            do {
                guard let k = try nft.readTable() else {
                    logger.warning("nftables table \(opts.family.nftPrefix) kube-proxy is gone; resyncing")
                    state.forget()
                    return true
                }
                var chains = Set(fixed.chains.map(\.name))
                var sets = Set(fixed.sets.map(\.name))
                for o in applied.values {
                    for c in o.chains { chains.insert(c.name) }
                    for s in o.sets { sets.insert(s.name) }
                }
                if k.chains != chains || k.sets != sets {
                    logger.warning("nftables table \(opts.family.nftPrefix) kube-proxy was changed by someone else; resyncing")
                    state.forget()
                    return true
                }
                let counts = try nft.ruleCounts(fixed.chains.map(\.name))
                for c in fixed.chains where counts[c.name] != c.rules.count {
                    logger.warning("nftables chain \(c.name) was changed by someone else; resyncing")
                    state.forget()
                    return true
                }
                return false
            } catch {
                logger.warning("reading back nftables table failed: \(error)")
                state.forget()
                return true
            }
        }
    }

    /// Seconds per transaction of the last sync, when programming the kernel.
    public var lastTransactionSeconds: [Double] { (nft as? SystemNFTables)?.lastTransactionSeconds ?? [] }

    /// Kernel costs of small transactions (see `SystemNFTables.probeKernelCosts`).
    public func probe() throws -> [(String, Double)] {
        guard let s = nft as? SystemNFTables else { return [] }
        return try s.probeKernelCosts()
    }

    public func cleanup() async throws {
        try removeLeftovers()
    }

    /// As `cleanup()`; true when there was a table to delete.
    @discardableResult
    public func removeLeftovers() throws -> Bool {
        try lock.withLock {
            let had = try nft.readTable() != nil
            if had { try nft.apply([[.deleteTable]]) }
            state.forget()
            applied = [:]
            appliedFixed = nil
            sharedRefs = [:]
            return had
        }
    }

    // MARK: plans

    /// Services by name, so renders and full syncs are deterministic.
    static func ordered(_ s: [NamespacedName: ServiceObjects]) -> [ServiceObjects] {
        s.sorted { $0.key < $1.key }.map(\.value)
    }

    /// Chains first, then their rules: a chain's rules may jump to chains declared after it.
    private static func declareAndFill(_ chains: [Chain], into ops: inout [Op]) {
        for c in chains { ops.append(.addChain(Chain(c.name, base: c.base, comment: c.comment))) }
        for c in chains { for r in c.rules { ops.append(.addRule(c.name, r)) } }
    }

    private static func groupElements(_ els: [SetElement]) -> [(String, [Element])] {
        var order: [String] = []
        var by: [String: [Element]] = [:]
        for e in els {
            if by[e.set] == nil { order.append(e.set) }
            by[e.set, default: []].append(e.element)
        }
        return order.map { ($0, by[$0]!) }
    }

    /// Each shared element any Service holds, once.
    static func sharedElements(_ services: [ServiceObjects]) -> [SetElement] {
        var all = Set<SetElement>()
        for o in services { all.formUnion(o.shared) }
        return all.sorted()
    }

    /// A table built from nothing: everything but the base chains is unreachable
    /// until they are created, so only they go in the final transaction.
    static func fresh(fixed: FixedObjects, services: [ServiceObjects]) -> Plan {
        var p = Plan()
        p.prepare.append(.addTable)
        for s in fixed.sets { p.prepare.append(.addSet(s)) }
        for o in services { for s in o.sets { p.prepare.append(.addSet(s)) } }
        let helpers = fixed.chains.filter { $0.base == nil }
        declareAndFill(helpers, into: &p.prepare)
        for o in services { declareAndFill(o.chains, into: &p.prepare) }
        var elements = fixed.elements
        var seen = Set(elements)
        for o in services { for e in o.elements where seen.insert(e).inserted { elements.append(e) } }
        elements += sharedElements(services)
        for (set, els) in groupElements(elements) { p.prepare.append(.addElements(set, els)) }
        declareAndFill(fixed.chains.filter { $0.base != nil }, into: &p.commit)
        return p
    }

    /// Takes over a table whose contents are unknown (a restart, or drift): chains
    /// that exist are flushed and refilled and sets refilled, in one transaction;
    /// missing ones are created ahead; leftovers are deleted.
    static func adopt(_ k: KernelTable, fixed: FixedObjects, services: [ServiceObjects]) -> Plan {
        var p = Plan()
        var allChains = fixed.chains.filter { $0.base == nil }
        for o in services { allChains += o.chains }
        let baseChains = fixed.chains.filter { $0.base != nil }
        var allSets = fixed.sets
        for o in services { allSets += o.sets }
        let wantedChains = Set((allChains + baseChains).map(\.name))
        let wantedSets = Set(allSets.map(\.name))

        for s in allSets where !k.sets.contains(s.name) { p.prepare.append(.addSet(s)) }
        declareAndFill(allChains.filter { !k.chains.contains($0.name) }, into: &p.prepare)

        // Base chains are recreated so their hook and priority are ours.
        for c in baseChains where k.chains.contains(c.name) { p.commit.append(.flushChain(c.name)) }
        for c in baseChains where k.chains.contains(c.name) { p.commit.append(.deleteChain(c.name)) }
        for c in allChains where k.chains.contains(c.name) {
            p.commit.append(.flushChain(c.name))
        }
        let stale = k.chains.subtracting(wantedChains).sorted()
        for c in stale { p.commit.append(.flushChain(c)) }
        for s in allSets where k.sets.contains(s.name) { p.commit.append(.flushSet(s.name)) }
        for c in allChains where k.chains.contains(c.name) {
            for r in c.rules { p.commit.append(.addRule(c.name, r)) }
        }
        var elements = fixed.elements
        var seen = Set(elements)
        for o in services { for e in o.elements where seen.insert(e).inserted { elements.append(e) } }
        elements += sharedElements(services)
        for (set, els) in groupElements(elements) { p.commit.append(.addElements(set, els)) }
        for c in stale { p.commit.append(.deleteChain(c)) }
        for s in k.sets.subtracting(wantedSets).sorted() { p.commit.append(.deleteSet(s)) }
        declareAndFill(baseChains, into: &p.commit)
        return p
    }

    /// The changes from what was applied to what is wanted, for the fixed objects
    /// and the Services given; nothing else is looked at, so the size of the result
    /// depends only on what changed.
    /// `newFixed` nil means the fixed objects did not change and are left out.
    static func diff(oldFixed: FixedObjects?, newFixed: FixedObjects?,
                     services: [(ServiceObjects?, ServiceObjects?)],
                     sharedRefs: [SetElement: Int] = [:], sharedDelta: inout [SetElement: Int]) -> Plan {
        for (o, n) in services {
            for e in o?.shared ?? [] { sharedDelta[e, default: 0] -= 1 }
            for e in n?.shared ?? [] { sharedDelta[e, default: 0] += 1 }
        }
        // A shared element goes in when its first holder comes, and out when its last one goes.
        var sharedAdd: [SetElement] = [], sharedDel: [SetElement] = []
        for (e, d) in sharedDelta where d != 0 {
            let before = sharedRefs[e] ?? 0
            if before == 0 && before + d > 0 { sharedAdd.append(e) }
            if before > 0 && before + d <= 0 { sharedDel.append(e) }
        }
        sharedAdd.sort()
        sharedDel.sort()
        var oldChains: [String: Chain] = [:], newChains: [String: Chain] = [:]
        var newChainOrder: [String] = []
        var oldSets: [String: SetDef] = [:], newSets: [String: SetDef] = [:]
        var newSetOrder: [String] = []
        var oldElements = Set<SetElement>(), newElements: [SetElement] = []
        var newElementSet = Set<SetElement>()

        func take(_ o: ServiceObjects?, old: Bool) {
            guard let o else { return }
            for c in o.chains {
                if old { oldChains[c.name] = c } else if newChains.updateValue(c, forKey: c.name) == nil { newChainOrder.append(c.name) }
            }
            for s in o.sets {
                if old { oldSets[s.name] = s } else if newSets.updateValue(s, forKey: s.name) == nil { newSetOrder.append(s.name) }
            }
            for e in o.elements {
                if old { oldElements.insert(e) } else if newElementSet.insert(e).inserted { newElements.append(e) }
            }
        }
        if let newFixed {
            if let f = oldFixed { take(ServiceObjects(chains: f.chains, sets: f.sets, elements: f.elements), old: true) }
            take(ServiceObjects(chains: newFixed.chains, sets: newFixed.sets, elements: newFixed.elements), old: false)
        }
        for (o, n) in services {
            take(o, old: true)
            take(n, old: false)
        }

        var p = Plan()
        if oldFixed == nil && newFixed != nil { p.prepare.append(.addTable) }
        for name in newSetOrder where oldSets[name] == nil { p.prepare.append(.addSet(newSets[name]!)) }
        let created = newChainOrder.filter { oldChains[$0] == nil }.map { newChains[$0]! }
        // New chains nothing references yet may go ahead; new base chains are hooked,
        // so they go with the rest.
        declareAndFill(created.filter { $0.base == nil }, into: &p.prepare)

        for (set, els) in groupElements(sharedDel) { p.commit.append(.deleteElements(set, els)) }
        let gone = oldElements.subtracting(newElementSet)
        // Elements whose key stays but whose value changes are deleted first.
        for (set, els) in groupElements(gone.sorted { $0.set + $0.element.keyText < $1.set + $1.element.keyText }) {
            p.commit.append(.deleteElements(set, els))
        }
        for name in newChainOrder {
            guard let old = oldChains[name], let new = newChains[name], old != new else { continue }
            if old.base != new.base {
                p.commit.append(.flushChain(name))
                p.commit.append(.deleteChain(name))
                declareAndFill([new], into: &p.commit)
            } else {
                p.commit.append(.flushChain(name))
                for r in new.rules { p.commit.append(.addRule(name, r)) }
            }
        }
        declareAndFill(created.filter { $0.base != nil }, into: &p.commit)
        let added = newElements.filter { !oldElements.contains($0) }
        for (set, els) in groupElements(added) { p.commit.append(.addElements(set, els)) }
        for (set, els) in groupElements(sharedAdd) { p.commit.append(.addElements(set, els)) }
        let staleChains = oldChains.keys.filter { newChains[$0] == nil }.sorted()
        for c in staleChains { p.commit.append(.flushChain(c)) }
        for c in staleChains { p.commit.append(.deleteChain(c)) }
        for s in oldSets.keys.filter({ newSets[$0] == nil }).sorted() { p.commit.append(.deleteSet(s)) }
        return p
    }
}


extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
