/// RFC 8259's lexical part, shared by the two JSON readers and writers of the package: the API's
/// (`KubeAPI.JSONValue`, where lists of thousands of objects are read) and the CNI plugins'
/// (plain Swift values, in a process started per call). They build different values; strings,
/// escapes, numbers and quoting are the same code. No Foundation: the plugins start faster
/// without it.
public enum JSONSyntax {
    /// What is wrong and where (a byte offset into the document).
    public struct Failure: Error, Sendable {
        public var offset: Int
        public var reason: String
    }

    /// A number as written: an integer when it has neither fraction nor exponent and fits in
    /// 64 bits, else a double (`1.0` stays a double: a reader decides what a whole double means).
    public enum Number: Sendable, Equatable {
        case int(Int64)
        case double(Double)
    }

    /// Reads tokens from bytes: the readers drive the grammar and ask it for each token.
    public struct Scanner {
        public let bytes: UnsafeBufferPointer<UInt8>
        public var at = 0
        /// Whether a string must be valid UTF-8 (the API refuses it, as `JSONDecoder` does) or is
        /// repaired with U+FFFD (the plugins, as Go's decoder that the reference plugins use).
        public var strictUTF8: Bool

        public init(bytes: UnsafeBufferPointer<UInt8>, strictUTF8: Bool) {
            self.bytes = bytes
            self.strictUTF8 = strictUTF8
        }

        public var atEnd: Bool { at >= bytes.count }

        /// The byte at the current position, nil at the end.
        @inlinable public var next: UInt8? { at < bytes.count ? bytes[at] : nil }

        public func failure(_ reason: String) -> Failure { Failure(offset: at, reason: reason) }

        /// What is at the current position, for an error message.
        public func describeNext() -> String {
            guard at < bytes.count else { return "end of input" }
            let b = bytes[at]
            return b >= 0x20 && b < 0x7f ? "character '\(Character(Unicode.Scalar(b)))'" : "byte 0x\(String(b, radix: 16))"
        }

        @inlinable public mutating func skipSpace() {
            while at < bytes.count {
                switch bytes[at] {
                case 0x20, 0x0a, 0x0d, 0x09: at += 1
                default: return
                }
            }
        }

        /// `true`, `false` or `null`, whichever `word` is, at the current position.
        public mutating func literal(_ word: StaticString) throws(Failure) {
            let n = word.utf8CodeUnitCount
            guard at + n <= bytes.count, UnsafeBufferPointer(rebasing: bytes[at..<(at + n)]).elementsEqual(
                UnsafeBufferPointer(start: word.utf8Start, count: n)) else {
                throw failure("unexpected \(describeNext())")
            }
            at += n
        }

        /// A string, the current position at its opening quote.
        public mutating func string() throws(Failure) -> String {
            at += 1   // the opening quote
            let start = at
            // The common case: no escapes, so the string is the bytes between the quotes; and
            // ASCII only (names, addresses, ports), which needs no UTF-8 validation.
            var ascii = true
            while at < bytes.count {
                let b = bytes[at]
                if b == UInt8(ascii: "\"") {
                    let run = UnsafeBufferPointer(rebasing: bytes[start..<at])
                    let s = ascii ? String(decoding: run, as: UTF8.self) : try text(run)
                    at += 1
                    return s
                }
                if b == UInt8(ascii: "\\") { break }
                if b < 0x20 { throw failure("control character in a string") }
                if b >= 0x80 { ascii = false }
                at += 1
            }
            var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<at]))
            while at < bytes.count {
                let b = bytes[at]
                if b == UInt8(ascii: "\"") {
                    let s = try out.withUnsafeBufferPointer { (p) throws(Failure) -> String in try text(p) }
                    at += 1
                    return s
                }
                if b < 0x20 { throw failure("control character in a string") }
                if b != UInt8(ascii: "\\") { out.append(b); at += 1; continue }
                at += 1
                guard at < bytes.count else { break }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A high surrogate takes the low one after it; alone, it is U+FFFD (as Go reads it).
                        if at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") {
                            let save = at
                            at += 2
                            let low = try hex4()
                            if (0xDC00..<0xE000).contains(low) {
                                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                scalar = 0xFFFD
                                at = save
                            }
                        } else {
                            scalar = 0xFFFD
                        }
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        scalar = 0xFFFD
                    }
                    out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
                default:
                    at -= 1
                    throw failure("invalid escape \\\(describeNext())")
                }
            }
            throw failure("unterminated string")
        }

        func text(_ utf8: UnsafeBufferPointer<UInt8>) throws(Failure) -> String {
            guard strictUTF8 else { return String(decoding: utf8, as: UTF8.self) }
            guard let s = String(validating: utf8, as: UTF8.self) else { throw failure("invalid UTF-8 in a string") }
            return s
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            guard at + 4 <= bytes.count else { throw failure("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[at]
                let d: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
                default: throw failure("invalid \\u escape")
                }
                v = v << 4 | UInt32(d)
                at += 1
            }
            return v
        }

        /// A number, the current position at its first character:
        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
        public mutating func number() throws(Failure) -> Number {
            let start = at
            var negative = false
            if at < bytes.count, bytes[at] == UInt8(ascii: "-") { negative = true; at += 1 }
            guard isDigit else { throw failure("invalid number") }
            var magnitude: UInt64 = 0
            var overflow = false
            if bytes[at] == UInt8(ascii: "0") {
                at += 1
            } else {
                while isDigit {
                    let (m1, o1) = magnitude.multipliedReportingOverflow(by: 10)
                    let (m2, o2) = m1.addingReportingOverflow(UInt64(bytes[at] - UInt8(ascii: "0")))
                    overflow = overflow || o1 || o2
                    magnitude = m2
                    at += 1
                }
            }
            var integral = true
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
                integral = false
                at += 1
                try digits()
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                integral = false
                at += 1
                if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
                try digits()
            }
            if integral && !overflow {
                if negative, magnitude <= UInt64(Int64.max) + 1 { return .int(magnitude == UInt64(Int64.max) + 1 ? .min : -Int64(magnitude)) }
                if !negative, magnitude <= UInt64(Int64.max) { return .int(Int64(magnitude)) }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
            guard let d = Double(text), d.isFinite else { throw failure("number \(text) out of range") }
            return .double(d)
        }

        var isDigit: Bool { at < bytes.count && bytes[at] >= UInt8(ascii: "0") && bytes[at] <= UInt8(ascii: "9") }

        mutating func digits() throws(Failure) {
            guard isDigit else { throw failure("invalid number") }
            while isDigit { at += 1 }
        }
    }

    /// Whether a byte of a string needs an escape (or, for 0xE2, may start U+2028 or U+2029).
    @inlinable static func special(_ b: UInt8) -> Bool {
        b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b == UInt8(ascii: "<") || b == UInt8(ascii: ">")
            || b == UInt8(ascii: "&") || b == 0xE2
    }

    /// `quote`, into bytes.
    public static func quote(_ s: String, into out: inout [UInt8]) {
        var s = s
        let plain = s.withUTF8 { u in
            if u.contains(where: special) { return false }
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: u)
            out.append(UInt8(ascii: "\""))
            return true
        }
        if plain { return }
        var text = ""
        quote(s, into: &text)
        out.append(contentsOf: text.utf8)
    }

    /// Appends `s` as a JSON string, escaped as Go's encoder escapes it (kube-apiserver's and the
    /// reference plugins' output): `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes too.
    public static func quote(_ s: String, into out: inout String) {
        // Most strings (names, labels, IPs) need no escape: appended whole.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "<")
            || $0 == UInt8(ascii: ">") || $0 == UInt8(ascii: "&") || $0 == 0xE2 }) {
            out += "\""
            out += s
            out += "\""
            return
        }
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<": out += "\\u003c"
            case ">": out += "\\u003e"
            case "&": out += "\\u0026"
            case "\u{2028}": out += "\\u2028"
            case "\u{2029}": out += "\\u2029"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}
