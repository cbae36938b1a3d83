import KubeAPI

/// The ClusterRoles and ClusterRoleBindings every cluster starts with, as upstream's
/// `bootstrappolicy` has them (kube-apiserver v1.33): the user-facing roles (`cluster-admin`,
/// `admin`, `edit`, `view`, aggregated from `system:aggregate-to-*`), discovery and the
/// public information, the self-reviews every user may make, and the components' roles.
/// The server creates the missing ones at start and brings those marked
/// `rbac.authorization.kubernetes.io/autoupdate: "true"` up to date.
public enum DefaultPolicy {
    static let read = ["get", "list", "watch"]
    static let write = ["create", "delete", "deletecollection", "patch", "update"]

    static func rule(_ verbs: [String], _ groups: [String], _ resources: [String], names: [String] = []) -> PolicyRule {
        PolicyRule(verbs: verbs, apiGroups: groups, resources: resources, resourceNames: names)
    }

    static func urls(_ verbs: [String], _ urls: [String]) -> PolicyRule { PolicyRule(verbs: verbs, nonResourceURLs: urls) }

    static func role(_ name: String, _ rules: [PolicyRule], labels: [String: String] = [:], aggregate: String? = nil, namespace: String? = nil) -> JSONValue {
        var l: [String: JSONValue] = ["kubernetes.io/bootstrapping": "rbac-defaults"]
        for (k, v) in labels { l[k] = .string(v) }
        var o: JSONValue = [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": namespace == nil ? "ClusterRole" : "Role",
            "metadata": ["name": .string(name), "labels": .object(l), "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"]],
            "rules": .array(rules.map(\.json)),
        ]
        if let namespace { o["metadata"]?["namespace"] = .string(namespace) }
        if let aggregate {
            o["aggregationRule"] = ["clusterRoleSelectors": [["matchLabels": .object(["rbac.authorization.k8s.io/aggregate-to-\(aggregate)": "true"])]]]
        }
        return o
    }

    static func binding(_ name: String, role: String? = nil, users: [String] = [], groups: [String] = []) -> JSONValue {
        let subjects: [JSONValue] = users.map { ["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": .string($0)] }
            + groups.map { ["apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": .string($0)] }
        var o: JSONValue = [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": ["name": .string(name), "labels": ["kubernetes.io/bootstrapping": "rbac-defaults"],
                         "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"]],
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(role ?? name)],
        ]
        if !subjects.isEmpty { o["subjects"] = .array(subjects) }
        return o
    }

    static let core = [""]

    public static let clusterRoles: [JSONValue] = controllerRoles.map { role("system:controller:" + $0.serviceAccount, $0.rules) } + [
        role("cluster-admin", [rule(["*"], ["*"], ["*"]), urls(["*"], ["*"])]),
        role("system:discovery", [urls(["get"], ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"])]),
        role("system:public-info-viewer", [urls(["get"], ["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        role("system:monitoring", [urls(["get"], ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"])]),
        role("system:basic-user", [rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                                   rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])]),
        role("admin", [], aggregate: "admin"),
        role("edit", [], labels: ["rbac.authorization.k8s.io/aggregate-to-admin": "true"], aggregate: "edit"),
        role("view", [], labels: ["rbac.authorization.k8s.io/aggregate-to-edit": "true"], aggregate: "view"),
        role("system:aggregate-to-admin", [
            rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
            rule(read + write, ["rbac.authorization.k8s.io"], ["rolebindings", "roles"]),
        ], labels: ["rbac.authorization.k8s.io/aggregate-to-admin": "true"]),
        role("system:aggregate-to-edit", [
            rule(read, core, ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
            rule(["impersonate"], core, ["serviceaccounts"]),
            rule(write, core, ["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
            rule(["create"], core, ["pods/eviction"]),
            rule(write, core, ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers", "replicationcontrollers/scale",
                               "secrets", "serviceaccounts", "services", "services/proxy"]),
            rule(["create"], core, ["serviceaccounts/token"]),
            rule(write, ["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale",
                                   "statefulsets", "statefulsets/scale"]),
            rule(write, ["autoscaling"], ["horizontalpodautoscalers"]),
            rule(write, ["batch"], ["cronjobs", "jobs"]),
            rule(write, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
            rule(write, ["policy"], ["poddisruptionbudgets"]),
            rule(write, ["discovery.k8s.io"], ["endpointslices"]),
        ], labels: ["rbac.authorization.k8s.io/aggregate-to-edit": "true"]),
        role("system:aggregate-to-view", [
            rule(read, core, ["pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/status",
                              "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "configmaps"]),
            rule(read, core, ["limitranges", "resourcequotas", "bindings", "events", "pods/status", "resourcequotas/status", "namespaces/status",
                              "replicationcontrollers/status", "pods/log"]),
            rule(read, core, ["namespaces"]),
            rule(read, ["discovery.k8s.io"], ["endpointslices"]),
            rule(read, ["apps"], ["controllerrevisions", "statefulsets", "statefulsets/scale", "statefulsets/status", "daemonsets", "daemonsets/status",
                                  "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status"]),
            rule(read, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
            rule(read, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
            rule(read, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
            rule(read, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
        ], labels: ["rbac.authorization.k8s.io/aggregate-to-view": "true"]),
        role("system:service-account-issuer-discovery", [urls(["get"], ["/.well-known/openid-configuration", "/.well-known/openid-configuration/",
                                                                         "/openid/v1/jwks", "/openid/v1/jwks/"])]),
        // Certificate signing requests: who may ask for a kubelet client certificate (bound by
        // kubeadm's bindings below), and who may approve which signer's requests (bound to
        // nobody, as upstream).
        role("system:node-bootstrapper", [rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"])]),
        role("system:certificates.k8s.io:certificatesigningrequests:nodeclient", [rule(["create"], ["certificates.k8s.io"], ["certificatesigningrequests/nodeclient"])]),
        role("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", [rule(["create"], ["certificates.k8s.io"], ["certificatesigningrequests/selfnodeclient"])]),
        role("system:certificates.k8s.io:legacy-unknown-approver", [rule(["approve"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/legacy-unknown"])]),
        role("system:certificates.k8s.io:kubelet-serving-approver", [rule(["approve"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/kubelet-serving"])]),
        role("system:certificates.k8s.io:kube-apiserver-client-approver", [rule(["approve"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/kube-apiserver-client"])]),
        role("system:certificates.k8s.io:kube-apiserver-client-kubelet-approver", [rule(["approve"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/kube-apiserver-client-kubelet"])]),
        // kubeadm's: bootstrap tokens may read Nodes (to see whether theirs exists).
        role("kubeadm:get-nodes", [rule(["get"], core, ["nodes"])]),
        // Full use of the kubelet's API (what the API server's kubelet client is given).
        role("system:kubelet-api-admin", [
            rule(read, core, ["nodes"]),
            rule(["proxy"], core, ["nodes"]),
            rule(["*"], core, ["nodes/proxy", "nodes/metrics", "nodes/spec", "nodes/stats", "nodes/log", "nodes/pods", "nodes/healthz", "nodes/configz"]),
        ]),
        role("system:node-proxier", [
            rule(["list", "watch"], core, ["endpoints", "services"]),
            rule(read, core, ["nodes"]),
            rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
            rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
        ]),
        role("system:kube-scheduler", [
            rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
            rule(["create"], ["coordination.k8s.io"], ["leases"]),
            rule(["get", "update"], ["coordination.k8s.io"], ["leases"], names: ["kube-scheduler"]),
            rule(["create"], core, ["endpoints"]),
            rule(["get", "update"], core, ["endpoints"], names: ["kube-scheduler"]),
            rule(read, core, ["nodes"]),
            rule(["delete", "get", "list", "watch"], core, ["pods"]),
            rule(["create"], core, ["bindings", "pods/binding"]),
            rule(["patch", "update"], core, ["pods/status"]),
            rule(read, core, ["replicationcontrollers", "services"]),
            rule(read, ["apps", "extensions"], ["replicasets"]),
            rule(read, ["apps"], ["statefulsets"]),
            rule(read, ["policy"], ["poddisruptionbudgets"]),
            rule(read, core, ["persistentvolumeclaims", "persistentvolumes"]),
            rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
            rule(read, ["storage.k8s.io"], ["csinodes"]),
            rule(read, core, ["namespaces"]),
            rule(read, ["storage.k8s.io"], ["csidrivers", "csistoragecapacities"]),
            rule(read, ["scheduling.k8s.io"], ["priorityclasses"]),
        ]),
        // Upstream's role is narrow: with `--use-service-account-credentials` each controller
        // writes as its own service account (the system:controller:* roles above). Without it
        // the controllers share the manager's identity, so this role also holds what they
        // read and write.
        role("system:kube-controller-manager", [
            rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
            rule(["create"], ["coordination.k8s.io"], ["leases"]),
            rule(["get", "update"], ["coordination.k8s.io"], ["leases"], names: ["kube-controller-manager"]),
            rule(read, ["*"], ["*"]),
            rule(write, core, ["pods", "pods/status", "pods/eviction", "nodes", "nodes/status", "endpoints", "services/status", "serviceaccounts",
                               "secrets", "configmaps", "namespaces", "namespaces/finalize", "namespaces/status", "resourcequotas/status",
                               "replicationcontrollers/status", "persistentvolumeclaims/status"]),
            rule(["create"], core, ["serviceaccounts/token"]),
            rule(write, ["apps"], ["replicasets", "replicasets/status", "deployments/status", "daemonsets/status", "statefulsets/status",
                                   "controllerrevisions"]),
            rule(write, ["batch"], ["jobs", "jobs/status", "cronjobs/status"]),
            rule(write, ["discovery.k8s.io"], ["endpointslices"]),
            rule(write, ["policy"], ["poddisruptionbudgets/status"]),
            rule(write, ["coordination.k8s.io"], ["leases"]),
            rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
            // The certificate controllers' (upstream's system:controller:certificate-controller)
            // and the bootstrap signer's and token cleaner's.
            rule(["delete"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
            rule(["update"], ["certificates.k8s.io"], ["certificatesigningrequests/status", "certificatesigningrequests/approval"]),
            rule(["approve"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/kube-apiserver-client-kubelet"]),
            rule(["sign"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/legacy-unknown", "kubernetes.io/kube-apiserver-client",
                                                                        "kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"]),
        ]),
        role("system:node", [
            rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews", "subjectaccessreviews"]),
            rule(read, core, ["services"]),
            rule(["create", "get", "list", "watch"], core, ["nodes"]),
            rule(["patch", "update"], core, ["nodes/status"]),
            rule(["patch", "update"], core, ["nodes"]),
            rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
            rule(read, core, ["pods"]),
            rule(["create", "delete"], core, ["pods"]),
            rule(["patch", "update"], core, ["pods/status"]),
            rule(["create"], core, ["pods/eviction"]),
            rule(["get"], core, ["configmaps", "secrets"]),
            rule(["get"], core, ["persistentvolumeclaims", "persistentvolumes"]),
            rule(["get"], core, ["endpoints"]),
            rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
            rule(["create", "delete", "get", "patch", "update"], ["coordination.k8s.io"], ["leases"]),
            rule(["create"], core, ["serviceaccounts/token"]),
            rule(read, ["discovery.k8s.io"], ["endpointslices"]),
        ]),
    ]

    // MARK: the controllers' own roles

    /// `system:controller:NAME`, bound to the service account `kube-system/NAME` a controller
    /// runs as with `--use-service-account-credentials`: upstream's rules (controller_policy.go),
    /// plus `patch` where upstream has only `update` and this project's controller writes with a
    /// merge patch (a status, the root CA's ConfigMap).
    static func eventsRule() -> PolicyRule { rule(["create", "update", "patch"], ["", "events.k8s.io"], ["events"]) }
    static let rw = ["get", "list", "watch", "create", "update", "patch", "delete"]

    public static let controllerRoles: [(serviceAccount: String, rules: [PolicyRule])] = [
        ("cronjob-controller", [
            rule(["get", "list", "watch", "update"], ["batch"], ["cronjobs"]),
            rule(rw, ["batch"], ["jobs"]),
            rule(["update", "patch"], ["batch"], ["cronjobs/status"]),
            rule(["update"], ["batch"], ["cronjobs/finalizers"]),
            rule(["list", "watch", "delete"], core, ["pods"]),
            eventsRule(),
        ]),
        ("daemon-set-controller", [
            rule(read, ["extensions", "apps"], ["daemonsets"]),
            rule(["update", "patch"], ["extensions", "apps"], ["daemonsets/status"]),
            rule(["update"], ["extensions", "apps"], ["daemonsets/finalizers"]),
            rule(["list", "watch"], core, ["nodes"]),
            rule(["list", "watch", "create", "delete", "patch"], core, ["pods"]),
            rule(["create"], core, ["pods/binding"]),
            rule(rw, ["apps"], ["controllerrevisions"]),
            eventsRule(),
        ]),
        ("deployment-controller", [
            rule(["get", "list", "watch", "update", "patch"], ["extensions", "apps"], ["deployments"]),
            rule(["update", "patch"], ["extensions", "apps"], ["deployments/status"]),
            rule(["update"], ["extensions", "apps"], ["deployments/finalizers"]),
            rule(rw, ["apps", "extensions"], ["replicasets"]),
            rule(["get", "list", "watch", "update"], core, ["pods"]),
            eventsRule(),
        ]),
        ("disruption-controller", [
            rule(read, ["extensions", "apps"], ["deployments"]),
            rule(read, ["apps", "extensions"], ["replicasets"]),
            rule(read, core, ["replicationcontrollers"]),
            rule(read, ["policy"], ["poddisruptionbudgets"]),
            rule(read, ["apps"], ["statefulsets"]),
            rule(["update", "patch"], ["policy"], ["poddisruptionbudgets/status"]),
            rule(["patch", "update"], core, ["pods/status"]),
            rule(["get"], ["*"], ["*/scale"]),
            eventsRule(),
        ]),
        ("endpoint-controller", [
            rule(read, core, ["services", "pods"]),
            rule(["get", "list", "watch", "create", "update", "delete"], core, ["endpoints"]),
            rule(["create"], core, ["endpoints/restricted"]),
            eventsRule(),
        ]),
        ("endpointslice-controller", [
            rule(read, core, ["services", "pods", "nodes"]),
            rule(["update"], core, ["services/finalizers"]),
            rule(["get", "list", "watch", "create", "update", "delete"], ["discovery.k8s.io"], ["endpointslices"]),
            eventsRule(),
        ]),
        ("generic-garbage-collector", [
            rule(["get", "list", "watch", "patch", "update", "delete"], ["*"], ["*"]),
            eventsRule(),
        ]),
        ("job-controller", [
            rule(["get", "list", "watch", "update", "patch"], ["batch"], ["jobs"]),
            rule(["update", "patch"], ["batch"], ["jobs/status"]),
            rule(["update"], ["batch"], ["jobs/finalizers"]),
            rule(["list", "watch", "create", "delete", "patch"], core, ["pods"]),
            eventsRule(),
        ]),
        ("namespace-controller", [
            rule(["get", "list", "watch", "delete"], core, ["namespaces"]),
            rule(["update", "patch"], core, ["namespaces/finalize", "namespaces/status"]),
            rule(["get", "list", "watch", "delete", "deletecollection"], ["*"], ["*"]),
        ]),
        ("node-controller", [
            rule(["get", "list", "watch", "update", "delete", "patch"], core, ["nodes"]),
            rule(["patch", "update"], core, ["nodes/status"]),
            rule(["patch", "update"], core, ["pods/status"]),
            rule(["list", "watch", "get", "delete"], core, ["pods"]),
            eventsRule(),
        ]),
        ("pod-garbage-collector", [
            rule(["list", "watch", "delete"], core, ["pods"]),
            rule(read, core, ["nodes"]),
            rule(["patch"], core, ["pods/status"]),
        ]),
        ("replicaset-controller", [
            rule(["get", "list", "watch", "update"], ["apps", "extensions"], ["replicasets"]),
            rule(["update", "patch"], ["apps", "extensions"], ["replicasets/status"]),
            rule(["update"], ["apps", "extensions"], ["replicasets/finalizers"]),
            rule(["list", "watch", "patch", "create", "delete"], core, ["pods"]),
            eventsRule(),
        ]),
        ("replication-controller", [
            rule(["get", "list", "watch", "update"], core, ["replicationcontrollers"]),
            rule(["update", "patch"], core, ["replicationcontrollers/status"]),
            rule(["update"], core, ["replicationcontrollers/finalizers"]),
            rule(["list", "watch", "patch", "create", "delete"], core, ["pods"]),
            eventsRule(),
        ]),
        ("resourcequota-controller", [
            rule(["list", "watch"], ["*"], ["*"]),
            rule(["update"], core, ["resourcequotas/status"]),
            eventsRule(),
        ]),
        ("service-account-controller", [
            rule(["create"], core, ["serviceaccounts"]),
            eventsRule(),
        ]),
        ("certificate-controller", [
            rule(["get", "list", "watch", "delete"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
            rule(["update"], ["certificates.k8s.io"], ["certificatesigningrequests/status", "certificatesigningrequests/approval"]),
            rule(["approve"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/kube-apiserver-client-kubelet"]),
            rule(["sign"], ["certificates.k8s.io"], ["signers"], names: ["kubernetes.io/legacy-unknown", "kubernetes.io/kube-apiserver-client",
                                                                        "kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"]),
            rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
            eventsRule(),
        ]),
        ("ttl-after-finished-controller", [
            rule(["get", "list", "watch", "delete"], ["batch"], ["jobs"]),
            eventsRule(),
        ]),
        ("root-ca-cert-publisher", [
            rule(["create", "update", "patch"], core, ["configmaps"]),
            eventsRule(),
        ]),
    ]

    /// The bootstrap signer's and the token cleaner's, which upstream scopes to a namespace.
    public static let controllerNamespaceRoles: [(namespace: String, serviceAccount: String, rules: [PolicyRule])] = [
        ("kube-public", "bootstrap-signer", [
            rule(read, core, ["configmaps"]),
            rule(["update"], core, ["configmaps"], names: ["cluster-info"]),
            eventsRule(),
        ]),
        ("kube-system", "bootstrap-signer", [rule(read, core, ["secrets"])]),
        ("kube-system", "token-cleaner", [
            rule(["delete", "get", "list", "watch"], core, ["secrets"]),
            eventsRule(),
        ]),
    ]

    static func serviceAccountBinding(_ name: String, serviceAccount: String, namespace: String? = nil) -> JSONValue {
        var o: JSONValue = [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": namespace == nil ? "ClusterRoleBinding" : "RoleBinding",
            "metadata": ["name": .string(name), "labels": ["kubernetes.io/bootstrapping": "rbac-defaults"],
                         "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"]],
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": namespace == nil ? "ClusterRole" : "Role", "name": .string(name)],
            "subjects": [["kind": "ServiceAccount", "name": .string(serviceAccount), "namespace": "kube-system"]],
        ]
        if let namespace { o["metadata"]?["namespace"] = .string(namespace) }
        return o
    }

    /// The namespaced roles and bindings (`namespace`, the object), created as the cluster ones.
    public static let roles: [(namespace: String, object: JSONValue)] = controllerNamespaceRoles.map {
        ($0.namespace, role("system:controller:" + $0.serviceAccount, $0.rules, namespace: $0.namespace))
    }
    public static let roleBindings: [(namespace: String, object: JSONValue)] = controllerNamespaceRoles.map {
        ($0.namespace, serviceAccountBinding("system:controller:" + $0.serviceAccount, serviceAccount: $0.serviceAccount, namespace: $0.namespace))
    }

    public static let clusterRoleBindings: [JSONValue] = controllerRoles.map {
        serviceAccountBinding("system:controller:" + $0.serviceAccount, serviceAccount: $0.serviceAccount)
    } + [
        binding("cluster-admin", groups: [UserInfo.privilegedGroup]),
        binding("system:discovery", groups: [UserInfo.allAuthenticated]),
        binding("system:basic-user", groups: [UserInfo.allAuthenticated]),
        binding("system:public-info-viewer", groups: [UserInfo.allAuthenticated, UserInfo.allUnauthenticated]),
        binding("system:monitoring", groups: ["system:monitoring"]),
        binding("system:service-account-issuer-discovery", groups: ["system:serviceaccounts"]),
        binding("system:node-proxier", users: ["system:kube-proxy"]),
        binding("system:kube-scheduler", users: ["system:kube-scheduler"]),
        binding("system:kube-controller-manager", users: ["system:kube-controller-manager"]),
        // Bound to nobody, as upstream: kubelets are authorized by the Node mode
        // (`--authorization-mode Node,RBAC`), which holds this role's rules and reads a node's
        // pods' Secrets and ConfigMaps only.
        binding("system:node"),
        // What `kubeadm init` binds for joining nodes, which this server does as it starts: a
        // bootstrap token of `switchyard token create` (group
        // system:bootstrappers:kubeadm:default-node-token) may ask for a kubelet client
        // certificate, which the approver then approves; a node may renew its own.
        binding("kubeadm:kubelet-bootstrap", role: "system:node-bootstrapper", groups: [bootstrapTokenGroup]),
        binding("kubeadm:get-nodes", groups: [bootstrapTokenGroup]),
        binding("kubeadm:node-autoapprove-bootstrap", role: "system:certificates.k8s.io:certificatesigningrequests:nodeclient", groups: [bootstrapTokenGroup]),
        binding("kubeadm:node-autoapprove-certificate-rotation", role: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                groups: [UserInfo.nodesGroup]),
    ]

    /// The group kubeadm's default bootstrap tokens carry (`auth-extra-groups`).
    public static let bootstrapTokenGroup = "system:bootstrappers:kubeadm:default-node-token"
}
