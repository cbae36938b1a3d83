import JSONSyntax

/// JSON for the plugins, into and out of plain Swift values: `[String: Any]`, `[Any]`,
/// `String`, `Bool`, `Int` (integers that fit), `Double`, and `JSON.null`.
///
/// A plugin is a process started for every call, and Foundation's JSONSerialization
/// spends more time bridging through NSDictionary and dynamic casts (and the first
/// protocol-conformance scans of the binary) than the plugin spends on its work.
public enum JSON {
    /// JSON's `null`.
    public struct Null: Sendable, Equatable { public init() {} }
    public static let null = Null()

    public struct ParseError: Error, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    // MARK: parsing

    public static func parse(_ bytes: [UInt8]) throws -> Any {
        try bytes.withUnsafeBufferPointer { buf in
            // Invalid UTF-8 in a string becomes U+FFFD, as Go's decoder (the reference plugins') reads it.
            var p = Parser(s: JSONSyntax.Scanner(bytes: buf, strictUTF8: false))
            do {
                p.s.skipSpace()
                let v = try p.value(depth: 0)
                p.s.skipSpace()
                guard p.s.atEnd else { throw p.s.failure("unexpected data after the value") }
                return v
            } catch let f as JSONSyntax.Failure {
                throw ParseError(offset: f.offset, reason: f.reason)
            }
        }
    }

    public static func parse(_ s: String) throws -> Any { try parse(Array(s.utf8)) }

    /// The grammar over `JSONSyntax`'s tokens, into plain values. A number is an `Int` only as
    /// an integer is written (`1500.0` is a `Double`, which an integer field refuses, as Go does).
    struct Parser {
        var s: JSONSyntax.Scanner

        mutating func value(depth: Int) throws -> Any {
            guard depth < 256 else { throw s.failure("nested too deeply") }
            guard let c = s.next else { throw s.failure("unexpected end of input") }
            switch c {
            case UInt8(ascii: "{"):
                s.at += 1
                var o: [String: Any] = [:]
                s.skipSpace()
                if s.next == UInt8(ascii: "}") { s.at += 1; return o }
                while true {
                    s.skipSpace()
                    guard s.next == UInt8(ascii: "\"") else { throw s.failure("expected a string key") }
                    let k = try s.string()
                    s.skipSpace()
                    guard s.next == UInt8(ascii: ":") else { throw s.failure("expected ':'") }
                    s.at += 1
                    s.skipSpace()
                    o[k] = try value(depth: depth + 1)
                    s.skipSpace()
                    switch s.next {
                    case UInt8(ascii: ","): s.at += 1
                    case UInt8(ascii: "}"): s.at += 1; return o
                    default: throw s.failure("expected ',' or '}'")
                    }
                }
            case UInt8(ascii: "["):
                s.at += 1
                var a: [Any] = []
                s.skipSpace()
                if s.next == UInt8(ascii: "]") { s.at += 1; return a }
                while true {
                    s.skipSpace()
                    a.append(try value(depth: depth + 1))
                    s.skipSpace()
                    switch s.next {
                    case UInt8(ascii: ","): s.at += 1
                    case UInt8(ascii: "]"): s.at += 1; return a
                    default: throw s.failure("expected ',' or ']'")
                    }
                }
            case UInt8(ascii: "\""): return try s.string()
            case UInt8(ascii: "t"): try s.literal("true"); return true
            case UInt8(ascii: "f"): try s.literal("false"); return false
            case UInt8(ascii: "n"): try s.literal("null"); return JSON.null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                switch try s.number() {
                case .int(let i): return Int(i)
                case .double(let d): return d
                }
            default: throw s.failure("unexpected character")
            }
        }
    }

    // MARK: writing

    /// Pretty-printed with sorted keys (two-space indent, `"key" : value`, as the plugins print results).
    public static func serialize(_ v: Any, pretty: Bool = true) -> String {
        var out = ""
        write(v, into: &out, indent: pretty ? 0 : -1)
        return out
    }

    static func write(_ v: Any, into out: inout String, indent: Int) {
        let pretty = indent >= 0
        func newline(_ level: Int) {
            guard pretty else { return }
            out += "\n" + String(repeating: "  ", count: level)
        }
        switch v {
        case let s as String:
            JSONSyntax.quote(s, into: &out)
        case let b as Bool:
            out += b ? "true" : "false"
        case let n as Int:
            out += String(n)
        case let n as Int32:
            out += String(n)
        case let n as UInt32:
            out += String(n)
        case let n as UInt16:
            out += String(n)
        case let d as Double:
            // JSON has no infinities or NaN (the parser never makes them); write null rather than invalid JSON.
            out += !d.isFinite ? "null" : d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case is Null:
            out += "null"
        case let a as [Any]:
            if a.isEmpty { out += "[]"; return }
            out += "["
            for (k, e) in a.enumerated() {
                if k > 0 { out += "," }
                newline(indent + 1)
                write(e, into: &out, indent: pretty ? indent + 1 : -1)
            }
            newline(indent)
            out += "]"
        case let o as [String: Any]:
            if o.isEmpty { out += pretty ? "{\n\n" + String(repeating: "  ", count: indent) + "}" : "{}"; return }
            out += "{"
            for (k, key) in o.keys.sorted().enumerated() {
                if k > 0 { out += "," }
                newline(indent + 1)
                JSONSyntax.quote(key, into: &out)
                out += pretty ? " : " : ":"
                write(o[key]!, into: &out, indent: pretty ? indent + 1 : -1)
            }
            newline(indent)
            out += "}"
        case let o as [String: [String]]:
            write(o.mapValues { $0 as [Any] } as [String: Any], into: &out, indent: indent)
        case let a as [String]:
            write(a as [Any], into: &out, indent: indent)
        default:
            JSONSyntax.quote("\(v)", into: &out)
        }
    }
}
