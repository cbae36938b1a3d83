import ArgumentParser
import Foundation
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

    func binary() throws -> String {
        if let switchyard { return switchyard }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let p = me.deletingLastPathComponent().appendingPathComponent("switchyard").path
        guard FileManager.default.isExecutableFile(atPath: p) else { throw ValidationError("build switchyard first (or pass --switchyard)") }
        return p
    }

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
        let server = try await BenchServer.start(binary: try binary(), etcd: nil)
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
        for i in 0..<(iterations + 20) {
            let body = try config(2 + i % 2)
            let t0 = ContinuousClock.now
            r = try await client.rawRequest("PATCH", path, query: ["fieldManager": "bench"], body: body, contentType: "application/apply-patch+yaml")
            let t = (ContinuousClock.now - t0).seconds * 1000
            guard r.status == 200 else { throw ValidationError("apply: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
            if i >= 20 { apply.append(t) }
        }
        for i in 0..<(iterations + 20) {
            let body = Data(#"{"spec":{"replicas":\#(2 + i % 2)}}"#.utf8)
            let t0 = ContinuousClock.now
            r = try await client.rawRequest("PATCH", path, query: ["fieldManager": "bench-merge"], body: body, contentType: "application/merge-patch+json")
            let t = (ContinuousClock.now - t0).seconds * 1000
            guard r.status == 200 else { throw ValidationError("merge patch: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
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
            return times.sorted()[3]
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

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
