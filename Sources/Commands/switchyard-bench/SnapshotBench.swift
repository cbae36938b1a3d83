import ArgumentParser
import Foundation
import KubeStore
import NetnsKit

/// Snapshots of a large store: 10,000 Services and 100,000 other objects (ConfigMaps) written into
/// the SQLite store and into a throw-away etcd; `switchyard server snapshot save` and `restore`
/// of the SQLite store, and of etcd through its maintenance API, against `etcdctl snapshot save`
/// and `restore` of the same etcd in the same run.
struct SnapshotBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Time snapshot save and restore of 10,000 Services and 100,000 other objects, SQLite and etcd, against etcdctl.")

    @Option(help: "Services.") var services = 10_000
    @Option(help: "Other objects (ConfigMaps).") var objects = 100_000
    @Option(help: "Writes in flight while the stores are filled.") var concurrency = 64
    @Option(help: "Write the markdown results here too.") var out: String?

    static func service(_ i: Int) -> Data {
        Data(#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc-\#(i)","namespace":"bench","uid":"\#(UUID().uuidString)","labels":{"app":"svc-\#(i)"}},"spec":{"type":"ClusterIP","clusterIP":"10.96.\#(i / 250).\#(i % 250 + 1)","clusterIPs":["10.96.\#(i / 250).\#(i % 250 + 1)"],"selector":{"app":"svc-\#(i)"},"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}],"sessionAffinity":"None","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster"},"status":{"loadBalancer":{}}}"#.utf8)
    }

    static func configMap(_ i: Int) -> Data {
        Data(#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-\#(i)","namespace":"bench","uid":"\#(UUID().uuidString)"},"data":{"key":"value-\#(i)","other":"\#(String(repeating: "x", count: 120))"}}"#.utf8)
    }

    func fill(_ store: any Store) async throws {
        let total = services + objects
        try await withThrowingTaskGroup(of: Void.self) { g in
            var next = 0
            func add() {
                let i = next
                next += 1
                g.addTask {
                    if i < services {
                        try await store.create("/registry/services/specs/bench/svc-\(i)", value: Self.service(i))
                    } else {
                        try await store.create("/registry/configmaps/bench/cm-\(i - services)", value: Self.configMap(i - services))
                    }
                }
            }
            for _ in 0..<min(concurrency, total) { add() }
            while try await g.next() != nil { if next < total { add() } }
        }
    }

    static func time(_ body: () async throws -> Void) async rethrows -> Double {
        let start = Date()
        try await body()
        return Date().timeIntervalSince(start)
    }

    static func mb(_ path: String) -> Double {
        Double((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0) / 1_048_576
    }

    func run() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-snapbench-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let total = services + objects
        print("filling the SQLite store with \(total) objects…")
        let sqlite = try SQLiteStore(path: dir + "/state.db")
        let fillSQLite = try await Self.time { try await fill(sqlite) }
        var info: SQLiteSnapshot.Info?
        let saveSQLite = try await Self.time { info = try SQLiteSnapshot.save(database: dir + "/state.db", to: dir + "/sqlite.snap") }
        try FileManager.default.createDirectory(atPath: dir + "/restored", withIntermediateDirectories: true)
        let restoreSQLite = try await Self.time { _ = try SQLiteSnapshot.restore(dir + "/sqlite.snap", to: dir + "/restored/state.db") }
        guard info?.keys == total else { throw ValidationError("the SQLite snapshot holds \(info?.keys ?? 0) keys, not \(total)") }

        print("filling etcd with \(total) objects…")
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let etcdStore = try EtcdStore(servers: [etcd.url])
        let fillEtcd = try await Self.time { try await fill(etcdStore) }
        var etcdInfo: SQLiteSnapshot.Info?
        let saveEtcd = try await Self.time { etcdInfo = try await etcdStore.saveSnapshot(to: dir + "/etcd.snap") }
        let etcdctlSave = try await Self.time {
            let r = try Sh.run(["env", "ETCDCTL_API=3", "etcdctl", "--endpoints", etcd.url, "snapshot", "save", dir + "/etcdctl.snap"], timeout: 600)
            guard r.status == 0 else { throw ValidationError("etcdctl snapshot save: \(r.err)") }
        }
        let etcdctlRestore = try await Self.time {
            let r = try Sh.run(["env", "ETCDCTL_API=3", "etcdctl", "snapshot", "restore", dir + "/etcd.snap", "--data-dir", dir + "/etcd-restored"], timeout: 600)
            guard r.status == 0 else { throw ValidationError("etcdctl snapshot restore of our etcd snapshot: \(r.err)") }
        }
        guard (etcdInfo?.keys ?? 0) >= total else { throw ValidationError("the etcd snapshot's store holds \(etcdInfo?.keys ?? 0) keys, not \(total)") }

        let f = { (x: Double) in String(format: "%.2f s", x) }
        var md = "## Snapshots of \(services) Services and \(objects) other objects (`switchyard-bench snapshot`)\n\n"
        md += "Filled in \(f(fillSQLite)) (SQLite) and \(f(fillEtcd)) (etcd, over gRPC), \(concurrency) writes in flight.\n\n"
        md += "| what | time | size | against `etcdctl snapshot save` (\(f(etcdctlSave)), \(String(format: "%.0f MB", Self.mb(dir + "/etcdctl.snap")))) |\n|---|---:|---:|---:|\n"
        md += "| `switchyard server snapshot save`, SQLite (online backup) | \(f(saveSQLite)) | \(String(format: "%.0f MB", Self.mb(dir + "/sqlite.snap"))) | \(String(format: "%.2f×", saveSQLite / etcdctlSave)) |\n"
        md += "| `switchyard server snapshot save --etcd-servers` (etcd's Snapshot RPC over gRPC) | \(f(saveEtcd)) | \(String(format: "%.0f MB", Self.mb(dir + "/etcd.snap"))) | \(String(format: "%.2f×", saveEtcd / etcdctlSave)) |\n"
        md += "| `switchyard server snapshot restore`, SQLite (hash, integrity check, copy) | \(f(restoreSQLite)) | | \(String(format: "%.2f×", restoreSQLite / etcdctlSave)) |\n"
        md += "| `etcdctl snapshot restore` of our etcd snapshot | \(f(etcdctlRestore)) | | \(String(format: "%.2f×", etcdctlRestore / etcdctlSave)) |\n"
        print(md)
        if let out { try md.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
