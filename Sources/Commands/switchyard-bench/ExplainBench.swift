import ArgumentParser
import Foundation
import IPTablesKit
import KubeAPI
import NetnsKit
import ProxyIPVS
import ProxyNFTables
import ProxySeam
import ProxyUserspace

/// `switchyard explain` over a big ruleset: the command as a user runs it (`--rules FILE`, the
/// iptables mode's render of N Services × 10 endpoints), against `iptables-save` of the same
/// rules loaded in a namespace (what one reads by hand instead); and one answer once the rules
/// are read, with the chains' index against trying every rule in order, in the same run. The
/// nftables, IPVS and userspace modes the same way, each against what its own tool prints.
struct ExplainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Measure `switchyard explain` on many Services in each mode, against what the mode's own tool prints of the same state and (iptables) a walk without the index.")

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
        // The nftables mode: the command on its render, against `nft list table` of the same
        // table loaded in a namespace; one answer in process.
        var nftReport = "| services × endpoints | nftables script | `switchyard explain --proxy-mode nftables --rules` (command) | `nft list table` of it | explain ÷ list | one answer in process (median of \(queries)) |\n"
        nftReport += "|---|---|---|---|---|---|\n"
        // The IPVS mode: the command on its render (the virtual servers, the ipsets, the rules),
        // against `ipset save` of its sets loaded in a namespace (this kernel has no IPVS for
        // `ipvsadm -Ln`); one answer in process.
        var ipvsReport = "| services × endpoints | render | `switchyard explain --proxy-mode ipvs --rules` (command) | `ipset save` of its sets | explain ÷ save | one answer in process (median of \(queries)) |\n"
        ipvsReport += "|---|---|---|---|---|---|\n"
        // The userspace mode: the command on its render (the portal rules, the listeners named
        // in its comments), against `iptables-save` of the portal rules loaded in a namespace;
        // one answer in process.
        var userspaceReport = "| services × endpoints | render | `switchyard explain --proxy-mode userspace --rules` (command) | `iptables-save` (\(iptablesBackend)) of its portal rules | explain ÷ save | one answer in process (median of \(queries)) |\n"
        userspaceReport += "|---|---|---|---|---|---|\n"
        for n in sizes {
            let (svcs, slices) = Bench.objects(services: n, endpoints: endpoints)
            let json = dir.appendingPathComponent("all-\(n).json").path
            try RenderBench.writeJSON(svcs, slices, to: json)
            let target = svcs[n / 2].spec.clusterIP ?? ""
            /// The mode's render of the objects, written to `file` too.
            func render(_ mode: String, _ file: String) throws -> String {
                let r = try Sh.run([switchyard, "render", "--proxy-mode", mode, "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16",
                                    "--no-header", "-f", json], timeout: 600)
                guard r.status == 0 else { throw ValidationError("render: \(r.err)") }
                try r.out.write(toFile: file, atomically: true, encoding: .utf8)
                return r.out
            }
            /// `switchyard explain` of the mode on `file` as a command, to the Service in the middle: the median of `repeats`.
            func command(_ mode: String, _ file: String) throws -> Double {
                try median((0..<repeats).map { _ in
                    let start = Date()
                    let r = try Sh.run([switchyard, "explain", "--proxy-mode", mode, "--rules", file, "--src", "10.244.0.5", "--dst", "\(target):80"], timeout: 600)
                    guard r.status == 0, r.out.contains("DNAT to") || r.out.contains("proxied to") else { throw ValidationError("explain: \(r.err)\(r.out)") }
                    return Date().timeIntervalSince(start)
                })
            }

            /// One answer once the rules are read, to a random Service each time: the median of `queries`.
            func oneAnswer(_ walk: (_ clusterIP: String) throws -> Int) throws -> Double {
                try median((0..<queries).map { _ in
                    let t = svcs.randomElement()!.spec.clusterIP ?? ""
                    let start = ContinuousClock.now
                    let ways = try walk(t)
                    precondition(ways == endpoints)
                    return Double((ContinuousClock.now - start).components.attoseconds) / 1e18
                })
            }

            let rules = dir.appendingPathComponent("out-\(n).rules").path
            let ruleset = try render("iptables", rules)
            let explained = try command("iptables", rules)
            let save = try Self.save(rules, repeats: repeats)
            // In process: the rules read once, then packets to random Services.
            var walk = try IPTablesWalk(ruleset)
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
            log("\(n) services: explain \(fmt(explained)), iptables-save \(fmt(save)); one answer \(fmt(indexed)) indexed, \(fmt(scanned)) trying every rule")
            report += "| \(n) × \(endpoints) | \(String(format: "%.1f", Double(ruleset.utf8.count) / 1e6)) MB | \(fmt(explained)) | \(fmt(save)) | \(String(format: "%.2f×", explained / save)) | "
                + "\(fmt(indexed)) | \(fmt(scanned)) | \(String(format: "%.3f×", indexed / scanned)) |\n"

            let scriptFile = dir.appendingPathComponent("out-\(n).nft").path
            let script = try render("nftables", scriptFile)
            let nftExplained = try command("nftables", scriptFile)
            let list = try Self.list(scriptFile, repeats: repeats)
            let table = try NFTWalk(script: script)
            let one = try oneAnswer { try table.walk(source: "10.244.0.5", destination: $0, port: 80, proto: "tcp", fromNode: false, local: []).count }
            log("\(n) services (nftables): explain \(fmt(nftExplained)), nft list \(fmt(list)); one answer \(fmt(one))")
            nftReport += "| \(n) × \(endpoints) | \(String(format: "%.1f", Double(script.utf8.count) / 1e6)) MB | \(fmt(nftExplained)) | \(fmt(list)) | \(String(format: "%.2f×", nftExplained / list)) | \(fmt(one)) |\n"

            let listing = dir.appendingPathComponent("out-\(n).ipvs").path
            let ipvsText = try render("ipvs", listing)
            let ipvsExplained = try command("ipvs", listing)
            let ipsetSave = try Self.ipsetSave(ipvsText, repeats: repeats)
            let ipvs = try IPVSWalk(ipvsText)
            let ipvsOne = try oneAnswer { try ipvs.walk(ExplainQuery(source: "10.244.0.5", destination: $0, port: 80)).count }
            log("\(n) services (ipvs): explain \(fmt(ipvsExplained)), ipset save \(fmt(ipsetSave)); one answer \(fmt(ipvsOne))")
            ipvsReport += "| \(n) × \(endpoints) | \(String(format: "%.1f", Double(ipvsText.utf8.count) / 1e6)) MB | \(fmt(ipvsExplained)) | \(fmt(ipsetSave)) | \(String(format: "%.2f×", ipvsExplained / ipsetSave)) | \(fmt(ipvsOne)) |\n"

            let portals = dir.appendingPathComponent("out-\(n).userspace").path
            let userspaceText = try render("userspace", portals)
            let userspaceExplained = try command("userspace", portals)
            let portalSave = try Self.save(portals, repeats: repeats)
            let userspace = try UserspaceWalk(userspaceText)
            let userspaceOne = try oneAnswer { try userspace.walk(ExplainQuery(source: "10.244.0.5", destination: $0, port: 80)).count }
            log("\(n) services (userspace): explain \(fmt(userspaceExplained)), iptables-save \(fmt(portalSave)); one answer \(fmt(userspaceOne))")
            userspaceReport += "| \(n) × \(endpoints) | \(String(format: "%.1f", Double(userspaceText.utf8.count) / 1e6)) MB | \(fmt(userspaceExplained)) | \(fmt(portalSave)) | "
                + "\(String(format: "%.2f×", userspaceExplained / portalSave)) | \(fmt(userspaceOne)) |\n"
        }
        report += "\n" + nftReport + "\n" + ipvsReport + "\n" + userspaceReport
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// `nft list table ip kube-proxy` of the script, loaded with `nft -f` into a fresh namespace.
    static func list(_ script: String, repeats: Int) throws -> Double {
        try timedInFreshNamespace(load: ["nft", "-f", script], measure: ["nft", "list", "table", "ip", "kube-proxy"], repeats: repeats)
    }

    /// `ipset save` of the render's sets (its `create`/`add` lines), loaded with `ipset restore` into a fresh namespace.
    static func ipsetSave(_ render: String, repeats: Int) throws -> Double {
        let sets = render.split(separator: "\n").filter { $0.hasPrefix("create ") || $0.hasPrefix("add ") }.joined(separator: "\n") + "\n"
        return try timedInFreshNamespace(load: ["ipset", "restore", "-exist"], input: sets, measure: ["ipset", "save"], repeats: repeats)
    }

    /// `measure` run `repeats` times (the median) in a fresh namespace after `load` ran there once;
    /// the namespace (and what was loaded into it) deleted after.
    static func timedInFreshNamespace(load: [String], input: String? = nil, measure: [String], repeats: Int) throws -> Double {
        let ns = "sybenchx\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let loaded = try Sh.run(["ip", "netns", "exec", ns] + load, input: input, timeout: 600)
        guard loaded.status == 0 else { throw ValidationError("\(load.joined(separator: " ")): \(loaded.err)") }
        return try median((0..<repeats).map { _ in
            let start = Date()
            let r = try Sh.run(["ip", "netns", "exec", ns] + measure, timeout: 600)
            guard r.status == 0 else { throw ValidationError("\(measure.joined(separator: " ")): \(r.err)") }
            return Date().timeIntervalSince(start)
        })
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
