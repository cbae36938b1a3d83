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
        try run(args, inputParts: input.map { [$0] }, check: check, timeout: timeout)
    }

    /// As `run(_:input:…)`, with stdin the concatenation of `inputParts`, written part by
    /// part: a large input (a 30 MB ruleset) is never copied whole.
    @discardableResult
    public func run(_ args: [String], inputParts: [String]?, check: Bool = true, timeout: Duration? = nil) throws -> Result {
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
        if let inputParts {
            // A file, not a pipe: no risk of both sides blocking on full pipe buffers.
            let url = URL(fileURLWithPath: NSTemporaryDirectory())
                .appendingPathComponent("switchyard-\(UUID().uuidString)")
            tmp = url
            try Self.write(inputParts, to: url.path)
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

extension CommandRunner {
    struct WriteError: Error, CustomStringConvertible {
        var path: String
        var errno: Int32
        var description: String { "\(path): \(String(cString: strerror(errno)))" }
    }

    /// Writes each part's UTF-8 bytes in place (no copy of the whole) to a new file.
    static func write(_ parts: [String], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw WriteError(path: path, errno: errno) }
        defer { close(fd) }
        for var part in parts {
            try part.withUTF8 { buf in
                var off = 0
                while off < buf.count {
                    let n = Foundation.write(fd, buf.baseAddress! + off, buf.count - off)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw WriteError(path: path, errno: errno)
                    }
                    off += n
                }
            }
        }
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
