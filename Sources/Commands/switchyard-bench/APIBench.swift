import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KubeAPI
import KubeClient

/// The API machinery's figures: server-side apply of a 200-line Deployment against a merge
/// patch of the same change, and listing custom objects against listing Services, both through
/// a real `switchyard server` and in the same run.
struct APIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Measure server-side apply against merge patches, and lists of custom objects against lists of Services.")

    @Option(help: "Applies (and merge patches) timed.") var iterations = 500
    @Option(help: "Objects of each kind listed.") var objects = 10_000
    @Option(help: "Concurrent writers while loading.") var writers = 8
    @Option(help: "The switchyard binary.") var switchyard: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    /// A Deployment of about 200 lines of YAML: two containers with environment, ports, probes,
    /// resources and mounts, volumes, tolerations, affinity.
    static func deployment(replicas: Int) -> String {
        var l = [
            "apiVersion: apps/v1", "kind: Deployment", "metadata:", "  name: big", "  labels: {app: big, tier: web, team: platform}",
            "  annotations: {owner: bench, purpose: server-side-apply}", "spec:", "  replicas: \(replicas)", "  revisionHistoryLimit: 5",
            "  selector:", "    matchLabels: {app: big}", "  strategy:", "    type: RollingUpdate", "    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}",
            "  template:", "    metadata:", "      labels: {app: big, tier: web}", "    spec:", "      serviceAccountName: default",
            "      terminationGracePeriodSeconds: 20", "      containers:",
        ]
        for c in ["web", "sidecar"] {
            l += ["      - name: \(c)", "        image: registry.example/\(c):1.2.3", "        imagePullPolicy: IfNotPresent",
                  "        args: [\"--port=8080\", \"--log-level=info\"]", "        ports:",
                  "        - {name: http, containerPort: 8080, protocol: TCP}", "        - {name: metrics, containerPort: 9090, protocol: TCP}", "        env:"]
            for i in 0..<30 { l += ["        - name: VAR_\(i)", "          value: \"value-\(i)\""] }
            l += ["        resources:", "          requests: {cpu: 100m, memory: 128Mi}", "          limits: {cpu: 500m, memory: 256Mi}",
                  "        readinessProbe:", "          httpGet: {path: /ready, port: 8080}", "          periodSeconds: 5",
                  "        livenessProbe:", "          httpGet: {path: /live, port: 8080}", "          initialDelaySeconds: 10",
                  "        volumeMounts:", "        - {name: config, mountPath: /etc/config}", "        - {name: cache, mountPath: /cache}"]
        }
        l += ["      volumes:", "      - name: config", "        configMap: {name: big-config}", "      - name: cache", "        emptyDir: {}",
              "      tolerations:", "      - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}", "      affinity:",
              "        podAntiAffinity:", "          preferredDuringSchedulingIgnoredDuringExecution:", "          - weight: 100",
              "            podAffinityTerm:", "              topologyKey: kubernetes.io/hostname", "              labelSelector:",
              "                matchLabels: {app: big}"]
        return l.joined(separator: "\n") + "\n"
    }

    static let crd: JSONValue = [
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": ["name": "widgets.bench.example.com"],
        "spec": ["group": "bench.example.com", "scope": "Namespaced", "names": ["plural": "widgets", "singular": "widget", "kind": "Widget"],
                 "versions": [["name": "v1", "served": true, "storage": true,
                               "schema": ["openAPIV3Schema": ["type": "object", "properties": [
                                   "spec": ["type": "object", "properties": ["size": ["type": "integer"], "colour": ["type": "string"],
                                                                             "ports": ["type": "array", "items": ["type": "integer"]]]]]]]]]],
    ]

    func run() async throws {
        let server = try await BenchServer.start(binary: try switchyardBinary(switchyard), etcd: nil)
        defer { server.stop() }
        let client = server.client
        try await Task.sleep(for: .seconds(1))
        let path = "/apis/apps/v1/namespaces/default/deployments/big"

        // Server-side apply against merge patch: each request changes replicas (2, 3, 2, …).
        let lines = Self.deployment(replicas: 1).split(separator: "\n").count
        log("applying a \(lines)-line Deployment \(iterations) times")
        // Sent as kubectl sends it: the object as JSON (which is YAML) in an apply patch.
        func config(_ replicas: Int) throws -> Data { try YAMLToJSON.convert(Self.deployment(replicas: replicas)).serialized() }
        var r = try await client.rawRequest("PATCH", path, query: ["fieldManager": "bench"], body: try config(1),
                                            contentType: "application/apply-patch+yaml")
        guard r.status == 201 else { throw ValidationError("first apply: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        var apply: [Double] = [], merge: [Double] = []
        let conn = try KeepAliveHTTP(host: client.config.host, port: client.config.port)
        // The two bodies made once: the bench's own work stays out of the way of the server's.
        let bodies = [try config(2), try config(3)]
        for i in 0..<(iterations + 20) {
            let body = bodies[i % 2]
            let t0 = ContinuousClock.now
            let a = try conn.request("PATCH", path + "?fieldManager=bench", body: body, contentType: "application/apply-patch+yaml")
            let t = (ContinuousClock.now - t0).seconds * 1000
            guard a.status == 200 else { throw ValidationError("apply: \(a.status) \(String(decoding: a.body, as: UTF8.self))") }
            if i >= 20 { apply.append(t) }
        }
        for i in 0..<(iterations + 20) {
            let body = Data(#"{"spec":{"replicas":\#(2 + i % 2)}}"#.utf8)
            let t0 = ContinuousClock.now
            let m = try conn.request("PATCH", path + "?fieldManager=bench-merge", body: body, contentType: "application/merge-patch+json")
            let t = (ContinuousClock.now - t0).seconds * 1000
            guard m.status == 200 else { throw ValidationError("merge patch: \(m.status) \(String(decoding: m.body, as: UTF8.self))") }
            if i >= 20 { merge.append(t) }
        }
        apply.sort()
        merge.sort()
        func pct(_ a: [Double], _ p: Double) -> Double { a[min(a.count - 1, Int(Double(a.count) * p))] }

        // Lists: custom objects against Services, the same number of each.
        log("loading \(objects) Services and \(objects) custom objects")
        r = try await client.rawRequest("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: Self.crd.serialized())
        guard r.status == 201 else { throw ValidationError("definition: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        _ = try await client.request("POST", "/api/v1/namespaces", body: ["metadata": ["name": "svc"]])
        _ = try await client.request("POST", "/api/v1/namespaces", body: ["metadata": ["name": "cr"]])
        let writers = self.writers, count = objects
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    for i in stride(from: w, to: count, by: writers) {
                        let svc: JSONValue = ["metadata": ["name": .string("svc-\(i)"), "labels": ["app": "bench"]],
                                              "spec": ["selector": ["app": .string("a\(i)")], "ports": [["name": "http", "port": 80, "targetPort": 8080]]]]
                        let a = try await client.request("POST", "/api/v1/namespaces/svc/services", body: svc)
                        guard a.status == 201 else { throw ValidationError("service: \(a.status) \(a.body.text())") }
                        let w: JSONValue = ["apiVersion": "bench.example.com/v1", "kind": "Widget",
                                            "metadata": ["name": .string("widget-\(i)"), "labels": ["app": "bench"]],
                                            "spec": ["size": .int(Int64(i)), "colour": "blue", "ports": [80, 443]]]
                        let b = try await client.request("POST", "/apis/bench.example.com/v1/namespaces/cr/widgets", body: w)
                        guard b.status == 201 else { throw ValidationError("widget: \(b.status) \(b.body.text())") }
                    }
                }
            }
            try await group.waitForAll()
        }
        func listMedian(_ p: String) async throws -> Double {
            var times: [Double] = []
            for _ in 0..<7 {
                let t0 = ContinuousClock.now
                let l = try await client.rawRequest("GET", p)
                times.append((ContinuousClock.now - t0).seconds * 1000)
                guard l.status == 200 else { throw ValidationError("list \(p): \(l.status)") }
            }
            return median(times)
        }
        let services = try await listMedian("/api/v1/namespaces/svc/services")
        let widgets = try await listMedian("/apis/bench.example.com/v1/namespaces/cr/widgets")

        func f(_ v: Double) -> String { String(format: "%.2f", v) }
        let ratio = pct(apply, 0.99) / pct(merge, 0.99)
        let report = """
            | figure | measured | baseline (same run) | ratio | target |
            |---|---|---|---|---|
            | server-side apply of a \(lines)-line Deployment, p99 (p50 \(f(pct(apply, 0.5))) ms) | \(f(pct(apply, 0.99))) ms | target 5 ms | \(f(pct(apply, 0.99) / 5))× | < 5 ms |
            | server-side apply p99 against a merge patch of the same change, p99 (p50 \(f(pct(merge, 0.5))) ms) | \(f(pct(apply, 0.99))) ms | \(f(pct(merge, 0.99))) ms | \(f(ratio))× | < 3× |
            | list of \(objects) custom objects (median of 7) | \(f(widgets)) ms | \(objects) Services: \(f(services)) ms | \(f(widgets / services))× | < 1.5× |

            """
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}

/// One kept-alive HTTP/1.1 connection, as client-go and kubectl keep theirs: the figures are the
/// server's, not a connection's setup (switchyard's own client opens one per request).
final class KeepAliveHTTP {
    let fd: Int32
    let host: String
    var buffer: [UInt8] = []

    init(host: String, port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { close(fd); throw ValidationError("connect \(host):\(port): errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        self.fd = fd
        self.host = host
    }

    deinit { close(fd) }

    /// Sends a request and reads the whole answer (the server says its length).
    func request(_ method: String, _ path: String, body: Data, contentType: String, token: String? = nil) throws -> (status: Int, body: [UInt8]) {
        let auth = token.map { "Authorization: Bearer \($0)\r\n" } ?? ""
        var req = Array("\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Type: \(contentType)\r\nAccept: application/json\r\n\(auth)Content-Length: \(body.count)\r\n\r\n".utf8)
        req += body
        var sent = 0
        while sent < req.count {
            let n = req[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw ValidationError("send: errno \(errno)") }
            sent += n
        }
        func fill() throws {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw ValidationError("recv: connection closed") }
            buffer += chunk[0..<n]
        }
        let separator: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int?
        while headerEnd == nil {
            if buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where buffer[i] == 13 && Array(buffer[i..<(i + 4)]) == separator { headerEnd = i; break }
            }
            if headerEnd == nil { try fill() }
        }
        let head = String(decoding: buffer[0..<headerEnd!], as: UTF8.self).split(separator: "\r\n")
        let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        let length = head.compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "content-length" ? Int(parts[1].trimmingCharacters(in: .whitespaces)) : nil
        }.first ?? 0
        let start = headerEnd! + 4
        while buffer.count < start + length { try fill() }
        let out = Array(buffer[start..<(start + length)])
        buffer.removeFirst(start + length)
        return (status, out)
    }
}
