import Yams

/// Decoding the kinds a proxy reads in bulk (Service, EndpointSlice) without Codable: each type
/// reads its fields by name (`PullReader`: from bytes, or a parsed `JSONValue` through its text).
/// Codable's generic containers cost most of a manifest load (10,000 Services with 10 endpoints each: about 1 s of
/// a 1.7 s `render`); this reads the same fields in a fraction of that.
///
/// It accepts exactly what the Codable path accepts or gives up: a field of the wrong type, a
/// missing required field or a number that is not an integer fails the whole object with
/// `nil`, and the caller decodes that one object with Codable, whose error names the field.
/// Unknown fields are ignored and `null` reads as absent, as with Codable's `decodeIfPresent`.
public protocol FastDecodable {
    init?(fast json: JSONValue)
}

/// A mismatch: the fast path stops and the Codable path explains.
struct FastMismatch: Error {}

/// A YAML node as a `JSONValue`, resolving plain scalars as Yams' default resolver would (YAML
/// 1.1's `yes`/`no` booleans included) but without its regular expressions, which cost half of
/// a large YAML load: nil for anything it does not decide with certainty (an octal, hex or
/// sexagesimal number, a float, a timestamp, a merge key, an alias, an explicit tag), and the
/// caller then decodes that object with Yams' own decoder.
enum YAMLNodeJSON {
    static func value(_ n: Yams.Node) -> JSONValue? {
        switch n {
        case .scalar(let s):
            return scalar(s)
        case .mapping(let m):
            var o: [String: JSONValue] = [:]
            o.reserveCapacity(m.count)
            for (k, v) in m {
                guard case .scalar(let key) = k, key.string != "<<", let value = value(v) else { return nil }
                o[key.string] = value
            }
            return .object(o)
        case .sequence(let s):
            var a: [JSONValue] = []
            a.reserveCapacity(s.count)
            for v in s {
                guard let value = value(v) else { return nil }
                a.append(value)
            }
            return .array(a)
        case .alias:
            return nil
        }
    }

    static func scalar(_ s: Yams.Node.Scalar) -> JSONValue? {
        if s.tag.rawValue == Tag.Name.str.rawValue { return .string(s.string) }   // quoted
        guard s.tag.rawValue.isEmpty, s.style == Yams.Node.Scalar.Style.plain || s.style == Yams.Node.Scalar.Style.any else {
            return s.tag.rawValue.isEmpty ? .string(s.string) : nil   // literal and folded blocks are strings
        }
        let text = s.string
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON": return .bool(true)
        case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF": return .bool(false)
        case "<<", "=": return nil
        default: break
        }
        var body = Substring(text)
        if let f = body.utf8.first, f == UInt8(ascii: "-") || f == UInt8(ascii: "+") { body = body.dropFirst() }
        guard let first = body.utf8.first else { return .string(text) }
        if first == UInt8(ascii: ".") { return nil }   // .5, .inf, .nan
        guard first >= 0x30 && first <= 0x39 else { return .string(text) }
        let digits = body.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        if digits && (body.utf8.count == 1 || first != UInt8(ascii: "0")) {
            return Int64(text).map(JSONValue.int)   // too large: nil, and Yams decides
        }
        // Starts with a digit: an IP address or a name is a string; anything a number pattern
        // might take (octal, hex, binary, underscores, sexagesimal, floats, timestamps) is left to Yams.
        let numberish = body.utf8.allSatisfy(isNumberChar)
        if body.utf8.contains(UInt8(ascii: ":")) || body.utf8.contains(UInt8(ascii: "-")) || body.utf8.contains(UInt8(ascii: " ")) {
            return nil   // sexagesimal numbers, timestamps
        }
        let dots = body.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: ".") ? 1 : 0) }
        if numberish && dots <= 1 { return nil }
        return .string(text)
    }

    /// A character a YAML 1.1 number of any form may hold (digits, signs, `_ . : e`, hex digits, `x o b`).
    static func isNumberChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "+"), UInt8(ascii: "-"),
             UInt8(ascii: "x"), UInt8(ascii: "o"), UInt8(ascii: "b"):
            return true
        default:
            return false
        }
    }
}
