import Foundation
import KubeAPI
import KubeClient
import KubeStore
import APIServer
import ControllerKit

/// The API server's handler as a transport: the components under test talk to the real API
/// (validation, admission, watches, conflicts) in memory, without sockets.
struct HandlerTransport: APITransport {
    let handler: APIHandler

    static func make(serviceRanges: [String]? = nil) async throws -> (APIHandler, API) {
        let store = try SQLiteStore(path: ":memory:")
        let h = if let serviceRanges {
            APIHandler(store: store, admission: Admission(allocator: Allocator(serviceRanges: serviceRanges.map { CIDR($0)! })))
        } else {
            APIHandler(store: store)
        }
        try await h.bootstrap()
        return (h, API(HandlerTransport(handler: h), fieldManager: "test"))
    }

    func request(_ method: String, _ path: String, query: [String: String], body: JSONValue?, contentType: String) async throws -> ClientResponse {
        let r = await handler.handle(APIRequest(method: method, path: path, query: query, contentType: body == nil ? nil : contentType,
                                                body: body.map { Data($0.serialized()) } ?? Data(), userAgent: "test"))
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
    /// Polls until `check` holds (or fails after `seconds`). Generous: the lab tests, which run
    /// beside these and wait synchronously, can hold the cooperative threads for a minute or
    /// more on a 2-core machine, and what is under test here runs on the same threads.
    func eventually(_ seconds: Double = 240, _ check: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await check()) == true { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

func node(_ name: String, cpu: String = "4", memory: String = "8Gi", pods: Int = 110, labels: [String: String] = [:],
          taints: [JSONValue] = []) -> JSONValue {
    var l = labels
    l["kubernetes.io/hostname"] = l["kubernetes.io/hostname"] ?? name
    var spec: [String: JSONValue] = [:]
    if !taints.isEmpty { spec["taints"] = .array(taints) }
    let resources: JSONValue = ["cpu": .string(cpu), "memory": .string(memory), "pods": .string(String(pods)), "ephemeral-storage": "100Gi"]
    return ["apiVersion": "v1", "kind": "Node", "metadata": ["name": .string(name), "labels": .object(l.mapValues { .string($0) })],
            "spec": .object(spec), "status": ["capacity": resources, "allocatable": resources,
                                               "conditions": [["type": "Ready", "status": "True"]]]]
}

func pod(_ name: String, ns: String = "default", cpu: String? = nil, memory: String? = nil, labels: [String: String] = [:],
         extra: [String: JSONValue] = [:], owner: String? = nil) -> JSONValue {
    var requests: [String: JSONValue] = [:]
    if let cpu { requests["cpu"] = .string(cpu) }
    if let memory { requests["memory"] = .string(memory) }
    var spec: [String: JSONValue] = ["containers": [["name": "c", "image": "nginx:1.25", "resources": ["requests": .object(requests)]]]]
    for (k, v) in extra { spec[k] = v }
    var meta: [String: JSONValue] = ["name": .string(name), "namespace": .string(ns), "labels": .object(labels.mapValues { .string($0) })]
    if let owner { meta["ownerReferences"] = [["apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": .string(owner), "controller": true]] }
    return ["apiVersion": "v1", "kind": "Pod", "metadata": .object(meta), "spec": .object(spec)]
}
