import KubeAPI
import KubeStore

/// An error as the API answers it: a `Status` object with upstream's reason and code.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var code: Int
    public var reason: String
    public var message: String
    /// `details`: the object's name, group, kind, and for `Invalid` the causes.
    public var details: [String: JSONValue]?

    public var description: String { "\(code) \(reason): \(message)" }

    public init(code: Int, reason: String, message: String, details: [String: JSONValue]? = nil) {
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
    }

    static func resourceLabel(_ r: ResourceInfo) -> String { r.group.isEmpty ? r.resource : "\(r.resource).\(r.group)" }

    static func details(_ r: ResourceInfo, _ name: String) -> [String: JSONValue] {
        var d: [String: JSONValue] = ["name": .string(name), "kind": .string(r.resource)]
        if !r.group.isEmpty { d["group"] = .string(r.group) }
        return d
    }

    public static func notFound(_ r: ResourceInfo, _ name: String) -> APIError {
        APIError(code: 404, reason: "NotFound", message: "\(resourceLabel(r)) \"\(name)\" not found", details: details(r, name))
    }

    public static func alreadyExists(_ r: ResourceInfo, _ name: String) -> APIError {
        APIError(code: 409, reason: "AlreadyExists", message: "\(resourceLabel(r)) \"\(name)\" already exists", details: details(r, name))
    }

    public static func conflict(_ r: ResourceInfo, _ name: String) -> APIError {
        APIError(code: 409, reason: "Conflict",
                 message: "Operation cannot be fulfilled on \(resourceLabel(r)) \"\(name)\": the object has been modified; please apply your changes to the latest version and try again",
                 details: details(r, name))
    }

    public static func badRequest(_ message: String) -> APIError { APIError(code: 400, reason: "BadRequest", message: message) }

    /// 422 Invalid with one cause per field error, as upstream words them.
    public static func invalid(_ r: ResourceInfo, _ name: String, _ errors: [FieldError]) -> APIError {
        var d = details(r, name)
        d["kind"] = .string(r.kind)
        d["causes"] = .array(errors.map { .object(["field": .string($0.field), "reason": .string(causeReason($0.message)), "message": .string($0.message)]) })
        let list = errors.map(\.description)
        let joined = list.count == 1 ? list[0] : "[" + list.joined(separator: ", ") + "]"
        return APIError(code: 422, reason: "Invalid", message: "\(r.qualifiedKind) \"\(name)\" is invalid: \(joined)", details: d)
    }

    /// Options of a request that are not valid (`PatchOptions.meta.k8s.io "" is invalid: …`), 422.
    public static func invalidOptions(_ kind: String, _ errors: [FieldError]) -> APIError {
        let list = errors.map(\.description)
        let joined = list.count == 1 ? list[0] : "[" + list.joined(separator: ", ") + "]"
        let causes: [JSONValue] = errors.map { .object(["field": .string($0.field), "reason": .string(causeReason($0.message)), "message": .string($0.message)]) }
        return APIError(code: 422, reason: "Invalid", message: "\(kind).meta.k8s.io \"\" is invalid: \(joined)",
                        details: ["group": "meta.k8s.io", "kind": .string(kind), "causes": .array(causes)])
    }

    static func causeReason(_ message: String) -> String {
        for (prefix, reason) in [("Required value", "FieldValueRequired"), ("Invalid value", "FieldValueInvalid"),
                                 ("Unsupported value", "FieldValueNotSupported"), ("Duplicate value", "FieldValueDuplicate"),
                                 ("Forbidden", "FieldValueForbidden"), ("Too long", "FieldValueTooLong"), ("Too many", "FieldValueTooMany")]
            where message.hasPrefix(prefix) { return reason }
        return "FieldValueInvalid"
    }

    public static let unauthorized = APIError(code: 401, reason: "Unauthorized", message: "Unauthorized")
        public static func expired(_ message: String) -> APIError { APIError(code: 410, reason: "Expired", message: message) }

    public static func methodNotAllowed(_ message: String) -> APIError { APIError(code: 405, reason: "MethodNotAllowed", message: message) }

    public static func unsupportedMediaType(_ type: String) -> APIError {
        APIError(code: 415, reason: "UnsupportedMediaType", message: "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got \(type))")
    }

    public static func tooLarge(_ limit: Int) -> APIError {
        APIError(code: 413, reason: "RequestEntityTooLarge", message: "the request body is larger than \(limit) bytes")
    }

    public static func pathNotFound(_ path: String) -> APIError {
        APIError(code: 404, reason: "NotFound", message: "the server could not find the requested resource")
    }

    public static func `internal`(_ message: String) -> APIError { APIError(code: 500, reason: "InternalError", message: message) }

    /// The store's refusal in API terms.
    static func from(_ e: StoreError, _ r: ResourceInfo, _ name: String) -> APIError {
        switch e {
        case .exists: return alreadyExists(r, name)
        case .notFound: return notFound(r, name)
        case .conflict: return conflict(r, name)
        case .compacted(let req, let c): return expired("too old resource version: \(req) (\(c + 1))")
        case .futureRevision(let req, let cur): return APIError(code: 504, reason: "Timeout", message: "Too large resource version: \(req), current resource version: \(cur)")
        case .backend(let m): return .internal(m)
        }
    }

    /// The `Status` object.
    public var status: JSONValue {
        var o: [String: JSONValue] = ["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure",
                                      "message": .string(message), "reason": .string(reason), "code": .int(Int64(code))]
        if let details { o["details"] = .object(details) }
        return .object(o)
    }
}
