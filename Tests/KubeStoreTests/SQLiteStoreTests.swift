import Foundation
@testable import KubeStore
import Testing

/// A directory for one test's database, removed when the test is done with it.
final class TempDir: @unchecked Sendable {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("sy-store-\(UUID().uuidString)")
    init() { try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
    var storePath: String { url.appendingPathComponent("state.db").path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

func data(_ s: String) -> Data { Data(s.utf8) }

/// Collects the next `n` events of a watch, or fails after `seconds`.
func next(_ n: Int, of stream: AsyncThrowingStream<StoreEvent, any Error>, within seconds: Double = 5) async throws -> [StoreEvent] {
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

@Suite("SQLite store")
struct SQLiteStoreTests {
    @Test func createGetUpdateDeleteWithRevisions() async throws {
        let dir = TempDir()
        let s = try SQLiteStore(path: dir.storePath)
        #expect(try await s.currentRevision() == 0)
        let a = try await s.create("/registry/services/default/web", value: data("v1"))
        #expect(a.createRevision == 1 && a.modRevision == 1)
        await #expect(throws: StoreError.exists("/registry/services/default/web")) {
            try await s.create("/registry/services/default/web", value: data("again"))
        }
        let b = try await s.update("/registry/services/default/web", value: data("v2"), expected: 1)
        #expect(b.modRevision == 2 && b.createRevision == 1)
        // Optimistic concurrency: a write from revision 1 is refused once revision 2 is there.
        await #expect(throws: StoreError.conflict(key: "/registry/services/default/web", expected: 1, actual: 2)) {
            try await s.update("/registry/services/default/web", value: data("stale"), expected: 1)
        }
        #expect(try await s.get("/registry/services/default/web")?.value == data("v2"))
        let gone = try await s.delete("/registry/services/default/web", expected: nil)
        #expect(gone.value == data("v2") && gone.modRevision == 3)
        #expect(try await s.get("/registry/services/default/web") == nil)
        await #expect(throws: StoreError.notFound("/registry/services/default/web")) {
            try await s.delete("/registry/services/default/web", expected: nil)
        }
        // Made again: a new create revision.
        let again = try await s.create("/registry/services/default/web", value: data("v3"))
        #expect(again.createRevision == 4)
        #expect(try await s.currentRevision() == 4)
    }

    @Test func listsByPrefixInPagesAndAtPastRevisions() async throws {
        let dir = TempDir()
        let s = try SQLiteStore(path: dir.storePath)
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
        // As it was before the update and the delete.
        let past = try await s.list(prefix: "/registry/pods/default/", after: nil, limit: 0, revision: at)
        #expect(past.items.count == 7 && past.items.first?.value == data("0") && past.revision == at)
        await #expect(throws: StoreError.futureRevision(requested: 999, current: at + 2)) {
            try await s.list(prefix: "/registry/pods/", after: nil, limit: 0, revision: 999)
        }
    }

    @Test func watchReplaysFromARevisionThenFollowsLiveWrites() async throws {
        let dir = TempDir()
        let s = try SQLiteStore(path: dir.storePath)
        try await s.create("/registry/configmaps/default/a", value: data("1"))
        let from = try await s.currentRevision()
        try await s.update("/registry/configmaps/default/a", value: data("2"), expected: nil)
        try await s.create("/registry/secrets/default/b", value: data("other prefix"))
        let stream = try await s.watch(prefix: "/registry/configmaps/", after: from)
        try await s.delete("/registry/configmaps/default/a", expected: nil)
        try await s.create("/registry/configmaps/kube-system/c", value: data("3"))
        let events = try await next(3, of: stream)
        #expect(events.map(\.kind) == [.updated, .deleted, .created])
        #expect(events.map(\.revision) == [2, 4, 5])
        #expect(events[0].previous?.value == data("1") && events[0].previous?.modRevision == 1)
        #expect(events[1].kv.value == data("2"), "a delete carries the last value")
    }

    @Test func compactionExpiresOldRevisionsAndKeepsCurrentValues() async throws {
        let dir = TempDir()
        let s = try SQLiteStore(path: dir.storePath)
        try await s.create("/k/a", value: data("a1"))
        try await s.update("/k/a", value: data("a2"), expected: nil)
        try await s.create("/k/b", value: data("b1"))
        try await s.delete("/k/b", expected: nil)
        try await s.compact(through: 4)
        #expect(try await s.get("/k/a")?.value == data("a2"))
        #expect(try await s.get("/k/b") == nil)
        await #expect(throws: StoreError.compacted(requested: 2, compacted: 4)) { try await s.watch(prefix: "/k/", after: 2) }
        await #expect(throws: StoreError.compacted(requested: 1, compacted: 4)) {
            try await s.list(prefix: "/k/", after: nil, limit: 0, revision: 1)
        }
        // From the compacted revision on, the log is whole.
        let w = try await s.watch(prefix: "/k/", after: 4)
        try await s.update("/k/a", value: data("a3"), expected: nil)
        #expect(try await next(1, of: w).first?.revision == 5)
        #expect(try await s.currentRevision() == 5, "revisions keep counting after compaction")
    }

    @Test func reopenedStoreHasEverythingAndConcurrentWritersNeverShareARevision() async throws {
        let dir = TempDir()
        let path = dir.storePath
        do {
            let s = try SQLiteStore(path: path)
            try await withThrowingTaskGroup(of: Int64.self) { group in
                for i in 0..<50 { group.addTask { try await s.create("/k/\(i)", value: data("\(i)")).modRevision } }
                var revs = Set<Int64>()
                for try await r in group { revs.insert(r) }
                #expect(revs == Set(1...50))
            }
        }
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.count(prefix: "/k/") == 50)
        #expect(try await reopened.currentRevision() == 50)
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
