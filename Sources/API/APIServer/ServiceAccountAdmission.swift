import Foundation
import KubeAPI

/// The ServiceAccount admission plugin, as upstream's: a new Pod runs as `default` unless it
/// names its service account, which must exist; unless the pod or the account turns
/// `automountServiceAccountToken` off, every container gets the account's credentials at
/// `/var/run/secrets/kubernetes.io/serviceaccount` through a projected volume
/// `kube-api-access-XXXXX`: a token bound to the pod (which the kubelet asks for and renews),
/// the cluster's CA (`kube-root-ca.crt`) and the namespace. Mirror pods are left alone.
extension APIHandler {
    static let serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

    func admitServiceAccount(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) async throws {
        guard admissionPlugins.contains("ServiceAccount"), r.group.isEmpty, r.resource == "pods", old == nil, subresource == nil,
              o[path: ["metadata", "annotations", "kubernetes.io/config.mirror"]] == nil else { return }
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        let namespace = o[path: ["metadata", "namespace"]]?.string ?? ""
        var account = o[path: ["spec", "serviceAccountName"]]?.string ?? ""
        if account.isEmpty { account = o[path: ["spec", "serviceAccount"]]?.string ?? "" }
        if account.isEmpty { account = "default" }
        o[path: ["spec", "serviceAccountName"]] = .string(account)
        o[path: ["spec", "serviceAccount"]] = .string(account)
        let accounts = Resources.all.first { $0.group.isEmpty && $0.resource == "serviceaccounts" }!
        // The account of a namespace made a moment ago may still be on its way from the
        // controller manager: looked for a little while before the pod is refused.
        var found: JSONValue?
        for attempt in 0..<20 {
            if let kv = try await store.get(accounts.key(namespace: namespace, name: account)) { found = try? JSONValue.parse(kv.value); break }
            if attempt < 19 { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard let sa = found else {
            throw Self.forbidden(Resources.all.first { $0.group.isEmpty && $0.resource == "pods" }!, name,
                                 "error looking up service account \(namespace)/\(account): serviceaccount \"\(account)\" not found")
        }
        let mount = o[path: ["spec", "automountServiceAccountToken"]]?.bool ?? sa["automountServiceAccountToken"]?.bool ?? true
        guard mount else { return }
        var spec = o["spec"]?.object ?? [:]
        let containers = ["initContainers", "containers"].flatMap { spec[$0]?.array ?? [] }
        // A pod that mounts something there itself keeps it.
        if containers.contains(where: { c in (c["volumeMounts"]?.array ?? []).contains { $0["mountPath"]?.string == Self.serviceAccountMountPath } }) { return }
        let taken = Set((spec["volumes"]?.array ?? []).compactMap { $0["name"]?.string })
        var volume = "kube-api-access-" + Admission.randomSuffix()
        while taken.contains(volume) { volume = "kube-api-access-" + Admission.randomSuffix() }
        spec["volumes"] = .array((spec["volumes"]?.array ?? []) + [[
            "name": .string(volume),
            "projected": ["defaultMode": 420, "sources": [
                ["serviceAccountToken": ["expirationSeconds": 3607, "path": "token"]],
                ["configMap": ["name": "kube-root-ca.crt", "items": [["key": "ca.crt", "path": "ca.crt"]]]],
                ["downwardAPI": ["items": [["path": "namespace", "fieldRef": ["apiVersion": "v1", "fieldPath": "metadata.namespace"]]]]],
            ]],
        ]])
        for field in ["initContainers", "containers"] {
            guard var list = spec[field]?.array else { continue }
            for i in list.indices {
                list[i]["volumeMounts"] = .array((list[i]["volumeMounts"]?.array ?? []) + [
                    ["name": .string(volume), "readOnly": true, "mountPath": .string(Self.serviceAccountMountPath)],
                ])
            }
            spec[field] = .array(list)
        }
        o["spec"] = .object(spec)
    }

    static let serviceAccountTokenType = "kubernetes.io/service-account-token"

    /// A new Secret of type `kubernetes.io/service-account-token` (annotated with
    /// `kubernetes.io/service-account.name`) gets what upstream's token controller writes into it:
    /// the account's uid as an annotation, a legacy token for the account (`token`), the
    /// namespace and the cluster's CA (`ca.crt`, from the namespace's `kube-root-ca.crt`). Done
    /// here, where the signing key is, as the Secret is created (upstream's controller does it a
    /// moment later). The account must exist.
    func admitServiceAccountTokenSecret(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo) async throws {
        guard r.group.isEmpty, r.resource == "secrets", old == nil, o["type"]?.string == Self.serviceAccountTokenType else { return }
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        let namespace = o[path: ["metadata", "namespace"]]?.string ?? ""
        guard let account = o[path: ["metadata", "annotations", "kubernetes.io/service-account.name"]]?.string, !account.isEmpty else {
            throw APIError.invalid(r, name, [FieldError("metadata.annotations[kubernetes.io/service-account.name]", "Required value")])
        }
        let accounts = Resources.all.first { $0.group.isEmpty && $0.resource == "serviceaccounts" }!
        guard let kv = try await store.get(accounts.key(namespace: namespace, name: account)), let sa = try? JSONValue.parse(kv.value),
              let uid = sa[path: ["metadata", "uid"]]?.string else {
            throw Self.forbidden(r, name, "serviceaccount \"\(account)\" not found")
        }
        if let given = o[path: ["metadata", "annotations", "kubernetes.io/service-account.uid"]]?.string, !given.isEmpty, given != uid {
            throw Self.forbidden(r, name, "the service account's uid is \(uid), not \(given)")
        }
        o[path: ["metadata", "annotations", "kubernetes.io/service-account.uid"]] = .string(uid)
        let token = try serviceAccountTokens.issueLegacy(namespace: namespace, serviceAccount: account, uid: uid, secretName: name)
        var data = o["data"]?.object ?? [:]
        data["token"] = .string(Data(token.utf8).base64EncodedString())
        data["namespace"] = .string(Data(namespace.utf8).base64EncodedString())
        let configMaps = Resources.all.first { $0.group.isEmpty && $0.resource == "configmaps" }!
        if let cm = try await store.get(configMaps.key(namespace: namespace, name: "kube-root-ca.crt")),
           let ca = (try? JSONValue.parse(cm.value))?[path: ["data", "ca.crt"]]?.string {
            data["ca.crt"] = .string(Data(ca.utf8).base64EncodedString())
        }
        o["data"] = .object(data)
    }
}
