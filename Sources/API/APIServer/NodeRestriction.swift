import APIAccess
import Foundation
import KubeAPI

/// The NodeRestriction admission plugin (`--enable-admission-plugins NodeRestriction`), as
/// upstream's for the requests a kubelet (`system:node:NAME`) makes: it writes only its own Node,
/// without changing its taints or setting labels kubelets may not set; it creates only mirror
/// pods, bound to itself, that use no Secret, ConfigMap, claim or service account; it updates the
/// status of and deletes only pods bound to itself; it touches only its own Lease. Everyone
/// else's requests pass untouched.
extension APIHandler {
    /// Labels a kubelet may set on its Node in the kubernetes.io and k8s.io domains (upstream's
    /// `kubeletapis.KubeletLabels()` and the allowed prefixes).
    static let kubeletLabels: Set<String> = [
        "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/arch", "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
    ]
    static let kubeletLabelPrefixes = ["kubelet.kubernetes.io/", "node.kubernetes.io/"]

    /// Whether a kubelet may not set label `key`.
    static func forbiddenNodeLabel(_ key: String) -> Bool {
        let domain = key.split(separator: "/", maxSplits: 1).count == 2 ? String(key.split(separator: "/")[0]) : ""
        if domain == "node-restriction.kubernetes.io" || domain.hasSuffix(".node-restriction.kubernetes.io") { return true }
        let restricted = ["kubernetes.io", "k8s.io"].contains { domain == $0 || domain.hasSuffix("." + $0) }
        guard restricted else { return false }
        return !kubeletLabels.contains(key) && !kubeletLabelPrefixes.contains { key.hasPrefix($0) }
    }

    static func forbidden(_ r: ResourceInfo, _ name: String, _ why: String) -> APIError {
        APIError(code: 403, reason: "Forbidden", message: "\(APIError.resourceLabel(r)) \"\(name)\" is forbidden: \(why)", details: APIError.details(r, name))
    }

    /// The plugin on a create or update (`old` set) of `o`.
    func restrictNode(_ o: JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) throws {
        guard admissionPlugins.contains("NodeRestriction"), r.group.isEmpty || r.group == "coordination.k8s.io",
              let node = NodeAuthorizer.node(AccessControl.currentUser) else { return }
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        switch (r.group, r.resource) {
        case ("", "nodes"):
            guard name == node else { throw Self.forbidden(r, name, "node \"\(node)\" is not allowed to modify node \"\(name)\"") }
            let labels = (o[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
            let before = (old?[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
            let changed = Set(labels.keys.filter { labels[$0] != before[$0] }).union(before.keys.filter { labels[$0] == nil })
            let refused = changed.filter(Self.forbiddenNodeLabel).sorted()
            if let old {
                if o[path: ["spec", "taints"]] != old[path: ["spec", "taints"]] {
                    throw Self.forbidden(r, name, "node \"\(node)\" is not allowed to modify taints")
                }
                if !refused.isEmpty { throw Self.forbidden(r, name, "is not allowed to modify labels: \(refused.joined(separator: ", "))") }
            } else if !refused.isEmpty {
                throw Self.forbidden(r, name, "node \"\(node)\" is not allowed to set the following labels: \(refused.joined(separator: ", "))")
            }
        case ("", "pods"):
            let bound = o[path: ["spec", "nodeName"]]?.string ?? ""
            if old == nil {
                guard o[path: ["metadata", "annotations", "kubernetes.io/config.mirror"]] != nil else {
                    throw Self.forbidden(r, name, "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"\(node)\" can only create mirror pods")
                }
                guard bound == node else { throw Self.forbidden(r, name, "node \"\(node)\" can only create pods with spec.nodeName set to itself") }
                // Upstream's words per kind; a service account only when one is named.
                let spec = o["spec"] ?? [:]
                let refs = NodeGraph.references(spec).filter { !$0.hasPrefix("serviceaccount/") }
                let what = ["secret": "secrets", "configmap": "configmaps", "pvc": "persistentvolumeclaims"]
                if let used = refs.sorted().first.map({ String($0.split(separator: "/")[0]) }) {
                    throw Self.forbidden(r, name, "node \"\(node)\" can not create pods that reference \(what[used] ?? used)")
                }
                if !(spec["serviceAccountName"]?.string ?? "").isEmpty {
                    throw Self.forbidden(r, name, "node \"\(node)\" can not create pods that reference a service account")
                }
            } else {
                let was = old?[path: ["spec", "nodeName"]]?.string ?? ""
                guard was == node else { throw Self.forbidden(r, name, "node \"\(node)\" can only update pod status for pods with spec.nodeName set to itself") }
            }
        case ("coordination.k8s.io", "leases"):
            guard o[path: ["metadata", "namespace"]]?.string == "kube-node-lease", name == node else {
                throw Self.forbidden(r, name, "can only access node lease with the same name as the requesting node")
            }
        default:
            break
        }
    }

    /// The plugin on a delete: a kubelet deletes only pods bound to itself (and its own Node and Lease).
    func restrictNodeDelete(_ r: ResourceInfo, namespace: String?, name: String) async throws {
        guard admissionPlugins.contains("NodeRestriction"), let node = NodeAuthorizer.node(AccessControl.currentUser) else { return }
        switch (r.group, r.resource) {
        case ("", "pods"):
            guard let pod = try? await get(r, namespace: namespace, name: name, subresource: nil) else { return }
            if pod[path: ["spec", "nodeName"]]?.string != node {
                throw Self.forbidden(r, name, "node \"\(node)\" can only delete pods with spec.nodeName set to itself")
            }
        case ("", "nodes"):
            if name != node { throw Self.forbidden(r, name, "node \"\(node)\" is not allowed to modify node \"\(name)\"") }
        default:
            break
        }
    }
}
