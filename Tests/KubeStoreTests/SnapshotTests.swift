import Foundation
import Synchronization
@testable import KubeStore
import KubeAPI
import NetnsKit
import Testing

/// Snapshots of the embedded store: taken while a writer runs, restored into a new place, equal
/// key for key and version for version to the source at the snapshot's revision, continuing from
/// it; a damaged or unchecked snapshot, or a restore over a store, refused with nothing left.
@Suite("SQLite snapshots")
struct SnapshotTests {
    static func all(_ s: any Store, at revision: Int64? = nil) async throws -> [KeyValue] {
        try await s.list(prefix: "/registry/", after: nil, limit: 0, revision: revision).items
    }

    @Test func aSnapshotUnderLoadRestoresEqualAtItsRevision() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.storePath)
        for i in 0..<200 { try await store.create("/registry/configmaps/default/c\(i)", value: Data("v0-\(i)".utf8)) }
        // A writer that does not stop while the snapshot is taken.
        let writer = Task {
            var n = 0
            while !Task.isCancelled {
                let key = "/registry/configmaps/default/c\(n % 200)"
                _ = try? await store.update(key, value: Data("v\(n)".utf8), expected: nil)
                if n % 7 == 0 { _ = try? await store.create("/registry/secrets/default/s\(n)", value: Data("s".utf8)) }
                if n % 11 == 0 { _ = try? await store.delete("/registry/secrets/default/s\(n - 7)", expected: nil) }
                n += 1
            }
            return n
        }
        try await Task.sleep(for: .milliseconds(300))
        let file = dir.url.appendingPathComponent("snap.db").path
        let info = try await Task.detached { try SQLiteSnapshot.save(database: dir.storePath, to: file) }.value
        try await Task.sleep(for: .milliseconds(200))
        writer.cancel()
        let writes = await writer.value
        #expect(writes > 0)
        let after = try await store.currentRevision()
        #expect(info.revision > 200 && info.revision < after, "the snapshot is of a moment during the writes: \(info.revision) of \(after)")
        #expect(FileManager.default.fileExists(atPath: file + ".sha256") && !FileManager.default.fileExists(atPath: file + ".part"))

        let restoredPath = dir.url.appendingPathComponent("restored/state.db").path
        try FileManager.default.createDirectory(atPath: dir.url.appendingPathComponent("restored").path, withIntermediateDirectories: true)
        let restoredInfo = try SQLiteSnapshot.restore(file, to: restoredPath)
        #expect(restoredInfo == info)
        let restored = try SQLiteStore(path: restoredPath)
        #expect(try await restored.currentRevision() == info.revision)
        let source = try await Self.all(store, at: info.revision)
        let copy = try await Self.all(restored)
        #expect(copy.count == info.keys && copy == source, "\(copy.count) keys restored, \(source.count) at revision \(info.revision) in the source")
        // History before the snapshot is kept: a key's older version reads as in the source.
        let earlier = info.revision - 50
        #expect(try await Self.all(restored, at: earlier) == Self.all(store, at: earlier))
        // It continues from the snapshot's revision.
        let next = try await restored.create("/registry/configmaps/default/new", value: Data("n".utf8))
        #expect(next.modRevision == info.revision + 1)
    }

    @Test func damagedUncheckedOrClobberingRestoresAreRefused() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.storePath)
        try await store.create("/registry/configmaps/default/a", value: Data("a".utf8))
        let file = dir.url.appendingPathComponent("snap.db").path
        try SQLiteSnapshot.save(database: dir.storePath, to: file)
        // Over an existing store: refused.
        #expect(throws: SQLiteSnapshot.Failure.self) { try SQLiteSnapshot.restore(file, to: dir.storePath) }
        let target = dir.url.appendingPathComponent("new.db").path
        // A flipped byte: the hash says so, and nothing is left behind.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count - 10] ^= 0xff
        let damaged = dir.url.appendingPathComponent("damaged.db").path
        try bytes.write(to: URL(fileURLWithPath: damaged))
        try FileManager.default.copyItem(atPath: file + ".sha256", toPath: damaged + ".sha256")
        let damagedError = #expect(throws: SQLiteSnapshot.Failure.self) { try SQLiteSnapshot.restore(damaged, to: target) }
        #expect(damagedError?.description.contains("damaged") == true, "\(String(describing: damagedError))")
        #expect(!FileManager.default.fileExists(atPath: target) && !FileManager.default.fileExists(atPath: target + ".restoring"))
        // No hash beside it: refused unless told.
        try FileManager.default.removeItem(atPath: file + ".sha256")
        let unchecked = #expect(throws: SQLiteSnapshot.Failure.self) { try SQLiteSnapshot.restore(file, to: target) }
        #expect(unchecked?.description.contains("--skip-hash-check") == true, "\(String(describing: unchecked))")
        #expect(try SQLiteSnapshot.restore(file, to: target, skipHashCheck: true).keys == 1)
        // Not a store at all.
        let other = dir.url.appendingPathComponent("other.db").path
        try Data("not sqlite at all, not at all".utf8).write(to: URL(fileURLWithPath: other))
        #expect(throws: SQLiteSnapshot.Failure.self) { try SQLiteSnapshot.restore(other, to: dir.url.appendingPathComponent("x.db").path, skipHashCheck: true) }
        #expect(throws: SQLiteSnapshot.Failure.self) { try SQLiteSnapshot.save(database: dir.url.appendingPathComponent("none.db").path, to: other + "2") }
    }

    @Test func scheduledSnapshotsKeepTheNewest() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.storePath)
        let snaps = dir.url.appendingPathComponent("snapshots").path
        for i in 0..<4 {
            try await store.create("/registry/configmaps/default/c\(i)", value: Data("v".utf8))
            let r = try SQLiteSnapshot.saveScheduled(database: dir.storePath, dir: snaps, prefix: "switchyard-snapshot", retention: 2,
                                                     now: Date(timeIntervalSince1970: 1_000_000 + Double(i) * 3600))
            #expect(r.info.keys == i + 1)
            #expect(r.removed == (i >= 2 ? ["switchyard-snapshot-\(1_000_000 + (i - 2) * 3600).db"] : []))
        }
        #expect(SQLiteSnapshot.scheduled(in: snaps, prefix: "switchyard-snapshot") == ["switchyard-snapshot-1007200.db", "switchyard-snapshot-1010800.db"])
        let left = try FileManager.default.contentsOfDirectory(atPath: snaps).sorted()
        #expect(left == ["switchyard-snapshot-1007200.db", "switchyard-snapshot-1007200.db.sha256", "switchyard-snapshot-1010800.db", "switchyard-snapshot-1010800.db.sha256"])
    }
}

/// etcd's snapshot through its maintenance API: etcd's own tools read it (`etcdctl snapshot
/// status` finds its revision and keys) and restore it.
@Suite("etcd snapshots", .enabled(if: EtcdProcess.available && FileManager.default.isExecutableFile(atPath: "/usr/bin/etcdctl"), "needs etcd-server and etcd-client"))
struct EtcdSnapshotTests {
    @Test func etcdsOwnToolsReadAndRestoreTheSnapshot() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let store = try EtcdStore(servers: [etcd.url])
        for i in 0..<300 { _ = try await store.create("/registry/configmaps/default/c\(i)", value: Data(repeating: UInt8(i % 250), count: 2000)) }
        let dir = TempDir()
        let file = dir.url.appendingPathComponent("etcd.db").path
        let info = try await store.saveSnapshot(to: file)
        #expect(info.keys == 300 && info.bytes > 600_000 && !SQLiteSnapshot.isSQLite(file), "\(info)")
        let sum = try String(contentsOfFile: file + ".sha256", encoding: .utf8)
        #expect(sum.hasPrefix(info.sha256 + "  etcd.db"))
        let status = try Sh.run(["env", "ETCDCTL_API=3", "etcdctl", "snapshot", "status", file, "-w", "json"])
        let json = try JSONValue.parse(Data(status.out.utf8))
        #expect(status.status == 0 && json["revision"]?.int == info.revision && (json["totalKey"]?.int ?? 0) >= 300, "\(status)")
        let restored = dir.url.appendingPathComponent("member").path
        let restore = try Sh.run(["env", "ETCDCTL_API=3", "etcdctl", "snapshot", "restore", file, "--data-dir", restored])
        #expect(restore.status == 0 && FileManager.default.fileExists(atPath: restored + "/member/snap/db"), "\(restore)")
        // Our restore knows it is etcd's and says which tool restores it.
        #expect(!SQLiteSnapshot.isSQLite(file))
    }
}

/// A snapshot taken while writes go on, restored into a fresh three-member etcd cluster (etcd's
/// own restore, each member named): every key and value equal to the source at the revision the
/// restored cluster holds, each with its resourceVersion, and new writes continuing from that revision (the
/// restored history is etcd's own, so clients go on from the resourceVersions they hold).
@Suite("etcd snapshots restored", .serialized, .enabled(if: EtcdProcess.available && FileManager.default.isExecutableFile(atPath: "/usr/bin/etcdctl"), "needs etcd-server and etcd-client"))
struct EtcdRestoreTests {
    @Test func aSnapshotUnderLoadRestoresIntoAFreshClusterObjectForObject() async throws {
        let source = try EtcdProcess(members: 3)
        defer { source.stop() }
        let store = try EtcdStore(servers: source.urls)
        for i in 0..<200 { _ = try await store.create("/registry/configmaps/default/before-\(i)", value: Data("{\"i\":\(i)}".utf8)) }
        // Writes go on while the snapshot is taken.
        final class Count: Sendable { let n = Mutex(0) }
        let count = Count()
        let writer = Task {
            var n = 0
            while !Task.isCancelled {
                n += 1
                _ = try? await store.create("/registry/configmaps/default/during-\(n)", value: Data("{\"n\":\(n)}".utf8))
                if n % 3 == 0 { _ = try? await store.delete("/registry/configmaps/default/before-\(n % 200)", expected: nil) }
                count.n.withLock { $0 = n }
            }
            return n
        }
        // Some writes before the snapshot, and more after it (however slow a loaded machine makes them).
        for _ in 0..<600 where count.n.withLock({ $0 }) < 10 { try await Task.sleep(for: .milliseconds(50)) }
        let dir = TempDir()
        let file = dir.url.appendingPathComponent("etcd.db").path
        let info = try await store.saveSnapshot(to: file)
        let writtenBefore = count.n.withLock { $0 }
        for _ in 0..<600 where count.n.withLock({ $0 }) < writtenBefore + 10 { try await Task.sleep(for: .milliseconds(50)) }
        writer.cancel()
        let written = await writer.value
        #expect(writtenBefore >= 10 && written >= writtenBefore + 10, "\(writtenBefore) writes before the snapshot was saved, \(written) in all")
        let restored = try EtcdProcess(members: 3, snapshot: file)
        defer { restored.stop() }
        let copy = try EtcdStore(servers: restored.urls)
        let back = try await copy.list(prefix: "/registry/", after: nil, limit: 0, revision: nil)
        // The revision etcd's answer named is read before etcd takes the snapshot: under writes the
        // snapshot may hold a few more. What the restored cluster holds is the snapshot's own.
        #expect(back.revision >= info.revision && back.revision < info.revision + 20, "\(back.revision), \(info.revision)")
        let atSnapshot = try await store.list(prefix: "/registry/", after: nil, limit: 0, revision: back.revision)
        #expect(try await store.currentRevision() > info.revision, "the writes went on past the snapshot")
        #expect(back.items.map(\.key) == atSnapshot.items.map(\.key))
        #expect(back.items.map(\.value) == atSnapshot.items.map(\.value))
        #expect(back.items.map(\.modRevision) == atSnapshot.items.map(\.modRevision), "resourceVersions as they were")
        // A new write continues from the snapshot's revision.
        let next = try await copy.create("/registry/configmaps/default/after", value: Data("{}".utf8))
        #expect(next.modRevision > info.revision)
    }
}
