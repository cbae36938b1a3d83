import Foundation
import HostOS

/// A throwaway etcd (Debian's etcd-server) on loopback ports of its own, for tests of the etcd
/// store: one member, or a cluster of several (`members: 3`), each with a fresh data dir,
/// stopped and removed with `stop()` (or at deinit). With `tls`, clients must present a
/// certificate the CA signed (`--client-cert-auth`).
public final class EtcdProcess: @unchecked Sendable {
    /// The members' client URLs.
    public let urls: [String]
    /// The first member's client URL.
    public var url: String { urls[0] }
    private let lock = NSLock()
    private var processes: [Process]
    /// Each member's command line, to start it again.
    private let commands: [[String]]
    let dir: URL

    /// Files for TLS on the client port: the members' serving certificate and key, and the CA
    /// whose client certificates they accept.
    public struct ServerTLS: Sendable {
        public var caFile: String, certFile: String, keyFile: String
        public init(caFile: String, certFile: String, keyFile: String) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    public static let binary = "/usr/bin/etcd"
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    /// - Parameter netns: run it inside this named network namespace (its loopback).
    /// - Parameter snapshot: an etcd snapshot each member's data dir is restored from first
    ///   (`etcdctl snapshot restore`, with the member's name and the cluster's peers), as a
    ///   cluster is brought back from a backup.
    ///
    /// Its ports are picked at random; when one is taken (by another test's etcd, or as some
    /// connection's ephemeral port) etcd exits at once, and it is started again on others.
    public init(netns: String? = nil, members: Int = 1, tls: ServerTLS? = nil, snapshot: String? = nil) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-etcd-\(UUID().uuidString)")
        var last = ""
        let scheme = tls == nil ? "http" : "https"
        let names = (0..<members).map { "m\($0)" }
        for _ in 0..<5 {
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let base = Int.random(in: 40000...44990)
            let clients = (0..<members).map { base + $0 }, peers = clients.map { $0 + 5000 }
            let urls = clients.map { "\(scheme)://127.0.0.1:\($0)" }
            let cluster = zip(names, peers).map { "\($0)=http://127.0.0.1:\($1)" }.joined(separator: ",")
            var started: [Process] = []
            var commands: [[String]] = []
            if let snapshot {
                for i in 0..<members {
                    let r = try Sh.run(["env", "ETCDCTL_API=3", "etcdctl", "snapshot", "restore", snapshot, "--data-dir", dir.appendingPathComponent(names[i]).path,
                                        "--name", names[i], "--initial-cluster", cluster, "--initial-cluster-token", dir.lastPathComponent,
                                        "--initial-advertise-peer-urls", "http://127.0.0.1:\(peers[i])"], timeout: 60)
                    guard r.status == 0 else { throw LabError("etcdctl snapshot restore \(snapshot): \(r.err)") }
                }
            }
            for i in 0..<members {
                var args = ["/usr/bin/etcd", "--name", names[i], "--data-dir", dir.appendingPathComponent(names[i]).path,
                            "--listen-client-urls", urls[i], "--advertise-client-urls", urls[i],
                            "--listen-peer-urls", "http://127.0.0.1:\(peers[i])", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peers[i])",
                            "--initial-cluster", cluster, "--initial-cluster-token", dir.lastPathComponent, "--log-level", "error"]
                if let tls { args += ["--cert-file", tls.certFile, "--key-file", tls.keyFile, "--client-cert-auth", "--trusted-ca-file", tls.caFile] }
                commands.append((netns.map { ["ip", "netns", "exec", $0] } ?? []) + args)
                started.append(try Self.launch(commands[i]))
            }
            // Ready when every member's health endpoint answers (a cluster elects a leader
            // first); given up on if one exits.
            var healthy = Set<Int>()
            for _ in 0..<200 where started.allSatisfy(\.isRunning) && healthy.count < members {
                for i in 0..<members where !healthy.contains(i) {
                    var curl = ["curl", "-sf", "-m", "1"]
                    if let tls { curl += ["--cacert", tls.caFile, "--cert", tls.certFile, "--key", tls.keyFile] }
                    curl.append(urls[i] + "/health")
                    if let r = try? Sh.run(netns.map { ["ip", "netns", "exec", $0] + curl } ?? curl, timeout: 3), r.status == 0, r.out.contains("true") {
                        healthy.insert(i)
                    }
                }
                if healthy.count < members { usleep(50_000) }
            }
            if healthy.count == members {
                self.urls = urls
                self.processes = started
                self.commands = commands
                return
            }
            for p in started where p.isRunning {
                p.terminate()
                p.waitUntilExit()
            }
            last = urls.joined(separator: ",")
        }
        try? FileManager.default.removeItem(at: dir)
        throw LabError("etcd did not start (last at \(last))")
    }

    static func launch(_ command: [String]) throws -> Process {
        let process = CommandRunner.process(command)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Starts a killed member again on its data dir: it rejoins the cluster.
    public func restart(member i: Int) throws {
        kill(member: i)
        let p = try Self.launch(commands[i])
        lock.withLock { processes[i] = p }
    }

    /// Stops one member at once (SIGKILL), as a crash would.
    public func kill(member i: Int) {
        let p = lock.withLock { processes[i] }
        if p.isRunning {
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }

    public func stop() {
        for p in lock.withLock({ processes }) where p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: dir)
    }

    deinit { stop() }
}
