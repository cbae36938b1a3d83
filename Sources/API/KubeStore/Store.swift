import Foundation

/// One key's value at a revision.
public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: Data
    /// The revision that created the key (its `metadata.creationTimestamp` moment).
    public var createRevision: Int64
    /// The revision of the last write (the object's `resourceVersion`).
    public var modRevision: Int64

    public init(key: String, value: Data, createRevision: Int64, modRevision: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
    }
}

/// A change, as a watch delivers it.
public struct StoreEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case created, updated, deleted }
    public var kind: Kind
    /// The value after the change; for `deleted`, the last value, at the deleting revision.
    public var kv: KeyValue
    /// The value before the change (nil for `created`).
    public var previous: KeyValue?
    public var revision: Int64 { kv.modRevision }
}

/// Why a store refused a request. The API server maps these to `Status` reasons.
public enum StoreError: Error, Equatable, CustomStringConvertible {
    /// `create` of a key that exists (409 AlreadyExists).
    case exists(String)
    /// The key is not there (404 NotFound).
    case notFound(String)
    /// The key's revision is not the expected one (409 Conflict).
    case conflict(key: String, expected: Int64, actual: Int64)
    /// The revision asked for was compacted away (410 Expired).
    case compacted(requested: Int64, compacted: Int64)
    /// The revision asked for is newer than the store's (a client from the future, or another store).
    case futureRevision(requested: Int64, current: Int64)
    /// The backend failed (I/O, a lost connection).
    case backend(String)

    public var description: String {
        switch self {
        case .exists(let k): return "\(k) already exists"
        case .notFound(let k): return "\(k) not found"
        case .conflict(let k, let e, let a): return "\(k): revision is \(a), not \(e)"
        case .compacted(let r, let c): return "revision \(r) is compacted (the oldest kept is \(c + 1))"
        case .futureRevision(let r, let c): return "revision \(r) is newer than the store's \(c)"
        case .backend(let m): return m
        }
    }
}

/// A page of a list, read at one revision.
public struct ListPage: Sendable {
    public var items: [KeyValue]
    /// The revision the list was read at (the list's `resourceVersion`).
    public var revision: Int64
    /// The last key returned when there are more (the `continue` token's position).
    public var continueAfter: String?
}

/// The store the API server keeps every object in: a key space with a revision log, as etcd's v3
/// API and kine's SQL backends present it. Keys are paths (`/registry/services/default/web`);
/// every write gets the next revision of one counter; a watch replays the log from a revision and
/// then follows live writes; compaction forgets old revisions.
public protocol Store: Sendable {
    /// The revision of the last write.
    func currentRevision() async throws -> Int64
    func get(_ key: String) async throws -> KeyValue?
    /// - Throws: `StoreError.exists`.
    @discardableResult
    func create(_ key: String, value: Data) async throws -> KeyValue
    /// Replaces the value if the key's revision is `expected` (nil: whatever it is).
    /// - Throws: `StoreError.notFound`, `StoreError.conflict`.
    @discardableResult
    func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue
    /// Deletes the key if its revision is `expected` (nil: whatever it is); returns its last value
    /// at the deleting revision.
    /// - Throws: `StoreError.notFound`, `StoreError.conflict`.
    @discardableResult
    func delete(_ key: String, expected: Int64?) async throws -> KeyValue
    /// The keys under `prefix`, in key order, after `after`, at most `limit` (0: all), as they were
    /// at `revision` (nil: now).
    /// - Throws: `StoreError.compacted` for a revision compaction removed.
    func list(prefix: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage
    /// How many keys are under `prefix` (after `after`, as they were at `revision`, nil: now).
    func count(prefix: String, after: String?, revision: Int64?) async throws -> Int
    /// Changes under `prefix` after `revision`, first from the log, then live, in revision order.
    /// The stream ends when the caller stops iterating it.
    /// - Throws: `StoreError.compacted` when the log no longer holds `revision + 1`.
    func watch(prefix: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error>
    /// Forgets the history at and before `revision` (the current value of every key stays).
    func compact(through revision: Int64) async throws
    /// The revision of the last write that keys under `prefix` see (a store made of several
    /// answers for the one holding `prefix`; others, as `currentRevision()`).
    func currentRevision(prefix: String) async throws -> Int64
}

extension Store {
    public func currentRevision(prefix: String) async throws -> Int64 { try await currentRevision() }
    public func count(prefix: String) async throws -> Int { try await count(prefix: prefix, after: nil, revision: nil) }
}
