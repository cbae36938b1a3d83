import Foundation
import KubeAPI
import KubeClient

/// How a control-plane component reaches the API server: requests and watches of JSON. The
/// components run over HTTP (`KubeClient`, as separate processes or inside the server's, as k3s
/// runs them); tests hand them the server's handler in memory, with every rule of the real API.
public protocol APITransport: Sendable {
    func request(_ method: String, _ path: String, query: [String: String], body: JSONValue?, contentType: String) async throws -> ClientResponse
    func watch(_ path: String, query: [String: String]) async throws -> AsyncThrowingStream<JSONValue, any Error>
}

extension KubeClient: APITransport {}

/// An answer the API server gave as a `Status` (its code, reason and message).
public struct APIStatusError: Error, CustomStringConvertible, Sendable {
    public var code: Int
    public var reason: String
    public var message: String
    public var description: String { "\(code) \(reason): \(message)" }
    public init(code: Int, reason: String, message: String) {
        self.code = code
        self.reason = reason
        self.message = message
    }
    public var isConflict: Bool { code == 409 && reason == "Conflict" }
    public var isNotFound: Bool { code == 404 }
    public var isAlreadyExists: Bool { code == 409 && reason == "AlreadyExists" }
}

/// The typed calls controllers make, over any transport: each throws `APIStatusError` for an
/// answer that is not a success.
public struct API: Sendable {
    public let transport: any APITransport
    /// The field manager of every write (`kube-scheduler`, `kube-controller-manager`).
    public var fieldManager: String

    public init(_ transport: any APITransport, fieldManager: String) {
        self.transport = transport
        self.fieldManager = fieldManager
    }

    /// The collection path of a resource (`/api/v1/namespaces/ns/pods`, `/apis/apps/v1/replicasets`).
    public static func path(_ groupVersion: String, _ resource: String, namespace: String? = nil, name: String? = nil, subresource: String? = nil) -> String {
        var p = groupVersion.contains("/") ? "/apis/\(groupVersion)" : "/api/\(groupVersion)"
        if let namespace { p += "/namespaces/\(namespace)" }
        p += "/\(resource)"
        if let name { p += "/\(name)" }
        if let subresource { p += "/\(subresource)" }
        return p
    }

    func call(_ method: String, _ path: String, query: [String: String] = [:], body: JSONValue? = nil,
              contentType: String = "application/json") async throws -> JSONValue {
        var q = query
        if method != "GET" && method != "DELETE" { q["fieldManager"] = fieldManager }
        let r = try await transport.request(method, path, query: q, body: body, contentType: contentType)
        guard (200..<300).contains(r.status) else {
            throw APIStatusError(code: r.status, reason: r.body["reason"]?.string ?? "", message: r.body["message"]?.string ?? "\(method) \(path): \(r.status)")
        }
        return r.body
    }

    public func get(_ path: String) async throws -> JSONValue { try await call("GET", path) }
    public func list(_ path: String, query: [String: String] = [:]) async throws -> JSONValue { try await call("GET", path, query: query) }
    public func create(_ path: String, _ body: JSONValue) async throws -> JSONValue { try await call("POST", path, body: body) }
    public func update(_ path: String, _ body: JSONValue) async throws -> JSONValue { try await call("PUT", path, body: body) }
    public func mergePatch(_ path: String, _ body: JSONValue) async throws -> JSONValue {
        try await call("PATCH", path, body: body, contentType: "application/merge-patch+json")
    }
    public func strategicPatch(_ path: String, _ body: JSONValue) async throws -> JSONValue {
        try await call("PATCH", path, body: body, contentType: "application/strategic-merge-patch+json")
    }
    @discardableResult
    public func delete(_ path: String, options: JSONValue? = nil) async throws -> JSONValue { try await call("DELETE", path, body: options) }
}
