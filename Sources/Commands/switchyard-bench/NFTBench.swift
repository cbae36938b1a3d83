import ArgumentParser
import Foundation
import KubeAPI
import NetnsKit
import ProxyIPTables
import ProxyNFTables
import ProxyIPVS
import Netlink
import ProxySeam
import HostOS
import IPTablesKit

/// The nftables mode against the iptables mode, both programming a fresh network
/// namespace in the same run: full sync, and one endpoint change.
struct NFTBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nftables",
        abstract: "Measure the nftables mode against the iptables mode in throw-away network namespaces.")

    @Option(help: "Service counts to measure (comma-separated).") var services = "1000,10000"
    @Option(help: "Endpoints per service.") var endpoints = 10
    @Option(help: "Repetitions of the one-endpoint change.") var repeats = 21
    @Flag(help: "Skip the iptables mode (its full sync of 10,000 services takes minutes here).") var skipIptables = false
    @Option(help: "Measure the iptables mode only up to this many services.") var iptablesUpTo = Int.max
    @Flag(help: "Also time upstream's way: the rendered script through `nft -f` as one transaction.") var nftFile = false
    @Option(help: "Write the markdown results here too.") var out: String?
    @Flag(help: "Time small transactions of each kind against the loaded table (diagnostic).") var probe = false
    @Option(help: "Changes per preparatory transaction of a full sync.") var slice = 20_000
    @Flag(help: "Also measure the IPVS mode (needs a kernel with IPVS: run it under netlab/guest here).") var withIpvs = false
    @Flag(help: "Measure the IPVS mode only (implies --with-ipvs; diagnostic).") var onlyIpvs = false
    @Option(help: "The iptables the iptables mode uses: system (whatever iptables-restore is here), legacy or nft.")
    var iptablesBackend = "system"

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the benchmark uses network namespaces") }
        let shims = try Bench.selectIPTables(iptablesBackend)
        defer { if let shims { try? FileManager.default.removeItem(atPath: shims) } }
        var report = "| figure | measured | iptables mode (same run) | ratio | target |\n|---|---|---|---|---|\n"
        var ipvsResults: [(Int, (full: Double, change: Double, p90: Double))] = []
        for n in services.split(separator: ",").compactMap({ Int($0) }) {
            let (svcs, slices) = Bench.objects(services: n, endpoints: endpoints)
            var tracker = ChangeTracker(node: NodeInfo(name: "node-a"), serviceCIDRs: [CIDR("10.96.0.0/12")!])
            for s in svcs { tracker.update(service: s) }
            for s in slices { tracker.update(slice: s) }
            let (snap, _) = tracker.snapshot()
            let victimIndex = n / 2

            // nftables mode, each layout.
            var results: [(NFTablesLayout, (full: Double, change: Double, p90: Double))] = []
            for layout in NFTablesLayout.allCases where !onlyIpvs {
                let r = try await measure(n: n, snap: snap, tracker: tracker, slice: slices[victimIndex]) { ns in
                    var o = NFTablesOptions()
                    o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
                    o.layout = layout
                    let p = NFTablesProxier(nft: try SystemNFTables(netns: "/var/run/netns/\(ns)"), options: o)
                    p.prepareSliceSize = slice
                    return p
                }
                log("nftables (\(layout.rawValue) layout) at \(n): full sync \(fmt(r.full)), endpoint change median \(fmt(r.change)) (p90 \(fmt(r.p90)))")
                results.append((layout, r))
            }
            if withIpvs || onlyIpvs {
                let r = try await measure(n: n, snap: snap, tracker: tracker, slice: slices[victimIndex]) { ns in
                    try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])   // real servers must be unicast in the namespace
                    var o = IPVSOptions()
                    o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
                    return IPVSProxier(ipvs: try IPVS(in: .named(ns)), links: try RouteHandle(in: .named(ns)),
                                       ipt: SystemIPTables(runner: CommandRunner(netns: ns)),
                                       ipset: SystemIPSet(runner: CommandRunner(netns: ns)), options: o)
                }
                log("ipvs at \(n): full sync \(fmt(r.full)), endpoint change median \(fmt(r.change)) (p90 \(fmt(r.p90)))")
                ipvsResults.append((n, r))
            }
            var ipt: (full: Double, change: Double, p90: Double)?
            if !skipIptables && !onlyIpvs && n <= iptablesUpTo {
                ipt = try await measure(n: n, snap: snap, tracker: tracker, slice: slices[victimIndex]) { ns in
                    var o = IPTablesOptions()
                    o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
                    return IPTablesProxier(ipt: SystemIPTables(runner: CommandRunner(netns: ns)), options: o)
                }
                log("iptables at \(n): full sync \(fmt(ipt!.full)), endpoint change median \(fmt(ipt!.change))")
            }
            let iptFull = ipt.map { fmt($0.full) } ?? "not measured"
            let iptChange = ipt.map { fmt($0.change) } ?? "not measured"
            if let (_, r) = ipvsResults.last, ipvsResults.last?.0 == n {
                let r1 = ipt.map { String(format: "%.3f×", r.full / $0.full) } ?? ""
                let r2 = ipt.map { String(format: "%.4f×", r.change / $0.change) } ?? ""
                let nm = results.first { $0.0 == .maps }?.1
                report += "| IPVS mode: full sync, \(n) services × \(endpoints) endpoints, fresh namespace | \(fmt(r.full)) | \(iptFull) | \(r1)\(nm.map { String(format: "; %.2f× the maps layout", r.full / $0.full) } ?? "") | |\n"
                report += "| IPVS mode: one endpoint change at \(n) services (median of \(repeats); p90 \(fmt(r.p90))) | \(fmt(r.change)) | \(iptChange) | \(r2)\(nm.map { String(format: "; %.2f× the maps layout", r.change / $0.change) } ?? "") | |\n"
            }
            for (layout, nft) in results {
                let r1 = ipt.map { String(format: "%.3f×", nft.full / $0.full) } ?? ""
                let r2 = ipt.map { String(format: "%.4f×", nft.change / $0.change) } ?? ""
                report += "| full sync, \(n) services × \(endpoints) endpoints, fresh namespace, \(layout.rawValue) layout | \(fmt(nft.full)) | \(iptFull) | \(r1) | < 5 s |\n"
                report += "| one endpoint change at \(n) services, \(layout.rawValue) layout (median of \(repeats); p90 \(fmt(nft.p90))) | \(fmt(nft.change)) | \(iptChange) | \(r2) | < 5 ms, flat |\n"
            }
            if nftFile {
                var o = NFTablesOptions()
                o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
                let script = NFTablesProxier(fake: FakeNFTables(), options: o).render(snap)
                let t = try inFreshNamespace { ns in
                    let s = Date()
                    try CommandRunner(netns: ns).run(["nft", "-f", "-"], input: script, timeout: .seconds(900))
                    return Date().timeIntervalSince(s)
                }
                log("nft -f of the rendered script (one transaction) at \(n): \(fmt(t))")
                report += "| upstream's way: the upstream layout as one `nft -f` transaction, \(n) services | \(fmt(t)) | | \(String(format: "%.3f×", results[0].1.full / t)) (ours / nft -f) | |\n"
            }
        }
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// Full sync into a fresh namespace, then `repeats` one-endpoint changes, each
    /// timed end to end (event → snapshot → plan → kernel).
    func measure(n: Int, snap: ProxySnapshot, tracker: ChangeTracker, slice: EndpointSlice,
                 _ make: @escaping (String) throws -> any ProxyBackend) async throws -> (full: Double, change: Double, p90: Double) {
        let ns = "sybn\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let backend = try make(ns)
        var tracker = tracker
        let s = Date()
        let first = try await backend.sync(SyncRequest(snapshot: snap, changedServices: nil))
        let full = Date().timeIntervalSince(s)
        precondition(first.full)
        if probe, let p = backend as? NFTablesProxier {
            for (what, t) in try p.probe() { log("  probe: \(what): \(fmt(t))") }
        }
        if let p = backend as? IPVSProxier {
            let t = p.lastTimings
            log("  full sync: ipsets and iptables rules \(fmt(t.rules)) of \(fmt(t.total))")
        }
        if let p = backend as? NFTablesProxier {
            log("  full sync: planning \(fmt(p.lastTimings.plan)), kernel \(fmt(p.lastTimings.kernel)) in \(p.lastTimings.transactions) transactions: \(p.lastTransactionSeconds.map(fmt).joined(separator: ", "))")
        }
        var sl = slice
        var times: [Double] = []
        for i in 0..<repeats {
            sl.endpoints![0].addresses = ["10.255.\(i / 250).\(i % 250 + 1)"]
            let c = Date()
            tracker.update(slice: sl)
            let (s2, changed) = tracker.snapshot()
            let outcome = try await backend.sync(SyncRequest(snapshot: s2, changedServices: changed))
            times.append(Date().timeIntervalSince(c))
            precondition(!outcome.full, "expected a partial sync")
            if let p = backend as? NFTablesProxier, i == repeats - 1 {
                log("  last change: snapshot+sync \(fmt(times.last!)), planning \(fmt(p.lastTimings.plan)), kernel \(fmt(p.lastTimings.kernel))")
            }
        }
        let sorted = times.sorted()
        return (full, median(times), sorted[min(sorted.count - 1, sorted.count * 9 / 10)])
    }

    func inFreshNamespace<T>(_ body: (String) throws -> T) throws -> T {
        let ns = "sybf\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        return try body(ns)
    }
}
