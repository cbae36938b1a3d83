import Foundation
import HostOS

/// A throwaway etcd (Debian's etcd-server) on loopback ports of its own, for tests of the etcd
/// store: started with a fresh data dir, stopped and removed with `stop()` (or at deinit).
public final class EtcdProcess: @unchecked Sendable {
    public let url: String
    let process: Process
    let dir: URL

    public static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") }

    /// - Parameter netns: run it inside this named network namespace (its loopback).
    ///
    /// Its ports are picked at random; when one is taken (by another test's etcd, or as some
    /// connection's ephemeral port) etcd exits at once, and it is started again on others.
    public init(netns: String? = nil) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-etcd-\(UUID().uuidString)")
        var last = ""
        for _ in 0..<5 {
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let client = Int.random(in: 40000...44999), peer = client + 5000
            let url = "http://127.0.0.1:\(client)"
            let process = CommandRunner.process((netns.map { ["ip", "netns", "exec", $0] } ?? []) + ["/usr/bin/etcd", "--name", "t", "--data-dir", dir.path, "--listen-client-urls", url, "--advertise-client-urls", url,
                                 "--listen-peer-urls", "http://127.0.0.1:\(peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                                 "--initial-cluster", "t=http://127.0.0.1:\(peer)", "--log-level", "error"])
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Ready when its health endpoint answers; given up on if it exits.
            for _ in 0..<200 where process.isRunning {
                let curl = ["curl", "-sf", "-m", "1", url + "/health"]
                if let r = try? Sh.run(netns.map { ["ip", "netns", "exec", $0] + curl } ?? curl, timeout: 3), r.status == 0, r.out.contains("true") {
                    self.url = url
                    self.process = process
                    return
                }
                usleep(50_000)
            }
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
            last = url
        }
        try? FileManager.default.removeItem(at: dir)
        throw LabError("etcd did not start (last at \(last))")
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: dir)
    }

    deinit { stop() }
}
