import Crypto
import Foundation
import EtcdClient
import KubeAPI

extension EtcdStore {
    /// etcd's maintenance Snapshot, as `etcdctl snapshot save` takes it: etcd's database as
    /// etcd streams it, ending with the SHA-256 of what came before (checked here; `etcdutl
    /// snapshot restore` checks it again), written to `file` with `file.sha256` beside it.
    /// Nothing is left at `file` when it fails.
    @discardableResult
    public func saveSnapshot(to file: String) async throws -> SQLiteSnapshot.Info {
        var revision = try await currentRevision()
        let partial = file + ".part"
        let fm = FileManager.default
        try? fm.removeItem(atPath: partial)
        guard fm.createFile(atPath: partial, contents: nil), let out = FileHandle(forWritingAtPath: partial) else {
            throw SQLiteSnapshot.Failure("cannot write \(partial)")
        }
        var tail = Data()     // the last 32 bytes seen: etcd's hash, once the stream ends
        var hasher = SHA256()
        var whole = SHA256()
        var bytes = 0
        do {
            var last: any Error = StoreError.backend("no etcd server answered")
            var done = false
            for member in transport.endpoints.indices where !done {
                do {
                    for try await msg in try await transport.snapshot(at: member) {
                        // The revision the snapshot was taken at, as etcd's header says it.
                        if bytes == 0, msg.hasHeader { revision = max(revision, msg.header.revision) }
                        let blob = msg.blob
                        guard !blob.isEmpty else { continue }
                        try out.write(contentsOf: blob)
                        whole.update(data: blob)
                        bytes += blob.count
                        tail.append(blob)
                        if tail.count > 32 {
                            hasher.update(data: tail.prefix(tail.count - 32))
                            tail = Data(tail.suffix(32))
                        }
                    }
                    done = true
                } catch let e as EtcdError where !e.isUnreachable {
                    throw SQLiteSnapshot.Failure("etcd refused the snapshot: \(e)")
                } catch {
                    guard bytes == 0 else { throw error }   // part-way: not resumable on another member
                    last = error
                }
            }
            guard done else { throw last }
            try out.close()
            guard tail.count == 32, Data(hasher.finalize()) == tail else {
                throw SQLiteSnapshot.Failure("etcd's snapshot does not end with the SHA-256 of its contents: damaged in transfer")
            }
            guard rename(partial, file) == 0 else { throw SQLiteSnapshot.Failure("rename \(partial) to \(file): \(String(cString: strerror(errno)))") }
            let sum = whole.finalize().map { String(format: "%02x", $0) }.joined()
            try SQLiteSnapshot.writeChecksum(sum, of: file)
            // The keys as they were at that revision (writes may have gone on since). etcd fills
            // its answer's header before it takes the snapshot, so under writes the snapshot may
            // hold a few writes more than the revision says; `etcdctl snapshot status` reads the
            // exact revision from the file.
            return SQLiteSnapshot.Info(revision: revision, keys: try await count(prefix: "/", after: nil, revision: revision), rows: 0, bytes: bytes, sha256: sum)
        } catch {
            try? out.close()
            try? fm.removeItem(atPath: partial)
            throw error is SQLiteSnapshot.Failure ? error : SQLiteSnapshot.Failure("snapshot of etcd: \(error)")
        }
    }
}

extension SQLiteSnapshot {
    /// Whether `file` is one of ours (an SQLite database) rather than etcd's (a bbolt file).
    public static func isSQLite(_ file: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: file) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 16)) == Data("SQLite format 3\0".utf8)
    }
}
