import KubeAPI

/// What the server does with fields a request's object has and its schema does not declare
/// (and with a key repeated in one JSON object): `?fieldValidation=`, as kube-apiserver reads it.
public enum FieldValidation: String, Sendable, CaseIterable {
    /// Drop them silently.
    case ignore = "Ignore"
    /// Drop them, and say so in a `Warning` header per field (the default since Kubernetes 1.23).
    case warn = "Warn"
    /// Refuse the request with 400 BadRequest naming every one.
    case strict = "Strict"

    /// The directive of a query value; an empty or missing one is `warn`.
    public init?(query: String?) {
        guard let q = query, !q.isEmpty else { self = .warn; return }
        guard let v = Self.allCases.first(where: { $0.rawValue == q }) else { return nil }
        self = v
    }
}

extension SchemaSet {
    /// Removes from `value` every field the schema at `node` does not declare, and returns their
    /// paths as upstream's strict decoder names them (`spec.replicaz`,
    /// `spec.template.spec.containers[0].imagex`). Below a free-form or
    /// `x-kubernetes-preserve-unknown-fields` schema everything is kept.
    public func prune(_ value: inout JSONValue, at node: Int) -> [String] {
        var unknown: [String] = []
        var path: [String] = []
        if let pruned = walk(value, node, &path, &unknown) { value = pruned }
        return unknown
    }

    /// The value with its unknown fields removed, or nil when it has none (so an object with
    /// nothing unknown, the usual case, is read and not rebuilt).
    func walk(_ value: JSONValue, _ index: Int, _ path: inout [String], _ unknown: inout [String]) -> JSONValue? {
        let n = nodes[index]
        switch (n.shape, value) {
        case (.object, .object(let o)), (.map, .object(let o)):
            var changed: [String: JSONValue?] = [:]
            for (k, v) in o {
                let child = n.properties[k] ?? n.additional
                path.append(k)
                defer { path.removeLast() }
                guard let child else {
                    if n.preserveUnknown { continue }
                    unknown.append(JSONValue.fieldPath(path))
                    changed[k] = .some(nil)
                    continue
                }
                if let c = walk(v, child, &path, &unknown) { changed[k] = .some(c) }
            }
            guard !changed.isEmpty else { return nil }
            var out = o
            for (k, v) in changed { out[k] = v }
            return .object(out)
        case (.list, .array(let a)):
            guard let items = n.items else { return nil }
            var out: [JSONValue]?
            for (i, v) in a.enumerated() {
                path.append("[\(i)]")
                defer { path.removeLast() }
                if let c = walk(v, items, &path, &unknown) {
                    if out == nil { out = a }
                    out![i] = c
                }
            }
            return out.map { .array($0) }
        default:
            // Scalars, free-form values, and values of the wrong type (validation answers those).
            return nil
        }
    }
}
