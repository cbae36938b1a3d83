import Foundation
import HostOS
import KubeAPI
import LabServices
import NetLab
import NetnsKit
import Testing

/// `netlab trace` on a real lab: a pod made with `kubectl run --expose` traced through its six
/// steps from the audit log and the components' logs, the steps adding up to the create → Ready
/// time a watch observed, then its EndpointSlice and both proxies' syncs. Then `netlab report`
/// on the same lab, checked in headless Chromium.
@Suite("netlab trace", .serialized,
       .enabled(if: isRoot && ContainerdProcess.available && RegistryProcess.available, "needs root, containerd, runc and docker-registry"))
struct TraceLabTests {
    @Test func aPodsCreationTracedStepByStep() async throws {
        try await HeavyLabs.withLab(prefix: "t", tail: 1500) { name, bin in
            let lab = try await Cluster.up(name: name, nodes: 2, proxyMode: "iptables", binDir: bin, runtime: .containerd, progress: { _ in })
            try await lab.waitForProxies()
            let netlab = bin + "/switchyard-netlab"
            // A watch sees the pod arrive and turn Ready (on the watch's own clock).
            let watcher = Task { () -> (added: Date, ready: Date)? in
                var added: Date?
                let events = try await lab.api.watch("/api/v1/namespaces/default/pods", query: ["fieldSelector": "metadata.name=web", "watch": "true"])
                for try await e in events {
                    let now = Date()
                    if e["type"]?.string == "ADDED", added == nil { added = now }
                    let ready = (e[path: ["object", "status", "conditions"]]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
                    if ready, let added { return (added, now) }
                }
                return nil
            }
            try await Task.sleep(for: .milliseconds(500))
            // A readiness probe a second in: the create → Ready time is long enough that the
            // watch's own delivery delays (tens of ms on a loaded machine) stay inside the 10%.
            let probe = #"{"spec":{"containers":[{"name":"web","readinessProbe":{"httpGet":{"path":"/","port":8080},"initialDelaySeconds":1,"periodSeconds":1}}]}}"#
            let run = try CommandRunner().run([netlab, "kubectl", "--name", name, "run", "web", "--image=switchyard/echo:latest",
                                               "--image-pull-policy=IfNotPresent", "--port", "8080", "--expose",
                                               "--override-type=strategic", "--overrides=\(probe)"], check: false)
            #expect(run.status == 0, "\(run)")
            let timeout = Task { try await Task.sleep(for: .seconds(90)); watcher.cancel() }
            let seen = try #require(try await watcher.value, "the pod did not turn Ready")
            timeout.cancel()
            let observed = seen.ready.timeIntervalSince(seen.added)

            // The proxies program the pod's endpoint shortly after: the trace has both.
            var trace = try #require(try await lab.trace(pod: "web").first)
            for _ in 0..<50 where trace.network.count < 3 {
                try await Task.sleep(for: .milliseconds(200))
                trace = try #require(try await lab.trace(pod: "web").first)
            }
            #expect(trace.steps.map(\.name) == ["Request received, user authenticated", "Authorised", "Admission (with decoding and validation)",
                                                "Stored", "Scheduled", "Started by the kubelet"], "\(trace.text())")
            #expect(trace.steps.allSatisfy { $0.duration >= 0 } && trace.steps.flatMap(\.parts).allSatisfy { $0.duration >= 0 }, "\(trace.text())")
            for (a, b) in zip(trace.steps, trace.steps.dropFirst()) { #expect(abs(a.end.timeIntervalSince(b.start)) < 1e-6, "\(trace.text())") }
            let sum = trace.steps.map(\.duration).reduce(0, +)
            #expect(abs(sum - observed) <= 0.1 * observed, "steps add up to \(sum) s, the watch saw \(observed) s\n\(trace.text())")
            #expect(trace.steps[0].detail.hasPrefix("kubernetes-admin") && trace.steps[0].detail.contains("kubectl/"), "\(trace.text())")
            #expect(trace.steps[2].detail.contains("pod-security.kubernetes.io/enforce-policy"), "\(trace.text())")
            #expect(trace.steps[3].detail.hasPrefix("resourceVersion ") && !trace.steps[3].detail.hasSuffix("?"), "\(trace.text())")
            // The scheduler's parts with both nodes' scores; the kubelet's, on the pod's node, with its address.
            let scheduling = trace.steps[4].parts
            #expect(scheduling.count == 4 && scheduling[2].detail.contains("node-1=") && scheduling[2].detail.contains("node-2="), "\(trace.text())")
            let kubelet = trace.steps[5].parts.map(\.name)
            for part in ["seen by the kubelet", "sandbox created, CNI ADD", "pod address read", "container web created", "container web started",
                         "readiness probe passed (web)", "Ready status written"] {
                #expect(kubelet.contains(part), "\(part): \(trace.text())")
            }
            #expect(!trace.podIP.isEmpty && trace.steps[5].parts.contains { $0.detail == trace.podIP }, "\(trace.text())")
            let slice = trace.network.first?.name.split(separator: " ").dropFirst().first.map(String.init) ?? ""
            #expect(slice.hasPrefix("web-") && trace.network.map(\.name) == ["EndpointSlice \(slice) written", "proxy on node-1 synced", "proxy on node-2 synced"],
                    "\(trace.text())")
            #expect(trace.network.allSatisfy { $0.duration >= 0 }, "\(trace.text())")
            #expect(trace.notes.contains { $0.hasPrefix("no request answered yet") }, "\(trace.text())")

            // A client's request through the Service: the pod logs the first it answers, and the
            // trace ends with it.
            let clusterIP = try #require(try await lab.api.request("GET", "/api/v1/namespaces/default/services/web").body[path: ["spec", "clusterIP"]]?.string)
            let client = try #require((try await lab.api.request("GET", "/api/v1/namespaces/default/pods").body["items"]?.array ?? [])
                .map(\.name).first { $0.hasPrefix("echo-1-") })
            let asked = try CommandRunner().run([netlab, "exec", "--name", name, client, "--", bin + "/switchyard-echo", "get", "http://\(clusterIP):8080/"], check: false)
            #expect(asked.status == 0 && asked.stdout.hasPrefix("web "), "\(asked)")
            for _ in 0..<25 where trace.network.last?.name != "first request answered" {
                try await Task.sleep(for: .milliseconds(200))
                trace = try #require(try await lab.trace(pod: "web").first)
            }
            let answered = try #require(trace.network.last)
            #expect(answered.name == "first request answered" && answered.detail.hasPrefix("GET / from ") && answered.duration >= 0, "\(trace.text())")

            // The command: text, JSON, the SVG timeline; a Deployment's pods; a clear error for a pod that is not there.
            let svg = FileManager.default.temporaryDirectory.appendingPathComponent("trace-\(name).svg").path
            defer { try? FileManager.default.removeItem(atPath: svg) }
            let text = try CommandRunner().run([netlab, "trace", "--name", name, "pod", "web", "--svg", svg], check: false)
            #expect(text.status == 0 && text.stdout.contains("  6  Started by the kubelet"), "\(text)")
            #expect((try? String(contentsOfFile: svg, encoding: .utf8))?.hasPrefix("<svg") == true)
            let json = try CommandRunner().run([netlab, "trace", "--name", name, "pod", "web", "-o", "json"], check: false)
            let parsed = try JSONValue.parse(Data(json.stdout.utf8))
            #expect(parsed["steps"]?.array?.count == 6 && parsed["node"]?.string == trace.node, "\(json)")
            let deployment = try CommandRunner().run([netlab, "trace", "--name", name, "deployment", "echo-1", "-o", "json"], check: false)
            let pods = try JSONValue.parse(Data(deployment.stdout.utf8)).array ?? []
            #expect(pods.count == 1 && pods[0]["steps"]?.array?.count == 6, "\(deployment)")
            #expect(pods.first?[path: ["steps"]]?.array?.first?["detail"]?.string?.hasPrefix("system:serviceaccount:kube-system:replicaset-controller") == true, "\(deployment)")
            let missing = try CommandRunner().run([netlab, "trace", "--name", name, "pod", "nope"], check: false)
            #expect(missing.status != 0 && missing.stderr.contains("not found"), "\(missing)")

            // The report: written, then loaded in headless Chromium, which finds every chart
            // drawn and no error, and whose screenshot has each chart's bars.
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("report-\(name)").path
            defer { try? FileManager.default.removeItem(atPath: out) }
            let report = try CommandRunner().run([netlab, "report", "--name", name, "--out", out], check: false)
            #expect(report.status == 0, "\(report)")
            let page = out + "/report/index.html"
            let html = try String(contentsOfFile: page, encoding: .utf8)
            for chart in ["api-by-verb.svg", "api-by-resource.svg", "api-by-client.svg", "interaction.svg", "runtime-calls-node-1.svg",
                          "runtime-latency-node-2.svg", "trace-default-web.svg"] {
                #expect(html.contains("src=\"\(chart)\""), "\(chart) is not on the page")
            }
            let calls = try String(contentsOfFile: out + "/report/runtime-calls-node-1.svg", encoding: .utf8)
            #expect(calls.contains("run_podsandbox") && calls.contains("create_container"), "\(calls)")
            let clients = try String(contentsOfFile: out + "/report/api-by-client.svg", encoding: .utf8)
            #expect(clients.contains("kube-scheduler") && clients.contains("kubelet node-1") && clients.contains("endpointslice-controller"), "\(clients)")
            guard let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first(where: FileManager.default.isExecutableFile) else {
                Issue.record("chromium is not installed (scripts/setup.sh installs it)")
                return
            }
            let browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=\(out)/chromium"]
            let dom = try CommandRunner().run(browser + ["--virtual-time-budget=5000", "--dump-dom", "file://\(page)"], check: false, timeout: .seconds(120))
            let images = html.components(separatedBy: "<img ").count - 1
            #expect(dom.stdout.contains("data-charts=\"\(images)/\(images)\"") && dom.stdout.contains("data-errors=\"0\""),
                    "\(dom.stdout.prefix(600)) \(dom.stderr.suffix(1500))")
            let shot = out + "/screenshot.png"
            let screenshot = try CommandRunner().run(browser + ["--window-size=1200,9000", "--screenshot=\(shot)", "file://\(page)"], check: false, timeout: .seconds(120))
            #expect(FileManager.default.fileExists(atPath: shot), "\(screenshot)")
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("png_colors.py").path
            // Each chart's bar colour: verbs, resources, clients, the heat map, CRI calls and latency, the trace's bars.
            let colours = try CommandRunner().run(["python3", script, shot, "1f77b4", "ff7f0e", "2ca02c", "purple", "d62728", "8c564b", "3366cc"], check: false)
            let counts = Dictionary(colours.stdout.split(separator: "\n").compactMap { l -> (String, Int)? in
                let p = l.split(separator: " ")
                return p.count == 2 ? (String(p[0]), Int(p[1]) ?? 0) : nil
            }) { a, _ in a }
            #expect(counts.count == 7 && counts.values.allSatisfy { $0 > 200 }, "pixels per chart colour: \(counts) \(colours.stderr)")
        }
    }
}
