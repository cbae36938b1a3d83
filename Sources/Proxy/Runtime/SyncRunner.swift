import Foundation
import KubeAPI
import Logging
import ServiceLifecycle
import ProxySeam
import HostOS

/// Wakes one waiter; a signal sent while nobody waits is remembered.
actor Signal {
    private var pending = false
    private var waiter: CheckedContinuation<Bool, Never>?
    private var generation = 0

    func send() {
        if let w = waiter {
            waiter = nil
            w.resume(returning: true)
        } else {
            pending = true
        }
    }

    /// Returns true when signalled, false on timeout.
    func wait(timeout: Duration) async -> Bool {
        if pending {
            pending = false
            return true
        }
        generation += 1
        let gen = generation
        return await withCheckedContinuation { c in
            waiter = c
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.timeout(gen)
            }
        }
    }

    private func timeout(_ gen: Int) {
        if gen == generation, let w = waiter {
            waiter = nil
            w.resume(returning: false)
        }
    }
}

/// Drives a backend: takes snapshots from the change tracker and syncs them,
/// no more often than `minSyncPeriod` (with a burst of 2, like upstream's
/// BoundedFrequencyRunner), retrying failures with backoff, checking every
/// `syncPeriod` whether the backend lost its state, and forcing a full resync hourly.
public actor ProxyRunner: ServiceLifecycle.Service {
    private var tracker: ChangeTracker
    /// The family this runner's tracker keeps (a dual-stack proxy has a runner per family).
    public nonisolated let ipFamily: IPFamily
    /// The same, as /healthz and the logs name it.
    private var family: String { ipFamily.rawValue }
    public let backend: any ProxyBackend
    public let metrics: ProxyMetrics
    public let health: HealthState
    public let healthChecks: ServiceHealthServers?
    let minSyncPeriod: Duration
    let syncPeriod: Duration
    let fullResyncPeriod: Duration
    let logger: Logger
    private let signal = Signal()
    private var initialized = false
    private var forceFull = false
    private var recentSyncs: [ContinuousClock.Instant] = []
    private var lastFull = ContinuousClock.now
    private var retryDelay: Duration = .zero
    private var countedServiceChanges = 0, countedEndpointChanges = 0
    /// The generation of the last snapshot synced (the snapshot itself is not kept:
    /// holding it would make the tracker copy the whole snapshot on every change).
    public private(set) var lastGeneration: Int?
    public private(set) var syncCount = 0
    private var syncWaiters: [(Int, CheckedContinuation<Void, Never>)] = []

    public init(tracker: ChangeTracker, backend: any ProxyBackend, metrics: ProxyMetrics, health: HealthState = HealthState(),
                healthChecks: ServiceHealthServers? = nil, minSyncPeriod: Duration = .seconds(1),
                syncPeriod: Duration = .seconds(30), fullResyncPeriod: Duration = .seconds(3600),
                logger: Logger = Logger(label: "switchyard.proxy")) {
        self.tracker = tracker
        ipFamily = tracker.family
        self.backend = backend
        self.metrics = metrics
        self.health = health
        self.healthChecks = healthChecks
        self.minSyncPeriod = minSyncPeriod
        self.syncPeriod = syncPeriod
        self.fullResyncPeriod = fullResyncPeriod
        self.logger = logger
    }

    /// Apply events to the tracker and queue a sync. A call with `initializing` (the default)
    /// marks the proxy initialized: nothing is synced before, as upstream syncs nothing until
    /// both Services and EndpointSlices are listed (a sync with the Services alone would
    /// reject every one of them for lack of endpoints).
    public func update(initializing: Bool = true, _ change: @Sendable (inout ChangeTracker) -> Void) async {
        change(&tracker)
        countChanges()
        let first = initializing && !initialized
        if initializing { initialized = true }
        if tracker.hasPendingChanges || first {
            health.queued(family)
            metrics.lastQueuedTimestamp.set(Date().timeIntervalSince1970)
            await signal.send()
        }
    }

    /// The tracker's change counts into the metrics: the totals by what is new, the pending gauges as they are.
    private func countChanges() {
        metrics.serviceChangesTotal.increment(by: Double(tracker.serviceChanges - countedServiceChanges))
        metrics.endpointChangesTotal.increment(by: Double(tracker.endpointChanges - countedEndpointChanges))
        countedServiceChanges = tracker.serviceChanges
        countedEndpointChanges = tracker.endpointChanges
        metrics.serviceChangesPending.set(Double(tracker.pendingServiceChanges.count))
        metrics.endpointChangesPending.set(Double(tracker.pendingEndpointChanges.count))
    }

    /// The service ports with a Local traffic policy and no local endpoint to send to, per policy
    /// (`…_no_local_endpoints_total`), kept up to date with each snapshot: only the changed
    /// Services' ports are looked at again (all of them when the snapshot says everything changed),
    /// so a partial sync does not pay for every Service.
    private var noLocalInternal = Set<ServicePortName>(), noLocalExternal = Set<ServicePortName>()

    private func trackNoLocalEndpoints(_ snap: ProxySnapshot, changed: Set<NamespacedName>?) {
        let names: [ServicePortName]
        if let changed {
            noLocalInternal = noLocalInternal.filter { !changed.contains($0.service) }
            noLocalExternal = noLocalExternal.filter { !changed.contains($0.service) }
            names = snap.ports(of: changed)
        } else {
            noLocalInternal.removeAll()
            noLocalExternal.removeAll()
            names = Array(snap.servicePorts.keys)
        }
        for name in names {
            guard let info = snap.servicePorts[name], info.internalPolicyLocal || info.externalPolicyLocal else { continue }
            if (snap.endpoints[name] ?? []).contains(where: { $0.isLocal && ($0.ready || ($0.serving && $0.terminating)) }) { continue }
            if info.internalPolicyLocal { noLocalInternal.insert(name) }
            if info.externalPolicyLocal && info.externallyAccessible { noLocalExternal.insert(name) }
        }
    }

    /// Ask for a full resync (for example after a canary loss).
    public func requestFullSync() async {
        forceFull = true
        await signal.send()
    }

    /// Wait until at least `count` syncs have completed (for tests and tools).
    public func waitForSyncs(_ count: Int) async {
        if syncCount >= count { return }
        await withCheckedContinuation { c in syncWaiters.append((count, c)) }
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await loop()
        } onGracefulShutdown: {
            Task { await self.signal.send() }
        }
        await healthChecks?.closeAll()
    }

    private func loop() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let wait = retryDelay > .zero ? retryDelay : syncPeriod
            let woke = await signal.wait(timeout: wait)
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            if !woke {
                if initialized, await backend.needsFullResync() { forceFull = true }
                if ContinuousClock.now - lastFull > fullResyncPeriod { forceFull = true }
                if !forceFull && retryDelay == .zero && !tracker.hasPendingChanges { continue }
            }
            guard initialized else { continue }
            // Bounded frequency: at most 2 syncs per minSyncPeriod.
            let now = ContinuousClock.now
            recentSyncs.removeAll { now - $0 >= minSyncPeriod }
            if recentSyncs.count >= 2, let oldest = recentSyncs.first {
                try? await Task.sleep(until: oldest + minSyncPeriod, clock: .continuous)
            }
            await syncOnce()
        }
    }

    /// One sync now, whatever the rate limit says.
    public func syncOnce() async {
        let full = forceFull
        let (snap, changed) = tracker.snapshot()
        let triggers = tracker.takeTriggerTimes()
        countChanges()
        trackNoLocalEndpoints(snap, changed: changed)
        let request = SyncRequest(snapshot: snap, changedServices: full ? nil : changed)
        let start = ContinuousClock.now
        recentSyncs.append(start)
        do {
            let outcome = try await backend.sync(request)
            let took = ContinuousClock.now - start
            metrics.syncDuration.record(took)
            if outcome.full { metrics.syncFullDuration?.record(took) } else { metrics.syncPartialDuration?.record(took) }
            for (table, n) in outcome.rulesWritten ?? [:] { metrics.rulesLast[table]?.set(Double(n)) }
            for (table, n) in outcome.rulesOwned ?? [:] { metrics.rulesTotal[table]?.set(Double(n)) }
            metrics.noLocalInternal.set(Double(noLocalInternal.count))
            metrics.noLocalExternal.set(Double(noLocalExternal.count))
            let now = Date().timeIntervalSince1970
            metrics.lastSyncTimestamp.set(now)
            // From each changed slice's last-change-trigger-time to rules in place, as upstream.
            for t in triggers { metrics.networkProgramming.record(.milliseconds(Int64(max(0, now - t) * 1000))) }
            forceFull = false
            if outcome.full {
                lastFull = ContinuousClock.now
                ResidentMemory.releaseFreeHeapPages()
            }
            retryDelay = .zero
            health.updated(family)
            lastGeneration = snap.generation
            // Full syncs at the default level, as kube-proxy reports its syncs, and so are those
            // that program an endpoint change (a pod trace finds its proxies' syncs by them);
            // other partial ones at -v 1.
            logger.log(level: outcome.full || !triggers.isEmpty ? .info : .debug, "synced \(backend.mode) rules", metadata: [
                "ipFamily": "\(family)", "full": "\(outcome.full)", "services": "\(Set(snap.servicePorts.keys.map(\.service)).count)", "servicePorts": "\(snap.servicePorts.count)",
                "endpoints": "\(snap.totalEndpoints)", "written": "\(outcome.objectsWritten)",
                "elapsed": "\(String(format: "%.1f ms", Double(took.components.attoseconds) / 1e15 + Double(took.components.seconds) * 1000))"])
            await healthChecks?.sync(snap)
        } catch {
            metrics.syncFailed(partial: request.changedServices != nil)
            // The tracker's changes are consumed: the retry must be a full sync.
            forceFull = true
            retryDelay = retryDelay == .zero ? .seconds(1) : min(retryDelay * 2, syncPeriod)
            logger.error("sync failed, retrying in \(retryDelay): \(error)")
        }
        syncCount += 1
        let ready = syncWaiters.filter { $0.0 <= syncCount }
        syncWaiters.removeAll { $0.0 <= syncCount }
        for (_, c) in ready { c.resume() }
    }
}

extension ProxyRunner {
    /// `items` moved into one list per runner, each holding the items of that runner's family
    /// (`family` says an item's; items of no runner's family are dropped), in their order: a
    /// dual-stack proxy's relist gives each tracker only what it keeps, and holds nothing twice.
    public static func split<T>(_ items: inout [T], among runners: [ProxyRunner], family: (T) -> String) -> [[T]] {
        var parts = runners.map { _ in [T]() }
        while let o = items.popLast() {
            if let k = runners.firstIndex(where: { $0.ipFamily.rawValue == family(o) }) { parts[k].append(o) }
        }
        return parts.map { Array($0.reversed()) }
    }
}

extension ProxyRunner: CustomStringConvertible {
    public nonisolated var description: String { "ProxyRunner(\(backend.mode))" }
}
