import APIAccess
import Foundation
import HTTPTypes
import HummingbirdCore
import KubeAPI
import NIOCore

/// Hostile input on the authentication path, made from a seed: bearer tokens that are forged
/// (algorithms `none`, HS256 and others; another key), tampered with (a changed claim, a flipped
/// character, a cut), expired or for another audience; random and huge headers; JSON nested too
/// deep; and client certificates that are not DER (random bytes, a real one cut or with bytes
/// after it). Every case must be answered 401 — never 500, never a crash. The tests run a few
/// hundred; `switchyard-bench authfuzz` thousands.
public enum AuthenticationFuzz {
    /// A small deterministic generator (SplitMix64), so a failing case can be made again.
    public struct Generator: Sendable {
        var state: UInt64
        public init(seed: UInt64) { state = seed }
        public mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        public mutating func int(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
        public mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    }

    public struct Case: Sendable {
        public var what: String
        public var authorization: String?
        public var certificate: [UInt8]?

        public init(what: String, authorization: String?, certificate: [UInt8]? = nil) {
            self.what = what
            self.authorization = authorization
            self.certificate = certificate
        }
    }

    static func b64(_ d: some DataProtocol) -> String {
        Data(d).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func unb64(_ s: Substring) -> Data? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        t += String(repeating: "=", count: (4 - t.count % 4) % 4)
        return Data(base64Encoded: t)
    }

    /// `count` cases from `seed`, around `token` (a valid token of the server's own issuer, for
    /// the API's audiences) and `certificate` (a valid client certificate's DER).
    public static func cases(seed: UInt64, count: Int, token valid: String, certificate: [UInt8], now: Date = Date()) -> [Case] {
        var g = Generator(seed: seed)
        let parts = valid.split(separator: ".", omittingEmptySubsequences: false)
        let claims = unb64(parts[1]).flatMap { try? JSONValue.parse($0) } ?? [:]
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var out: [Case] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            switch i % 12 {
            case 0:
                // Another algorithm in the header, the payload and signature kept or dropped.
                let alg = ["none", "HS256", "HS512", "RS256", "ES384", "", "es256", "ES256 ", "EdDSA"][g.int(9)]
                let header = b64(Array(#"{"alg":"\#(alg)","kid":"x"}"#.utf8))
                out.append(Case(what: "alg \(alg)", authorization: "Bearer \(header).\(parts[1]).\(g.int(2) == 0 ? String(parts[2]) : "")"))
            case 1:
                // One character of one part changed.
                var chars = Array(valid)
                let at = g.int(chars.count)
                if chars[at] != "." {
                    var c = alphabet[g.int(alphabet.count)]
                    if c == chars[at] { c = c == "A" ? "B" : "A" }
                    chars[at] = c
                }
                let s = String(chars)
                out.append(Case(what: "flipped at \(at)", authorization: s == valid ? "Bearer x" + s : "Bearer " + s))
            case 2:
                // A claim changed (the signature no longer holds): the audience, the expiry, the
                // issuer, the subject, the namespace.
                var c = claims
                switch g.int(5) {
                case 0: c["aud"] = ["another-audience"]
                case 1: c["exp"] = .int(Int64(now.timeIntervalSince1970) - 10)
                case 2: c["iss"] = "https://evil.example"
                case 3: c["sub"] = "system:serviceaccount:kube-system:admin"
                default: c[path: ["kubernetes.io", "namespace"]] = "kube-system"
                }
                out.append(Case(what: "claim changed", authorization: "Bearer \(parts[0]).\(b64(c.serialized())).\(parts[2])"))
            case 3:
                // Cut anywhere.
                let n = g.int(valid.count)
                out.append(Case(what: "cut at \(n)", authorization: "Bearer " + String(valid.prefix(n))))
            case 4:
                // Three parts of random bytes, or random base64url text.
                let a = b64(g.bytes(g.int(64) + 1)), b = b64(g.bytes(g.int(256) + 1)), c = b64(g.bytes(g.int(96) + 1))
                out.append(Case(what: "random parts", authorization: "Bearer \(a).\(b).\(c)"))
            case 5:
                // Valid JSON of the wrong shapes in the header and claims.
                let shapes = [#"[]"#, #"null"#, #"{"alg":["ES256"]}"#, #"{"alg":"ES256","crit":["x"]}"#, #"1e999999"#, #""ES256""#,
                              #"{"alg":"ES256","alg":"none"}"#, #"{"exp":"never","aud":7}"#]
                let h = shapes[g.int(shapes.count)], c = shapes[g.int(shapes.count)]
                out.append(Case(what: "shapes \(h) \(c)", authorization: "Bearer \(b64(Array(h.utf8))).\(b64(Array(c.utf8))).\(parts[2])"))
            case 6:
                // JSON nested deeper than any parser should follow.
                let depth = 1_000 + g.int(50_000)
                let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
                out.append(Case(what: "nested \(depth)", authorization: "Bearer \(b64(Array(nested.utf8))).\(parts[1]).\(parts[2])"))
            case 7:
                // A huge header: a long token, or many dots.
                let n = 16_384 + g.int(65_536)
                let body = g.int(2) == 0 ? String(repeating: "a", count: n) : String(repeating: "a.", count: n / 2)
                out.append(Case(what: "huge \(n)", authorization: "Bearer " + body))
            case 8:
                // Other schemes and malformed bearer lines.
                let lines = ["Basic " + b64(Array("admin:admin".utf8)), "Bearer", "Bearer ", "bearer\t" + valid + "x", "Bearer \u{0}\u{1}\u{7f}",
                             "Bearer " + String(decoding: g.bytes(32).map { $0 | 0x80 }, as: UTF8.self), "Negotiate abc", "Bearer ..", "Bearer a.b"]
                out.append(Case(what: "scheme", authorization: lines[g.int(lines.count)]))
            case 9:
                // Bootstrap-token shapes that name no Secret.
                let id = String((0..<6).map { _ in alphabet[g.int(36) + 26].lowercased().first! })
                let secret = String((0..<16).map { _ in alphabet[g.int(36) + 26].lowercased().first! })
                out.append(Case(what: "bootstrap", authorization: "Bearer \(id).\(secret)"))
            case 10:
                // A client certificate that is not one: random bytes, or the real one cut.
                let der = g.int(2) == 0 ? g.bytes(g.int(2048) + 1) : Array(certificate.prefix(g.int(certificate.count)))
                out.append(Case(what: "certificate bytes", authorization: nil, certificate: der))
            default:
                // The real certificate with bytes after it, or with its outer length changed.
                var der = certificate
                if g.int(2) == 0 { der += g.bytes(g.int(64) + 1) } else if der.count > 3 { der[2] = der[2] &+ UInt8(g.int(200) + 1) }
                out.append(Case(what: "certificate framing", authorization: nil, certificate: der))
            }
        }
        return out
    }

    /// Each case through the server's authentication (tokens, bootstrap tokens, service-account
    /// tokens and client certificates configured, anonymous off); the cases not answered 401.
    public static func run(_ cases: [Case], handler: APIHandler, tokens: TokenFile) async -> [(Case, Int)] {
        var wrong: [(Case, Int)] = []
        for c in cases {
            var fields = HTTPFields()
            if let a = c.authorization { fields[.authorization] = a }
            let request = Request(head: HTTPRequest(method: .get, scheme: "https", authority: "x", path: "/api/v1/namespaces", headerFields: fields),
                                  body: RequestBody(buffer: ByteBuffer()))
            let r = await APIServer.respond(handler, request, tokens: tokens, anonymous: false, certificate: c.certificate, clientCA: true, bootstrapTokens: true)
            if r.status.code != 401 { wrong.append((c, r.status.code)) }
        }
        return wrong
    }
}
