import Foundation
import KubeAPI
import Logging
import Prometheus
import ProxySeam
import IPTablesKit

/// kube-proxy's userspace mode: a listener per service port in this process,
/// portal rules that send service traffic to it, and the data plane carrying
/// every byte. A sync opens the listeners that are new, hands every listener its
/// endpoint list, writes the portal rules that changed in one `iptables-restore`, and only
/// then closes the listeners that are gone; established connections of unchanged
/// (and removed) service ports keep running.
public actor UserspaceProxier: ProxyBackend {
    public nonisolated let mode = "userspace"
    public nonisolated let options: UserspaceOptions
    public nonisolated let dataPlane: DataPlane
    let ipt: any IPTablesInterface
    let conntrack: (any ConntrackCleaner)?
    let registry: PrometheusCollectorRegistry?
    let logger: Logger

    struct Live {
        var handle: ListenerHandle
        var balancer: Balancer
        var plan: ListenerPlan
    }

    private var live: [ListenerKey: Live] = [:]
    private var stats: [ServicePortName: PortStats] = [:]
    private var state = KernelState()
    /// What the last sync decided: the listener of every service port, opened or not.
    private var planned: [ListenerKey: ListenerPlan] = [:]
    /// The portal lines of each open listener as last written (while the state is known).
    private var portalLines: [ListenerKey: [String]] = [:]
    /// Listeners a sync could not open (no free port, no descriptors): retried by the next full sync.
    private var unopened: Set<ListenerKey> = []

    public init(dataPlane: DataPlane, ipt: any IPTablesInterface, options: UserspaceOptions,
                conntrack: (any ConntrackCleaner)? = nil, registry: PrometheusCollectorRegistry? = nil,
                logger: Logger = Logger(label: "switchyard.userspace")) {
        self.dataPlane = dataPlane
        self.ipt = ipt
        self.options = options
        self.conntrack = conntrack
        self.registry = registry
        self.logger = logger
    }

    /// The port each listener is bound to.
    public var ports: [ListenerKey: UInt16] { live.mapValues { $0.handle.port } }

    /// The counters of a service port (nil when it has no listener).
    public func stats(for name: ServicePortName) -> PortStats? { stats[name] }

    public func sync(_ request: SyncRequest) async throws -> SyncOutcome {
        // A full sync plans every service port and rewrites the portal chains; any other plans
        // the changed Services alone and writes only their portal lines, so its cost does not
        // grow with the number of Services.
        let full = state.mustSyncFully(request)
        let changed = request.changedServices ?? []
        var plans: [ListenerKey: ListenerPlan]
        // The listeners whose plan this sync decides: every one, or those of the changed Services.
        let touched: [ListenerKey]
        if full {
            plans = UserspacePlan.listeners(for: request.snapshot, options: options)
            touched = Array(Set(plans.keys).union(planned.keys).union(live.keys))
        } else {
            plans = planned
            var keys = planned.keys.filter { changed.contains($0.name.service) }
            for k in keys { plans[k] = nil }
            let fresh = UserspacePlan.listeners(for: request.snapshot, services: changed, options: options)
            plans.merge(fresh) { _, new in new }
            keys += fresh.keys.filter { planned[$0] == nil }
            touched = keys
        }
        let hostIP = UserspacePlan.hostIP(request.snapshot, options: options)
        // Read first: if iptables-save fails, nothing has been opened yet.
        let jumps = full ? try missingJumps() : []
        // 1. New listeners, on ports from the range (in service-port order) or the kernel's.
        // One that cannot be opened is left out (its portals too) and retried later, so a
        // full port range or a descriptor shortage does not hold up every other change.
        var opened: [ListenerKey: Live] = [:]
        var newStats: [ServicePortName: PortStats] = [:]
        var used = Set(live.values.map { $0.handle.port })
        var failed: Set<ListenerKey> = full ? [] : unopened.subtracting(touched)
        for key in touched.sorted() where live[key] == nil {
            guard let plan = plans[key] else { continue }
            let st = stats[key.name] ?? newStats[key.name]
                ?? PortStats(servicePort: key.name.description, proto: key.name.proto.rawValue, registry: registry)
            if stats[key.name] == nil { newStats[key.name] = st }
            let balancer = Balancer()
            balancer.update(endpoints: plan.endpoints, affinityTimeout: plan.affinityTimeout)
            do {
                let handle = try await openListener(plan.proto, balancer: balancer, stats: st, avoiding: used)
                used.insert(handle.port)
                opened[key] = Live(handle: handle, balancer: balancer, plan: plan)
            } catch {
                logger.error("cannot open a listener for \(key), leaving it out of the portal rules until the next full sync: \(error)")
                failed.insert(key)
            }
        }
        // 2. The portal rules: the chains whole, or the touched listeners' lines.
        var lines = full ? [:] : portalLines
        var old: [String] = [], new: [String] = []
        for key in touched {
            old += lines[key] ?? []
            if let plan = plans[key], let port = opened[key]?.handle.port ?? live[key]?.handle.port {
                let l = PortalChains.lines(plan, proxyPort: port, hostIP: hostIP, options: options)
                lines[key] = l
                new += l
            } else {
                lines[key] = nil
            }
        }
        let input = full
            ? PortalChains.restoreInput(PortalChains.rules(lines.keys.sorted().map { lines[$0]! }), jumps: jumps)
            : PortalChains.delta(from: old, to: new)
        if let input {
            do {
                try ipt.restore(input)
            } catch {
                state.forget()
                for l in opened.values { await dataPlane.close(l.handle) }
                for s in newStats.values { s.unregister() }
                throw error
            }
        }
        portalLines = lines
        planned = plans
        state.synced()
        unopened = failed
        // 3. Endpoint lists, then the listeners that are gone.
        var changedEndpoints = 0
        var movedPortals: [ListenerPlan] = []
        var removed: [ListenerKey] = []
        for k in touched {
            guard var l = live[k] else { continue }
            guard let plan = plans[k] else { removed.append(k); continue }
            // Portals a surviving UDP listener no longer has keep their conntrack entries otherwise.
            let gone = l.plan.portals.filter { !plan.portals.contains($0) }
            if plan.proto == .udp && !gone.isEmpty {
                movedPortals.append(ListenerPlan(key: k, proto: .udp, endpoints: [], affinityTimeout: nil, portals: gone))
            }
            if l.balancer.update(endpoints: plan.endpoints, affinityTimeout: plan.affinityTimeout) { changedEndpoints += 1 }
            l.plan = plan
            live[k] = l
        }
        let removedPlans = removed.map { live[$0]!.plan }
        for k in removed {
            await dataPlane.close(live[k]!.handle)
            live[k] = nil
        }
        for (k, l) in opened { live[k] = l }
        stats.merge(newStats) { a, _ in a }
        // Counters go with a service port's last listener (also one that could not be opened).
        for name in Set(touched.map(\.name)) where live[ListenerKey(name: name, external: false)] == nil
            && live[ListenerKey(name: name, external: true)] == nil {
            stats[name]?.unregister()
            stats[name] = nil
        }
        // UDP clients may hold conntrack entries that redirect to a listener port that changed.
        if let conntrack {
            for plan in opened.values.map(\.plan) + removedPlans + movedPortals where plan.proto == .udp {
                for portal in plan.portals {
                    if let ip = portal.ip, portal.kind != .nodePort {
                        _ = try? conntrack.deleteFlows(to: ip, port: portal.port, proto: .udp, natDestination: nil)
                    } else if portal.kind == .nodePort {
                        _ = try? conntrack.deleteNodePortFlows(port: portal.port, proto: .udp, natDestination: nil)
                    }
                }
            }
        }
        logger.debug("userspace sync", metadata: ["listeners": "\(live.count)", "opened": "\(opened.count)",
                                                  "closed": "\(removed.count)", "endpointChanges": "\(changedEndpoints)"])
        return SyncOutcome(full: full, objectsWritten: opened.count + removed.count + changedEndpoints)
    }

    private func openListener(_ proto: L4Protocol, balancer: Balancer, stats: PortStats, avoiding used: Set<UInt16>) async throws -> ListenerHandle {
        guard let range = options.portRange else {
            return try await dataPlane.open(proto, port: 0, balancer: balancer, stats: stats)
        }
        for p in range where !used.contains(UInt16(p)) {
            do {
                return try await dataPlane.open(proto, port: UInt16(p), balancer: balancer, stats: stats)
            } catch let e as SocketError where e.errno == EADDRINUSE {
                continue
            }
        }
        throw SocketError(errno: EADDRINUSE, what: "no free port left in --proxy-port-range \(range.lowerBound)-\(range.upperBound)")
    }

    /// The jumps from the built-in chains that are not there yet.
    private func missingJumps() throws -> [JumpRule] {
        IPTablesSave(try ipt.save(tables: ["filter", "nat"])).missing(PortalChains.jumps)
    }

    public func needsFullResync() async -> Bool {
        guard state.isKnown else { return false }
        for l in live.values { l.balancer.expireAffinity() }
        if !unopened.isEmpty { return true }
        let ok = ipt.chainExists(table: "nat", chain: PortalChains.containerPortals)
            && ipt.chainExists(table: "filter", chain: PortalChains.nonLocalNodePorts)
        if !ok { state.forget() }
        return !ok
    }

    /// Removes the portal chains and their jumps, and closes every listener.
    /// The port each open listener got, by the service port it serves.
    func listenerPorts() -> [ListenerKey: UInt16] { live.mapValues(\.handle.port) }

    public func stop(grace: Duration) async {
        await dataPlane.stop(grace: grace)
    }

    public func cleanup() async throws {
        try Self.removeRules(ipt)
        for l in live.values { await dataPlane.close(l.handle) }
        live.removeAll()
        for s in stats.values { s.unregister() }
        stats.removeAll()
        planned.removeAll()
        portalLines = [:]
        state.forget()
    }

    /// Deletes the userspace mode's jumps and chains (what `proxy --cleanup` does for this mode).
    /// True when there was anything to remove.
    @discardableResult
    public static func removeRules(_ ipt: any IPTablesInterface) throws -> Bool {
        var names: [String: Set<String>] = [:]
        for (table, chain) in PortalChains.chains { names[table, default: []].insert(chain) }
        return try ipt.removeOwned(OwnedChains(names: names), jumps: PortalChains.jumps)
    }
}

/// `render --proxy-mode userspace`: the listeners and the portal rules a sync would
/// program. Ports come from `--proxy-port-range` in the order the proxy takes
/// them; without a range the kernel picks them at run time, and the render
/// numbers them from 36000 as placeholders.
public struct UserspaceRenderer: ProxyRenderer {
    public var options: UserspaceOptions
    public init(options: UserspaceOptions) { self.options = options }

    public func render(_ snapshot: ProxySnapshot) -> String {
        let plans = UserspacePlan.listeners(for: snapshot, options: options)
        let range = options.portRange ?? 36000...65535
        var ports: [ListenerKey: UInt16] = [:]
        var next = range.lowerBound
        for k in plans.keys.sorted() where next <= range.upperBound {
            ports[k] = UInt16(next)
            next += 1
        }
        var s = "# switchyard userspace proxy\n"
        if options.portRange == nil {
            s += "# no --proxy-port-range: the kernel picks listener ports at run time; these are placeholders\n"
        }
        s += "# listeners (protocol, port, endpoints in round-robin order):\n"
        for k in plans.keys.sorted() {
            let p = plans[k]!
            let eps = p.endpoints.isEmpty ? "(no endpoints: connections are reset)" : p.endpoints.map(\.description).joined(separator: " ")
            var line = "#   \(k) \(p.proto.rawValue) :\(ports[k].map(String.init) ?? "?") -> \(eps)"
            if let a = p.affinityTimeout { line += " [ClientIP affinity \(Int(a))s]" }
            s += line + "\n"
        }
        let jumps = PortalChains.jumps
        let rules = PortalChains.rules(Array(plans.values), ports: ports, hostIP: UserspacePlan.hostIP(snapshot, options: options),
                                       options: options)
        return s + PortalChains.restoreInput(rules, jumps: jumps)
    }
}
