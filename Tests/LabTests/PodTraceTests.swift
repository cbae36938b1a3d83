import Foundation
import KubeAPI
import NetLab
import Testing

/// The trace's logic on records written here: the six steps from the audit event's latency
/// annotations, the scheduler's and the kubelet's lines, and the network after Ready. The lab
/// test (TraceLabTests) reads a real lab's records.
@Suite("pod trace from records")
struct PodTraceTests {
    let t0 = Date(timeIntervalSince1970: 1_796_000_000.250)

    func micro(_ offset: Double) -> JSONValue {
        let d = t0.addingTimeInterval(offset)
        let t = d.timeIntervalSince1970
        let f = ISO8601DateFormatter()
        let s = f.string(from: Date(timeIntervalSince1970: t.rounded(.down)))
        return .string(String(s.dropLast()) + String(format: ".%06dZ", Int(((t - t.rounded(.down)) * 1_000_000).rounded())))
    }

    func log(_ offset: Double, _ msg: String, _ fields: [String: JSONValue] = [:]) -> JSONValue {
        var o = fields
        o["ts"] = .double(t0.addingTimeInterval(offset).timeIntervalSince1970 * 1000)
        o["msg"] = .string(msg)
        return .object(o)
    }

    func audit(_ verb: String, resource: String, name: String, subresource: String? = nil, user: String, received: Double, done: Double,
               annotations: [String: JSONValue] = [:], rv: String = "") -> JSONValue {
        var ref: [String: JSONValue] = ["resource": .string(resource), "namespace": "default", "name": .string(name), "apiVersion": "v1"]
        if let subresource { ref["subresource"] = .string(subresource) }
        if !rv.isEmpty { ref["resourceVersion"] = .string(rv) }
        if resource == "pods" && subresource == nil { ref["uid"] = "u-1" }
        return ["kind": "Event", "stage": "ResponseComplete", "verb": .string(verb), "objectRef": .object(ref),
                "user": ["username": .string(user), "groups": ["system:masters", "system:authenticated"]], "userAgent": "kubectl/v1.33.0",
                "sourceIPs": ["10.250.0.1"], "requestReceivedTimestamp": micro(received), "stageTimestamp": micro(done),
                "responseStatus": ["code": 201], "annotations": .object(annotations)]
    }

    var pod: JSONValue {
        ["metadata": ["name": "web", "namespace": "default", "uid": "u-1"], "spec": ["nodeName": "node-1"],
         "status": ["podIP": "10.244.1.7", "conditions": [["type": "Ready", "status": "True"]]]]
    }

    var records: PodTrace.Records {
        PodTrace.Records(audit: [
            audit("create", resource: "pods", name: "web", user: "kubernetes-admin", received: 0, done: 0.002,
                  annotations: ["apiserver.latency.k8s.io/total": "2ms", "apiserver.latency.k8s.io/authentication": "100µs",
                                "apiserver.latency.k8s.io/authorization": "200µs", "apiserver.latency.k8s.io/etcd": "500µs",
                                "authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "",
                                "pod-security.kubernetes.io/enforce-policy": "privileged:latest"], rv: "42"),
            audit("create", resource: "pods", name: "web", subresource: "binding", user: "system:kube-scheduler", received: 0.030, done: 0.032),
            audit("patch", resource: "pods", name: "web", subresource: "status", user: "system:node:node-1", received: 0.5, done: 0.501),
            audit("update", resource: "endpointslices", name: "web-abcde", user: "system:serviceaccount:kube-system:endpointslice-controller",
                  received: 0.2, done: 0.201, rv: "50"),
            audit("update", resource: "endpointslices", name: "web-abcde", user: "system:serviceaccount:kube-system:endpointslice-controller",
                  received: 0.61, done: 0.612, rv: "57"),
        ], logs: [
            "server": [log(0.031, "Successfully bound pod to node", ["pod": "default/web", "node": "node-1", "evaluatedNodes": "2", "feasibleNodes": "2",
                                                                      "scores": "node-1=180,node-2=171", "attempts": "1", "queued": micro(0.004),
                                                                      "attempted": micro(0.010), "decided": micro(0.012)])],
            "kubelet-node-1": [
                log(0.040, "SyncLoop ADD", ["pod": "default/web"]),
                log(0.300, "Created PodSandbox for pod", ["pod": "default/web", "podSandboxID": "0123456789abcdef"]),
                log(0.301, "Determined the ip for pod after sandbox changed", ["pod": "default/web", "IPs": ["10.244.1.7"]]),
                log(0.310, "Container image already present on machine", ["pod": "default/web", "containerName": "web", "image": "switchyard/echo"]),
                log(0.350, "Created container", ["pod": "default/web", "containerName": "web"]),
                log(0.420, "Started container", ["pod": "default/web", "containerName": "web"]),
                log(0.430, "Status for pod updated successfully", ["pod": "default/web", "phase": "Running", "ready": "False"]),
                log(0.590, "SyncLoop (probe)", ["pod": "default/web", "probe": "readiness", "status": "ready", "containerName": "web"]),
                log(0.600, "Status for pod updated successfully", ["pod": "default/web", "phase": "Running", "ready": "True"]),
            ],
            "proxy-node-1": [log(0.3, "synced iptables rules", ["elapsed": "3.0 ms"]), log(0.640, "synced iptables rules", ["elapsed": "4.1 ms"])],
            "proxy-node-2": [log(0.655, "synced iptables rules", ["elapsed": "5.2 ms"])],
        ])
    }

    @Test func sixContiguousStepsFromTheRecords() throws {
        let trace = try PodTrace.build(pod: pod, slices: ["web-abcde"], records: records)
        #expect(trace.steps.map(\.name) == ["Request received, user authenticated", "Authorised", "Admission (with decoding and validation)",
                                            "Stored", "Scheduled", "Started by the kubelet"])
        let durations = trace.steps.map { ($0.duration * 1e6).rounded() / 1e3 }   // ms, to the µs
        #expect(durations == [0.1, 0.2, 1.2, 0.5, 30, 568], "\(durations)")
        for (a, b) in zip(trace.steps, trace.steps.dropFirst()) { #expect(abs(a.end.timeIntervalSince(b.start)) < 1e-6) }
        #expect(abs(trace.steps.map(\.duration).reduce(0, +) - trace.total) < 1e-6)
        #expect(abs(trace.total - 0.600) < 1e-5)
        #expect(trace.steps[0].detail.contains("kubernetes-admin") && trace.steps[0].detail.contains("kubectl/v1.33.0"))
        #expect(trace.steps[2].detail == "pod-security.kubernetes.io/enforce-policy=privileged:latest")
        #expect(trace.steps[3].detail == "resourceVersion 42")
        // The scheduler's parts: its watch, the queue, filter and score, the binding.
        let scheduling = trace.steps[4].parts
        #expect(scheduling.map { ($0.duration * 1e6).rounded() / 1e3 } == [2, 6, 2, 20])
        #expect(scheduling[2].detail == "2 of 2 nodes feasible; scores node-1=180,node-2=171")
        #expect(scheduling[3].detail == "by system:kube-scheduler")
        // The kubelet's: each line closes a part; the Ready status closes the step.
        let kubelet = trace.steps[5].parts
        #expect(kubelet.map(\.name) == ["seen by the kubelet", "sandbox created, CNI ADD", "pod address read", "image present (web)",
                                        "container web created", "container web started", "readiness probe passed (web)", "Ready status written"])
        #expect(kubelet[2].detail == "10.244.1.7")
        // The network: the slice's first write after Ready, then each proxy's first sync after it.
        #expect(trace.network.map(\.name) == ["EndpointSlice web-abcde written", "proxy on node-1 synced", "proxy on node-2 synced"])
        #expect(trace.network.map { ($0.duration * 1e6).rounded() / 1e3 } == [12, 28, 43])
        #expect(trace.network[0].detail.contains("resourceVersion 57"))
        // The outputs.
        let text = trace.text()
        #expect(text.contains("Pod default/web on node-1 (10.244.1.7): Ready 600.0 ms after the API server received its create"))
        #expect(text.contains("  5  Scheduled"))
        let json = trace.json
        #expect(json["steps"]?.array?.count == 6 && json["network"]?.array?.count == 3)
        let svg = trace.svg()
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<rect").count - 1 == 1 + 6 + 4 + 8 + 3)
    }

    /// The first request a client got answered, from the pod's container log (CRI's lines; the
    /// echo server logs it once): after the EndpointSlice's write, the earliest such line.
    @Test func theFirstRequestAnsweredComesFromThePodsLog() throws {
        var r = records
        let ts = { (offset: Double) in self.micro(offset).string! }
        r.answers = ["u-1": ["\(ts(0.8)) stdout F first request answered: GET /late from 10.244.2.9:1234",
                             "\(ts(0.7)) stdout F first request answered: GET / from 10.244.2.5:40000",
                             "not a CRI line first request answered: GET /"],
                     "u-2": ["\(ts(0.65)) stdout F first request answered: GET /other from 10.244.2.5:40001"]]
        let trace = try PodTrace.build(pod: pod, slices: ["web-abcde"], records: r)
        #expect(trace.network.map(\.name) == ["EndpointSlice web-abcde written", "proxy on node-1 synced", "proxy on node-2 synced", "first request answered"])
        let answered = try #require(trace.network.last)
        #expect(answered.detail == "GET / from 10.244.2.5:40000")
        #expect(abs(answered.start.timeIntervalSince(trace.network[0].end)) < 1e-6 && abs(answered.duration - 0.088) < 1e-5, "\(answered.duration)")
        #expect(trace.notes.isEmpty, "\(trace.notes)")
        // A client that asks ten minutes later: the timeline's axis still ends at the last
        // proxy's sync, and the answer's bar runs to its end.
        r.answers = ["u-1": ["\(ts(600)) stdout F first request answered: GET / from 10.244.2.5:40000"]]
        let later = try PodTrace.build(pod: pod, slices: ["web-abcde"], records: r)
        let svg = later.svg()
        #expect(svg.contains(">655.0 ms</text>") && svg.contains(">599388.0 ms</text>"), "\(svg)")
        let ends = svg.components(separatedBy: "<rect x=\"").dropFirst().compactMap { rect -> Double? in
            let x = Double(rect.prefix { $0 != "\"" }), w = rect.components(separatedBy: "width=\"").dropFirst().first.flatMap { Double($0.prefix { $0 != "\"" }) }
            return x.flatMap { x in w.map { x + $0 } }
        }
        #expect(!ends.isEmpty && ends.allSatisfy { $0 <= 930.05 }, "\(ends)")
        // Without such a line, the trace says none was answered yet.
        let none = try PodTrace.build(pod: pod, slices: ["web-abcde"], records: records)
        #expect(none.network.count == 3 && none.notes.contains { $0.hasPrefix("no request answered yet") })
    }

    @Test func whatIsMissingIsSaid() throws {
        var r = records
        r.audit.removeFirst()
        #expect(throws: PodTrace.Failure.self) { try PodTrace.build(pod: pod, slices: [], records: r) }
        // Not Ready yet: no Ready status from its kubelet, and none written.
        var notReady = records
        notReady.logs["kubelet-node-1"]?.removeLast()
        var pending = pod
        pending[path: ["status", "conditions"]] = [["type": "Ready", "status": "False"]]
        #expect(throws: PodTrace.Failure.self) { try PodTrace.build(pod: pending, slices: [], records: notReady) }
        // Without the scheduler's line: the step is there, its parts are not, and a note says so.
        var noLine = records
        noLine.logs["server"] = []
        let trace = try PodTrace.build(pod: pod, slices: ["web-abcde"], records: noLine)
        #expect(trace.steps.count == 6 && trace.steps[4].parts.isEmpty && trace.notes.contains { $0.contains("scheduler's log") })
    }
}

/// The report's logic on figures written here: the Prometheus text read back, requests summed,
/// clients named from their identities, every chart on the page.
@Suite("lab report from figures")
struct LabReportTests {
    static let metrics = """
        # HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.
        # TYPE apiserver_request_total counter
        apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",system_client="",verb="POST",version="v1"} 4
        apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",system_client="",verb="LIST",version="v1"} 9
        apiserver_request_total{code="200",component="apiserver",dry_run="",group="discovery.k8s.io",resource="endpointslices",scope="namespace",subresource="",system_client="",verb="WATCH",version="v1"} 2
        apiserver_request_total{code="404",component="apiserver",dry_run="",group="",resource="",scope="",subresource="other \\"x\\"",system_client="",verb="GET",version=""} 1
        """

    @Test func figuresIntoCharts() {
        let s = LabReport.samples(Self.metrics)
        #expect(s.count == 4)
        #expect(s[3].labels["subresource"] == "other \"x\"" && s[3].value == 1)
        #expect(LabReport.sum(s, "apiserver_request_total", by: "verb") == [.init("LIST", 9), .init("POST", 4), .init("WATCH", 2), .init("GET", 1)])
        #expect(LabReport.sum(s, "apiserver_request_total", by: "resource") == [.init("pods", 13), .init("endpointslices", 2), .init("(none)", 1)])
        #expect(LabReport.client(user: "system:node:node-1", agent: "switchyard/v1.33") == "kubelet node-1")
        #expect(LabReport.client(user: "system:serviceaccount:kube-system:endpointslice-controller", agent: "") == "endpointslice-controller")
        #expect(LabReport.client(user: "system:kube-scheduler", agent: "") == "kube-scheduler")
        #expect(LabReport.client(user: "kubernetes-admin", agent: "kubectl/v1.33.1 (linux/amd64)") == "kubectl (kubernetes-admin)")
        let audit: [JSONValue] = [
            ["stage": "ResponseComplete", "user": ["username": "system:kube-scheduler"], "objectRef": ["resource": "pods", "subresource": "binding"]],
            ["stage": "ResponseComplete", "user": ["username": "system:node:node-1"], "objectRef": ["resource": "pods", "subresource": "status"]],
            ["stage": "ResponseComplete", "user": ["username": "system:node:node-1"], "objectRef": ["resource": "pods", "subresource": "status"]],
        ]
        let kubelet = """
            kubelet_runtime_operations_total{operation_type="run_podsandbox"} 2
            kubelet_runtime_operations_duration_seconds_sum{operation_type="run_podsandbox"} 0.5
            kubelet_runtime_operations_duration_seconds_count{operation_type="run_podsandbox"} 2
            """
        let r = LabReport.make(apiMetrics: Self.metrics, audit: audit, kubeletMetrics: ["node-1": kubelet], comparison: [], comparisonTable: nil,
                               traces: [], labName: "x")
        #expect(Set(r.files.keys) == ["api-by-verb.svg", "api-by-resource.svg", "api-by-client.svg", "interaction.svg",
                                      "runtime-calls-node-1.svg", "runtime-latency-node-1.svg"])
        for f in r.files.keys { #expect(r.html.contains("src=\"\(f)\"")) }
        #expect(r.files["runtime-latency-node-1.svg"]?.contains("250 ms") == true, "mean of 0.5 s over 2 calls")
        #expect(r.files["interaction.svg"]?.contains("kubelet node-1 → pods/status: 2") == true)
        #expect(r.html.contains("No comparison yet"))
    }
}
