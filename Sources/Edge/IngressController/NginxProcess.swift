import Foundation
import HostOS
import Logging
import Synchronization

/// The nginx the controller runs: started in the foreground (`daemon off;` in its configuration)
/// as the controller's child, reloaded with SIGHUP, stopped with SIGQUIT (graceful: the workers
/// finish what they serve), restarted if it dies. An nginx left running by an earlier
/// controller on the same run directory (its pid file) is stopped before the first start.
final class NginxProcess: Sendable {
    let binary: String
    let runDirectory: String
    let logger: Logger
    struct State {
        var process: Process?
        var configuration: String?
        var stopping = false
    }
    let state = Mutex(State())

    init(binary: String, runDirectory: String, logger: Logger) {
        self.binary = binary
        self.runDirectory = runDirectory
        self.logger = logger
    }

    var isRunning: Bool { state.withLock { $0.process?.isRunning ?? false } }
    var pid: Int32? { state.withLock { $0.process.flatMap { $0.isRunning ? $0.processIdentifier : nil } } }

    func arguments(_ configuration: String) -> [String] {
        [binary, "-c", configuration, "-p", runDirectory + "/", "-e", runDirectory + "/error.log"]
    }

    /// Runs `work` on a thread of its own: a child process waited for, or a file polled, must
    /// not hold one of the few threads every task of the process shares.
    static func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            Thread { c.resume(with: Result { try work() }) }.start()
        }
    }

    /// nil when nginx accepts the configuration, else what it says.
    func test(configuration: String) async -> String? {
        let argv = arguments(configuration) + ["-t", "-q"]
        do {
            let r = try await Self.offload { try CommandRunner().run(argv, check: false, timeout: .seconds(30)) }
            return r.status == 0 ? nil : r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            return "\(error)"
        }
    }

    func start(configuration: String) async throws {
        await stopLeftover()
        let p = CommandRunner.process(arguments(configuration))
        p.standardOutput = FileHandle.nullDevice
        do { try p.run() } catch { throw IngressControllerError.nginx("\(binary): \(error)") }
        state.withLock {
            $0.process = p
            $0.configuration = configuration
            $0.stopping = false
        }
        // Started when its pid file names it (it has bound its ports then), or failed.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if !p.isRunning {
                let log = (try? String(contentsOfFile: runDirectory + "/error.log", encoding: .utf8))?.split(separator: "\n").suffix(3).joined(separator: "\n") ?? ""
                throw IngressControllerError.nginx("nginx exited with status \(p.terminationStatus): \(log)")
            }
            if let text = try? String(contentsOfFile: runDirectory + "/nginx.pid", encoding: .utf8),
               Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) == p.processIdentifier {
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw IngressControllerError.nginx("nginx did not write its pid file within 10 s")
    }

    func reload() throws {
        guard let pid else { throw IngressControllerError.nginx("nginx is not running") }
        guard kill(pid, SIGHUP) == 0 else { throw IngressControllerError.nginx("SIGHUP to nginx (\(pid)): errno \(errno)") }
    }

    /// Restarts nginx if it dies other than by `stop`, until cancelled.
    func superviseUntilCancelled() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let restart: String? = state.withLock { s in
                guard !s.stopping, let p = s.process, !p.isRunning else { return nil }
                return s.configuration
            }
            if let conf = restart {
                logger.warning("nginx exited; starting it again")
                do { try await start(configuration: conf) } catch { logger.error("\(error)") }
            }
        }
    }

    /// Stops nginx gracefully (SIGQUIT), forcefully after 10 s.
    func stop() async {
        let p: Process? = state.withLock {
            $0.stopping = true
            return $0.process
        }
        guard let p, p.isRunning else { return }
        kill(p.processIdentifier, SIGQUIT)
        let deadline = ContinuousClock.now + .seconds(10)
        while p.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        while p.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
    }

    /// An nginx an earlier controller left on this run directory.
    func stopLeftover() async {
        guard state.withLock({ $0.process == nil }),
              let text = try? String(contentsOfFile: runDirectory + "/nginx.pid", encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1,
              let cmdline = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
              cmdline.hasPrefix("nginx: master"), cmdline.contains(runDirectory) else { return }
        logger.notice("stopping the nginx (\(pid)) an earlier controller left running")
        kill(pid, SIGQUIT)
        for _ in 0..<500 where kill(pid, 0) == 0 { try? await Task.sleep(for: .milliseconds(20)) }
        if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
    }

    /// Writes a file whole or not at all.
    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw IngressControllerError.io("\(tmp): errno \(errno)") }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 { let e = errno; close(fd); unlink(tmp); throw IngressControllerError.io("\(tmp): errno \(e)") }
            done += n
        }
        fchmod(fd, mode)
        close(fd)
        guard rename(tmp, path) == 0 else { let e = errno; unlink(tmp); throw IngressControllerError.io("\(path): errno \(e)") }
    }
}
