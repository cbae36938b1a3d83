import Foundation
import EtcdClient
@testable import KubeStore
import NetnsKit
import Testing

/// Which store a test runs on: the same tests pass on each (etcd over gRPC, over its JSON
/// gateway, and a cluster of three members over gRPC).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, etcd, etcdGateway, etcdCluster
    var testDescription: String { rawValue }
}

/// A fresh store of a kind (an etcd of its own, started on loopback), and a way to open it again.
final class StoreFixture: @unchecked Sendable {
    let dir = TempDir()
    let etcd: EtcdProcess?
    let store: any Store

    init(_ kind: StoreKind) throws {
        switch kind {
        case .sqlite:
            etcd = nil
            store = try SQLiteStore(path: dir.storePath)
        case .etcd, .etcdGateway, .etcdCluster:
            let e = try EtcdProcess(members: kind == .etcdCluster ? 3 : 1)
            etcd = e
            store = try Self.etcdStore(kind, e.urls)
        }
        self.kind = kind
    }

    let kind: StoreKind

    static func etcdStore(_ kind: StoreKind, _ urls: [String]) throws -> EtcdStore {
        kind == .etcdGateway ? try EtcdStore(transport: EtcdGatewayTransport(endpoints: urls)) : try EtcdStore(servers: urls)
    }

    func reopen() throws -> any Store {
        if let etcd { return try Self.etcdStore(kind, etcd.urls) }
        return try SQLiteStore(path: dir.storePath)
    }
}

let storeKinds: [StoreKind] = EtcdProcess.available ? StoreKind.allCases : [.sqlite]

/// A directory for one test's database, removed when the test is done with it.
final class TempDir: @unchecked Sendable {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("sy-store-\(UUID().uuidString)")
    init() { try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
    var storePath: String { url.appendingPathComponent("state.db").path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

func data(_ s: String) -> Data { Data(s.utf8) }

/// Collects the next `n` events of a watch, or fails after `seconds`.
func next(_ n: Int, of stream: AsyncThrowingStream<StoreEvent, any Error>, within seconds: Double = 30) async throws -> [StoreEvent] {
    try await withThrowingTaskGroup(of: [StoreEvent].self) { group in
        group.addTask {
            var out: [StoreEvent] = []
            for try await e in stream {
                out.append(e)
                if out.count == n { break }
            }
            return out
        }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw StoreError.backend("timed out waiting for \(n) events")
        }
        let r = try await group.next()!
        group.cancelAll()
        return r
    }
}

/// One test at a time: with a three-member cluster per etcd case, all at once would start dozens
/// of etcd processes together.
@Suite("store contract on SQLite and etcd", .serialized)
struct SQLiteStoreTests {
    @Test(arguments: storeKinds)
    func createGetUpdateDeleteWithRevisions(kind: StoreKind) async throws {
        let f = try StoreFixture(kind)
        let s = f.store
        let base = try await s.currentRevision()
        let key = "/registry/services/default/web"
        let a = try await s.create(key, value: data("v1"))
        #expect(a.createRevision == base + 1 && a.modRevision == base + 1)
        await #expect(throws: StoreError.exists(key)) { try await s.create(key, value: data("again")) }
        let b = try await s.update(key, value: data("v2"), expected: base + 1)
        #expect(b.modRevision == base + 2 && b.createRevision == base + 1)
        // Optimistic concurrency: a write from the first revision is refused once the second is there.
        await #expect(throws: StoreError.conflict(key: key, expected: base + 1, actual: base + 2)) {
            try await s.update(key, value: data("stale"), expected: base + 1)
        }
        #expect(try await s.get(key)?.value == data("v2"))
        let gone = try await s.delete(key, expected: nil)
        #expect(gone.value == data("v2") && gone.modRevision == base + 3)
        #expect(try await s.get(key) == nil)
        await #expect(throws: StoreError.notFound(key)) { try await s.delete(key, expected: nil) }
        await #expect(throws: StoreError.notFound(key)) { try await s.update(key, value: data("x"), expected: nil) }
        // Made again: a new create revision.
        let again = try await s.create(key, value: data("v3"))
        #expect(again.createRevision == base + 4)
        #expect(try await s.currentRevision() == base + 4)
    }

    @Test(arguments: storeKinds)
    func listsByPrefixInPagesAndAtPastRevisions(kind: StoreKind) async throws {
        let f = try StoreFixture(kind)
        let s = f.store
        for i in 0..<7 { try await s.create("/registry/pods/default/p\(i)", value: data("\(i)")) }
        try await s.create("/registry/pods/kube-system/x", value: data("x"))
        try await s.create("/registry/podsecurity/y", value: data("y"))   // shares the string prefix, not the path
        let at = try await s.currentRevision()
        try await s.update("/registry/pods/default/p0", value: data("changed"), expected: nil)
        try await s.delete("/registry/pods/default/p1", expected: nil)

        var keys: [String] = []
        var after: String?
        repeat {
            let page = try await s.list(prefix: "/registry/pods/default/", after: after, limit: 3, revision: nil)
            keys += page.items.map(\.key)
            after = page.continueAfter
        } while after != nil
        #expect(keys == (0..<7).filter { $0 != 1 }.map { "/registry/pods/default/p\($0)" })
        #expect(try await s.count(prefix: "/registry/pods/") == 7)
        // After a key, and as it was at a revision (p1 still there then): what a list page's
        // remainingItemCount counts.
        #expect(try await s.count(prefix: "/registry/pods/default/", after: "/registry/pods/default/p3", revision: nil) == 3)
        #expect(try await s.count(prefix: "/registry/pods/default/", after: "/registry/pods/default/p0", revision: at) == 6)
        #expect(try await s.count(prefix: "/registry/pods/default/", after: "/registry/pods/default/p0", revision: nil) == 5)
        // As it was before the update and the delete.
        let past = try await s.list(prefix: "/registry/pods/default/", after: nil, limit: 0, revision: at)
        #expect(past.items.count == 7 && past.items.first?.value == data("0") && past.revision == at)
        await #expect(throws: StoreError.self) { try await s.list(prefix: "/registry/pods/", after: nil, limit: 0, revision: at + 999) }
    }

    @Test(arguments: storeKinds)
    func watchReplaysFromARevisionThenFollowsLiveWrites(kind: StoreKind) async throws {
        let f = try StoreFixture(kind)
        let s = f.store
        try await s.create("/registry/configmaps/default/a", value: data("1"))
        let from = try await s.currentRevision()
        try await s.update("/registry/configmaps/default/a", value: data("2"), expected: nil)
        try await s.create("/registry/secrets/default/b", value: data("other prefix"))
        let stream = try await s.watch(prefix: "/registry/configmaps/", after: from)
        try await s.delete("/registry/configmaps/default/a", expected: nil)
        try await s.create("/registry/configmaps/kube-system/c", value: data("3"))
        let events = try await next(3, of: stream)
        #expect(events.map(\.kind) == [.updated, .deleted, .created])
        #expect(events.map(\.revision) == [from + 1, from + 3, from + 4])
        #expect(events[0].previous?.value == data("1") && events[0].previous?.modRevision == from)
        #expect(events[1].kv.value == data("2"), "a delete carries the last value")
    }

    @Test(arguments: storeKinds)
    func compactionExpiresOldRevisionsAndKeepsCurrentValues(kind: StoreKind) async throws {
        let f = try StoreFixture(kind)
        let s = f.store
        let base = try await s.currentRevision()
        try await s.create("/k/a", value: data("a1"))
        try await s.update("/k/a", value: data("a2"), expected: nil)
        try await s.create("/k/b", value: data("b1"))
        try await s.delete("/k/b", expected: nil)
        try await s.compact(through: base + 4)
        #expect(try await s.get("/k/a")?.value == data("a2"))
        #expect(try await s.get("/k/b") == nil)
        // Watching from before the compaction fails (at once, or as the stream's first answer).
        var expired = false
        do {
            let w = try await s.watch(prefix: "/k/", after: base + 1)
            _ = try await next(1, of: w, within: 3)
        } catch StoreError.compacted(_, _) {
            expired = true
        }
        #expect(expired, "a watch from a compacted revision is refused")
        await #expect(throws: StoreError.self) { try await s.list(prefix: "/k/", after: nil, limit: 0, revision: base + 1) }
        // From the compacted revision on, the log is whole.
        let w = try await s.watch(prefix: "/k/", after: base + 4)
        try await s.update("/k/a", value: data("a3"), expected: nil)
        #expect(try await next(1, of: w).first?.revision == base + 5)
        #expect(try await s.currentRevision() == base + 5, "revisions keep counting after compaction")
    }

    @Test(arguments: storeKinds)
    func reopenedStoreHasEverythingAndConcurrentWritersNeverShareARevision(kind: StoreKind) async throws {
        let f = try StoreFixture(kind)
        let s = f.store
        let base = try await s.currentRevision()
        try await withThrowingTaskGroup(of: Int64.self) { group in
            for i in 0..<50 { group.addTask { try await s.create("/k/\(i)", value: data("\(i)")).modRevision } }
            var revs = Set<Int64>()
            for try await r in group { revs.insert(r) }
            #expect(revs == Set((base + 1)...(base + 50)))
        }
        let reopened = try f.reopen()
        #expect(try await reopened.count(prefix: "/k/") == 50)
        #expect(try await reopened.currentRevision() == base + 50)
    }

    /// Writes committed together are still each their own: of many updates made at once against
    /// the same revision exactly one wins and the others are refused as conflicts, without
    /// failing the writes beside them; a watch, including one opened while the writes go on,
    /// sees every change once, in revision order.
    @Test(arguments: storeKinds)
    func concurrentWritesAreRefusedOneByOneAndWatchedInOrder(kind: StoreKind) async throws {
        let f = try StoreFixture(kind)
        let s = f.store
        let base = try await s.create("/c/shared", value: data("0")).modRevision
        let early = try await s.watch(prefix: "/c/", after: base)
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group -> [Bool] in
            for i in 0..<20 {
                group.addTask {
                    do { _ = try await s.update("/c/shared", value: data("u\(i)"), expected: base); return true } catch StoreError.conflict { return false }
                }
                group.addTask { _ = try await s.create("/c/k\(i)", value: data("\(i)")); return true }
            }
            var all: [Bool] = []
            for try await ok in group { all.append(ok) }
            return all
        }
        #expect(outcomes.filter { !$0 }.count == 19, "19 of the 20 updates against one revision are conflicts")
        #expect(try await s.count(prefix: "/c/k") == 20, "the creates beside them all went through")
        let late = try await s.watch(prefix: "/c/", after: base)
        for w in [early, late] {
            let events = try await next(21, of: w)
            #expect(events.map(\.revision) == Array((base + 1)...(base + 21)))
        }
    }

    /// The write-ahead log is copied into the database file in the background (no write waits
    /// for a checkpoint), and what was written reads back whole after a reopen.
    @Test func theLogIsCheckpointedInTheBackground() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-store-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("state.db").path
        let value = Data(repeating: UInt8(ascii: "x"), count: 16 * 1024)
        var s: SQLiteStore? = try SQLiteStore(path: path)
        for i in 0..<600 { try await s!.create("/k/\(i)", value: value) }
        func size(_ p: String) -> UInt64 { (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? UInt64) ?? 0 }
        var main: UInt64 = 0
        for _ in 0..<40 {
            main = size(path)
            if main > 8 << 20 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(main > 8 << 20, "the database file holds the log's pages: \(main) bytes (log \(size(path + "-wal")))")
        s = nil
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.count(prefix: "/k/") == 600)
        #expect(try await reopened.get("/k/599")?.value == value)
    }

    @Test func endedWatchesAreForgotten() async throws {
        let s = try SQLiteStore(path: ":memory:")
        do {
            let stream = try await s.watch(prefix: "/", after: 0)
            try await s.create("/x", value: data("1"))
            _ = try await next(1, of: stream)
        }
        for _ in 0..<100 where await s.watcherCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await s.watcherCount == 0)
    }
}
