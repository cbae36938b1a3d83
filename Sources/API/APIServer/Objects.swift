import Foundation
import Synchronization
import KubeAPI
import KubeStore
import APISchema

/// Objects as the API presents and reads them: dry runs, stored objects presented with their
/// resourceVersion, request bodies decoded, timestamps in RFC 3339.
extension APIHandler {

    /// `?dryRun=All`, or for a deletion `dryRun: ["All"]` in its DeleteOptions (where kubectl
    /// puts it): everything but the write. Upstream accepts no other value.
    func isDryRun(_ req: APIRequest, deleteOptions: JSONValue? = nil) throws -> Bool {
        let values = (req.query["dryRun"].map { [$0] } ?? []) + (deleteOptions?["dryRun"]?.array ?? []).map { $0.string ?? $0.text() }
        if let bad = values.first(where: { $0 != "All" }) {
            throw APIError.badRequest("Invalid dry run value: \"\(bad)\" (supported: \"All\")")
        }
        return !values.isEmpty
    }

    /// An object as it would be stored, for a dry run: no resourceVersion.
    func presentUnstored(_ o: JSONValue, _ r: ResourceInfo) -> JSONValue {
        var o = o
        o["kind"] = .string(r.kind)
        o["apiVersion"] = .string(r.groupVersion)
        return o
    }

    /// The stored object as clients see it: its resourceVersion is the store's revision.
    func present(_ kv: KeyValue, _ r: ResourceInfo, known: JSONValue? = nil) throws -> JSONValue {
        var o = try known ?? r.decode(kv.value)
        o[path: ["metadata", "resourceVersion"]] = .string(String(kv.modRevision))
        o["kind"] = .string(r.kind)
        o["apiVersion"] = .string(r.groupVersion)
        return o
    }

    func get(_ r: ResourceInfo, namespace: String?, name: String, subresource: String?) async throws -> JSONValue {
        guard let kv = try await storeCall(r, name, { try await self.store.get(r.key(namespace: namespace, name: name)) }) else {
            throw APIError.notFound(r, name)
        }
        let o = try present(kv, r)
        if subresource == "scale" { return Scale.of(o, r) }
        return o
    }

    /// Runs a store call with its errors as API errors.
    func storeCall<T>(_ r: ResourceInfo, _ name: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as StoreError {
            throw APIError.from(e, r, name)
        }
    }

    /// `?fieldValidation`, as kube-apiserver applies it to a request's object: fields the kind's
    /// schema does not declare are dropped (as decoding into upstream's Go types drops them) and,
    /// with repeated keys, reported as `Warning`s (`Warn`, the default), refused with 400
    /// (`Strict`), or neither (`Ignore`). Returns the warnings.
    func validateFields(_ o: inout JSONValue, _ gvk: GroupVersionKind, duplicates: [String] = [], _ req: APIRequest) throws -> [String] {
        let directive = try fieldValidation(req)
        var problems: [String] = []
        if let node = schemas.node(for: gvk) {
            problems = schemas.prune(&o, at: node).sorted().map { "unknown field \"\($0)\"" }
        }
        problems += duplicates.map { "duplicate field \"\($0)\"" }
        switch directive {
        case .ignore: return []
        case .warn: return problems
        case .strict:
            guard problems.isEmpty else {
                throw APIError.badRequest("\(gvk.kind) in version \"\(gvk.version)\" cannot be handled as a \(gvk.kind): strict decoding error: "
                                          + problems.joined(separator: ", "))
            }
            return []
        }
    }

    /// `?fieldValidation=` (Warn when absent).
    func fieldValidation(_ req: APIRequest) throws -> FieldValidation {
        guard let directive = FieldValidation(query: req.query["fieldValidation"]) else {
            throw APIError.badRequest("fieldValidation: Unsupported value: \"\(req.query["fieldValidation"] ?? "")\": supported values: \"Ignore\", \"Strict\", \"Warn\"")
        }
        return directive
    }

    /// The body as a JSON object (kubectl sends JSON; YAML is accepted too).
    func decodeBody(_ req: APIRequest) throws -> JSONValue {
        var ignored: [String] = []
        return try decodeBody(req, duplicates: &ignored)
    }

    /// The body as a JSON object, and where a JSON body repeats a key.
    func decodeBody(_ req: APIRequest, duplicates: inout [String]) throws -> JSONValue {
        guard req.body.count <= Self.maxBodySize else { throw APIError.tooLarge(Self.maxBodySize) }
        let type = (req.contentType ?? "application/json").split(separator: ";")[0].trimmingCharacters(in: .whitespaces)
        let value: JSONValue
        switch type {
        case "application/json", "", "*/*": value = try JSONValue.parse(req.body, duplicates: &duplicates)
        case "application/yaml", "application/x-yaml", "text/yaml":
            guard let text = String(data: req.body, encoding: .utf8) else { throw APIError.badRequest("the body is not UTF-8") }
            value = try YAMLToJSON.convert(text)
        case KubeProtobuf.mediaType:
            do {
                value = try KubeProtobuf.decode(req.body)
            } catch let e as KubeProtobuf.Failure {
                throw APIError(code: 415, reason: "UnsupportedMediaType", message: "protobuf body: \(e.description)")
            }
        default: throw APIError.unsupportedMediaType(type)
        }
        guard case .object = value else { throw APIError.badRequest("the body must be a JSON object") }
        return value
    }

    /// RFC 3339 in UTC, second precision (`2026-11-27T01:30:58Z`), without Foundation's date
    /// formatters (which load ICU: megabytes of resident memory for one format).
    static func rfc3339(_ d: Date = Date()) -> String {
        let tm = utc(time_t(d.timeIntervalSince1970))
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }

    /// The calendar fields of a moment in UTC (for the date formats here and the HTTP `Date`).
    static func utc(_ seconds: time_t) -> tm {
        var t = seconds
        var fields = tm()
        gmtime_r(&t, &fields)
        return fields
    }

    static func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// Parses what `rfc3339` writes (and a fractional or offset-free variant of it).
    static func parseRFC3339(_ s: String) -> Date? {
        let parts = s.split(whereSeparator: { "-T:Z.".contains($0) }).compactMap { Int32($0) }
        guard parts.count >= 6 else { return nil }
        var tm = tm()
        tm.tm_year = parts[0] - 1900
        tm.tm_mon = parts[1] - 1
        tm.tm_mday = parts[2]
        tm.tm_hour = parts[3]
        tm.tm_min = parts[4]
        tm.tm_sec = parts[5]
        return Date(timeIntervalSince1970: TimeInterval(timegm(&tm)))
    }
}
