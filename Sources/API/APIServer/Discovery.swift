import Foundation
import KubeAPI

/// Aggregated discovery (`apidiscovery.k8s.io`): every group, version and resource in one
/// answer to `/api` and one to `/apis`, which kubectl 1.27 and later ask for first (v2beta1
/// until 1.29, then v2) instead of one request per group-version.
enum Discovery {
    static let group = "apidiscovery.k8s.io"

    /// The version of `APIGroupDiscoveryList` the `Accept` header asks for first, if any.
    static func aggregatedVersion(_ accept: String?) -> String? {
        guard let accept else { return nil }
        for range in accept.split(separator: ",") {
            var params: [String: String] = [:]
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.first == "application/json" else { continue }
            for p in parts.dropFirst() {
                let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
                if kv.count == 2 { params[kv[0]] = kv[1] }
            }
            if params["g"] == group, params["as"] == "APIGroupDiscoveryList", let v = params["v"], ["v2", "v2beta1"].contains(v) { return v }
            // A plain application/json before any aggregated type: the client prefers the plain answer.
            if params["g"] == nil { return nil }
        }
        return nil
    }

    static func aggregated(core: Bool, version: String, resources: [ResourceInfo]) -> APIResponse {
        var groups: [String] = []
        for r in resources where r.group.isEmpty == core && !groups.contains(r.group) { groups.append(r.group) }
        let items: [JSONValue] = groups.map { g in
            var versions: [String] = []
            for r in resources where r.group == g && !versions.contains(r.version) { versions.append(r.version) }
            versions.sort(by: Registry.kubeAwareOrder)
            var metadata: [String: JSONValue] = ["creationTimestamp": .null]
            if !g.isEmpty { metadata["name"] = .string(g) }
            return ["metadata": .object(metadata),
                    "versions": .array(versions.map { v in
                        ["version": .string(v), "freshness": "Current",
                         "resources": .array(resources.filter { $0.group == g && $0.version == v }.map(resource))]
                    })]
        }
        let list: JSONValue = ["kind": "APIGroupDiscoveryList", "apiVersion": .string("\(group)/\(version)"), "metadata": [:], "items": .array(items)]
        return APIResponse(code: 200, body: .bytes(list.serialized(), type: "application/json;g=\(group);v=\(version);as=APIGroupDiscoveryList"))
    }

    static func kindJSON(_ group: String, _ version: String, _ kind: String) -> JSONValue {
        ["group": .string(group), "version": .string(version), "kind": .string(kind)]
    }

    /// One `APIResourceDiscovery`: the resource, its kind, scope, names and verbs, and its subresources.
    static func resource(_ r: ResourceInfo) -> JSONValue {
        var o: [String: JSONValue] = [
            "resource": .string(r.resource), "responseKind": kindJSON(r.group, r.version, r.kind),
            "scope": r.namespaced ? "Namespaced" : "Cluster", "singularResource": .string(r.singular), "verbs": r.servedVerbs,
        ]
        if !r.shortNames.isEmpty { o["shortNames"] = .array(r.shortNames.map { .string($0) }) }
        if !r.categories.isEmpty { o["categories"] = .array(r.categories.map { .string($0) }) }
        if !r.subresources.isEmpty {
            o["subresources"] = .array(r.subresources.map { sub in
                let k = r.gvk(subresource: sub)
                let verbs: JSONValue = switch sub {
                case "binding", "eviction", "token": ["create"]
                case "log": ["get"]
                case "exec": ["create", "get"]
                default: ["get", "patch", "update"]
                }
                return ["subresource": .string(sub), "responseKind": kindJSON(k.group, k.version, k.kind), "verbs": verbs]
            })
        }
        return .object(o)
    }
}
