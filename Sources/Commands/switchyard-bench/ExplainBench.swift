import ArgumentParser
import Foundation
import IPTablesKit
import KubeAPI
import NetnsKit
import ProxyNFTables

/// `switchyard explain` over a big ruleset: the command as a user runs it (`--rules FILE`, the
/// iptables mode's render of N Services × 10 endpoints), against `iptables-save` of the same
/// rules loaded in a namespace (what one reads by hand instead); and one answer once the rules
/// are read, with the chains' index against trying every rule in order, in the same run.
struct ExplainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Measure `switchyard explain` on a ruleset of many Services, against iptables-save of it and against a walk without the index.")

    @Option(help: "Numbers of services (comma-separated).") var services = "1000,10000"
    @Option(help: "Endpoints per service.") var endpoints = 10
    @Option(help: "Runs of each command (the median is reported).") var repeats = 5
    @Option(help: "Packets walked in process, each to a random Service.") var queries = 1000
    @Option(help: "The switchyard binary.") var switchyard = ".build/release/switchyard"
    @Option(help: "The iptables-save to measure against: system, legacy or nft.") var iptablesBackend = "legacy"
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the baseline loads the rules in a network namespace") }
        guard FileManager.default.isExecutableFile(atPath: switchyard) else { throw ValidationError("--switchyard \(switchyard): not an executable") }
        let sizes = services.split(separator: ",").compactMap { Int($0) }
        guard !sizes.isEmpty else { throw ValidationError("--services: numbers, comma-separated") }
        let shims = try Bench.selectIPTables(iptablesBackend)
        defer { if let shims { try? FileManager.default.removeItem(atPath: shims) } }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-explain-bench-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        var report = "| services × endpoints | ruleset | `switchyard explain --rules` (command) | `iptables-save` (\(iptablesBackend)) of it | explain ÷ save | one answer, indexed (median of \(queries)) | one answer, every rule tried | indexed ÷ not |\n"
        report += "|---|---|---|---|---|---|---|---|\n"
        for n in sizes {
            let (svcs, slices) = Bench.objects(services: n, endpoints: endpoints)
            let json = dir.appendingPathComponent("all-\(n).json").path
            try RenderBench.writeJSON(svcs, slices, to: json)
            let rules = dir.appendingPathComponent("out-\(n).rules").path
            let render = try Sh.run([switchyard, "render", "--proxy-mode", "iptables", "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16",
                                     "--no-header", "-f", json], timeout: 600)
            guard render.status == 0 else { throw ValidationError("render: \(render.err)") }
            try render.out.write(toFile: rules, atomically: true, encoding: .utf8)
            let size = render.out.utf8.count
            let target = svcs[n / 2].spec.clusterIP ?? ""
            let command = try median((0..<repeats).map { _ in
                let start = Date()
                let r = try Sh.run([switchyard, "explain", "--rules", rules, "--src", "10.244.0.5", "--dst", "\(target):80"], timeout: 600)
                guard r.status == 0, r.out.contains("DNAT to") else { throw ValidationError("explain: \(r.err)\(r.out)") }
                return Date().timeIntervalSince(start)
            })
            let save = try Self.save(rules, repeats: repeats)
            // In process: the rules read once, then packets to random Services.
            var walk = try IPTablesWalk(render.out)
            let targets = (0..<queries).map { _ in IPTablesWalk.address(svcs.randomElement()!.spec.clusterIP ?? "")! }
            func perQuery() -> Double {
                var times: [Double] = []
                for t in targets {
                    let start = ContinuousClock.now
                    let outcomes = walk.walk(IPTablesWalk.Packet(source: IPTablesWalk.address("10.244.0.5")!, sourcePort: 40000, destination: t, port: 80, proto: "tcp"),
                                             fromNode: false)
                    precondition(outcomes.count == endpoints)
                    times.append(Double((ContinuousClock.now - start).components.attoseconds) / 1e18)
                }
                return median(times)
            }
            let indexed = perQuery()
            walk.indexed = false
            let scanned = perQuery()
            log("\(n) services: explain \(fmt(command)), iptables-save \(fmt(save)); one answer \(fmt(indexed)) indexed, \(fmt(scanned)) trying every rule")
            report += "| \(n) × \(endpoints) | \(String(format: "%.1f", Double(size) / 1e6)) MB | \(fmt(command)) | \(fmt(save)) | \(String(format: "%.2f×", command / save)) | "
                + "\(fmt(indexed)) | \(fmt(scanned)) | \(String(format: "%.3f×", indexed / scanned)) |\n"
        }
        // The nftables mode: the command on its render, against `nft list table` of the same
        // table loaded in a namespace; one answer in process.
        report += "\n| services × endpoints | nftables script | `switchyard explain --proxy-mode nftables --rules` (command) | `nft list table` of it | explain ÷ list | one answer in process (median of \(queries)) |\n"
        report += "|---|---|---|---|---|---|\n"
        for n in sizes {
            let (svcs, slices) = Bench.objects(services: n, endpoints: endpoints)
            let json = dir.appendingPathComponent("all-\(n).json").path
            try RenderBench.writeJSON(svcs, slices, to: json)
            let script = dir.appendingPathComponent("out-\(n).nft").path
            let render = try Sh.run([switchyard, "render", "--proxy-mode", "nftables", "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16",
                                     "-f", json], timeout: 600)
            guard render.status == 0 else { throw ValidationError("render: \(render.err)") }
            try render.out.write(toFile: script, atomically: true, encoding: .utf8)
            let target = svcs[n / 2].spec.clusterIP ?? ""
            let command = try median((0..<repeats).map { _ in
                let start = Date()
                let r = try Sh.run([switchyard, "explain", "--proxy-mode", "nftables", "--rules", script, "--src", "10.244.0.5", "--dst", "\(target):80"], timeout: 600)
                guard r.status == 0, r.out.contains("DNAT to") else { throw ValidationError("explain: \(r.err)\(r.out)") }
                return Date().timeIntervalSince(start)
            })
            let ns = "sybenchx\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
            try Sh.must(["ip", "netns", "add", ns])
            defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
            let load = try Sh.run(["ip", "netns", "exec", ns, "nft", "-f", script], timeout: 600)
            guard load.status == 0 else { throw ValidationError("nft -f: \(load.err)") }
            let list = try median((0..<repeats).map { _ in
                let start = Date()
                let r = try Sh.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "kube-proxy"], timeout: 600)
                guard r.status == 0 else { throw ValidationError("nft list: \(r.err)") }
                return Date().timeIntervalSince(start)
            })
            let walk = try NFTWalk(script: render.out)
            var times: [Double] = []
            for _ in 0..<queries {
                let t = svcs.randomElement()!.spec.clusterIP ?? ""
                let start = ContinuousClock.now
                let outcomes = try walk.walk(source: "10.244.0.5", destination: t, port: 80, proto: "tcp", fromNode: false, local: [])
                precondition(outcomes.count == endpoints)
                times.append(Double((ContinuousClock.now - start).components.attoseconds) / 1e18)
            }
            let one = median(times)
            log("\(n) services (nftables): explain \(fmt(command)), nft list \(fmt(list)); one answer \(fmt(one))")
            report += "| \(n) × \(endpoints) | \(String(format: "%.1f", Double(render.out.utf8.count) / 1e6)) MB | \(fmt(command)) | \(fmt(list)) | \(String(format: "%.2f×", command / list)) | \(fmt(one)) |\n"
        }
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// `iptables-save` of the rules, loaded with `iptables-restore --noflush` into a fresh namespace.
    static func save(_ rules: String, repeats: Int) throws -> Double {
        try RenderBench.restore(rules) { ns in
            try median((0..<repeats).map { _ in
                let start = Date()
                let r = try Sh.run(["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"], timeout: 600)
                guard r.status == 0 else { throw ValidationError("iptables-save: \(r.err)") }
                return Date().timeIntervalSince(start)
            })
        }.result
    }
}
