import Foundation
import JSONSyntax

/// A JSON reader straight from bytes to `JSONValue`. `JSONDecoder` goes through `Codable`, where a
/// value of unknown type costs a failed attempt per case (and an error built for each): listing
/// 10,000 stored objects spent half its time there. This reads each byte once and builds the
/// value directly, with RFC 8259's grammar and the limits `JSONDecoder` has (nesting 512 deep,
/// valid UTF-8, no control characters in strings, nothing after the value). Strings, numbers and
/// literals are `JSONSyntax`'s, which the CNI plugins' reader shares.
struct JSONParser {
    static let maxDepth = 512

    var s: JSONSyntax.Scanner
    /// Whether to note keys repeated in one object (`duplicates`), which costs a path kept as it reads.
    var tracking = false
    var path: [String] = []
    /// Where a key came twice, as `metadata.name` or `spec.containers[0].name`.
    var duplicates: [String] = []

    static func parse(_ data: Data) throws -> JSONValue {
        var ignored: [String] = []
        return try parse(data, tracking: false, duplicates: &ignored)
    }

    static func parse(_ data: Data, tracking: Bool, duplicates: inout [String]) throws -> JSONValue {
        let (v, d) = try data.withUnsafeBytes { raw in
            var p = JSONParser(s: JSONSyntax.Scanner(bytes: raw.bindMemory(to: UInt8.self), strictUTF8: true))
            p.tracking = tracking
            do {
                p.s.skipSpace()
                let v = try p.value(depth: 0)
                p.s.skipSpace()
                guard p.s.atEnd else { throw p.s.failure("unexpected \(p.s.describeNext()) after the value") }
                return (v, p.duplicates)
            } catch let f as JSONSyntax.Failure {
                throw JSONValue.ParseError(description: "invalid JSON: \(f.reason) at offset \(f.offset)")
            }
        }
        duplicates = d
        return v
    }

    func rendered(_ key: String) -> String { JSONValue.fieldPath(path + [key]) }

    mutating func value(depth: Int) throws -> JSONValue {
        guard let c = s.next else { throw s.failure("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["): return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try s.string())
        case UInt8(ascii: "t"): try s.literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try s.literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try s.literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            switch try s.number() {
            case .int(let i): return .int(i)
            // A whole number written as a double (`1.0`, `1e3`) is an integer, as it always was here.
            case .double(let d): return Int64(exactly: d).map { .int($0) } ?? .double(d)
            }
        default: throw s.failure("unexpected \(s.describeNext())")
        }
    }

    mutating func object(depth: Int) throws -> JSONValue {
        guard depth <= Self.maxDepth else { throw s.failure("nested more than \(Self.maxDepth) deep") }
        s.at += 1
        var o: [String: JSONValue] = [:]
        s.skipSpace()
        if s.next == UInt8(ascii: "}") { s.at += 1; return .object(o) }
        while true {
            s.skipSpace()
            guard s.next == UInt8(ascii: "\"") else { throw s.failure("expected a key, found \(s.describeNext())") }
            let key = try s.string()
            s.skipSpace()
            guard s.next == UInt8(ascii: ":") else { throw s.failure("expected ':', found \(s.describeNext())") }
            s.at += 1
            s.skipSpace()
            if tracking {
                path.append(key)
                let v = try value(depth: depth)
                path.removeLast()
                // A repeated key: the last one counts, as in Go.
                if o.updateValue(v, forKey: key) != nil { duplicates.append(rendered(key)) }
            } else {
                o[key] = try value(depth: depth)   // a repeated key: the last one counts, as in Go
            }
            s.skipSpace()
            switch s.next {
            case nil: throw s.failure("unexpected end of input in an object")
            case UInt8(ascii: ","): s.at += 1
            case UInt8(ascii: "}"): s.at += 1; return .object(o)
            default: throw s.failure("expected ',' or '}', found \(s.describeNext())")
            }
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        guard depth <= Self.maxDepth else { throw s.failure("nested more than \(Self.maxDepth) deep") }
        s.at += 1
        var a: [JSONValue] = []
        s.skipSpace()
        if s.next == UInt8(ascii: "]") { s.at += 1; return .array(a) }
        while true {
            s.skipSpace()
            if tracking { path.append("[\(a.count)]") }
            a.append(try value(depth: depth))
            if tracking { path.removeLast() }
            s.skipSpace()
            switch s.next {
            case nil: throw s.failure("unexpected end of input in an array")
            case UInt8(ascii: ","): s.at += 1
            case UInt8(ascii: "]"): s.at += 1; return .array(a)
            default: throw s.failure("expected ',' or ']', found \(s.describeNext())")
            }
        }
    }
}
