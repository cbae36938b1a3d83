import Foundation
import Logging
import Synchronization
import KubeAPI
import KubeClient

/// A change an informer saw: what was known before and what is known now (nil when absent).
public struct Change<Item: Sendable>: Sendable {
    public var old: Item?
    public var new: Item?
    public var key: String
}

/// client-go's shared informer, small: lists a resource, watches it from the list's
/// resourceVersion, keeps every object (decoded to `Item`) by `namespace/name`, and tells its
/// handlers of each change in order. A watch that ends is resumed from the last version seen; an
/// expired version (410) or a failure relists, and the differences from the cache are told as
/// changes, so handlers never miss a deletion.
public final class Informer<Item: Sendable>: Sendable {
    public let api: API
    /// The collection path (`/api/v1/pods`).
    public let path: String
    let query: [String: String]
    let decode: @Sendable (JSONValue) -> Item?
    let logger: Logger
    /// Whether the objects are kept (`get`, `items`); without, only their keys are, and a
    /// deletion's `old` is the deleted object as the watch sent it (none after a relist).
    let keeps: Bool
    struct State {
        var items: [String: Item] = [:]
        var keys = Set<String>()
        var synced = false
        var handlers: [@Sendable (Change<Item>) async -> Void] = []
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    let state = Mutex(State())

    public init(_ api: API, path: String, query: [String: String] = [:], keeps: Bool = true, logger: Logger = Logger(label: "switchyard.informer"),
                decode: @escaping @Sendable (JSONValue) -> Item?) {
        self.keeps = keeps
        self.api = api
        self.path = path
        self.query = query
        self.decode = decode
        self.logger = logger
    }

    /// Adds a handler (before `run`).
    public func onChange(_ h: @escaping @Sendable (Change<Item>) async -> Void) { state.withLock { $0.handlers.append(h) } }

    public func get(_ key: String) -> Item? { state.withLock { $0.items[key] } }
    public var items: [Item] { state.withLock { Array($0.items.values) } }
    public var count: Int { state.withLock { keeps ? $0.items.count : $0.keys.count } }
    public func filter(_ f: (Item) -> Bool) -> [Item] { state.withLock { $0.items.values.filter(f) } }
    public var hasSynced: Bool { state.withLock { $0.synced } }

    /// Returns once the first list is in the cache.
    public func waitForSync() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.synced { return true }
                s.waiting.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    static func key(_ o: JSONValue) -> String { o.key }

    func apply(_ key: String, _ new: Item?, deleted: Item? = nil) async {
        let keeps = self.keeps
        let (old, known, handlers) = state.withLock { s -> (Item?, Bool, [@Sendable (Change<Item>) async -> Void]) in
            if keeps {
                let old = s.items[key]
                s.items[key] = new
                return (old, old != nil, s.handlers)
            }
            let known = new == nil ? s.keys.remove(key) != nil : !s.keys.insert(key).inserted
            return (new == nil ? deleted : nil, known, s.handlers)
        }
        if !known && new == nil { return }
        for h in handlers { await h(Change(old: old, new: new, key: key)) }
    }

    /// Runs until cancelled.
    public func run() async {
        let keeps = self.keeps
        var version: String?
        var backoff = 0.5
        while !Task.isCancelled {
            do {
                if version == nil {
                    var listed: [String: Item] = [:]
                    var token: String?
                    repeat {
                        var q = query
                        q["limit"] = "500"
                        if let token { q["continue"] = token }
                        let page = try await api.list(path, query: q)
                        for o in page["items"]?.array ?? [] { if let x = decode(o) { listed[Self.key(o)] = x } }
                        if token == nil { version = page[path: ["metadata", "resourceVersion"]]?.string }
                        token = page[path: ["metadata", "continue"]]?.string
                    } while !(token ?? "").isEmpty
                    let gone = state.withLock { s in (keeps ? Set(s.items.keys) : s.keys).filter { listed[$0] == nil } }
                    for k in gone { await apply(k, nil) }
                    for (k, v) in listed { await apply(k, v) }
                    let waiting = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                        s.synced = true
                        defer { s.waiting.removeAll() }
                        return s.waiting
                    }
                    for c in waiting { c.resume() }
                }
                var q = query
                q["resourceVersion"] = version ?? "0"
                q["allowWatchBookmarks"] = "true"
                q["timeoutSeconds"] = "300"
                let events = try await api.transport.watch(path, query: q)
                backoff = 0.5
                for try await e in events {
                    let object = e["object"] ?? .null
                    switch e["type"]?.string ?? "" {
                    case "ERROR":
                        if object["code"]?.int == 410 { version = nil; break }
                        throw APIStatusError(code: Int(object["code"]?.int ?? 0), reason: object["reason"]?.string ?? "", message: object["message"]?.string ?? "")
                    case "ADDED", "MODIFIED": await apply(Self.key(object), decode(object))
                    case "DELETED": await apply(Self.key(object), nil, deleted: decode(object))
                    default: break
                    }
                    if let rv = object[path: ["metadata", "resourceVersion"]]?.string { version = rv }
                    if version == nil { break }
                }
            } catch {
                if Task.isCancelled { return }
                logger.debug("\(path): \(error); listing again in \(backoff) s")
                try? await Task.sleep(for: .milliseconds(Int(backoff * 1000)))
                backoff = min(backoff * 2, 30)
                version = nil
            }
        }
    }
}
