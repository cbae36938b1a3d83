import ArgumentParser
import Foundation
import HostOS
import KubeAPI
import KubeClient

/// `switchyard ingress-controller` on nginx, as a process against `switchyard server`, with an
/// nginx of its own as the pod behind the Service (on 127.0.0.2):
/// - an Ingress created → its host served, with 1 Ingress in place (the baseline) and with
///   `--ingresses` more; each change made after the previous reload's second has passed, so the
///   figure is the controller's reaction and not its rate limit;
/// - a burst of `--burst` Ingresses created at once: the reloads it caused, and the most in any
///   one second (nginx's own log of each SIGHUP, read every 20 ms);
/// - requests per second (ab, keep-alive) and the throughput of a 32 MB download (curl) through
///   the Ingress against the same client asking the pod directly.
struct IngressBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingress",
        abstract: "Measure the ingress controller: an Ingress change until served (1 and N Ingresses in place), reloads under a burst, requests and throughput through nginx against the pod directly.")

    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Ingresses in place for the second latency figure.") var ingresses = 1000
    @Option(help: "Changes measured in each phase.") var changes = 20
    @Option(help: "Ingresses created at once in the burst.") var burst = 100
    @Option(help: "Requests of each ab run.") var requests = 20000
    @Option(help: "Write the markdown results here too.") var out: String?

    static let ingressPath = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"

    static func ingress(_ name: String, host: String) -> JSONValue {
        ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": .string(name)],
         "spec": ["ingressClassName": "nginx",
                  "rules": [["host": .string(host), "http": ["paths": [["path": "/", "pathType": "Prefix",
                                                                          "backend": ["service": ["name": "web", "port": ["number": 80]]]]]]]]]]
    }

    func run() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") else { throw ValidationError("nginx is needed (scripts/setup.sh installs it)") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ab") else { throw ValidationError("ab is needed (apt-get install apache2-utils; scripts/setup.sh installs it)") }
        let binary = try switchyardBinary(switchyard)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sy-bench-ingress-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work + "/www", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        // The pod: nginx on 127.0.0.2 with a small answer and a 32 MB file.
        let podPort = try BenchPorts.free()
        _ = try CommandRunner().run(["dd", "if=/dev/urandom", "of=\(work)/www/big", "bs=1M", "count=32", "status=none"])
        try """
        daemon off;
        worker_processes 1;
        pid \(work)/pod.pid;
        error_log \(work)/pod-error.log;
        events { worker_connections 4096; }
        http {
            access_log off;
            sendfile on;
            keepalive_requests 1000000;
            client_body_temp_path \(work)/cb; proxy_temp_path \(work)/px; fastcgi_temp_path \(work)/fc; uwsgi_temp_path \(work)/uw; scgi_temp_path \(work)/sc;
            server {
                listen 127.0.0.2:\(podPort);
                root \(work)/www;
                location = /small { default_type text/plain; return 200 "ok\\n"; }
            }
        }
        """.write(toFile: work + "/pod.conf", atomically: true, encoding: .utf8)
        let pod = CommandRunner.process(["/usr/sbin/nginx", "-c", work + "/pod.conf", "-p", work + "/", "-e", work + "/pod-error.log"])
        try pod.run()
        defer { if pod.isRunning { kill(pod.processIdentifier, SIGQUIT); pod.waitUntilExit() } }

        let server = try await BenchServer.start(binary: binary, etcd: nil)
        defer { server.stop() }
        let api = server.client
        _ = try await api.request("POST", "/apis/networking.k8s.io/v1/ingressclasses",
                                  body: ["apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": ["name": "nginx"],
                                         "spec": ["controller": "k8s.io/ingress-nginx"]])
        _ = try await api.request("POST", "/api/v1/namespaces/default/services",
                                  body: ["apiVersion": "v1", "kind": "Service", "metadata": ["name": "web"], "spec": ["ports": [["name": "http", "port": 80]]]])
        _ = try await api.request("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                                  body: ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                         "metadata": ["name": "web-1", "labels": ["kubernetes.io/service-name": "web"]],
                                         "addressType": "IPv4", "ports": [["name": "http", "port": .int(Int64(podPort)), "protocol": "TCP"]],
                                         "endpoints": [["addresses": ["127.0.0.2"], "conditions": ["ready": true]]]])
        _ = try await api.request("POST", Self.ingressPath, body: Self.ingress("first", host: "first.bench.example"))

        // The controller.
        let http = try BenchPorts.free(), https = try BenchPorts.free()
        let runDir = work + "/run"
        let controller = CommandRunner.process([binary, "ingress-controller", "--kubeconfig", server.dir.appendingPathComponent("kubeconfig").path,
                                                "--http-port", String(http), "--https-port", String(https), "--bind-address", "127.0.0.1",
                                                "--run-dir", runDir, "--worker-processes", "1", "--publish-status-address", "192.0.2.1",
                                                "--log-level", "warning"])
        controller.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try controller.run()
        defer { if controller.isRunning { kill(controller.processIdentifier, SIGTERM); controller.waitUntilExit() } }
        try await BenchHTTP.waitFor(host: "first.bench.example", port: http, timeout: .seconds(30))

        // Phase A: one Ingress in place.
        let few = try await changeLatencies(api, prefix: "a", port: http, runDir: runDir)
        log("ingress change with 1 Ingress: p50 \(fmt(median(few)))")

        // N more Ingresses.
        let t0 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { g in
            for chunk in stride(from: 0, to: ingresses, by: 50) {
                g.addTask {
                    for i in chunk..<min(chunk + 50, ingresses) {
                        _ = try await api.request("POST", Self.ingressPath, body: Self.ingress("load-\(i)", host: "load-\(i).bench.example"))
                    }
                }
            }
            try await g.waitForAll()
        }
        try await BenchHTTP.waitFor(host: "load-\(ingresses - 1).bench.example", port: http, timeout: .seconds(120))
        log("\(ingresses) Ingresses created and served in \(fmt((ContinuousClock.now - t0).seconds))")
        try await Task.sleep(for: .seconds(2))
        let many = try await changeLatencies(api, prefix: "b", port: http, runDir: runDir)
        log("ingress change with \(ingresses + 1) Ingresses: p50 \(fmt(median(many)))")

        // The burst.
        try await Task.sleep(for: .seconds(2))
        let reloadsBefore = Self.reloads(runDir)
        var reloadTimes: [ContinuousClock.Instant] = []
        let burstStart = ContinuousClock.now
        let creating = Task {
            try await withThrowingTaskGroup(of: Void.self) { g in
                for i in 0..<burst {
                    g.addTask { _ = try await api.request("POST", Self.ingressPath, body: Self.ingress("burst-\(i)", host: "burst-\(i).bench.example")) }
                }
                try await g.waitForAll()
            }
        }
        // Each reload's instant, from a poller of nginx's log of its own (every 5 ms), apart from
        // the requests that check what is served (which a reload may hold up).
        let poller = Task.detached { () -> [ContinuousClock.Instant] in
            var times: [ContinuousClock.Instant] = [], seen = reloadsBefore
            while !Task.isCancelled {
                let now = Self.reloads(runDir)
                for _ in seen..<max(seen, now) { times.append(.now) }
                seen = max(seen, now)
                try? await Task.sleep(for: .milliseconds(5))
            }
            return times
        }
        var served = false
        let deadline = ContinuousClock.now + .seconds(120)
        while !served && ContinuousClock.now < deadline {
            served = BenchHTTP.status(host: "burst-\(burst - 1).bench.example", port: http) == 200
                && (0..<burst).allSatisfy { $0 % 10 != 0 || BenchHTTP.status(host: "burst-\($0).bench.example", port: http) == 200 }
            try await Task.sleep(for: .milliseconds(20))
        }
        // Reloads still coming after everything is served count too.
        try await Task.sleep(for: .milliseconds(1500))
        poller.cancel()
        reloadTimes = await poller.value
        try await creating.value
        guard served else { throw ValidationError("the burst was not served within 120 s") }
        let burstTime = ((reloadTimes.last ?? burstStart) - burstStart).seconds
        var mostInASecond = 0
        for (i, t) in reloadTimes.enumerated() {
            mostInASecond = max(mostInASecond, reloadTimes[i...].prefix { $0 - t < .seconds(1) }.count)
        }
        log("burst of \(burst): \(reloadTimes.count) reloads in \(fmt(burstTime)), at most \(mostInASecond) in a second")

        // Requests and throughput: the pod directly, then through the Ingress.
        let direct = try Self.ab(url: "http://127.0.0.2:\(podPort)/small", host: nil, requests: requests)
        let through = try Self.ab(url: "http://127.0.0.1:\(http)/small", host: "first.bench.example", requests: requests)
        var directMBs: [Double] = [], throughMBs: [Double] = []
        for _ in 0..<5 {
            directMBs.append(try Self.download(url: "http://127.0.0.2:\(podPort)/big", host: nil))
            throughMBs.append(try Self.download(url: "http://127.0.0.1:\(http)/big", host: "first.bench.example"))
        }
        let dm = median(directMBs), tm = median(throughMBs)

        func p(_ v: [Double], _ q: Double) -> Double { let s = v.sorted(); return s[min(s.count - 1, Int(Double(s.count) * q))] }
        var md = "## Ingress controller (`switchyard-bench ingress`, \(changes) changes per phase)\n\n"
        md += "| figure | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n"
        md += "| Ingress created → served, \(ingresses + 1) Ingresses in place (p50 \(fmt(p(many, 0.5)))) | p99 \(fmt(p(many, 0.99))) | 1 Ingress in place: p99 \(fmt(p(few, 0.99))) (p50 \(fmt(p(few, 0.5)))) | \(String(format: "%.2f×", p(many, 0.99) / p(few, 0.99))) | reported |\n"
        md += "| burst of \(burst) Ingresses: reloads, most in one second | \(reloadTimes.count) reloads in \(fmt(burstTime)), at most \(mostInASecond) in a second | | | ≤ 1 per second |\n"
        md += "| requests per second through the Ingress (ab -k -c 8, \(requests) requests, \(through.failed) failed) | \(Int(through.rps)) | the pod directly: \(Int(direct.rps)) | \(String(format: "%.2f×", through.rps / direct.rps)) | reported |\n"
        md += "| throughput of a 32 MB download through the Ingress (curl, median of 5) | \(String(format: "%.0f MB/s", tm)) | the pod directly: \(String(format: "%.0f MB/s", dm)) | \(String(format: "%.2f×", tm / dm)) | reported |\n"
        print(md)
        if let out { try md.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// Creates `changes` Ingresses one by one, each after the previous reload's second, and
    /// times each from its create's answer to its host's first 200.
    func changeLatencies(_ api: KubeClient, prefix: String, port: Int, runDir: String) async throws -> [Double] {
        var out: [Double] = []
        for i in 0..<changes {
            try await Task.sleep(for: .milliseconds(1100))
            let host = "\(prefix)-\(i).bench.example"
            _ = try await api.request("POST", Self.ingressPath, body: Self.ingress("\(prefix)-\(i)", host: host))
            let start = ContinuousClock.now
            while BenchHTTP.status(host: host, port: port) != 200 {
                if ContinuousClock.now - start > .seconds(30) { throw ValidationError("\(host) was not served within 30 s") }
                try await Task.sleep(for: .milliseconds(2))
            }
            out.append((ContinuousClock.now - start).seconds)
        }
        return out
    }

    /// How many times nginx was told to reload (its error log's `signal 1 (SIGHUP) received`
    /// lines; each reload also logs a second line of its own, `reconfiguring`).
    static func reloads(_ runDir: String) -> Int {
        guard let text = try? String(contentsOfFile: runDir + "/error.log", encoding: .utf8) else { return 0 }
        return text.components(separatedBy: "signal 1 (SIGHUP) received").count - 1
    }

    static func ab(url: String, host: String?, requests: Int) throws -> (rps: Double, failed: Int) {
        var args = ["ab", "-q", "-k", "-c", "8", "-n", String(requests)]
        if let host { args += ["-H", "Host: \(host)"] }
        let r = try CommandRunner().run(args + [url], timeout: .seconds(300))
        func value(_ label: String) -> String? {
            r.stdout.split(separator: "\n").first { $0.hasPrefix(label) }?.dropFirst(label.count).split(separator: " ").first.map(String.init)
        }
        guard let rps = value("Requests per second:").flatMap(Double.init), let failed = value("Failed requests:").flatMap(Int.init) else {
            throw ValidationError("ab: \(r.stdout)")
        }
        let non2xx = value("Non-2xx responses:").flatMap(Int.init) ?? 0
        return (rps, failed + non2xx)
    }

    /// MB/s of one download.
    static func download(url: String, host: String?) throws -> Double {
        var args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{speed_download}"]
        if let host { args += ["-H", "Host: \(host)"] }
        let r = try CommandRunner().run(args + [url], timeout: .seconds(120))
        let parts = r.stdout.split(separator: " ")
        guard parts.count == 2, parts[0] == "200", let bps = Double(parts[1]) else { throw ValidationError("curl \(url): \(r.stdout)") }
        return bps / 1_000_000
    }
}

enum BenchPorts {
    /// A port free on the loopback addresses now.
    static func free() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw ValidationError("no free port") }
        return Int(UInt16(bigEndian: a.sin_port))
    }
}

/// One GET on a fresh connection to 127.0.0.1, its status (0 when it fails): fast enough to poll
/// every few milliseconds.
enum BenchHTTP {
    static func status(host: String, port: Int) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = UInt16(port).bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return 0 }
        let request = Array("GET /small HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return 0 }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 12 else { return 0 }
        return Int(String(decoding: buffer[9..<12], as: UTF8.self)) ?? 0
    }

    static func waitFor(host: String, port: Int, timeout: Duration) async throws {
        let end = ContinuousClock.now + timeout
        while status(host: host, port: port) != 200 {
            if ContinuousClock.now > end { throw ValidationError("\(host) was not served within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
