import Foundation

/// Runs a program and collects its output. Used for the kernel's own tools
/// (`iptables-restore`, `conntrack`, …), optionally inside a named network namespace.
public struct CommandRunner: Sendable {
    /// When set, commands run under `ip netns exec NAME`.
    public var netns: String?

    public init(netns: String? = nil) { self.netns = netns }

    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    public struct Failure: Error, CustomStringConvertible {
        public var command: [String]
        public var status: Int32
        public var stderr: String
        public var description: String {
            "\(command.joined(separator: " ")) exited with \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }

    /// Runs `args` (looked up on PATH), feeding `input` on stdin. With a `timeout`,
    /// a program still running then is terminated (and its status says so).
    @discardableResult
    public func run(_ args: [String], input: String? = nil, check: Bool = true, timeout: Duration? = nil) throws -> Result {
        var argv = args
        if let netns { argv = ["ip", "netns", "exec", netns] + args }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = (env["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        p.environment = env
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        var tmp: URL?
        if let input {
            // A file, not a pipe: no risk of both sides blocking on full pipe buffers.
            let url = URL(fileURLWithPath: NSTemporaryDirectory())
                .appendingPathComponent("switchyard-\(UUID().uuidString)")
            try Data(input.utf8).write(to: url)
            tmp = url
            p.standardInput = try FileHandle(forReadingFrom: url)
        } else {
            p.standardInput = FileHandle.nullDevice
        }
        defer { if let tmp { try? FileManager.default.removeItem(at: tmp) } }
        try p.run()
        if let timeout {
            let deadline = ContinuousClock.now + timeout
            Thread {
                while p.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
                if p.isRunning { p.terminate() }
            }.start()
        }
        // Drain both pipes concurrently so a chatty program cannot block.
        let errBox = DataBox()
        let t = Thread { errBox.data = errPipe.fileHandleForReading.readDataToEndOfFile() }
        t.start()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        while !errBox.done { usleep(100) }
        let r = Result(status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                       stderr: String(decoding: errBox.data, as: UTF8.self))
        if check && r.status != 0 {
            throw Failure(command: argv, status: r.status, stderr: r.stderr)
        }
        return r
    }
}

private final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _data = Data()
    private var _done = false
    var data: Data {
        get { lock.withLock { _data } }
        set { lock.withLock { _data = newValue; _done = true } }
    }
    var done: Bool { lock.withLock { _done } }
}
