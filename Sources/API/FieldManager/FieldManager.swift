import APISchema
import Foundation
import KubeAPI

/// Who manages a set of fields, as `metadata.managedFields` identifies an entry: the manager's
/// name, the operation, the API version (for updates only: an applier owns its fields whatever
/// version it applied with) and the subresource.
public struct Manager: Hashable, Sendable {
    public var name: String
    public var operation: String
    public var apiVersion: String
    public var subresource: String

    public init(name: String, operation: String, apiVersion: String, subresource: String) {
        self.name = name
        self.operation = operation
        self.apiVersion = operation == "Apply" ? "" : apiVersion
        self.subresource = subresource
    }

    /// As kube-apiserver names it in a conflict: `"kubectl"`, `"x" with subresource "status"`,
    /// `"kube-controller-manager" using apps/v1`.
    public var printed: String {
        var s = JSONValue.string(name).text()
        if !subresource.isEmpty { s += " with subresource \(JSONValue.string(subresource).text())" }
        if operation == "Update" { s += " using \(apiVersion)" }
        return s
    }
}

/// The fields one manager owns, with the version it used and when it last changed them.
public struct ManagedEntry: Sendable, Equatable {
    public var fields: FieldSet
    public var apiVersion: String
    public var time: String?
    /// `fields` as the object had them written, while they are unchanged (no need to write them again).
    var encoded: (fields: FieldSet, json: JSONValue)?

    public init(fields: FieldSet, apiVersion: String, time: String?) {
        self.fields = fields
        self.apiVersion = apiVersion
        self.time = time
    }

    public static func == (a: ManagedEntry, b: ManagedEntry) -> Bool {
        a.fields == b.fields && a.apiVersion == b.apiVersion && a.time == b.time
    }

    var fieldsV1: JSONValue {
        if let e = encoded, e.fields == fields { return e.json }
        return fields.fieldsV1
    }
}

/// A server-side apply that other managers' fields stand in the way of: kube-apiserver's 409.
public struct ApplyConflicts: Error, Sendable {
    public var conflicts: [(manager: Manager, path: FieldPath)]

    public var message: String {
        if conflicts.count == 1 {
            return "Apply failed with 1 conflict: conflict with \(conflicts[0].manager.printed): \(conflicts[0].path.pathString)"
        }
        var byManager: [String: [String]] = [:]
        for c in conflicts { byManager[c.manager.printed, default: []].append(c.path.pathString) }
        var lines: [String] = []
        for m in byManager.keys.sorted() {
            lines.append("conflicts with \(m):")
            lines += byManager[m]!.map { "- \($0)" }
        }
        return "Apply failed with \(conflicts.count) conflicts: " + lines.joined(separator: "\n")
    }

    /// The `details.causes` of the 409: one `FieldManagerConflict` per field.
    public var causes: [JSONValue] {
        conflicts.map { ["reason": "FieldManagerConflict", "message": .string("conflict with \($0.manager.printed)"), "field": .string($0.path.pathString)] }
    }
}

public struct FieldManagerError: Error, Sendable {
    public var message: String
    /// The configuration does not fit its schema (upstream: "failed to create typed patch object").
    public var typed = false
}

/// Tracks who owns which fields of one kind's objects (through one endpoint: the resource or a
/// subresource), as kube-apiserver's field manager does: updates (create, update, patches)
/// give the manager the fields they added or changed, applies (`application/apply-patch+yaml`)
/// merge a configuration by the schema, own exactly what it sets, remove what the manager set
/// before and no longer does, and conflict with other managers over fields whose values change.
public struct FieldManager: Sendable {
    let typed: Typed
    let node: Int
    public let apiVersion: String
    public let subresource: String
    /// The top-level fields this endpoint does not change (`status` for a resource with a status
    /// subresource), or, for `status`, the only one it does.
    let ignored: Set<String>
    let only: Set<String>?

    /// Fields no manager owns, as upstream strips them.
    static let metaStripped: Set<String> = ["name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
                                            "managedFields", "resourceVersion"]
    /// At most this many update managers; older ones fold into `ancient-changes`.
    public static let maxUpdateManagers = 10
    public static let lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

    public init?(schemas: SchemaSet, kind: GroupVersionKind, subresource: String = "", hasStatus: Bool) {
        guard let node = schemas.node(for: kind) else { return nil }
        typed = Typed(schemas: schemas)
        self.node = node
        apiVersion = kind.group.isEmpty ? kind.version : "\(kind.group)/\(kind.version)"
        self.subresource = subresource
        if subresource == "status" {
            ignored = []
            only = ["status"]
        } else {
            ignored = hasStatus ? ["status"] : []
            only = nil
        }
    }

    // MARK: managedFields

    /// The entries of an object's `metadata.managedFields` (nil where they do not decode, so
    /// they are dropped and rebuilt, as kube-apiserver does).
    public static func decode(_ object: JSONValue?) -> [Manager: ManagedEntry]? {
        guard let list = object?[path: ["metadata", "managedFields"]]?.array else { return [:] }
        var out: [Manager: ManagedEntry] = [:]
        for e in list {
            guard let op = e["operation"]?.string, op == "Apply" || op == "Update",
                  let version = e["apiVersion"]?.string, !version.isEmpty, e["fieldsType"]?.string == "FieldsV1" else { return nil }
            let m = Manager(name: e["manager"]?.string ?? "", operation: op, apiVersion: version, subresource: e["subresource"]?.string ?? "")
            let json = e["fieldsV1"] ?? .object([:])
            guard let set = try? FieldSet(fieldsV1: json) else { return nil }
            var entry = ManagedEntry(fields: set, apiVersion: version, time: e["time"]?.string)
            entry.encoded = (set, json)
            out[m] = entry
        }
        return out
    }

    /// The entries as `metadata.managedFields`, in upstream's order: appliers first, then by
    /// time, manager, version and subresource.
    public static func encode(_ managers: [Manager: ManagedEntry]) -> JSONValue? {
        guard !managers.isEmpty else { return nil }
        let sorted = managers.sorted { a, b in
            if a.key.operation != b.key.operation { return a.key.operation < b.key.operation }
            if (a.value.time ?? "") != (b.value.time ?? "") { return (a.value.time ?? "") < (b.value.time ?? "") }
            if a.key.name != b.key.name { return a.key.name < b.key.name }
            if a.value.apiVersion != b.value.apiVersion { return a.value.apiVersion < b.value.apiVersion }
            return a.key.subresource < b.key.subresource
        }
        return .array(sorted.map { m, e in
            var o: [String: JSONValue] = ["manager": .string(m.name), "operation": .string(m.operation), "apiVersion": .string(e.apiVersion),
                                          "fieldsType": "FieldsV1", "fieldsV1": e.fieldsV1]
            if let t = e.time { o["time"] = .string(t) }
            if !m.subresource.isEmpty { o["subresource"] = .string(m.subresource) }
            return .object(o)
        })
    }

    /// An object as the field manager compares it: without its managed fields.
    static func bare(_ o: JSONValue?) -> JSONValue? {
        guard var o else { return nil }
        o[path: ["metadata", "managedFields"]] = nil
        return o
    }

    /// What an endpoint's managers may own of a set: without the stripped metadata and the
    /// top-level fields the endpoint ignores.
    func filtered(_ s: FieldSet) -> FieldSet {
        var s = s.removingTopLevel(["apiVersion", "kind"]).removingTopLevel(ignored)
        if let only { s = s.keepingTopLevel(only) }
        s.members.remove(.field("metadata"))
        if var meta = s.children[.field("metadata")] {
            for f in Self.metaStripped {
                meta.members.remove(.field(f))
                meta.children[.field(f)] = nil
            }
            s.children[.field("metadata")] = meta.isEmpty ? nil : meta
        }
        return s
    }

    /// What changed between two objects, filtered as `filtered`.
    func comparison(_ old: JSONValue?, _ new: JSONValue) -> Typed.Comparison {
        var c = typed.compare(Self.bare(old) ?? typed.zero(node), Self.bare(new), node)
        c.added = filtered(c.added)
        c.modified = filtered(c.modified)
        c.removed = filtered(c.removed)
        return c
    }

    /// Other managers lose what changed, and what was removed; conflicts are returned (and
    /// taken from their owners) unless the caller gave up on them.
    func reassign(_ managers: inout [Manager: ManagedEntry], _ c: Typed.Comparison, except me: Manager) -> [(Manager, FieldSet)] {
        var conflicts: [(Manager, FieldSet)] = []
        let changed = c.modified.union(c.added)
        for (m, e) in managers where m != me {
            let conflict = e.fields.intersection(changed)
            if !conflict.isEmpty { conflicts.append((m, conflict)) }
        }
        return conflicts
    }

    static func strip(_ managers: inout [Manager: ManagedEntry], conflicts: [(Manager, FieldSet)], removed: FieldSet, except me: Manager) {
        for (m, set) in conflicts {
            if let fields = managers[m]?.fields { managers[m]!.fields = fields.subtracting(set) }
        }
        if !removed.isEmpty {
            for m in Array(managers.keys) where m != me {
                let fields = managers[m]!.fields
                managers[m]!.fields = fields.subtracting(removed)
            }
        }
        for (m, e) in managers where e.fields.isEmpty { managers[m] = nil }
    }

    // MARK: update

    /// A create, update or patch by `manager`: `new` comes back with its `managedFields`. The
    /// manager gains what it added or changed; others lose it; every manager loses what is gone.
    /// An existing object nothing tracks yet stays untracked (as upstream: only applies start
    /// tracking on such an object). `new`'s own managedFields win when it has valid ones (a
    /// client may reset them with an empty list).
    public func update(live: JSONValue?, new: inout JSONValue, manager name: String, now: String) {
        var managers: [Manager: ManagedEntry]
        let sent = new[path: ["metadata", "managedFields"]]
        if sent == .array([]) || sent == .array([.object([:])]) {
            managers = [:]
        } else if sent != nil, let m = Self.decode(new), !m.isEmpty {
            managers = m
        } else {
            managers = Self.decode(live) ?? [:]
        }
        if live != nil && managers.isEmpty {
            new[path: ["metadata", "managedFields"]] = nil
            return
        }
        let me = Manager(name: name.isEmpty ? "unknown" : name, operation: "Update", apiVersion: apiVersion, subresource: subresource)
        let c = comparison(live, new)
        let conflicts = reassign(&managers, c, except: me)
        Self.strip(&managers, conflicts: conflicts, removed: c.removed, except: me)
        let gained = c.modified.union(c.added)
        if !gained.isEmpty || managers[me] != nil {
            var fields = (managers[me]?.fields ?? FieldSet()).subtracting(c.removed).union(gained)
            fields = filtered(fields)
            if fields.isEmpty {
                managers[me] = nil
            } else {
                managers[me] = ManagedEntry(fields: fields, apiVersion: apiVersion, time: gained.isEmpty ? managers[me]?.time : now)
            }
        }
        capUpdateManagers(&managers)
        new[path: ["metadata", "managedFields"]] = Self.encode(managers)
    }

    /// Folds the oldest update managers into `ancient-changes` when there are more than ten.
    func capUpdateManagers(_ managers: inout [Manager: ManagedEntry]) {
        let updaters = managers.filter { $0.key.operation == "Update" }
            .sorted { ($0.value.time ?? "", $0.key.name) < ($1.value.time ?? "", $1.key.name) }
        guard updaters.count > Self.maxUpdateManagers else { return }
        for (m, e) in updaters.prefix(updaters.count - Self.maxUpdateManagers + 1) {
            let bucket = Manager(name: "ancient-changes", operation: "Update", apiVersion: e.apiVersion, subresource: "")
            managers[m] = nil
            let prior = managers[bucket]
            managers[bucket] = ManagedEntry(fields: (prior?.fields ?? FieldSet()).union(e.fields), apiVersion: e.apiVersion,
                                            time: max(prior?.time ?? "", e.time ?? ""))
        }
    }

    // MARK: apply

    /// Server-side apply of `config` by `manager` to `live` (nil: the object does not exist yet).
    /// Returns the object to store, with its managedFields, or throws the conflicts.
    public func apply(live: JSONValue?, config: JSONValue, manager name: String, force: Bool, now: String) throws -> JSONValue {
        if config[path: ["metadata", "managedFields"]] != nil { throw FieldManagerError(message: "metadata.managedFields must be nil") }

        var managers = Self.decode(live) ?? [:]
        var liveObject = live
        // An object that predates tracking: what it has belongs to "before-first-apply".
        if var l = live, managers.isEmpty {
            update(live: nil, new: &l, manager: "before-first-apply", now: now)
            managers = Self.decode(l) ?? [:]
            liveObject = l
        }
        let me = Manager(name: name, operation: "Apply", apiVersion: apiVersion, subresource: subresource)
        let base = Self.bare(liveObject) ?? typed.zero(node)
        var configObject = config
        // The applied configuration may not change what the endpoint does not.
        for f in ignored { configObject[f] = nil }
        if let only, case .object(let o) = configObject {
            for k in o.keys where !only.contains(k) && !["apiVersion", "kind", "metadata"].contains(k) { configObject[k] = nil }
        }
        let (configSet, problems) = typed.checkedFieldSet(configObject, node)
        if !problems.isEmpty { throw FieldManagerError(message: problems.sorted().joined(separator: ", "), typed: true) }
        let set = filtered(configSet)
        var merged = typed.merge(base, configObject, node) ?? base
        let lastSet = managers[me]?.fields
        var mine = ManagedEntry(fields: set, apiVersion: apiVersion, time: managers[me]?.time)
        mine.encoded = managers[me]?.encoded
        managers[me] = mine
        if let lastSet { merged = prune(merged, managers: managers, me: me, last: lastSet, now: set) }
        merged = Self.withoutNulls(merged)
        let c = comparison(liveObject, merged)
        var conflicts = reassign(&managers, c, except: me)
        if !conflicts.isEmpty && !force {
            // `kubectl` taking over from client-side apply: fields the last-applied annotation
            // set, still at the value it gave them, may change hands without force.
            if name == "kubectl", let allowed = allowedFromLastApplied(liveObject) {
                conflicts = conflicts.compactMap { m, s in
                    let rest = s.subtracting(allowed)
                    return rest.isEmpty ? nil : (m, rest)
                }
            }
            if !conflicts.isEmpty {
                throw ApplyConflicts(conflicts: conflicts.sorted { $0.0.name < $1.0.name }.flatMap { m, s in s.paths.map { (m, $0) } })
            }
            conflicts = reassign(&managers, c, except: me)
        }
        Self.strip(&managers, conflicts: conflicts, removed: c.removed, except: me)
        if managers[me] == nil { managers[me] = ManagedEntry(fields: set, apiVersion: apiVersion, time: nil) }
        let changed = Self.bare(liveObject) != Self.bare(merged)
        if changed || live == nil || managers[me]?.time == nil { managers[me]?.time = now }
        if name == "kubectl", let annotation = liveObject?[path: ["metadata", "annotations", Self.lastApplied]]?.string, !annotation.isEmpty {
            var applied = config
            applied[path: ["metadata", "annotations", Self.lastApplied]] = nil
            if applied[path: ["metadata", "annotations"]] == .object([:]) { applied[path: ["metadata", "annotations"]] = nil }
            merged[path: ["metadata", "annotations", Self.lastApplied]] = .string(applied.text())
        }
        merged[path: ["metadata", "managedFields"]] = Self.encode(managers)
        return merged
    }

    /// Removes what `me` applied last time and no longer does, unless another manager owns it
    /// or something below it.
    func prune(_ merged: JSONValue, managers: [Manager: ManagedEntry], me: Manager, last: FieldSet, now: FieldSet) -> JSONValue {
        let gone = last.subtracting(now)
        guard !gone.isEmpty else { return merged }
        var owned = FieldSet()
        for (_, e) in managers { owned = owned.union(e.fields) }
        var remove = FieldSet()
        for p in gone.paths where !owned.containsOrBelow(p) { remove.insert(p) }
        var out = typed.removing(remove, from: merged, node)
        // Objects the removal emptied, which the manager had named, go too.
        var emptied = FieldSet()
        for p in last.paths + Self.parents(of: last) where !owned.containsOrBelow(p) && !now.containsOrBelow(p) {
            if Self.value(at: p, in: out)?.object?.isEmpty == true { emptied.insert(p) }
        }
        if !emptied.isEmpty { out = typed.removing(emptied, from: out, node) }
        return out
    }

    static func parents(of set: FieldSet) -> [FieldPath] {
        var out: [FieldPath] = []
        func walk(_ s: FieldSet, _ prefix: FieldPath) {
            for (pe, c) in s.children {
                let p = prefix + [pe]
                out.append(p)
                walk(c, p)
            }
        }
        walk(set, [])
        return out.sorted { $0.count > $1.count }
    }

    static func value(at path: FieldPath, in v: JSONValue) -> JSONValue? {
        var cur: JSONValue? = v
        for pe in path {
            switch pe {
            case .field(let f): cur = cur?[f]
            default: return nil
            }
        }
        return cur
    }

    /// Fields of the client-side apply annotation whose values the live object still has.
    func allowedFromLastApplied(_ live: JSONValue?) -> FieldSet? {
        guard let text = live?[path: ["metadata", "annotations", Self.lastApplied]]?.string,
              let last = try? JSONValue.parse(Data(text.utf8)), last["apiVersion"]?.string == apiVersion else { return nil }
        let set = typed.fieldSet(last, node)
        let c = typed.compare(last, Self.bare(live), node)
        return set.subtracting(c.modified).subtracting(c.added).subtracting(c.removed)
    }

    /// Nulls set in objects mean "absent" once stored (as decoding into upstream's types does).
    /// An object without any comes back as it was, not rebuilt.
    static func withoutNulls(_ v: JSONValue) -> JSONValue {
        hasNull(v) ? removingNulls(v) : v
    }

    static func hasNull(_ v: JSONValue) -> Bool {
        switch v {
        case .null: return true
        case .object(let o): return o.values.contains(where: hasNull)
        case .array(let a): return a.contains(where: hasNull)
        default: return false
        }
    }

    static func removingNulls(_ v: JSONValue) -> JSONValue {
        switch v {
        case .object(let o):
            var out: [String: JSONValue] = [:]
            for (k, x) in o where x != .null { out[k] = removingNulls(x) }
            return .object(out)
        case .array(let a): return .array(a.map(removingNulls))
        default: return v
        }
    }
}
