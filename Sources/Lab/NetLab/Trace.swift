import Foundation
import KubeAPI

/// A pod's creation, step by step, from the lab's own records: the classic six steps (the request
/// arrives and its user is authenticated; it is authorised; admission; it is stored; the scheduler
/// picks a node and binds the pod; that node's kubelet starts it), each with when it began and
/// how long it took, then the network: the EndpointSlice written with the pod ready, each
/// node's proxy programming it, and the first request a client got answered.
///
/// The records are the API server's audit log (each write at Metadata level, with upstream's
/// `apiserver.latency.k8s.io/*` annotations, which split the request into authentication,
/// authorization, the store and the rest: admission, with decoding and validation) and the
/// components' JSON log lines (the scheduler's "Successfully bound pod to node" with the queue
/// times and the scores, the kubelet's sandbox, image, container, probe and status lines, the
/// proxies' syncs), and the pod's own log (the lab's echo server logs the first request it
/// answers, and CRI's log file gives the time). The steps are contiguous: they add up to the time from the request's
/// arrival to the pod's Ready status.
public struct PodTrace: Sendable {
    public struct Step: Sendable {
        public var name: String
        public var start: Date
        public var end: Date
        /// What the records say about it (who, which node, which scores, which address).
        public var detail: String
        public var parts: [Step] = []
        public var duration: Double { end.timeIntervalSince(start) }

        public init(name: String, start: Date, end: Date, detail: String = "", parts: [Step] = []) {
            self.name = name
            self.start = start
            self.end = end
            self.detail = detail
            self.parts = parts
        }
    }

    public var namespace: String
    public var name: String
    public var node: String
    public var podIP: String
    /// The six steps, in order.
    public var steps: [Step]
    /// After Ready: the EndpointSlice, the proxies' syncs (empty when no Service selects the pod)
    /// and the first request answered.
    public var network: [Step]
    /// What the records did not have (a step left out says why here).
    public var notes: [String]

    public var received: Date { steps.first?.start ?? Date() }
    public var ready: Date { steps.last?.end ?? Date() }
    /// From the request's arrival to the pod's Ready status.
    public var total: Double { ready.timeIntervalSince(received) }

    /// What a trace is built from: audit events (any order, any stage) and log lines by their
    /// source (`server`, `scheduler-cp-1`, `kubelet-node-1`, `proxy-node-2`, …).
    public struct Records: Sendable {
        public var audit: [JSONValue]
        public var logs: [String: [JSONValue]]
        /// The pods' container log lines (CRI's form: `TIME STREAM TAG MESSAGE`) that tell of a
        /// first request answered, by pod UID.
        public var answers: [String: [String]]
        public init(audit: [JSONValue], logs: [String: [JSONValue]], answers: [String: [String]] = [:]) {
            self.audit = audit
            self.logs = logs
            self.answers = answers
        }
    }

    /// What the lab's echo server logs, once, when it has answered a client's request (not a probe's).
    public static let answeredMark = "first request answered: "

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    // MARK: building

    /// The trace of `pod` (the object as the API has it now), with the names of the
    /// EndpointSlices that list it.
    public static func build(pod: JSONValue, slices: [String], records: Records) throws -> PodTrace {
        let ns = pod.namespace, name = pod.name, uid = pod.uid
        let key = "\(ns)/\(name)"
        var notes: [String] = []
        func completed(_ e: JSONValue, resource: String, subresource: String? = nil) -> Bool {
            guard e["stage"]?.string == "ResponseComplete", let ref = e["objectRef"] else { return false }
            return ref["resource"]?.string == resource && (ref["subresource"]?.string ?? "") == (subresource ?? "")
                && ref["namespace"]?.string == ns && (e["responseStatus"]?["code"]?.int ?? 0) < 300
        }
        // 1-4: the create, as the API server served it.
        let creates = records.audit.filter { completed($0, resource: "pods") && $0["verb"]?.string == "create" && $0[path: ["objectRef", "name"]]?.string == name }
        guard let create = creates.last(where: { $0[path: ["objectRef", "uid"]]?.string == uid }) ?? creates.last,
              let received = time(create["requestReceivedTimestamp"]?.string), let answered = time(create["stageTimestamp"]?.string) else {
            throw Failure(description: "no create of pod \(key) in the audit log (it records writes at Metadata level from the lab's start; was the pod made before?)")
        }
        let annotations = create["annotations"]?.object ?? [:]
        func latency(_ k: String) -> Double { annotations["apiserver.latency.k8s.io/\(k)"]?.string.flatMap(GoDuration.seconds) ?? 0 }
        let total = max(answered.timeIntervalSince(received), latency("total"))
        let authn = latency("authentication"), authz = latency("authorization"), etcd = latency("etcd")
        let admission = max(0, total - authn - authz - etcd)
        let user = create["user"]?["username"]?.string ?? "?"
        let groups = (create["user"]?["groups"]?.array ?? []).compactMap(\.string)
        let agent = create["userAgent"]?.string ?? "?"
        let source = (create["sourceIPs"]?.array ?? []).compactMap(\.string).first ?? "?"
        let decision = annotations["authorization.k8s.io/decision"]?.string ?? "allow"
        let reason = annotations["authorization.k8s.io/reason"]?.string ?? ""
        let admitted = annotations.filter { !$0.key.hasPrefix("apiserver.latency.k8s.io/") && !$0.key.hasPrefix("authorization.k8s.io/") }
            .sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.string ?? "")" }
        let rv = create[path: ["objectRef", "resourceVersion"]]?.string ?? "?"
        var t = received
        func next(_ seconds: Double) -> (Date, Date) { let s = t; t = t.addingTimeInterval(seconds); return (s, t) }
        var steps: [Step] = []
        var (s, e) = next(authn)
        steps.append(Step(name: "Request received, user authenticated", start: s, end: e,
                          detail: "\(user) (\(groups.joined(separator: ", "))) from \(source) with \(agent)"))
        (s, e) = next(authz)
        steps.append(Step(name: "Authorised", start: s, end: e, detail: decision + (reason.isEmpty ? "" : ": \(reason)")))
        (s, e) = next(admission)
        steps.append(Step(name: "Admission (with decoding and validation)", start: s, end: e,
                          detail: admitted.isEmpty ? "no plugin annotated the request" : admitted.joined(separator: ", ")))
        (s, e) = next(etcd)
        steps.append(Step(name: "Stored", start: s, end: answered > e ? answered : e, detail: "resourceVersion \(rv)"))
        let stored = steps[3].end

        // 5: the scheduler's binding.
        let node = pod[path: ["spec", "nodeName"]]?.string ?? ""
        let bindings = records.audit.filter { completed($0, resource: "pods", subresource: "binding") && $0[path: ["objectRef", "name"]]?.string == name }
        let binding = bindings.first { (time($0["stageTimestamp"]?.string) ?? .distantPast) >= stored }
        let bound: Date
        var scheduling: [Step] = []
        var schedulingDetail = node.isEmpty ? "not scheduled" : "to \(node)"
        if let binding, let b = time(binding["stageTimestamp"]?.string) {
            bound = b
            let binder = binding["user"]?["username"]?.string ?? "?"
            let line = records.logs.filter { $0.key.hasPrefix("scheduler") || $0.key.hasPrefix("server") }.flatMap(\.value)
                .last { $0["msg"]?.string == "Successfully bound pod to node" && $0["pod"]?.string == key && (logTime($0) ?? .distantPast) >= stored }
            if let line, let queued = time(line["queued"]?.string), let attempted = time(line["attempted"]?.string), let decided = time(line["decided"]?.string) {
                let q = clamp(queued, stored, bound), a = clamp(attempted, q, bound), d = clamp(decided, a, bound)
                let attempts = Int(line["attempts"]?.string ?? "") ?? 1
                scheduling = [
                    Step(name: "seen by the scheduler, queued", start: stored, end: q, detail: "its watch"),
                    Step(name: "waited in the scheduling queue", start: q, end: a, detail: attempts > 1 ? "\(attempts) attempts" : "first attempt"),
                    Step(name: "filtered and scored the nodes", start: a, end: d,
                         detail: "\(line["feasibleNodes"]?.string ?? "?") of \(line["evaluatedNodes"]?.string ?? "?") nodes feasible"
                            + ((line["scores"]?.string ?? "").isEmpty ? "" : "; scores \(line["scores"]!.string!)")),
                    Step(name: "bound (pods/binding)", start: d, end: bound, detail: "by \(binder)"),
                ]
                schedulingDetail = "to \(node): \(line["feasibleNodes"]?.string ?? "?") of \(line["evaluatedNodes"]?.string ?? "?") nodes feasible"
            } else {
                notes.append("the scheduler's log has no line for \(key): its queue and scores are not shown")
            }
        } else if !node.isEmpty {
            // Placed by its creator (spec.nodeName), no scheduler involved.
            bound = stored
            schedulingDetail = "spec.nodeName \(node) was set by its creator: no scheduling"
        } else {
            throw Failure(description: "pod \(key) is not bound to a node yet")
        }
        steps.append(Step(name: "Scheduled", start: stored, end: bound, detail: schedulingDetail, parts: scheduling))

        // 6: the kubelet, from the binding to the Ready status.
        let kubeletLines = (records.logs["kubelet-\(node)"] ?? []).filter { $0["pod"]?.string == key && (logTime($0) ?? .distantPast) >= stored }
        var ready: Date?
        var parts: [Step] = []
        var from = bound
        for l in kubeletLines {
            guard let at = logTime(l), ready == nil else { continue }
            let msg = l["msg"]?.string ?? ""
            let container = l["containerName"]?.string ?? ""
            let what: String, detail: String
            switch msg {
            case "SyncLoop ADD": what = "seen by the kubelet"; detail = "its watch"
            case "Created PodSandbox for pod": what = "sandbox created, CNI ADD"; detail = "sandbox \(String((l["podSandboxID"]?.string ?? "").prefix(12)))"
            case "Determined the ip for pod after sandbox changed":
                what = "pod address read"; detail = (l["IPs"]?.array ?? []).compactMap(\.string).joined(separator: ", ")
            case "Container image already present on machine": what = "image present (\(container))"; detail = l["image"]?.string ?? ""
            case "Pulled image": what = "image pulled (\(container))"; detail = "\(l["image"]?.string ?? ""), \(l["size"]?.string ?? "?") bytes"
            case "Created container": what = "container \(container) created"; detail = "CreateContainer"
            case "Started container": what = "container \(container) started"; detail = "StartContainer"
            case "SyncLoop (probe)" where l["status"]?.string == "ready": what = "readiness probe passed (\(container))"; detail = "probe"
            case "Status for pod updated successfully" where l["ready"]?.string == "True":
                what = "Ready status written"; detail = "phase \(l["phase"]?.string ?? "")"
                ready = at
            default: continue
            }
            let start = from, end = max(at, from)
            parts.append(Step(name: what, start: start, end: end, detail: detail))
            from = end
        }
        if ready == nil {
            // No kubelet log of it (netlab's netns pods post their status themselves): the first
            // status write after the binding that the audit log has.
            let statuses = records.audit.filter { completed($0, resource: "pods", subresource: "status") && $0[path: ["objectRef", "name"]]?.string == name }
            if pod.isReady, let w = statuses.compactMap({ time($0["stageTimestamp"]?.string) }).filter({ $0 >= bound }).min() {
                ready = w
                notes.append("no kubelet log lines for \(key): its start is the first status write after the binding")
            }
        }
        guard let readyAt = ready else { throw Failure(description: "pod \(key) is not Ready yet (its kubelet has not written a Ready status)") }
        steps.append(Step(name: "Started by the kubelet", start: bound, end: readyAt,
                          detail: "on \(node)" + (pod[path: ["status", "podIP"]]?.string.map { ", address \($0)" } ?? ""), parts: parts))

        // The network: the EndpointSlice with the pod ready, then each proxy's sync.
        var network: [Step] = []
        let sliceWrites = records.audit.filter {
            completed($0, resource: "endpointslices") && ["create", "update", "patch"].contains($0["verb"]?.string ?? "")
                && slices.contains($0[path: ["objectRef", "name"]]?.string ?? "")
        }.compactMap { e in time(e["stageTimestamp"]?.string).map { (e, $0) } }.filter { $0.1 >= readyAt }.min { $0.1 < $1.1 }
        if let (w, at) = sliceWrites {
            network.append(Step(name: "EndpointSlice \(w[path: ["objectRef", "name"]]?.string ?? "") written", start: readyAt, end: at,
                                detail: "by \(w["user"]?["username"]?.string ?? "?"), resourceVersion \(w[path: ["objectRef", "resourceVersion"]]?.string ?? "?")"))
            for (source, lines) in records.logs.sorted(by: { $0.key < $1.key }) where source.hasPrefix("proxy-") {
                guard let sync = lines.first(where: { ($0["msg"]?.string ?? "").hasPrefix("synced ") && (logTime($0) ?? .distantPast) >= at }),
                      let synced = logTime(sync) else { continue }
                network.append(Step(name: "proxy on \(source.dropFirst("proxy-".count)) synced", start: at, end: synced,
                                    detail: "\(sync["msg"]?.string ?? "") (\(sync["elapsed"]?.string ?? "?"))"))
            }
        } else if !slices.isEmpty {
            notes.append("no EndpointSlice write after the pod was Ready in the audit log")
        }
        // The first request a client got answered: from when the pod could be reached through
        // its Service (the EndpointSlice's write), or from Ready.
        let firstAnswer = (records.answers[uid] ?? []).compactMap { line -> (Date, String)? in
            let f = line.split(separator: " ", maxSplits: 3)
            guard f.count == 4, let at = time(String(f[0])), let mark = f[3].range(of: answeredMark) else { return nil }
            return (at, String(f[3][mark.upperBound...]))
        }.min { $0.0 < $1.0 }
        if let (at, what) = firstAnswer {
            let from = network.first?.end ?? readyAt
            network.append(Step(name: "first request answered", start: min(from, at), end: at, detail: what))
        } else if !slices.isEmpty {
            notes.append("no request answered yet (the pod's log tells of none)")
        }
        return PodTrace(namespace: ns, name: name, node: node, podIP: pod[path: ["status", "podIP"]]?.string ?? "", steps: steps, network: network, notes: notes)
    }

    static func clamp(_ d: Date, _ lo: Date, _ hi: Date) -> Date { min(max(d, lo), hi) }

    /// A MicroTime or RFC 3339 time (`2026-12-07T06:40:01.123456Z`).
    public static func time(_ s: String?) -> Date? {
        s.flatMap(RFC3339.seconds).map(Date.init(timeIntervalSince1970:))
    }

    /// A JSON log line's time (`ts`, milliseconds since the epoch).
    static func logTime(_ line: JSONValue) -> Date? {
        switch line["ts"] {
        case .double(let ms)?: return Date(timeIntervalSince1970: ms / 1000)
        case .int(let ms)?: return Date(timeIntervalSince1970: Double(ms) / 1000)
        default: return nil
        }
    }
}

extension JSONValue {
    /// Whether a pod's Ready condition is True.
    var isReady: Bool {
        (self[path: ["status", "conditions"]]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
    }
}

// MARK: output

extension PodTrace {
    static func ms(_ seconds: Double) -> String { String(format: seconds < 0.01 ? "%.2f" : "%.1f", seconds * 1000) }

    /// The steps as a table: each step's start after the request's arrival and its duration, in ms.
    public func text() -> String {
        var out = "Pod \(namespace)/\(name) on \(node.isEmpty ? "?" : node)\(podIP.isEmpty ? "" : " (\(podIP))"): Ready \(Self.ms(total)) ms after the API server received its create\n\n"
        out += "  #  STEP" + String(repeating: " ", count: 38) + "AT (ms)   TOOK (ms)  DETAIL\n"
        func row(_ number: String, _ s: Step, indent: Int) -> String {
            let label = String(repeating: " ", count: indent) + s.name
            let padded = label.count >= 42 ? String(label.prefix(41)) + " " : label + String(repeating: " ", count: 42 - label.count)
            let at = Self.ms(s.start.timeIntervalSince(received)), took = Self.ms(s.duration)
            return "  \(number)  \(padded)" + String(repeating: " ", count: max(1, 7 - at.count)) + at
                + String(repeating: " ", count: max(2, 12 - took.count)) + took + "  \(s.detail)\n"
        }
        for (i, s) in steps.enumerated() {
            out += row(String(i + 1), s, indent: 0)
            for p in s.parts { out += row(" ", p, indent: 3) }
        }
        if !network.isEmpty {
            out += "\n  Network, after Ready:\n"
            for s in network { out += row(" ", s, indent: 3) }
        }
        for n in notes { out += "\n  note: \(n)" }
        return out + (notes.isEmpty ? "" : "\n")
    }

    public var json: JSONValue {
        func step(_ s: Step) -> JSONValue {
            var o: [String: JSONValue] = ["name": .string(s.name), "start": .string(Self.microTime(s.start)), "end": .string(Self.microTime(s.end)),
                                          "offsetSeconds": .double(s.start.timeIntervalSince(received)), "durationSeconds": .double(s.duration),
                                          "detail": .string(s.detail)]
            if !s.parts.isEmpty { o["parts"] = .array(s.parts.map(step)) }
            return .object(o)
        }
        return ["namespace": .string(namespace), "name": .string(name), "node": .string(node), "podIP": .string(podIP),
                "received": .string(Self.microTime(received)), "ready": .string(Self.microTime(ready)), "totalSeconds": .double(total),
                "steps": .array(steps.map(step)), "network": .array(network.map(step)), "notes": .array(notes.map { .string($0) })]
    }

    static func microTime(_ d: Date) -> String { RFC3339.format(d.timeIntervalSince1970, microseconds: true) }

    /// A timeline: a bar per step and part on one time axis, from the arrival to the last proxy
    /// sync. The first request answered may come long after (when a client first asked): its bar
    /// runs to the axis's end, labelled with its duration.
    public func svg() -> String {
        var rows: [(label: String, step: Step, level: Int)] = []
        for (i, s) in steps.enumerated() {
            rows.append(("\(i + 1). \(s.name)", s, 0))
            for p in s.parts { rows.append((p.name, p, 1)) }
        }
        for s in network { rows.append((s.name, s, 2)) }
        let end = rows.filter { $0.step.name != "first request answered" }.map(\.step.end).max() ?? ready
        let span = max(end.timeIntervalSince(received), 1e-6)
        let labelWidth = 330.0, chartWidth = 600.0, rowHeight = 20.0, top = 44.0
        let height = top + Double(rows.count) * rowHeight + 30
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
                .replacingOccurrences(of: "\"", with: "&quot;")
        }
        let colors = ["#3366cc", "#88aadd", "#2a9d8f"]
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(labelWidth + chartWidth + 90))" height="\(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="8" y="18" font-size="14" font-weight="bold">\(esc("Pod \(namespace)/\(name) on \(node): Ready in \(Self.ms(total)) ms"))</text>
            <text x="\(Int(labelWidth))" y="36" fill="#555">0 ms</text>
            <text x="\(Int(labelWidth + chartWidth))" y="36" fill="#555" text-anchor="end">\(Self.ms(span)) ms</text>

            """
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * rowHeight
            let x = labelWidth + r.step.start.timeIntervalSince(received) / span * chartWidth
            let w = max(1.5, min(r.step.duration / span * chartWidth, labelWidth + chartWidth - x))
            let label = (r.level == 1 ? "    " : "") + r.label
            out += "<text x=\"8\" y=\"\(Int(y + 14))\"\(r.level == 0 ? " font-weight=\"bold\"" : "")>\(esc(String(label.prefix(48))))</text>\n"
            func f(_ v: Double) -> String { String(format: "%.1f", v) }
            out += "<rect x=\"\(f(x))\" y=\"\(f(y + 3))\" width=\"\(f(w))\" height=\"\(f(rowHeight - 6))\" fill=\"\(colors[r.level])\">"
                + "<title>\(esc("\(r.step.name): \(Self.ms(r.step.duration)) ms. \(r.step.detail)"))</title></rect>\n"
            out += "<text x=\"\(f(min(x + w + 4, labelWidth + chartWidth + 4)))\" y=\"\(Int(y + 14))\" fill=\"#333\">\(Self.ms(r.step.duration)) ms</text>\n"
        }
        return out + "</svg>\n"
    }
}

// MARK: the lab's records

extension Cluster {
    /// The traces of pod `name`, or of every pod of Deployment `name` (its ReplicaSets' pods,
    /// oldest first), in `namespace`.
    public func trace(pod name: String? = nil, deployment: String? = nil, namespace: String = "default") async throws -> [PodTrace] {
        var pods: [JSONValue] = []
        if let name {
            pods = [try await must("GET", "/api/v1/namespaces/\(namespace)/pods/\(name)", nil)]
        } else if let deployment {
            let d = try await must("GET", "/apis/apps/v1/namespaces/\(namespace)/deployments/\(deployment)", nil)
            let sets = (try await must("GET", "/apis/apps/v1/namespaces/\(namespace)/replicasets", nil)["items"]?.array ?? [])
                .filter { rs in (rs[path: ["metadata", "ownerReferences"]]?.array ?? []).contains { $0["uid"]?.string == d.uid } }.map(\.uid)
            pods = (try await must("GET", "/api/v1/namespaces/\(namespace)/pods", nil)["items"]?.array ?? [])
                .filter { p in (p[path: ["metadata", "ownerReferences"]]?.array ?? []).contains { sets.contains($0["uid"]?.string ?? "") } }
                .sorted { ($0[path: ["metadata", "creationTimestamp"]]?.string ?? "", $0.name) < ($1[path: ["metadata", "creationTimestamp"]]?.string ?? "", $1.name) }
            guard !pods.isEmpty else { throw PodTrace.Failure(description: "deployment \(namespace)/\(deployment) has no pods") }
        }
        let slices = (try await must("GET", "/apis/discovery.k8s.io/v1/namespaces/\(namespace)/endpointslices", nil)["items"]?.array ?? [])
        let names = pods.map(\.name)
        var records = try traceRecords(mentioning: names)
        records.answers = answers(of: pods)
        return try pods.map { pod in
            let listing = slices.filter { s in (s["endpoints"]?.array ?? []).contains { $0[path: ["targetRef", "uid"]]?.string == pod.uid } }.map(\.name)
            return try PodTrace.build(pod: pod, slices: listing, records: records)
        }
    }

    /// The lines of the pods' container logs that tell of a first request answered, by pod UID:
    /// on their nodes, in the kubelet's pod log directories (upstream's layout:
    /// `NAMESPACE_NAME_UID/CONTAINER/N.log` under `--pod-logs-dir`).
    func answers(of pods: [JSONValue]) -> [String: [String]] {
        var out: [String: [String]] = [:]
        let fm = FileManager.default
        for pod in pods {
            guard let node = state.nodes.first(where: { $0.name == pod[path: ["spec", "nodeName"]]?.string }) else { continue }
            let dir = "\(nodeDir(node))/pods/\(pod.namespace)_\(pod.name)_\(pod.uid)"
            for container in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] {
                for file in (try? fm.contentsOfDirectory(atPath: "\(dir)/\(container)")) ?? [] where file.hasSuffix(".log") {
                    guard let text = try? String(contentsOfFile: "\(dir)/\(container)/\(file)", encoding: .utf8) else { continue }
                    out[pod.uid, default: []] += text.split(separator: "\n").filter { $0.contains(PodTrace.answeredMark) }.map(String.init)
                }
            }
        }
        return out
    }

    /// The audit events about the pods named (and every EndpointSlice write), and the components'
    /// JSON log lines, from the lab's files.
    func traceRecords(mentioning names: [String], everything: Bool = false) throws -> PodTrace.Records {
        let fm = FileManager.default
        var audit: [JSONValue] = []
        let serverDirs = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter { $0 == "server" || $0.hasPrefix("server-") }
        let needles = names.map { "\"name\":\"\($0)\"" } + ["\"resource\":\"endpointslices\""]
        for d in serverDirs {
            guard let text = try? String(contentsOfFile: "\(dir)/\(d)/audit.log", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where everything || needles.contains(where: { line.contains($0) }) {
                if let e = try? JSONValue.parse(Data(line.utf8)) { audit.append(e) }
            }
        }
        guard !audit.isEmpty || !serverDirs.isEmpty else { throw PodTrace.Failure(description: "no audit log in \(dir)/server") }
        var logs: [String: [JSONValue]] = [:]
        for file in everything ? [] :  (try? fm.contentsOfDirectory(atPath: "\(dir)/logs")) ?? [] where file.hasSuffix(".log") && !file.hasSuffix(".previous.log") {
            let source = String(file.dropLast(4))
            guard ["server", "scheduler", "kubelet-", "proxy-"].contains(where: { source.hasPrefix($0) }),
                  let text = try? String(contentsOfFile: "\(dir)/logs/\(file)", encoding: .utf8) else { continue }
            var lines: [JSONValue] = []
            for line in text.split(separator: "\n") where line.hasPrefix("{\"ts\":") {
                // Only what a trace reads: lines about a pod, and the proxies' syncs.
                guard source.hasPrefix("proxy-") ? line.contains("\"msg\":\"synced ") : names.contains(where: { line.contains($0) }) else { continue }
                if let l = try? JSONValue.parse(Data(line.utf8)) { lines.append(l) }
            }
            logs[source] = lines
        }
        return PodTrace.Records(audit: audit, logs: logs)
    }
}
