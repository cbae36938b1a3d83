import Foundation

/// kube-scheduler's scheduling queue: an active queue ordered by priority, then by when the pod
/// was first queued; a backoff queue, where a pod that failed waits 1 s doubling to 10 s per
/// attempt; and the unschedulable pods, moved back when the cluster changes in a way that may
/// help them (a node added or changed, a pod deleted) or after five minutes.
public actor SchedulingQueue {
    public struct Entry: Sendable {
        public var pod: PodInfo
        public var attempts = 0
        /// When it was first queued (the order among equal priorities).
        public var queued: ContinuousClock.Instant
        public var backoffUntil: ContinuousClock.Instant?
        /// The scheduling cycle it was last popped in.
        public var cycle = 0
        var sequence = 0
    }

    public enum Place: Sendable, Equatable { case active, backoff, unschedulable, none }

    private var entries: [String: Entry] = [:]
    private var place: [String: Place] = [:]
    /// The keys waiting in backoff and in the unschedulable set (flushes look at these only).
    private var inBackoff = Set<String>()
    private var inUnschedulable = Set<String>()
    private var heap: [(key: String, sequence: Int)] = []
    private var unschedulableSince: [String: ContinuousClock.Instant] = [:]
    private var waiter: CheckedContinuation<Entry?, Never>?
    private var closed = false
    private var sequence = 0
    /// The cycle of the last move request: a pod that fails in a cycle that began before it
    /// goes to the backoff queue, not the unschedulable set (what changed may help it).
    private var moveRequestCycle = -1
    public private(set) var schedulingCycle = 0
    let initialBackoff: Duration
    let maxBackoff: Duration
    let maxInUnschedulable: Duration

    public init(initialBackoff: Duration = .seconds(1), maxBackoff: Duration = .seconds(10), maxInUnschedulable: Duration = .seconds(300)) {
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.maxInUnschedulable = maxInUnschedulable
    }

    private func setPlace(_ key: String, _ p: Place?) {
        switch place[key] {
        case .backoff?: inBackoff.remove(key)
        case .unschedulable?: inUnschedulable.remove(key)
        default: break
        }
        place[key] = p
        switch p {
        case .backoff?: inBackoff.insert(key)
        case .unschedulable?: inUnschedulable.insert(key)
        default: break
        }
    }

    func before(_ a: Entry, _ b: Entry) -> Bool {
        a.pod.priority != b.pod.priority ? a.pod.priority > b.pod.priority : (a.queued != b.queued ? a.queued < b.queued : a.sequence < b.sequence)
    }

    private func push(_ key: String) {
        guard var e = entries[key] else { return }
        sequence += 1
        e.sequence = sequence
        entries[key] = e
        setPlace(key, .active)
        if let w = waiter {
            waiter = nil
            setPlace(key, nil)
            entries[key] = nil
            schedulingCycle += 1
            e.cycle = schedulingCycle
            w.resume(returning: e)
            return
        }
        heap.append((key, sequence))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard let a = entries[heap[i].key], let b = entries[heap[parent].key], before(a, b) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private func popHeap() -> Entry? {
        while !heap.isEmpty {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var m = i
                    if l < heap.count, let a = entries[heap[l].key], let b = entries[heap[m].key], before(a, b) { m = l }
                    if r < heap.count, let a = entries[heap[r].key], let b = entries[heap[m].key], before(a, b) { m = r }
                    if m == i { break }
                    heap.swapAt(i, m)
                    i = m
                }
            }
            // Stale heap slots (the pod moved, was updated or deleted) are skipped.
            guard let e = entries[top.key], place[top.key] == .active, e.sequence == top.sequence else { continue }
            entries[top.key] = nil
            setPlace(top.key, nil)
            return e
        }
        return nil
    }

    /// A pending pod, new or changed: queued (active) unless it waits in backoff.
    public func add(_ pod: PodInfo) {
        let key = pod.key
        if var e = entries[key] {
            e.pod = pod
            entries[key] = e
            // A pod that changed may now fit: an unschedulable one is tried again.
            if place[key] == .unschedulable { unschedulableSince[key] = nil; toActiveOrBackoff(key) }
            return
        }
        entries[key] = Entry(pod: pod, queued: .now)
        push(key)
    }

    public func delete(_ key: String) {
        entries[key] = nil
        setPlace(key, nil)
        unschedulableSince[key] = nil
    }

    public func contains(_ key: String) -> Bool { entries[key] != nil }
    public func placeOf(_ key: String) -> Place { place[key] ?? .none }

    /// The next pod to schedule, waiting for one; nil once closed.
    public func pop() async -> Entry? {
        flushBackoff()
        if var e = popHeap() {
            schedulingCycle += 1
            e.cycle = schedulingCycle
            return e
        }
        if closed { return nil }
        return await withCheckedContinuation { waiter = $0 }
    }

    public func close() {
        closed = true
        waiter?.resume(returning: nil)
        waiter = nil
    }

    /// A pod that could not be scheduled: to the unschedulable set, or to backoff if the
    /// cluster changed while it was being tried, or if it failed for another reason (an error).
    public func failed(_ e: Entry, unschedulable: Bool) {
        var e = e
        e.attempts += 1
        let key = e.pod.key
        guard entries[key] == nil else { return }   // updated meanwhile: the newer copy stands
        let backoff = min(initialBackoff * Int(pow(2, Double(min(e.attempts - 1, 10)))), maxBackoff)
        e.backoffUntil = .now + backoff
        entries[key] = e
        if unschedulable && moveRequestCycle < e.cycle {
            setPlace(key, .unschedulable)
            unschedulableSince[key] = .now
        } else {
            setPlace(key, .backoff)
        }
    }

    private func toActiveOrBackoff(_ key: String) {
        guard let e = entries[key] else { return }
        if let until = e.backoffUntil, until > .now { setPlace(key, .backoff) } else { push(key) }
    }

    /// The cluster changed (a node added or changed, a pod deleted): every unschedulable pod
    /// is tried again (after its backoff).
    public func moveAllToActiveOrBackoff() {
        moveRequestCycle = schedulingCycle
        for key in inUnschedulable {
            unschedulableSince[key] = nil
            toActiveOrBackoff(key)
        }
        flushBackoff()
    }

    /// Pods whose backoff is over go active; pods unschedulable for five minutes too.
    public func flushBackoff() {
        let now = ContinuousClock.now
        for key in inBackoff {
            if let until = entries[key]?.backoffUntil, until > now { continue }
            push(key)
        }
        for (key, since) in unschedulableSince where now - since >= maxInUnschedulable {
            unschedulableSince[key] = nil
            toActiveOrBackoff(key)
        }
    }

    public var counts: (active: Int, backoff: Int, unschedulable: Int) {
        (place.count - inBackoff.count - inUnschedulable.count, inBackoff.count, inUnschedulable.count)
    }
}
