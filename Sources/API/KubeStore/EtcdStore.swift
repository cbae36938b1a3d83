import Foundation
import KubeAPI
import HTTPJSON

/// The store on a real etcd cluster (`--etcd-servers`), through etcd's v3 API as its gateway
/// serves it over HTTP/JSON (etcd 3.4: `/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`,
/// `/v3/kv/compaction`). etcd's revision is the resourceVersion, as with kube-apiserver;
/// conditional writes are transactions comparing the key's create or mod revision.
public struct EtcdStore: Store {
    let clients: [HTTPJSONClient]
    /// Keys live under this prefix (kube-apiserver's `--etcd-prefix`, `/registry` by default;
    /// our keys already start with it, so the default adds nothing).
    let prefix: String
    /// The one etcd watch the store's watches share.
    let hub: EtcdWatchHub

    /// `keptEvents`: how many of the latest events the shared watch keeps for watches that start
    /// from a recent revision.
    public init(servers: [String], prefix: String = "", keptEvents: Int = 500) throws {
        guard !servers.isEmpty else { throw StoreError.backend("--etcd-servers: no server given") }
        clients = try servers.map { try HTTPJSONClient(url: $0, peer: "etcd") }
        self.prefix = prefix
        hub = EtcdWatchHub(client: clients[0], prefix: prefix, keep: keptEvents)
    }

    static func b64(_ s: String) -> JSONValue { .string(Data(s.utf8).base64EncodedString()) }
    static func b64(_ d: Data) -> JSONValue { .string(d.base64EncodedString()) }
    static func unb64(_ v: JSONValue?) -> Data { v?.string.flatMap { Data(base64Encoded: $0) } ?? Data() }
    /// etcd writes int64s as JSON strings (and leaves zeros out).
    static func int(_ v: JSONValue?) -> Int64 { v?.string.flatMap { Int64($0) } ?? v?.int ?? 0 }

    /// The end of a prefix's range: the prefix with its last byte incremented.
    static func rangeEnd(_ p: String) -> String {
        var b = Array(p.utf8)
        while let last = b.last {
            if last < 0xff { b[b.count - 1] = last + 1; return String(decoding: b, as: UTF8.self) }
            b.removeLast()
        }
        return "\0"
    }

    /// One call, tried on each server until one answers; a failed connection is tried again (a
    /// few times, briefly apart). `retried` says whether an attempt may have reached etcd before
    /// the answer was lost, which a conditional write must take into account.
    func call(_ path: String, _ body: JSONValue) async throws -> JSONValue { try await callNoting(path, body).body }

    func callNoting(_ path: String, _ body: JSONValue) async throws -> (body: JSONValue, retried: Bool) {
        var last: any Error = StoreError.backend("no etcd server answered")
        var retried = false
        for attempt in 0..<4 {
            for c in clients {
                do {
                    let r = try await c.request("POST", path, body: body)
                    if r.status == 200 { return (r.body, retried) }
                    let msg = r.body["error"]?.string ?? r.body["message"]?.string ?? "HTTP \(r.status)"
                    throw Self.translate(msg)
                } catch let e as StoreError {
                    if case .backend = e { last = e; retried = true; continue }
                    throw e
                } catch {
                    last = StoreError.backend("etcd \(c.server): \(error)")
                    retried = true
                }
            }
            try? await Task.sleep(for: .milliseconds(20 << attempt))
        }
        throw last
    }

    static func translate(_ msg: String) -> StoreError {
        if msg.contains("required revision has been compacted") { return .compacted(requested: 0, compacted: 0) }
        if msg.contains("future revision") { return .futureRevision(requested: 0, current: 0) }
        return .backend("etcd: \(msg)")
    }

    func kv(_ j: JSONValue) -> KeyValue { Self.kv(j, prefix: prefix) }

    static func kv(_ j: JSONValue, prefix: String) -> KeyValue {
        let key = String(decoding: unb64(j["key"]), as: UTF8.self)
        return KeyValue(key: String(key.dropFirst(prefix.count)), value: unb64(j["value"]),
                        createRevision: int(j["create_revision"]), modRevision: int(j["mod_revision"]))
    }

    /// The events of one message of an etcd watch stream; throws for an error, a compacted start
    /// revision (`requested` is the revision asked for) or a canceled watch.
    static func events(_ msg: JSONValue, prefix: String, requested: Int64) throws -> [StoreEvent] {
        if let err = msg["error"] {
            throw StoreError.backend("etcd watch: \(err["message"]?.string ?? err.text())")
        }
        // A start revision that is compacted: the watch is made, then canceled.
        if let cr = msg[path: ["result", "compact_revision"]], int(cr) > 0 {
            throw StoreError.compacted(requested: requested, compacted: int(cr) - 1)
        }
        if msg[path: ["result", "canceled"]]?.bool == true {
            throw StoreError.backend("etcd canceled the watch")
        }
        return (msg[path: ["result", "events"]]?.array ?? []).map { e in
            let now = kv(e["kv"] ?? [:], prefix: prefix)
            let prev = e["prev_kv"].map { kv($0, prefix: prefix) }
            if e["type"]?.string == "DELETE" {
                var gone = prev ?? now
                gone.modRevision = now.modRevision
                return StoreEvent(kind: .deleted, kv: gone, previous: prev)
            }
            return StoreEvent(kind: now.createRevision == now.modRevision ? .created : .updated, kv: now, previous: prev)
        }
    }

    public func currentRevision() async throws -> Int64 {
        let r = try await call("/v3/kv/range", ["key": Self.b64(prefix + "/"), "range_end": Self.b64(Self.rangeEnd(prefix + "/")),
                                                 "count_only": true])
        return Self.int(r[path: ["header", "revision"]])
    }

    public func get(_ key: String) async throws -> KeyValue? {
        let r = try await call("/v3/kv/range", ["key": Self.b64(prefix + key)])
        return r["kvs"]?.array?.first.map(kv)
    }

    /// The key as it was at `revision` (nil if it did not exist then, or that is compacted).
    func get(_ key: String, at revision: Int64) async throws -> KeyValue? {
        guard revision > 0 else { return nil }
        let r = try await call("/v3/kv/range", ["key": Self.b64(prefix + key), "revision": .string(String(revision))])
        return r["kvs"]?.array?.first.map(kv)
    }

    /// A transaction: `compare` on the key, then `success` or `failure` (a read of the key).
    func txn(_ key: String, compare: JSONValue, success: JSONValue) async throws -> (ok: Bool, body: JSONValue, retried: Bool) {
        let (r, retried) = try await callNoting("/v3/kv/txn", ["compare": [compare], "success": [success],
                                                               "failure": [["request_range": ["key": Self.b64(prefix + key)]]]])
        return (r["succeeded"]?.bool ?? false, r, retried)
    }

    static func current(_ r: JSONValue) -> JSONValue? {
        r["responses"]?.array?.first?[path: ["response_range", "kvs"]]?.array?.first
    }

    public func create(_ key: String, value: Data) async throws -> KeyValue {
        let (ok, r, retried) = try await txn(key, compare: ["key": Self.b64(prefix + key), "target": "CREATE", "create_revision": "0", "result": "EQUAL"],
                                             success: ["request_put": ["key": Self.b64(prefix + key), "value": Self.b64(value)]])
        guard ok else {
            // An attempt whose answer was lost may have made it: then the key holds our value
            // at its first version.
            if retried, let cur = Self.current(r), Self.unb64(cur["value"]) == value, Self.int(cur["version"]) == 1 {
                return kv(cur)
            }
            throw StoreError.exists(key)
        }
        let rev = Self.int(r[path: ["header", "revision"]])
        return KeyValue(key: key, value: value, createRevision: rev, modRevision: rev)
    }

    public func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue {
        let compare: JSONValue = expected.map { ["key": Self.b64(prefix + key), "target": "MOD", "mod_revision": .string(String($0)), "result": "EQUAL"] }
            ?? ["key": Self.b64(prefix + key), "target": "CREATE", "create_revision": "0", "result": "GREATER"]
        let (ok, r, retried) = try await txn(key, compare: compare,
                                    success: ["request_put": ["key": Self.b64(prefix + key), "value": Self.b64(value), "prev_kv": true]])
        guard ok else {
            guard let cur = Self.current(r) else { throw StoreError.notFound(key) }
            // An attempt whose answer was lost may have made it: then the key holds our value at
            // a later revision than expected, and the write is not a conflict but done.
            if retried, let expected, Self.unb64(cur["value"]) == value, Self.int(cur["mod_revision"]) > expected {
                return kv(cur)
            }
            throw StoreError.conflict(key: key, expected: expected ?? 0, actual: Self.int(cur["mod_revision"]))
        }
        let prev = r["responses"]?.array?.first?[path: ["response_put", "prev_kv"]]
        let rev = Self.int(r[path: ["header", "revision"]])
        return KeyValue(key: key, value: value, createRevision: Self.int(prev?["create_revision"]), modRevision: rev)
    }

    public func delete(_ key: String, expected: Int64?) async throws -> KeyValue {
        let compare: JSONValue = expected.map { ["key": Self.b64(prefix + key), "target": "MOD", "mod_revision": .string(String($0)), "result": "EQUAL"] }
            ?? ["key": Self.b64(prefix + key), "target": "CREATE", "create_revision": "0", "result": "GREATER"]
        let (ok, r, retried) = try await txn(key, compare: compare,
                                    success: ["request_delete_range": ["key": Self.b64(prefix + key), "prev_kv": true]])
        guard ok else {
            let now = Self.int(r[path: ["header", "revision"]])
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
            throw StoreError.conflict(key: key, expected: expected ?? 0, actual: Self.int(cur["mod_revision"]))
        }
        guard let prev = r["responses"]?.array?.first?[path: ["response_delete_range", "prev_kvs"]]?.array?.first else {
            throw StoreError.notFound(key)
        }
        var gone = kv(prev)
        gone.modRevision = Self.int(r[path: ["header", "revision"]])
        return gone
    }

    public func list(prefix p: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage {
        let start = after.map { $0 + "\0" } ?? p
        var body: [String: JSONValue] = ["key": Self.b64(prefix + max(start, p)), "range_end": Self.b64(Self.rangeEnd(prefix + p))]
        if limit > 0 { body["limit"] = .string(String(limit)) }
        if let revision { body["revision"] = .string(String(revision)) }
        let r: JSONValue
        do {
            r = try await call("/v3/kv/range", .object(body))
        } catch StoreError.compacted {
            throw StoreError.compacted(requested: revision ?? 0, compacted: revision ?? 0)
        } catch StoreError.futureRevision {
            throw StoreError.futureRevision(requested: revision ?? 0, current: try await currentRevision())
        }
        let items = (r["kvs"]?.array ?? []).map(kv)
        let rev = revision ?? Self.int(r[path: ["header", "revision"]])
        let more = r["more"]?.bool ?? false
        return ListPage(items: items, revision: rev, continueAfter: more ? items.last?.key : nil)
    }

    public func count(prefix p: String, after: String?, revision: Int64?) async throws -> Int {
        let start = after.map { prefix + max($0, p) + "\u{0}" } ?? prefix + p
        var body: [String: JSONValue] = ["key": Self.b64(start), "range_end": Self.b64(Self.rangeEnd(prefix + p)), "count_only": true]
        if let revision { body["revision"] = .string(String(revision)) }
        let r = try await call("/v3/kv/range", .object(body))
        return Int(Self.int(r["count"]))
    }

    /// From the shared watch when it holds every event after `revision`; otherwise (an older
    /// revision) from a watch of its own on etcd, which also reports compaction.
    public func watch(prefix p: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        if let shared = try await hub.subscribe(prefix: p, after: revision) { return shared }
        return try await ownWatch(prefix: p, after: revision)
    }

    func ownWatch(prefix p: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        let raw = try await clients[0].stream("POST", "/v3/watch", body: ["create_request": [
            "key": Self.b64(prefix + p), "range_end": Self.b64(Self.rangeEnd(prefix + p)),
            "start_revision": .string(String(revision + 1)), "prev_kv": true,
        ]])
        let prefix = self.prefix
        return AsyncThrowingStream { c in
            let task = Task {
                do {
                    for try await msg in raw {
                        for e in try Self.events(msg, prefix: prefix, requested: revision) { c.yield(e) }
                    }
                    c.finish()
                } catch {
                    c.finish(throwing: error)
                }
            }
            c.onTermination = { _ in task.cancel() }
        }
    }

    public func compact(through revision: Int64) async throws {
        _ = try await call("/v3/kv/compaction", ["revision": .string(String(revision)), "physical": true])
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
    let client: HTTPJSONClient
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

    init(client: HTTPJSONClient, prefix: String, keep: Int = 500) {
        self.client = client
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

    private func follow(generation g: Int) async {
        do {
            let raw = try await client.stream("POST", "/v3/watch", body: ["create_request": [
                "key": EtcdStore.b64(prefix + "/"), "range_end": EtcdStore.b64(EtcdStore.rangeEnd(prefix + "/")), "prev_kv": true,
            ]])
            for try await msg in raw {
                guard g == generation else { return }
                try receive(msg)
            }
            if g == generation { stop(StoreError.backend("etcd ended the watch")) }
        } catch {
            if g == generation { stop(error) }
        }
    }

    private func receive(_ msg: JSONValue) throws {
        if msg[path: ["result", "created"]]?.bool == true, case .starting(let waiting) = phase {
            // Events come from the revision after the one the watch was created at.
            floor = EtcdStore.int(msg[path: ["result", "header", "revision"]])
            phase = .running
            for w in waiting { w.resume() }
        }
        let events = try EtcdStore.events(msg, prefix: prefix, requested: floor)
        guard !events.isEmpty else { return }
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
        let ending = watchers
        watchers = [:]
        recent = []
        for (_, w) in ending { w.continuation.finish(throwing: error) }
    }
}
