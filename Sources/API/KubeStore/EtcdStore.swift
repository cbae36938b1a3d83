import Foundation
import KubeAPI
import EtcdClient

/// The store on a real etcd cluster (`--etcd-servers`), through etcd's v3 API: gRPC by default
/// (`EtcdGRPCTransport`), or its JSON gateway. etcd's revision is the resourceVersion, as with
/// kube-apiserver; conditional writes are transactions comparing the key's create or mod
/// revision. Keys are kube-apiserver's (`/registry/services/specs/default/kubernetes`), values
/// JSON (kube-apiserver writes protobuf). A call goes to the member that last answered; when it
/// cannot be reached (or has no leader), to the next, for a few seconds.
public struct EtcdStore: Store {
    let transport: any EtcdTransport
    /// Keys live under this prefix (kube-apiserver's `--etcd-prefix`, `/registry` by default;
    /// our keys already start with it, so the default adds nothing).
    let prefix: String
    /// The one etcd watch the store's watches share.
    let hub: EtcdWatchHub
    /// Which member calls go to first.
    let members: MemberChoice
    /// Keys written with a lease, so that etcd removes them (events, after `--event-ttl`).
    let leases: EtcdLeases?

    /// - Parameters:
    ///   - tls: `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`.
    ///   - keptEvents: how many of the latest events the shared watch keeps for watches that
    ///     start from a recent revision.
    ///   - expiring: keys under this prefix are written with a lease of `ttl` seconds, renewed by
    ///     each write (kube-apiserver does so for events with `--event-ttl`).
    public init(servers: [String], tls: EtcdTLS? = nil, prefix: String = "", keptEvents: Int = 500,
                expiring: (prefix: String, ttl: Int64)? = nil) throws {
        guard !servers.isEmpty else { throw StoreError.backend("--etcd-servers: no server given") }
        do {
            try self.init(transport: EtcdGRPCTransport(endpoints: servers, tls: tls), prefix: prefix, keptEvents: keptEvents, expiring: expiring)
        } catch let e as EtcdError {
            throw StoreError.backend("\(e)")
        }
    }

    /// `leaseReuse`: for how many seconds one lease serves the writes of expiring keys.
    public init(transport: any EtcdTransport, prefix: String = "", keptEvents: Int = 500,
                expiring: (prefix: String, ttl: Int64)? = nil, leaseReuse: Int64 = 60) throws {
        self.transport = transport
        self.prefix = prefix
        members = MemberChoice(count: transport.endpoints.count)
        hub = EtcdWatchHub(transport: transport, members: members, prefix: prefix, keep: keptEvents)
        leases = expiring.map { EtcdLeases(prefix: $0.prefix, ttl: $0.ttl, reuse: leaseReuse) }
    }

    static func bytes(_ s: String) -> Data { Data(s.utf8) }

    /// The end of a prefix's range: the prefix with its last byte incremented.
    static func rangeEnd(_ p: String) -> Data {
        var b = Array(p.utf8)
        while let last = b.last {
            if last < 0xff { b[b.count - 1] = last + 1; return Data(b) }
            b.removeLast()
        }
        return Data([0])
    }

    /// One call, on the member that last answered, else on the others in turn; when none
    /// answers, again, with growing pauses, for about five seconds (an election takes one or
    /// two). `retried` says whether an attempt may have reached etcd before its answer was lost,
    /// which a conditional write must take into account.
    func call<T: Sendable>(_ body: (Int) async throws -> T) async throws -> T { try await callNoting(body).value }

    func callNoting<T: Sendable>(_ body: (Int) async throws -> T) async throws -> (value: T, retried: Bool) {
        var last: any Error = StoreError.backend("no etcd server answered")
        var retried = false
        let n = transport.endpoints.count
        for attempt in 0..<10 {
            let first = members.current
            for k in 0..<n {
                let i = (first + k) % n
                do {
                    let v = try await body(i)
                    members.answered(i)
                    return (v, retried)
                } catch let e as EtcdError {
                    guard e.isUnreachable else { throw Self.translate(e) }
                    last = StoreError.backend("\(e)")
                    retried = true
                }
            }
            try await Task.sleep(for: .milliseconds(min(1000, 20 << attempt)))
        }
        throw last
    }

    static func translate(_ e: EtcdError) -> StoreError {
        let msg = "\(e)"
        if msg.contains("required revision has been compacted") { return .compacted(requested: 0, compacted: 0) }
        if msg.contains("future revision") { return .futureRevision(requested: 0, current: 0) }
        return .backend(msg)
    }

    func kv(_ k: Mvccpb_KeyValue) -> KeyValue { Self.kv(k, prefix: prefix) }

    static func kv(_ k: Mvccpb_KeyValue, prefix: String) -> KeyValue {
        let key = String(decoding: k.key, as: UTF8.self)
        return KeyValue(key: String(key.dropFirst(prefix.count)), value: k.value, createRevision: k.createRevision, modRevision: k.modRevision)
    }

    /// The events of one message of an etcd watch stream; throws for a compacted start revision
    /// (`requested` is the revision asked for) or a canceled watch. A progress notification
    /// (no events) gives none.
    static func events(_ msg: Etcdserverpb_WatchResponse, prefix: String, requested: Int64) throws -> [StoreEvent] {
        // A start revision that is compacted: the watch is made, then canceled.
        if msg.compactRevision > 0 {
            throw StoreError.compacted(requested: requested, compacted: msg.compactRevision - 1)
        }
        if msg.canceled {
            throw StoreError.backend("etcd canceled the watch\(msg.cancelReason.isEmpty ? "" : ": " + msg.cancelReason)")
        }
        return msg.events.map { e in
            let now = kv(e.kv, prefix: prefix)
            let prev = e.hasPrevKv ? kv(e.prevKv, prefix: prefix) : nil
            if e.type == .delete {
                var gone = prev ?? now
                gone.modRevision = now.modRevision
                return StoreEvent(kind: .deleted, kv: gone, previous: prev)
            }
            return StoreEvent(kind: now.createRevision == now.modRevision ? .created : .updated, kv: now, previous: prev)
        }
    }

    func rangeRequest(_ key: String, end: Data? = nil, revision: Int64? = nil) -> Etcdserverpb_RangeRequest {
        var r = Etcdserverpb_RangeRequest()
        r.key = Self.bytes(prefix + key)
        if let end { r.rangeEnd = end }
        if let revision { r.revision = revision }
        return r
    }

    /// The revision etcd's answer to a read of one key carries (a count over every key would
    /// cost etcd a walk of them all).
    public func currentRevision() async throws -> Int64 {
        let r = rangeRequest("/")
        return try await call { try await transport.range(r, at: $0) }.header.revision
    }

    public func get(_ key: String) async throws -> KeyValue? {
        let r = rangeRequest(key)
        return try await call { try await transport.range(r, at: $0) }.kvs.first.map(kv)
    }

    /// The key as it was at `revision` (nil if it did not exist then, or that is compacted).
    func get(_ key: String, at revision: Int64) async throws -> KeyValue? {
        guard revision > 0 else { return nil }
        let r = rangeRequest(key, revision: revision)
        return try await call { try await transport.range(r, at: $0) }.kvs.first.map(kv)
    }

    func compare(_ key: String, expected: Int64?) -> Etcdserverpb_Compare {
        var c = Etcdserverpb_Compare()
        c.key = Self.bytes(prefix + key)
        if let expected {
            c.target = .mod
            c.result = .equal
            c.modRevision = expected
        } else {
            // The key exists.
            c.target = .create
            c.result = .greater
            c.createRevision = 0
        }
        return c
    }

    /// A transaction: `compare` on the key, then `success` or `failure` (a read of the key).
    /// - Parameter unlessValue: for a write with no revision to compare (an unconditional
    ///   update), the value it writes: an attempt after one whose answer was lost also requires
    ///   the key not to hold it already, so a write that did land is not made twice (a second
    ///   revision, and a second event for every watch).
    func txn(_ key: String, compare: Etcdserverpb_Compare, success: Etcdserverpb_RequestOp, unlessValue: Data? = nil) async throws
        -> (ok: Bool, answer: Etcdserverpb_TxnResponse, retried: Bool) {
        var t = Etcdserverpb_TxnRequest()
        t.compare = [compare]
        t.success = [success]
        var read = Etcdserverpb_RequestOp()
        read.requestRange = rangeRequest(key)
        t.failure = [read]
        var again = t
        if let unlessValue {
            var c = Etcdserverpb_Compare()
            c.key = compare.key
            c.target = .value
            c.result = .notEqual
            c.value = unlessValue
            again.compare.append(c)
        }
        var attempts = 0
        let (r, retried) = try await callNoting { member in
            attempts += 1
            return try await transport.txn(attempts == 1 ? t : again, at: member)
        }
        return (r.succeeded, r, retried)
    }

    static func current(_ r: Etcdserverpb_TxnResponse) -> Mvccpb_KeyValue? {
        r.responses.first?.responseRange.kvs.first
    }

    func put(_ key: String, _ value: Data, prevKv: Bool) async throws -> Etcdserverpb_RequestOp {
        var p = Etcdserverpb_PutRequest()
        p.key = Self.bytes(prefix + key)
        p.value = value
        p.prevKv = prevKv
        if let leases, key.hasPrefix(leases.prefix) {
            p.lease = try await leases.lease { ttl in
                var g = Etcdserverpb_LeaseGrantRequest()
                g.ttl = ttl
                return try await call { try await transport.leaseGrant(g, at: $0) }.id
            }
        }
        var op = Etcdserverpb_RequestOp()
        op.requestPut = p
        return op
    }

    /// `body` with the put of `value` at `key`; if etcd no longer has the lease the put was
    /// given (it ran out between grant and write, on a very slow machine), again with a new one.
    func putting<T: Sendable>(_ key: String, _ value: Data, prevKv: Bool, _ body: (Etcdserverpb_RequestOp) async throws -> T) async throws -> T {
        do {
            return try await body(try await put(key, value, prevKv: prevKv))
        } catch let e as StoreError where leases != nil && "\(e)".contains("requested lease not found") {
            await leases?.forget()
            return try await body(try await put(key, value, prevKv: prevKv))
        }
    }

    public func create(_ key: String, value: Data) async throws -> KeyValue {
        var absent = Etcdserverpb_Compare()
        absent.key = Self.bytes(prefix + key)
        absent.target = .create
        absent.result = .equal
        absent.createRevision = 0
        let (ok, r, retried) = try await putting(key, value, prevKv: false) { try await txn(key, compare: absent, success: $0) }
        guard ok else {
            // An attempt whose answer was lost may have made it: then the key holds our value
            // at its first version.
            if retried, let cur = Self.current(r), cur.value == value, cur.version == 1 {
                return kv(cur)
            }
            throw StoreError.exists(key)
        }
        let rev = r.header.revision
        return KeyValue(key: key, value: value, createRevision: rev, modRevision: rev)
    }

    public func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue {
        let (ok, r, retried) = try await putting(key, value, prevKv: true) {
            try await txn(key, compare: compare(key, expected: expected), success: $0, unlessValue: expected == nil ? value : nil)
        }
        guard ok else {
            guard let cur = Self.current(r) else { throw StoreError.notFound(key) }
            // An attempt whose answer was lost may have made it: then the key holds our value at
            // a later revision than expected (or, unconditionally, holds it at all), and the write
            // is not a conflict but done.
            if retried, cur.value == value, expected.map({ cur.modRevision > $0 }) ?? true {
                return kv(cur)
            }
            throw StoreError.conflict(key: key, expected: expected ?? 0, actual: cur.modRevision)
        }
        let prev = r.responses.first?.responsePut.prevKv
        return KeyValue(key: key, value: value, createRevision: prev?.createRevision ?? 0, modRevision: r.header.revision)
    }

    public func delete(_ key: String, expected: Int64?) async throws -> KeyValue {
        var d = Etcdserverpb_DeleteRangeRequest()
        d.key = Self.bytes(prefix + key)
        d.prevKv = true
        var op = Etcdserverpb_RequestOp()
        op.requestDeleteRange = d
        let (ok, r, retried) = try await txn(key, compare: compare(key, expected: expected), success: op)
        guard ok else {
            let now = r.header.revision
            guard let cur = Self.current(r) else {
                // Gone. If an attempt whose answer was lost deleted it, answer with what it
                // deleted: the key at the expected revision (or, unconditionally, just before now).
                if retried, let before = try? await get(key, at: expected ?? now - 1) {
                    var gone = before
                    gone.modRevision = now
                    return gone
                }
                throw StoreError.notFound(key)
            }
            throw StoreError.conflict(key: key, expected: expected ?? 0, actual: cur.modRevision)
        }
        guard let prev = r.responses.first?.responseDeleteRange.prevKvs.first else {
            throw StoreError.notFound(key)
        }
        var gone = kv(prev)
        gone.modRevision = r.header.revision
        return gone
    }

    public func list(prefix p: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage {
        let start = after.map { $0 + "\0" } ?? p
        var req = rangeRequest(max(start, p), end: Self.rangeEnd(prefix + p), revision: revision)
        if limit > 0 { req.limit = Int64(limit) }
        let r: Etcdserverpb_RangeResponse
        do {
            r = try await call { try await transport.range(req, at: $0) }
        } catch StoreError.compacted {
            throw StoreError.compacted(requested: revision ?? 0, compacted: revision ?? 0)
        } catch StoreError.futureRevision {
            throw StoreError.futureRevision(requested: revision ?? 0, current: try await currentRevision())
        }
        let items = r.kvs.map(kv)
        let rev = revision ?? r.header.revision
        return ListPage(items: items, revision: rev, continueAfter: r.more ? items.last?.key : nil)
    }

    public func count(prefix p: String, after: String?, revision: Int64?) async throws -> Int {
        let start = after.map { max($0, p) + "\u{0}" } ?? p
        var req = rangeRequest(start, end: Self.rangeEnd(prefix + p), revision: revision)
        req.countOnly = true
        return Int(try await call { try await transport.range(req, at: $0) }.count)
    }

    /// From the shared watch when it holds every event after `revision`; otherwise (an older
    /// revision) from a watch of its own on etcd, which also reports compaction.
    public func watch(prefix p: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        if let shared = try await hub.subscribe(prefix: p, after: revision) { return shared }
        return try await ownWatch(prefix: p, after: revision)
    }

    func ownWatch(prefix p: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Self.bytes(prefix + p)
        create.rangeEnd = Self.rangeEnd(prefix + p)
        create.startRevision = revision + 1
        create.prevKv = true
        let raw = try await call { try await transport.watch(create, at: $0) }
        let prefix = self.prefix
        return AsyncThrowingStream { c in
            let task = Task {
                do {
                    for try await msg in raw {
                        for e in try Self.events(msg, prefix: prefix, requested: revision) { c.yield(e) }
                    }
                    c.finish()
                } catch let e as EtcdError {
                    c.finish(throwing: StoreError.backend("\(e)"))
                } catch {
                    c.finish(throwing: error)
                }
            }
            c.onTermination = { _ in task.cancel() }
        }
    }

    public func compact(through revision: Int64) async throws {
        var r = Etcdserverpb_CompactionRequest()
        r.revision = revision
        r.physical = true
        _ = try await call { try await transport.compact(r, at: $0) }
    }

    /// The members' own view (`etcdctl endpoint status`): version, leader, raft term, database
    /// size; nil for a member that does not answer.
    public func memberStatus() async -> [(endpoint: String, status: Etcdserverpb_StatusResponse?)] {
        var out: [(String, Etcdserverpb_StatusResponse?)] = []
        for (i, url) in transport.endpoints.enumerated() { out.append((url, try? await transport.status(at: i))) }
        return out
    }
}

/// The member calls go to first: the one that last answered.
final class MemberChoice: @unchecked Sendable {
    private let lock = NSLock()
    private var index = 0
    let count: Int
    init(count: Int) { self.count = count }
    var current: Int { lock.withLock { index } }
    func answered(_ i: Int) { lock.withLock { index = i } }
    /// Calls go to the next member if they went to `i`.
    func failed(_ i: Int) { lock.withLock { if index == i { index = (i + 1) % count } } }
}

/// Leases for keys that expire (events): one lease is granted for `ttl` plus `reuse` seconds (a
/// minute) and used by every write in those seconds, as kube-apiserver's lease manager does, so
/// a busy cluster asks etcd for one lease a minute, not one per event; each key still lives at
/// least `ttl` after its last write.
actor EtcdLeases {
    nonisolated let prefix: String
    let ttl: Int64
    let reuse: Int64
    private var current: (id: Int64, until: Date)?

    init(prefix: String, ttl: Int64, reuse: Int64 = 60) {
        self.prefix = prefix
        self.ttl = ttl
        self.reuse = reuse
    }

    /// The lease in use is not to be used again.
    func forget() { current = nil }

    func lease(grant: @Sendable (Int64) async throws -> Int64) async throws -> Int64 {
        if let current, current.until > Date() { return current.id }
        let id = try await grant(ttl + reuse)
        current = (id, Date().addingTimeInterval(Double(reuse)))
        return id
    }
}

/// One etcd watch over every key, shared by the store's watches, as kube-apiserver's watch cache
/// shares one per resource: a hundred API watches cost etcd one stream, and each event is parsed
/// once. It keeps the latest events, so a watch from a recent revision (a list's, typically)
/// starts from them; a watch from before them gets its own watch on etcd. The etcd watch is
/// opened with the first watch and closed when the last one ends; if it fails, every watch on it
/// ends with the error (clients watch again from their last revision).
actor EtcdWatchHub {
    typealias Continuation = AsyncThrowingStream<StoreEvent, any Error>.Continuation
    let transport: any EtcdTransport
    let members: MemberChoice
    let prefix: String
    /// How many of the latest events are kept.
    let keep: Int

    enum Phase {
        case stopped
        case starting([CheckedContinuation<Void, any Error>])
        case running
    }
    private var phase = Phase.stopped
    /// Counts the etcd watches opened, so the end of an old one does not stop a newer one.
    private var generation = 0
    private var feed: Task<Void, Never>?
    private var watchers: [Int: (prefix: String, after: Int64, continuation: Continuation)] = [:]
    private var nextID = 0
    /// The latest events, in revision order.
    private var recent: [StoreEvent] = []
    /// Every event after this revision is in `recent` or still to come.
    private var floor: Int64 = 0

    init(transport: any EtcdTransport, members: MemberChoice, prefix: String, keep: Int = 500) {
        self.transport = transport
        self.members = members
        self.prefix = prefix
        self.keep = keep
    }

    /// A watch on the shared stream, or nil if it does not reach back to `revision` (or the
    /// prefix is outside the keys it follows).
    func subscribe(prefix p: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error>? {
        guard p.hasPrefix("/") else { return nil }
        while true {
            switch phase {
            case .running:
                // Checked and registered in one turn: no event falls between the two.
                guard revision >= floor else {
                    // The watch that opened the shared one may itself be from before it (a write
                    // came in between): then nothing holds the shared one open.
                    if watchers.isEmpty { stop(StoreError.backend("no watch left")) }
                    return nil
                }
                let (stream, c) = AsyncThrowingStream.makeStream(of: StoreEvent.self)
                for e in recent where e.revision > revision && e.kv.key.hasPrefix(p) { c.yield(e) }
                let id = nextID
                nextID += 1
                watchers[id] = (p, revision, c)
                c.onTermination = { _ in Task { await self.unsubscribe(id) } }
                return stream
            case .stopped:
                generation += 1
                phase = .starting([])
                let g = generation
                feed = Task { await self.follow(generation: g) }
                try await started()
            case .starting:
                try await started()
            }
        }
    }

    /// The number of watches on the shared stream (for tests).
    var watcherCount: Int { watchers.count }

    private func started() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            if case .starting(var waiting) = phase {
                waiting.append(c)
                phase = .starting(waiting)
            } else {
                c.resume()   // running, or stopped again: the caller looks again
            }
        }
    }

    private func unsubscribe(_ id: Int) {
        guard watchers.removeValue(forKey: id) != nil else { return }
        if watchers.isEmpty, case .running = phase { stop(StoreError.backend("no watch left")) }
    }

    /// Follows the etcd watch on the member calls go to. When that member is lost, the watch is
    /// made again on the next from the revision after the last one delivered, and the watches on
    /// it go on without a gap or a repeat; after about five seconds without a member, or on any
    /// other failure, they end with it (and clients watch again from their last revision).
    private func follow(generation g: Int) async {
        var failures = 0
        while g == generation {
            var create = Etcdserverpb_WatchCreateRequest()
            create.key = EtcdStore.bytes(prefix + "/")
            create.rangeEnd = EtcdStore.rangeEnd(prefix + "/")
            create.prevKv = true
            create.progressNotify = true
            if progress > 0 { create.startRevision = progress + 1 }
            let member = members.current
            do {
                for try await msg in try await transport.watch(create, at: member) {
                    guard g == generation else { return }
                    failures = 0
                    try receive(msg)
                }
                if g == generation { stop(StoreError.backend("etcd ended the watch")) }
                return
            } catch let e as EtcdError where e.isUnreachable && progress > 0 && failures < 10 {
                // Lost the member: again on the next one.
                members.failed(member)
                failures += 1
                try? await Task.sleep(for: .milliseconds(min(1000, 20 << failures)))
            } catch let e as EtcdError {
                if e.isUnreachable { members.failed(member) }
                if g == generation { stop(StoreError.backend("\(e)")) }
                return
            } catch {
                if g == generation { stop(error) }
                return
            }
        }
    }

    /// The revision up to which etcd has sent every event (its last event's, or a progress
    /// notification's); 0 before the watch is made.
    private(set) var progress: Int64 = 0

    private func receive(_ msg: Etcdserverpb_WatchResponse) throws {
        if msg.created, case .starting(let waiting) = phase {
            // Events come from the revision after the one the watch was created at.
            floor = msg.header.revision
            progress = msg.header.revision
            phase = .running
            for w in waiting { w.resume() }
        }
        let events = try EtcdStore.events(msg, prefix: prefix, requested: floor)
        guard let last = events.last else {
            // A progress notification: every event up to its revision has been sent.
            if !msg.created { progress = max(progress, msg.header.revision) }
            return
        }
        progress = max(progress, last.revision)
        recent += events
        if recent.count > 2 * keep {
            let drop = recent.count - keep
            floor = recent[drop - 1].revision
            recent.removeFirst(drop)
        }
        for e in events {
            for (_, w) in watchers where e.revision > w.after && e.kv.key.hasPrefix(w.prefix) { w.continuation.yield(e) }
        }
    }

    /// Closes the etcd watch; the watches on it end with `error`.
    private func stop(_ error: any Error) {
        generation += 1
        feed?.cancel()
        feed = nil
        if case .starting(let waiting) = phase { for w in waiting { w.resume(throwing: error) } }
        phase = .stopped
        progress = 0
        let ending = watchers
        watchers = [:]
        recent = []
        for (_, w) in ending { w.continuation.finish(throwing: error) }
    }
}
