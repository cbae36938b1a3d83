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
        var p = Parser(b: bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == p.b.count else { throw p.fail("unexpected data after the value") }
        return v
    }

    public static func parse(_ s: String) throws -> Any { try parse(Array(s.utf8)) }

    struct Parser {
        let b: [UInt8]
        var i = 0

        func fail(_ reason: String) -> ParseError { ParseError(offset: i, reason: reason) }

        mutating func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0a || b[i] == 0x0d || b[i] == 0x09 { i += 1 }
        }

        mutating func expect(_ word: String) throws {
            for c in word.utf8 {
                guard i < b.count, b[i] == c else { throw fail("expected \(word)") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> Any {
            guard depth < 256 else { throw fail("nested too deeply") }
            guard i < b.count else { throw fail("unexpected end of input") }
            switch b[i] {
            case UInt8(ascii: "{"):
                i += 1
                var o: [String: Any] = [:]
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return o }
                while true {
                    skipSpace()
                    guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let k = try string()
                    skipSpace()
                    guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    i += 1
                    skipSpace()
                    o[k] = try value(depth: depth + 1)
                    skipSpace()
                    guard i < b.count else { throw fail("unexpected end of input in an object") }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "}") { i += 1; return o }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var a: [Any] = []
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return a }
                while true {
                    skipSpace()
                    a.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < b.count else { throw fail("unexpected end of input in an array") }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "]") { i += 1; return a }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return try string()
            case UInt8(ascii: "t"):
                try expect("true"); return true
            case UInt8(ascii: "f"):
                try expect("false"); return false
            case UInt8(ascii: "n"):
                try expect("null"); return JSON.null
            default:
                return try number()
            }
        }

        /// RFC 8259: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
        mutating func number() throws -> Any {
            let start = i
            func digit() -> Bool { i < b.count && b[i] >= 0x30 && b[i] <= 0x39 }
            func digits() throws {
                guard digit() else { throw fail("expected a digit") }
                while digit() { i += 1 }
            }
            if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
            guard digit() else { throw fail("unexpected character") }
            if b[i] == UInt8(ascii: "0") { i += 1 } else { try digits() }
            var integral = true
            if i < b.count, b[i] == UInt8(ascii: ".") {
                integral = false
                i += 1
                try digits()
            }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                integral = false
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
                try digits()
            }
            let text = String(decoding: b[start..<i], as: UTF8.self)
            if integral, let n = Int(text) { return n }
            guard let d = Double(text), d.isFinite else { throw fail("number out of range: \(text)") }
            return d
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= b.count else { throw fail("bad \\u escape") }
            var v: UInt32 = 0
            for c in b[i..<(i + 4)] {
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x41...0x46: d = c - 0x41 + 10
                case 0x61...0x66: d = c - 0x61 + 10
                default: throw fail("bad \\u escape")
                }
                v = v << 4 | UInt32(d)
            }
            i += 4
            return v
        }

        mutating func string() throws -> String {
            i += 1   // opening quote
            var out: [UInt8] = []
            while true {
                guard i < b.count else { throw fail("unterminated string") }
                let c = b[i]
                i += 1
                if c == UInt8(ascii: "\"") { break }
                if c < 0x20 { throw fail("control character in a string") }
                guard c == UInt8(ascii: "\\") else { out.append(c); continue }
                guard i < b.count else { throw fail("unterminated escape") }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), i + 5 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let low = try hex4()
                        if (0xDC00..<0xE000).contains(low) {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            i = save   // a lone high surrogate; the next escape stands on its own
                        }
                    }
                    // A lone surrogate becomes U+FFFD, as Go's decoder (the reference plugins') does.
                    let u = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                    out += Array(String(Character(u)).utf8)
                default:
                    throw fail("bad escape")
                }
            }
            return String(decoding: out, as: UTF8.self)
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
            writeString(s, into: &out)
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
                writeString(key, into: &out)
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
            writeString("\(v)", into: &out)
        }
    }

    static func writeString(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let h = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            default:
                out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}
