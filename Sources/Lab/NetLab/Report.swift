import ClusterPKI
import Foundation
import KubeAPI
import KubeClient
import NetnsKit

/// `netlab report`: one HTML page, with the SVG charts it embeds, of what the running lab
/// measured about itself: the API requests by verb, resource and client; the interaction between
/// components (writes per client and resource, from the audit log's identities and user
/// agents); the container runtime's CRI calls per node (the kubelets' `kubelet_runtime_operations_*`);
/// the proxy modes' comparison (`netlab compare`'s, when it ran); and the latest pod traces.
public struct LabReport: Sendable {
    public struct Bar: Sendable, Equatable {
        public var label: String
        public var value: Double
        public init(_ label: String, _ value: Double) {
            self.label = label
            self.value = value
        }
    }

    /// The charts by file name, and the page.
    public var files: [String: String] = [:]
    public var html = ""

    /// One Prometheus sample: name, labels, value.
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    /// The Prometheus text format's samples (comments and malformed lines skipped).
    public static func samples(_ text: String) -> [Sample] {
        var out: [Sample] = []
        for raw in text.split(separator: "\n") where !raw.hasPrefix("#") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var labels: [String: String] = [:]
            var name = String(series)
            if let open = series.firstIndex(of: "{"), series.hasSuffix("}") {
                name = String(series[..<open])
                var rest = series[series.index(after: open)..<series.index(before: series.endIndex)]
                while let eq = rest.firstIndex(of: "=") {
                    let key = rest[..<eq].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                    var i = rest.index(after: eq)
                    guard i < rest.endIndex, rest[i] == "\"" else { break }
                    i = rest.index(after: i)
                    var v = ""
                    while i < rest.endIndex, rest[i] != "\"" {
                        if rest[i] == "\\", rest.index(after: i) < rest.endIndex { i = rest.index(after: i) }
                        v.append(rest[i])
                        i = rest.index(after: i)
                    }
                    labels[key] = v
                    rest = i < rest.endIndex ? rest[rest.index(after: i)...] : ""
                }
            }
            out.append(Sample(name: name, labels: labels, value: value))
        }
        return out
    }

    /// Sums of `name`'s samples grouped by `label`, largest first (at most `limit`).
    public static func sum(_ samples: [Sample], _ name: String, by label: String, limit: Int = 12) -> [Bar] {
        var sums: [String: Double] = [:]
        for s in samples where s.name == name { sums[s.labels[label] ?? "", default: 0] += s.value }
        return sums.filter { $0.value > 0 }.map { Bar($0.key.isEmpty ? "(none)" : $0.key, $0.value) }
            .sorted { ($0.value, $1.label) > ($1.value, $0.label) }.prefix(limit).map { $0 }
    }

    /// A client's short name from its identity and user agent (`kubelet node-1`,
    /// `endpointslice-controller`, `kube-scheduler`, `kubectl`).
    public static func client(user: String, agent: String) -> String {
        if user.hasPrefix("system:node:") { return "kubelet \(user.dropFirst("system:node:".count))" }
        if user == "system:unsecured" { return "insecure port (netlab)" }
        if user.hasPrefix("system:serviceaccount:kube-system:") { return String(user.dropFirst("system:serviceaccount:kube-system:".count)) }
        if user.hasPrefix("system:") { return String(user.dropFirst("system:".count)) }
        let first = agent.split(separator: "/").first.map(String.init) ?? ""
        return first.isEmpty ? user : "\(first) (\(user))"
    }

    // MARK: charts

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func number(_ v: Double) -> String {
        v >= 100 || v == v.rounded() ? String(format: "%.0f", v) : String(format: v >= 1 ? "%.1f" : "%.3f", v)
    }

    /// Horizontal bars, one per label, in `color`.
    public static func barChart(title: String, unit: String, bars: [Bar], color: String) -> String {
        let labelW = 260.0, chartW = 420.0, rowH = 22.0, top = 34.0
        let height = top + Double(max(bars.count, 1)) * rowH + 12
        let top1 = max(bars.map(\.value).max() ?? 1, 1e-9)
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(labelW + chartW + 110))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\">\(esc(title))</text>\n"
        if bars.isEmpty { svg += "<text x=\"8\" y=\"\(Int(top + 14))\" fill=\"#777\">nothing recorded</text>\n" }
        for (i, b) in bars.enumerated() {
            let y = top + Double(i) * rowH
            let w = max(2, b.value / top1 * chartW)
            svg += "<text x=\"\(Int(labelW - 8))\" y=\"\(Int(y + 15))\" text-anchor=\"end\">\(esc(String(b.label.prefix(40))))</text>\n"
            svg += String(format: "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.1f\" height=\"%.0f\" fill=\"", labelW, y + 3, w, rowH - 6) + color + "\"/>\n"
            svg += String(format: "<text x=\"%.1f\" y=\"%.0f\">", labelW + w + 6, y + 15) + esc("\(number(b.value)) \(unit)") + "</text>\n"
        }
        return svg + "</svg>\n"
    }

    /// A heat map: rows (clients) by columns (resources), a cell's shade its count.
    public static func heatMap(title: String, rows: [String], columns: [String], counts: [String: [String: Int]], color: (r: Int, g: Int, b: Int)) -> String {
        let labelW = 230.0, cell = 46.0, top = 130.0
        let width = labelW + Double(max(columns.count, 1)) * cell + 20, height = top + Double(max(rows.count, 1)) * cell + 16
        let most = Double(max(counts.values.flatMap(\.values).max() ?? 1, 1))
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\">\(esc(title))</text>\n"
        if rows.isEmpty { svg += "<text x=\"8\" y=\"50\" fill=\"#777\">nothing recorded</text>\n" }
        for (j, c) in columns.enumerated() {
            let x = labelW + Double(j) * cell + cell / 2
            svg += "<text transform=\"translate(\(Int(x)),\(Int(top - 6))) rotate(-60)\">\(esc(String(c.prefix(22))))</text>\n"
        }
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * cell
            svg += "<text x=\"\(Int(labelW - 8))\" y=\"\(Int(y + cell / 2 + 4))\" text-anchor=\"end\">\(esc(String(r.prefix(34))))</text>\n"
            for (j, c) in columns.enumerated() {
                let n = counts[r]?[c] ?? 0
                let x = labelW + Double(j) * cell
                let shade = n == 0 ? 0 : 0.25 + 0.75 * log(Double(n) + 1) / log(most + 1)
                let fill = n == 0 ? "#f4f4f4" : "rgb(\(255 - Int(Double(255 - color.r) * shade)),\(255 - Int(Double(255 - color.g) * shade)),\(255 - Int(Double(255 - color.b) * shade)))"
                svg += "<rect x=\"\(Int(x + 1))\" y=\"\(Int(y + 1))\" width=\"\(Int(cell - 2))\" height=\"\(Int(cell - 2))\" fill=\"\(fill)\"><title>\(esc("\(r) → \(c): \(n)"))</title></rect>\n"
                if n > 0 { svg += "<text x=\"\(Int(x + cell / 2))\" y=\"\(Int(y + cell / 2 + 4))\" text-anchor=\"middle\" fill=\"\(shade > 0.6 ? "white" : "black")\">\(n)</text>\n" }
            }
        }
        return svg + "</svg>\n"
    }

    // MARK: the page

    /// The page from what was gathered: the API server's metrics, the audit events, each node's
    /// kubelet metrics, the comparison's files (names in the output directory) and the traces.
    public static func make(apiMetrics: String, audit: [JSONValue], kubeletMetrics: [String: String], comparison: [String],
                            comparisonTable: String?, traces: [PodTrace], labName: String, now: Date = Date()) -> LabReport {
        var r = LabReport()
        let api = samples(apiMetrics)
        r.files["api-by-verb.svg"] = barChart(title: "API requests by verb (apiserver_request_total)", unit: "requests",
                                              bars: sum(api, "apiserver_request_total", by: "verb"), color: "#1f77b4")
        r.files["api-by-resource.svg"] = barChart(title: "API requests by resource (apiserver_request_total)", unit: "requests",
                                                  bars: sum(api, "apiserver_request_total", by: "resource"), color: "#ff7f0e")
        // Clients and their writes: the audit log names who wrote what.
        var perClient: [String: Double] = [:]
        var pairs: [String: [String: Int]] = [:]
        for e in audit where e["stage"]?.string == "ResponseComplete" {
            let who = client(user: e["user"]?["username"]?.string ?? "?", agent: e["userAgent"]?.string ?? "")
            let ref = e["objectRef"]
            let resource = (ref?["resource"]?.string).map { r in (ref?["subresource"]?.string).map { "\(r)/\($0)" } ?? r } ?? "(non-resource)"
            perClient[who, default: 0] += 1
            pairs[who, default: [:]][resource, default: 0] += 1
        }
        r.files["api-by-client.svg"] = barChart(title: "API writes by client (audit log)", unit: "writes",
                                                bars: perClient.map { Bar($0.key, $0.value) }.sorted { ($0.value, $1.label) > ($1.value, $0.label) }.prefix(20).map { $0 },
                                                color: "#2ca02c")
        let rows = perClient.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(20).map(\.key)
        var columnTotals: [String: Int] = [:]
        for (_, cols) in pairs { for (c, n) in cols { columnTotals[c, default: 0] += n } }
        let columns = columnTotals.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(14).map(\.key)
        r.files["interaction.svg"] = heatMap(title: "Interaction: writes per client and resource (audit log)", rows: rows, columns: columns,
                                             counts: pairs, color: (148, 103, 189))
        // The container runtime per node.
        var runtimeCharts: [String] = []
        for (node, text) in kubeletMetrics.sorted(by: { $0.key < $1.key }) {
            let k = samples(text)
            let calls = sum(k, "kubelet_runtime_operations_total", by: "operation_type", limit: 16)
            let sums = Dictionary(sum(k, "kubelet_runtime_operations_duration_seconds_sum", by: "operation_type", limit: 100).map { ($0.label, $0.value) }) { a, _ in a }
            let counts = Dictionary(sum(k, "kubelet_runtime_operations_duration_seconds_count", by: "operation_type", limit: 100).map { ($0.label, $0.value) }) { a, _ in a }
            let latency = counts.compactMap { op, n in sums[op].map { Bar(op, $0 / n * 1000) } }.sorted { ($0.value, $1.label) > ($1.value, $0.label) }
            let callsFile = "runtime-calls-\(node).svg", latencyFile = "runtime-latency-\(node).svg"
            r.files[callsFile] = barChart(title: "CRI calls on \(node) (kubelet_runtime_operations_total)", unit: "calls", bars: calls, color: "#d62728")
            r.files[latencyFile] = barChart(title: "CRI call latency on \(node), mean", unit: "ms", bars: latency, color: "#8c564b")
            runtimeCharts += [callsFile, latencyFile]
        }
        var traceFiles: [(String, PodTrace)] = []
        for t in traces {
            let file = "trace-\(t.namespace)-\(t.name).svg"
            r.files[file] = t.svg()
            traceFiles.append((file, t))
        }
        func img(_ file: String, _ alt: String) -> String { "<p><img src=\"\(esc(file))\" alt=\"\(esc(alt))\"></p>\n" }
        let stamp = RFC3339.format(now.timeIntervalSince1970)
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>netlab report: \(esc(labName))</title>
            <style>body{font-family:sans-serif;margin:24px;max-width:1100px} h2{margin-top:36px;border-bottom:1px solid #ccc} pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px} img{max-width:100%}</style>
            <script>
            // The page checks itself: every chart loaded, no error; the result goes on <body>
            // (data-charts, data-errors) and any error to the console.
            const failures = [];
            window.addEventListener("error", e => { failures.push(e.target && e.target.src ? "not loaded: " + e.target.src : String(e.message)); }, true);
            window.addEventListener("load", () => {
              const charts = [...document.images];
              const drawn = charts.filter(i => i.complete && i.naturalWidth > 0).length;
              document.body.dataset.charts = drawn + "/" + charts.length;
              document.body.dataset.errors = String(failures.length);
              for (const f of failures) console.error(f);
            });
            </script>
            </head><body>
            <h1>netlab report: lab \(esc(labName))</h1>
            <p>What the lab measured about itself, \(stamp). The API server's figures are its <code>/metrics</code> (upstream's names);
            the clients are the audit log's identities and user agents (writes, at Metadata level); the runtime's are each kubelet's
            <code>/metrics</code>.</p>
            <h2>API requests</h2>

            """
        html += img("api-by-verb.svg", "API requests by verb") + img("api-by-resource.svg", "API requests by resource") + img("api-by-client.svg", "API writes by client")
        html += "<h2>Interaction between components</h2>\n" + img("interaction.svg", "writes per client and resource")
        html += "<h2>Container runtime</h2>\n"
        html += runtimeCharts.isEmpty ? "<p>No kubelet answered (a lab of --runtime netns has none).</p>\n" : runtimeCharts.map { img($0, $0) }.joined()
        html += "<h2>Proxy modes compared</h2>\n"
        if comparison.isEmpty {
            html += "<p>No comparison yet: run <code>netlab/netlab compare</code> (or the demo), then the report again.</p>\n"
        } else {
            if let comparisonTable { html += "<pre>\(esc(comparisonTable))</pre>\n" }
            html += comparison.map { img($0, $0) }.joined()
        }
        html += "<h2>Latest pod traces</h2>\n"
        if traceFiles.isEmpty { html += "<p>No pod could be traced.</p>\n" }
        for (file, t) in traceFiles { html += img(file, "trace of \(t.namespace)/\(t.name)") + "<pre>\(esc(t.text()))</pre>\n" }
        r.html = html + "</body></html>\n"
        return r
    }
}

extension Cluster {
    /// Gathers the lab's figures and writes the report to `out` (index.html and its SVGs).
    /// `compareDir` is where `netlab compare` wrote its results; `traces` how many of the newest
    /// pods are traced.
    public func report(out: String, compareDir: String, traces count: Int = 3) async throws -> LabReport {
        let metrics = try await api.rawRequest("GET", "/metrics")
        guard metrics.status == 200 else { throw NetLabError("the API server's /metrics answered \(metrics.status)") }
        var kubelet: [String: String] = [:]
        if state.podRuntime == .containerd {
            for node in state.nodes {
                if let text = try? await kubeletMetrics(node) { kubelet[node.name] = text }
            }
        }
        // The newest pods that can be traced.
        let pods = (try await must("GET", "/api/v1/pods", nil)["items"]?.array ?? [])
            .filter { $0.isReady }
            .sorted { ($0[path: ["metadata", "creationTimestamp"]]?.string ?? "") > ($1[path: ["metadata", "creationTimestamp"]]?.string ?? "") }
        var traced: [PodTrace] = []
        for p in pods where traced.count < count {
            if let t = try? await trace(pod: p.name, namespace: p.namespace).first { traced.append(t) }
        }
        let audit = try traceRecords(mentioning: [], everything: true).audit
        let fm = FileManager.default
        let compared = ((try? fm.contentsOfDirectory(atPath: compareDir)) ?? []).filter { $0.hasPrefix("compare-") && $0.hasSuffix(".svg") }.sorted()
        let table = try? String(contentsOfFile: "\(compareDir)/compare.md", encoding: .utf8)
        let report = LabReport.make(apiMetrics: String(decoding: metrics.body, as: UTF8.self), audit: audit, kubeletMetrics: kubelet,
                                    comparison: compared, comparisonTable: table, traces: traced, labName: state.name)
        try fm.createDirectory(atPath: out, withIntermediateDirectories: true)
        for (name, svg) in report.files { try Data(svg.utf8).write(to: URL(fileURLWithPath: "\(out)/\(name)")) }
        for name in compared where fm.fileExists(atPath: "\(compareDir)/\(name)") && compareDir != out {
            try? fm.removeItem(atPath: "\(out)/\(name)")
            try fm.copyItem(atPath: "\(compareDir)/\(name)", toPath: "\(out)/\(name)")
        }
        try Data(report.html.utf8).write(to: URL(fileURLWithPath: "\(out)/index.html"))
        return report
    }

    /// A node's kubelet `/metrics` (its API on :10250), as a cluster administrator (a client
    /// certificate of the cluster CA in system:masters, which the kubelet's webhook authorizer
    /// allows `nodes/metrics`), reached from the control plane's namespace.
    func kubeletMetrics(_ node: LabState.Node) async throws -> String {
        let pki = try ClusterPKI.loadOrCreate(in: "\(dir)/server/pki")
        let pair = try pki.clientCertificate(name: "netlab-report", commonName: "netlab-report", organizations: ["system:masters"])
        // The kubelet serves a certificate of its own making: not checked here (only read).
        let tls = Kubeconfig.TLS(insecureSkipVerify: true, clientCertificate: Array(pair.cert.utf8), clientKey: Array(pair.key.utf8))
        var client = KubeClient(config: Kubeconfig(server: "https://\(node.address):10250", host: node.address, port: 10250, tls: tls))
        let ns = state.controlPlane
        client.dial = { host, port in
            guard let fd = try inNamespace(ns, { TCP.connect(host, port, timeout: 3) }) else { throw NetLabError("cannot reach \(host):\(port)") }
            return fd
        }
        let r = try await client.rawRequest("GET", "/metrics")
        guard r.status == 200 else { throw NetLabError("the kubelet on \(node.name) answered \(r.status)") }
        return String(decoding: r.body, as: UTF8.self)
    }
}
