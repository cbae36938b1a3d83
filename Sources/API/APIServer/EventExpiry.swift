import Foundation
import KubeAPI
import KubeStore

/// Events expire: kube-apiserver gives each event an etcd lease of `--event-ttl` (1 h) from its
/// last write; here the server sweeps them.
public enum EventExpiry {
    /// Where core Events (and so events.k8s.io ones) live in the store.
    public static let prefix = "/registry/core/events/"

    /// Deletes the events whose last occurrence (`lastTimestamp`, `series.lastObservedTime`,
    /// `eventTime`, else their creation) is older than `ttl` seconds; returns how many went.
    public static func sweep(_ store: any Store, ttl: Double, now: Date = Date()) async throws -> Int {
        var removed = 0
        var after: String?
        repeat {
            let page = try await store.list(prefix: prefix, after: after, limit: 500, revision: nil)
            for kv in page.items {
                guard let o = try? JSONValue.parse(kv.value) else { continue }
                let times = [o["lastTimestamp"], o[path: ["series", "lastObservedTime"]], o["eventTime"], o[path: ["metadata", "creationTimestamp"]]]
                    .compactMap { $0?.string.flatMap(RFC3339.seconds) }
                guard let last = times.max(), now.timeIntervalSince1970 - last > ttl else { continue }
                if (try? await store.delete(kv.key, expected: kv.modRevision)) != nil { removed += 1 }
            }
            after = page.continueAfter
        } while after != nil
        return removed
    }
}
