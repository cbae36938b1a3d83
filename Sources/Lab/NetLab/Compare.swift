import Foundation
import KubeAPI
import NetnsKit
import HostOS

/// `netlab compare`: for every available proxy mode and a direct pod-IP baseline, at each
/// number of Services, the figures of `Figures`, each also as a ratio to the baseline measured
/// at the same scale in the same run. Writes CSV, markdown and SVG charts.
public struct Comparison: Sendable {
    public struct Row: Codable, Sendable {
        public var services: Int
        public var mode: String            // "direct" for the baseline
        public var figures: Figures
    }

    public var scales = [10, 1000, 10000]
    public var modes: [String] = Comparison.availableModes
    public var measure = MeasureOptions()
    public var changes = 3
    public var keepServices = false
    public var environment = Comparison.environmentName
    public var outDir: String
    public init(outDir: String) { self.outDir = outDir }

    /// The modes this kernel can run: all but IPVS everywhere, IPVS where the kernel has it.
    public static var availableModes: [String] {
        Cluster.modes.filter { $0 != "ipvs" || kernelHasIPVS }
    }

    public static var environmentName: String { environment(guest: false) }

    /// Where the figures come from: "host" or "qemu guest (TCG)", the kernel and the CPUs.
    public static func environment(guest: Bool) -> String {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        return "\(guest ? "qemu guest (TCG)" : "host"), kernel \(release), \(ProcessInfo.processInfo.activeProcessorCount) CPUs"
    }

    /// What a comparison inside the qemu guest sends back: the guest's writes vanish with it,
    /// so the rows travel on its stdout after `marker` and the host writes the files.
    public struct GuestReport: Codable, Sendable {
        public var environment: String
        public var rows: [Row]
        public static let marker = "NETLAB-GUEST-REPORT "
        public init(environment: String, rows: [Row]) {
            self.environment = environment
            self.rows = rows
        }
    }

    /// Runs `netlab` in the qemu guest (`guestScript`, netlab/guest) for a comparison of every
    /// mode there, IPVS included, and writes it as guest-compare.* beside the host's.
    public func runInGuest(guestScript: String, netlab: String, progress: @escaping @Sendable (String) -> Void) throws -> [Row] {
        let args = [guestScript, "--timeout", "1500", "--memory", "3072", "--follow-stderr", "--", netlab, "guest-compare",
                    "--services", scales.map(String.init).joined(separator: ","), "--seconds", String(measure.seconds),
                    "--iperf-seconds", String(measure.iperfSeconds), "--concurrency", String(measure.concurrency), "--changes", String(changes)]
        progress("guest: booting a kernel with IPVS under qemu for a comparison of every mode there (\(args.dropFirst(8).joined(separator: " ")))")
        // The guest's progress goes straight to our stderr; its stdout carries the report.
        let p = CommandRunner.process(args)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.standardError
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix(GuestReport.marker) }),
              let report = try? JSONDecoder().decode(GuestReport.self, from: Data(line.dropFirst(GuestReport.marker.count).utf8)) else {
            throw NetLabError("the guest comparison failed (exit \(p.terminationStatus)); its output is above")
        }
        var c = self
        c.environment = report.environment
        try c.write(report.rows)
        return report.rows
    }

    public func run(_ lab: Cluster, progress: @escaping @Sendable (String) -> Void) async throws -> [Row] {
        guard let bench = lab.state.pods.first(where: { $0.labels["bench"] == "true" }) else {
            throw NetLabError("the lab has no bench pod: bring it up with `netlab up`")
        }
        for m in modes where !Cluster.modes.contains(m) { throw NetLabError("unknown mode \(m)") }
        let originalMode = lab.state.proxyMode
        let benchIP = try await lab.clusterIP("probe")
        let steps = scales.count * (modes.count + 1)
        var done = 0
        var rows: [Row] = []
        let started = Date()
        for scale in scales.sorted() {
            try await setFillers(lab, count: max(0, scale - 2), progress: progress)
            func say(_ mode: String, _ what: String) {
                let t = Int(Date().timeIntervalSince(started))
                progress("compare [\(done + 1)/\(steps)] \(scale) services · \(mode) · \(what)  (\(t / 60)m\(t % 60)s)")
            }
            try lab.stopProxies()
            var direct = try Measure.path(lab.state.client, ip: bench.ip, measure) { say("direct to \(bench.ip)", $0) }
            direct.apiToTraffic = nil
            rows.append(Row(services: scale, mode: "direct", figures: direct))
            done += 1
            for mode in modes {
                try lab.stopProxies()
                say(mode, "starting a proxy on every node")
                let t0 = DispatchTime.now()
                try await lab.startProxies(mode: mode)
                try await waitForProxies(lab, mode: mode, benchIP: benchIP, timeout: 900)
                let ready = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
                var f = try Measure.path(lab.state.client, ip: benchIP, measure) { say(mode, $0) }
                f.proxyReady = ready
                if let pid = lab.proxyPID(lab.state.nodes[0]), case let rss = residentBytes(pid: pid), rss > 0 { f.proxyRSS = rss }
                say(mode, "API change to working traffic (\(changes)×)")
                var times: [Double] = []
                for k in 0..<changes {
                    let name = "netlab-change-\(k)"
                    let t = DispatchTime.now()
                    let ip = try await lab.createService(name, selector: ["bench": "true"], ports: [("tcp-echo", 9090, 9090, "TCP")])
                    guard let took = try Measure.firstEcho(lab.state.client, ip, 9090, since: t, timeout: 120) else {
                        throw NetLabError("\(mode): a new Service was not reachable within 120 s")
                    }
                    times.append(took)
                    try await lab.must("DELETE", "/api/v1/namespaces/default/services/\(name)", nil)
                    try await Task.sleep(for: .milliseconds(300))
                }
                f.apiToTraffic = Measure.percentile(times, 0.5)
                rows.append(Row(services: scale, mode: mode, figures: f))
                done += 1
            }
            try lab.stopProxies()
            try write(rows)
        }
        if !keepServices {
            try await setFillers(lab, count: 0, progress: progress)
        }
        if let originalMode { try await lab.startProxies(mode: originalMode) }
        return rows
    }

    /// Until every node's proxy reports healthy (its first sync is done) and the bench
    /// Service answers from the client.
    func waitForProxies(_ lab: Cluster, mode: String, benchIP: String, timeout: Double) async throws {
        try await lab.waitForProxies(timeout: timeout)
        guard try Measure.firstEcho(lab.state.client, benchIP, 9090, since: DispatchTime.now(), timeout: 60) != nil else {
            throw NetLabError("\(mode): the probe Service \(benchIP) does not answer")
        }
    }

    /// Makes the number of filler Services (`fill-NNNNN`, each selecting both echo pods) `count`,
    /// and waits until the EndpointSlice controller has a slice for each.
    func setFillers(_ lab: Cluster, count: Int, progress: @escaping @Sendable (String) -> Void) async throws {
        let list = try await lab.must("GET", "/api/v1/namespaces/default/services", nil, query: ["labelSelector": "netlab-fill=true"])
        let have = Set((list["items"]?.array ?? []).compactMap { $0["metadata"]?["name"]?.string })
        let want = Set((0..<count).map { String(format: "fill-%05d", $0) })
        let create = want.subtracting(have).sorted(), remove = have.subtracting(want).sorted()
        guard !create.isEmpty || !remove.isEmpty else { return }
        if !create.isEmpty { progress("compare: creating \(create.count) Services (\(count) filler Services in all)") }
        if !remove.isEmpty { progress("compare: deleting \(remove.count) filler Services") }
        let t0 = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            var i = 0
            func next() -> (String, Bool)? {
                defer { i += 1 }
                if i < create.count { return (create[i], true) }
                if i - create.count < remove.count { return (remove[i - create.count], false) }
                return nil
            }
            func add(_ job: (String, Bool)) {
                group.addTask {
                    if job.1 {
                        let body: JSONValue = [
                            "apiVersion": "v1", "kind": "Service",
                            "metadata": ["name": .string(job.0), "labels": ["netlab-fill": "true"]],
                            "spec": ["selector": ["app": "echo"], "ports": [["name": "http", "port": 80, "targetPort": 8080]]],
                        ]
                        try await lab.must("POST", "/api/v1/namespaces/default/services", body, okIf: [409])
                    } else {
                        try await lab.must("DELETE", "/api/v1/namespaces/default/services/\(job.0)", nil, okIf: [404])
                    }
                }
            }
            for _ in 0..<8 { if let j = next() { add(j) } }
            var finished = 0
            while try await group.next() != nil {
                finished += 1
                if finished % 1000 == 0 { progress("compare: \(finished)/\(create.count + remove.count) Service writes") }
                if let j = next() { add(j) }
            }
        }
        // The controller's slices for the fillers: one per filler Service, none for a removed one.
        // Until the last filler's Endpoints (written after its slices) is there, poll that one
        // object; a list of every slice is made only to confirm.
        if let last = want.max() {
            for _ in 0..<1200 {
                let r = try await lab.api.request("GET", "/api/v1/namespaces/default/endpoints/\(last)")
                if r.status == 200 { break }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        for _ in 0..<600 {
            let slices = try await lab.must("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", nil)
            let names = Set((slices["items"]?.array ?? []).compactMap { $0["metadata"]?["labels"]?[EndpointSlice.serviceNameLabel]?.string }.filter { $0.hasPrefix("fill-") })
            if names == want { break }
            try await Task.sleep(for: .seconds(1))
        }
        progress(String(format: "compare: %d filler Services and their EndpointSlices in place (%.1f s)", count, Date().timeIntervalSince(t0)))
    }

    // MARK: output

    static func ms(_ s: Double) -> String { String(format: s < 0.001 ? "%.3f ms" : "%.2f ms", s * 1000) }
    static func gbit(_ b: Double) -> String { String(format: "%.2f Gbit/s", b / 1e9) }
    static func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.2f×", a / b) : "–" }

    public static func csv(_ rows: [Row], environment: String) -> String {
        var out = "environment,services,mode,connect_p50_ms,connect_p99_ms,request_p50_ms,request_p99_ms,throughput_gbit_s,connections_per_s,failed_connections,api_to_traffic_ms,proxy_ready_s,proxy_rss_mb,connect_p50_ratio,connect_p99_ratio,request_p50_ratio,request_p99_ratio,throughput_ratio,connections_ratio\n"
        for r in rows {
            let d = rows.first { $0.services == r.services && $0.mode == "direct" }?.figures ?? r.figures
            let f = r.figures
            let cols: [String] = [
                "\"\(environment)\"", String(r.services), r.mode,
                String(format: "%.4f", f.connectP50 * 1000), String(format: "%.4f", f.connectP99 * 1000),
                String(format: "%.4f", f.requestP50 * 1000), String(format: "%.4f", f.requestP99 * 1000),
                String(format: "%.3f", f.throughput / 1e9), String(format: "%.0f", f.connectionsPerSecond), String(f.failedConnections),
                f.apiToTraffic.map { String(format: "%.1f", $0 * 1000) } ?? "", f.proxyReady.map { String(format: "%.2f", $0) } ?? "",
                f.proxyRSS.map { String(format: "%.1f", Double($0) / 1048576) } ?? "",
                String(format: "%.3f", f.connectP50 / d.connectP50), String(format: "%.3f", f.connectP99 / d.connectP99),
                String(format: "%.3f", f.requestP50 / d.requestP50), String(format: "%.3f", f.requestP99 / d.requestP99),
                String(format: "%.3f", f.throughput / d.throughput), String(format: "%.3f", f.connectionsPerSecond / d.connectionsPerSecond),
            ]
            out += cols.joined(separator: ",") + "\n"
        }
        return out
    }

    public static func markdown(_ rows: [Row], environment: String) -> String {
        var out = "Environment: \(environment). Every figure in parentheses is the ratio to the direct pod-IP baseline measured at the same number of Services in the same run (for latencies lower is better, for throughput and connections higher is better). The direct path has no API change, proxy or proxy memory: those three figures stand alone.\n\n"
        out += "| services | mode | connect p50 / p99 | request p50 / p99 | throughput | new connections/s | API change → traffic | proxies start → synced | proxy RSS |\n"
        out += "|---:|---|---|---|---|---|---|---|---|\n"
        for r in rows {
            let d = rows.first { $0.services == r.services && $0.mode == "direct" }?.figures ?? r.figures
            let f = r.figures
            let direct = r.mode == "direct"
            func withRatio(_ s: String, _ a: Double, _ b: Double) -> String { direct ? s : "\(s) (\(ratio(a, b)))" }
            out += "| \(r.services) | \(direct ? "direct (baseline)" : r.mode) "
            out += "| \(withRatio(ms(f.connectP50), f.connectP50, d.connectP50)) / \(withRatio(ms(f.connectP99), f.connectP99, d.connectP99)) "
            out += "| \(withRatio(ms(f.requestP50), f.requestP50, d.requestP50)) / \(withRatio(ms(f.requestP99), f.requestP99, d.requestP99)) "
            out += "| \(withRatio(gbit(f.throughput), f.throughput, d.throughput)) "
            out += "| \(withRatio(String(format: "%.0f", f.connectionsPerSecond), f.connectionsPerSecond, d.connectionsPerSecond))\(f.failedConnections > 0 ? " (\(f.failedConnections) failed)" : "") "
            out += "| \(f.apiToTraffic.map(ms) ?? "–") | \(f.proxyReady.map { String(format: "%.1f s", $0) } ?? "–") "
            out += "| \(f.proxyRSS.map { String(format: "%.0f MB", Double($0) / 1048576) } ?? "–") |\n"
        }
        out += "\n" + finding(rows)
        return out
    }

    /// Whether connection setup through iptables grows with the number of Services while
    /// nftables stays flat (upstream's finding), from this run's figures.
    public static func finding(_ rows: [Row]) -> String {
        let scales = Set(rows.map(\.services)).sorted()
        guard let lo = scales.first, let hi = scales.last, lo != hi else { return "" }
        func growth(_ mode: String) -> Double? {
            guard let a = rows.first(where: { $0.mode == mode && $0.services == lo })?.figures,
                  let b = rows.first(where: { $0.mode == mode && $0.services == hi })?.figures,
                  let da = rows.first(where: { $0.mode == "direct" && $0.services == lo })?.figures,
                  let db = rows.first(where: { $0.mode == "direct" && $0.services == hi })?.figures else { return nil }
            // Against the baseline of each scale, so machine noise common to both cancels.
            return (b.connectP50 / db.connectP50) / (a.connectP50 / da.connectP50)
        }
        var lines: [String] = []
        for mode in Cluster.modes {
            if let g = growth(mode) {
                lines.append(String(format: "- %@: connection setup p50 relative to direct changed %.2f× from %d to %d Services", mode, g, lo, hi))
            }
        }
        return lines.isEmpty ? "" : "Connection setup against the number of Services:\n" + lines.joined(separator: "\n") + "\n"
    }

    /// Grouped bar charts, one per figure: a group per number of Services, a bar per mode.
    public static func charts(_ rows: [Row]) -> [String: String] {
        let metrics: [(String, String, (Figures) -> Double?)] = [
            ("connect-p50", "connection setup p50 (ms)", { $0.connectP50 * 1000 }),
            ("connect-p99", "connection setup p99 (ms)", { $0.connectP99 * 1000 }),
            ("request-p50", "request latency p50 (ms)", { $0.requestP50 * 1000 }),
            ("throughput", "throughput through the path (Gbit/s)", { $0.throughput / 1e9 }),
            ("connections", "new connections per second", { $0.connectionsPerSecond }),
            ("api-to-traffic", "API change to working traffic (ms)", { $0.apiToTraffic.map { $0 * 1000 } }),
        ]
        let scales = Set(rows.map(\.services)).sorted()
        var modes: [String] = []
        for r in rows where !modes.contains(r.mode) { modes.append(r.mode) }
        let colors = ["#555555", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
        var out: [String: String] = [:]
        for (file, title, value) in metrics {
            let vals = rows.compactMap { value($0.figures) }
            let top = max(vals.max() ?? 1, 1e-9) * 1.1
            let barW = 18.0, gap = 30.0, left = 60.0, height = 240.0, topPad = 40.0
            let groupW = Double(modes.count) * barW + gap
            let width = left + Double(scales.count) * groupW + 160
            var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height + topPad + 50))\" font-family=\"sans-serif\" font-size=\"11\">\n"
            svg += "<text x=\"\(left)\" y=\"20\" font-size=\"14\">\(title)</text>\n"
            svg += "<line x1=\"\(left)\" y1=\"\(topPad + height)\" x2=\"\(width - 150)\" y2=\"\(topPad + height)\" stroke=\"black\"/>\n"
            for t in 0...4 {
                let v = top * Double(t) / 4, y = topPad + height - height * Double(t) / 4
                svg += "<text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">\(String(format: v < 10 ? "%.2f" : "%.0f", v))</text>\n"
                svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(width - 150)\" y2=\"\(y)\" stroke=\"#dddddd\"/>\n"
            }
            for (g, scale) in scales.enumerated() {
                let x0 = left + gap / 2 + Double(g) * groupW
                for (m, mode) in modes.enumerated() {
                    guard let r = rows.first(where: { $0.services == scale && $0.mode == mode }), let v = value(r.figures) else { continue }
                    let h = height * v / top
                    svg += "<rect x=\"\(x0 + Double(m) * barW)\" y=\"\(topPad + height - h)\" width=\"\(barW - 2)\" height=\"\(h)\" fill=\"\(colors[m % colors.count])\"><title>\(mode), \(scale) services: \(String(format: "%.3f", v))</title></rect>\n"
                }
                svg += "<text x=\"\(x0 + Double(modes.count) * barW / 2)\" y=\"\(topPad + height + 16)\" text-anchor=\"middle\">\(scale) services</text>\n"
            }
            for (m, mode) in modes.enumerated() {
                let y = topPad + Double(m) * 16
                svg += "<rect x=\"\(width - 140)\" y=\"\(y)\" width=\"10\" height=\"10\" fill=\"\(colors[m % colors.count])\"/><text x=\"\(width - 125)\" y=\"\(y + 9)\">\(mode)</text>\n"
            }
            svg += "</svg>\n"
            out["compare-\(file).svg"] = svg
        }
        return out
    }

    func write(_ rows: [Row]) throws {
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let prefix = environment.hasPrefix("qemu") ? "guest-" : ""
        try Self.csv(rows, environment: environment).write(toFile: "\(outDir)/\(prefix)compare.csv", atomically: true, encoding: .utf8)
        try Self.markdown(rows, environment: environment).write(toFile: "\(outDir)/\(prefix)compare.md", atomically: true, encoding: .utf8)
        for (name, svg) in Self.charts(rows) {
            try svg.write(toFile: "\(outDir)/\(prefix)\(name)", atomically: true, encoding: .utf8)
        }
    }
}
