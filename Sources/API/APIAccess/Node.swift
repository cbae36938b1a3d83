import KubeAPI
import Synchronization

/// What each node's pods use, as upstream's node authorizer graph holds it: a pod bound to a node
/// relates the node to the pod's Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccount.
/// Fed with every pod (as the server's watch sees them); asked whether an object is related.
public final class NodeGraph: Sendable {
    struct Refs: Sendable, Equatable {
        var node: String
        var namespace: String
        var objects: Set<String>     // "kind/name": secret/…, configmap/…, pvc/…, serviceaccount/…
    }
    struct State: Sendable {
        var pods: [String: Refs] = [:]                 // "namespace/name" → what it uses
        var counts: [String: Int] = [:]                // "node|namespace|kind/name" → pods using it
    }
    let state = Mutex(State())

    public init() {}

    /// The objects a pod spec uses, as `kind/name`.
    public static func references(_ spec: JSONValue) -> Set<String> {
        var out = Set<String>()
        out.insert("serviceaccount/" + (spec["serviceAccountName"]?.string ?? spec["serviceAccount"]?.string ?? "default"))
        for s in spec["imagePullSecrets"]?.array ?? [] { if let n = s["name"]?.string { out.insert("secret/" + n) } }
        for v in spec["volumes"]?.array ?? [] {
            if let n = v[path: ["secret", "secretName"]]?.string { out.insert("secret/" + n) }
            if let n = v[path: ["configMap", "name"]]?.string { out.insert("configmap/" + n) }
            if let n = v[path: ["persistentVolumeClaim", "claimName"]]?.string { out.insert("pvc/" + n) }
            for src in v[path: ["projected", "sources"]]?.array ?? [] {
                if let n = src[path: ["secret", "name"]]?.string { out.insert("secret/" + n) }
                if let n = src[path: ["configMap", "name"]]?.string { out.insert("configmap/" + n) }
            }
        }
        for key in ["initContainers", "containers", "ephemeralContainers"] {
            for c in spec[key]?.array ?? [] {
                for e in c["env"]?.array ?? [] {
                    if let n = e[path: ["valueFrom", "secretKeyRef", "name"]]?.string { out.insert("secret/" + n) }
                    if let n = e[path: ["valueFrom", "configMapKeyRef", "name"]]?.string { out.insert("configmap/" + n) }
                }
                for e in c["envFrom"]?.array ?? [] {
                    if let n = e[path: ["secretRef", "name"]]?.string { out.insert("secret/" + n) }
                    if let n = e[path: ["configMapRef", "name"]]?.string { out.insert("configmap/" + n) }
                }
            }
        }
        return out
    }

    /// A pod as stored now (one not bound to a node relates to none).
    public func set(pod: JSONValue) {
        let ns = pod[path: ["metadata", "namespace"]]?.string ?? "", name = pod[path: ["metadata", "name"]]?.string ?? ""
        let node = pod[path: ["spec", "nodeName"]]?.string ?? ""
        let refs = node.isEmpty ? nil : Refs(node: node, namespace: ns, objects: Self.references(pod["spec"] ?? [:]))
        state.withLock { s in Self.replace(&s, key: "\(ns)/\(name)", with: refs) }
    }

    public func remove(namespace: String, name: String) {
        state.withLock { s in Self.replace(&s, key: "\(namespace)/\(name)", with: nil) }
    }

    /// Every pod, replacing what was known.
    public func replaceAll(pods: [JSONValue]) {
        state.withLock { $0 = State() }
        for p in pods { set(pod: p) }
    }

    static func replace(_ s: inout State, key: String, with refs: Refs?) {
        if let old = s.pods[key] {
            for o in old.objects.union(["pod/" + (key.split(separator: "/").last.map(String.init) ?? "")]) {
                let k = "\(old.node)|\(old.namespace)|\(o)"
                s.counts[k, default: 0] -= 1
                if s.counts[k] == 0 { s.counts[k] = nil }
            }
        }
        s.pods[key] = refs
        if let refs {
            for o in refs.objects.union(["pod/" + (key.split(separator: "/").last.map(String.init) ?? "")]) {
                s.counts["\(refs.node)|\(refs.namespace)|\(o)", default: 0] += 1
            }
        }
    }

    /// Whether a pod bound to `node` uses `kind/name` in `namespace` (kind: secret, configmap,
    /// pvc, serviceaccount, pod).
    public func related(node: String, kind: String, namespace: String, name: String) -> Bool {
        state.withLock { ($0.counts["\(node)|\(namespace)|\(kind)/\(name)"] ?? 0) > 0 }
    }

    public var podCount: Int { state.withLock { $0.pods.count } }
}

/// `--authorization-mode=Node`: a kubelet (`system:node:NAME` in `system:nodes`) reads only its
/// own Node, the pods bound to it (a list or watch must select `spec.nodeName=NAME`), and the
/// Secrets, ConfigMaps and PersistentVolumeClaims its pods use, makes tokens only for their
/// service accounts, and touches only its own Lease; anything else it may do is the node rules
/// (the `system:node` role's). Others' requests get no opinion. Upstream's words for refusals.
public struct NodeAuthorizer: Authorizer {
    public let graph: NodeGraph
    let nodeRules: [PolicyRule]

    public init(graph: NodeGraph) {
        self.graph = graph
        nodeRules = (DefaultPolicy.clusterRoles.first { $0[path: ["metadata", "name"]] == "system:node" }?["rules"]?.array ?? []).map(PolicyRule.init)
    }

    public static let namePrefix = "system:node:"

    /// The node a user is, if it is one.
    public static func node(_ u: UserInfo) -> String? {
        guard u.groups.contains(UserInfo.nodesGroup), u.name.hasPrefix(namePrefix) else { return nil }
        let n = String(u.name.dropFirst(namePrefix.count))
        return n.isEmpty ? nil : n
    }

    public func authorize(_ a: RequestAttributes) -> Decision {
        guard let node = Self.node(a.user) else { return .noOpinion("") }
        if a.isResourceRequest {
            switch (a.apiGroup, a.resource) {
            case ("", "secrets"): return readNamespaced(node, "secret", a)
            case ("", "configmaps"): return readNamespaced(node, "configmap", a)
            case ("", "persistentvolumeclaims"):
                guard a.verb == "get", a.subresource.isEmpty else { return .noOpinion("can only get individual resources of this type") }
                return related(node, "pvc", a)
            case ("", "serviceaccounts"):
                guard a.verb == "create", !a.name.isEmpty else { return .noOpinion("can only create tokens for individual service accounts") }
                guard a.subresource == "token" else { return .noOpinion("can only create token subresource of serviceaccount") }
                return related(node, "serviceaccount", a)
            // Upstream's AuthorizeNodeWithSelectors (on by default since 1.32): a kubelet reads
            // only its own Node, and only the pods bound to it. A subresource (nodes/proxy,
            // nodes/log, … on the kubelet's API) goes to the static rules, which give none.
            case ("", "nodes"):
                guard a.subresource.isEmpty, ["get", "list", "watch"].contains(a.verb) else { break }
                if a.name == node { return .allow("") }
                if a.name.isEmpty, a.verb != "get", RequestAttributes.requiredValue("metadata.name", in: a.fieldSelector) == node { return .allow("") }
                if a.name.isEmpty { return .noOpinion("node '\(node)' cannot read all nodes, only its own Node object") }
                return .noOpinion("node '\(node)' cannot read '\(a.name)', only its own Node object")
            case ("", "pods"):
                switch a.verb {
                case "get":
                    guard a.subresource.isEmpty else { return .noOpinion("can only get individual resources of this type") }
                    return related(node, "pod", a)
                case "list", "watch":
                    if RequestAttributes.requiredValue("spec.nodeName", in: a.fieldSelector) == node { return .allow("") }
                    return .noOpinion("can only list/watch pods with spec.nodeName field selector")
                default: break
                }
            case ("coordination.k8s.io", "leases"):
                guard ["get", "create", "update", "patch", "delete"].contains(a.verb) else {
                    return .noOpinion("can only get, create, update, patch, or delete a node lease")
                }
                guard a.namespace == "kube-node-lease" else { return .noOpinion("can only access leases in the \"kube-node-lease\" system namespace") }
                // The name is unknown on a create; NodeRestriction checks it there.
                guard a.verb == "create" || a.name == node else { return .noOpinion("can only access node lease with the same name as the requesting node") }
                return .allow("")
            default: break
            }
        }
        return nodeRules.contains { $0.allows(a) } ? .allow("") : .noOpinion("")
    }

    func readNamespaced(_ node: String, _ kind: String, _ a: RequestAttributes) -> Decision {
        guard ["get", "list", "watch"].contains(a.verb) else { return .noOpinion("can only read resources of this type") }
        guard a.subresource.isEmpty else { return .noOpinion("cannot read subresource") }
        guard !a.namespace.isEmpty else { return .noOpinion("can only read namespaced object of this type") }
        return related(node, kind, a)
    }

    func related(_ node: String, _ kind: String, _ a: RequestAttributes) -> Decision {
        guard !a.name.isEmpty else { return .noOpinion("No Object name found") }
        return graph.related(node: node, kind: kind, namespace: a.namespace, name: a.name)
            ? .allow("") : .noOpinion("no relationship found between node '\(node)' and this object")
    }
}
