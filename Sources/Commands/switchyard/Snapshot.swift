import ArgumentParser
import Foundation
import KubeStore

/// `switchyard server snapshot save|restore`: the store's backups, as `etcdctl snapshot` for etcd
/// and `k3s etcd-snapshot` for k3s.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Save the SQLite store of a (running) server to a file, or restore one into a new data directory.",
        subcommands: [Save.self, Restore.self])

    /// A failure of the work itself (not of the command line): said on stderr, exit status 1.
    static func failed(_ error: any Error) -> ExitCode {
        FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
        return .failure
    }

    struct Save: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy DATA_DIR/state.db to FILE in one consistent read (the server may run), with FILE.sha256 beside it.")
        @Argument(help: "The snapshot file.") var file: String
        /// `--data-dir` (the server's data directory) and `--etcd-servers` (snapshot that etcd
        /// instead: etcd's own snapshot, restorable with etcdutl) are the server's own flags.
        @ParentCommand var server: Server
        var dataDir: String { server.dataDir }
        var etcdServers: String? { server.etcdServers }

        func run() async throws {
            let started = Date()
            do {
                let info: SQLiteSnapshot.Info
                if let etcdServers {
                    info = try await server.etcdStore(etcdServers.split(separator: ",").map(String.init)).saveSnapshot(to: file)
                } else {
                    info = try SQLiteSnapshot.save(database: dataDir + "/state.db", to: file)
                }
                print("Snapshot saved at \(file): \(info) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            } catch { throw SnapshotCommand.failed(error) }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check FILE against FILE.sha256 and put it into a new data directory as its state.db; start a server on that directory.")
        @Argument(help: "The snapshot file.") var file: String
        /// `--data-dir`, the server's flag: the new data directory (created; it must hold no store).
        @ParentCommand var server: Server
        var dataDir: String { server.dataDir }
        @Flag(name: .customLong("skip-hash-check"), help: "Restore without FILE.sha256 (as etcdctl's flag).") var skipHashCheck = false

        func run() throws {
            guard SQLiteSnapshot.isSQLite(file) else {
                throw ValidationError("\(file) is not a snapshot of the SQLite store; an etcd snapshot is restored by etcd's tools: etcdutl snapshot restore \(file) --data-dir DIR (etcdctl with etcd 3.4), then etcd --data-dir DIR")
            }
            do {
                try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
                let info = try SQLiteSnapshot.restore(file, to: dataDir + "/state.db", skipHashCheck: skipHashCheck)
                print("Restored \(file) into \(dataDir)/state.db: \(info)")
                print("The cluster CA, the service-account key and the kubeconfig are not in a snapshot: copy DATA_DIR/pki and sa.key from the old data directory to keep its credentials valid.")
            } catch { throw SnapshotCommand.failed(error) }
        }
    }
}
