import Foundation
import KubeAPI

/// Kubernetes' protobuf encoding of built-in objects, read into the JSON object the rest of
/// the server handles. kubectl 1.33's generators (`kubectl create configmap|secret|namespace|
/// service|deployment`, `kubectl run`, `kubectl expose`) send their objects this way: the
/// `k8s\0` prefix, a `runtime.Unknown` naming the kind, and the object's generated message.
///
/// The field numbers come from upstream's `generated.proto` (ProtobufSchema.swift, written by
/// scripts/gen-protobuf-schema.py). A field this table does not know fails the request with
/// 415; nothing is dropped silently. Go's generated marshallers write every non-pointer field,
/// empty ones too; those are left out here as JSON's `omitempty` leaves them out, except the
/// pointer fields whose zero means something (`replicas: 0`).
public enum KubeProtobuf {
    public static let mediaType = "application/vnd.kubernetes.protobuf"

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Pointer fields in Go, whose zero is a value a client chose and not an absent field.
    static let keepZero: Set<String> = [
        "replicas", "revisionHistoryLimit", "progressDeadlineSeconds", "terminationGracePeriodSeconds",
        "activeDeadlineSeconds", "automountServiceAccountToken", "allocateLoadBalancerNodePorts",
        "enableServiceLinks", "immutable", "deletionGracePeriodSeconds",
    ]

    enum Kind {
        case string, int32, int64, bool, bytes, double, time, quantity, intOrString, raw
        case message(String)
        case map(String)
    }

    struct Field {
        var name: String
        var kind: Kind
        var repeated: Bool
    }

    static let schema: [String: [Int: Field]] = {
        var out: [String: [Int: Field]] = [:]
        for (message, text) in schemaText {
            var fields: [Int: Field] = [:]
            for f in text.split(separator: ";") {
                let parts = f.split(separator: " ")
                guard parts.count == 3, let n = Int(parts[0]) else { continue }
                var k = Substring(parts[2])
                let repeated = k.hasPrefix("[]")
                if repeated { k = k.dropFirst(2) }
                let kind: Kind
                if k.hasPrefix("m:") { kind = .message(String(k.dropFirst(2))) }
                else if k.hasPrefix("map:") { kind = .map(String(k.dropFirst(4))) }
                else {
                    switch k {
                    case "string": kind = .string
                    case "int32": kind = .int32
                    case "int64": kind = .int64
                    case "bool": kind = .bool
                    case "bytes": kind = .bytes
                    case "double": kind = .double
                    case "time": kind = .time
                    case "quantity": kind = .quantity
                    case "intorstring": kind = .intOrString
                    default: kind = .raw
                    }
                }
                fields[n] = Field(name: String(parts[1]), kind: kind, repeated: repeated)
            }
            out[message] = fields
        }
        return out
    }()

    /// The kinds whose message is known, by `apiVersion` and `kind`.
    static func message(apiVersion: String, kind: String) -> String? {
        switch (apiVersion, kind) {
        case ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Namespace"), ("v1", "Service"), ("v1", "Pod"),
             ("v1", "ServiceAccount"), ("v1", "Endpoints"), ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"),
             ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "ClusterRole"),
             ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
             ("authorization.k8s.io/v1", "SelfSubjectAccessReview"), ("authorization.k8s.io/v1", "SubjectAccessReview"),
             ("authorization.k8s.io/v1", "LocalSubjectAccessReview"), ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
             ("authentication.k8s.io/v1", "SelfSubjectReview"), ("authentication.k8s.io/v1", "TokenReview"),
             ("authentication.k8s.io/v1", "TokenRequest"), ("certificates.k8s.io/v1", "CertificateSigningRequest"),
             ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "IngressClass"):
            return kind
        default:
            return nil
        }
    }

    /// The object in `data` (`k8s\0` + runtime.Unknown) as JSON, with its apiVersion and kind.
    public static func decode(_ data: Data) throws -> JSONValue {
        let bytes = [UInt8](data)
        guard bytes.count >= 4, bytes[0..<4] == [0x6b, 0x38, 0x73, 0x00] else {
            throw Failure(description: "not a Kubernetes protobuf object (no k8s\\0 prefix)")
        }
        // runtime.Unknown: typeMeta (apiVersion, kind), raw (the object), contentEncoding, contentType.
        var apiVersion = "", kind = "", encoding = ""
        var raw: ArraySlice<UInt8> = []
        var r = WireReader(bytes[4...])
        while let (n, w) = try r.tag() {
            guard w == 2, (1...4).contains(n) else { throw Failure(description: "field \(n) of the protobuf envelope") }
            let v = try r.lengthDelimited()
            switch n {
            case 1:
                var tm = WireReader(v)
                while let (m, mw) = try tm.tag() {
                    guard mw == 2, m == 1 || m == 2 else { throw Failure(description: "field \(m) of the envelope's TypeMeta") }
                    let text = String(decoding: try tm.lengthDelimited(), as: UTF8.self)
                    if m == 1 { apiVersion = text } else { kind = text }
                }
            case 2: raw = v
            case 3: encoding = String(decoding: v, as: UTF8.self)
            default: break   // contentType: the object inside is protobuf in any case
            }
        }
        guard !apiVersion.isEmpty, !kind.isEmpty else {
            throw Failure(description: "the protobuf envelope names no apiVersion and kind")
        }
        if !encoding.isEmpty {
            throw Failure(description: "content encoding \(encoding) is not supported")
        }
        guard let message = message(apiVersion: apiVersion, kind: kind) else {
            throw Failure(description: "\(apiVersion) \(kind) in protobuf is not supported by this server; send it as JSON")
        }
        guard case .object(var o) = try decodeMessage(message, raw) else {
            throw Failure(description: "\(kind): not an object")
        }
        o["apiVersion"] = .string(apiVersion)
        o["kind"] = .string(kind)
        return .object(o)
    }

    static func decodeMessage(_ name: String, _ b: ArraySlice<UInt8>) throws -> JSONValue {
        guard let fields = schema[name] else { throw Failure(description: "message \(name) is not supported") }
        var r = WireReader(b)
        var out: [String: JSONValue] = [:]
        while let (number, wire) = try r.tag() {
            guard let f = fields[number] else {
                throw Failure(description: "field \(number) of \(name) is not supported by this server; send the object as JSON")
            }
            let value: JSONValue?
            switch f.kind {
            case .map(let valueKind):
                guard wire == 2 else { throw Failure(description: "\(name).\(f.name): a map entry must be length-delimited") }
                let (k, v) = try mapEntry(try r.lengthDelimited(), valueKind: valueKind, in: "\(name).\(f.name)")
                var m = out[f.name]?.objectValue ?? [:]
                m[k] = v
                out[f.name] = .object(m)
                continue
            default:
                value = try scalar(f, wire: wire, &r, in: name)
            }
            guard let value else { continue }
            if f.name == "-", case .object(let inlined) = value {
                // An embedded struct Go writes inline: its fields are this object's.
                out.merge(inlined) { _, new in new }
                continue
            }
            if f.repeated {
                var a = out[f.name]?.arrayValue ?? []
                a.append(value)
                out[f.name] = .array(a)
            } else if keepZero.contains(f.name) || !isEmpty(value) {
                out[f.name] = value   // an empty message (`status: {}`) stays, as JSON writes it
            }
        }
        return .object(out)
    }

    static func isEmpty(_ v: JSONValue) -> Bool {
        switch v {
        case .null: return true
        case .string(let s): return s.isEmpty
        case .int(let i): return i == 0
        case .bool(let b): return !b
        case .double(let d): return d == 0
        default: return false
        }
    }

    /// One value of `f`; nil for a zero time (Go's zero `metav1.Time`, which JSON writes as null).
    static func scalar(_ f: Field, wire: Int, _ r: inout WireReader, in message: String) throws -> JSONValue? {
        func expect(_ w: Int) throws {
            guard wire == w else { throw Failure(description: "\(message).\(f.name): wire type \(wire), expected \(w)") }
        }
        switch f.kind {
        case .string:
            try expect(2)
            return .string(String(decoding: try r.lengthDelimited(), as: UTF8.self))
        case .bytes:
            try expect(2)
            return .string(Data(try r.lengthDelimited()).base64EncodedString())
        case .int32, .int64:
            try expect(0)
            let v = try r.varint()
            return .int(f.kind.isInt32 ? Int64(Int32(truncatingIfNeeded: v)) : Int64(bitPattern: v))
        case .bool:
            try expect(0)
            return .bool(try r.varint() != 0)
        case .double:
            try expect(1)
            return .double(Double(bitPattern: try r.fixed64()))
        case .quantity:
            try expect(2)
            return .string(try quantity(try r.lengthDelimited()))
        case .intOrString:
            try expect(2)
            var sub = WireReader(try r.lengthDelimited())
            var type: UInt64 = 0, intVal: Int64 = 0, strVal = ""
            while let (n, w) = try sub.tag() {
                switch (n, w) {
                case (1, 0): type = try sub.varint()
                case (2, 0): intVal = Int64(Int32(truncatingIfNeeded: try sub.varint()))
                case (3, 2): strVal = String(decoding: try sub.lengthDelimited(), as: UTF8.self)
                default: throw Failure(description: "\(message).\(f.name): field \(n) of IntOrString")
                }
            }
            return type == 1 ? .string(strVal) : .int(intVal)
        case .time:
            try expect(2)
            var sub = WireReader(try r.lengthDelimited())
            var seconds: Int64 = 0
            while let (n, w) = try sub.tag() {
                switch (n, w) {
                case (1, 0): seconds = Int64(bitPattern: try sub.varint())
                case (2, 0): _ = try sub.varint()
                default: throw Failure(description: "\(message).\(f.name): field \(n) of Timestamp")
                }
            }
            if seconds == -62_135_596_800 || seconds == 0 { return nil }   // Go's zero time
            return .string(APIHandler.rfc3339(Date(timeIntervalSince1970: TimeInterval(seconds))))
        case .message(let m):
            try expect(2)
            return try decodeMessage(m, try r.lengthDelimited())
        case .raw:
            throw Failure(description: "\(message).\(f.name): embedded raw objects are not supported in protobuf; send JSON")
        case .map:
            return nil
        }
    }

    /// resource.Quantity: its string form in field 1.
    static func quantity(_ b: ArraySlice<UInt8>) throws -> String {
        var r = WireReader(b)
        var s = ""
        while let (n, w) = try r.tag() {
            guard n == 1, w == 2 else { throw Failure(description: "field \(n) of Quantity") }
            s = String(decoding: try r.lengthDelimited(), as: UTF8.self)
        }
        return s
    }

    static func mapEntry(_ b: ArraySlice<UInt8>, valueKind: String, in field: String) throws -> (String, JSONValue) {
        var r = WireReader(b)
        var key = ""
        var value: JSONValue = .string("")
        while let (n, w) = try r.tag() {
            switch (n, w) {
            case (1, 2): key = String(decoding: try r.lengthDelimited(), as: UTF8.self)
            case (2, 2):
                let v = try r.lengthDelimited()
                switch valueKind {
                case "string": value = .string(String(decoding: v, as: UTF8.self))
                case "bytes": value = .string(Data(v).base64EncodedString())
                case "quantity": value = .string(try quantity(v))
                case "strings":
                    // A message of one repeated string (`extra`'s values): a list in JSON.
                    var items: [JSONValue] = []
                    var sub = WireReader(v)
                    while let (n, w) = try sub.tag() {
                        guard n == 1, w == 2 else { throw Failure(description: "\(field): field \(n) of a list of strings") }
                        items.append(.string(String(decoding: try sub.lengthDelimited(), as: UTF8.self)))
                    }
                    value = .array(items)
                default: value = try decodeMessage(valueKind, v)
                }
            default: throw Failure(description: "\(field): field \(n) of a map entry")
            }
        }
        return (key, value)
    }
}

extension KubeProtobuf.Kind {
    var isInt32: Bool { if case .int32 = self { return true } else { return false } }
}

private extension JSONValue {
    var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
    var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
}

/// Protobuf's wire format: tags, varints, length-delimited runs.
struct WireReader {
    private let b: ArraySlice<UInt8>
    private var i: Int

    init(_ b: ArraySlice<UInt8>) {
        self.b = b
        i = b.startIndex
    }

    /// The next field's number and wire type; nil at the end.
    mutating func tag() throws -> (Int, Int)? {
        guard i < b.endIndex else { return nil }
        let t = try varint()
        guard t >> 3 > 0, t >> 3 < 1 << 29 else { throw KubeProtobuf.Failure(description: "bad protobuf field tag") }
        return (Int(t >> 3), Int(t & 7))
    }

    mutating func varint() throws -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while i < b.endIndex {
            let byte = b[i]
            i += 1
            v |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return v }
            shift += 7
            if shift >= 64 { break }
        }
        throw KubeProtobuf.Failure(description: "truncated or overlong protobuf varint")
    }

    mutating func fixed64() throws -> UInt64 {
        guard b.endIndex - i >= 8 else { throw KubeProtobuf.Failure(description: "truncated protobuf fixed64") }
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(b[i + k]) << (8 * UInt64(k)) }
        i += 8
        return v
    }

    mutating func lengthDelimited() throws -> ArraySlice<UInt8> {
        let n = try varint()
        guard n <= UInt64(b.endIndex - i) else { throw KubeProtobuf.Failure(description: "truncated protobuf field") }
        let out = b[i..<(i + Int(n))]
        i += Int(n)
        return out
    }
}
