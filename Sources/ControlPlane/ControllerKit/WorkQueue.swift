import Foundation

/// client-go's rate-limited work queue: each key is queued once however often it is added,
/// never handed to two workers at once (a key added while it is worked on comes back after
/// `done`), and retried with a per-key exponential delay (5 ms doubling to 1000 s, as
/// `DefaultControllerRateLimiter`) until `forget`.
public actor WorkQueue {
    private var queue: [String] = []
    private var head = 0
    private var dirty = Set<String>()
    private var processing = Set<String>()
    private var failures: [String: Int] = [:]
    private var waiters: [CheckedContinuation<String?, Never>] = []
    private var shuttingDown = false
    let baseDelay: Double
    let maxDelay: Double

    public init(baseDelay: Double = 0.005, maxDelay: Double = 1000) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public func add(_ key: String) {
        guard !shuttingDown, dirty.insert(key).inserted else { return }
        if processing.contains(key) { return }
        if !waiters.isEmpty {
            dirty.remove(key)
            processing.insert(key)
            waiters.removeFirst().resume(returning: key)
            return
        }
        queue.append(key)
    }

    public nonisolated func add(_ key: String, after seconds: Double) {
        guard seconds > 0 else { Task { await self.add(key) }; return }
        Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            await self.add(key)
        }
    }

    /// Adds the key again after its next backoff delay.
    public func retry(_ key: String) {
        let n = failures[key, default: 0]
        failures[key] = n + 1
        add(key, after: min(baseDelay * pow(2, Double(n)), maxDelay))
    }

    public func forget(_ key: String) { failures[key] = nil }
    public func retries(_ key: String) -> Int { failures[key, default: 0] }

    /// The next key to work on; nil once the queue shuts down.
    public func next() async -> String? {
        if head < queue.count {
            let key = queue[head]
            head += 1
            if head > 1024 && head * 2 > queue.count { queue.removeFirst(head); head = 0 }
            dirty.remove(key)
            processing.insert(key)
            return key
        }
        if shuttingDown { return nil }
        return await withCheckedContinuation { waiters.append($0) }
    }

    /// The key is worked on; if it was added meanwhile, it is queued again.
    public func done(_ key: String) {
        processing.remove(key)
        if dirty.contains(key) {
            dirty.remove(key)
            add(key)
        }
    }

    public func shutdown() {
        shuttingDown = true
        for w in waiters { w.resume(returning: nil) }
        waiters.removeAll()
    }

    public var length: Int { queue.count - head }
}
