import ArgumentParser
import EtcdClient
import Foundation
import KubeAPI
import KubeClient
import KubeStore
import NetnsKit
import Synchronization

/// The API server on etcd: ConfigMaps created through it with etcd spoken to over gRPC against
/// the same writes over etcd's JSON gateway (fresh etcd each round, the rounds alternating), the
/// store alone over each, and etcd's own put rate (raw Put RPCs, as etcd's `benchmark put`
/// sends them; Debian does not ship that tool). Then failover: three members, writers through
/// the server without pause, and the leader killed again and again: the time from each kill to
/// the first answer to a write sent after it, and whether every acknowledged write is there at
/// the end.
struct EtcdBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd",
        abstract: "Writes through the server on etcd over gRPC vs the JSON gateway vs etcd's own put rate; failover when etcd's leader is killed.")

    @Option(help: "ConfigMaps written per round.") var writes = 4000
    @Option(help: "Writes in flight.") var writers = 32
    @Option(help: "Rounds per transport (the median is reported).") var rounds = 3
    @Option(help: "Leader kills in the failover run.") var kills = 10
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    static func configMap(_ i: Int) -> JSONValue {
        ["metadata": ["name": .string("cm-\(i)")], "data": ["key": .string("value-\(i)"), "other": .string(String(repeating: "x", count: 120))]]
    }

    /// `body(i)` for i below `count`, `writers` at a time; the rate per second.
    func rate(_ count: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
        let start = Date()
        try await byWriters(writers, count, body)
        return Double(count) / Date().timeIntervalSince(start)
    }

    /// Creates through a server on a fresh etcd, spoken to over `transport`.
    func throughServer(_ transport: String) async throws -> Double {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let server = try await BenchServer.start(binary: try switchyardBinary(switchyard), etcd: etcd,
                                                 arguments: ["--disable-scheduler", "--disable-controller-manager", "--etcd-transport", transport])
        defer { server.stop() }
        let client = server.client
        _ = try await client.request("POST", "/api/v1/namespaces", body: ["metadata": ["name": "bench"]])
        return try await rate(writes) { i in
            let r = try await client.request("POST", "/api/v1/namespaces/bench/configmaps", body: Self.configMap(i))
            guard r.status == 201 else { throw ValidationError("create: \(r.status) \(r.body.text())") }
        }
    }

    /// The store alone over `transport`, in this process.
    func storeAlone(_ transport: String) async throws -> Double {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let t: any EtcdTransport = transport == "grpc" ? try EtcdGRPCTransport(endpoints: [etcd.url]) : try EtcdGatewayTransport(endpoints: [etcd.url])
        defer { t.close() }
        let store = try EtcdStore(transport: t)
        let value = Self.configMap(0).serialized()
        return try await rate(writes) { i in _ = try await store.create("/registry/configmaps/bench/cm-\(i)", value: Data(value)) }
    }

    /// etcd's own rate: plain Puts over gRPC.
    func etcdPuts() async throws -> Double {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let t = try EtcdGRPCTransport(endpoints: [etcd.url])
        defer { t.close() }
        let value = Data(Self.configMap(0).serialized())
        return try await rate(writes) { i in
            var p = Etcdserverpb_PutRequest()
            p.key = Data("/registry/configmaps/bench/cm-\(i)".utf8)
            p.value = value
            _ = try await t.put(p, at: 0)
        }
    }

    /// The writers' record, and the flag that stops them.
    final class Log: Sendable {
        let acked = Mutex<[(name: String, sent: Date, at: Date)]>([])
        let failed = Mutex<[(name: String, at: Date, error: String)]>([])
        let stop = Atomic<Bool>(false)
        func ack(_ n: String, sent: Date) { acked.withLock { $0.append((n, sent, Date())) } }
        func fail(_ n: String, _ e: String) { failed.withLock { $0.append((n, Date(), e)) } }
        /// The first answer to a write sent after `t`.
        func firstAck(sentAfter t: Date) -> Date? { acked.withLock { $0.filter { $0.sent > t }.map(\.at).min() } }
    }

    struct Failover { var gaps: [Double] = []; var acked = 0; var lost = 0; var failed = 0 }

    func failover() async throws -> Failover {
        let etcd = try EtcdProcess(members: 3)
        defer { etcd.stop() }
        let server = try await BenchServer.start(binary: try switchyardBinary(switchyard), etcd: etcd,
                                                 arguments: ["--disable-scheduler", "--disable-controller-manager"])
        defer { server.stop() }
        let client = server.client
        _ = try await client.request("POST", "/api/v1/namespaces", body: ["metadata": ["name": "bench"]])
        let log = Log()
        // Eight writers without pause, each its own names.
        let writing = (0..<8).map { w in
            Task {
                var i = 0
                while !log.stop.load(ordering: .relaxed) {
                    let name = "w\(w)-\(i)"
                    i += 1
                    do {
                        let sent = Date()
                        let r = try await client.request("POST", "/api/v1/namespaces/bench/configmaps", body: ["metadata": ["name": .string(name)], "data": ["n": .string(name)]])
                        if r.status == 201 { log.ack(name, sent: sent) } else { log.fail(name, "\(r.status) \(r.body["message"]?.string ?? "")") }
                    } catch {
                        log.fail(name, "\(error)")
                    }
                }
            }
        }
        var result = Failover()
        let probe = try EtcdStore(servers: etcd.urls)
        for k in 0..<kills {
            try await Task.sleep(for: .seconds(2))
            // The leader, as the members report it.
            let statuses = await probe.memberStatus()
            let leaderID = statuses.compactMap { $0.status?.leader }.first ?? 0
            guard let leader = statuses.firstIndex(where: { $0.status?.header.memberID == leaderID }) else {
                throw ValidationError("no leader among \(statuses.map(\.endpoint))")
            }
            let killed = Date()
            etcd.kill(member: leader)
            var back: Date?
            for _ in 0..<1000 where back == nil {
                try await Task.sleep(for: .milliseconds(10))
                back = log.firstAck(sentAfter: killed)
            }
            guard let back else { throw ValidationError("no write sent after killing member \(leader) was answered within 10 s") }
            let gap = back.timeIntervalSince(killed)
            result.gaps.append(gap)
            FileHandle.standardError.write(Data("bench: kill \(k + 1): member \(leader) (leader) killed; writes answered again after \(fmt(gap))\n".utf8))
            try etcd.restart(member: leader)
        }
        try await Task.sleep(for: .seconds(1))
        log.stop.store(true, ordering: .relaxed)
        for t in writing { await t.value }
        // Every acknowledged write is there.
        let r = try await client.request("GET", "/api/v1/namespaces/bench/configmaps")
        let present = Set((r.body["items"]?.array ?? []).compactMap { $0[path: ["metadata", "name"]]?.string })
        let acked = log.acked.withLock { $0 }
        result.acked = acked.count
        result.lost = acked.filter { !present.contains($0.name) }.count
        let failed = log.failed.withLock { $0 }
        result.failed = failed.count
        for f in failed.prefix(5) { FileHandle.standardError.write(Data("bench: failed write \(f.name): \(f.error)\n".utf8)) }
        return result
    }

    func run() async throws {
        guard EtcdProcess.available else { throw ValidationError("needs Debian's etcd (etcd-server)") }
        var grpc: [Double] = [], gateway: [Double] = []
        for r in 0..<rounds {
            grpc.append(try await throughServer("grpc"))
            gateway.append(try await throughServer("gateway"))
            FileHandle.standardError.write(Data("bench: round \(r + 1): through the server, gRPC \(Int(grpc.last!)) writes/s, gateway \(Int(gateway.last!)) writes/s\n".utf8))
        }
        let aloneGRPC = try await storeAlone("grpc"), aloneGateway = try await storeAlone("gateway"), puts = try await etcdPuts()
        FileHandle.standardError.write(Data("bench: the store alone: gRPC \(Int(aloneGRPC)), gateway \(Int(aloneGateway)); etcd's puts \(Int(puts)) /s\n".utf8))
        let f = try await failover()
        let gaps = f.gaps.sorted()
        let p99 = gaps.isEmpty ? 0 : switchyard_bench.p99(gaps)
        let mg = median(grpc), mw = median(gateway)
        var report = "| figure | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n"
        report += "| ConfigMaps created through the server on etcd over gRPC (\(writers) writers, \(writes) per round, median of \(rounds)) | \(Int(mg))/s | the same over etcd's JSON gateway: \(Int(mw))/s | \(String(format: "%.2f×", mg / mw)) | ≥ 1.5× |\n"
        report += "| the same, against etcd's own put rate (raw Put RPCs, \(writers) in flight) | \(Int(mg))/s | \(Int(puts))/s | \(String(format: "%.2f×", mg / puts)) | the limit |\n"
        report += "| the store alone (conditional creates, in process) over gRPC | \(Int(aloneGRPC))/s | over the gateway: \(Int(aloneGateway))/s | \(String(format: "%.2f×", aloneGRPC / aloneGateway)) | reported |\n"
        report += "| etcd's leader killed (3 members, \(kills) times) → the first answer to a write sent after it, p99 (median \(fmt(median(gaps.isEmpty ? [0] : gaps)))) | \(fmt(p99)) | etcd's election timeout: 1 s | \(String(format: "%.2f×", p99 / 1.0)) | reported |\n"
        report += "| acknowledged writes missing afterwards (of \(f.acked)); writes answered with an error | \(f.lost); \(f.failed) | | | 0 |\n"
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
