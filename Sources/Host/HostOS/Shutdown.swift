import Dispatch
import Foundation
import Logging

/// A bound on how long a long-running command may take to stop once SIGTERM or SIGINT arrives.
///
/// Graceful shutdown runs on Swift concurrency's threads; if a sync is stuck in a system call
/// (a kernel tool that never ends, a socket that never answers), those threads never get to it
/// and the process would outlive every SIGTERM. The deadline is armed from a dispatch source on
/// its own queue and counted down on a thread of its own, so it needs nothing else to be free:
/// when it passes, the process says why on stderr and exits with status 1. A second signal
/// during the shutdown ends the process at once. "Second" means at least a quarter of a second
/// after the first: on Linux libdispatch may hand one SIGTERM to its signal sources twice (it
/// re-raises a signal that reached a thread which had not blocked it), and one `kill` must never
/// count as two.
public final class ShutdownDeadline: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]
    private let lock = NSLock()
    private var armedAt: ContinuousClock.Instant?
    /// Signals closer than this to the first are taken as that same signal delivered again.
    static let sameSignalWindow: Duration = .milliseconds(250)

    /// Arms on the first SIGTERM or SIGINT; the process exits `grace` after it if still running.
    /// `onSignal` runs once, on the first signal (a server stops its in-process clients first).
    public init(grace: Duration, command: String, logger: Logger, onSignal: (@Sendable () -> Void)? = nil) {
        let queue = DispatchQueue(label: "switchyard.shutdown-deadline")
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            sources.append(s)
        }
        self.sources = sources
        for (s, sig) in zip(sources, [SIGTERM, SIGINT]) {
            s.setEventHandler { [self] in self.signalled(sig, grace: grace, command: command, logger: logger, onSignal: onSignal) }
            s.resume()
        }
    }

    private func signalled(_ sig: Int32, grace: Duration, command: String, logger: Logger, onSignal: (@Sendable () -> Void)?) {
        let now = ContinuousClock.now
        let first = lock.withLock { () -> ContinuousClock.Instant? in
            defer { if armedAt == nil { armedAt = now } }
            return armedAt
        }
        let name = sig == SIGTERM ? "SIGTERM" : "SIGINT"
        if let first {
            guard now - first >= Self.sameSignalWindow else { return }
            Self.exitNow("\(command): second \(name) during shutdown; exiting now\n")
        }
        let seconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        logger.info("received \(name), shutting down (at most \(seconds) s)")
        onSignal?()
        let t = Thread {
            Thread.sleep(forTimeInterval: seconds)
            Self.exitNow("\(command): did not finish shutting down within \(seconds) s of \(name); exiting\n")
        }
        t.start()
    }

    private static func exitNow(_ message: String) -> Never {
        // No child outlives us: a stuck iptables-restore would hold the tables' lock.
        Children.shared.killAll()
        var m = message
        m.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        _exit(1)
    }
}
