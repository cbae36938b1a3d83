import APISchema
import KubeAPI

/// Objects walked with their schema, by structured-merge-diff's rules: what a value's field set
/// is, how two values compare, how an applied configuration merges into a live object, and how
/// fields are removed. A node of nil is a "deduced" type (below a free-form schema): objects are
/// granular maps, lists atomic, the rest leaves.
struct Typed {
    let schemas: SchemaSet

    enum Kind {
        case leaf
        case map(atomic: Bool)
        case list(SchemaSet.ListType, items: Int?)
    }

    func kind(_ node: Int?, _ value: JSONValue) -> Kind {
        guard let node else {
            switch value {
            case .object: return .map(atomic: false)
            case .array: return .list(.atomic, items: nil)
            default: return .leaf
            }
        }
        let n = schemas[node]
        switch (n.shape, value) {
        case (.object, .object), (.map, .object): return .map(atomic: n.atomicMap)
        case (.list, .array): return .list(n.items == nil ? .atomic : n.listType, items: n.items)
        case (.any, _): return kind(nil, value)
        default: return .leaf
        }
    }

    func child(_ node: Int?, _ field: String) -> Int? {
        guard let node else { return nil }
        let n = schemas[node]
        if n.shape == .any { return nil }
        return n.properties[field] ?? n.additional
    }

    func isDeclared(_ node: Int?, _ field: String) -> Bool {
        guard let node else { return false }
        return schemas[node].properties[field] != nil
    }

    /// The path element of a list item: its key fields (a missing one takes the schema's default,
    /// as `protocol: TCP` of a port), or its value for a set.
    func element(_ item: JSONValue, _ type: SchemaSet.ListType, items: Int?, index: Int) -> PathElement {
        switch type {
        case .set: return .value(item)
        case .map(let keys):
            var fields: [PathElement.KeyField] = []
            for k in keys.sorted() {
                if let v = item[k] {
                    fields.append(.init(k, v))
                } else if let items, let f = schemas[items].properties[k], let d = schemas[f].defaultValue {
                    fields.append(.init(k, d))
                }
            }
            return fields.isEmpty ? .index(index) : .key(fields)
        case .atomic: return .index(index)
        }
    }

    // MARK: field sets

    /// The fields a value sets (`ToFieldSet`): leaves, atomic lists and maps, list items, empty
    /// maps and nulls, and the entries of maps whose keys are not declared fields.
    func fieldSet(_ value: JSONValue, _ node: Int?) -> FieldSet {
        var set = FieldSet()
        var path: FieldPath = []
        var problems: [String]?
        fieldSet(value, node, &path, &set, &problems)
        return set
    }

    /// The field set of an applied configuration, and what structured-merge-diff refuses in one:
    /// a keyed item (or set value) listed twice, a keyed item without its key.
    func checkedFieldSet(_ value: JSONValue, _ node: Int?) -> (FieldSet, [String]) {
        var set = FieldSet()
        var path: FieldPath = []
        var problems: [String]? = []
        fieldSet(value, node, &path, &set, &problems)
        return (set, problems ?? [])
    }

    func fieldSet(_ value: JSONValue, _ node: Int?, _ path: inout FieldPath, _ set: inout FieldSet, _ problems: inout [String]?) {
        switch kind(node, value) {
        case .leaf, .map(atomic: true), .list(.atomic, _):
            if !path.isEmpty { set.insert(path) }
        case .list(let type, let items):
            var seen = Set<PathElement>()
            for (i, item) in (value.array ?? []).enumerated() {
                let pe = element(item, type, items: items, index: i)
                if problems != nil {
                    if case .index = pe, case .map(let keys) = type {
                        problems!.append("\(path.pathString): element \(i): associative list with keys has an element that omits key field \(JSONValue.string(keys.first ?? "").text()) (and doesn't have default value)")
                    } else if !seen.insert(pe).inserted {
                        problems!.append("\(path.pathString): duplicate entries for key \(pe.description)")
                    }
                }
                path.append(pe)
                fieldSet(item, items, &path, &set, &problems)
                set.insert(path)
                path.removeLast()
            }
        case .map:
            for (k, v) in value.object ?? [:] {
                path.append(.field(k))
                fieldSet(v, child(node, k), &path, &set, &problems)
                if v == .null || v == .object([:]) || !isDeclared(node, k) { set.insert(path) }
                path.removeLast()
            }
        }
    }

    // MARK: comparison

    struct Comparison {
        var added = FieldSet()
        var modified = FieldSet()
        var removed = FieldSet()
    }

    /// What changed from `old` to `new` (`Compare`); nil is absent, `.null` is present.
    func compare(_ old: JSONValue?, _ new: JSONValue?, _ node: Int?) -> Comparison {
        var c = Comparison()
        var path: FieldPath = []
        compare(old, new, node, &path, &c)
        return c
    }

    func compare(_ l: JSONValue?, _ r: JSONValue?, _ node: Int?, _ path: inout FieldPath, _ c: inout Comparison) {
        let k = kind(node, r.flatMap { $0 == .null ? nil : $0 } ?? l ?? .null)
        func leaf() {
            guard !path.isEmpty else { return }
            if l == nil { c.added.insert(path) } else if r == nil { c.removed.insert(path) } else if l != r { c.modified.insert(path) }
        }
        switch k {
        case .leaf, .map(atomic: true), .list(.atomic, _):
            leaf()
            return
        case .map:
            let lm = l?.object ?? [:], rm = r?.object ?? [:]
            if lm.isEmpty && rm.isEmpty { leaf(); return }
            for key in Set(lm.keys).union(rm.keys) {
                path.append(.field(key))
                compare(lm[key], rm[key], child(node, key), &path, &c)
                path.removeLast()
            }
        case .list(let type, let items):
            let la = l?.array ?? [], ra = r?.array ?? []
            if la.isEmpty && ra.isEmpty { leaf(); return }
            var left: [PathElement: JSONValue] = [:], order: [PathElement] = []
            for (i, v) in la.enumerated() {
                let pe = element(v, type, items: items, index: i)
                if left.updateValue(v, forKey: pe) == nil { order.append(pe) }
            }
            var right: [PathElement: JSONValue] = [:]
            for (i, v) in ra.enumerated() {
                let pe = element(v, type, items: items, index: i)
                if right.updateValue(v, forKey: pe) == nil, left[pe] == nil { order.append(pe) }
            }
            for pe in order {
                path.append(pe)
                compare(left[pe], right[pe], items, &path, &c)
                path.removeLast()
            }
        }
        if !path.isEmpty {
            if l == nil { c.added.insert(path) } else if r == nil { c.removed.insert(path) }
        }
    }

    // MARK: merging

    /// An applied configuration merged into a live object (`Merge`): the configuration's leaves
    /// win, maps merge field by field, keyed lists and sets item by item (in the configuration's
    /// order, with the live object's other items where they were), atomic values are replaced.
    func merge(_ l: JSONValue?, _ r: JSONValue?, _ node: Int?) -> JSONValue? {
        guard let r else { return l }
        guard let l else { return r }
        switch kind(node, r == .null ? l : r) {
        case .leaf, .map(atomic: true), .list(.atomic, _):
            return r
        case .map:
            guard case .object(let lm) = l, case .object(let rm) = r else { return r }
            if lm.isEmpty && rm.isEmpty { return r }
            var out = lm
            for (k, v) in rm { out[k] = merge(lm[k], v, child(node, k)) }
            return .object(out)
        case .list(let type, let items):
            guard case .array(let la) = l, case .array(let ra) = r else { return r }
            if la.isEmpty && ra.isEmpty { return r }
            return .array(mergeList(la, ra, type, items))
        }
    }

    /// structured-merge-diff's list order: walk both lists; items only in the live list stay
    /// where they were, items of the configuration come in its order, shared items at the
    /// configuration's position of them.
    func mergeList(_ la: [JSONValue], _ ra: [JSONValue], _ type: SchemaSet.ListType, _ items: Int?) -> [JSONValue] {
        let lpe = la.enumerated().map { element($1, type, items: items, index: $0) }
        let rpe = ra.enumerated().map { element($1, type, items: items, index: $0) }
        var lv: [PathElement: JSONValue] = [:], rv: [PathElement: JSONValue] = [:]
        for (i, pe) in lpe.enumerated() where lv[pe] == nil { lv[pe] = la[i] }
        for (i, pe) in rpe.enumerated() where rv[pe] == nil { rv[pe] = ra[i] }
        var shared = rpe.filter { lv[$0] != nil }[...]
        var nextShared = shared.popFirst()
        var merged = Set<PathElement>()
        var out: [JSONValue] = []
        var li = 0, ri = 0
        while li < lpe.count || ri < rpe.count {
            if li < lpe.count && ri < rpe.count {
                let pe = lpe[li]
                if pe == rpe[ri] {
                    merged.insert(pe)
                    if let m = merge(lv[pe], rv[pe], items) { out.append(m) }
                    li += 1
                    ri += 1
                    nextShared = shared.popFirst()
                    continue
                }
                if rv[pe] != nil, let n = nextShared, n != pe {
                    li += 1
                    continue
                }
            }
            if li < lpe.count {
                let pe = lpe[li]
                if rv[pe] == nil {
                    out.append(la[li])
                    li += 1
                    continue
                } else if merged.contains(pe) {
                    li += 1
                }
            }
            if ri < rpe.count {
                let pe = rpe[ri]
                merged.insert(pe)
                if let m = merge(lv[pe], rv[pe], items) { out.append(m) }
                ri += 1
                if nextShared == pe { nextShared = shared.popFirst() }
            }
        }
        return out
    }

    // MARK: removing

    /// The value without the members of `set` (`RemoveItems`).
    func removing(_ set: FieldSet, from value: JSONValue, _ node: Int?) -> JSONValue {
        switch (kind(node, value), value) {
        case (.map(atomic: false), .object(let o)):
            var out = o
            for (k, v) in o {
                let pe = PathElement.field(k)
                if set.members.contains(pe) { out[k] = nil } else if let sub = set.children[pe] { out[k] = removing(sub, from: v, child(node, k)) }
            }
            return .object(out)
        case (.list(let type, let items), .array(let a)) where type != .atomic:
            var out: [JSONValue] = []
            for (i, v) in a.enumerated() {
                let pe = element(v, type, items: items, index: i)
                if set.members.contains(pe) { continue }
                out.append(set.children[pe].map { removing($0, from: v, items) } ?? v)
            }
            return .array(out)
        default:
            return value
        }
    }

    // MARK: zero objects

    /// A kind's zero value as Go serializes it (the "live object" of a create): struct fields
    /// that are not pointers are there, empty; required pointers, lists and maps are null.
    func zero(_ node: Int) -> JSONValue {
        let n = schemas[node]
        var o: [String: JSONValue] = [:]
        for (k, child) in n.properties {
            if n.fieldDefaults[k] == .object([:]), schemas[child].shape == .object {
                o[k] = zero(child)
            } else if n.required.contains(k) {
                switch schemas[child].type {
                case "string": o[k] = ""
                case "integer", "number": o[k] = 0
                case "boolean": o[k] = false
                default: o[k] = .null
                }
            }
        }
        return .object(o)
    }
}
