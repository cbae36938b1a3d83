import Foundation
import KubeAPI
import APISchema

/// CustomResourceDefinitions (apiextensions.k8s.io/v1): how one is defaulted, validated and
/// established, and what it serves: a resource per served version, with the version's schema
/// as an OpenAPI definition (metadata as ObjectMeta, as upstream publishes it).
enum CustomResources {
    static let metaRef = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1."

    /// Upstream's definition name of a custom kind: the group reversed, the version, the kind
    /// (`com.example.stable.v1.CronTab`).
    static func definitionName(group: String, version: String, kind: String) -> String {
        (group.split(separator: ".").reversed().map(String.init) + [version, kind]).joined(separator: ".")
    }

    static func names(_ crd: JSONValue) -> (plural: String, singular: String, kind: String, listKind: String) {
        let n = crd[path: ["spec", "names"]]
        let kind = n?["kind"]?.string ?? ""
        return (n?["plural"]?.string ?? "", n?["singular"]?.string ?? kind.lowercased(), kind, n?["listKind"]?.string ?? kind + "List")
    }

    /// The resources (one per served version) and OpenAPI definitions a definition declares.
    static func served(_ crd: JSONValue) -> ([ResourceInfo], [String: JSONValue]) {
        guard let name = crd[path: ["metadata", "name"]]?.string, let group = crd[path: ["spec", "group"]]?.string else { return ([], [:]) }
        let (plural, singular, kind, listKind) = names(crd)
        let namespaced = crd[path: ["spec", "scope"]]?.string != "Cluster"
        let shortNames = crd[path: ["spec", "names", "shortNames"]]?.array?.compactMap(\.string) ?? []
        let categories = crd[path: ["spec", "names", "categories"]]?.array?.compactMap(\.string) ?? []
        var resources: [ResourceInfo] = []
        var definitions: [String: JSONValue] = [:]
        for v in crd[path: ["spec", "versions"]]?.array ?? [] where v["served"]?.bool == true {
            guard let version = v["name"]?.string else { continue }
            let defName = definitionName(group: group, version: version, kind: kind)
            var schema = v[path: ["schema", "openAPIV3Schema"]] ?? ["type": "object", "x-kubernetes-preserve-unknown-fields": true]
            schema[path: ["properties", "apiVersion"]] = ["type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"]
            schema[path: ["properties", "kind"]] = ["type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"]
            schema[path: ["properties", "metadata"]] = ["allOf": [["$ref": .string(metaRef + "ObjectMeta")]],
                                                      "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"]
            if schema["type"] == nil { schema["type"] = "object" }
            schema["x-kubernetes-group-version-kind"] = [["group": .string(group), "version": .string(version), "kind": .string(kind)]]
            definitions[defName] = schema
            definitions[definitionName(group: group, version: version, kind: listKind)] = [
                "description": .string("\(listKind) is a list of \(kind)"), "type": "object", "required": ["items"],
                "properties": ["apiVersion": schema[path: ["properties", "apiVersion"]]!, "kind": schema[path: ["properties", "kind"]]!,
                               "metadata": ["allOf": [["$ref": .string(metaRef + "ListMeta")]]],
                               "items": ["type": "array", "items": ["$ref": .string("#/components/schemas/" + defName)],
                                         "description": .string("List of \(plural). More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md")]],
                "x-kubernetes-group-version-kind": [["group": .string(group), "version": .string(version), "kind": .string(listKind)]],
            ]
            var subresources: [String] = []
            if v[path: ["subresources", "status"]] != nil { subresources.append("status") }
            var scale: CustomInfo.ScalePaths?
            if let s = v[path: ["subresources", "scale"]] {
                subresources.append("scale")
                scale = CustomInfo.ScalePaths(specReplicas: s["specReplicasPath"]?.string ?? ".spec.replicas",
                                              statusReplicas: s["statusReplicasPath"]?.string ?? ".status.replicas",
                                              labelSelector: s["labelSelectorPath"]?.string)
            }
            let columns = (v["additionalPrinterColumns"]?.array ?? []).map { c in
                CustomInfo.PrinterColumn(name: c["name"]?.string ?? "", type: c["type"]?.string ?? "string", format: c["format"]?.string ?? "",
                                         description: c["description"]?.string ?? "", priority: Int(c["priority"]?.int ?? 0),
                                         jsonPath: c["jsonPath"]?.string ?? "")
            }
            resources.append(ResourceInfo(group: group, version: version, resource: plural, singular: singular, kind: kind, namespaced: namespaced,
                                          shortNames: shortNames, categories: categories, subresources: subresources,
                                          custom: CustomInfo(definition: name, columns: columns, scale: scale, schemaName: defName)))
        }
        resources.sort { Registry.kubeAwareOrder($0.version, $1.version) }
        return (resources, definitions)
    }

    // MARK: the definition itself

    /// Upstream's defaults: singular and listKind from the kind, the `None` conversion.
    static func defaults(_ crd: inout JSONValue) {
        let (_, singular, _, listKind) = names(crd)
        if crd[path: ["spec", "names", "singular"]] == nil, !singular.isEmpty { crd[path: ["spec", "names", "singular"]] = .string(singular) }
        if crd[path: ["spec", "names", "listKind"]] == nil, listKind != "List" { crd[path: ["spec", "names", "listKind"]] = .string(listKind) }
        if crd[path: ["spec", "conversion"]] == nil { crd[path: ["spec", "conversion"]] = ["strategy": "None"] }
    }

    static func validate(_ crd: JSONValue) -> [FieldError] {
        var errs: [FieldError] = []
        let group = crd[path: ["spec", "group"]]?.string ?? ""
        let (plural, singular, kind, listKind) = names(crd)
        let name = crd[path: ["metadata", "name"]]?.string ?? ""
        if group.isEmpty {
            errs.append(FieldError("spec.group", "Required value"))
        } else if !group.contains(".") {
            errs.append(FieldError("spec.group", "Invalid value: \(JSONValue.string(group).text()): should be a domain with at least one dot"))
        } else if !KubeAPI.Validation.isDNS1123Subdomain(group) {
            errs.append(FieldError("spec.group", "Invalid value: \(JSONValue.string(group).text()): a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
        }
        if plural.isEmpty { errs.append(FieldError("spec.names.plural", "Required value")) }
        if kind.isEmpty { errs.append(FieldError("spec.names.kind", "Required value")) }
        for (field, value) in [("plural", plural), ("singular", singular)] where !value.isEmpty && !KubeAPI.Validation.isDNS1035Label(value) {
            errs.append(FieldError("spec.names.\(field)", "Invalid value: \(JSONValue.string(value).text()): a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"))
        }
        if !kind.isEmpty && kind == listKind { errs.append(FieldError("spec.names.listKind", "Invalid value: \(JSONValue.string(listKind).text()): kind and listKind may not be the same")) }
        if !plural.isEmpty && !group.isEmpty && name != "\(plural).\(group)" {
            errs.append(FieldError("metadata.name", "Invalid value: \(JSONValue.string(name).text()): must be spec.names.plural+\".\"+spec.group"))
        }
        let scope = crd[path: ["spec", "scope"]]?.string ?? ""
        if scope != "Cluster" && scope != "Namespaced" {
            errs.append(FieldError("spec.scope", scope.isEmpty ? "Required value" : "Unsupported value: \(JSONValue.string(scope).text()): supported values: \"Cluster\", \"Namespaced\""))
        }
        let versions = crd[path: ["spec", "versions"]]?.array ?? []
        if versions.isEmpty {
            errs.append(FieldError("spec.versions", "Invalid value: null: must have exactly one version marked as storage version"))
        } else if versions.filter({ $0["storage"]?.bool == true }).count != 1 {
            errs.append(FieldError("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
        }
        var seen = Set<String>()
        for (i, v) in versions.enumerated() {
            let vn = v["name"]?.string ?? ""
            if vn.isEmpty { errs.append(FieldError("spec.versions[\(i)].name", "Required value")) }
            else if !seen.insert(vn).inserted { errs.append(FieldError("spec.versions[\(i)].name", "Duplicate value: \(JSONValue.string(vn).text())")) }
            else if !KubeAPI.Validation.isDNS1035Label(vn) {
                errs.append(FieldError("spec.versions[\(i)].name", "Invalid value: \(JSONValue.string(vn).text()): a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"))
            }
            guard let schema = v[path: ["schema", "openAPIV3Schema"]] else {
                errs.append(FieldError("spec.versions[\(i)].schema.openAPIV3Schema", "Required value: schemas are required"))
                continue
            }
            if schema["type"]?.string != "object" {
                errs.append(FieldError("spec.versions[\(i)].schema.openAPIV3Schema.type", schema["type"] == nil
                    ? "Required value: must not be empty at the root" : "Invalid value: \(schema["type"]!.text()): must be object at the root"))
            }
            errs += structural(schema, "spec.versions[\(i)].schema.openAPIV3Schema")
            for (j, c) in (v["additionalPrinterColumns"]?.array ?? []).enumerated() {
                for f in ["name", "type", "jsonPath"] where (c[f]?.string ?? "").isEmpty {
                    errs.append(FieldError("spec.versions[\(i)].additionalPrinterColumns[\(j)].\(f)", "Required value"))
                }
            }
        }
        return errs
    }

    /// The structural rules the server cares about: every field typed (or preserving unknown
    /// fields, or int-or-string), map keys of list-maps named.
    static func structural(_ s: JSONValue, _ path: String) -> [FieldError] {
        var errs: [FieldError] = []
        let preserve = s["x-kubernetes-preserve-unknown-fields"]?.bool == true
        let intOrString = s["x-kubernetes-int-or-string"]?.bool == true
        if s["type"] == nil && !preserve && !intOrString && path.contains(".properties[") {
            errs.append(FieldError(path + ".type", "Required value: must not be empty for specified object fields"))
        }
        if let t = s["type"]?.string, !["object", "array", "string", "integer", "number", "boolean"].contains(t) {
            errs.append(FieldError(path + ".type", "Unsupported value: \(JSONValue.string(t).text()): supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""))
        }
        if s["type"]?.string == "array" && s["items"] == nil {
            errs.append(FieldError(path + ".items", "Required value: must be specified"))
        }
        if s["x-kubernetes-list-type"]?.string == "map" && (s["x-kubernetes-list-map-keys"]?.array ?? []).isEmpty {
            errs.append(FieldError(path + ".x-kubernetes-list-map-keys", "Required value: must not be empty if x-kubernetes-list-type is map"))
        }
        for (k, v) in (s["properties"]?.object ?? [:]).sorted(by: { $0.key < $1.key }) { errs += structural(v, "\(path).properties[\(k)]") }
        if case .object = s["additionalProperties"] { errs += structural(s["additionalProperties"]!, path + ".additionalProperties") }
        if let items = s["items"], case .object = items { errs += structural(items, path + ".items") }
        return errs
    }

    /// What an update of a definition may not change, as upstream refuses it: its scope, and the
    /// versions objects were stored in (while `status.storedVersions` lists them).
    static func checkUpdate(_ crd: JSONValue, old: JSONValue, _ r: ResourceInfo) throws {
        var errs: [FieldError] = []
        let scope = crd[path: ["spec", "scope"]]?.string ?? ""
        if let was = old[path: ["spec", "scope"]]?.string, was != scope {
            errs.append(FieldError("spec.scope", "Invalid value: \(JSONValue.string(scope).text()): field is immutable"))
        }
        let versions = Set((crd[path: ["spec", "versions"]]?.array ?? []).compactMap { $0["name"]?.string })
        for (i, v) in (old[path: ["status", "storedVersions"]]?.array ?? []).compactMap(\.string).enumerated() where !versions.contains(v) {
            errs.append(FieldError("status.storedVersions[\(i)]", "Invalid value: \(JSONValue.string(v).text()): must appear in spec.versions"))
        }
        if !errs.isEmpty { throw APIError.invalid(r, crd[path: ["metadata", "name"]]?.string ?? "", errs) }
    }

    /// The status an established definition has: its names accepted, Established, and the
    /// versions ever stored.
    static func established(_ crd: inout JSONValue, old: JSONValue?, now: String, statusWrite: Bool = false, _ r: ResourceInfo = Resources.crd) throws {
        var accepted = crd[path: ["spec", "names"]] ?? [:]
        let (_, singular, kind, listKind) = names(crd)
        accepted["singular"] = .string(singular)
        if !kind.isEmpty { accepted["listKind"] = .string(listKind) }
        // Versions objects were stored in: kept across spec writes; a status write may trim
        // them (after a migration), as long as what is left is in spec.versions and includes the
        // storage version.
        let versions = (crd[path: ["spec", "versions"]]?.array ?? [])
        let storage = versions.first { $0["storage"]?.bool == true }?["name"]?.string
        var stored = (old?[path: ["status", "storedVersions"]]?.array ?? []).compactMap(\.string)
        if statusWrite, let asked = crd[path: ["status", "storedVersions"]]?.array?.compactMap(\.string) {
            let names = Set(versions.compactMap { $0["name"]?.string })
            var errs: [FieldError] = []
            for (i, v) in asked.enumerated() where !names.contains(v) {
                errs.append(FieldError("status.storedVersions[\(i)]", "Invalid value: \(JSONValue.string(v).text()): must appear in spec.versions"))
            }
            if let storage, !asked.contains(storage) {
                errs.append(FieldError("status.storedVersions", "Invalid value: \(JSONValue.array(asked.map { .string($0) }).text()): must have the storage version \(storage)"))
            }
            if !errs.isEmpty { throw APIError.invalid(r, crd[path: ["metadata", "name"]]?.string ?? "", errs) }
            stored = asked
        }
        if let storage, !stored.contains(storage) { stored.append(storage) }
        let oldConditions = old?[path: ["status", "conditions"]]?.array ?? []
        func since(_ type: String) -> JSONValue {
            oldConditions.first { $0["type"]?.string == type && $0["status"] == "True" }?["lastTransitionTime"] ?? .string(now)
        }
        crd["status"] = [
            "acceptedNames": accepted,
            "conditions": [
                ["type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")],
                ["type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted",
                 "lastTransitionTime": since("Established")],
            ],
            "storedVersions": .array(stored.map { .string($0) }),
        ]
    }

    // MARK: custom objects

    /// A simple JSONPath (`.spec.replicas`, `.status.conditions[0].type`) into an object.
    static func value(at path: String, in o: JSONValue) -> JSONValue? {
        var cur: JSONValue? = o
        var p = path.trimmingCharacters(in: .whitespaces)
        if p.hasPrefix("{") && p.hasSuffix("}") { p = String(p.dropFirst().dropLast()) }
        for part in p.split(separator: ".") {
            var name = Substring(part)
            var indexes: [Int] = []
            while let open = name.lastIndex(of: "["), name.hasSuffix("]"), let i = Int(name[name.index(after: open)..<name.index(before: name.endIndex)]) {
                indexes.insert(i, at: 0)
                name = name[..<open]
            }
            if !name.isEmpty { cur = cur?[String(name)] }
            for i in indexes {
                guard let a = cur?.array, i >= 0, i < a.count else { return nil }
                cur = a[i]
            }
        }
        return cur
    }

    /// Sets a simple JSONPath's value, making the objects on the way.
    static func set(_ path: String, to value: JSONValue, in o: inout JSONValue) {
        let keys = path.split(separator: ".").map(String.init)
        o[path: keys] = value
    }

    /// The Table columns of a custom resource: Name, then its printer columns (Age alone when it has none).
    static func columns(_ c: CustomInfo) -> [Tables.Column] {
        let name = Tables.Column(name: "Name", format: "name") { $0[path: ["metadata", "name"]] ?? "" }
        if c.columns.isEmpty { return [name, Tables.Column(name: "Age", type: "date") { Tables.age($0) }] }
        return [name] + c.columns.map { col in
            Tables.Column(name: col.name, type: col.type, format: col.format, priority: col.priority) { o in
                guard let v = value(at: col.jsonPath, in: o) else { return .null }
                switch col.type {
                case "date":
                    return Tables.age(["metadata": ["creationTimestamp": v]])
                case "integer", "number", "boolean":
                    return v
                default:
                    if case .string = v { return v }
                    return .string(v.text())
                }
            }
        }
    }
}

extension APIHandler {
    /// Kinds whose spec changes (for a custom resource with a status subresource: anything but
    /// status and metadata; without one: anything but metadata) bump `metadata.generation`.
    func hasGeneration(_ r: ResourceInfo) -> Bool { r.strategy.tracksGeneration }

    static func generationChanges(_ new: JSONValue, _ old: JSONValue, _ r: ResourceInfo) -> Bool {
        guard r.custom != nil || r == Resources.crd else { return new["spec"] != old["spec"] }
        var a = new, b = old
        for o in [0, 1] {
            var x = o == 0 ? a : b
            x["metadata"] = nil
            x["kind"] = nil
            x["apiVersion"] = nil
            if r.subresources.contains("status") { x["status"] = nil }
            if o == 0 { a = x } else { b = x }
        }
        return a != b
    }

    /// Admission of any write, in upstream's order: the mutating plugins (LimitRanger,
    /// DefaultIngressClass, ServiceAccount and the token Secrets' filling, the mutating webhooks), then the
    /// validating ones (the certificate plugins, which also say who asked for a
    /// CertificateSigningRequest; NodeRestriction, PodSecurity), the object's
    /// own defaulting and validation (a definition checked and established, a custom object
    /// defaulted and checked against its version's schema, a built-in one as `Admission` does),
    /// the validating webhooks on the final object, and ResourceQuota last, so that nothing
    /// refused later is charged.
    func admit(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, dryRun: Bool, subresource: String? = nil) async throws {
        try await checkEscalation(o, r, old: old)
        try await admitCertificateRequest(&o, old: old, r, subresource: subresource)
        try await admitLimitRanges(&o, old: old, r, subresource: subresource)
        try await admitIngress(&o, old: old, r, subresource: subresource)
        try admitServiceCIDR(o, old: old, r, subresource: subresource)
        try await admitServiceAccount(&o, old: old, r, subresource: subresource)
        try await admitServiceAccountTokenSecret(&o, old: old, r)
        _ = try await runMutatingWebhooks(&o, old: old, r, subresource: subresource, dryRun: dryRun)
        try restrictNode(o, old: old, r, subresource: subresource)
        try await admitPodSecurity(o, old: old, r, subresource: subresource)
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        if r.custom != nil {
            let schemas = registry.schemas
            guard let node = schemas.node(for: r.gvk) else { throw APIError.internal("no schema for \(r.gvk)") }
            // As apiextensions-apiserver: nulls of fields that are not nullable are dropped, then defaults filled.
            var spec = o
            spec["metadata"] = nil
            schemas.dropNulls(&spec, at: node)
            spec["metadata"] = o["metadata"]
            o = spec
            schemas.applyDefaults(&o, at: node)
            // The name and labels as for any object; the rest by the schema.
            var errs: [FieldError] = []
            do {
                try Validation.check(o, r, name: name)
            } catch let e as APIError where e.reason == "Invalid" {
                errs += (e.details?["causes"]?.array ?? []).map { FieldError($0["field"]?.string ?? "", $0["message"]?.string ?? "") }
            }
            var checked = o
            checked["metadata"] = nil
            errs += schemas.violations(checked, at: node).map { FieldError($0.path, $0.message) }
            if !errs.isEmpty { throw APIError.invalid(r, name, errs) }
        } else {
            try await admission.admit(&o, old: old, r, store: store, dryRun: dryRun)
            if r == Resources.crd {
                try checkNames(o, r)
                if let old { try CustomResources.checkUpdate(o, old: old, r) }
                try CustomResources.established(&o, old: old, now: Self.rfc3339(), statusWrite: subresource == "status", r)
            }
        }
        do {
            try await runValidatingWebhooks(o, old: old, r, subresource: subresource, dryRun: dryRun, operation: old == nil ? "CREATE" : "UPDATE")
            try await admitResourceQuota(o, old: old, r, subresource: subresource, dryRun: dryRun)
        } catch {
            // Refused after the object's admission allocated for it (a Service's cluster IP and
            // node ports): that goes back (a dry run gave it back already).
            if r.custom == nil && !dryRun {
                if let old { await admission.undo(update: o, of: old, r) } else { await admission.release(o, r) }
            }
            throw error
        }
    }

    /// A definition may not take what another serves: a built-in resource or kind, or another
    /// definition's kind, plural or short names in its group (upstream leaves such a definition
    /// not established, NamesAccepted False; this server refuses it). Groups of the Kubernetes
    /// project (`*.k8s.io`, `*.kubernetes.io`) need upstream's approval annotation.
    func checkNames(_ crd: JSONValue, _ r: ResourceInfo) throws {
        let name = crd[path: ["metadata", "name"]]?.string ?? ""
        let group = crd[path: ["spec", "group"]]?.string ?? ""
        let (plural, _, kind, _) = CustomResources.names(crd)
        let shorts = Set(crd[path: ["spec", "names", "shortNames"]]?.array?.compactMap(\.string) ?? [])
        var errs: [FieldError] = []
        let protected = ["k8s.io", "kubernetes.io"].contains { group == $0 || group.hasSuffix("." + $0) }
        if protected && crd[path: ["metadata", "annotations", "api-approved.kubernetes.io"]] == nil {
            errs.append(FieldError("metadata.annotations[api-approved.kubernetes.io]", "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111"))
        }
        for other in registry.resources where other.group == group && other.custom?.definition != name {
            let owner = other.custom.map { "\"\($0.definition)\"" } ?? "a built-in resource"
            if other.resource == plural {
                errs.append(FieldError("spec.names.plural", "Invalid value: \(JSONValue.string(plural).text()): is already in use by \(owner)"))
            }
            if other.kind == kind {
                errs.append(FieldError("spec.names.kind", "Invalid value: \(JSONValue.string(kind).text()): is already in use by \(owner)"))
            }
            if let s = other.shortNames.first(where: shorts.contains) {
                errs.append(FieldError("spec.names.shortNames", "Invalid value: \(JSONValue.string(s).text()): is already in use by \(owner)"))
            }
        }
        if !errs.isEmpty { throw APIError.invalid(r, name, Array(Set(errs)).sorted { $0.field < $1.field }) }
    }

    /// After a write is stored: a definition's resources are served from now on.
    func written(_ r: ResourceInfo, _ o: JSONValue) async throws {
        if r == Resources.crd { registry.install(o) }
    }

    /// A definition's objects go with it (every version's: they share one prefix).
    func deleteObjects(under prefixes: [String]) async throws {
        for prefix in prefixes {
            let page = try await store.list(prefix: prefix, after: nil, limit: 0, revision: nil)
            for item in page.items { _ = try? await store.delete(item.key, expected: nil) }
        }
    }

    /// Serves the definitions already stored (at start); returns the revision it read them at.
    @discardableResult
    public func loadCustomResources() async throws -> Int64 {
        let page = try await store.list(prefix: Resources.crd.storePrefix, after: nil, limit: 0, revision: nil)
        var stored = Set<String>()
        for kv in page.items {
            guard let o = try? JSONValue.parse(kv.value), let name = o[path: ["metadata", "name"]]?.string else { continue }
            registry.install(o)
            stored.insert(name)
        }
        for name in registry.definitionNames.subtracting(stored) { registry.uninstall(name) }
        return page.revision
    }

    /// Keeps what is served in step with the definitions in the store, whoever writes them
    /// (another API server over the same etcd): reads them, then follows their changes, until
    /// the watch ends or fails (the caller starts it again).
    public func followCustomResources() async throws {
        let revision = try await loadCustomResources()
        for try await e in try await store.watch(prefix: Resources.crd.storePrefix, after: revision) {
            let name = String(e.kv.key.dropFirst(Resources.crd.storePrefix.count))
            if e.kind == .deleted {
                registry.uninstall(name)
            } else if let o = try? JSONValue.parse(e.kv.value) {
                registry.install(o)
            }
        }
    }
}
