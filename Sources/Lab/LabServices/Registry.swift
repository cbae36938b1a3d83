import Foundation
import HostOS
import Images
import NetnsKit

/// Debian's `docker-registry` (distribution 2.8) serving plain HTTP from a directory it owns,
/// optionally inside a network namespace; `stop()` ends it and removes the directory.
public final class RegistryProcess: @unchecked Sendable {
    public static let binary = "/usr/bin/docker-registry"
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    /// `HOST:PORT`, as image names and containerd's hosts.toml use it.
    public let address: String
    public var url: String { "http://\(address)" }
    public var port: Int { Int(address.split(separator: ":").last ?? "") ?? 0 }
    public let dir: URL
    public let netns: String?
    let process: Process

    /// A client that reaches it (from inside its namespace when it has one).
    public func client() throws -> RegistryClient {
        guard let netns else { return try RegistryClient(url: url) }
        return try RegistryClient(url: url) { host, port in
            try inNamespace(netns) {
                guard let fd = TCP.connect(host, port, timeout: 5) else { throw StartError(description: "cannot reach the registry at \(host):\(port) in \(netns)") }
                return fd
            }
        }
    }

    public struct StartError: Error, CustomStringConvertible { public var description: String }

    /// The registry's configuration: blobs under `data` (deletable), plain HTTP on `address`.
    public static func config(data: String, address: String) -> String {
        """
        version: 0.1
        log:
          level: error
        storage:
          filesystem:
            rootdirectory: \(data)
          delete:
            enabled: true
        http:
          addr: \(address)

        """
    }

    /// - Parameters:
    ///   - host: the address it listens on (inside `netns` when given).
    ///   - port: 0 picks a free one.
    public init(dir: URL, host: String = "127.0.0.1", port: Int = 0, netns: String? = nil) throws {
        self.dir = dir
        self.netns = netns
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("data"), withIntermediateDirectories: true)
        var last = ""
        for attempt in 0..<5 {
            let p = port != 0 ? port : Int.random(in: 45000...49999)
            let address = "\(host):\(p)"
            let config = Self.config(data: dir.appendingPathComponent("data").path, address: address)
            let configPath = dir.appendingPathComponent("config.yml")
            try Data(config.utf8).write(to: configPath)
            let process = CommandRunner.process((netns.map { ["ip", "netns", "exec", $0] } ?? []) + [Self.binary, "serve", configPath.path])
            let log = dir.appendingPathComponent("registry.log")
            _ = fm.createFile(atPath: log.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: log)
            process.standardError = process.standardOutput
            try process.run()
            // Ready when /v2/ answers; started again elsewhere if it exits (the port was taken).
            for _ in 0..<100 where process.isRunning {
                let curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1", "http://\(address)/v2/"]
                if let r = try? CommandRunner(netns: netns).run(curl, check: false, timeout: .seconds(3)), r.stdout == "200" {
                    self.address = address
                    self.process = process
                    return
                }
                usleep(50_000)
            }
            if process.isRunning { process.terminate(); process.waitUntilExit() }
            last = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if port != 0 && attempt > 0 { break }
        }
        try? fm.removeItem(at: dir)
        throw StartError(description: "docker-registry did not start: \(last.suffix(400))")
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: dir)
    }
}
