import Foundation
import KubeAPI
import Logging
import Netlink
import ProxySeam
import IPTablesKit

/// The IPVS mode's kernel sync: every sync diffs the plan against what the kernel holds (so a
/// restarted proxy adopts existing state and changes nothing that is already right), binds the
/// service addresses to the `kube-ipvs0` dummy link, and terminates real servers gracefully:
/// a removed TCP/SCTP real server keeps weight 0 until its connections are gone, a UDP one goes
/// at once. Beside IPVS it keeps kube-proxy's ipsets and the few iptables rules that match them
/// (masquerading, NodePorts, load balancer source ranges, the kube-ipvs0 access filter): a
/// service change adds and removes set entries; the rules are rewritten only when a set becomes
/// empty or stops being so.
public final class IPVSProxier: ProxyBackend, @unchecked Sendable {
    public let mode = "ipvs"
    /// One sync, cleanup or read at a time: the state below is only touched under it.
    private let lock = NSLock()
    let ipvs: any IPVSInterface
    let links: any LinkInterface
    let ipt: any IPTablesInterface
    let ipset: any IPSetInterface
    let options: IPVSOptions
    let logger: Logger
    /// What each service put into the ipsets, each entry's number of services, and the
    /// iptables text the last sync wrote.
    private var shares: [NamespacedName: IPVSRuleShare] = [:]
    private var entryRefs: [String: [String: Int]] = [:]
    private var dropRefs: [String: Int] = [:]
    private var lastRules: String?
    private var sysctlsSet = false
    private var timings: (rules: Double, total: Double) = (0, 0)
    /// Seconds the last sync spent on the ipsets and iptables rules, and in all (for the benchmark).
    public var lastTimings: (rules: Double, total: Double) { lock.withLock { timings } }
    /// Addresses this proxier manages virtual servers on (bound ones and NodePort addresses), so
    /// a virtual server someone else made on another address is left alone.
    private var managedAddresses = Set<[UInt8]>()
    /// Real servers kept at weight 0 until their connections drain.
    private var terminating: [String: (service: IPVSService, dest: IPVSDestination)] = [:]
    /// What the last sync left in the kernel, by virtual server: a sync that names the services
    /// that changed touches only theirs (an endpoint change costs the same at any table size).
    private var state = KernelState()
    private var applied: [String: IPVSVirtualServer] = [:]
    /// The virtual servers of each service in `applied`, so a partial sync finds them without a scan.
    private var keysByService: [NamespacedName: Set<String>] = [:]
    private var lastDummyIndex: Int32 = -1
    private var lastNodeAddresses: [String] = []
    /// kube-ipvs0's addresses by the service that needs them, and how many services need each.
    private var boundBy: [NamespacedName: Set<IPNet>] = [:]
    private var boundRefs: [IPNet: Int] = [:]

    static func nets(_ addresses: Set<String>) -> Set<IPNet> { Set(addresses.compactMap { IPNet("\($0)/\($0.contains(":") ? 128 : 32)") }) }

    /// Rebuilds the per-service address bookkeeping from a snapshot (after a full sync).
    func recordBound(_ snap: ProxySnapshot) {
        boundBy = [:]
        boundRefs = [:]
        for name in snap.servicePorts.keys { boundBy[name.service, default: []] = [] }
        for (svc, _) in boundBy {
            let nets = Self.nets(IPVSPlan.boundAddresses(snap, of: snap.ports(of: [svc]), family: options.family))
            boundBy[svc] = nets
            for n in nets { boundRefs[n, default: 0] += 1 }
        }
    }

    public init(ipvs: any IPVSInterface, links: any LinkInterface, ipt: any IPTablesInterface, ipset: any IPSetInterface, options: IPVSOptions,
                logger: Logger = Logger(label: "switchyard.ipvs")) {
        self.ipvs = ipvs
        self.links = links
        self.ipt = ipt
        self.ipset = ipset
        self.options = options
        self.logger = logger
    }

    /// Whether `updateService` is needed to turn `have` into `want`: scheduler, persistence, its
    /// timeout and netmask (the kernel reports flag bits of its own, so only persistence counts).
    static func settingsDiffer(_ have: IPVSService, _ want: IPVSService) -> Bool {
        have.scheduler != want.scheduler || have.flags & IPVSService.persistent != want.flags & IPVSService.persistent
            || have.timeout != want.timeout || have.netmask != want.netmask
    }

    static func key(_ s: IPVSService) -> String { "\(s.proto)/\(IPNet.format(s.address))/\(s.port)/\(s.fwmark)" }
    static func key(_ s: IPVSService, _ d: IPVSDestination) -> String { key(s) + "->" + IPNet.format(d.address) + ":\(d.port)" }

    /// `kube-ipvs0`, made if missing (a dummy link, down as upstream leaves it).
    func ensureDummy() throws -> Link {
        if let l = try links.link(named: IPVSPlan.dummyInterface) { return l }
        do {
            try links.addDummy(IPVSPlan.dummyInterface, mtu: nil)
        } catch let e as NetlinkError where e.errno == EEXIST {}
        return try links.mustLink(IPVSPlan.dummyInterface)
    }

    /// The sysctls kube-proxy sets for the IPVS mode, in the namespace IPVS is programmed in:
    /// conntrack keeps IPVS connections (the masquerade rules need it), connections to a removed
    /// real server are rescheduled or dropped (so UDP flows move on), persistence templates of a
    /// weight-0 server expire, forwarding is on (the IPv6 proxier's: IPv6 forwarding; the
    /// `net.ipv4.vs` settings are IPVS's own, for both families); strict ARP when asked.
    func ensureSysctls() throws {
        guard !sysctlsSet else { return }
        var wanted = [("net.ipv4.vs.conntrack", "1"), ("net.ipv4.vs.expire_nodest_conn", "1"),
                      ("net.ipv4.vs.expire_quiescent_template", "1"),
                      options.family == .ipv6 ? ("net.ipv6.conf.all.forwarding", "1") : ("net.ipv4.ip_forward", "1")]
        if options.strictARP { wanted += [("net.ipv4.conf.all.arp_ignore", "1"), ("net.ipv4.conf.all.arp_announce", "2")] }
        for (k, v) in wanted { try ipvs.setSysctl(k, v) }
        sysctlsSet = true
    }

    public func sync(_ request: SyncRequest) async throws -> SyncOutcome {
        try lock.withLock { try syncLocked(request) }
    }

    func syncLocked(_ request: SyncRequest) throws -> SyncOutcome {
        let start = ContinuousClock.now
        var rulesTime = Duration.zero
        defer { timings = (Self.seconds(rulesTime), Self.seconds(ContinuousClock.now - start)) }
        try ensureSysctls()
        let dummy = try ensureDummy()
        var opts = options
        let family = options.family
        if opts.nodeAddressesFromKernel && opts.nodePortIPs == nil {
            // At every sync, as upstream: the node's own addresses of this family (not loopback,
            // not link-local, not kube-ipvs0's), inside --nodeport-addresses when given; one
            // address on two links counts once.
            let ips = try links.addresses(of: nil as String?).filter { a in
                a.index != dummy.index && a.address.isIPv6 == (family == .ipv6) && a.address.address.first != 127 && a.scope == 0
            }.compactMap { IPAddress($0.address.ip) }.filter { ip in opts.nodePortCIDRs.map { $0.contains { $0.contains(ip) } } ?? true }
            var seen = Set<String>()
            opts.nodePortIPs = ips.filter { seen.insert($0.description).inserted }
        }
        for ip in opts.nodePortIPs ?? request.snapshot.node.ips where ip.family == family {
            if let b = IPNet.parseIP(ip.description) { managedAddresses.insert(b) }
        }
        // What a partial sync cannot see: kube-ipvs0 re-made, or the node's addresses changed.
        let nodeKey = (opts.nodePortIPs ?? request.snapshot.node.ips).map(\.description).sorted()
        if dummy.index != lastDummyIndex || nodeKey != lastNodeAddresses { state.forget() }
        lastDummyIndex = dummy.index
        lastNodeAddresses = nodeKey
        // A partial sync plans only the services that changed.
        let partial = !state.mustSyncFully(request)
        let plan = IPVSPlan(request.snapshot, options: opts, only: partial ? request.changedServices : nil)
        var written = 0
        if opts.nodeIP == nil { opts.nodeIP = (opts.nodePortIPs ?? request.snapshot.node.ips).first { $0.family == family } }

        // Set entries and rules first (new addresses are matched before IPVS takes their traffic),
        // entries that went away last.
        let removals: String
        do {
            let t = ContinuousClock.now
            (removals, written) = try syncRules(request.snapshot, options: opts, changed: partial ? request.changedServices : nil)
            rulesTime = ContinuousClock.now - t
        } catch {
            state.forget()
            throw error
        }
        if let changed = request.changedServices, partial {
            var out = try partialSync(plan, request.snapshot, changed: changed, dummy: dummy)
            out.objectsWritten += written + (try removeEntries(removals))
            return out
        }
        // 1. The addresses on kube-ipvs0: exactly the plan's.
        let want = Self.nets(Set(plan.boundAddresses))
        state.forget()   // until this full sync has gone through
        // Only this family's: the other family's proxier keeps its own addresses there.
        let have = Set(try links.addresses(of: dummy).map(\.address).filter { $0.isIPv6 == (family == .ipv6) })
        for a in want.subtracting(have) {
            // IPv6 ones without duplicate address detection: on the down dummy link it would
            // leave them tentative, and they are the node's own by definition.
            try links.addAddress(dummy, a, noDAD: a.isIPv6)
            written += 1
        }
        for a in have.subtracting(want) {
            try links.deleteAddress(dummy.name, a)
            written += 1
        }

        // 2. Virtual servers and real servers, against what the kernel holds.
        for s in plan.servers { managedAddresses.insert(s.service.address) }
        for a in have { managedAddresses.insert(a.address) }
        // This family's virtual servers: the other family's proxier owns the rest of the table.
        let current = try ipvs.services().filter { $0.isIPv6 == (family == .ipv6) }
        let currentByKey = Dictionary(current.map { (Self.key($0), $0) }, uniquingKeysWith: { a, _ in a })
        var planned = Set<String>()
        for vs in plan.servers {
            let k = Self.key(vs.service)
            planned.insert(k)
            if let cur = currentByKey[k], Self.settingsDiffer(cur, vs.service) {
                try ipvs.updateService(vs.service)
                written += 1
            }
            var existed = currentByKey[k] != nil
            if !existed {
                do {
                    try ipvs.addService(vs.service)
                } catch let e as NetlinkError where e.errno == EEXIST {
                    try ipvs.updateService(vs.service)   // made meanwhile: make it ours
                    existed = true
                }
                written += 1
            }
            written += try syncRealServers(vs.service, want: vs.realServers, existing: existed)
        }
        // Virtual servers of ours that the plan no longer has.
        for cur in current where !planned.contains(Self.key(cur)) && managedAddresses.contains(cur.address) {
            try ipvs.deleteService(cur)
            written += 1
            terminating = terminating.filter { !$0.key.hasPrefix(Self.key(cur) + "->") }
        }
        applied = Dictionary(plan.servers.map { (Self.key($0.service), $0) }, uniquingKeysWith: { a, _ in a })
        state.synced()
        keysByService = [:]
        for vs in plan.servers { keysByService[vs.owner.service, default: []].insert(Self.key(vs.service)) }
        recordBound(request.snapshot)
        written += try removeEntries(removals)
        return SyncOutcome(full: true, objectsWritten: written)
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    /// Adds what the ipsets lack and (re)writes the iptables rules; returns the `ipset restore`
    /// lines that delete what is no longer wanted, to run once IPVS no longer needs it. A full
    /// sync compares with the kernel's sets; a partial one with what the changed services had.
    func syncRules(_ snap: ProxySnapshot, options opts: IPVSOptions, changed: Set<NamespacedName>?) throws -> (String, Int) {
        let nodeIPs = (opts.nodePortIPs ?? snap.node.ips).filter { $0.family == opts.family }
        var newShares = changed == nil ? [:] : shares
        var refs = changed == nil ? [:] : entryRefs
        var drops = changed == nil ? [:] : dropRefs
        var adds = "", dels = ""
        var written = 0
        let services = changed ?? Set(snap.servicePorts.keys.map(\.service))
        for svc in services {
            let now = IPVSRules.share(snap, of: snap.ports(of: [svc]), nodeIPs: nodeIPs, options: opts)
            let before = changed == nil ? IPVSRuleShare() : (newShares[svc] ?? IPVSRuleShare())
            guard now != before else { continue }
            for set in Set(now.entries.keys).union(before.entries.keys) {
                let n = now.entries[set] ?? [], b = before.entries[set] ?? []
                for e in n.subtracting(b) {
                    refs[set, default: [:]][e, default: 0] += 1
                    if refs[set]![e] == 1 && changed != nil { adds += "add \(set) \(e)\n" }
                }
                for e in b.subtracting(n) {
                    refs[set]![e]! -= 1
                    if refs[set]![e] == 0 {
                        refs[set]![e] = nil
                        dels += "del \(set) \(e)\n"
                    }
                }
            }
            for d in now.outDrops.subtracting(before.outDrops) { drops[d, default: 0] += 1 }
            for d in before.outDrops.subtracting(now.outDrops) {
                drops[d]! -= 1
                if drops[d] == 0 { drops[d] = nil }
            }
            newShares[svc] = now.isEmpty ? nil : now
        }
        if changed == nil {
            // Against the kernel: every set made (as upstream, even empty ones), what is missing
            // added, what is extra removed at the end.
            let kernel = try ipset.save()
            adds = IPSetKind.all(opts.family).map { $0.createLine + "\n" }.joined()
            for k in IPSetKind.all(opts.family) {
                let want = Set((refs[k.name] ?? [:]).keys), have = kernel[k.name] ?? []
                for e in want.subtracting(have).sorted() { adds += "add \(k.name) \(e)\n" }
                for e in have.subtracting(want).sorted() { dels += "del \(k.name) \(e)\n" }
            }
        }
        if !adds.isEmpty {
            try ipset.restore(adds)
            written += adds.split(separator: "\n").filter { $0.hasPrefix("add ") }.count
        }
        let nonEmpty = Set(refs.filter { !$0.value.isEmpty }.keys)
        var text = IPVSRules.restoreText(nonEmpty: nonEmpty, outDrops: drops.keys.sorted(), options: opts)
        if changed == nil {
            // The jumps from the built-in chains, each put first where it is missing; counted as a
            // write only when the kernel's rules differ afterwards (a restart that finds them right
            // changes nothing).
            let rulesText = text
            let parsed = IPTablesSave(try ipt.save(tables: ["nat", "filter"]))
            for j in parsed.missing(IPVSRules.jumps) {
                let marker = j.table == "nat" ? "COMMIT\n*filter\n" : "COMMIT\n"
                if let r = text.range(of: marker, options: j.table == "nat" ? [] : .backwards) {
                    text.insert(contentsOf: j.addLine + "\n", at: r.lowerBound)
                }
            }
            try ipt.restore(text)
            lastRules = rulesText
            if IPVSRules.ours(parsed) != IPVSRules.ours(IPTablesSave(try ipt.save(tables: ["nat", "filter"]))) { written += 1 }
        } else if text != lastRules {
            try ipt.restore(text)
            lastRules = text
            written += 1
        }
        shares = newShares
        entryRefs = refs
        dropRefs = drops
        return (dels, written)
    }

    func removeEntries(_ dels: String) throws -> Int {
        guard !dels.isEmpty else { return 0 }
        do {
            try ipset.restore(dels)
        } catch {
            state.forget()
            throw error
        }
        return dels.split(separator: "\n").count
    }

    /// Only the virtual servers of `changed` services (and addresses that moved), against what
    /// the last sync applied; real servers of those are still compared with the kernel's, whose
    /// connection counts graceful termination needs.
    func partialSync(_ plan: IPVSPlan, _ snap: ProxySnapshot, changed: Set<NamespacedName>, dummy: Link) throws -> SyncOutcome {
        var written = 0
        var cache = applied
        state.forget()   // a failure below leaves the next sync a full one
        // kube-ipvs0: only the changed services' addresses, counted so a shared one stays while needed.
        for svc in changed {
            let now = Self.nets(IPVSPlan.boundAddresses(snap, of: snap.ports(of: [svc]), family: options.family))
            let before = boundBy[svc] ?? []
            for a in now.subtracting(before) {
                boundRefs[a, default: 0] += 1
                if boundRefs[a] == 1 {
                    do { try links.addAddress(dummy, a, noDAD: a.isIPv6) } catch let e as NetlinkError where e.errno == EEXIST {}
                    written += 1
                }
            }
            for a in before.subtracting(now) {
                boundRefs[a, default: 1] -= 1
                if boundRefs[a] == 0 {
                    boundRefs[a] = nil
                    do { try links.deleteAddress(dummy.name, a) } catch let e as NetlinkError where e.errno == EADDRNOTAVAIL {}
                    written += 1
                }
            }
            boundBy[svc] = now.isEmpty ? nil : now
        }
        var planned = Set<String>()
        for vs in plan.servers where changed.contains(vs.owner.service) {
            let k = Self.key(vs.service)
            planned.insert(k)
            managedAddresses.insert(vs.service.address)
            if let old = cache[k] {
                if Self.settingsDiffer(old.service, vs.service) {
                    try ipvs.updateService(vs.service)
                    written += 1
                }
            } else {
                try ipvs.addService(vs.service)
                written += 1
            }
            written += try syncRealServers(vs.service, want: vs.realServers, existing: cache[k] != nil)
            cache[k] = vs
        }
        for svc in changed {
            for k in keysByService[svc] ?? [] where !planned.contains(k) {
                guard let old = cache[k], old.owner.service == svc else { continue }
                try ipvs.deleteService(old.service)
                written += 1
                cache[k] = nil
                for t in terminating.keys where t.hasPrefix(k + "->") { terminating[t] = nil }
            }
            keysByService[svc] = nil
        }
        for vs in plan.servers { keysByService[vs.owner.service, default: []].insert(Self.key(vs.service)) }
        // Real servers draining at weight 0: removed once their connections are gone (or forgotten
        // when someone else removed them).
        for (k, entry) in terminating {
            let now = try? ipvs.destinations(of: entry.service)
            guard let cur = now?.first(where: { $0.sameDestination(entry.dest) }) else { terminating[k] = nil; continue }
            if cur.weight == 0 && cur.activeConnections + cur.inactiveConnections == 0 {
                try ipvs.deleteDestination(cur, from: entry.service)
                terminating[k] = nil
                written += 1
            }
        }
        applied = cache
        state.synced()
        return SyncOutcome(full: false, objectsWritten: written)
    }

    /// Adds missing real servers, restores weights, and terminates removed ones gracefully.
    func syncRealServers(_ svc: IPVSService, want: [IPVSDestination], existing: Bool) throws -> Int {
        var written = 0
        let have = existing ? try ipvs.destinations(of: svc) : []
        for d in want {
            let k = Self.key(svc, d)
            terminating[k] = nil
            if let cur = have.first(where: { $0.sameDestination(d) }) {
                if cur.weight != d.weight || cur.forward != d.forward {
                    try ipvs.updateDestination(d, of: svc)
                    written += 1
                }
            } else {
                try ipvs.addDestination(d, to: svc)
                written += 1
            }
        }
        for cur in have where !want.contains(where: { $0.sameDestination(cur) }) {
            let k = Self.key(svc, cur)
            let busy = cur.activeConnections + cur.inactiveConnections > 0
            // As kube-proxy: UDP and SCTP real servers go at once, TCP ones drain at weight 0.
            if svc.proto == IPVSService.udp || svc.proto == IPVSService.sctp || !busy {
                try ipvs.deleteDestination(cur, from: svc)
                terminating[k] = nil
                written += 1
            } else if cur.weight != 0 {
                var zero = cur
                zero.weight = 0
                try ipvs.updateDestination(zero, of: svc)
                terminating[k] = (svc, zero)
                written += 1
            } else {
                terminating[k] = (svc, cur)
            }
        }
        return written
    }

    /// Real servers still draining (weight 0, connections open), as `proto/address/port->endpoint`.
    public var draining: [String] { lock.withLock { terminating.keys.sorted() } }

    public func needsFullResync() async -> Bool {
        // Drained real servers are removed by the next sync; ask for one while any are waiting.
        lock.withLock { !terminating.isEmpty }
    }

    /// Removes every virtual server on a managed address, `kube-ipvs0`, our rules and ipsets.
    public func cleanup() async throws {
        try lock.withLock { try cleanupLocked() }
    }

    private func cleanupLocked() throws {
        for s in try ipvs.services() where managedAddresses.isEmpty || managedAddresses.contains(s.address) {
            try ipvs.deleteService(s)
        }
        if try links.link(named: IPVSPlan.dummyInterface) != nil { try links.deleteLink(IPVSPlan.dummyInterface) }
        try IPVSRules.remove(ipt: ipt, ipset: ipset, family: options.family)
        terminating.removeAll()
        state.forget()
        applied = [:]
        shares = [:]
        entryRefs = [:]
        dropRefs = [:]
        lastRules = nil
    }
}
