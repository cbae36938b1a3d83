import Foundation
import KubeAPI
import KubeStore
import APISchema
import FieldManager

/// Server-side apply (`PATCH` with `application/apply-patch+yaml`) and the field managers of
/// every other write.
extension APIHandler {
    /// Who a write's fields go to: an update by a named manager, an apply (which set them
    /// itself), or nobody: a write the server makes to storage on a subresource's behalf, as
    /// upstream's binding does (a Pod's managed fields do not change when it is bound).
    enum Tracking {
        case update(String)
        case applied
        case storage
    }

    /// The field manager of a write: `?fieldManager=`, or the first word of the client's
    /// `User-Agent` (`kubectl/v1.33.0 (linux/amd64) …` is `kubectl`), as kube-apiserver names it.
    func fieldManagerName(_ req: APIRequest) throws -> String {
        if let m = req.query["fieldManager"] {
            try Self.checkManagerName(m, options: req.method == "POST" ? "CreateOptions" : req.method == "PUT" ? "UpdateOptions" : "PatchOptions")
            return m
        }
        let agent = req.userAgent ?? ""
        let prefix = String(agent.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        return prefix.isEmpty ? "unknown" : String(prefix.prefix(128))
    }

    static func checkManagerName(_ m: String, options: String) throws {
        if m.count > 128 {
            throw APIError.invalidOptions(options, [FieldError("fieldManager", "Too long: may not be more than 128 bytes")])
        }
        if m.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }) {
            throw APIError.invalidOptions(options, [FieldError("fieldManager", "Invalid value: \(JSONValue.string(m).text()): must only contain printable characters")])
        }
    }

    /// The field manager of a resource, or of one of its subresources (nil for a kind without a schema).
    func fieldManager(_ r: ResourceInfo, subresource: String?) -> FieldManager? {
        FieldManager(schemas: schemas, kind: r.gvk, subresource: subresource ?? "", hasStatus: r.subresources.contains("status"))
    }

    func apply(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        guard let manager = req.query["fieldManager"], !manager.isEmpty else {
            throw APIError.invalidOptions("PatchOptions", [FieldError("fieldManager", "Required value: is required for apply patch")])
        }
        try Self.checkManagerName(manager, options: "PatchOptions")
        let force: Bool
        switch req.query["force"] {
        case nil, "false", "0": force = false
        case "true", "1": force = true
        case let v?: throw APIError.badRequest("invalid value for force: \(JSONValue.string(v).text())")
        }
        guard t.subresource == nil || t.subresource == "status" else {
            throw APIError.unsupportedMediaType("application/apply-patch+yaml")
        }
        guard let text = String(data: req.body, encoding: .utf8) else { throw APIError.badRequest("the apply patch is not UTF-8") }
        var duplicates: [String] = []
        var config: JSONValue
        if text.drop(while: \.isWhitespace).first == "{" {
            config = try JSONValue.parse(req.body, duplicates: &duplicates)
        } else {
            config = try YAMLToJSON.convert(text)
        }
        guard case .object = config else { throw APIError.badRequest("the apply patch must be an object") }
        guard let kind = config["kind"]?.string, !kind.isEmpty else {
            throw APIError.badRequest("Object 'Kind' is missing in '\(config.text())'")
        }
        guard let version = config["apiVersion"]?.string, version == r.groupVersion else {
            throw APIError.badRequest("Incorrect version specified in apply patch. Specified patch version: \(config["apiVersion"]?.string ?? ""), expected: \(r.groupVersion)")
        }
        try checkKind(config, r)
        if let n = config[path: ["metadata", "name"]]?.string, n != name {
            throw APIError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        if r.namespaced, let ns = config[path: ["metadata", "namespace"]]?.string, !ns.isEmpty, ns != t.namespace {
            throw APIError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
        }
        // As structured-merge-diff: a configuration with fields its kind does not declare is
        // refused whatever `fieldValidation` says (it cannot say who owns them).
        let typedFailure = { (message: String) in
            APIError.badRequest("failed to create typed patch object (\(t.namespace.map { "\($0)/" } ?? "")\(name); \(r.gvk)): \(message)")
        }
        let directive = try fieldValidation(req)
        if let node = schemas.node(for: r.gvk) {
            let unknown = schemas.prune(&config, at: node)
            if !unknown.isEmpty { throw typedFailure(unknown.sorted().map { ".\($0): field not declared in schema" }.joined(separator: ", ")) }
        }
        // Keys a JSON configuration repeats: as for any write.
        let repeated = duplicates.map { "duplicate field \"\($0)\"" }
        if directive == .strict && !repeated.isEmpty {
            throw APIError.badRequest("\(r.kind) in version \"\(r.version)\" cannot be handled as a \(r.kind): strict decoding error: " + repeated.joined(separator: ", "))
        }
        let warnings = directive == .warn ? repeated : []
        guard let fm = fieldManager(r, subresource: t.subresource) else { throw APIError.unsupportedMediaType("application/apply-patch+yaml") }
        let dryRun = try isDryRun(req)
        func applied(_ live: JSONValue?) throws -> JSONValue {
            do {
                return try fm.apply(live: live, config: config, manager: manager, force: force, now: Self.rfc3339())
            } catch let c as ApplyConflicts {
                throw APIError(code: 409, reason: "Conflict", message: c.message, details: ["causes": .array(c.causes)])
            } catch let e as FieldManagerError {
                throw e.typed ? typedFailure(e.message) : APIError.badRequest(e.message)
            }
        }
        for attempt in 0..<5 {
            let key = r.key(namespace: t.namespace, name: name)
            guard let current = try await storeCall(r, name, { try await self.store.get(key) }) else {
                guard t.subresource == nil else { throw APIError.notFound(r, name) }
                var o = try applied(nil)
                o[path: ["metadata", "name"]] = .string(name)
                do {
                    return try await insert(o, req, t, warnings: warnings, tracking: .applied)
                } catch let e as APIError where e.reason == "AlreadyExists" && attempt < 4 {
                    continue
                }
            }
            let live = try present(current, r)
            let merged = try applied(live)
            if let rv = config[path: ["metadata", "resourceVersion"]]?.string, !rv.isEmpty, rv != String(current.modRevision) {
                throw APIError.conflict(r, name)
            }
            do {
                let w = try await write(r, t, name: name, new: merged, current: current, subresource: t.subresource, dryRun: dryRun, tracking: .applied,
                                        presented: live)
                return .ok(try present(w.kv, r, known: w.object), warnings: warnings)
            } catch let e as APIError where e.reason == "Conflict" && e.details?["causes"] == nil && attempt < 4 {
                continue
            }
        }
        throw APIError.conflict(r, name)
    }
}
