import Foundation
import KubeAPI
import Synchronization

/// One step of a field path, as structured-merge-diff names them: a field of an object or a key
/// of a map (`f:`), an item of a list keyed by some of its fields (`k:`), an item of a set by its
/// value (`v:`), an item of a list by position (`i:`).
public enum PathElement: Hashable, Sendable, Comparable {
    case field(String)
    case key([KeyField])
    case value(JSONValue)
    case index(Int)

    public struct KeyField: Hashable, Sendable {
        public var name: String
        public var value: JSONValue
        public init(_ name: String, _ value: JSONValue) {
            self.name = name
            self.value = value
        }
    }

    var rank: Int {
        switch self {
        case .field: 0
        case .key: 1
        case .value: 2
        case .index: 3
        }
    }

    public static func < (a: PathElement, b: PathElement) -> Bool {
        if a.rank != b.rank { return a.rank < b.rank }
        switch (a, b) {
        case (.field(let x), .field(let y)): return x < y
        case (.index(let x), .index(let y)): return x < y
        default: return a.fieldsV1Key < b.fieldsV1Key
        }
    }

    /// The key in a `fieldsV1` document: `f:name`, `k:{"name":"web"}`, `v:"a"`, `i:0`.
    public var fieldsV1Key: String {
        switch self {
        case .field(let n): return "f:" + n
        case .key(let fields):
            var o: [String: JSONValue] = [:]
            for f in fields { o[f.name] = f.value }
            return "k:" + JSONValue.object(o).text()
        case .value(let v): return "v:" + v.text()
        case .index(let i): return "i:\(i)"
        }
    }

    /// Keys already decoded: every write decodes every manager's set again, and the keys of list
    /// items (`k:{"name":"web"}`) are JSON to parse.
    static let decoded = Mutex<[String: PathElement]>([:])

    /// A `fieldsV1` key back to the element (nil for one that is not of the four forms).
    public init?(fieldsV1Key key: String) {
        if key.hasPrefix("f:") {
            self = .field(String(key.dropFirst(2)))
            return
        }
        if let known = Self.decoded.withLock({ $0[key] }) {
            self = known
            return
        }
        guard let e = Self.decode(key) else { return nil }
        Self.decoded.withLock { cache in
            if cache.count > 50_000 { cache.removeAll() }
            cache[key] = e
        }
        self = e
    }

    static func decode(_ key: String) -> PathElement? {
        guard key.count >= 2, key.dropFirst().first == ":" else { return nil }
        let rest = String(key.dropFirst(2))
        switch key.first {
        case "f": return .field(rest)
        case "i":
            guard let i = Int(rest) else { return nil }
            return .index(i)
        case "v":
            guard let v = try? JSONValue.parse(Data(rest.utf8)) else { return nil }
            return .value(v)
        case "k":
            guard case .object(let o)? = try? JSONValue.parse(Data(rest.utf8)) else { return nil }
            return .key(o.keys.sorted().map { KeyField($0, o[$0]!) })
        default: return nil
        }
    }

    /// As a conflict names it: `.spec`, `[name="web"]`, `[="a"]`, `[0]`.
    public var description: String {
        switch self {
        case .field(let n): return "." + n
        case .key(let fields): return "[" + fields.map { "\($0.name)=\(Self.goString($0.value))" }.joined(separator: ",") + "]"
        case .value(let v): return "[=\(Self.goString(v))]"
        case .index(let i): return "[\(i)]"
        }
    }

    /// A value as structured-merge-diff's `value.ToString` prints it: strings quoted, the rest as is.
    static func goString(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .string: return v.text()
        case .array(let a): return "[" + a.map(goString).joined(separator: ",") + "]"
        case .object(let o): return o.keys.sorted().map { "\($0)=\(goString(o[$0]!))" }.joined()
        default: return v.text()
        }
    }
}

public typealias FieldPath = [PathElement]

extension Array where Element == PathElement {
    /// `.spec.template.spec.containers[name="web"].image`.
    public var pathString: String { map(\.description).joined() }
}

/// A set of field paths, as a tree: the elements that are members here, and the subsets below
/// the elements that have children. What one field manager owns is one of these.
public struct FieldSet: Sendable, Equatable {
    public var members: Set<PathElement> = []
    public var children: [PathElement: FieldSet] = [:]

    public init() {}

    public var isEmpty: Bool { members.isEmpty && children.isEmpty }

    public mutating func insert(_ path: some Collection<PathElement>) {
        guard let first = path.first else { return }
        if path.count == 1 {
            members.insert(first)
        } else {
            children[first, default: FieldSet()].insert(path.dropFirst())
        }
    }

    public func contains(_ path: some Collection<PathElement>) -> Bool {
        guard let first = path.first else { return false }
        if path.count == 1 { return members.contains(first) }
        return children[first]?.contains(path.dropFirst()) ?? false
    }

    /// Whether the set has the path or anything below it.
    public func containsOrBelow(_ path: some Collection<PathElement>) -> Bool {
        guard let first = path.first else { return !isEmpty }
        if path.count == 1 && members.contains(first) { return true }
        guard let c = children[first] else { return false }
        return path.count == 1 ? !c.isEmpty : c.containsOrBelow(path.dropFirst())
    }

    public func union(_ o: FieldSet) -> FieldSet {
        var out = self
        out.members.formUnion(o.members)
        for (pe, c) in o.children { out.children[pe] = out.children[pe].map { $0.union(c) } ?? c }
        return out
    }

    public func intersection(_ o: FieldSet) -> FieldSet {
        var out = FieldSet()
        out.members = members.intersection(o.members)
        for (pe, c) in children {
            if let oc = o.children[pe] {
                let i = c.intersection(oc)
                if !i.isEmpty { out.children[pe] = i }
            }
        }
        return out
    }

    /// The paths of this set that `o` does not have (a member of `o` removes that member only,
    /// not what is below it).
    public func subtracting(_ o: FieldSet) -> FieldSet {
        var out = FieldSet()
        out.members = members.subtracting(o.members)
        for (pe, c) in children {
            let d = o.children[pe].map { c.subtracting($0) } ?? c
            if !d.isEmpty { out.children[pe] = d }
        }
        return out
    }

    /// This set without anything at or below the given top-level fields.
    public func removingTopLevel(_ fields: Set<String>) -> FieldSet {
        var out = self
        for f in fields {
            out.members.remove(.field(f))
            out.children[.field(f)] = nil
        }
        return out
    }

    /// Only what is at or below the given top-level fields.
    public func keepingTopLevel(_ fields: Set<String>) -> FieldSet {
        var out = FieldSet()
        for f in fields {
            if members.contains(.field(f)) { out.members.insert(.field(f)) }
            if let c = children[.field(f)] { out.children[.field(f)] = c }
        }
        return out
    }

    /// Every path of the set, in order (members of a node before what is below it).
    public var paths: [FieldPath] {
        var out: [FieldPath] = []
        var prefix: FieldPath = []
        collect(&prefix, &out)
        return out
    }

    func collect(_ prefix: inout FieldPath, _ out: inout [FieldPath]) {
        for pe in members.union(children.keys).sorted() {
            prefix.append(pe)
            if members.contains(pe) { out.append(prefix) }
            children[pe]?.collect(&prefix, &out)
            prefix.removeLast()
        }
    }

    /// As `metadata.managedFields[].fieldsV1` writes it: `{"f:spec":{"f:replicas":{}}}`, with
    /// `".": {}` where an element is a member and also has members below it.
    public var fieldsV1: JSONValue {
        var o: [String: JSONValue] = [:]
        for pe in members where children[pe] == nil { o[pe.fieldsV1Key] = .object([:]) }
        for (pe, c) in children {
            var child = c.fieldsV1
            if members.contains(pe) { child["."] = .object([:]) }
            o[pe.fieldsV1Key] = child
        }
        return .object(o)
    }

    public struct DecodeError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(fieldsV1: JSONValue) throws(DecodeError) {
        guard case .object(let o) = fieldsV1 else { throw DecodeError(description: "fieldsV1 is not an object") }
        for (k, v) in o where k != "." {
            guard let pe = PathElement(fieldsV1Key: k) else { throw DecodeError(description: "invalid field path element \(k)") }
            guard case .object(let sub) = v else { throw DecodeError(description: "fieldsV1 entry \(k) is not an object") }
            if sub.isEmpty || sub["."] != nil { members.insert(pe) }
            let c = try FieldSet(fieldsV1: v)
            if !c.isEmpty { children[pe] = c }
        }
    }
}
