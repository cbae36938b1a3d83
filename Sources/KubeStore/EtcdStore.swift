import Foundation
import KubeAPI
import KubeClient

/// The store on a real etcd cluster (`--etcd-servers`), through etcd's v3 API as its gateway
/// serves it over HTTP/JSON (etcd 3.4: `/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`,
/// `/v3/kv/compaction`). etcd's revision is the resourceVersion, as with kube-apiserver;
/// conditional writes are transactions comparing the key's create or mod revision.
public struct EtcdStore: Store {
    let clients: [KubeClient]
    /// Keys live under this prefix (kube-apiserver's `--etcd-prefix`, `/registry` by default;
    /// our keys already start with it, so the default adds nothing).
    let prefix: String

    public init(servers: [String], prefix: String = "") throws {
        guard !servers.isEmpty else { throw StoreError.backend("--etcd-servers: no server given") }
        clients = try servers.map { try KubeClient(url: $0) }
        self.prefix = prefix
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
                    last = StoreError.backend("etcd \(c.config.server): \(error)")
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

    func kv(_ j: JSONValue) -> KeyValue {
        let key = String(decoding: Self.unb64(j["key"]), as: UTF8.self)
        return KeyValue(key: String(key.dropFirst(prefix.count)), value: Self.unb64(j["value"]),
                        createRevision: Self.int(j["create_revision"]), modRevision: Self.int(j["mod_revision"]))
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

    public func count(prefix p: String) async throws -> Int {
        let r = try await call("/v3/kv/range", ["key": Self.b64(prefix + p), "range_end": Self.b64(Self.rangeEnd(prefix + p)), "count_only": true])
        return Int(Self.int(r["count"]))
    }

    public func watch(prefix p: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        let raw = try await clients[0].stream("POST", "/v3/watch", body: ["create_request": [
            "key": Self.b64(prefix + p), "range_end": Self.b64(Self.rangeEnd(prefix + p)),
            "start_revision": .string(String(revision + 1)), "prev_kv": true,
        ]])
        let store = self
        return AsyncThrowingStream { c in
            let task = Task {
                do {
                    for try await msg in raw {
                        if let err = msg["error"] {
                            c.finish(throwing: StoreError.backend("etcd watch: \(err["message"]?.string ?? err.text())"))
                            return
                        }
                        // A start revision that is compacted: the watch is made, then canceled.
                        if let cr = msg[path: ["result", "compact_revision"]], Self.int(cr) > 0 {
                            c.finish(throwing: StoreError.compacted(requested: revision, compacted: Self.int(cr) - 1))
                            return
                        }
                        if msg[path: ["result", "canceled"]]?.bool == true {
                            c.finish(throwing: StoreError.backend("etcd canceled the watch"))
                            return
                        }
                        for e in msg[path: ["result", "events"]]?.array ?? [] {
                            let now = store.kv(e["kv"] ?? [:])
                            let prev = e["prev_kv"].map(store.kv)
                            if e["type"]?.string == "DELETE" {
                                var gone = prev ?? now
                                gone.modRevision = now.modRevision
                                c.yield(StoreEvent(kind: .deleted, kv: gone, previous: prev))
                            } else {
                                c.yield(StoreEvent(kind: now.createRevision == now.modRevision ? .created : .updated, kv: now, previous: prev))
                            }
                        }
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
