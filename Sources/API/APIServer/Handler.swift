import Foundation
import Synchronization
import KubeAPI
import KubeStore

/// A request, apart from the transport.
public struct APIRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    public var contentType: String?
    public var accept: String?
    public var body: Data

    public init(method: String, path: String, query: [String: String] = [:], contentType: String? = nil,
                accept: String? = nil, body: Data = Data()) {
        self.method = method
        self.path = path
        self.query = query
        self.contentType = contentType
        self.accept = accept
        self.body = body
    }
}

/// A response, apart from the transport: one JSON document, or a stream of them (a watch).
public struct APIResponse: Sendable {
    public enum Body: Sendable {
        case json(JSONValue)
        case text(String)
        /// Watch events, one JSON document per line, until the stream ends.
        case stream(AsyncThrowingStream<Data, any Error>)
        /// Bytes of another type (the protobuf OpenAPI document).
        case bytes(Data, type: String)
    }
    public var code: Int
    public var body: Body
    public var contentType: String {
        switch body {
        case .text: return "text/plain; charset=utf-8"
        case .bytes(_, let type): return type
        default: return "application/json"
        }
    }

    public var json: JSONValue? { if case .json(let j) = body { return j } else { return nil } }

    static func ok(_ j: JSONValue, _ code: Int = 200) -> APIResponse { APIResponse(code: code, body: .json(j)) }
    static func error(_ e: APIError) -> APIResponse { APIResponse(code: e.code, body: .json(e.status)) }
}

/// The Kubernetes REST API over a `Store`: discovery, and get, list, watch, create, update,
/// patch and delete of the served resources. Transport-free, so tests drive it directly; the
/// HTTP server is a thin adapter around `handle`.
public final class APIHandler: Sendable {
    public let store: any Store
    /// Open watch streams, ended by `closeWatches()` when the server shuts down; once it has,
    /// a watch that arrives late is ended as soon as it starts.
    struct Watches {
        var open: [UUID: AsyncThrowingStream<Data, any Error>.Continuation] = [:]
        var closed = false
    }
    let watches = Mutex(Watches())
    public let version: JSONValue
    let admission: Admission
    /// The largest body accepted (kube-apiserver's limit is 3 MiB for a write).
    public static let maxBodySize = 3 * 1024 * 1024

    public init(store: any Store, admission: Admission = Admission()) {
        self.store = store
        self.admission = admission
        version = ["major": "1", "minor": "33", "gitVersion": "v1.33.0-switchyard", "gitCommit": "", "gitTreeState": "clean",
                   "buildDate": "2026-11-27T00:00:00Z", "goVersion": "swift6", "compiler": "swift", "platform": "linux/amd64"]
    }

    /// Ends every open watch (clients re-watch elsewhere, or after a restart, from their last
    /// resourceVersion): a server shutting down does not wait for them.
    public func closeWatches() {
        let open = watches.withLock { w in
            defer { w.open.removeAll(); w.closed = true }
            return Array(w.open.values)
        }
        for c in open { c.finish() }
    }

    public var openWatches: Int { watches.withLock { $0.open.count } }

    public func handle(_ req: APIRequest) async -> APIResponse {
        do {
            return try await route(req)
        } catch let e as APIError {
            return .error(e)
        } catch let e as JSONValue.ParseError {
            return .error(.badRequest(e.description))
        } catch {
            return .error(.internal("\(error)"))
        }
    }

    // MARK: routing

    /// Where a path points.
    struct Target {
        var resource: ResourceInfo
        var namespace: String?
        var name: String?
        var subresource: String?
    }

    func route(_ req: APIRequest) async throws -> APIResponse {
        let seg = req.path.split(separator: "/").map(String.init)
        switch seg.first {
        case nil:
            return .ok(["paths": .array((["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
                + Resources.groups.flatMap { ["/apis/\($0.group)", "/apis/\($0.group)/\($0.version)"] }).map { .string($0) })])
        case "version" where seg.count == 1: return .ok(version)
        case "healthz", "livez", "readyz": return APIResponse(code: 200, body: .text("ok"))
        case "openapi" where seg.count == 2 && seg[1] == "v2":
            return OpenAPI.v2(accept: req.accept)
        case "api":
            if seg.count == 1 {
                return .ok(["kind": "APIVersions", "versions": ["v1"],
                            "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": ""]]])
            }
            guard seg[1] == "v1" else { throw APIError.pathNotFound(req.path) }
            if seg.count == 2 { return .ok(resourceList(group: "", version: "v1")) }
            return try await serve(req, group: "", version: "v1", rest: Array(seg[2...]))
        case "apis":
            if seg.count == 1 { return .ok(["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(Resources.groups.map(groupJSON))]) }
            guard let g = Resources.groups.first(where: { $0.group == seg[1] }) else { throw APIError.pathNotFound(req.path) }
            if seg.count == 2 { return .ok(groupJSON(g).merging(["kind": "APIGroup", "apiVersion": "v1"])) }
            guard seg[2] == g.version else { throw APIError.pathNotFound(req.path) }
            if seg.count == 3 { return .ok(resourceList(group: g.group, version: g.version)) }
            return try await serve(req, group: g.group, version: g.version, rest: Array(seg[3...]))
        default:
            throw APIError.pathNotFound(req.path)
        }
    }

    func groupJSON(_ g: (group: String, version: String)) -> JSONValue {
        let gv: JSONValue = ["groupVersion": .string("\(g.group)/\(g.version)"), "version": .string(g.version)]
        return ["name": .string(g.group), "versions": [gv], "preferredVersion": gv]
    }

    func resourceList(group: String, version: String) -> JSONValue {
        let rs = Resources.all.filter { $0.group == group && $0.version == version }
        return ["kind": "APIResourceList", "apiVersion": "v1", "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"),
                "resources": .array(rs.flatMap(\.discovery))]
    }

    func serve(_ req: APIRequest, group: String, version: String, rest: [String]) async throws -> APIResponse {
        func res(_ name: String) throws -> ResourceInfo {
            guard let r = Resources.find(group: group, version: version, resource: name) else { throw APIError.pathNotFound(req.path) }
            return r
        }
        let t: Target
        if rest.count >= 3, rest[0] == "namespaces", let r = Resources.find(group: group, version: version, resource: rest[2]), r.namespaced {
            guard rest.count <= 5 else { throw APIError.pathNotFound(req.path) }
            t = Target(resource: r, namespace: rest[1], name: rest.count > 3 ? rest[3] : nil, subresource: rest.count > 4 ? rest[4] : nil)
        } else {
            guard rest.count <= 3 else { throw APIError.pathNotFound(req.path) }
            let r = try res(rest[0])
            // A namespaced resource without a namespace: a list or watch across all of them.
            if r.namespaced && rest.count > 1 { throw APIError.pathNotFound(req.path) }
            t = Target(resource: r, namespace: nil, name: rest.count > 1 ? rest[1] : nil, subresource: rest.count > 2 ? rest[2] : nil)
        }
        if let sub = t.subresource, !t.resource.subresources.contains(sub) { throw APIError.pathNotFound(req.path) }
        switch (req.method, t.name) {
        case ("GET", nil):
            return isWatch(req) ? try await watch(req, t) : try await list(req, t)
        case ("GET", let name?):
            let o = try await get(t.resource, namespace: t.namespace, name: name, subresource: t.subresource)
            // `kubectl get KIND NAME` asks for a Table of the one object, as for a list.
            if t.subresource == nil && Tables.wanted(req.accept) {
                let rv = o[path: ["metadata", "resourceVersion"]]?.string ?? ""
                return .ok(Tables.table([o], t.resource, meta: ["resourceVersion": .string(rv)], includeObject: req.query["includeObject"]))
            }
            return .ok(o)
        case ("POST", nil):
            guard !t.resource.namespaced || t.namespace != nil else {
                throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
            }
            return try await create(req, t)
        case ("POST", _?) where t.subresource == "binding":
            return try await bind(req, t)
        case ("PUT", _?):
            return try await update(req, t)
        case ("PATCH", _?):
            return try await patch(req, t)
        case ("DELETE", _?):
            return try await delete(req, t)
        case ("DELETE", nil):
            return try await deleteCollection(req, t)
        default:
            throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
        }
    }

    func isWatch(_ req: APIRequest) -> Bool { ["1", "true"].contains(req.query["watch"] ?? "") }

    // MARK: objects

    /// `?dryRun=All`, or for a deletion `dryRun: ["All"]` in its DeleteOptions (where kubectl
    /// puts it): everything but the write. Upstream accepts no other value.
    func isDryRun(_ req: APIRequest, deleteOptions: JSONValue? = nil) throws -> Bool {
        let values = (req.query["dryRun"].map { [$0] } ?? []) + (deleteOptions?["dryRun"]?.array ?? []).map { $0.string ?? $0.text() }
        if let bad = values.first(where: { $0 != "All" }) {
            throw APIError.badRequest("Invalid dry run value: \"\(bad)\" (supported: \"All\")")
        }
        return !values.isEmpty
    }

    /// An object as it would be stored, for a dry run: no resourceVersion.
    func presentUnstored(_ o: JSONValue, _ r: ResourceInfo) -> JSONValue {
        var o = o
        o["kind"] = .string(r.kind)
        o["apiVersion"] = .string(r.groupVersion)
        return o
    }

    /// The stored object as clients see it: its resourceVersion is the store's revision.
    func present(_ kv: KeyValue, _ r: ResourceInfo) throws -> JSONValue {
        var o = try JSONValue.parse(kv.value)
        o[path: ["metadata", "resourceVersion"]] = .string(String(kv.modRevision))
        o["kind"] = .string(r.kind)
        o["apiVersion"] = .string(r.groupVersion)
        return o
    }

    func get(_ r: ResourceInfo, namespace: String?, name: String, subresource: String?) async throws -> JSONValue {
        guard let kv = try await storeCall(r, name, { try await self.store.get(r.key(namespace: namespace, name: name)) }) else {
            throw APIError.notFound(r, name)
        }
        let o = try present(kv, r)
        if subresource == "scale" { return Scale.of(o, r) }
        return o
    }

    /// Runs a store call with its errors as API errors.
    func storeCall<T>(_ r: ResourceInfo, _ name: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as StoreError {
            throw APIError.from(e, r, name)
        }
    }

    /// The body as a JSON object (kubectl sends JSON; YAML is accepted too).
    func decodeBody(_ req: APIRequest) throws -> JSONValue {
        guard req.body.count <= Self.maxBodySize else { throw APIError.tooLarge(Self.maxBodySize) }
        let type = (req.contentType ?? "application/json").split(separator: ";")[0].trimmingCharacters(in: .whitespaces)
        let value: JSONValue
        switch type {
        case "application/json", "", "*/*": value = try JSONValue.parse(req.body)
        case "application/yaml", "application/x-yaml", "text/yaml":
            guard let text = String(data: req.body, encoding: .utf8) else { throw APIError.badRequest("the body is not UTF-8") }
            value = try YAMLToJSON.convert(text)
        case KubeProtobuf.mediaType:
            do {
                value = try KubeProtobuf.decode(req.body)
            } catch let e as KubeProtobuf.Failure {
                throw APIError(code: 415, reason: "UnsupportedMediaType", message: "protobuf body: \(e.description)")
            }
        default: throw APIError.unsupportedMediaType(type)
        }
        guard case .object = value else { throw APIError.badRequest("the body must be a JSON object") }
        return value
    }

    /// RFC 3339 in UTC, second precision (`2026-11-27T01:30:58Z`), without Foundation's date
    /// formatters (which load ICU: megabytes of resident memory for one format).
    static func rfc3339(_ d: Date = Date()) -> String {
        let tm = utc(time_t(d.timeIntervalSince1970))
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }

    /// The calendar fields of a moment in UTC (for the date formats here and the HTTP `Date`).
    static func utc(_ seconds: time_t) -> tm {
        var t = seconds
        var fields = tm()
        gmtime_r(&t, &fields)
        return fields
    }

    static func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// Parses what `rfc3339` writes (and a fractional or offset-free variant of it).
    static func parseRFC3339(_ s: String) -> Date? {
        let parts = s.split(whereSeparator: { "-T:Z.".contains($0) }).compactMap { Int32($0) }
        guard parts.count >= 6 else { return nil }
        var tm = tm()
        tm.tm_year = parts[0] - 1900
        tm.tm_mon = parts[1] - 1
        tm.tm_mday = parts[2]
        tm.tm_hour = parts[3]
        tm.tm_min = parts[4]
        tm.tm_sec = parts[5]
        return Date(timeIntervalSince1970: TimeInterval(timegm(&tm)))
    }

    func create(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource
        var o = try decodeBody(req)
        try checkKind(o, r)
        var name = o[path: ["metadata", "name"]]?.string ?? ""
        if name.isEmpty, let g = o[path: ["metadata", "generateName"]]?.string, !g.isEmpty {
            name = g + Admission.randomSuffix()
            o[path: ["metadata", "name"]] = .string(name)
        }
        if r.namespaced {
            if let ns = o[path: ["metadata", "namespace"]]?.string, !ns.isEmpty, ns != t.namespace {
                throw APIError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
            }
            o[path: ["metadata", "namespace"]] = .string(t.namespace!)
            guard let ns = try await store.get(Resources.all[0].key(namespace: nil, name: t.namespace!)) else {
                throw APIError(code: 404, reason: "NotFound", message: "namespaces \"\(t.namespace!)\" not found",
                               details: ["name": .string(t.namespace!), "kind": "namespaces"])
            }
            if (try? JSONValue.parse(ns.value))?[path: ["status", "phase"]]?.string == "Terminating" {
                throw APIError(code: 403, reason: "Forbidden", message: "\(r.resource) \"\(name)\" is forbidden: unable to create new content in namespace \(t.namespace!) because it is being terminated")
            }
        }
        o[path: ["metadata", "uid"]] = .string(UUID().uuidString.lowercased())
        o[path: ["metadata", "creationTimestamp"]] = .string(Self.rfc3339())
        o[path: ["metadata", "resourceVersion"]] = nil
        o[path: ["metadata", "selfLink"]] = nil
        o[path: ["metadata", "deletionTimestamp"]] = nil
        if Admission.hasGeneration(r) { o[path: ["metadata", "generation"]] = 1 }
        let dryRun = try isDryRun(req)
        try await admission.admit(&o, old: nil, r, store: store, dryRun: dryRun)
        if dryRun {
            if try await store.get(r.key(namespace: t.namespace, name: name)) != nil {
                throw APIError.alreadyExists(r, name)
            }
            return .ok(presentUnstored(o, r), 201)
        }
        let stored = o
        let kv = try await storeCall(r, name) {
            do {
                return try await self.store.create(r.key(namespace: t.namespace, name: name), value: stored.serialized())
            } catch {
                await self.admission.release(stored, r)
                throw error
            }
        }
        return .ok(try present(kv, r), 201)
    }

    func checkKind(_ o: JSONValue, _ r: ResourceInfo) throws {
        if let k = o["kind"]?.string, !k.isEmpty, k != r.kind {
            throw APIError.badRequest("the kind of the object (\(k)) does not match the resource (\(r.kind))")
        }
        if let v = o["apiVersion"]?.string, !v.isEmpty, v != r.groupVersion {
            throw APIError.badRequest("the API version of the object (\(v)) does not match the resource (\(r.groupVersion))")
        }
    }

    /// Writes `new` over the object at `key` if it is still at `expected`, keeping what a client
    /// may not change (uid, creation time), and the status or the rest, by subresource.
    func write(_ r: ResourceInfo, _ t: Target, name: String, new: JSONValue, current: KeyValue, subresource: String?,
               dryRun: Bool = false) async throws -> KeyValue {
        let old = try JSONValue.parse(current.value)
        var o = new
        try checkKind(o, r)
        if let n = o[path: ["metadata", "name"]]?.string, n != name {
            throw APIError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        o[path: ["metadata", "name"]] = .string(name)
        if r.namespaced { o[path: ["metadata", "namespace"]] = .string(t.namespace!) }
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "generation"] {
            o[path: ["metadata", f]] = old[path: ["metadata", f]]
        }
        o[path: ["metadata", "resourceVersion"]] = nil
        o["kind"] = nil
        o["apiVersion"] = nil
        var oldBare = old
        oldBare["kind"] = nil
        oldBare["apiVersion"] = nil
        if r.subresources.contains("status") {
            if subresource == "status" {
                // Only the status changes through /status.
                var keep = oldBare
                keep["status"] = o["status"]
                o = keep
            } else {
                o["status"] = oldBare["status"]
            }
        }
        if Admission.hasGeneration(r), o["spec"] != oldBare["spec"] {
            o[path: ["metadata", "generation"]] = .int((oldBare[path: ["metadata", "generation"]]?.int ?? 0) + 1)
        }
        try await admission.admit(&o, old: oldBare, r, store: store, dryRun: dryRun)
        // Nothing changed: no new revision (kubectl then says "patched (no change)").
        if o == oldBare { return current }
        // A dry run answers with what would be stored, at the current revision.
        if dryRun { return KeyValue(key: current.key, value: o.serialized(), createRevision: current.createRevision, modRevision: current.modRevision) }
        let stored = o
        return try await storeCall(r, name) {
            try await self.store.update(r.key(namespace: t.namespace, name: name), value: stored.serialized(), expected: current.modRevision)
        }
    }

    func update(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        var o = try decodeBody(req)
        guard let current = try await storeCall(r, name, { try await self.store.get(r.key(namespace: t.namespace, name: name)) }) else {
            throw APIError.notFound(r, name)
        }
        if t.subresource == "scale" {
            o = try Scale.apply(o, to: try present(current, r), r)
        }
        if let rv = o[path: ["metadata", "resourceVersion"]]?.string, !rv.isEmpty, rv != String(current.modRevision) {
            throw APIError.conflict(r, name)
        }
        let kv = try await write(r, t, name: name, new: o, current: current, subresource: t.subresource == "scale" ? nil : t.subresource,
                                 dryRun: try isDryRun(req))
        let out = try present(kv, r)
        return .ok(t.subresource == "scale" ? Scale.of(out, r) : out)
    }

    func patch(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        guard req.body.count <= Self.maxBodySize else { throw APIError.tooLarge(Self.maxBodySize) }
        let type = (req.contentType ?? "").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let patch = try JSONValue.parse(req.body)
        // Retried on a conflict with a concurrent writer, as kube-apiserver does for patches.
        for attempt in 0..<5 {
            guard let current = try await storeCall(r, name, { try await self.store.get(r.key(namespace: t.namespace, name: name)) }) else {
                throw APIError.notFound(r, name)
            }
            var base = try present(current, r)
            if t.subresource == "scale" { base = Scale.of(base, r) }
            var patched: JSONValue
            switch type {
            case "application/json-patch+json": patched = try Patch.jsonPatch(base, patch)
            case "application/merge-patch+json": patched = Patch.mergePatch(base, patch)
            case "application/strategic-merge-patch+json": patched = try Patch.strategicMergePatch(base, patch, kind: r.kind)
            case "application/apply-patch+yaml":
                throw APIError(code: 415, reason: "UnsupportedMediaType", message: "server-side apply is not supported by this server; use client-side apply")
            default: throw APIError.unsupportedMediaType(type)
            }
            guard case .object = patched else { throw APIError.badRequest("the patch did not produce an object") }
            if let rv = patch[path: ["metadata", "resourceVersion"]]?.string, rv != String(current.modRevision) {
                throw APIError.conflict(r, name)
            }
            if t.subresource == "scale" { patched = try Scale.apply(patched, to: try present(current, r), r) }
            do {
                let kv = try await write(r, t, name: name, new: patched, current: current, subresource: t.subresource == "scale" ? nil : t.subresource,
                                         dryRun: try isDryRun(req))
                let out = try present(kv, r)
                return .ok(t.subresource == "scale" ? Scale.of(out, r) : out)
            } catch let e as APIError where e.reason == "Conflict" && attempt < 4 {
                continue
            }
        }
        throw APIError.conflict(r, name)
    }

    func delete(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        var expected: Int64?
        let opts = req.body.isEmpty ? nil : try? JSONValue.parse(req.body)
        if let rv = opts?[path: ["preconditions", "resourceVersion"]]?.string {
            expected = Int64(rv)
            guard expected != nil else { throw APIError.badRequest("invalid precondition resourceVersion \(rv)") }
        }
        if let uid = opts?[path: ["preconditions", "uid"]]?.string,
           let cur = try await store.get(r.key(namespace: t.namespace, name: name)),
           (try? JSONValue.parse(cur.value))?[path: ["metadata", "uid"]]?.string != uid {
            throw APIError(code: 409, reason: "Conflict", message: "Precondition failed: UID in precondition: \(uid), UID in object meta: ",
                           details: APIError.details(r, name))
        }
        if try isDryRun(req, deleteOptions: opts) {
            guard let cur = try await storeCall(r, name, { try await self.store.get(r.key(namespace: t.namespace, name: name)) }) else {
                throw APIError.notFound(r, name)
            }
            if let expected, expected != cur.modRevision { throw APIError.conflict(r, name) }
            return .ok(try present(cur, r))
        }
        if r.resource == "namespaces" { return try await terminate(t, name: name, expected: expected) }
        let kv = try await storeCall(r, name) { try await self.store.delete(r.key(namespace: t.namespace, name: name), expected: expected) }
        let gone = try present(kv, r)
        await admission.release(gone, r)
        return .ok(gone)
    }

    /// Deleting a namespace, as upstream: it turns Terminating at once (nothing new may be made in
    /// it), and a moment later (as upstream's namespace controller gets to it) its objects are
    /// deleted, then the namespace itself. The moment lets `kubectl delete -f` of a namespace and
    /// what is in it delete each object itself, as it does against kube-apiserver.
    func terminate(_ t: Target, name: String, expected: Int64?) async throws -> APIResponse {
        let r = t.resource
        guard let current = try await store.get(r.key(namespace: nil, name: name)) else { throw APIError.notFound(r, name) }
        if let expected, expected != current.modRevision { throw APIError.conflict(r, name) }
        var o = try JSONValue.parse(current.value)
        let already = o[path: ["status", "phase"]]?.string == "Terminating"
        if !already {
            o[path: ["status", "phase"]] = "Terminating"
            o[path: ["metadata", "deletionTimestamp"]] = .string(Self.rfc3339())
        }
        let stored = o
        let kv = already ? current : try await storeCall(r, name) {
            try await self.store.update(r.key(namespace: nil, name: name), value: stored.serialized(), expected: current.modRevision)
        }
        if !already {
            let handler = self
            Task {
                try? await Task.sleep(for: .seconds(1))
                for res in Resources.all where res.namespaced {
                    guard let page = try? await handler.store.list(prefix: res.storePrefix + name + "/", after: nil, limit: 0, revision: nil) else { continue }
                    for item in page.items {
                        if let d = try? await handler.store.delete(item.key, expected: nil), let o = try? handler.present(d, res) {
                            await handler.admission.release(o, res)
                        }
                    }
                }
                _ = try? await handler.store.delete(r.key(namespace: nil, name: name), expected: nil)
            }
        }
        return .ok(try present(kv, r))
    }

    func deleteCollection(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let dryRun = try isDryRun(req, deleteOptions: req.body.isEmpty ? nil : try? JSONValue.parse(req.body))
        let items = try await selected(req, t, revision: nil).items
        if dryRun { return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success"]) }
        for (kv, o) in items {
            if (try? await store.delete(kv.key, expected: nil)) != nil { await admission.release(o, t.resource) }
        }
        return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success"])
    }

    func bind(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let b = try decodeBody(req)
        guard let node = b[path: ["target", "name"]]?.string, !node.isEmpty else {
            throw APIError.invalid(t.resource, t.name!, [FieldError("target.name", "Required value")])
        }
        let r = t.resource, name = t.name!
        guard let current = try await store.get(r.key(namespace: t.namespace, name: name)) else { throw APIError.notFound(r, name) }
        var o = try present(current, r)
        if let existing = o[path: ["spec", "nodeName"]]?.string, !existing.isEmpty {
            throw APIError(code: 409, reason: "Conflict", message: "Operation cannot be fulfilled on pods/binding \"\(name)\": pod \(name) is already assigned to node \"\(existing)\"")
        }
        o[path: ["spec", "nodeName"]] = .string(node)
        _ = try await write(r, t, name: name, new: o, current: current, subresource: nil, dryRun: try isDryRun(req))
        return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success", "code": 201], 201)
    }

    // MARK: list and watch

    func selectors(_ req: APIRequest) throws -> (LabelSelector?, FieldSelector?) {
        let l = try req.query["labelSelector"].flatMap { $0.isEmpty ? nil : try LabelSelector($0) }
        let f = try req.query["fieldSelector"].flatMap { $0.isEmpty ? nil : try FieldSelector($0) }
        return (l, f)
    }

    static func labels(_ o: JSONValue) -> [String: String] {
        (o[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
    }

    func prefix(_ t: Target) -> String {
        t.resource.namespaced && t.namespace != nil ? t.resource.storePrefix + t.namespace! + "/" : t.resource.storePrefix
    }

    /// The objects a list selects, read at one revision, a page at a time when asked.
    func selected(_ req: APIRequest, _ t: Target, revision: Int64?) async throws -> (items: [(KeyValue, JSONValue)], revision: Int64, next: String?) {
        let (ls, fs) = try selectors(req)
        let limit = Int(req.query["limit"] ?? "") ?? 0
        var after: String?
        var rev = revision
        if let c = req.query["continue"], !c.isEmpty {
            guard let token = Continue.decode(c) else { throw APIError.badRequest("invalid continue token") }
            after = token.after
            rev = token.revision
        }
        var out: [(KeyValue, JSONValue)] = []
        var pageRev: Int64 = 0
        var next: String?
        // Selectors filter after reading: read pages until the limit is filled or the keys end.
        repeat {
            let page = try await storeCall(t.resource, "") {
                try await self.store.list(prefix: self.prefix(t), after: after, limit: limit > 0 ? max(limit, 100) : 0, revision: rev)
            }
            pageRev = page.revision
            rev = page.revision
            for kv in page.items {
                let o = try present(kv, t.resource)
                if let ls, !ls.matches(Self.labels(o)) { continue }
                if let fs, !fs.matches(o) { continue }
                out.append((kv, o))
                if limit > 0 && out.count == limit { break }
            }
            after = page.continueAfter
            if limit > 0 && out.count == limit {
                let last = out.last!.0.key
                // More may follow if the page did not end at its last key or there are more pages.
                if page.continueAfter != nil || page.items.last?.key != last { next = Continue.encode(after: last, revision: pageRev) }
                break
            }
        } while after != nil
        return (out, pageRev, next)
    }

    func list(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        var revision: Int64?
        if let rv = req.query["resourceVersion"], !rv.isEmpty, rv != "0", req.query["resourceVersionMatch"] == "Exact" {
            guard let v = Int64(rv) else { throw APIError.badRequest("invalid resourceVersion \(rv)") }
            revision = v
        }
        let (items, rev, next) = try await selected(req, t, revision: revision)
        var meta: [String: JSONValue] = ["resourceVersion": .string(String(rev))]
        if let next { meta["continue"] = .string(next) }
        if Tables.wanted(req.accept) {
            return .ok(Tables.table(items.map(\.1), t.resource, meta: meta, includeObject: req.query["includeObject"]))
        }
        return .ok(["kind": .string(t.resource.kind + "List"), "apiVersion": .string(t.resource.groupVersion),
                    "metadata": .object(meta), "items": .array(items.map(\.1))])
    }

    func watch(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let (ls, fs) = try selectors(req)
        let r = t.resource
        let rvText = req.query["resourceVersion"] ?? ""
        var initial: [JSONValue] = []
        let from: Int64
        if rvText.isEmpty || rvText == "0" {
            // From now, with the current objects first as ADDED events.
            let (items, rev, _) = try await selected(APIRequest(method: "GET", path: req.path, query: req.query.filter { $0.key != "limit" && $0.key != "continue" }), t, revision: nil)
            initial = items.map(\.1)
            from = rev
        } else {
            guard let v = Int64(rvText) else { throw APIError.badRequest("invalid resourceVersion \(rvText)") }
            from = v
        }
        let events: AsyncThrowingStream<StoreEvent, any Error>
        do {
            events = try await store.watch(prefix: prefix(t), after: from)
        } catch let e as StoreError {
            if case .compacted = e {
                // As kube-apiserver: a 200 stream whose one event is an ERROR carrying 410 Expired.
                let status = APIError.expired("too old resource version: \(from)").status
                return APIResponse(code: 200, body: .stream(AsyncThrowingStream { c in
                    c.yield(Data((JSONValue.object(["type": "ERROR", "object": status]).text() + "\n").utf8))
                    c.finish()
                }))
            }
            throw APIError.from(e, r, "")
        }
        let table = Tables.wanted(req.accept)
        let bookmarks = ["1", "true"].contains(req.query["allowWatchBookmarks"] ?? "")
        let timeout = Double(req.query["timeoutSeconds"] ?? "").map { min(max($0, 1), 3600) } ?? 1800
        let handler = self
        let includeObject = req.query["includeObject"]
        let line: @Sendable (String, JSONValue) -> Data = { type, o in
            let object = table ? Tables.table([o], r, meta: [:], includeObject: includeObject) : o
            return Data((JSONValue.object(["type": .string(type), "object": object]).text() + "\n").utf8)
        }
        let visible: @Sendable (JSONValue) -> Bool = { o in
            (ls?.matches(APIHandler.labels(o)) ?? true) && (fs?.matches(o) ?? true)
        }
        let firstEvents = initial
        let stream = AsyncThrowingStream<Data, any Error> { c in
            let task = Task {
                for o in firstEvents { c.yield(line("ADDED", o)) }
                let deadline = ContinuousClock.now + .seconds(timeout)
                let seen = Seen(from)
                let bookmark: @Sendable () -> Data = {
                    Data((JSONValue.object(["type": "BOOKMARK", "object": ["kind": .string(r.kind), "apiVersion": .string(r.groupVersion),
                                                                           "metadata": ["resourceVersion": .string(String(seen.revision))]]]).text() + "\n").utf8)
                }
                // The watch ends at its timeout; when asked, a bookmark every 30 s tells a quiet
                // watcher how far it has seen (as kube-apiserver sends them about once a minute).
                let ticker = Task {
                    var next = ContinuousClock.now + .seconds(30)
                    while !Task.isCancelled {
                        try await Task.sleep(until: min(next, deadline))
                        if ContinuousClock.now >= deadline { c.finish(); return }
                        if bookmarks { c.yield(bookmark()) }
                        next = ContinuousClock.now + .seconds(30)
                    }
                }
                defer { ticker.cancel() }
                do {
                    for try await e in events {
                        if Task.isCancelled { break }
                        seen.revision = e.revision
                        let now = try handler.present(e.kv, r)
                        let before = try e.previous.map { try handler.present($0, r) }
                        let isNow = e.kind != .deleted && visible(now)
                        let wasBefore = before.map(visible) ?? false
                        switch (e.kind, wasBefore, isNow) {
                        case (.created, _, true): c.yield(line("ADDED", now))
                        case (.updated, true, true): c.yield(line("MODIFIED", now))
                        case (.updated, false, true): c.yield(line("ADDED", now))
                        case (.updated, true, false): c.yield(line("DELETED", now))
                        case (.deleted, true, _): c.yield(line("DELETED", now))
                        default: break
                        }
                    }
                } catch StoreError.compacted(_, _) {
                    // A store that learns of compaction only once watching (etcd): the same ERROR event.
                    c.yield(Data((JSONValue.object(["type": "ERROR", "object": APIError.expired("too old resource version: \(from)").status]).text() + "\n").utf8))
                } catch {}
                c.finish()
            }
            let id = UUID()
            let late = handler.watches.withLock { w in
                if !w.closed { w.open[id] = c }
                return w.closed
            }
            if late { c.finish() }
            c.onTermination = { _ in
                task.cancel()
                _ = handler.watches.withLock { $0.open.removeValue(forKey: id) }
            }
        }
        return APIResponse(code: 200, body: .stream(stream))
    }
}

extension JSONValue {
    /// This object with `other`'s keys added (or replaced).
    func merging(_ other: [String: JSONValue]) -> JSONValue {
        guard case .object(var o) = self else { return self }
        for (k, v) in other { o[k] = v }
        return .object(o)
    }
}

/// The last revision a watch delivered, shared with its bookmark timer.
final class Seen: Sendable {
    private let value: Mutex<Int64>
    init(_ v: Int64) { value = Mutex(v) }
    var revision: Int64 {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

/// `continue` tokens: the last key returned and the revision the list was read at.
enum Continue {
    static func encode(after: String, revision: Int64) -> String {
        Data(JSONValue.object(["v": "meta.k8s.io/v1", "rv": .int(revision), "start": .string(after)]).text().utf8).base64EncodedString()
    }

    static func decode(_ token: String) -> (after: String, revision: Int64)? {
        guard let d = Data(base64Encoded: token), let j = try? JSONValue.parse(d), let a = j["start"]?.string, let r = j["rv"]?.int else { return nil }
        return (a, r)
    }
}
