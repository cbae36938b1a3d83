import Foundation

/// One shared copy of values that many objects repeat (a ReplicaSet's pods share their labels,
/// owner references and tolerations): 10,000 pods then hold references to a few copies rather
/// than 10,000 equal ones. Bounded: when full, it starts again (equal values made afterwards are
/// shared again from then on).
public final class Interner<Value: Hashable & Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var table: [Value: Value] = [:]
    let capacity: Int

    public init(capacity: Int = 4096) { self.capacity = capacity }

    public func intern(_ v: Value) -> Value {
        lock.lock()
        defer { lock.unlock() }
        if let shared = table[v] { return shared }
        if table.count >= capacity { table.removeAll(keepingCapacity: true) }
        table[v] = v
        return v
    }
}
