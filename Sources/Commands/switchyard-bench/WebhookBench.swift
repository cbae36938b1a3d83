import ArgumentParser
import Foundation
import KubeAPI
import KubeClient

/// What the Webhook authorizer adds once its decision is cached: the same GET with a token
/// against a server under AlwaysAllow (the baseline) and one under `--authorization-mode Webhook`
/// whose webhook (Python's HTTPS server, a certificate from openssl) allowed it once; both real
/// `switchyard server` processes in the same run, their requests interleaved.
struct WebhookBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "Measure a GET authorised by a cached Webhook decision against the same GET under AlwaysAllow.")

    @Option(help: "GETs timed against each server.") var requests = 4000
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    func run() async throws {
        let binary = try switchyardBinary(switchyard)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-webhook-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenFile = dir.appendingPathComponent("tokens.csv").path
        try "admin-token,admin,0,\"system:masters\"\nreader-token,reader,1\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)

        // The webhook: allows everything, and counts the reviews it answered.
        let cert = dir.appendingPathComponent("webhook.crt").path, key = dir.appendingPathComponent("webhook.key").path
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                             "-days", "1", "-subj", "/CN=webhook", "-addext", "subjectAltName=IP:127.0.0.1"]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        guard openssl.terminationStatus == 0 else { throw ValidationError("openssl could not make the webhook's certificate") }
        let port = Int.random(in: 40000...49999)
        let counter = dir.appendingPathComponent("reviews").path
        let script = """
            import http.server, json, ssl
            n = 0
            class H(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    global n
                    review = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                    n += 1
                    open('\(counter)', 'w').write(str(n))
                    review['status'] = {'allowed': True}
                    body = json.dumps(review).encode()
                    self.send_response(200); self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
                def log_message(self, *a): pass
            s = http.server.HTTPServer(('127.0.0.1', \(port)), H)
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('\(cert)', '\(key)')
            s.socket = c.wrap_socket(s.socket, server_side=True)
            s.serve_forever()
            """
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        python.arguments = ["-c", script]
        try python.run()
        // SIGKILL: the child inherits this process's blocked signals, SIGTERM among them.
        defer { kill(python.processIdentifier, SIGKILL); python.waitUntilExit() }
        let config = dir.appendingPathComponent("webhook.kubeconfig").path
        try """
            apiVersion: v1
            kind: Config
            clusters:
            - name: webhook
              cluster: {server: "https://127.0.0.1:\(port)/authorize", certificate-authority: "\(cert)"}
            users:
            - name: apiserver
              user: {}
            contexts:
            - name: webhook
              context: {cluster: webhook, user: apiserver}
            current-context: webhook
            """.write(toFile: config, atomically: true, encoding: .utf8)

        let common = ["--disable-scheduler", "--disable-controller-manager", "--token-auth-file", tokenFile]
        let plain = try await BenchServer.start(binary: binary, etcd: nil, arguments: common)
        defer { plain.stop() }
        let hooked = try await BenchServer.start(binary: binary, etcd: nil, arguments: common + [
            "--authorization-mode", "Webhook", "--authorization-webhook-config-file", config, "--authorization-webhook-version", "v1"])
        defer { hooked.stop() }
        for server in [plain, hooked] {
            let ns = try await server.client.rawRequest("POST", "/api/v1/namespaces", body: Data(#"{"metadata":{"name":"bench"}}"#.utf8))
            guard ns.status == 201 else { throw ValidationError("namespace: \(ns.status)") }
            let cm = try await server.client.rawRequest("POST", "/api/v1/namespaces/bench/configmaps",
                                                        body: Data(#"{"metadata":{"name":"target"},"data":{"a":"b"}}"#.utf8))
            guard cm.status == 201 else { throw ValidationError("configmap: \(cm.status)") }
        }
        let path = "/api/v1/namespaces/bench/configmaps/target", token = "reader-token"
        let a = try KeepAliveHTTP(host: plain.client.config.host, port: plain.client.config.port)
        let b = try KeepAliveHTTP(host: hooked.client.config.host, port: hooked.client.config.port)
        // The first GET asks the webhook (up to its start-up); every later one is a cached decision.
        var first = 0
        for _ in 0..<100 {
            first = try b.request("GET", path, body: Data(), contentType: "application/json", token: token).status
            if first == 200 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard first == 200 else { throw ValidationError("the webhook did not allow the first GET: \(first)") }
        let reviewsBefore = (try? String(contentsOfFile: counter, encoding: .utf8)).flatMap { Int($0) } ?? 0
        var base: [Double] = [], measured: [Double] = []
        let rounds = 20, per = max(1, requests / rounds)
        log("timing \(rounds * per) GETs of one ConfigMap against each server, interleaved in rounds of \(per)")
        for round in 0..<(rounds + 1) {
            for (conn, isWebhook) in [(a, false), (b, true)] {
                for _ in 0..<per {
                    let t0 = ContinuousClock.now
                    let r = try conn.request("GET", path, body: Data(), contentType: "application/json", token: token)
                    let t = (ContinuousClock.now - t0).seconds * 1000
                    guard r.status == 200 else { throw ValidationError("GET \(path): \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
                    if round > 0 { if isWebhook { measured.append(t) } else { base.append(t) } }
                }
            }
        }
        let reviewsAfter = (try? String(contentsOfFile: counter, encoding: .utf8)).flatMap { Int($0) } ?? 0
        guard reviewsAfter == reviewsBefore else {
            throw ValidationError("the webhook was asked \(reviewsAfter - reviewsBefore) times during the timed GETs: the decisions were not cached")
        }
        base.sort()
        measured.sort()
        func pct(_ v: [Double], _ p: Double) -> Double { v[min(v.count - 1, Int(Double(v.count) * p))] }
        func f(_ v: Double) -> String { String(format: "%.3f ms", v) }
        var report = "| figure | Webhook, cached decision | AlwaysAllow (same run) | added | target |\n|---|---|---|---|---|\n"
        report += "| GET one ConfigMap, p50 | \(f(pct(measured, 0.5))) | \(f(pct(base, 0.5))) | \(f(pct(measured, 0.5) - pct(base, 0.5))) | < 0.1 ms |\n"
        report += "| GET one ConfigMap, p99 | \(f(pct(measured, 0.99))) | \(f(pct(base, 0.99))) | \(f(pct(measured, 0.99) - pct(base, 0.99))) | |\n"
        report += "\nThe webhook answered \(reviewsBefore) review(s) before the timed GETs and none during them.\n"
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
