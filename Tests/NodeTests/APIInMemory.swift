import APIServer
import ControllerKit
import Foundation
import KubeAPI
import KubeClient
import KubeStore

/// The API server's handler as a transport: the kubelet under test talks to the real API
/// (validation, admission, watches, conflicts) in memory.
struct HandlerTransport: APITransport {
    let handler: APIHandler

    static func make() async throws -> (APIHandler, API) {
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"))
        try await h.bootstrap()
        return (h, API(HandlerTransport(handler: h), fieldManager: "test"))
    }

    func request(_ method: String, _ path: String, query: [String: String], body: JSONValue?, contentType: String) async throws -> ClientResponse {
        let r = await handler.handle(APIRequest(method: method, path: path, query: query, contentType: body == nil ? nil : contentType,
                                                body: body.map { Data($0.serialized()) } ?? Data(), userAgent: "kubelet"))
        return ClientResponse(status: r.code, body: r.json ?? .null)
    }

    func watch(_ path: String, query: [String: String]) async throws -> AsyncThrowingStream<JSONValue, any Error> {
        var q = query
        q["watch"] = "1"
        let r = await handler.handle(APIRequest(method: "GET", path: path, query: q))
        guard case .stream(let lines) = r.body else {
            throw ClientError(status: r.code, description: "watch \(path): \(r.code) \(r.json?["message"]?.string ?? "")")
        }
        return AsyncThrowingStream { c in
            let t = Task {
                do {
                    for try await line in lines {
                        for part in line.split(separator: 0x0a) where !part.isEmpty { c.yield(try JSONValue.parse(Data(part))) }
                    }
                    c.finish()
                } catch { c.finish(throwing: error) }
            }
            c.onTermination = { _ in t.cancel() }
        }
    }
}

extension API {
    /// Polls until `check` holds (false after `seconds`).
    func eventually(_ seconds: Double = 240, _ check: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await check()) == true { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
