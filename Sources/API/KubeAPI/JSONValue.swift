import Foundation
import JSONSyntax

/// Any JSON document, as a value: what the API server keeps of an object it does not need to
/// understand field by field (every field a client sent survives a round trip), and what the
/// patch formats operate on.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses a document; what is not valid JSON throws.
    public static func parse(_ data: Data) throws -> JSONValue {
        try JSONParser.parse(data)
    }

    /// A field's path as upstream's decoders name it: `spec`, `containers`, `[0]`, `image` →
    /// `spec.containers[0].image`.
    public static func fieldPath(_ parts: [String]) -> String {
        var s = ""
        for p in parts {
            if p.hasPrefix("[") || s.isEmpty { s += p } else { s += "." + p }
        }
        return s
    }

    /// Parses a document and says where a key came twice in one object (`metadata.name`,
    /// `spec.containers[0].name`): the last one counts, as in Go.
    public static func parse(_ data: Data, duplicates: inout [String]) throws -> JSONValue {
        try JSONParser.parse(data, tracking: true, duplicates: &duplicates)
    }

    public static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let c) = error {
            return c.underlyingError.map { "\($0)" } ?? c.debugDescription
        }
        return "\(error)"
    }

    /// Compact JSON, keys sorted (so equal values serialize equally).
    public func serialized() -> Data { Data(bytes()) }

    public func text() -> String { String(decoding: bytes(), as: UTF8.self) }

    /// The compact JSON as bytes (written straight into a buffer: appending to a `String` costs
    /// several times more).
    public func bytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out)
        return out
    }

    func write(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .double(let d):
            if d.isFinite, d == d.rounded(), abs(d) < 1e15 {
                out.append(contentsOf: String(Int64(d)).utf8)
            } else {
                out.append(contentsOf: (d.isFinite ? "\(d)" : "null").utf8)
            }
        case .string(let s): JSONSyntax.quote(s, into: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            var first = true
            for k in o.keys.sorted() {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                JSONSyntax.quote(k, into: &out)
                out.append(UInt8(ascii: ":"))
                o[k]!.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    // MARK: access

    public subscript(key: String) -> JSONValue? {
        get { if case .object(let o) = self { return o[key] } else { return nil } }
        set {
            guard case .object(var o) = self else { return }
            o[key] = newValue
            self = .object(o)
        }
    }

    /// The value at a path of object keys.
    public subscript(path path: [String]) -> JSONValue? {
        get {
            var v: JSONValue? = self
            for k in path { v = v?[k] }
            return v
        }
        set {
            guard let first = path.first else { if let newValue { self = newValue }; return }
            guard case .object(var o) = self else { return }
            if path.count == 1 {
                o[first] = newValue
            } else {
                var child = o[first] ?? .object([:])
                if case .object = child {} else { child = .object([:]) }
                child[path: Array(path.dropFirst())] = newValue
                o[first] = child
            }
            self = .object(o)
        }
    }

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var int: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d): return Int64(exactly: d)
        default: return nil
        }
    }
    public var object: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
    public var array: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
                     ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, b in b }))
    }
    public init(nilLiteral: ()) { self = .null }
}

import Yams

/// YAML documents as JSON values (a body sent as `application/yaml`).
public enum YAMLToJSON {
    public static func convert(_ text: String) throws -> JSONValue {
        let any: Any?
        do {
            any = try Yams.load(yaml: text)
        } catch {
            throw JSONValue.ParseError(description: "invalid YAML: \(error)")
        }
        return try value(any)
    }

    static func value(_ any: Any?) throws -> JSONValue {
        switch any {
        case nil, is NSNull: return .null
        case let b as Bool: return .bool(b)
        case let i as Int: return .int(Int64(i))
        case let d as Double: return .double(d)
        case let s as String: return .string(s)
        case let a as [Any]: return .array(try a.map(value))
        case let o as [String: Any]: return .object(try o.mapValues(value))
        case let o as [AnyHashable: Any]:
            var out: [String: JSONValue] = [:]
            for (k, v) in o { out["\(k.base)"] = try value(v) }
            return .object(out)
        default: throw JSONValue.ParseError(description: "unsupported YAML value \(String(describing: any))")
        }
    }
}
