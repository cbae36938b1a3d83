import KubeAPI

/// The three patch formats `kubectl` sends.
enum Patch {
    // MARK: JSON patch (RFC 6902)

    static func jsonPatch(_ doc: JSONValue, _ patch: JSONValue) throws -> JSONValue {
        guard case .array(let ops) = patch else { throw APIError.badRequest("a JSON patch is an array of operations") }
        var doc = doc
        for op in ops {
            guard let kind = op["op"]?.string, let path = op["path"]?.string else {
                throw APIError.badRequest("a JSON patch operation needs \"op\" and \"path\"")
            }
            let tokens = try pointer(path)
            switch kind {
            case "add": doc = try add(doc, tokens, try need(op["value"], "value"))
            case "remove": doc = try remove(doc, tokens).0
            case "replace":
                _ = try get(doc, tokens)
                doc = try set(doc, tokens, try need(op["value"], "value"))
            case "move":
                let from = try pointer(try need(op["from"]?.string, "from"))
                let (d, v) = try remove(doc, from)
                doc = try add(d, tokens, v)
            case "copy": doc = try add(doc, tokens, try get(doc, try pointer(try need(op["from"]?.string, "from"))))
            case "test":
                guard try get(doc, tokens) == op["value"] else { throw APIError(code: 422, reason: "Invalid", message: "the test of \(path) failed") }
            default: throw APIError.badRequest("unknown JSON patch operation \(kind)")
            }
        }
        return doc
    }

    static func need<T>(_ v: T?, _ what: String) throws -> T {
        guard let v else { throw APIError.badRequest("a JSON patch operation is missing \"\(what)\"") }
        return v
    }

    static func pointer(_ p: String) throws -> [String] {
        if p.isEmpty { return [] }
        guard p.hasPrefix("/") else { throw APIError.badRequest("invalid JSON pointer \(p)") }
        return p.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~") }
    }

    static func get(_ doc: JSONValue, _ t: [String]) throws -> JSONValue {
        var v = doc
        for k in t {
            switch v {
            case .object(let o):
                guard let n = o[k] else { throw APIError(code: 422, reason: "Invalid", message: "the path \"/\(t.joined(separator: "/"))\" does not exist") }
                v = n
            case .array(let a):
                guard let i = Int(k), a.indices.contains(i) else { throw APIError(code: 422, reason: "Invalid", message: "no index \(k) in the array") }
                v = a[i]
            default: throw APIError(code: 422, reason: "Invalid", message: "the path \"/\(t.joined(separator: "/"))\" does not exist")
            }
        }
        return v
    }

    /// Applies `f` to the parent container of the last token.
    static func edit(_ doc: JSONValue, _ t: [String], _ f: (inout JSONValue, String) throws -> Void) throws -> JSONValue {
        guard let last = t.last else { var d = doc; try f(&d, ""); return d }
        if t.count == 1 {
            var d = doc
            try f(&d, last)
            return d
        }
        let head = t[0]
        switch doc {
        case .object(var o):
            guard let child = o[head] else { throw APIError(code: 422, reason: "Invalid", message: "the path \"/\(t.joined(separator: "/"))\" does not exist") }
            o[head] = try edit(child, Array(t.dropFirst()), f)
            return .object(o)
        case .array(var a):
            guard let i = Int(head), a.indices.contains(i) else { throw APIError(code: 422, reason: "Invalid", message: "no index \(head) in the array") }
            a[i] = try edit(a[i], Array(t.dropFirst()), f)
            return .array(a)
        default:
            throw APIError(code: 422, reason: "Invalid", message: "the path \"/\(t.joined(separator: "/"))\" does not exist")
        }
    }

    static func add(_ doc: JSONValue, _ t: [String], _ value: JSONValue) throws -> JSONValue {
        if t.isEmpty { return value }
        return try edit(doc, t) { parent, key in
            switch parent {
            case .object(var o): o[key] = value; parent = .object(o)
            case .array(var a):
                if key == "-" { a.append(value) } else {
                    guard let i = Int(key), i >= 0, i <= a.count else { throw APIError(code: 422, reason: "Invalid", message: "no index \(key) in the array") }
                    a.insert(value, at: i)
                }
                parent = .array(a)
            default: throw APIError(code: 422, reason: "Invalid", message: "cannot add to a scalar")
            }
        }
    }

    static func set(_ doc: JSONValue, _ t: [String], _ value: JSONValue) throws -> JSONValue {
        if t.isEmpty { return value }
        return try edit(doc, t) { parent, key in
            switch parent {
            case .object(var o): o[key] = value; parent = .object(o)
            case .array(var a):
                guard let i = Int(key), a.indices.contains(i) else { throw APIError(code: 422, reason: "Invalid", message: "no index \(key) in the array") }
                a[i] = value
                parent = .array(a)
            default: throw APIError(code: 422, reason: "Invalid", message: "cannot replace in a scalar")
            }
        }
    }

    static func remove(_ doc: JSONValue, _ t: [String]) throws -> (JSONValue, JSONValue) {
        let v = try get(doc, t)
        let d = try edit(doc, t) { parent, key in
            switch parent {
            case .object(var o): o[key] = nil; parent = .object(o)
            case .array(var a): a.remove(at: Int(key)!); parent = .array(a)
            default: break
            }
        }
        return (d, v)
    }

    // MARK: merge patch (RFC 7386)

    static func mergePatch(_ doc: JSONValue, _ patch: JSONValue) -> JSONValue {
        guard case .object(let p) = patch else { return patch }
        var o = doc.object ?? [:]
        for (k, v) in p {
            if v == .null { o[k] = nil } else { o[k] = mergePatch(o[k] ?? .null, v) }
        }
        return .object(o)
    }

    // MARK: strategic merge patch

    /// The field a list of objects is merged by, as the built-in types' `patchMergeKey` tags say.
    static func mergeKey(_ field: String, path: [String], kind: String) -> String? {
        switch field {
        case "containers", "initContainers", "ephemeralContainers", "env", "volumes", "imagePullSecrets":
            return "name"
        case "ports":
            return kind == "Service" && path == ["spec"] ? "port" : "containerPort"
        case "volumeMounts": return "mountPath"
        case "conditions": return "type"
        case "hostAliases": return "ip"
        case "topologySpreadConstraints": return "topologyKey"
        default: return nil
        }
    }

    static func strategicMergePatch(_ doc: JSONValue, _ patch: JSONValue, kind: String) throws -> JSONValue {
        guard case .object = patch else { throw APIError.badRequest("a strategic merge patch is a JSON object") }
        return try smp(doc, patch, path: [], kind: kind)
    }

    static func smp(_ doc: JSONValue, _ patch: JSONValue, path: [String], kind: String) throws -> JSONValue {
        guard case .object(let p) = patch else { return patch }
        if p["$patch"]?.string == "replace" { return .object(p.filter { !$0.key.hasPrefix("$") }) }
        var o = doc.object ?? [:]
        var retain: Set<String>?
        for (k, v) in p {
            if k == "$patch" || k.hasPrefix("$setElementOrder/") { continue }
            if k == "$retainKeys" {
                retain = Set(v.array?.compactMap(\.string) ?? [])
                continue
            }
            if k.hasPrefix("$deleteFromPrimitiveList/") {
                let field = String(k.dropFirst("$deleteFromPrimitiveList/".count))
                let gone = Set(v.array ?? [])
                if let a = o[field]?.array { o[field] = .array(a.filter { !gone.contains($0) }) }
                continue
            }
            if v == .null { o[k] = nil; continue }
            switch (o[k], v) {
            case (.object?, .object(let po)) where po["$patch"]?.string == "delete":
                o[k] = nil
            case (.object(let base)?, .object):
                o[k] = try smp(.object(base), v, path: path + [k], kind: kind)
            case (.array(let base)?, .array(let items)):
                if let key = mergeKey(k, path: path, kind: kind), items.allSatisfy({ $0.object != nil }) {
                    var merged = base
                    for item in items {
                        let id = item[key]
                        let at = merged.firstIndex { $0[key] == id && id != nil }
                        if item["$patch"]?.string == "delete" {
                            if let at { merged.remove(at: at) }
                        } else if let at {
                            merged[at] = try smp(merged[at], item, path: path + [k], kind: kind)
                        } else {
                            merged.append(try smp(.object([:]), item, path: path + [k], kind: kind))
                        }
                    }
                    o[k] = .array(merged)
                } else {
                    o[k] = .array(try items.map { try smp(.null, $0, path: path + [k], kind: kind) })
                }
            default:
                o[k] = try smp(.null, v, path: path + [k], kind: kind)
            }
        }
        if let retain { o = o.filter { retain.contains($0.key) } }
        return .object(o)
    }
}

/// The `scale` subresource (autoscaling/v1 Scale) of Deployments and ReplicaSets.
enum Scale {
    static func of(_ o: JSONValue, _ r: ResourceInfo) -> JSONValue {
        var meta: [String: JSONValue] = [:]
        for f in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] { meta[f] = o[path: ["metadata", f]] }
        if let paths = r.custom?.scale {
            let selector = paths.labelSelector.flatMap { CustomResources.value(at: $0, in: o)?.string } ?? ""
            return ["kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": .object(meta),
                    "spec": ["replicas": CustomResources.value(at: paths.specReplicas, in: o) ?? 0],
                    "status": ["replicas": CustomResources.value(at: paths.statusReplicas, in: o) ?? 0, "selector": .string(selector)]]
        }
        // A ReplicationController's selector is a plain map; the others' a LabelSelector.
        let sel = r.kind == "ReplicationController"
            ? ObjectSelector(matchLabels: (o[path: ["spec", "selector"]]?.object ?? [:]).compactMapValues(\.string)).query
            : (o[path: ["spec", "selector"]].map { ObjectSelector($0).query } ?? "")
        return ["kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": .object(meta),
                "spec": ["replicas": o[path: ["spec", "replicas"]] ?? 0],
                "status": ["replicas": o[path: ["status", "replicas"]] ?? 0, "selector": .string(sel)]]
    }

    /// The object with the Scale's replicas (and its resourceVersion as the precondition).
    static func apply(_ scale: JSONValue, to o: JSONValue, _ r: ResourceInfo) throws -> JSONValue {
        guard let n = scale[path: ["spec", "replicas"]]?.int, n >= 0 else {
            throw APIError.invalid(r, o[path: ["metadata", "name"]]?.string ?? "", [FieldError("spec.replicas", "Invalid value: must be greater than or equal to 0")])
        }
        var out = o
        if let paths = r.custom?.scale {
            CustomResources.set(paths.specReplicas, to: .int(n), in: &out)
        } else {
            out[path: ["spec", "replicas"]] = .int(n)
        }
        out[path: ["metadata", "resourceVersion"]] = scale[path: ["metadata", "resourceVersion"]]
        return out
    }
}
