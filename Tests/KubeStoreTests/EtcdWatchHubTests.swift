import Foundation
import HTTPJSON
@testable import KubeStore
import NetnsKit
import Testing

@Suite("etcd store: watches share one etcd watch", .enabled(if: EtcdProcess.available, "needs Debian's etcd (etcd-server)"))
struct EtcdWatchHubTests {
    /// etcd's own count of the watches open on it.
    static func etcdWatchers(_ etcd: EtcdProcess) async throws -> Int {
        let r = try await HTTPJSONClient(url: etcd.url, peer: "etcd").rawRequest("GET", "/metrics")
        let text = String(decoding: r.body, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("etcd_debugging_mvcc_watcher_total ") }),
              let n = Double(line.split(separator: " ")[1]) else { throw StoreError.backend("no watcher count in etcd's metrics") }
        return Int(n)
    }

    @Test func manyWatchesOneEtcdWatchAndOlderRevisionsStillServed() async throws {
        let etcd = try EtcdProcess()
        let s = try EtcdStore(servers: [etcd.url])
        let before = try await Self.etcdWatchers(etcd)
        _ = try await s.create("/registry/configmaps/default/seed", value: data("0"))
        let old = try await s.currentRevision()
        _ = try await s.create("/registry/configmaps/default/a", value: data("1"))
        let from = try await s.currentRevision()

        // Fifty watches from the current revision: one etcd watch behind them all.
        var streams: [AsyncThrowingStream<StoreEvent, any Error>] = []
        for i in 0..<50 { streams.append(try await s.watch(prefix: i % 2 == 0 ? "/registry/configmaps/" : "/registry/", after: from)) }
        #expect(await s.hub.watcherCount == 50)
        #expect(try await Self.etcdWatchers(etcd) == before + 1)
        _ = try await s.create("/registry/secrets/default/b", value: data("2"))
        _ = try await s.update("/registry/configmaps/default/a", value: data("3"), expected: nil)
        for (i, stream) in streams.enumerated() {
            let events = try await next(i % 2 == 0 ? 1 : 2, of: stream)
            #expect(events.last?.kv.key == "/registry/configmaps/default/a" && events.last?.kind == .updated)
            #expect(events.last?.previous?.value == data("1"))
            if i % 2 == 1 { #expect(events.first?.kv.key == "/registry/secrets/default/b", "the wider prefix sees the secret") }
        }

        // From a revision the shared watch has passed: the kept events, then live ones.
        let late = try await s.watch(prefix: "/registry/", after: from)
        #expect(await s.hub.watcherCount == 51)
        _ = try await s.delete("/registry/secrets/default/b", expected: nil)
        let replayed = try await next(3, of: late)
        #expect(replayed.map(\.revision) == [from + 1, from + 2, from + 3])
        #expect(replayed.map(\.kind) == [.created, .updated, .deleted])

        // From before the shared watch began: a watch of its own on etcd, replaying the log.
        let older = try await s.watch(prefix: "/registry/configmaps/", after: old)
        #expect(await s.hub.watcherCount == 51)
        #expect(try await next(2, of: older).map(\.revision) == [old + 1, from + 2])
        // Counted once its events came: etcd registers a watch after the request that opens it.
        #expect(try await Self.etcdWatchers(etcd) == before + 2)

        // Once every watch has ended, the shared one is closed.
        streams.removeAll()
        _ = consume late
        _ = consume older
        for _ in 0..<200 where await s.hub.watcherCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await s.hub.watcherCount == 0)
        var left = -1
        for _ in 0..<200 {
            left = try await Self.etcdWatchers(etcd)
            if left == before { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(left == before, "no watch is left open on etcd")
    }

    /// With two events kept, older ones leave the shared watch's memory: a watch from before them
    /// goes to etcd, one from within them is served from memory, and nothing is skipped either way.
    @Test func eventsBeyondWhatIsKeptComeFromEtcd() async throws {
        let etcd = try EtcdProcess()
        let s = try EtcdStore(servers: [etcd.url], keptEvents: 2)
        let start = try await s.currentRevision()
        let holder = try await s.watch(prefix: "/registry/", after: start)   // opens the shared watch
        #expect(await s.hub.watcherCount == 1)
        for i in 1...7 { _ = try await s.create("/registry/configmaps/default/c\(i)", value: data("\(i)")) }
        #expect(try await next(7, of: holder).map(\.revision) == Array((start + 1)...(start + 7)))
        // Five kept at most (twice two, then cut to two): the first events are gone from memory.
        let old = try await s.watch(prefix: "/registry/configmaps/", after: start + 1)
        #expect(await s.hub.watcherCount == 1, "too old for the shared watch: a watch of its own")
        #expect(try await next(6, of: old).map(\.revision) == Array((start + 2)...(start + 7)))
        let recent = try await s.watch(prefix: "/registry/configmaps/", after: start + 6)
        #expect(await s.hub.watcherCount == 2)
        _ = try await s.create("/registry/configmaps/default/c8", value: data("8"))
        #expect(try await next(2, of: recent).map(\.revision) == [start + 7, start + 8])
    }
}
