import CHost
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
    ///
    /// The child is started with posix_spawn(3) (`ch_spawn`), not Foundation's `Process`: that one
    /// waits for its child through a run-loop source whose wakeup is a loopback socket pair, so in a
    /// network namespace whose `lo` is down it never learns that the child ended and hangs for good.
    /// Here nothing but the pipes, poll(2) and waitpid(2) is involved; the child starts with every
    /// signal at its default and none blocked, and no descriptor but its stdin, stdout and stderr.
    @discardableResult
    public func run(_ args: [String], input inputParts: [InputPart]?, check: Bool = true, timeout: Duration? = nil) throws -> Result {
        var argv = args
        if let netns { argv = ["ip", "netns", "exec", netns] + args }
        var env = ProcessInfo.processInfo.environment
        let path = (env["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        env["PATH"] = path
        guard let exe = Self.lookUp(argv[0], path: path) else {
            throw Failure(command: argv, status: 127, stderr: "\(argv[0]): not found on PATH (\(path))")
        }
        // Stdin: a file, not a pipe, so neither side can block on a full pipe buffer. Open, it
        // needs no name: nothing is left behind if this process dies.
        let inFD: Int32
        if let inputParts {
            let name = NSTemporaryDirectory() + "/switchyard-\(UUID().uuidString)"
            try Self.write(inputParts, to: name)
            inFD = open(name, O_RDONLY | O_CLOEXEC)
            let e = errno
            unlink(name)
            guard inFD >= 0 else { throw WriteError(path: name, errno: e) }
        } else {
            inFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard inFD >= 0 else { throw WriteError(path: "/dev/null", errno: errno) }
        }
        defer { close(inFD) }
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard ch_pipe_cloexec(&outPipe) == 0 else { throw WriteError(path: "pipe", errno: errno) }
        guard ch_pipe_cloexec(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw WriteError(path: "pipe", errno: errno)
        }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        let pid = ch_spawn(exe, cArgs, cEnv, inFD, outPipe[1], errPipe[1])
        close(outPipe[1]); close(errPipe[1])
        guard pid > 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw Failure(command: argv, status: 127, stderr: "cannot start \(exe): \(String(cString: strerror(-pid)))")
        }
        Children.shared.insert(pid)
        defer { Children.shared.remove(pid) }
        // Read both pipes until both end, so a chatty program cannot block on either; past the
        // deadline the program gets SIGTERM, and SIGKILL two seconds later.
        var out: [UInt8] = [], err: [UInt8] = []
        var live: [Int32] = [outPipe[0], errPipe[0]]
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var termSent: ContinuousClock.Instant?, killSent: ContinuousClock.Instant?
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while !live.isEmpty {
            var wait: Int32 = -1
            if let deadline {
                let now = ContinuousClock.now
                if termSent == nil, now >= deadline { kill(pid, SIGTERM); termSent = now }
                if let t = termSent, killSent == nil, now >= t + .seconds(2) { kill(pid, SIGKILL); killSent = now }
                // Killed, and a pipe still open: a process it started holds it. Stop reading.
                if let k = killSent, now >= k + .seconds(2) { break }
                wait = 50
            }
            var revents: [Int16] = [0, 0]
            let n = ch_poll_in(live, Int32(live.count), &revents, wait)
            if n < 0 { if -n == EINTR { continue }; break }
            for (i, fd) in live.enumerated().reversed() where revents[i] != 0 {
                let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if got > 0 {
                    if fd == outPipe[0] { out += buffer[..<got] } else { err += buffer[..<got] }
                } else if got == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(fd)
                    live.remove(at: i)
                }
            }
        }
        for fd in live { close(fd) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Exit status, or the signal's number for a program a signal ended (as Foundation's
        // `Process.terminationStatus` reports it).
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : status & 0x7f
        let r = Result(status: code, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
        if check && r.status != 0 {
            throw Failure(command: argv, status: r.status, stderr: r.stderr)
        }
        return r
    }

    /// `name` itself when it holds a slash, else the first executable file of that name on `path`.
    static func lookUp(_ name: String, path: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            var st = stat()
            if stat(candidate, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
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

/// The programs `CommandRunner` has started and not yet reaped, so a process that must exit at
/// once (the shutdown deadline) can end them first instead of leaving them running.
public final class Children: @unchecked Sendable {
    public static let shared = Children()
    private let lock = NSLock()
    private var pids = Set<Int32>()

    func insert(_ pid: Int32) { lock.withLock { _ = pids.insert(pid) } }
    func remove(_ pid: Int32) { lock.withLock { _ = pids.remove(pid) } }

    /// SIGKILL to every child still running.
    public func killAll() {
        for pid in lock.withLock({ pids }) { kill(pid, SIGKILL) }
    }
}
