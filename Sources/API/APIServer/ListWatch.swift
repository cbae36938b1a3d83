import Foundation
import Synchronization
import KubeAPI
import KubeStore

/// Lists (selectors, pages and `continue` tokens, a past resourceVersion) and watches (bookmarks,
/// a timeout, the window of kept events).
extension APIHandler {

    func selectors(_ req: APIRequest) throws -> (LabelSelector?, FieldSelector?) {
        let l = try req.query["labelSelector"].flatMap { $0.isEmpty ? nil : try LabelSelector($0) }
        let f = try req.query["fieldSelector"].flatMap { $0.isEmpty ? nil : try FieldSelector($0) }
        return (l, f)
    }

    static func labels(_ o: JSONValue) -> [String: String] {
        (o[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
    }

    func prefix(_ t: Target) -> String {
        t.resource.namespaced && t.namespace != nil ? t.resource.storePrefix + t.namespace! + "/" : t.resource.storePrefix
    }

    /// The objects a list selects, read at one revision, a page at a time when asked.
    func selected(_ req: APIRequest, _ t: Target, revision: Int64?) async throws
        -> (items: [(KeyValue, JSONValue)], revision: Int64, next: String?, remaining: Int?) {
        let (ls, fs) = try selectors(req)
        let limit = Int(req.query["limit"] ?? "") ?? 0
        var after: String?
        var rev = revision
        if let c = req.query["continue"], !c.isEmpty {
            guard let token = Continue.decode(c) else { throw APIError.badRequest("invalid continue token") }
            after = token.after
            rev = token.revision
        }
        var out: [(KeyValue, JSONValue)] = []
        var pageRev: Int64 = 0
        var next: String?
        var remaining: Int?
        // Selectors filter after reading: read pages until the limit is filled or the keys end.
        repeat {
            let page = try await storeCall(t.resource, "") {
                try await self.store.list(prefix: self.prefix(t), after: after, limit: limit > 0 ? max(limit, 100) : 0, revision: rev)
            }
            pageRev = page.revision
            rev = page.revision
            for kv in page.items {
                let o = try present(kv, t.resource)
                if let ls, !ls.matches(Self.labels(o)) { continue }
                if let fs, !fs.matches(o) { continue }
                out.append((kv, o))
                if limit > 0 && out.count == limit { break }
            }
            after = page.continueAfter
            if limit > 0 && out.count == limit {
                let last = out.last!.0.key
                // More may follow if the page did not end at its last key or there are more pages.
                if page.continueAfter != nil || page.items.last?.key != last {
                    next = Continue.encode(after: last, revision: pageRev)
                    // How many follow, as upstream says when it can: without selectors.
                    if ls == nil && fs == nil {
                        let prefix = self.prefix(t)
                        remaining = try await storeCall(t.resource, "") { try await self.store.count(prefix: prefix, after: last, revision: pageRev) }
                    }
                }
                break
            }
        } while after != nil
        return (out, pageRev, next, remaining)
    }

    /// `resourceVersionMatch` and `sendInitialEvents` as upstream validates ListOptions (a list's
    /// and a watch's rules differ).
    func checkListOptions(_ req: APIRequest, watch: Bool) throws {
        let rv = req.query["resourceVersion"] ?? ""
        let match = req.query["resourceVersionMatch"] ?? ""
        let send = req.query["sendInitialEvents"]
        let continuing = !(req.query["continue"] ?? "").isEmpty
        var errs: [FieldError] = []
        if watch {
            if send != nil {
                if match != "NotOlderThan" {
                    errs.append(FieldError("resourceVersionMatch", "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
                }
                if send == "true" && !["1", "true"].contains(req.query["allowWatchBookmarks"] ?? "") {
                    errs.append(FieldError("allowWatchBookmarks", "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true"))
                }
            }
            if !match.isEmpty {
                if send == nil {
                    errs.append(FieldError("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
                }
                if match != "NotOlderThan" {
                    errs.append(FieldError("resourceVersionMatch", "Unsupported value: \(JSONValue.string(match).text()): supported values: \"NotOlderThan\""))
                }
                if continuing { errs.append(FieldError("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden when continue is provided")) }
            }
        } else {
            if !match.isEmpty {
                if rv.isEmpty { errs.append(FieldError("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")) }
                if continuing { errs.append(FieldError("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden when continue is provided")) }
                if !["Exact", "NotOlderThan"].contains(match) {
                    errs.append(FieldError("resourceVersionMatch", "Unsupported value: \(JSONValue.string(match).text()): supported values: \"Exact\", \"NotOlderThan\", \"\""))
                }
                if match == "Exact" && rv == "0" {
                    errs.append(FieldError("resourceVersionMatch", "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""))
                }
            }
            if send != nil { errs.append(FieldError("sendInitialEvents", "Forbidden: sendInitialEvents is forbidden for list")) }
        }
        if !errs.isEmpty { throw APIError.invalidOptions("ListOptions", errs) }
    }

    func list(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        try checkListOptions(req, watch: false)
        var revision: Int64?
        if let rv = req.query["resourceVersion"], !rv.isEmpty, rv != "0", req.query["resourceVersionMatch"] == "Exact" {
            guard let v = Int64(rv) else { throw APIError.badRequest("invalid resourceVersion \(rv)") }
            revision = v
        }
        let (items, rev, next, remaining) = try await selected(req, t, revision: revision)
        var meta: [String: JSONValue] = ["resourceVersion": .string(String(rev))]
        if let next { meta["continue"] = .string(next) }
        if let remaining { meta["remainingItemCount"] = .int(Int64(remaining)) }
        if Tables.wanted(req.accept) {
            return .ok(Tables.table(items.map(\.1), t.resource, meta: meta, includeObject: req.query["includeObject"]))
        }
        return .ok(["kind": .string(t.resource.kind + "List"), "apiVersion": .string(t.resource.groupVersion),
                    "metadata": .object(meta), "items": .array(items.map(\.1))])
    }

    func watch(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        try checkListOptions(req, watch: true)
        let (ls, fs) = try selectors(req)
        let r = t.resource
        let rvText = req.query["resourceVersion"] ?? ""
        var initial: [JSONValue] = []
        let from: Int64
        // A watch-list (`sendInitialEvents=true`) starts with the current objects whatever the
        // resourceVersion (one not older than it), then a bookmark marks the end of them;
        // `sendInitialEvents=false` never sends them.
        let sendInitial = req.query["sendInitialEvents"].map { $0 == "true" }
        if sendInitial == true || (sendInitial == nil && (rvText.isEmpty || rvText == "0")) {
            let (items, rev, _, _) = try await selected(APIRequest(method: "GET", path: req.path, query: req.query.filter { !["limit", "continue", "resourceVersion", "resourceVersionMatch"].contains($0.key) }), t, revision: nil)
            initial = items.map(\.1)
            from = rev
            if let v = Int64(rvText), v > rev { throw APIError.from(StoreError.futureRevision(requested: v, current: rev), r, "") }
        } else if rvText.isEmpty || rvText == "0" {
            from = try await store.currentRevision(prefix: prefix(t))
        } else {
            guard let v = Int64(rvText) else { throw APIError.badRequest("invalid resourceVersion \(rvText)") }
            from = v
        }
        let events: AsyncThrowingStream<StoreEvent, any Error>
        do {
            events = try await store.watch(prefix: prefix(t), after: from)
        } catch let e as StoreError {
            if case .compacted = e {
                // As kube-apiserver: a 200 stream whose one event is an ERROR carrying 410 Expired.
                let status = APIError.expired("too old resource version: \(from)").status
                return APIResponse(code: 200, body: .stream(AsyncThrowingStream { c in
                    c.yield(Data((JSONValue.object(["type": "ERROR", "object": status]).text() + "\n").utf8))
                    c.finish()
                }))
            }
            throw APIError.from(e, r, "")
        }
        let table = Tables.wanted(req.accept)
        let bookmarks = ["1", "true"].contains(req.query["allowWatchBookmarks"] ?? "")
        let timeout = Double(req.query["timeoutSeconds"] ?? "").map { min(max($0, 1), 3600) } ?? 1800
        let handler = self
        let includeObject = req.query["includeObject"]
        let line: @Sendable (String, JSONValue) -> Data = { type, o in
            let object = table ? Tables.table([o], r, meta: [:], includeObject: includeObject) : o
            return Data((JSONValue.object(["type": .string(type), "object": object]).text() + "\n").utf8)
        }
        let visible: @Sendable (JSONValue) -> Bool = { o in
            (ls?.matches(APIHandler.labels(o)) ?? true) && (fs?.matches(o) ?? true)
        }
        // Without selectors and tables, what this watcher is sent is what every such watcher of
        // the resource is sent.
        let shared = !table && ls == nil && fs == nil
        let firstEvents = initial
        let initialEnd = sendInitial == true
        // apiserver_longrunning_requests counts the watch while its stream is open.
        let open = APIServerMetrics.openLongRunning.map { metrics.longRunningGauge($0) }
        open?.increment()
        let stream = AsyncThrowingStream<Data, any Error> { c in
            let task = Task {
                for o in firstEvents { c.yield(line("ADDED", o)) }
                let deadline = ContinuousClock.now + .seconds(timeout)
                let seen = Seen(from)
                let bookmark: @Sendable () -> Data = {
                    Data((JSONValue.object(["type": "BOOKMARK", "object": ["kind": .string(r.kind), "apiVersion": .string(r.groupVersion),
                                                                           "metadata": ["resourceVersion": .string(String(seen.revision))]]]).text() + "\n").utf8)
                }
                if initialEnd {
                    c.yield(Data((JSONValue.object(["type": "BOOKMARK", "object": [
                        "kind": .string(r.kind), "apiVersion": .string(r.groupVersion),
                        "metadata": ["resourceVersion": .string(String(from)), "annotations": ["k8s.io/initial-events-end": "true"]]]]).text() + "\n").utf8))
                }
                // The watch ends at its timeout; when asked, a bookmark every 30 s tells a quiet
                // watcher how far it has seen (as kube-apiserver sends them about once a minute).
                let ticker = Task {
                    var next = ContinuousClock.now + .seconds(30)
                    while !Task.isCancelled {
                        try await Task.sleep(until: min(next, deadline))
                        if ContinuousClock.now >= deadline { c.finish(); return }
                        if bookmarks { c.yield(bookmark()) }
                        next = ContinuousClock.now + .seconds(30)
                    }
                }
                defer { ticker.cancel() }
                do {
                    for try await e in events {
                        if Task.isCancelled { break }
                        seen.revision = e.revision
                        if shared {
                            // Every change is sent: encoded once for every watcher like this one.
                            let type = switch e.kind { case .created: "ADDED"; case .updated: "MODIFIED"; case .deleted: "DELETED" }
                            c.yield(try handler.watchEncodings.line(r, e, type) { line(type, try handler.present(e.kv, r)) })
                            continue
                        }
                        let now = try handler.present(e.kv, r)
                        let before = try e.previous.map { try handler.present($0, r) }
                        let isNow = e.kind != .deleted && visible(now)
                        let wasBefore = before.map(visible) ?? false
                        switch (e.kind, wasBefore, isNow) {
                        case (.created, _, true): c.yield(line("ADDED", now))
                        case (.updated, true, true): c.yield(line("MODIFIED", now))
                        case (.updated, false, true): c.yield(line("ADDED", now))
                        case (.updated, true, false): c.yield(line("DELETED", now))
                        case (.deleted, true, _): c.yield(line("DELETED", now))
                        default: break
                        }
                    }
                } catch StoreError.compacted(_, _) {
                    // A store that learns of compaction only once watching (etcd): the same ERROR event.
                    c.yield(Data((JSONValue.object(["type": "ERROR", "object": APIError.expired("too old resource version: \(from)").status]).text() + "\n").utf8))
                } catch {}
                c.finish()
            }
            let id = UUID()
            let late = handler.watches.withLock { w in
                if !w.closed { w.open[id] = c }
                return w.closed
            }
            if late { c.finish() }
            c.onTermination = { _ in
                task.cancel()
                open?.decrement()
                _ = handler.watches.withLock { $0.open.removeValue(forKey: id) }
            }
        }
        return APIResponse(code: 200, body: .stream(stream))
    }
}

extension JSONValue {
    /// This object with `other`'s keys added (or replaced).
    func merging(_ other: [String: JSONValue]) -> JSONValue {
        guard case .object(var o) = self else { return self }
        for (k, v) in other { o[k] = v }
        return .object(o)
    }
}

/// The last revision a watch delivered, shared with its bookmark timer.
final class Seen: Sendable {
    private let value: Mutex<Int64>
    init(_ v: Int64) { value = Mutex(v) }
    var revision: Int64 {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

/// `continue` tokens: the last key returned and the revision the list was read at.
enum Continue {
    static func encode(after: String, revision: Int64) -> String {
        Data(JSONValue.object(["v": "meta.k8s.io/v1", "rv": .int(revision), "start": .string(after)]).text().utf8).base64EncodedString()
    }

    static func decode(_ token: String) -> (after: String, revision: Int64)? {
        guard let d = Data(base64Encoded: token), let j = try? JSONValue.parse(d), let a = j["start"]?.string, let r = j["rv"]?.int else { return nil }
        return (a, r)
    }
}

/// Watch events as sent, shared by the watchers of a resource that see every change (informers
/// watch without selectors): each event is presented and encoded once however many watch it, as
/// kube-apiserver's watch cache serializes an object once for all its watchers. The latest 512
/// are kept; a watcher far behind the others encodes its own.
final class WatchEncodings: Sendable {
    struct Key: Hashable {
        var resource: String
        var key: String
        var revision: Int64
        var type: String
    }
    struct State {
        var lines: [Key: Data] = [:]
        var order: [Key] = []
        var next = 0
    }
    let state = Mutex(State())
    static let capacity = 512

    func line(_ r: ResourceInfo, _ e: StoreEvent, _ type: String, _ encode: () throws -> Data) rethrows -> Data {
        let k = Key(resource: r.groupVersion + "/" + r.resource, key: e.kv.key, revision: e.revision, type: type)
        if let d = state.withLock({ $0.lines[k] }) { return d }
        let d = try encode()
        state.withLock { s in
            guard s.lines[k] == nil else { return }
            if s.order.count < Self.capacity {
                s.order.append(k)
            } else {
                s.lines[s.order[s.next]] = nil
                s.order[s.next] = k
                s.next = (s.next + 1) % Self.capacity
            }
            s.lines[k] = d
        }
        return d
    }
}
