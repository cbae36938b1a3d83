import Foundation
import KubeAPI

/// A kind's identity in the API: what `x-kubernetes-group-version-kind` names.
public struct GroupVersionKind: Sendable, Hashable, CustomStringConvertible {
    public var group: String
    public var version: String
    public var kind: String

    public init(group: String, version: String, kind: String) {
        self.group = group
        self.version = version
        self.kind = kind
    }

    /// `apps/v1, Kind=Deployment`, as apimachinery prints one.
    public var description: String { "\(group.isEmpty ? version : "\(group)/\(version)"), Kind=\(kind)" }
}

/// A set of OpenAPI schemas compiled for walking objects: every schema is a `Node`, nodes refer
/// to each other by index (so recursive schemas, such as a CRD's `JSONSchemaProps`, need no
/// cycles of references), and `$ref`s are resolved once, here.
public struct SchemaSet: Sendable {
    /// How a list's items are identified, as structured-merge-diff reads it: from
    /// `x-kubernetes-list-type` and `x-kubernetes-list-map-keys`, or for the built-in kinds from
    /// the strategic-merge-patch extensions (`merge` with a key is a map keyed by it, `merge`
    /// without one a set); anything else is atomic.
    public enum ListType: Sendable, Hashable {
        case atomic
        case set
        case map(keys: [String])
    }

    public enum Shape: Sendable, Hashable {
        /// An object with declared fields (and perhaps `additionalProperties` besides).
        case object
        /// A map: only `additionalProperties`.
        case map
        case list
        case scalar
        /// Anything goes below this point: no type, a free-form object (`RawExtension`,
        /// `FieldsV1`) or `x-kubernetes-preserve-unknown-fields`.
        case any
    }

    public struct Node: Sendable {
        public var shape: Shape
        /// The OpenAPI type (`string`, `integer`, …), or nil where the schema gives none.
        public var type: String?
        public var format: String?
        public var properties: [String: Int] = [:]
        /// The schema of a map's values (or an object's extra fields).
        public var additional: Int?
        public var items: Int?
        public var listType: ListType = .atomic
        /// `x-kubernetes-map-type: atomic`: replaced whole by whoever sets it.
        public var atomicMap = false
        public var required: [String] = []
        public var enumValues: [JSONValue]?
        /// The schema's `default`.
        public var defaultValue: JSONValue?
        /// Each field's own `default` (upstream puts `{}` beside the reference of a field whose
        /// Go type is a struct, not a pointer: such a field is there, empty, in a zero object).
        public var fieldDefaults: [String: JSONValue] = [:]
        /// The value checks of a structural schema (`pattern`, `minimum`, `maxLength`, …), as given.
        public var checks: [String: JSONValue] = [:]
        public var nullable = false
        /// `x-kubernetes-preserve-unknown-fields` beside declared fields: those are typed, the rest kept.
        public var preserveUnknown = false
    }

    static let checkKeys = ["pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                            "minItems", "maxItems", "minProperties", "maxProperties", "multipleOf", "uniqueItems", "format"]

    public private(set) var nodes: [Node] = []
    /// Definition name (`io.k8s.api.apps.v1.Deployment`) → node.
    public private(set) var named: [String: Int] = [:]
    /// Kind → node, from `x-kubernetes-group-version-kind`.
    public private(set) var kinds: [GroupVersionKind: Int] = [:]
    /// Kind → definition name.
    public private(set) var kindNames: [GroupVersionKind: String] = [:]
    /// The definitions as given (what the OpenAPI documents serve).
    public private(set) var definitions: [String: JSONValue]

    /// Compiles `definitions` (OpenAPI v3 component schemas, refs as `#/components/schemas/NAME`).
    public init(definitions: [String: JSONValue]) {
        self.definitions = [:]
        add(definitions)
    }

    /// This set with more definitions (a custom resource's), compiled against those it has;
    /// one of the same name replaces the earlier one.
    public func adding(_ more: [String: JSONValue]) -> SchemaSet {
        var s = self
        s.add(more)
        return s
    }

    mutating func add(_ more: [String: JSONValue]) {
        for name in more.keys.sorted() {
            named[name] = nodes.count
            nodes.append(Node(shape: .any))
            definitions[name] = more[name]
        }
        for name in more.keys.sorted() {
            let schema = more[name]!
            nodes[named[name]!] = compile(schema)
            for gvk in schema["x-kubernetes-group-version-kind"]?.array ?? [] {
                let k = GroupVersionKind(group: gvk["group"]?.string ?? "", version: gvk["version"]?.string ?? "",
                                         kind: gvk["kind"]?.string ?? "")
                kinds[k] = named[name]
                kindNames[k] = name
            }
        }
    }

    public subscript(_ index: Int) -> Node { nodes[index] }

    public func node(for gvk: GroupVersionKind) -> Int? { kinds[gvk] }

    static let refPrefixes = ["#/components/schemas/", "#/definitions/"]

    /// The definition a `$ref` names.
    public static func referenced(_ ref: String) -> String? {
        for p in refPrefixes where ref.hasPrefix(p) { return String(ref.dropFirst(p.count)) }
        return nil
    }

    /// The node of a schema that is only a reference (`$ref`, or upstream's `allOf: [{$ref}]`
    /// wrapper that carries a field's own description and default beside it).
    func reference(_ s: JSONValue) -> Int? {
        if let ref = s["$ref"]?.string, let name = Self.referenced(ref) { return named[name] }
        if let all = s["allOf"]?.array, all.count == 1, let ref = all[0]["$ref"]?.string, let name = Self.referenced(ref) {
            return named[name]
        }
        return nil
    }

    /// A node for an inline schema (or the node it refers to).
    mutating func index(of s: JSONValue) -> Int {
        if let r = reference(s) { return r }
        let n = compile(s)
        nodes.append(n)
        return nodes.count - 1
    }

    mutating func compile(_ s: JSONValue) -> Node {
        if let r = reference(s) { return nodes[r] }
        let type = s["type"]?.string
        var n = Node(shape: .scalar, type: type, format: s["format"]?.string)
        n.required = s["required"]?.array?.compactMap(\.string) ?? []
        n.enumValues = s["enum"]?.array
        n.defaultValue = s["default"]
        n.nullable = s["nullable"]?.bool == true
        for k in Self.checkKeys { if let v = s[k] { n.checks[k] = v } }
        if s["x-kubernetes-preserve-unknown-fields"]?.bool == true {
            n.preserveUnknown = true
            if s["properties"] == nil && s["additionalProperties"] == nil && s["items"] == nil {
                n.shape = .any
                return n
            }
        }
        if s["x-kubernetes-int-or-string"]?.bool == true || s["format"]?.string == "int-or-string" {
            n.shape = .scalar
            return n
        }
        switch type {
        case "object":
            let props = s["properties"]?.object ?? [:]
            let additional = s["additionalProperties"]
            for (k, v) in props {
                n.properties[k] = index(of: v)
                if let d = v["default"] { n.fieldDefaults[k] = d }
            }
            if case .object = additional { n.additional = index(of: additional!) }
            if additional?.bool == true { n.additional = -1 }
            n.atomicMap = s["x-kubernetes-map-type"]?.string == "atomic"
            if props.isEmpty {
                n.shape = n.additional == nil ? .any : .map
            } else {
                n.shape = .object
            }
            if n.additional == -1 { n.additional = nil; n.shape = props.isEmpty ? .any : .object }
        case "array":
            n.shape = .list
            if let items = s["items"] { n.items = index(of: items) }
            let strategy = s["x-kubernetes-patch-strategy"]?.string ?? ""
            switch s["x-kubernetes-list-type"]?.string {
            case "map": n.listType = .map(keys: s["x-kubernetes-list-map-keys"]?.array?.compactMap(\.string) ?? [])
            case "set": n.listType = .set
            case "atomic": n.listType = .atomic
            default:
                if strategy.split(separator: ",").contains("merge") {
                    if let key = s["x-kubernetes-patch-merge-key"]?.string { n.listType = .map(keys: [key]) } else { n.listType = .set }
                }
            }
        case nil:
            // `oneOf` of scalars (Quantity, IntOrString) is a scalar; no type at all is anything.
            if let one = s["oneOf"]?.array, !one.isEmpty, one.allSatisfy({ ["string", "integer", "number"].contains($0["type"]?.string ?? "") }) {
                n.shape = .scalar
            } else {
                n.shape = .any
            }
        default:
            n.shape = .scalar
        }
        return n
    }
}

extension SchemaSet {
    /// The schemas of the built-in kinds, as kube-apiserver publishes them (see
    /// `scripts/gen-openapi-schemas.py`).
    public static let builtin: SchemaSet = {
        guard case .object(let defs) = try! JSONValue.parse(Data(upstreamSchemasJSON.utf8)) else { fatalError("upstream schemas are not an object") }
        return SchemaSet(definitions: defs)
    }()

    /// The definition names a set of definitions reaches through `$ref`, the given ones included.
    public func closure(of roots: [String]) -> Set<String> {
        var seen = Set<String>()
        var todo = roots
        while let name = todo.popLast() {
            guard seen.insert(name).inserted, let d = definitions[name] else { continue }
            d.forEachReference { todo.append($0) }
        }
        return seen.filter { definitions[$0] != nil }
    }
}

extension JSONValue {
    /// Calls `body` with the definition name of every `$ref` inside this value.
    func forEachReference(_ body: (String) -> Void) {
        switch self {
        case .object(let o):
            if let r = o["$ref"]?.string, let name = SchemaSet.referenced(r) { body(name) }
            for v in o.values { v.forEachReference(body) }
        case .array(let a):
            for v in a { v.forEachReference(body) }
        default: break
        }
    }
}
