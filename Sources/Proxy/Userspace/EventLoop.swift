import CHost
import CUserspace
import Netlink
import Foundation

/// A failed socket call: the errno name and what was asked.
public struct SocketError: Error, CustomStringConvertible, Equatable {
    public var errno: Int32
    public var what: String
    public init(errno: Int32, what: String) {
        self.errno = errno
        self.what = what
    }
    public var description: String {
        "\(what): \(String(cString: strerror(errno))) (\(Self.name(errno)))"
    }
    static func name(_ e: Int32) -> String {
        switch e {
        case EADDRINUSE: return "EADDRINUSE"
        case ECONNREFUSED: return "ECONNREFUSED"
        case ETIMEDOUT: return "ETIMEDOUT"
        case EHOSTUNREACH: return "EHOSTUNREACH"
        case ENETUNREACH: return "ENETUNREACH"
        case EMFILE: return "EMFILE"
        case ENFILE: return "ENFILE"
        case EACCES: return "EACCES"
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EINVAL: return "EINVAL"
        default: return "errno \(e)"
        }
    }
}

/// What an event loop calls when a registered descriptor is ready.
/// - Important: called on the loop's thread only.
protocol LoopHandler: AnyObject {
    func ready(fd: Int32, events: UInt32)
}

enum Epoll {
    static let input = cus_epollin()
    static let output = cus_epollout()
    static let error = cus_epollerr()
    static let hangup = cus_epollhup()
    static let readHangup = cus_epollrdhup()
}

/// One thread running epoll, optionally inside a network namespace: every socket
/// the data path creates is created on a loop thread, so it belongs to that
/// namespace (setns(2) changes only the calling thread's namespace).
///
/// Work from other threads arrives through `execute`, which wakes the loop with an
/// eventfd. Registered descriptors carry a generation in their token, so a stale
/// event for a descriptor number closed and reused within one batch is dropped.
///
/// - Important: everything except `execute`, `submit` and `stop` is confined to the loop thread.
final class EventLoop: @unchecked Sendable {
    let index: Int
    private let epfd: Int32
    private let wakeFD: Int32
    private let lock = NSLock()
    private var mailbox: [@Sendable () -> Void] = []
    private var stopping = false
    private var stopRequested = false
    private var thread: Thread?
    private let started = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private var startError: SocketError?

    // Loop-thread state.
    private var handlers: [Int32: (gen: UInt32, handler: any LoopHandler)] = [:]
    /// Registered descriptors taken out of epoll for now (see `park`).
    private var parked: Set<Int32> = []
    private var nextGen: UInt32 = 1
    private var timers: [Int: (deadline: UInt64, body: () -> Void)] = [:]
    private var nextTimer = 1
    /// Empty pipes kept for reuse, so a connection does not cost two pipe2(2) calls.
    var pipePool: [(Int32, Int32)] = []
    let pipePoolLimit = 256
    /// Pipe capacity: bigger pipes move a bulk stream in fewer splice(2) calls. The
    /// pages are only used while bytes are in flight.
    var pipeSize: Int32 = 1 << 20

    init(index: Int, netns: String?) throws {
        self.index = index
        let ep = cus_epoll_create()
        guard ep >= 0 else { throw SocketError(errno: -ep, what: "epoll_create1") }
        let ev = ch_eventfd()
        guard ev >= 0 else {
            Glibc.close(ep)
            throw SocketError(errno: -ev, what: "eventfd")
        }
        epfd = ep
        wakeFD = ev
        _ = cus_epoll_ctl(epfd, cus_epoll_add(), wakeFD, Epoll.input, 0)
        let t = Thread { [unowned self] in self.main(netns: netns) }
        t.name = "switchyard-userspace-\(index)"
        t.stackSize = 1 << 20
        thread = t
        t.start()
        started.wait()
        if let e = startError {
            finished.wait()
            Glibc.close(epfd)
            Glibc.close(wakeFD)
            throw e
        }
    }

    private func main(netns: String?) {
        if let netns {
            do {
                try Namespace(path: netns).enterCallingThread()
            } catch {
                startError = SocketError(errno: (error as? NetlinkError)?.errno ?? EINVAL, what: "setns \(netns)")
                started.signal()
                finished.signal()
                return
            }
        }
        started.signal()
        var tokens = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while true {
            let timeout = nextTimeout()
            let n = cus_epoll_wait(epfd, &tokens, &events, 256, timeout)
            if n < 0 && -n != EINTR { break }
            for i in 0..<max(0, Int(n)) {
                let token = tokens[i]
                if token == 0 {
                    ch_eventfd_drain(wakeFD)
                    continue
                }
                let fd = Int32(truncatingIfNeeded: token & 0xffff_ffff)
                let gen = UInt32(truncatingIfNeeded: token >> 32)
                guard let h = handlers[fd], h.gen == gen else { continue }
                h.handler.ready(fd: fd, events: events[i])
            }
            runTimers()
            let (work, stop): ([@Sendable () -> Void], Bool) = lock.withLock {
                let w = mailbox
                mailbox.removeAll(keepingCapacity: true)
                return (w, stopRequested)
            }
            for w in work { w() }
            if stop { break }
        }
        // Work queued after the last look (or after an epoll failure) still runs;
        // `execute` refuses new work from here on.
        let rest: [@Sendable () -> Void] = lock.withLock {
            stopping = true
            let w = mailbox
            mailbox.removeAll()
            return w
        }
        for w in rest { w() }
        for (r, w) in pipePool {
            Glibc.close(r)
            Glibc.close(w)
        }
        pipePool.removeAll()
        finished.signal()
    }

    /// Runs `body` on the loop thread; false (and `body` dropped) once the loop is stopping.
    @discardableResult
    func execute(_ body: @escaping @Sendable () -> Void) -> Bool {
        let accepted = lock.withLock { () -> Bool in
            guard !stopping else { return false }
            mailbox.append(body)
            return true
        }
        if accepted { ch_eventfd_signal(wakeFD) }
        return accepted
    }

    /// Runs `body` on the loop thread and returns its result.
    /// - Throws: `SocketError` (ESHUTDOWN) when the loop has stopped.
    func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            if !execute({ c.resume(with: Result { try body() }) }) {
                c.resume(throwing: SocketError(errno: ESHUTDOWN, what: "the userspace data plane has stopped"))
            }
        }
    }

    /// Stops the thread after the work queued so far; registered descriptors are not closed.
    func stop() {
        // `stopping` is set by the loop itself after its last look at the mailbox.
        lock.withLock { stopRequested = true }
        ch_eventfd_signal(wakeFD)
        finished.wait()
        Glibc.close(epfd)
        Glibc.close(wakeFD)
    }

    // MARK: loop-thread API

    func register(_ fd: Int32, events: UInt32, _ handler: any LoopHandler) {
        let gen = nextGen
        nextGen = nextGen &+ 1 == 0 ? 1 : nextGen &+ 1
        handlers[fd] = (gen, handler)
        _ = cus_epoll_ctl(epfd, cus_epoll_add(), fd, events, UInt64(gen) << 32 | UInt64(UInt32(bitPattern: fd)))
    }

    func modify(_ fd: Int32, events: UInt32) {
        guard let h = handlers[fd] else { return }
        let token = UInt64(h.gen) << 32 | UInt64(UInt32(bitPattern: fd))
        if parked.contains(fd) {
            guard events != 0 else { return }
            parked.remove(fd)
            _ = cus_epoll_ctl(epfd, cus_epoll_add(), fd, events, token)
        } else {
            _ = cus_epoll_ctl(epfd, cus_epoll_mod(), fd, events, token)
        }
    }

    /// Takes `fd` out of epoll while keeping its handler, until `modify` asks for
    /// events again. For a socket whose peer has hung up: epoll reports EPOLLHUP
    /// whatever the interest, so leaving it in would spin while the other side of
    /// the connection drains.
    func park(_ fd: Int32) {
        guard handlers[fd] != nil, parked.insert(fd).inserted else { return }
        _ = cus_epoll_ctl(epfd, cus_epoll_del(), fd, 0, 0)
    }

    /// Deregisters and closes `fd` (with a reset when `reset`).
    func close(_ fd: Int32, reset: Bool = false) {
        if handlers.removeValue(forKey: fd) != nil, parked.remove(fd) == nil {
            _ = cus_epoll_ctl(epfd, cus_epoll_del(), fd, 0, 0)
        }
        if reset { ch_close_reset(fd) } else { Glibc.close(fd) }
    }

    var registeredCount: Int { handlers.count }

    func handler(for fd: Int32) -> (any LoopHandler)? { handlers[fd]?.handler }

    /// Every registered handler once (a connection is registered under two descriptors).
    func allHandlers() -> [any LoopHandler] {
        var seen = Set<ObjectIdentifier>()
        return handlers.values.compactMap { seen.insert(ObjectIdentifier($0.handler)).inserted ? $0.handler : nil }
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Calls `body` on the loop thread once `nanoseconds` have passed; returns an id for `cancel`.
    @discardableResult
    func after(nanoseconds: UInt64, _ body: @escaping () -> Void) -> Int {
        let id = nextTimer
        nextTimer += 1
        timers[id] = (Self.now() + nanoseconds, body)
        return id
    }

    func cancel(timer id: Int) { timers[id] = nil }

    private func nextTimeout() -> Int32 {
        guard !timers.isEmpty else { return -1 }
        let now = Self.now()
        var soonest = UInt64.max
        for t in timers.values where t.deadline < soonest { soonest = t.deadline }
        if soonest <= now { return 0 }
        return Int32(min((soonest - now + 999_999) / 1_000_000, 60_000))
    }

    private func runTimers() {
        guard !timers.isEmpty else { return }
        let now = Self.now()
        let due = timers.filter { $0.value.deadline <= now }
        for (id, t) in due.sorted(by: { $0.value.deadline < $1.value.deadline }) {
            timers[id] = nil
            t.body()
        }
    }

    /// An empty pipe, from the pool or new.
    func takePipe() throws -> (Int32, Int32) {
        if let p = pipePool.popLast() { return p }
        var fds: [Int32] = [0, 0]
        let r = cus_pipe(&fds, pipeSize)
        guard r == 0 else { throw SocketError(errno: -r, what: "pipe2") }
        return (fds[0], fds[1])
    }

    /// Returns an empty pipe to the pool (or closes it when the pool is full).
    func givePipe(_ p: (Int32, Int32)) {
        if pipePool.count < pipePoolLimit {
            pipePool.append(p)
        } else {
            Glibc.close(p.0)
            Glibc.close(p.1)
        }
    }
}
