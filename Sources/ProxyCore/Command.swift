import Foundation

/// Runs a program and collects its output. Used for the kernel's own tools
/// (`iptables-restore`, `conntrack`, …), optionally inside a named network namespace.
public struct CommandRunner: Sendable {
    /// When set, commands run under `ip netns exec NAME`.
    public var netns: String?

    public init(netns: String? = nil) { self.netns = netns }

    /// A `Process` for `argv` (looked up on PATH) that starts with every signal at its default
    /// and none blocked, through `env --default-signal`. Foundation's `Process` hands a child the
    /// signal mask of the thread that starts it, and Swift concurrency's threads (libdispatch's
    /// workers) block SIGTERM, SIGINT and most others: a child started from one ignores a SIGTERM
    /// for good (netlab's guest runner waited forever on a `tail` its SIGTERM could not end).
    public static func process(_ argv: [String]) -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["--default-signal"] + argv
        return p
    }

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
        try run(args, input: input.map { [.text($0)] }, check: check, timeout: timeout)
    }

    /// A piece of a program's input: text, or a file's contents.
    public enum InputPart: Sendable {
        case text(String)
        case file(String)
    }

    /// As `run(_:input:…)`, with stdin the concatenation of `inputParts`, written part by
    /// part: a large input (a 30 MB ruleset) is never copied whole.
    @discardableResult
    public func run(_ args: [String], input inputParts: [InputPart]?, check: Bool = true, timeout: Duration? = nil) throws -> Result {
        var argv = args
        if let netns { argv = ["ip", "netns", "exec", netns] + args }
        let p = Self.process(argv)
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
            do {
                try Self.write(inputParts, to: url.path)
                p.standardInput = try FileHandle(forReadingFrom: url)
            } catch {
                unlink(url.path)
                throw error
            }
            // Open, it needs no name: nothing is left behind if this process dies.
            unlink(url.path)
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

    /// Writes each part to a new file: text as its UTF-8 bytes in place (no copy of the
    /// whole), a file's contents in 64 KB blocks.
    static func write(_ parts: [InputPart], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw WriteError(path: path, errno: errno) }
        defer { close(fd) }
        for part in parts {
            switch part {
            case .text(var text):
                try text.withUTF8 { try writeAll(fd, UnsafeRawBufferPointer($0), path: path) }
            case .file(let source):
                let src = open(source, O_RDONLY | O_CLOEXEC)
                guard src >= 0 else { throw WriteError(path: source, errno: errno) }
                defer { close(src) }
                var buf = [UInt8](repeating: 0, count: 1 << 16)
                while true {
                    let n = buf.withUnsafeMutableBytes { read(src, $0.baseAddress!, $0.count) }
                    if n < 0 { if errno == EINTR { continue }; throw WriteError(path: source, errno: errno) }
                    if n == 0 { break }
                    try buf.withUnsafeBytes { try writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[..<n]), path: path) }
                }
            }
        }
    }

    static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, path: String) throws {
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

/// Text appended piece by piece that stays in memory, or, given a directory, goes to a file
/// there in blocks of a megabyte: a full ruleset of 10,000 services (30 MB) need not be held
/// whole. The file has no name (it is unlinked at once and read through `/proc/self/fd`), so
/// nothing is left behind whatever happens to the process; it goes when the spool does.
public final class Spool {
    private var buffer = ""
    private var fd: Int32 = -1
    private var failure: Int32 = 0

    /// In memory.
    public init() {}

    /// Into a nameless file in `directory`.
    public init(directory: String) throws {
        let path = (directory as NSString).appendingPathComponent("switchyard-spool-\(UUID().uuidString)")
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CommandRunner.WriteError(path: path, errno: errno) }
        unlink(path)
        buffer.reserveCapacity(1 << 20 + 1 << 16)
    }

    /// Whether the text goes to a file.
    public var isFile: Bool { fd >= 0 }

    deinit { if fd >= 0 { close(fd) } }

    public static func += (s: Spool, text: String) { s.append(text) }

    public func append(_ text: String) {
        buffer += text
        if fd >= 0 && buffer.utf8.count >= 1 << 20 { flush() }
    }

    public func reserveCapacity(_ n: Int) { if fd < 0 { buffer.reserveCapacity(n) } }

    private func flush() {
        guard failure == 0 else { buffer.removeAll(keepingCapacity: true); return }
        do {
            try buffer.withUTF8 { try CommandRunner.writeAll(fd, UnsafeRawBufferPointer($0), path: "spool") }
        } catch let e as CommandRunner.WriteError {
            failure = e.errno
        } catch {
            failure = EIO
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// What was appended, as an input part: the text, or the file once everything is in it
    /// (readable while this spool lives).
    public func finish() throws -> CommandRunner.InputPart {
        guard fd >= 0 else { return .text(buffer) }
        flush()
        if failure != 0 { throw CommandRunner.WriteError(path: "spool", errno: failure) }
        return .file("/proc/self/fd/\(fd)")
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
