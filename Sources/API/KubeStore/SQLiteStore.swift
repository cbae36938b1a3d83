import Foundation
import GRDB

/// The embedded store: one SQLite file holding a revision log, laid out as kine lays it out (one
/// table whose row id is the revision; a key's current value is its newest row, a delete is a
/// tombstone row). Writes are committed together (those arriving while a commit syncs go into
/// the next one, as etcd batches its proposals), each acknowledged only once the write-ahead log
/// is synced (`synchronous = FULL`), so a killed server loses none that were; each committed
/// write is then handed to the watchers, in revision order. The log is
/// checkpointed into the database file by a second connection in the background (a passive
/// checkpoint runs beside the writer), not by whichever write happens to cross SQLite's
/// threshold: that write would wait for the copy and its sync.
public actor SQLiteStore: Store {
    private let db: DatabaseQueue
    private let checkpointer: Task<Void, Never>?
    /// Each watch: its prefix, its stream, and the revision its replay reached (what it is sent
    /// live comes after).
    private var watchers: [UUID: (prefix: String, continuation: AsyncThrowingStream<StoreEvent, any Error>.Continuation, from: Int64)] = [:]
    /// Writes are committed on the database's own queue while the actor serves others (a commit
    /// waits for its sync to the disk: on the actor it would hold one of the few threads every
    /// task runs on), several at a time (`commit`). Their events are handed to the watchers in
    /// revision order, from the last one handed out.
    private var published: Int64 = 0
    private var unpublished: [Int64: StoreEvent] = [:]

    /// Opens (or creates) the store at `path`; `":memory:"` for one that lives in memory.
    public init(path: String) throws {
        var config = Configuration()
        config.label = "switchyard.store"
        // The background checkpointer's connection takes locks too: wait for it, briefly.
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            if db.configuration.readonly == false && path != ":memory:" {
                try db.execute(sql: "PRAGMA journal_mode = WAL")
            }
            try db.execute(sql: "PRAGMA synchronous = FULL")
            if path != ":memory:" { try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
        }
        do {
            db = path == ":memory:" ? try DatabaseQueue(configuration: config) : try DatabaseQueue(path: path, configuration: config)
            if path == ":memory:" {
                checkpointer = nil
            } else if let queue = try? Self.checkpointQueue(path: path) {
                checkpointer = Self.checkpointing(queue, path: path)
            } else {
                // No second connection: SQLite checkpoints as it always did, in the writes.
                try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_autocheckpoint = 1000") }
                checkpointer = nil
            }
            try db.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS kine (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        name TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        deleted INTEGER NOT NULL,
                        create_revision INTEGER NOT NULL,
                        prev_revision INTEGER NOT NULL,
                        value BLOB NOT NULL,
                        old_value BLOB);
                    CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
                    CREATE TABLE IF NOT EXISTS kine_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                    """)
            }
            published = try db.read { try Self.revision($0) }
        } catch {
            throw StoreError.backend("open \(path): \(error)")
        }
    }

    deinit { checkpointer?.cancel() }

    /// The write-ahead log at most about this large before it is copied into the database.
    static let checkpointBytes: UInt64 = 4 << 20

    /// Copies the log into the database from a connection of its own whenever the log has grown
    /// past `checkpointBytes`, until cancelled.
    static func checkpointQueue(path: String) throws -> DatabaseQueue {
        var config = Configuration()
        config.label = "switchyard.store.checkpoint"
        config.busyMode = .timeout(1)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        return try DatabaseQueue(path: path, configuration: config)
    }

    static func checkpointing(_ queue: DatabaseQueue, path: String) -> Task<Void, Never> {
        Task.detached(priority: .utility) {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                let size = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? UInt64) ?? 0
                if size > checkpointBytes {
                    _ = try? await queue.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(PASSIVE)") }
                }
            }
        }
    }

    /// Runs `body` against the database, with SQLite's errors as `StoreError.backend`.
    private func run<T>(_ what: String, _ body: (Database) throws -> T) throws -> T {
        do {
            return try db.write { try body($0) }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.backend("\(what): \(error)")
        }
    }

    private static func revision(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM sqlite_sequence WHERE name = 'kine'")) ?? 0
    }

    private static func compacted(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM kine_meta WHERE key = 'compact_rev'")) ?? 0
    }

    /// A key's newest row: (revision, create revision, deleted, value). The single-key
    /// statements are compiled once per connection (GRDB's statement cache): compiling them per
    /// write cost the server as much as its JSON encoding.
    private static func latest(_ db: Database, _ key: String) throws -> (id: Int64, created: Int64, deleted: Bool, value: Data)? {
        let statement = try db.cachedStatement(sql: "SELECT id, create_revision, deleted, value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1")
        guard let r = try Row.fetchOne(statement, arguments: [key]) else { return nil }
        return (r["id"], r["create_revision"], (r["deleted"] as Int64) != 0, r["value"])
    }

    /// Appends a row and returns its revision.
    private static func append(_ db: Database, key: String, created: Bool, deleted: Bool, createRevision: Int64?,
                               prev: Int64, value: Data, old: Data?) throws -> Int64 {
        try db.cachedStatement(sql: "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, value, old_value) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .execute(arguments: [key, created ? 1 : 0, deleted ? 1 : 0, createRevision ?? 0, prev, value, old])
        let id = db.lastInsertedRowID
        if createRevision == nil { try db.cachedStatement(sql: "UPDATE kine SET create_revision = id WHERE id = ?").execute(arguments: [id]) }
        return id
    }

    public func currentRevision() throws -> Int64 { try run("revision") { try Self.revision($0) } }

    public func get(_ key: String) throws -> KeyValue? {
        try run("get \(key)") { db in
            guard let l = try Self.latest(db, key), !l.deleted else { return nil }
            return KeyValue(key: key, value: l.value, createRevision: l.created, modRevision: l.id)
        }
    }

    @discardableResult
    public func create(_ key: String, value: Data) async throws -> KeyValue {
        try await commit("create \(key)") { db in
            let l = try Self.latest(db, key)
            if let l, !l.deleted { throw StoreError.exists(key) }
            let id = try Self.append(db, key: key, created: true, deleted: false, createRevision: nil, prev: l?.id ?? 0, value: value, old: nil)
            return StoreEvent(kind: .created, kv: KeyValue(key: key, value: value, createRevision: id, modRevision: id), previous: nil)
        }.kv
    }

    @discardableResult
    public func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue {
        try await commit("update \(key)") { db in
            guard let l = try Self.latest(db, key), !l.deleted else { throw StoreError.notFound(key) }
            if let expected, expected != l.id { throw StoreError.conflict(key: key, expected: expected, actual: l.id) }
            let id = try Self.append(db, key: key, created: false, deleted: false, createRevision: l.created, prev: l.id, value: value, old: l.value)
            return StoreEvent(kind: .updated, kv: KeyValue(key: key, value: value, createRevision: l.created, modRevision: id),
                              previous: KeyValue(key: key, value: l.value, createRevision: l.created, modRevision: l.id))
        }.kv
    }

    @discardableResult
    public func delete(_ key: String, expected: Int64?) async throws -> KeyValue {
        try await commit("delete \(key)") { db in
            guard let l = try Self.latest(db, key), !l.deleted else { throw StoreError.notFound(key) }
            if let expected, expected != l.id { throw StoreError.conflict(key: key, expected: expected, actual: l.id) }
            let id = try Self.append(db, key: key, created: false, deleted: true, createRevision: l.created, prev: l.id, value: l.value, old: l.value)
            return StoreEvent(kind: .deleted, kv: KeyValue(key: key, value: l.value, createRevision: l.created, modRevision: id),
                              previous: KeyValue(key: key, value: l.value, createRevision: l.created, modRevision: l.id))
        }.kv
    }

    /// A write waiting for the next commit: what it does in the transaction (a refusal, thrown as
    /// a `StoreError` before it writes anything, is its own; anything else fails the commit), and
    /// who waits for it.
    private struct Pending {
        var what: String
        var change: @Sendable (Database) throws -> StoreEvent
        var waiter: CheckedContinuation<StoreEvent, any Error>
    }
    private var pending: [Pending] = []
    private var committing = false

    /// Group commit, as etcd batches its proposals: the writes that arrive while a commit is
    /// syncing go into the next one, one transaction and one sync to the disk for all of them,
    /// each acknowledged only once that sync is done. Within a commit they run in arrival order,
    /// each seeing those before it.
    private func commit(_ what: String, _ change: @escaping @Sendable (Database) throws -> StoreEvent) async throws -> StoreEvent {
        try await withCheckedThrowingContinuation { waiter in
            pending.append(Pending(what: what, change: change, waiter: waiter))
            if !committing {
                committing = true
                Task { await self.commitPending() }
            }
        }
    }

    private func commitPending() async {
        while !pending.isEmpty {
            let batch = pending
            pending.removeAll()
            let changes = batch.map(\.change)
            do {
                let outcomes = try await db.write { db -> [Result<StoreEvent, StoreError>] in
                    try changes.map { change in
                        do { return .success(try change(db)) } catch let e as StoreError { return .failure(e) }
                    }
                }
                for (w, outcome) in zip(batch, outcomes) {
                    if case .success(let e) = outcome { publish(e) }
                    w.waiter.resume(with: outcome.mapError { $0 as any Error })
                }
            } catch {
                for w in batch { w.waiter.resume(throwing: StoreError.backend("\(w.what): \(error)")) }
            }
        }
        committing = false
    }

    /// The end of a prefix's key range (keys are ASCII paths).
    static func end(_ prefix: String) -> String { prefix + "\u{10FFFF}" }

    public func list(prefix: String, after: String?, limit: Int, revision: Int64?) throws -> ListPage {
        try run("list \(prefix)") { db in
            let current = try Self.revision(db)
            let rev = revision ?? current
            if let revision {
                let compactedRev = try Self.compacted(db)
                if revision < compactedRev { throw StoreError.compacted(requested: revision, compacted: compactedRev) }
                if revision > current { throw StoreError.futureRevision(requested: revision, current: current) }
            }
            let start = after.map { max($0, prefix) } ?? prefix
            let op = after == nil ? ">=" : ">"
            let rows = try Row.fetchAll(db, sql: """
                SELECT k.id, k.name, k.create_revision, k.value FROM kine k
                JOIN (SELECT name, MAX(id) AS id FROM kine WHERE name \(op) ? AND name < ? AND id <= ? GROUP BY name) m ON k.id = m.id
                WHERE k.deleted = 0 ORDER BY k.name \(limit > 0 ? "LIMIT \(limit + 1)" : "")
                """, arguments: [start, Self.end(prefix), rev])
            var items = rows.map { KeyValue(key: $0["name"], value: $0["value"], createRevision: $0["create_revision"], modRevision: $0["id"]) }
            var more: String?
            if limit > 0 && items.count > limit {
                items.removeLast(items.count - limit)
                more = items.last?.key
            }
            return ListPage(items: items, revision: rev, continueAfter: more)
        }
    }

    public func count(prefix: String, after: String?, revision: Int64?) throws -> Int {
        try run("count \(prefix)") { db in
            let rev = try revision ?? Self.revision(db)
            let start = after.map { max($0, prefix) } ?? prefix
            return try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM kine k
                JOIN (SELECT name, MAX(id) AS id FROM kine WHERE name \(after == nil ? ">=" : ">") ? AND name < ? AND id <= ? GROUP BY name) m ON k.id = m.id
                WHERE k.deleted = 0
                """, arguments: [start, Self.end(prefix), rev]) ?? 0
        }
    }

    public func watch(prefix: String, after revision: Int64) throws -> AsyncThrowingStream<StoreEvent, any Error> {
        // Replayed and registered in one actor turn; writes committed by then are in the replay
        // (even those whose events are not handed out yet), later ones are sent live.
        let (replay, reached) = try run("watch \(prefix)") { db -> ([StoreEvent], Int64) in
            let compactedRev = try Self.compacted(db)
            if revision < compactedRev { throw StoreError.compacted(requested: revision, compacted: compactedRev) }
            let rows = try Row.fetchAll(db, sql: """
                SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value FROM kine
                WHERE id > ? AND name >= ? AND name < ? ORDER BY id
                """, arguments: [revision, prefix, Self.end(prefix)])
            return (rows.map(Self.event), max(revision, try Self.revision(db)))
        }
        let id = UUID()
        let (stream, continuation) = AsyncThrowingStream<StoreEvent, any Error>.makeStream(bufferingPolicy: .unbounded)
        for e in replay { continuation.yield(e) }
        watchers[id] = (prefix, continuation, reached)
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            Task { await self.stopWatching(id) }
        }
        return stream
    }

    private func stopWatching(_ id: UUID) { watchers[id] = nil }

    /// The number of live watches (for tests and metrics).
    public var watcherCount: Int { watchers.count }

    static func event(_ r: Row) -> StoreEvent {
        let id: Int64 = r["id"], created: Int64 = r["create_revision"], prev: Int64 = r["prev_revision"]
        let name: String = r["name"]
        let kv = KeyValue(key: name, value: r["value"], createRevision: created, modRevision: id)
        if (r["created"] as Int64) != 0 { return StoreEvent(kind: .created, kv: kv, previous: nil) }
        let old: Data? = r["old_value"]
        let previous = old.map { KeyValue(key: name, value: $0, createRevision: created, modRevision: prev) }
        return StoreEvent(kind: (r["deleted"] as Int64) != 0 ? .deleted : .updated, kv: kv, previous: previous)
    }

    /// Hands a committed write's event to the watchers once every earlier revision's is.
    private func publish(_ e: StoreEvent) {
        unpublished[e.revision] = e
        while let next = unpublished.removeValue(forKey: published + 1) {
            published += 1
            for (_, w) in watchers where next.revision > w.from && next.kv.key.hasPrefix(w.prefix) { w.continuation.yield(next) }
        }
    }

    public func compact(through revision: Int64) throws {
        try run("compact") { db in
            let current = try Self.revision(db)
            let r = min(revision, current)
            guard r > (try Self.compacted(db)) else { return }
            // Rows superseded at or before r, and tombstones at or before r; each key's value as of
            // r stays.
            try db.execute(sql: """
                DELETE FROM kine WHERE id <= ? AND (deleted = 1 OR id < (SELECT MAX(k2.id) FROM kine k2 WHERE k2.name = kine.name AND k2.id <= ?))
                """, arguments: [r, r])
            try db.execute(sql: "INSERT INTO kine_meta (key, value) VALUES ('compact_rev', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           arguments: [r])
        }
    }

    /// Ends every watch (the server is shutting down).
    public func close() {
        for (_, w) in watchers { w.continuation.finish() }
        watchers.removeAll()
    }
}
