import KubeAPI

/// A node's heartbeat: its Lease in `kube-node-lease`, renewed as a kubelet renews it (the
/// holder the node, `renewTime` now), made when missing with the Node as its owner.
public enum NodeLease {
    /// Renews `node`'s Lease; `nodeUID` is asked only when the Lease has to be made. A failure
    /// is left to the next renewal.
    public static func renew(_ api: API, node: String, durationSeconds: Int = 40, nodeUID: () async -> String) async {
        let path = API.path("coordination.k8s.io/v1", "leases", namespace: "kube-node-lease", name: node)
        let now = LeaderElector.microTime()
        do {
            _ = try await api.mergePatch(path, ["spec": ["renewTime": .string(now), "holderIdentity": .string(node)]])
        } catch let e as APIStatusError where e.isNotFound {
            let uid = await nodeUID()
            _ = try? await api.create(API.path("coordination.k8s.io/v1", "leases", namespace: "kube-node-lease"),
                                      ["metadata": ["name": .string(node), "namespace": "kube-node-lease",
                                                    "ownerReferences": [["apiVersion": "v1", "kind": "Node", "name": .string(node), "uid": .string(uid)]]],
                                       "spec": ["holderIdentity": .string(node), "leaseDurationSeconds": .int(Int64(durationSeconds)),
                                                "renewTime": .string(now)]])
        } catch {}
    }
}
