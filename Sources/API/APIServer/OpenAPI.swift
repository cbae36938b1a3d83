import Foundation
import KubeAPI
import APISchema

/// The OpenAPI documents, built from the served resources and their upstream schemas:
/// `/openapi/v3` (an index of group-versions) and `/openapi/v3/apis/G/V` (what `kubectl explain`
/// reads, and where kubectl finds that PATCH takes `fieldValidation`, so it validates on the
/// server), and `/openapi/v2` (the whole API in Swagger 2.0).
struct OpenAPI: Sendable {
    static let protobufType = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    static let title = "Kubernetes"
    static let version = "v1.33.0"

    /// One group-version's document, serialized, with the hash its URL carries.
    struct Document: Sendable {
        var bytes: Data
        var hash: String
    }

    /// `api/v1`, `apis/apps/v1`, … → the v3 document.
    let v3: [String: Document]
    let v2: Data
    /// The same definitions as gnostic's `openapi_v2.Document` in protobuf (what kubectl asks
    /// for: `kubectl explain --output plaintext-openapiv2`, client-side validation).
    let v2Protobuf: Data

    init(resources: [ResourceInfo], schemas: SchemaSet) {
        var byGV: [String: [ResourceInfo]] = [:]
        for r in resources { byGV[r.group.isEmpty ? "api/\(r.version)" : "apis/\(r.group)/\(r.version)", default: []].append(r) }
        var v3: [String: Document] = [:]
        for (gv, rs) in byGV {
            let doc = Self.v3Document(rs, schemas)
            let bytes = doc.serialized()
            v3[gv] = Document(bytes: bytes, hash: Self.hash(bytes))
        }
        self.v3 = v3
        let doc = Self.v2Document(resources, schemas)
        v2 = doc.serialized()
        v2Protobuf = GnosticV2.document(doc)
    }

    // MARK: serving

    func index() -> APIResponse {
        var paths: [String: JSONValue] = [:]
        for (gv, d) in v3 { paths[gv] = ["serverRelativeURL": .string("/openapi/v3/\(gv)?hash=\(d.hash)")] }
        return .ok(["paths": .object(paths)])
    }

    func v3(_ groupVersion: String, accept: String?) -> APIResponse {
        guard let d = v3[groupVersion] else { return .error(.pathNotFound("/openapi/v3/\(groupVersion)")) }
        guard Self.acceptsJSON(accept) else {
            return .error(APIError(code: 406, reason: "NotAcceptable", message: "only application/json is served for OpenAPI v3"))
        }
        return APIResponse(code: 200, body: .bytes(d.bytes, type: "application/json"))
    }

    func v2(accept: String?) -> APIResponse {
        if accept?.contains("protobuf") == true { return APIResponse(code: 200, body: .bytes(v2Protobuf, type: Self.protobufType)) }
        return APIResponse(code: 200, body: .bytes(v2, type: "application/json"))
    }

    static func acceptsJSON(_ accept: String?) -> Bool {
        guard let accept, !accept.isEmpty else { return true }
        return accept.split(separator: ",").contains {
            let type = $0.split(separator: ";")[0].trimmingCharacters(in: .whitespaces)
            return ["application/json", "application/*", "*/*"].contains(type)
        }
    }

    /// FNV-1a over the bytes, twice with different bases: a content hash for the URL (clients
    /// cache a document under it), not a security property.
    static func hash(_ d: Data) -> String {
        var a: UInt64 = 0xcbf29ce484222325, b: UInt64 = 0x84222325cbf29ce4
        for byte in d {
            a = (a ^ UInt64(byte)) &* 0x100000001b3
            b = (b ^ UInt64(byte)) &* 0x100000001b3
        }
        return String(format: "%016llX%016llX", a, b)
    }

    // MARK: building

    static let meta = "io.k8s.apimachinery.pkg.apis.meta.v1."

    /// The definitions a group-version's document needs: its kinds, their lists, the
    /// subresources' kinds, what the operations take and answer, and everything those reach.
    static func definitionNames(_ rs: [ResourceInfo], _ schemas: SchemaSet) -> Set<String> {
        var roots = ["Status", "DeleteOptions", "WatchEvent", "Patch", "APIResourceList"].map { meta + $0 }
        for r in rs {
            for gvk in [r.gvk, GroupVersionKind(group: r.group, version: r.version, kind: r.kind + "List")]
                + r.subresources.map({ r.gvk(subresource: $0) }) {
                if let n = schemas.kindNames[gvk] { roots.append(n) }
            }
        }
        return schemas.closure(of: roots)
    }

    static func ref(_ name: String, v2: Bool) -> JSONValue {
        ["$ref": .string((v2 ? "#/definitions/" : "#/components/schemas/") + name)]
    }

    /// One operation of a path: what it does, to which kind, with which query parameters, and what it answers.
    struct Operation {
        var method: String
        var action: String
        var kind: GroupVersionKind
        var id: String
        var description: String
        var parameters: [String]
        var body: String?
        var response: String?
    }

    static let parameterDescriptions: [String: String] = [
        "dryRun": "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        "fieldManager": "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        "force": "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        "labelSelector": "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        "fieldSelector": "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        "limit": "limit is a maximum number of responses to return for a list call.",
        "continue": "The continue option should be set when retrieving more results from the server.",
        "resourceVersion": "resourceVersion sets a constraint on what resource versions a request may be served from.",
        "watch": "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        "timeoutSeconds": "Timeout for the list/watch call.",
    ]

    static let patchTypes = ["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
                             "application/strategic-merge-patch+json"]

    /// Every path of a resource and its operations.
    static func paths(_ r: ResourceInfo, _ schemas: SchemaSet) -> [(path: String, ops: [Operation])] {
        let base = r.group.isEmpty ? "/api/\(r.version)" : "/apis/\(r.group)/\(r.version)"
        let collection = base + (r.namespaced ? "/namespaces/{namespace}/" : "/") + r.resource
        let item = collection + "/{name}"
        let name = schemas.kindNames[r.gvk]
        let list = schemas.kindNames[GroupVersionKind(group: r.group, version: r.version, kind: r.kind + "List")]
        let scope = r.namespaced ? "Namespaced" : ""
        let idKind = (r.group.isEmpty ? "Core" : r.group.split(separator: ".").first!.capitalized) + r.version.capitalized + scope + r.kind
        let status = meta + "Status"
        let writes = ["dryRun", "fieldManager", "fieldValidation"]
        let listing = ["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch", "timeoutSeconds"]
        var out: [(String, [Operation])] = [
            (collection, [
                Operation(method: "get", action: "list", kind: r.gvk, id: "list" + idKind, description: "list or watch objects of kind \(r.kind)",
                          parameters: listing, body: nil, response: list),
                Operation(method: "post", action: "post", kind: r.gvk, id: "create" + idKind, description: "create a \(r.kind)",
                          parameters: writes, body: name, response: name),
                Operation(method: "delete", action: "deletecollection", kind: r.gvk, id: "deletecollection" + idKind,
                          description: "delete collection of \(r.kind)", parameters: ["dryRun"] + listing.dropLast(2), body: meta + "DeleteOptions", response: status),
            ]),
            (item, [
                Operation(method: "get", action: "get", kind: r.gvk, id: "read" + idKind, description: "read the specified \(r.kind)",
                          parameters: [], body: nil, response: name),
                Operation(method: "put", action: "put", kind: r.gvk, id: "replace" + idKind, description: "replace the specified \(r.kind)",
                          parameters: writes, body: name, response: name),
                Operation(method: "patch", action: "patch", kind: r.gvk, id: "patch" + idKind, description: "partially update the specified \(r.kind)",
                          parameters: writes + ["force"], body: meta + "Patch", response: name),
                Operation(method: "delete", action: "delete", kind: r.gvk, id: "delete" + idKind, description: "delete a \(r.kind)",
                          parameters: ["dryRun"], body: meta + "DeleteOptions", response: status),
            ]),
        ]
        if r.namespaced {
            out.append((base + "/" + r.resource, [
                Operation(method: "get", action: "list", kind: r.gvk, id: "list" + idKind.replacingOccurrences(of: "Namespaced", with: "") + "ForAllNamespaces",
                          description: "list or watch objects of kind \(r.kind)", parameters: listing, body: nil, response: list),
            ]))
        }
        for sub in r.subresources {
            let kind = r.gvk(subresource: sub)
            let subName = schemas.kindNames[kind]
            let subID = idKind + sub.capitalized
            if sub == "log" || sub == "exec" {
                // Answered with text or a stream (the kubelet's), not an object.
                let ops = sub == "log"
                    ? [Operation(method: "get", action: "get", kind: kind, id: "read" + subID, description: "read log of the specified \(r.kind)",
                                 parameters: [], body: nil, response: nil)]
                    : ["get", "post"].map { m in Operation(method: m, action: "connect", kind: kind, id: "connect\(m.capitalized)" + subID,
                                                           description: "connect \(m.uppercased()) requests to exec of \(r.kind)",
                                                           parameters: [], body: nil, response: nil) }
                out.append((item + "/" + sub, ops))
                continue
            }
            if sub == "binding" || sub == "eviction" {
                out.append((item + "/" + sub, [Operation(method: "post", action: "post", kind: kind, id: "create" + subID,
                                                         description: "create \(sub) of a \(r.kind)", parameters: writes, body: subName, response: subName)]))
                continue
            }
            out.append((item + "/" + sub, [
                Operation(method: "get", action: "get", kind: kind, id: "read" + subID, description: "read \(sub) of the specified \(r.kind)",
                          parameters: [], body: nil, response: subName),
                Operation(method: "put", action: "put", kind: kind, id: "replace" + subID, description: "replace \(sub) of the specified \(r.kind)",
                          parameters: writes, body: subName, response: subName),
                Operation(method: "patch", action: "patch", kind: kind, id: "patch" + subID, description: "partially update \(sub) of the specified \(r.kind)",
                          parameters: writes + ["force"], body: meta + "Patch", response: subName),
            ]))
        }
        return out
    }

    static func gvkJSON(_ k: GroupVersionKind) -> JSONValue {
        ["group": .string(k.group), "version": .string(k.version), "kind": .string(k.kind)]
    }

    static func pathParameters(_ path: String, v2: Bool) -> JSONValue {
        var ps: [JSONValue] = []
        for (p, d) in [("name", "name of the object"), ("namespace", "object name and auth scope, such as for teams and projects")]
        where path.contains("{\(p)}") {
            ps.append(v2 ? ["name": .string(p), "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": .string(d)]
                         : ["name": .string(p), "in": "path", "required": true, "schema": ["type": "string", "uniqueItems": true], "description": .string(d)])
        }
        return .array(ps)
    }

    static func queryParameter(_ name: String, v2: Bool) -> JSONValue {
        let type: JSONValue = ["limit", "timeoutSeconds"].contains(name) ? "integer" : ["watch", "force"].contains(name) ? "boolean" : "string"
        let d = JSONValue.string(parameterDescriptions[name] ?? "")
        return v2 ? ["name": .string(name), "in": "query", "type": type, "uniqueItems": true, "description": d]
                  : ["name": .string(name), "in": "query", "schema": ["type": type, "uniqueItems": true], "description": d]
    }

    static func v3Document(_ rs: [ResourceInfo], _ schemas: SchemaSet) -> JSONValue {
        var paths: [String: JSONValue] = [:]
        for r in rs {
            for (path, ops) in Self.paths(r, schemas) {
                var item: [String: JSONValue] = ["parameters": pathParameters(path, v2: false)]
                for op in ops {
                    var o: [String: JSONValue] = [
                        "description": .string(op.description), "operationId": .string(op.id),
                        "x-kubernetes-action": .string(op.action), "x-kubernetes-group-version-kind": gvkJSON(op.kind),
                        "parameters": .array(op.parameters.map { queryParameter($0, v2: false) }),
                        "tags": [.string(r.group.isEmpty ? "core_\(r.version)" : "\(r.group)_\(r.version)")],
                    ]
                    if let body = op.body {
                        let types = op.method == "patch" ? patchTypes : ["*/*"]
                        o["requestBody"] = ["content": .object(Dictionary(uniqueKeysWithValues: types.map { ($0, ["schema": ref(body, v2: false)]) })),
                                            "required": .bool(op.method != "delete")]
                    }
                    if let response = op.response {
                        let content: JSONValue = ["application/json": ["schema": ref(response, v2: false)],
                                                  "application/yaml": ["schema": ref(response, v2: false)]]
                        o["responses"] = ["200": ["description": "OK", "content": content]]
                        if op.method == "post" { o["responses"]?["201"] = ["description": "Created", "content": content] }
                    }
                    item[op.method] = .object(o)
                }
                paths[path] = .object(item)
            }
        }
        var components: [String: JSONValue] = [:]
        for name in definitionNames(rs, schemas) { components[name] = schemas.definitions[name] }
        return ["openapi": "3.0.0", "info": ["title": .string(title), "version": .string(version)], "paths": .object(paths),
                "components": ["schemas": .object(components),
                               "securitySchemes": ["BearerToken": ["type": "apiKey", "name": "authorization", "in": "header",
                                                                   "description": "Bearer Token authentication"]]]]
    }

    static func v2Document(_ rs: [ResourceInfo], _ schemas: SchemaSet) -> JSONValue {
        var paths: [String: JSONValue] = [:]
        for r in rs {
            for (path, ops) in Self.paths(r, schemas) {
                var item: [String: JSONValue] = ["parameters": pathParameters(path, v2: true)]
                for op in ops {
                    var params = op.parameters.map { queryParameter($0, v2: true) }
                    if let body = op.body { params.append(["name": "body", "in": "body", "required": .bool(op.method != "delete"), "schema": ref(body, v2: true)]) }
                    var o: [String: JSONValue] = [
                        "description": .string(op.description), "operationId": .string(op.id),
                        "x-kubernetes-action": .string(op.action), "x-kubernetes-group-version-kind": gvkJSON(op.kind),
                        "parameters": .array(params), "consumes": op.method == "patch" ? .array(patchTypes.map { .string($0) }) : ["*/*"],
                        "produces": ["application/json", "application/yaml"], "schemes": ["https"],
                    ]
                    if let response = op.response {
                        o["responses"] = ["200": ["description": "OK", "schema": ref(response, v2: true)], "401": ["description": "Unauthorized"]]
                    }
                    item[op.method] = .object(o)
                }
                paths[path] = .object(item)
            }
        }
        var definitions: [String: JSONValue] = [:]
        for name in definitionNames(rs, schemas) { definitions[name] = swagger2(schemas.definitions[name]!) }
        return ["swagger": "2.0", "info": ["title": .string(title), "version": .string(version)], "paths": .object(paths),
                "definitions": .object(definitions),
                "securityDefinitions": ["BearerToken": ["type": "apiKey", "name": "authorization", "in": "header",
                                                        "description": "Bearer Token authentication"]],
                "security": [["BearerToken": []]]]
    }

    /// A v3 schema as Swagger 2.0 writes it: `$ref`s into `#/definitions/`, upstream's
    /// `allOf: [{$ref}]` wrapper folded back into a plain `$ref` (keeping the field's own
    /// description), and `oneOf` of scalars (quantities, int-or-string) a string.
    static func swagger2(_ s: JSONValue) -> JSONValue {
        switch s {
        case .object(var o):
            if let all = o["allOf"]?.array, all.count == 1, let r = all[0]["$ref"] {
                o["allOf"] = nil
                o["$ref"] = r
            }
            if let r = o["$ref"]?.string, let name = SchemaSet.referenced(r) { o["$ref"] = .string("#/definitions/" + name) }
            if o["oneOf"] != nil, o["type"] == nil {
                o["oneOf"] = nil
                o["type"] = "string"
            }
            var out: [String: JSONValue] = [:]
            for (k, v) in o {
                switch k {
                case "properties": out[k] = .object((v.object ?? [:]).mapValues(swagger2))
                case "items", "additionalProperties", "allOf", "oneOf", "anyOf", "not": out[k] = swagger2(v)
                default: out[k] = v
                }
            }
            return .object(out)
        case .array(let a):
            return .array(a.map(swagger2))
        default:
            return s
        }
    }
}

/// gnostic's OpenAPI v2 protobuf (`openapiv2/OpenAPIv2.proto`), as kube-apiserver serves
/// `/openapi/v2` to kubectl: the document's swagger version, info and definitions (paths are
/// left empty: kubectl reads the definitions). Values that are JSON in the schema (defaults,
/// enums, `x-` extensions) travel as gnostic's `Any` with their text in `yaml` (JSON is YAML).
enum GnosticV2 {
    struct Writer {
        var bytes: [UInt8] = []

        mutating func varint(_ v: UInt64) {
            var v = v
            while v >= 0x80 {
                bytes.append(UInt8(v & 0x7f) | 0x80)
                v >>= 7
            }
            bytes.append(UInt8(v))
        }

        mutating func tag(_ field: Int, _ wire: UInt64) { varint(UInt64(field) << 3 | wire) }

        mutating func string(_ field: Int, _ s: String) {
            tag(field, 2)
            varint(UInt64(s.utf8.count))
            bytes.append(contentsOf: s.utf8)
        }

        mutating func message(_ field: Int, _ build: (inout Writer) -> Void) {
            var inner = Writer()
            build(&inner)
            tag(field, 2)
            varint(UInt64(inner.bytes.count))
            bytes.append(contentsOf: inner.bytes)
        }

        mutating func double(_ field: Int, _ d: Double) {
            tag(field, 1)
            var bits = d.bitPattern.littleEndian
            withUnsafeBytes(of: &bits) { bytes.append(contentsOf: $0) }
        }

        mutating func bool(_ field: Int, _ b: Bool) {
            guard b else { return }
            tag(field, 0)
            varint(1)
        }

        mutating func int64(_ field: Int, _ v: Int64) {
            tag(field, 0)
            varint(UInt64(bitPattern: v))
        }

        /// gnostic's `Any`: the value's text in `yaml` (2).
        mutating func any(_ field: Int, _ v: JSONValue) { message(field) { $0.string(2, v.text()) } }
    }

    static func document(_ doc: JSONValue) -> Data {
        var w = Writer()
        w.string(1, doc["swagger"]?.string ?? "2.0")
        w.message(2) { i in
            i.string(1, doc[path: ["info", "title"]]?.string ?? "")
            i.string(2, doc[path: ["info", "version"]]?.string ?? "")
        }
        w.message(8) { _ in }
        let definitions = doc["definitions"]?.object ?? [:]
        w.message(9) { d in
            for name in definitions.keys.sorted() {
                d.message(1) { n in
                    n.string(1, name)
                    n.message(2) { schema(definitions[name]!, into: &$0) }
                }
            }
        }
        return Data(w.bytes)
    }

    static func number(_ v: JSONValue?) -> Double? {
        switch v {
        case .int(let i)?: return Double(i)
        case .double(let d)?: return d
        default: return nil
        }
    }

    static func schema(_ s: JSONValue, into w: inout Writer) {
        guard case .object(let o) = s else { return }
        if let r = o["$ref"]?.string { w.string(1, r) }
        if let f = o["format"]?.string { w.string(2, f) }
        if let t = o["title"]?.string { w.string(3, t) }
        if let d = o["description"]?.string { w.string(4, d) }
        if let d = o["default"] { w.any(5, d) }
        if let v = number(o["multipleOf"]) { w.double(6, v) }
        if let v = number(o["maximum"]) { w.double(7, v) }
        w.bool(8, o["exclusiveMaximum"]?.bool == true)
        if let v = number(o["minimum"]) { w.double(9, v) }
        w.bool(10, o["exclusiveMinimum"]?.bool == true)
        for (field, key) in [(11, "maxLength"), (12, "minLength")] { if let v = o[key]?.int { w.int64(field, v) } }
        if let p = o["pattern"]?.string { w.string(13, p) }
        for (field, key) in [(14, "maxItems"), (15, "minItems")] { if let v = o[key]?.int { w.int64(field, v) } }
        w.bool(16, o["uniqueItems"]?.bool == true)
        for (field, key) in [(17, "maxProperties"), (18, "minProperties")] { if let v = o[key]?.int { w.int64(field, v) } }
        for r in o["required"]?.array ?? [] { if let r = r.string { w.string(19, r) } }
        for e in o["enum"]?.array ?? [] { w.any(20, e) }
        switch o["additionalProperties"] {
        case .object?: w.message(21) { a in a.message(1) { schema(o["additionalProperties"]!, into: &$0) } }
        case .bool(let b)?: w.message(21) { a in a.tag(2, 0); a.varint(b ? 1 : 0) }
        default: break
        }
        switch o["type"] {
        case .string(let t)?: w.message(22) { $0.string(1, t) }
        case .array(let ts)?: w.message(22) { t in for x in ts { if let x = x.string { t.string(1, x) } } }
        default: break
        }
        switch o["items"] {
        case .object?: w.message(23) { i in i.message(1) { schema(o["items"]!, into: &$0) } }
        case .array(let a)?: w.message(23) { i in for x in a { i.message(1) { schema(x, into: &$0) } } }
        default: break
        }
        for x in o["allOf"]?.array ?? [] { w.message(24) { schema(x, into: &$0) } }
        if let props = o["properties"]?.object {
            w.message(25) { p in
                for k in props.keys.sorted() {
                    p.message(1) { n in
                        n.string(1, k)
                        n.message(2) { schema(props[k]!, into: &$0) }
                    }
                }
            }
        }
        w.bool(27, o["readOnly"]?.bool == true)
        for k in o.keys.sorted() where k.hasPrefix("x-") {
            w.message(31) { n in
                n.string(1, k)
                n.any(2, o[k]!)
            }
        }
    }
}
