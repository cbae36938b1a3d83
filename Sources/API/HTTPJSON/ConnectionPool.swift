import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// Idle HTTP/1.1 keep-alive connections of one client, reused one request at a time: a
/// control-plane component makes thousands of requests a second, and a connection (and, on the
/// server, an accepted socket and its pipeline) per request costs more than the request.
final class ConnectionPool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [PooledConnection] = []
    let capacity: Int

    init(capacity: Int = 32) { self.capacity = capacity }

    func take() -> PooledConnection? {
        // Closed ones are dropped outside the lock.
        var dropped: [PooledConnection] = []
        defer { dropped.removeAll() }
        lock.lock()
        defer { lock.unlock() }
        while let c = idle.popLast() {
            if !c.isClosed { return c }
            dropped.append(c)
        }
        return nil
    }

    /// Closes every idle connection (the client's credentials changed).
    func closeIdle() {
        lock.lock()
        let all = idle
        idle = []
        lock.unlock()
        for c in all { c.close() }
    }

    func put(_ c: PooledConnection) {
        lock.lock()
        let kept = idle.count < capacity && !c.isClosed
        if kept { idle.append(c) }
        lock.unlock()
        if !kept { c.close() }
    }
}

/// One connection and the task that owns it: requests are handed to the task, which writes
/// each and reads its answer before the next.
final class PooledConnection: Sendable {
    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
    struct Answer: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: Data
        var keepAlive: Bool
    }
    /// The connection closed before any of the answer arrived: the server did not take the
    /// request (an idle connection it had closed), and it may be sent again on another.
    struct ClosedBeforeAnswer: Error {}

    struct Job: Sendable {
        var parts: [HTTPClientRequestPart]
        var done: CheckedContinuation<Answer, any Error>
    }

    /// Whether the connection has ended (or will, after the request in flight).
    final class Flag: Sendable {
        let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .relaxed) }
        var isSet: Bool { value.load(ordering: .relaxed) }
    }

    let jobs: AsyncStream<Job>.Continuation
    let closed = Flag()
    var isClosed: Bool { closed.isSet }

    init(_ channel: Channel) {
        let (stream, continuation) = AsyncStream<Job>.makeStream()
        jobs = continuation
        let closed = self.closed
        Task {
            var pending: Job?
            do {
                try await channel.executeThenClose { inbound, outbound in
                    var answers = inbound.makeAsyncIterator()
                    for await job in stream {
                        pending = job
                        try await outbound.write(contentsOf: job.parts)
                        var status = 0, keep = true, started = false
                        var headers: [(String, String)] = []
                        var buf = ByteBuffer()
                        var answered = false
                        while let part = try await answers.next() {
                            switch part {
                            case .head(let h):
                                status = Int(h.status.code)
                                headers = h.headers.map { ($0.name, $0.value) }
                                keep = h.isKeepAlive
                                started = true
                            case .body(var b):
                                buf.writeBuffer(&b)
                            case .end:
                                answered = true
                            }
                            if answered { break }
                        }
                        pending = nil
                        guard answered else {
                            closed.set()
                            job.done.resume(throwing: started ? ClientError(status: 0, description: "the connection closed early") : ClosedBeforeAnswer())
                            return
                        }
                        if !keep { closed.set() }
                        job.done.resume(returning: Answer(status: status, headers: headers, body: Data(buf.readableBytesView), keepAlive: keep))
                        if !keep { return }
                    }
                }
            } catch {
                closed.set()
                pending?.done.resume(throwing: ClosedBeforeAnswer())
                pending = nil
            }
            closed.set()
            pending?.done.resume(throwing: ClosedBeforeAnswer())
            // Requests handed over after the end are answered too.
            continuation.finish()
            for await job in stream { job.done.resume(throwing: ClosedBeforeAnswer()) }
        }
    }

    func send(_ parts: [HTTPClientRequestPart]) async throws -> Answer {
        try await withCheckedThrowingContinuation { c in
            if case .terminated = jobs.yield(Job(parts: parts, done: c)) { c.resume(throwing: ClosedBeforeAnswer()) }
        }
    }

    func close() {
        closed.set()
        jobs.finish()
    }
}
