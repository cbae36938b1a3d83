import APIAccess
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KubeAPI
import Synchronization

/// kube-apiserver's audit log (`--audit-log-path`, `--audit-policy-file`): an `audit.k8s.io/v1`
/// Policy decides each request's level (None, Metadata, Request, RequestResponse) by its first
/// matching rule, and each stage the request reaches (RequestReceived; ResponseStarted for a
/// watch or a stream; ResponseComplete) is one `audit.k8s.io/v1` Event, one JSON object per line.
public final class AuditLog: Sendable {
    public enum Level: String, Sendable, Comparable {
        case none = "None", metadata = "Metadata", request = "Request", requestResponse = "RequestResponse"
        static let order: [Level] = [.none, .metadata, .request, .requestResponse]
        public static func < (a: Level, b: Level) -> Bool { order.firstIndex(of: a)! < order.firstIndex(of: b)! }
    }

    public struct Rule: Sendable {
        var level: Level
        var users: [String], userGroups: [String], verbs: [String], namespaces: [String], nonResourceURLs: [String]
        var resources: [(group: String, resources: [String], resourceNames: [String])]
        var omitStages: Set<String>
    }

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    let rules: [Rule]
    let omitStages: Set<String>
    let omitManagedFields: Bool
    let fd: Mutex<Int32>

    /// - Parameters:
    ///   - policy: the policy file's text (YAML or JSON).
    ///   - path: where events go, appended (`-` for standard output).
    public init(policy: String, source: String = "audit policy", path: String) throws {
        let j: JSONValue
        do { j = try YAMLToJSON.convert(policy) } catch { throw Failure(description: "\(source): \(error)") }
        guard j["kind"]?.string == "Policy", j["apiVersion"]?.string == "audit.k8s.io/v1" else {
            throw Failure(description: "\(source): want kind Policy of apiVersion audit.k8s.io/v1")
        }
        func strings(_ v: JSONValue?) -> [String] { (v?.array ?? []).compactMap(\.string) }
        var rules: [Rule] = []
        for (i, r) in (j["rules"]?.array ?? []).enumerated() {
            guard let l = r["level"]?.string, let level = Level(rawValue: l) else {
                throw Failure(description: "\(source): rules[\(i)].level: one of None, Metadata, Request, RequestResponse")
            }
            let resources = (r["resources"]?.array ?? []).map { g in
                (group: g["group"]?.string ?? "", resources: strings(g["resources"]), resourceNames: strings(g["resourceNames"]))
            }
            let urls = strings(r["nonResourceURLs"])
            if !urls.isEmpty && (!resources.isEmpty || !strings(r["namespaces"]).isEmpty) {
                throw Failure(description: "\(source): rules[\(i)]: rules cannot apply to both regular resources and non-resource URLs")
            }
            rules.append(Rule(level: level, users: strings(r["users"]), userGroups: strings(r["userGroups"]), verbs: strings(r["verbs"]),
                              namespaces: strings(r["namespaces"]), nonResourceURLs: urls, resources: resources,
                              omitStages: Set(strings(r["omitStages"]))))
        }
        self.rules = rules
        omitStages = Set(strings(j["omitStages"]))
        omitManagedFields = j["omitManagedFields"]?.bool ?? false
        let fd = path == "-" ? dup(1) : open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "--audit-log-path \(path): \(String(cString: strerror(errno)))") }
        self.fd = Mutex(fd)
    }

    deinit { fd.withLock { _ = close($0) } }

    /// The level and the stages left out for a request (upstream's policy rule evaluator).
    func decide(_ a: RequestAttributes) -> (level: Level, omit: Set<String>) {
        for r in rules where Self.matches(r, a) { return (r.level, omitStages.union(r.omitStages)) }
        return (.none, omitStages)
    }

    static func matches(_ r: Rule, _ a: RequestAttributes) -> Bool {
        if !r.users.isEmpty && !r.users.contains(a.user.name) { return false }
        if !r.userGroups.isEmpty && !a.user.groups.contains(where: r.userGroups.contains) { return false }
        if !r.verbs.isEmpty && !r.verbs.contains(a.verb) { return false }
        if a.isResourceRequest {
            if !r.nonResourceURLs.isEmpty { return false }
            if !r.namespaces.isEmpty && !r.namespaces.contains(a.namespace) { return false }
            if r.resources.isEmpty { return true }
            let combined = a.subresource.isEmpty ? a.resource : "\(a.resource)/\(a.subresource)"
            return r.resources.contains { g in
                guard g.group == a.apiGroup else { return false }
                let resourceOK = g.resources.isEmpty || g.resources.contains { res in
                    res == combined || res == "*" || (res == "*/\(a.subresource)" && !a.subresource.isEmpty) || (res == "\(a.resource)/*" && !a.subresource.isEmpty)
                }
                return resourceOK && (g.resourceNames.isEmpty || g.resourceNames.contains(a.name))
            }
        }
        if !r.resources.isEmpty || !r.namespaces.isEmpty { return false }
        if r.nonResourceURLs.isEmpty { return true }
        return r.nonResourceURLs.contains { PolicyRule.urlMatches($0, a.path) }
    }

    /// One request's audit record, written stage by stage.
    final class Record: Sendable {
        let log: AuditLog
        let level: Level
        let omit: Set<String>
        let base: [String: JSONValue]
        init(log: AuditLog, level: Level, omit: Set<String>, base: [String: JSONValue]) {
            self.log = log
            self.level = level
            self.omit = omit
            self.base = base
        }

        func emit(_ stage: String, extra: [String: JSONValue] = [:]) {
            guard !omit.contains(stage) else { return }
            var e = base
            e["stage"] = .string(stage)
            e["stageTimestamp"] = .string(AuditLog.microTime())
            for (k, v) in extra { e[k] = v }
            log.write(.object(e))
        }
    }

    /// Starts a request's record (nil at level None): its RequestReceived event.
    func begin(_ req: APIRequest, _ a: RequestAttributes, decision: Decision?, received: Date = Date()) -> Record? {
        let (level, omit) = decide(a)
        guard level != .none else { return nil }
        var user: [String: JSONValue] = ["username": .string(a.user.name), "groups": .array(a.user.groups.map { .string($0) })]
        if !a.user.uid.isEmpty { user["uid"] = .string(a.user.uid) }
        let query = req.query.isEmpty ? "" : "?" + req.query.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? $0.value)" }.joined(separator: "&")
        var e: [String: JSONValue] = [
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": .string(level.rawValue),
            "auditID": .string(UUID().uuidString.lowercased()), "requestURI": .string(req.path + query), "verb": .string(a.verb),
            "user": .object(user), "sourceIPs": .array(req.sourceIP.map { [.string($0)] } ?? []),
            "requestReceivedTimestamp": .string(Self.microTime(received)),
        ]
        if let ua = req.userAgent { e["userAgent"] = .string(ua) }
        if let imp = req.impersonation, let u = imp.user {
            e["impersonatedUser"] = ["username": .string(u), "groups": .array(imp.groups.map { .string($0) })]
        }
        let requestObject = req.body.isEmpty ? nil : try? JSONValue.parse(req.body)
        if a.isResourceRequest {
            var ref: [String: JSONValue] = ["resource": .string(a.resource), "apiVersion": .string(a.apiVersion)]
            if !a.namespace.isEmpty { ref["namespace"] = .string(a.namespace) }
            // A create names its object in the body, as upstream's LogRequestObject reads it.
            let name = a.name.isEmpty ? requestObject?[path: ["metadata", "name"]]?.string ?? "" : a.name
            if !name.isEmpty { ref["name"] = .string(name) }
            if !a.apiGroup.isEmpty { ref["apiGroup"] = .string(a.apiGroup) }
            if !a.subresource.isEmpty { ref["subresource"] = .string(a.subresource) }
            e["objectRef"] = .object(ref)
        }
        if let decision {
            var ann: [String: JSONValue] = ["authorization.k8s.io/decision": .string(decision.allowed ? "allow" : "forbid")]
            if !decision.reason.isEmpty { ann["authorization.k8s.io/reason"] = .string(decision.reason) }
            e["annotations"] = .object(ann)
        }
        if level >= .request, let body = requestObject {
            e["requestObject"] = omitManagedFields ? Self.withoutManagedFields(body) : body
        }
        let record = Record(log: self, level: level, omit: omit, base: e)
        record.emit("RequestReceived")
        return record
    }

    /// The response's stage(s): ResponseComplete for a document; ResponseStarted now and
    /// ResponseComplete when it ends for a stream (a watch, a followed log).
    func finish(_ record: Record?, _ r: APIResponse, annotations added: [String: String] = [:], latency: RequestLatency? = nil) -> APIResponse {
        guard let record else { return r }
        var status: [String: JSONValue] = ["metadata": [:], "code": .int(Int64(r.code))]
        // What admission added, beside the authorizer's decision (the response's stages carry
        // them), and the latency trackers' annotations.
        var annotations = record.base["annotations"]?.object ?? [:]
        for (k, v) in added { annotations[k] = .string(v) }
        for (k, v) in latency?.annotations() ?? [:] { annotations[k] = .string(v) }
        let annotated: [String: JSONValue] = annotations.isEmpty ? [:] : ["annotations": .object(annotations)]
        if r.code >= 400, let j = r.json {
            if let s = j["status"] { status["status"] = s }
            if let m = j["message"] { status["message"] = m }
            if let reason = j["reason"] { status["reason"] = reason }
        }
        let final = status
        switch r.body {
        case .stream(let s), .textStream(let s):
            record.emit("ResponseStarted", extra: annotated.merging(["responseStatus": .object(final)]) { $1 })
            let wrapped = AsyncThrowingStream<Data, any Error> { c in
                let task = Task {
                    do { for try await chunk in s { c.yield(chunk) } } catch { c.finish(throwing: error) }
                    c.finish()
                }
                c.onTermination = { _ in
                    task.cancel()
                    record.emit("ResponseComplete", extra: annotated.merging(["responseStatus": .object(final)]) { $1 })
                }
            }
            var out = r
            if case .textStream = r.body { out.body = .textStream(wrapped) } else { out.body = .stream(wrapped) }
            return out
        default:
            var extra: [String: JSONValue] = annotated
            extra["responseStatus"] = .object(status)
            // The object written: its uid and the resourceVersion it was stored at (upstream
            // reads these from the request's object; a create's has neither yet), and the name
            // made for a create by generateName.
            if r.code < 300, var ref = record.base["objectRef"]?.object, let j = r.json, j["kind"]?.string != "Status",
               let meta = j["metadata"]?.object, j["items"] == nil {
                if ref["uid"] == nil, let uid = meta["uid"]?.string { ref["uid"] = .string(uid) }
                if ref["resourceVersion"] == nil, let rv = meta["resourceVersion"]?.string { ref["resourceVersion"] = .string(rv) }
                if ref["name"] == nil, let name = meta["name"]?.string, !name.isEmpty { ref["name"] = .string(name) }
                extra["objectRef"] = .object(ref)
            }
            if record.level == .requestResponse, let j = r.json { extra["responseObject"] = omitManagedFields ? Self.withoutManagedFields(j) : j }
            record.emit("ResponseComplete", extra: extra)
            return r
        }
    }

    static func withoutManagedFields(_ o: JSONValue) -> JSONValue {
        var o = o
        if o[path: ["metadata", "managedFields"]] != nil { o[path: ["metadata", "managedFields"]] = nil }
        return o
    }

    func write(_ event: JSONValue) {
        var bytes = event.bytes()
        bytes.append(UInt8(ascii: "\n"))
        fd.withLock { fd in
            bytes.withUnsafeBytes { b in
                var off = 0
                while off < b.count {
                    let n = Glibc.write(fd, b.baseAddress! + off, b.count - off)
                    if n <= 0 { break }
                    off += n
                }
            }
        }
    }

    /// A MicroTime: `2026-12-05T20:27:12.123456Z`.
    static func microTime(_ d: Date = Date()) -> String {
        let t = d.timeIntervalSince1970
        let micros = Int((t - t.rounded(.down)) * 1_000_000)
        let s = APIHandler.rfc3339(d)
        let digits = String(micros)
        return String(s.dropLast()) + "." + String(repeating: "0", count: max(0, 6 - digits.count)) + digits + "Z"
    }
}
