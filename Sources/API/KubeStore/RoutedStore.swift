import Foundation

/// Several stores as one: keys under a route's prefix live in that route's store, every other
/// key in the main one — as kube-apiserver's `--etcd-servers-overrides` puts a resource (events,
/// typically) on its own etcd, so its writes do not queue behind the others'. Each store keeps
/// its own revisions: a resourceVersion is only compared with those of the same resource, as
/// upstream's are across overrides. A list or watch is answered by the store holding its prefix;
/// one broader than a route's prefix (no caller makes one) sees the main store only.
public final class RoutedStore: Store {
    public let main: any Store
    public let routes: [(prefix: String, store: any Store)]

    public init(main: any Store, routes: [(prefix: String, store: any Store)]) {
        self.main = main
        self.routes = routes
    }

    /// The store holding `key` (or every key under a prefix that starts with a route's).
    public func store(for key: String) -> any Store {
        routes.first { key.hasPrefix($0.prefix) }?.store ?? main
    }

    public func currentRevision() async throws -> Int64 { try await main.currentRevision() }
    public func currentRevision(prefix: String) async throws -> Int64 { try await store(for: prefix).currentRevision() }
    public func get(_ key: String) async throws -> KeyValue? { try await store(for: key).get(key) }
    public func create(_ key: String, value: Data) async throws -> KeyValue { try await store(for: key).create(key, value: value) }
    public func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue {
        try await store(for: key).update(key, value: value, expected: expected)
    }
    public func delete(_ key: String, expected: Int64?) async throws -> KeyValue { try await store(for: key).delete(key, expected: expected) }
    public func list(prefix: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage {
        try await store(for: prefix).list(prefix: prefix, after: after, limit: limit, revision: revision)
    }
    public func count(prefix: String, after: String?, revision: Int64?) async throws -> Int {
        try await store(for: prefix).count(prefix: prefix, after: after, revision: revision)
    }
    public func watch(prefix: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        try await store(for: prefix).watch(prefix: prefix, after: revision)
    }
    public func compact(through revision: Int64) async throws { try await main.compact(through: revision) }

    /// Moves what the main store holds under each route's prefix into the route's store (a data
    /// directory written before the route existed); returns how many keys moved.
    @discardableResult
    public func migrate() async throws -> Int {
        var moved = 0
        for (prefix, target) in routes {
            let page = try await main.list(prefix: prefix, after: nil, limit: 0, revision: nil)
            for kv in page.items {
                do { _ = try await target.create(kv.key, value: kv.value) } catch StoreError.exists(_) {}
                _ = try? await main.delete(kv.key, expected: nil)
                moved += 1
            }
        }
        return moved
    }
}
