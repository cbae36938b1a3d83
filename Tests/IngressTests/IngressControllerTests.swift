import APIServer
import ControllerKit
import Foundation
import HostOS
import IngressController
import IngressNginx
import KubeAPI
import Testing

/// Small HTTP servers on loopback addresses (127.0.0.N), each answering `NAME PATH` and the
/// Host it was asked for: the pods behind the Services. A Python process, stopped by `stop`.
final class Backends: @unchecked Sendable {
    let process: Process
    let port: Int
    static let script = """
    import http.server, socketserver, sys, threading
    port = int(sys.argv[1])
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = ("%s %s %s\\n" % (self.server.name, self.path, self.headers.get("Host"))).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
    servers = []
    for i, name in enumerate(sys.argv[2:]):
        s = S(("127.0.0.%d" % (i + 2), port), H)
        s.name = name
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    """

    init(names: [String]) throws {
        port = try freePort()
        process = CommandRunner.process(["python3", "-c", Self.script, String(port)] + names)
        let out = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardInput = input
        try process.run()
        keepOpen = input
        let line = out.fileHandleForReading.availableData
        guard String(decoding: line, as: UTF8.self).hasPrefix("ready") else { throw TestFailure("the backends did not start") }
    }
    let keepOpen: Pipe

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw TestFailure("no free port") }
    return Int(UInt16(bigEndian: a.sin_port))
}

/// curl's answer, waited for on a thread of its own (not one of the few every test shares).
func curl(_ url: String, host: String, port: Int, extra: [String] = []) async throws -> (code: Int, body: String) {
    try await withCheckedThrowingContinuation { c in
        Thread { c.resume(with: Result { try curlNow(url, host: host, port: port, extra: extra) }) }.start()
    }
}

/// curl's answer: status, body (with `--resolve HOST:PORT:127.0.0.1`).
func curlNow(_ url: String, host: String, port: Int, extra: [String] = []) throws -> (code: Int, body: String) {
    let r = try CommandRunner().run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "--resolve", "\(host):\(port):127.0.0.1"] + extra + [url],
                                    check: false)
    var lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    let code = Int(lines.popLast() ?? "") ?? 0
    return (code, lines.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines))
}

/// A request repeated on a thread of its own every 10 ms until `finish`: the successes and
/// what each failure said.
final class LoadLoop: @unchecked Sendable {
    let lock = NSLock()
    var stop = false, done = false, ok = 0
    var failed: [String] = []

    init(_ request: @escaping @Sendable () -> String?) {
        Thread { [self] in
            while !lock.withLock({ stop }) {
                let failure = request()
                lock.withLock { if let failure { failed.append(failure) } else { ok += 1 } }
                usleep(10_000)
            }
            lock.withLock { done = true }
        }.start()
    }

    func finish() async -> (ok: Int, failed: [String]) {
        lock.withLock { stop = true }
        while !lock.withLock({ done }) { try? await Task.sleep(for: .milliseconds(10)) }
        return lock.withLock { (ok, failed) }
    }
}

@Suite("switchyard ingress-controller on nginx", .serialized)
struct IngressControllerTests {
    static func service(_ name: String, port: Int, portName: String) -> JSONValue {
        ["apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(name)],
         "spec": ["ports": [["name": .string(portName), "port": .int(Int64(port))]]]]
    }

    static func slice(_ service: String, address: String, port: Int, portName: String) -> JSONValue {
        ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": ["name": .string(service + "-1"), "labels": ["kubernetes.io/service-name": .string(service)]],
         "addressType": "IPv4", "ports": [["name": .string(portName), "port": .int(Int64(port)), "protocol": "TCP"]],
         "endpoints": [["addresses": [.string(address)], "conditions": ["ready": true]]]]
    }

    static func path(_ path: String, _ type: String, _ service: String, _ port: Int) -> JSONValue {
        ["path": .string(path), "pathType": .string(type), "backend": ["service": ["name": .string(service), "port": ["number": .int(Int64(port))]]]]
    }

    static func until(_ what: String, timeout: Duration = .seconds(20), _ check: () async throws -> Bool) async throws {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if try await check() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("timed out waiting for \(what)")
    }

    /// Two hosts, three paths and TLS, through a real nginx the controller runs; the status
    /// written; a change applied with one reload, a burst of changes with at most one per second,
    /// none of them dropping a request of a load that runs across them; nginx stopped after.
    @Test func routesEachRequestAndReloadsWithoutDroppingAny() async throws {
        let backends = try Backends(names: ["web", "api"])
        defer { backends.stop() }
        let (_, api) = try await HandlerTransport.make()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-ingress-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // TLS: a certificate for b.example.com from openssl.
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try CommandRunner().run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                     "-keyout", dir + "/tls.key", "-out", dir + "/tls.crt", "-days", "2", "-subj", "/CN=b.example.com",
                                     "-addext", "subjectAltName=DNS:b.example.com"])
        let crt = try Data(contentsOf: URL(fileURLWithPath: dir + "/tls.crt")), key = try Data(contentsOf: URL(fileURLWithPath: dir + "/tls.key"))

        _ = try await api.create(API.path("networking.k8s.io/v1", "ingressclasses"),
                                 ["apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                                  "metadata": ["name": "nginx", "annotations": ["ingressclass.kubernetes.io/is-default-class": "true"]],
                                  "spec": ["controller": "k8s.io/ingress-nginx"]])
        _ = try await api.create(API.path("v1", "secrets", namespace: "default"),
                                 ["apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": ["name": "b-tls"],
                                  "data": ["tls.crt": .string(crt.base64EncodedString()), "tls.key": .string(key.base64EncodedString())]])
        for (name, addr, portName) in [("web", "127.0.0.2", "http"), ("api", "127.0.0.3", "api")] {
            _ = try await api.create(API.path("v1", "services", namespace: "default"), Self.service(name, port: 80, portName: portName))
            _ = try await api.create(API.path("discovery.k8s.io/v1", "endpointslices", namespace: "default"),
                                     Self.slice(name, address: addr, port: backends.port, portName: portName))
        }
        // Classless: the default class is written in by the DefaultIngressClass plugin.
        let created = try await api.create(API.path("networking.k8s.io/v1", "ingresses", namespace: "default"),
                                           ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": "two-hosts"],
                                            "spec": ["tls": [["hosts": ["b.example.com"], "secretName": "b-tls"]],
                                                     "rules": [["host": "a.example.com", "http": ["paths": [Self.path("/", "Prefix", "web", 80),
                                                                                                           Self.path("/api", "Exact", "api", 80)]]],
                                                               ["host": "b.example.com", "http": ["paths": [Self.path("/v1", "Prefix", "api", 80)]]]]]])
        #expect(created[path: ["spec", "ingressClassName"]]?.string == "nginx")

        var config = IngressController.Configuration()
        config.nginx.bindAddress = "127.0.0.1"
        config.nginx.httpPort = try freePort()
        config.nginx.httpsPort = try freePort()
        config.nginx.runDirectory = dir + "/run"
        config.nginx.workerProcesses = "1"
        config.publishStatusAddress = ["192.0.2.10"]
        let controller = IngressController(api: api, configuration: config)
        let run = Task { try await controller.run() }
        defer { run.cancel() }
        let http = config.nginx.httpPort, https = config.nginx.httpsPort
        try await Self.until("nginx serving") { (try? await curl("http://a.example.com:\(http)/", host: "a.example.com", port: http).code) == 200 }

        // Each host and path to its Service.
        #expect(try await curl("http://a.example.com:\(http)/anything", host: "a.example.com", port: http).body == "web /anything a.example.com:\(http)")
        #expect(try await curl("http://a.example.com:\(http)/api", host: "a.example.com", port: http).body == "api /api a.example.com:\(http)")
        #expect(try await curl("http://a.example.com:\(http)/api/x", host: "a.example.com", port: http).body.hasPrefix("web "), "Exact /api only")
        #expect(try await curl("https://b.example.com:\(https)/v1/items", host: "b.example.com", port: https, extra: ["--cacert", dir + "/tls.crt"]).body
                == "api /v1/items b.example.com:\(https)")
        #expect(try await curl("https://b.example.com:\(https)/v1", host: "b.example.com", port: https, extra: ["--cacert", dir + "/tls.crt"]).code == 200)
        #expect(try await curl("https://b.example.com:\(https)/v1x", host: "b.example.com", port: https, extra: ["--cacert", dir + "/tls.crt"]).code == 404,
                "Prefix /v1 does not take /v1x")
        let redirected = try await withCheckedThrowingContinuation { (c: CheckedContinuation<String, any Error>) in
            Thread {
                c.resume(with: Result {
                    try CommandRunner().run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve", "b.example.com:\(http):127.0.0.1",
                                             "http://b.example.com:\(http)/v1/a?q=1"], check: false).stdout
                })
            }.start()
        }
        #expect(redirected == "308 https://b.example.com:\(https)/v1/a?q=1")
        #expect(try await curl("http://c.example.com:\(http)/", host: "c.example.com", port: http).code == 404, "no rule matches")
        #expect(controller.reloads == 0)

        // The status, from --publish-status-address.
        try await Self.until("the Ingress's status") {
            try await api.get(API.path("networking.k8s.io/v1", "ingresses", namespace: "default", name: "two-hosts"))[path: ["status", "loadBalancer", "ingress"]]
                == [["ip": "192.0.2.10"]]
        }

        // A load of fresh connections across the reloads below, on a thread of its own and paced
        // (the whole suite shares this machine); none may fail.
        let load = LoadLoop {
            let r = try? curlNow("http://a.example.com:\(http)/load", host: "a.example.com", port: http, extra: ["-H", "Connection: close"])
            return r?.code == 200 ? nil : "\(r?.code ?? 0) \(r?.body ?? "")"
        }

        // One change: served after one reload.
        var ing = try await api.get(API.path("networking.k8s.io/v1", "ingresses", namespace: "default", name: "two-hosts"))
        var rules = ing[path: ["spec", "rules"]]?.array ?? []
        rules[0][path: ["http", "paths"]] = .array((rules[0][path: ["http", "paths"]]?.array ?? []) + [Self.path("/new", "Prefix", "api", 80)])
        ing[path: ["spec", "rules"]] = .array(rules)
        _ = try await api.update(API.path("networking.k8s.io/v1", "ingresses", namespace: "default", name: "two-hosts"), ing)
        try await Self.until("the new path") { (try? await curl("http://a.example.com:\(http)/new/x", host: "a.example.com", port: http).body.hasPrefix("api ")) == true }
        #expect(controller.reloads == 1)

        // A burst of 20 changes: coalesced, at most one reload per second.
        let start = ContinuousClock.now, before = controller.reloads
        for i in 0..<20 {
            _ = try await api.create(API.path("networking.k8s.io/v1", "ingresses", namespace: "default"),
                                     ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": .string("burst-\(i)")],
                                      "spec": ["rules": [["host": .string("burst-\(i).example.com"), "http": ["paths": [Self.path("/", "Prefix", "web", 80)]]]]]])
        }
        try await Self.until("the burst served") { (try? await curl("http://burst-19.example.com:\(http)/", host: "burst-19.example.com", port: http).code) == 200 }
        let elapsed = ContinuousClock.now - start, reloads = controller.reloads - before
        #expect(reloads >= 1 && Double(reloads) <= 1 + elapsed / .seconds(1), "\(reloads) reloads in \(elapsed)")
        try await Task.sleep(for: .milliseconds(300))
        let (ok, failed) = await load.finish()
        #expect(failed.isEmpty, "\(failed.count) of \(ok + failed.count) failed: \(failed.prefix(3))")
        #expect(ok > 20)

        // A configuration nginx refuses is not applied: a Secret whose PEM does not parse.
        // (The renderer only checks the PEM markers; nginx -t reads the certificate.)
        let garbage = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"
        let reloadsBefore = controller.reloads
        _ = try await api.create(API.path("v1", "secrets", namespace: "default"),
                                 ["apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": ["name": "bad-tls"],
                                  "data": ["tls.crt": .string(Data(garbage.utf8).base64EncodedString()), "tls.key": .string(Data(garbage.utf8).base64EncodedString())]])
        _ = try await api.create(API.path("networking.k8s.io/v1", "ingresses", namespace: "default"),
                                 ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": "bad"],
                                  "spec": ["tls": [["hosts": ["bad.example.com"], "secretName": "bad-tls"]],
                                           "rules": [["host": "bad.example.com", "http": ["paths": [Self.path("/", "Prefix", "web", 80)]]]]]])
        try await Task.sleep(for: .seconds(2))
        #expect(controller.reloads == reloadsBefore, "not applied")
        #expect(try await curl("http://a.example.com:\(http)/api", host: "a.example.com", port: http).body.hasPrefix("api "), "still serving what it served")

        // Stopped: nginx goes with the controller.
        let pid = try #require(Int32((try String(contentsOfFile: dir + "/run/nginx.pid", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        run.cancel()
        _ = try? await run.value
        #expect(kill(pid, 0) != 0, "nginx stopped")
    }
}
