import Foundation

/// Runs a program with posix_spawn(3), feeding `input` on stdin and collecting
/// stdout (stderr is inherited). The plugins use this rather than Foundation's
/// `Process`, which waits on a run-loop wakeup that is not always available in a
/// short-lived plugin process.
public enum Exec {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// - Parameter env: the child's environment; nil passes this process's on unchanged.
    public static func run(_ exe: String, _ args: [String], env: [String: String]?, input: Data) throws -> (status: Int32, output: Data) {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0]
        // Close-on-exec: only the child's dup2'ed 0 and 1 survive into it, so no other child
        // (or a concurrent call's) can hold these pipes open.
        guard pipe(&inPipe) == 0 else { throw Failure(description: "pipe: errno \(errno)") }
        guard pipe(&outPipe) == 0 else {
            close(inPipe[0]); close(inPipe[1])
            throw Failure(description: "pipe: errno \(errno)")
        }
        for fd in inPipe + outPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }   // (pipe2 is not visible to Swift)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        for fd in [inPipe[0], inPipe[1], outPipe[0], outPipe[1]] { posix_spawn_file_actions_addclose(&actions, fd) }
        let argv = ([exe] + args).map { strdup($0) } + [nil]
        let envp = env.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            for p in argv { free(p) }
            for p in envp ?? [] { free(p) }
        }
        var pid: pid_t = 0
        let rc = envp == nil ? posix_spawn(&pid, exe, &actions, nil, argv, environ) : posix_spawn(&pid, exe, &actions, nil, argv, envp!)
        close(inPipe[0])
        close(outPipe[1])
        guard rc == 0 else {
            close(inPipe[1]); close(outPipe[0])
            throw Failure(description: "cannot run \(exe): errno \(rc)")
        }
        input.withUnsafeBytes { p in
            var off = 0
            while off < p.count {
                let n = write(inPipe[1], p.baseAddress! + off, p.count - off)
                if n <= 0 { break }
                off += n
            }
        }
        close(inPipe[1])
        var out = Data()
        var buf = [UInt8](repeating: 0, count: 16_384)
        while true {
            let n = read(outPipe[0], &buf, buf.count)
            if n <= 0 { break }
            out.append(contentsOf: buf[..<n])
        }
        close(outPipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS, which Swift cannot import as macros.
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), out)
    }

    /// Starts `exe` in a session of its own with stdin, stdout and stderr on /dev/null, and
    /// does not wait for it: the caller may exit first (the child is then reaped by init).
    public static func spawnDetached(_ exe: String, _ args: [String], env: [String: String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, 0x80)   // POSIX_SPAWN_SETSID (glibc, behind _GNU_SOURCE)
        let argv = ([exe] + args).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, exe, &actions, &attr, argv, envp)
        guard rc == 0 else { throw Failure(description: "cannot run \(exe): errno \(rc)") }
        return pid
    }

    /// This executable, as the kernel knows it.
    static var selfPath: String? {
        guard let p = realpath("/proc/self/exe", nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    /// Looks `name` up on PATH (and the sbin directories iptables lives in).
    public static func which(_ name: String) -> String? {
        let path = (getenv("PATH").map { String(cString: $0) } ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let p = "\(dir)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }
}
