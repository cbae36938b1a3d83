import Foundation
import KubeAPI
import APIAccess

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

extension APIHandler {
    /// kubeadm's `cluster-info` ConfigMap in `kube-public`: a kubeconfig with the cluster alone
    /// (the server's address and its CA), which anyone may read (the Role and RoleBinding
    /// `kubeadm:bootstrap-signer-clusterinfo` grant `system:anonymous` that one object). A
    /// joining node reads it before it trusts the server, checks the CA against the hash it was
    /// given and the `jws-kubeconfig-TOKENID` signature the bootstrap signer adds with its token.
    public func publishClusterInfo(server: String, caPEM: String) async throws {
        let kubeconfig = """
            apiVersion: v1
            clusters:
            - cluster:
                certificate-authority-data: \(Data(caPEM.utf8).base64EncodedString())
                server: \(server)
              name: ""
            contexts: null
            current-context: ""
            kind: Config
            preferences: {}
            users: null

            """
        let name = "kubeadm:bootstrap-signer-clusterinfo"
        let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public"
        let objects: [(String, JSONValue)] = [
            ("\(rbac)/roles", ["metadata": ["name": .string(name), "namespace": "kube-public"],
                               "rules": [["verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"]]]]),
            ("\(rbac)/rolebindings", ["metadata": ["name": .string(name), "namespace": "kube-public"],
                                      "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": .string(name)],
                                      "subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": .string(UserInfo.anonymousName)]]]),
        ]
        for (path, body) in objects {
            let r = await handle(APIRequest(method: "POST", path: path, body: body.serialized(), userAgent: "kube-apiserver"))
            guard r.code == 201 || r.code == 409 else { throw APIError.internal("creating \(path)/\(name): \(r.json?.text() ?? "")") }
        }
        let path = "/api/v1/namespaces/kube-public/configmaps"
        let current = await handle(APIRequest(method: "GET", path: path + "/cluster-info", userAgent: "kube-apiserver"))
        if current.code == 200, var o = current.json {
            // The address or CA changed: the new kubeconfig, and the signatures made again.
            guard o[path: ["data", "kubeconfig"]]?.string != kubeconfig else { return }
            o["data"] = ["kubeconfig": .string(kubeconfig)]
            let r = await handle(APIRequest(method: "PUT", path: path + "/cluster-info", body: o.serialized(), userAgent: "kube-apiserver"))
            guard r.code == 200 else { throw APIError.internal("updating cluster-info: \(r.json?.text() ?? "")") }
        } else {
            let body: JSONValue = ["metadata": ["name": "cluster-info", "namespace": "kube-public"], "data": ["kubeconfig": .string(kubeconfig)]]
            let r = await handle(APIRequest(method: "POST", path: path, body: body.serialized(), userAgent: "kube-apiserver"))
            guard r.code == 201 || r.code == 409 else { throw APIError.internal("creating cluster-info: \(r.json?.text() ?? "")") }
        }
    }
}
