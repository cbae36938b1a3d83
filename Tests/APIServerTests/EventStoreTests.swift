import Foundation
import Testing
import KubeAPI
import KubeStore
@testable import APIServer

/// Events in a store of their own, read and watched through the API as before, and expired.
@Suite struct EventStoreTests {
    @Test func eventsLiveInTheirOwnStoreAndExpire() async throws {
        let main = try SQLiteStore(path: ":memory:"), events = try SQLiteStore(path: ":memory:")
        // An event written before the route existed is moved.
        _ = try await main.create(EventExpiry.prefix + "default/old", value: Data(#"{"metadata":{"name":"old","namespace":"default","creationTimestamp":"2020-01-01T00:00:00Z"},"reason":"Old"}"#.utf8))
        let store = RoutedStore(main: main, routes: [(EventExpiry.prefix, events)])
        #expect(try await store.migrate() == 1)
        #expect(try await main.get(EventExpiry.prefix + "default/old") == nil)
        let h = APIHandler(store: store)
        try await h.bootstrap()
        let mainBefore = try await main.currentRevision()
        let fresh: JSONValue = ["metadata": ["name": "fresh"], "involvedObject": ["kind": "Pod", "name": "p", "namespace": "default"],
                                "reason": "Fresh", "message": "m", "type": "Normal", "lastTimestamp": .string(RFC3339.format(Date().timeIntervalSince1970))]
        #expect(await h.post("/api/v1/namespaces/default/events", fresh).code == 201)
        // Written to the events' store only; listed, with that store's revision, through both versions.
        #expect(try await main.currentRevision() == mainBefore)
        #expect(try await events.get(EventExpiry.prefix + "default/fresh") != nil)
        let list = await h.get("/api/v1/namespaces/default/events").json
        #expect(Set(list?["items"]?.array?.compactMap { $0[path: ["metadata", "name"]]?.string } ?? []) == ["old", "fresh"])
        #expect(list?[path: ["metadata", "resourceVersion"]]?.string == String(try await events.currentRevision()))
        #expect(await h.get("/apis/events.k8s.io/v1/namespaces/default/events/fresh").json?["note"] == "m")
        // The old one is past an hour's TTL; the fresh one is not.
        #expect(try await EventExpiry.sweep(store, ttl: 3600) == 1)
        #expect(await h.get("/api/v1/namespaces/default/events/old").code == 404)
        #expect(await h.get("/api/v1/namespaces/default/events/fresh").code == 200)
    }
}
