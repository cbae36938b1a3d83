import Foundation
import KubeAPI
import Logging

/// What an informer tells its owner.
public enum InformerEvent: Sendable {
    /// The whole set, after a (re)list: anything not in it is gone.
    case replace([JSONValue])
    case upsert(JSONValue)
    case delete(JSONValue)
}

/// The objects of one list, by reference: whoever holds it last may empty it item by item.
public final class Listing<Item: Sendable>: @unchecked Sendable {
    public var items: [Item]
    public init(_ items: [Item]) { self.items = items }
}

/// List, then watch from the list's resourceVersion; relist when the server says the version
/// expired (410), re-watch from the last seen version when a watch ends, and back off
/// (0.5 s doubling to 30 s) while the server cannot be reached.
public struct Informer: Sendable {
    public let client: KubeClient
    /// The collection path (`/api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`).
    public let path: String
    public let logger: Logger
    /// Objects per list request (client-go's reflector asks for 500).
    public var pageSize = 500

    public init(client: KubeClient, path: String, logger: Logger = Logger(label: "switchyard.informer")) {
        self.client = client
        self.path = path
        self.logger = logger
    }

    /// Runs until cancelled, handing every change to `handle` in order.
    public func run(_ handle: @Sendable (InformerEvent) async -> Void) async {
        await run(mapListed: { $0 }, replace: { await handle(.replace($0.items)) }, watched: handle)
    }

    /// As `run(_:)`, with each listed object mapped (decoded; nil leaves it out) as its page
    /// arrives: a relist of 10,000 objects is then never held as parsed JSON all at once.
    /// `replace` gets the whole mapped list after each (re)list, as the only reference to it, so
    /// the receiver may take the items out one by one and free each as it goes; `watched` gets
    /// the upserts and deletions that follow.
    public func run<Item: Sendable>(mapListed: @Sendable (JSONValue) -> Item?,
                                    replace: @Sendable (Listing<Item>) async -> Void,
                                    watched: @Sendable (InformerEvent) async -> Void) async {
        var backoff = 0.5
        var failures = 0
        var version: String?
        while !Task.isCancelled {
            do {
                if version == nil {
                    // In pages, as client-go's reflector lists: no response of every object at once
                    // (its body and its parse) has to fit in memory beside the result.
                    var items: [Item] = []
                    var token: String?
                    repeat {
                        var q = ["limit": String(pageSize)]
                        if let token { q["continue"] = token }
                        let r = try await client.request("GET", path, query: q)
                        guard r.status == 200, let page = r.body["items"]?.array else {
                            throw ClientError(status: r.status, description: "list \(path): \(r.status) \(r.body["message"]?.string ?? "")")
                        }
                        items.reserveCapacity(items.count + page.count)
                        for o in page { if let x = mapListed(o) { items.append(x) } }
                        if token == nil { version = r.body[path: ["metadata", "resourceVersion"]]?.string }
                        token = r.body[path: ["metadata", "continue"]]?.string
                    } while !(token ?? "").isEmpty
                    let listing = Listing(items)
                    items = []
                    await replace(listing)
                }
                let events = try await client.watch(path, query: ["resourceVersion": version ?? "0", "allowWatchBookmarks": "true",
                                                                  "timeoutSeconds": "300"])
                if failures > 0 {
                    logger.info("\(path): connected to the API server again after \(failures) failed attempt(s); listed and watching")
                    failures = 0
                }
                backoff = 0.5
                for try await e in events {
                    let type = e["type"]?.string ?? ""
                    let object = e["object"] ?? .null
                    if type == "ERROR" {
                        if object["code"]?.int == 410 {
                            logger.info("\(path): resourceVersion \(version ?? "") expired; listing again")
                            version = nil
                            break
                        }
                        throw ClientError(status: Int(object["code"]?.int ?? 0), description: "watch \(path): \(object["message"]?.string ?? "")")
                    }
                    if let rv = object[path: ["metadata", "resourceVersion"]]?.string { version = rv }
                    switch type {
                    case "ADDED", "MODIFIED": await watched(.upsert(object))
                    case "DELETED": await watched(.delete(object))
                    default: break   // BOOKMARK: the version moved on
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if let e = error as? ClientError, e.status == 410 { version = nil; continue }
                failures += 1
                RetryLog.shared.warn(logger, error: "\(error)", path: path, retryIn: backoff)
                try? await Task.sleep(for: .milliseconds(Int(backoff * 1000)))
                backoff = min(backoff * 2, 30)
                version = nil   // relist: events may have been missed
            }
        }
    }
}

/// One line per failure for all the informers of a process: when the API server is down, every
/// informer fails at once with the same error, and the user needs to hear it once, with when the
/// next try is.
final class RetryLog: @unchecked Sendable {
    static let shared = RetryLog()
    private let lock = NSLock()
    private var last: (message: String, at: ContinuousClock.Instant)?

    func warn(_ logger: Logger, error: String, path: String, retryIn seconds: Double) {
        // Connection failures name the server, not the path; other errors keep their path.
        let message = error.hasPrefix("cannot connect") ? error : "\(path): \(error)"
        let now = ContinuousClock.now
        let repeated = lock.withLock { () -> Bool in
            if let last, last.message == message, now - last.at < .milliseconds(250) { return true }
            last = (message, now)
            return false
        }
        guard !repeated else { return }
        logger.warning("\(message); next try at \(Self.clock(in: seconds)) (in \(seconds) s)")
    }

    /// Local `HH:MM:SS`, `seconds` from now, without Foundation's date formatters (they load ICU
    /// into a proxy that otherwise never needs it).
    static func clock(in seconds: Double) -> String {
        var t = time_t(Date().timeIntervalSince1970 + seconds)
        var fields = tm()
        localtime_r(&t, &fields)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(two(fields.tm_hour)):\(two(fields.tm_min)):\(two(fields.tm_sec))"
    }
}
