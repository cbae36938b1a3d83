import Crypto
import Foundation
import GRDB

/// Snapshots of the embedded store, as etcd's (`etcdctl snapshot save` / `restore`) are for etcd:
/// one file holding every key's history at one revision, taken from a running server without
/// stopping it (SQLite's online backup, inside one read transaction: the copy is of one moment),
/// and its SHA-256 beside it (`FILE.sha256`, `sha256sum`'s format), checked before a restore.
/// A restored store continues from the snapshot's revision, so resourceVersions stay comparable:
/// a client that read before the snapshot continues; one that read after it is told its version
/// is too new and relists.
public enum SQLiteSnapshot {
    public struct Info: Sendable, Equatable, CustomStringConvertible {
        /// The store's revision in the snapshot.
        public var revision: Int64
        /// Keys that exist at that revision.
        public var keys: Int
        /// Rows of the revision log (every kept version).
        public var rows: Int
        public var bytes: Int
        public var sha256: String
        public var description: String {
            "revision \(revision), \(keys) keys (\(rows) versions kept), \(bytes) bytes, sha256 \(sha256)"
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        init(_ d: String) { description = d }
    }

    static func hexSHA256(_ path: String) throws -> String {
        guard let h = FileHandle(forReadingAtPath: path) else { throw Failure("cannot read \(path)") }
        defer { try? h.close() }
        var hasher = SHA256()
        while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// `file.sha256`, as `sha256sum` writes it (and `sha256sum -c` reads it).
    static func writeChecksum(_ sum: String, of file: String) throws {
        try "\(sum)  \((file as NSString).lastPathComponent)\n".write(toFile: file + ".sha256", atomically: true, encoding: .utf8)
    }

    static func describe(_ path: String, sha256: String) throws -> Info {
        var config = Configuration()
        config.readonly = true
        let q = try DatabaseQueue(path: path, configuration: config)
        let (revision, keys, rows) = try q.read { db -> (Int64, Int, Int) in
            guard try db.tableExists("kine") else { throw Failure("\(path) is not a switchyard store (no kine table)") }
            let revision = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'kine'") ?? 0
            let keys = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM kine k WHERE k.id = (SELECT MAX(id) FROM kine WHERE name = k.name) AND k.deleted = 0
                """) ?? 0
            let rows = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM kine") ?? 0
            return (revision, keys, rows)
        }
        try q.close()
        let bytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return Info(revision: revision, keys: keys, rows: rows, bytes: bytes, sha256: sha256)
    }

    /// Copies the store at `database` (a running server's `state.db` too) to `file`, a
    /// self-contained SQLite file, and writes `file.sha256`. Nothing is left at `file` when it fails.
    @discardableResult
    public static func save(database: String, to file: String) throws -> Info {
        guard FileManager.default.fileExists(atPath: database) else { throw Failure("no store at \(database)") }
        let partial = file + ".part"
        try? FileManager.default.removeItem(atPath: partial)
        do {
            var sourceConfig = Configuration()
            sourceConfig.readonly = true
            sourceConfig.busyMode = .timeout(10)
            let source = try DatabaseQueue(path: database, configuration: sourceConfig)
            let destination = try DatabaseQueue(path: partial)
            try source.backup(to: destination)
            // One file, no log beside it; checked before it is named.
            try destination.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA journal_mode = DELETE")
                guard try String.fetchOne(db, sql: "PRAGMA integrity_check") == "ok" else { throw Failure("the copy of \(database) fails SQLite's integrity check") }
            }
            try destination.close()
            try source.close()
            let sum = try hexSHA256(partial)
            let info = try describe(partial, sha256: sum)
            guard rename(partial, file) == 0 else { throw Failure("rename \(partial) to \(file): \(String(cString: strerror(errno)))") }
            try writeChecksum(sum, of: file)
            return info
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error is Failure ? error : Failure("snapshot of \(database): \(error)")
        }
    }

    /// Checks `file` against `file.sha256` (unless `skipHashCheck`) and SQLite's integrity check,
    /// then puts it at `database`, which must not exist (a restore makes a new data directory, as
    /// `etcdctl snapshot restore` does).
    @discardableResult
    public static func restore(_ file: String, to database: String, skipHashCheck: Bool = false) throws -> Info {
        let fm = FileManager.default
        guard fm.fileExists(atPath: file) else { throw Failure("no snapshot at \(file)") }
        for existing in [database, database + "-wal"] where fm.fileExists(atPath: existing) {
            throw Failure("\(existing) exists: restore into a new data directory (or remove the old store first)")
        }
        let sum = try hexSHA256(file)
        if !skipHashCheck {
            guard let line = try? String(contentsOfFile: file + ".sha256", encoding: .utf8) else {
                throw Failure("\(file).sha256 is missing: the snapshot cannot be checked (--skip-hash-check restores it unchecked)")
            }
            let expected = line.split(separator: " ").first.map(String.init) ?? ""
            guard expected == sum else { throw Failure("\(file) has SHA-256 \(sum), but \(file).sha256 says \(expected): the snapshot is damaged") }
        }
        let partial = database + ".restoring"
        try? fm.removeItem(atPath: partial)
        do {
            try fm.copyItem(atPath: file, toPath: partial)
            let q = try DatabaseQueue(path: partial)
            try q.read { db in
                guard try String.fetchOne(db, sql: "PRAGMA integrity_check") == "ok" else { throw Failure("\(file) fails SQLite's integrity check") }
                guard try db.tableExists("kine") else { throw Failure("\(file) is not a switchyard store snapshot (no kine table)") }
            }
            try q.close()
            let info = try describe(partial, sha256: sum)
            guard rename(partial, database) == 0 else { throw Failure("rename \(partial) to \(database): \(String(cString: strerror(errno)))") }
            return info
        } catch {
            try? fm.removeItem(atPath: partial)
            throw error is Failure ? error : Failure("restore of \(file): \(error)")
        }
    }

    /// The scheduled snapshots' names in `dir`, oldest first: `PREFIX-<unix seconds>.db`.
    public static func scheduled(in dir: String, prefix: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasPrefix(prefix + "-") && $0.hasSuffix(".db") }
            .sorted { (Int($0.dropFirst(prefix.count + 1).dropLast(3)) ?? 0) < (Int($1.dropFirst(prefix.count + 1).dropLast(3)) ?? 0) }
    }

    /// Saves `PREFIX-<unix seconds>.db` into `dir` and keeps the newest `retention` of them.
    @discardableResult
    public static func saveScheduled(database: String, dir: String, prefix: String, retention: Int, now: Date = Date()) throws -> (file: String, info: Info, removed: [String]) {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = "\(dir)/\(prefix)-\(Int(now.timeIntervalSince1970)).db"
        let info = try save(database: database, to: file)
        var removed: [String] = []
        let all = scheduled(in: dir, prefix: prefix)
        for old in all.dropLast(max(1, retention)) {
            try? FileManager.default.removeItem(atPath: "\(dir)/\(old)")
            try? FileManager.default.removeItem(atPath: "\(dir)/\(old).sha256")
            removed.append(old)
        }
        return (file, info, removed)
    }
}
