import Foundation
import KubeAPI

extension APIHandler {
    /// The objects every cluster starts with, created if missing: the namespaces `default`,
    /// `kube-system`, `kube-public` and `kube-node-lease`, and the two system PriorityClasses.
    public func bootstrap() async throws {
        var objects: [(String, JSONValue)] = ["default", "kube-system", "kube-public", "kube-node-lease"].map {
            ("/api/v1/namespaces", ["metadata": ["name": .string($0)]])
        }
        for c in PriorityClassStrategy.system {
            objects.append(("/apis/scheduling.k8s.io/v1/priorityclasses",
                            ["metadata": ["name": .string(c.name)], "value": .int(c.value), "description": .string(c.description)]))
        }
        for (path, body) in objects {
            let r = await handle(APIRequest(method: "POST", path: path, body: body.serialized(), userAgent: "kube-apiserver"))
            guard r.code == 201 || r.code == 409 else {
                throw APIError.internal("creating \(path)/\(body.name): \(r.json?.text() ?? "")")
            }
        }
    }
}
