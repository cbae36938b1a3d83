import Foundation
import KubeAPI

/// What a custom resource's structural schema asks of its objects, as apiextensions-apiserver
/// checks and fills them: defaults for missing fields, then types, required fields, enums,
/// patterns and bounds, with upstream's messages.
extension SchemaSet {
    /// A value that does not fit its schema: where, and upstream's message (`Invalid value: …`,
    /// `Required value`, `Unsupported value: …`).
    public struct Violation: Sendable, Hashable {
        public var path: String
        public var message: String
    }

    /// Fills fields the object lacks with their schemas' defaults, recursively (defaults of a
    /// defaulted object's own fields included).
    public func applyDefaults(_ v: inout JSONValue, at index: Int) {
        let n = nodes[index]
        switch v {
        case .object(var o):
            guard n.shape == .object || n.shape == .map || (n.shape == .any && !n.properties.isEmpty) else { return }
            for (k, child) in n.properties {
                if o[k] == nil, let d = nodes[child].defaultValue { o[k] = d }
                if var x = o[k] {
                    applyDefaults(&x, at: child)
                    o[k] = x
                }
            }
            if let add = n.additional {
                for (k, x) in o where n.properties[k] == nil {
                    var y = x
                    applyDefaults(&y, at: add)
                    o[k] = y
                }
            }
            v = .object(o)
        case .array(var a):
            guard let items = n.items else { return }
            for i in a.indices { applyDefaults(&a[i], at: items) }
            v = .array(a)
        default:
            return
        }
    }

    /// Removes the nulls of fields whose schema is not `nullable` (as apiextensions-apiserver does
    /// before defaulting, so a null field takes its default).
    public func dropNulls(_ v: inout JSONValue, at index: Int) {
        let n = nodes[index]
        switch v {
        case .object(var o):
            for (k, x) in o {
                let child = n.properties[k] ?? n.additional
                if x == .null {
                    if child.map({ !nodes[$0].nullable }) ?? (n.shape != .any) { o[k] = nil }
                } else if let child, case .object = x {
                    var y = x
                    dropNulls(&y, at: child)
                    o[k] = y
                } else if let child, case .array = x {
                    var y = x
                    dropNulls(&y, at: child)
                    o[k] = y
                }
            }
            v = .object(o)
        case .array(var a):
            guard let items = n.items else { return }
            for i in a.indices where a[i] != .null { dropNulls(&a[i], at: items) }
            v = .array(a)
        default:
            return
        }
    }

    /// Every violation of the schema in `v`; `path` prefixes the fields (`spec.replicas`).
    public func violations(_ v: JSONValue, at index: Int, path: String = "") -> [Violation] {
        var out: [Violation] = []
        check(v, index, path, &out)
        return out
    }

    static func goValue(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): return JSONValue.string(s).text()
        case .object: return "\"object\""
        case .array: return "\"array\""
        default: return v.text()
        }
    }

    static func typeName(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool: return "boolean"
        case .int: return "integer"
        case .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    func check(_ v: JSONValue, _ index: Int, _ path: String, _ out: inout [Violation]) {
        let n = nodes[index]
        let at = path.isEmpty ? "<root>" : path
        func fail(_ message: String) { out.append(Violation(path: at, message: message)) }
        if v == .null {
            if !n.nullable && n.type != nil { fail("Invalid value: \"null\": \(at) in body must be of type \(n.type!): \"null\"") }
            return
        }
        // Types (an int-or-string takes either; a number takes an integer).
        if let type = n.type, n.format != "int-or-string" {
            let actual = Self.typeName(v)
            let fits = actual == type || (type == "number" && actual == "integer")
            if !fits {
                fail("Invalid value: \"\(actual)\": \(at) in body must be of type \(type): \"\(actual)\"")
                return
            }
        }
        if let e = n.enumValues, !e.isEmpty, !e.contains(v) {
            fail("Unsupported value: \(Self.goValue(v)): supported values: " + e.map { Self.goValue($0) }.joined(separator: ", "))
        }
        switch v {
        case .string(let s):
            if let p = n.checks["pattern"]?.string, let re = Self.regex(p), (try? re.firstMatch(in: s)) == nil {
                fail("Invalid value: \(Self.goValue(v)): \(at) in body should match '\(p)'")
            }
            if let max = n.checks["maxLength"]?.int, s.count > max { fail("Too long: may not be more than \(max) bytes") }
            if let min = n.checks["minLength"]?.int, s.count < min {
                fail("Invalid value: \(Self.goValue(v)): \(at) in body should be at least \(min) chars long")
            }
        case .int, .double:
            let x: Double = { if case .int(let i) = v { return Double(i) }; if case .double(let d) = v { return d }; return 0 }()
            if let min = n.checks["minimum"].flatMap(Self.number) {
                let exclusive = n.checks["exclusiveMinimum"]?.bool == true
                if exclusive ? x <= min : x < min {
                    fail("Invalid value: \(v.text()): \(at) in body should be greater than \(exclusive ? "" : "or equal to ")\(Self.format(min))")
                }
            }
            if let max = n.checks["maximum"].flatMap(Self.number) {
                let exclusive = n.checks["exclusiveMaximum"]?.bool == true
                if exclusive ? x >= max : x > max {
                    fail("Invalid value: \(v.text()): \(at) in body should be less than \(exclusive ? "" : "or equal to ")\(Self.format(max))")
                }
            }
            if let m = n.checks["multipleOf"].flatMap(Self.number), m != 0, (x / m).rounded() != x / m {
                fail("Invalid value: \(v.text()): \(at) in body should be a multiple of \(Self.format(m))")
            }
        case .array(let a):
            if let max = n.checks["maxItems"]?.int, a.count > max { fail("Too many: \(a.count): must have at most \(max) items") }
            if let min = n.checks["minItems"]?.int, a.count < min { fail("Invalid value: \(a.count): \(at) in body should have at least \(min) items") }
            if let items = n.items {
                for (i, x) in a.enumerated() { check(x, items, "\(path)[\(i)]", &out) }
            }
        case .object(let o):
            for r in n.required where o[r] == nil {
                out.append(Violation(path: path.isEmpty ? r : "\(path).\(r)", message: "Required value"))
            }
            if let max = n.checks["maxProperties"]?.int, o.count > max { fail("Too many: \(o.count): must have at most \(max) items") }
            if let min = n.checks["minProperties"]?.int, o.count < min {
                fail("Invalid value: \(o.count): \(at) in body should have at least \(min) properties")
            }
            for (k, x) in o.sorted(by: { $0.key < $1.key }) {
                guard let child = n.properties[k] ?? n.additional else { continue }
                check(x, child, path.isEmpty ? k : "\(path).\(k)", &out)
            }
        default:
            break
        }
    }

    /// Patterns compiled once (a custom resource's schema checks the same ones on every write).
    nonisolated(unsafe) static var compiled: [String: Regex<AnyRegexOutput>] = [:]
    static let compiledLock = NSLock()

    static func regex(_ pattern: String) -> Regex<AnyRegexOutput>? {
        compiledLock.lock()
        defer { compiledLock.unlock() }
        if let r = compiled[pattern] { return r }
        guard let r = try? Regex(pattern) else { return nil }
        if compiled.count > 1000 { compiled.removeAll() }
        compiled[pattern] = r
        return r
    }

    static func number(_ v: JSONValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    static func format(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)" }
}
