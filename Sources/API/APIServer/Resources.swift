import Foundation
import KubeAPI
import APISchema

/// One served resource, declared once: its group, version, names, scope and subresources (what
/// discovery, routing, the OpenAPI documents and the store's keys come from), its schema (the
/// OpenAPI definition of its kind, found by group, version and kind), and its strategy
/// (defaulting, validation, table columns, generation).
public struct ResourceInfo: Sendable, Hashable {
    /// "" for the core group.
    public var group: String
    public var version: String
    /// The plural, lower-case name in paths (`services`).
    public var resource: String
    public var singular: String
    public var kind: String
    public var namespaced: Bool
    public var shortNames: [String]
    public var categories: [String]
    /// Subresources served (`status`, `scale`, `binding`).
    public var subresources: [String]
    /// What a CustomResourceDefinition says of a custom resource (nil for a built-in one).
    public var custom: CustomInfo?
    /// How its objects are defaulted, validated beyond their schema, printed, and versioned.
    public var strategy: any ResourceStrategy

    /// A resource is itself: the same group, version and resource, declared by the same definition.
    public static func == (a: ResourceInfo, b: ResourceInfo) -> Bool {
        a.group == b.group && a.version == b.version && a.resource == b.resource && a.custom == b.custom
    }

    public func hash(into h: inout Hasher) {
        h.combine(group)
        h.combine(version)
        h.combine(resource)
    }

    public init(group: String, version: String, resource: String, singular: String, kind: String, namespaced: Bool,
                shortNames: [String], categories: [String], subresources: [String], custom: CustomInfo? = nil,
                strategy: any ResourceStrategy = GenericStrategy()) {
        self.group = group
        self.version = version
        self.resource = resource
        self.singular = singular
        self.kind = kind
        self.namespaced = namespaced
        self.shortNames = shortNames
        self.categories = categories
        self.subresources = subresources
        self.custom = custom
        self.strategy = custom.map { CustomStrategy(info: $0) } ?? strategy
    }

    public var groupVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    /// The kind as errors name it: `CronTab.stable.example.com` for a custom resource.
    public var qualifiedKind: String { custom == nil || group.isEmpty ? kind : "\(kind).\(group)" }
    public var gvk: GroupVersionKind { GroupVersionKind(group: group, version: version, kind: kind) }

    /// The kind a subresource's body has (`Scale` for `scale`, `Binding` for `binding`).
    public func gvk(subresource: String?) -> GroupVersionKind {
        switch subresource {
        case "scale": GroupVersionKind(group: "autoscaling", version: "v1", kind: "Scale")
        case "binding": GroupVersionKind(group: "", version: "v1", kind: "Binding")
        case "eviction": GroupVersionKind(group: "policy", version: "v1", kind: "Eviction")
        case "token": GroupVersionKind(group: "authentication.k8s.io", version: "v1", kind: "TokenRequest")
        case "exec": GroupVersionKind(group: "", version: "v1", kind: "PodExecOptions")
        default: gvk
        }
    }
    /// Where objects of this resource live in the store.
    public var storePrefix: String {
        let (g, res) = strategy.storedAs ?? (group, resource)
        return "/registry/\(g.isEmpty ? "core" : g)/\(res)/"
    }

    /// A stored value as this resource serves it.
    public func decode(_ stored: Data) throws -> JSONValue {
        var o = try JSONValue.parse(stored)
        if strategy.storedAs != nil { strategy.fromStorage(&o) }
        return o
    }

    /// An object as this resource serves it, as the store keeps it.
    public func encode(_ o: JSONValue) -> Data {
        guard strategy.storedAs != nil else { return o.serialized() }
        var s = o
        strategy.toStorage(&s)
        return s.serialized()
    }

    public func key(namespace: String?, name: String) -> String {
        storePrefix + (namespaced ? "\(namespace ?? "")/" : "") + name
    }

    static let verbs: JSONValue = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    /// What discovery lists for it.
    var servedVerbs: JSONValue { strategy.verbs.map { .array($0.map { .string($0) }) } ?? Self.verbs }

    /// The `APIResourceList` entries of this resource and its subresources.
    var discovery: [JSONValue] {
        var main: [String: JSONValue] = [
            "name": .string(resource), "singularName": .string(singular), "namespaced": .bool(namespaced),
            "kind": .string(kind), "verbs": servedVerbs,
        ]
        if !shortNames.isEmpty { main["shortNames"] = .array(shortNames.map { .string($0) }) }
        if !categories.isEmpty { main["categories"] = .array(categories.map { .string($0) }) }
        var out: [JSONValue] = [.object(main)]
        for sub in subresources {
            let (kind, verbs, group, version): (String, JSONValue, String?, String?) = switch sub {
            case "scale": ("Scale", ["get", "patch", "update"], "autoscaling", "v1")
            case "binding": ("Binding", ["create"], nil, nil)
            case "eviction": ("Eviction", ["create"], "policy", "v1")
            case "token": ("TokenRequest", ["create"], "authentication.k8s.io", "v1")
            case "log": (self.kind, ["get"], nil, nil)
            case "exec": ("PodExecOptions", ["create", "get"], nil, nil)
            case "finalize": (self.kind, ["update"], nil, nil)
            default: (self.kind, ["get", "patch", "update"], nil, nil)
            }
            var e: [String: JSONValue] = ["name": .string("\(resource)/\(sub)"), "singularName": "", "namespaced": .bool(namespaced),
                                          "kind": .string(kind), "verbs": verbs]
            if let group { e["group"] = .string(group) }
            if let version { e["version"] = .string(version) }
            out.append(.object(e))
        }
        return out
    }
}

/// What a CustomResourceDefinition says of one served version of its resource.
public struct CustomInfo: Sendable, Hashable {
    /// The definition's name (`crontabs.stable.example.com`).
    public var definition: String
    public var columns: [PrinterColumn]
    public var scale: ScalePaths?
    /// The OpenAPI definition of this version's kind.
    public var schemaName: String

    public struct PrinterColumn: Sendable, Hashable {
        public var name: String
        public var type: String
        public var format: String
        public var description: String
        public var priority: Int
        public var jsonPath: String
    }

    /// Where the scale subresource finds replicas and the selector.
    public struct ScalePaths: Sendable, Hashable {
        public var specReplicas: String
        public var statusReplicas: String
        public var labelSelector: String?
    }
}

/// Every built-in resource the server serves (custom ones come and go with their definitions:
/// see `Registry`).
public enum Resources {
    static func core(_ resource: String, _ singular: String, _ kind: String, namespaced: Bool = true, short: [String] = [],
                     categories: [String] = [], sub: [String] = [], _ strategy: any ResourceStrategy = GenericStrategy()) -> ResourceInfo {
        ResourceInfo(group: "", version: "v1", resource: resource, singular: singular, kind: kind, namespaced: namespaced,
                     shortNames: short, categories: categories, subresources: sub, strategy: strategy)
    }

    static func rbac(_ resource: String, _ kind: String, namespaced: Bool, binding: Bool) -> ResourceInfo {
        ResourceInfo(group: "rbac.authorization.k8s.io", version: "v1", resource: resource, singular: kind.lowercased(), kind: kind,
                     namespaced: namespaced, shortNames: [], categories: [], subresources: [], strategy: RBACStrategy(binding: binding))
    }

    /// A review: created and answered, never stored.
    static func review(_ group: String, _ resource: String, _ kind: String, namespaced: Bool = false, version: String = "v1") -> ResourceInfo {
        ResourceInfo(group: group, version: version, resource: resource, singular: kind.lowercased(), kind: kind,
                     namespaced: namespaced, shortNames: [], categories: [], subresources: [], strategy: ReviewStrategy())
    }

    public static let all: [ResourceInfo] = [
        core("namespaces", "namespace", "Namespace", namespaced: false, short: ["ns"], sub: ["status", "finalize"], NamespaceStrategy()),
        core("services", "service", "Service", short: ["svc"], categories: ["all"], sub: ["status"], ServiceStrategy()),
        core("endpoints", "endpoints", "Endpoints", short: ["ep"], EndpointsStrategy()),
        core("pods", "pod", "Pod", short: ["po"], categories: ["all"], sub: ["status", "binding", "eviction", "log", "exec"], PodStrategy()),
        core("nodes", "node", "Node", namespaced: false, short: ["no"], sub: ["status"], NodeStrategy()),
        core("events", "event", "Event", short: ["ev"], EventStrategy()),
        core("configmaps", "configmap", "ConfigMap", short: ["cm"], ConfigMapStrategy()),
        core("secrets", "secret", "Secret", SecretStrategy()),
        core("serviceaccounts", "serviceaccount", "ServiceAccount", short: ["sa"], sub: ["token"], ServiceAccountStrategy()),
        ResourceInfo(group: "discovery.k8s.io", version: "v1", resource: "endpointslices", singular: "endpointslice",
                     kind: "EndpointSlice", namespaced: true, shortNames: [], categories: [], subresources: [], strategy: EndpointSliceStrategy()),
        ResourceInfo(group: "apps", version: "v1", resource: "deployments", singular: "deployment", kind: "Deployment",
                     namespaced: true, shortNames: ["deploy"], categories: ["all"], subresources: ["status", "scale"],
                     strategy: WorkloadStrategy(deployment: true)),
        ResourceInfo(group: "apps", version: "v1", resource: "replicasets", singular: "replicaset", kind: "ReplicaSet",
                     namespaced: true, shortNames: ["rs"], categories: ["all"], subresources: ["status", "scale"],
                     strategy: WorkloadStrategy(deployment: false)),
        core("replicationcontrollers", "replicationcontroller", "ReplicationController", short: ["rc"], categories: ["all"], sub: ["status", "scale"],
             ReplicationControllerStrategy()),
        core("limitranges", "limitrange", "LimitRange", short: ["limits"], LimitRangeStrategy()),
        core("resourcequotas", "resourcequota", "ResourceQuota", short: ["quota"], sub: ["status"], ResourceQuotaStrategy()),
        ResourceInfo(group: "apps", version: "v1", resource: "daemonsets", singular: "daemonset", kind: "DaemonSet",
                     namespaced: true, shortNames: ["ds"], categories: ["all"], subresources: ["status"], strategy: DaemonSetStrategy()),
        ResourceInfo(group: "apps", version: "v1", resource: "statefulsets", singular: "statefulset", kind: "StatefulSet",
                     namespaced: true, shortNames: ["sts"], categories: ["all"], subresources: ["status", "scale"], strategy: StatefulSetStrategy()),
        ResourceInfo(group: "batch", version: "v1", resource: "jobs", singular: "job", kind: "Job",
                     namespaced: true, shortNames: [], categories: ["all"], subresources: ["status"], strategy: JobStrategy()),
        ResourceInfo(group: "batch", version: "v1", resource: "cronjobs", singular: "cronjob", kind: "CronJob",
                     namespaced: true, shortNames: ["cj"], categories: ["all"], subresources: ["status"], strategy: CronJobStrategy()),
        ResourceInfo(group: "coordination.k8s.io", version: "v1", resource: "leases", singular: "lease", kind: "Lease",
                     namespaced: true, shortNames: [], categories: [], subresources: [], strategy: LeaseStrategy()),
        ResourceInfo(group: "events.k8s.io", version: "v1", resource: "events", singular: "event", kind: "Event",
                     namespaced: true, shortNames: ["ev"], categories: [], subresources: [], strategy: EventsV1Strategy()),
        ResourceInfo(group: "scheduling.k8s.io", version: "v1", resource: "priorityclasses", singular: "priorityclass", kind: "PriorityClass",
                     namespaced: false, shortNames: ["pc"], categories: [], subresources: [], strategy: PriorityClassStrategy()),
        ResourceInfo(group: "admissionregistration.k8s.io", version: "v1", resource: "mutatingwebhookconfigurations",
                     singular: "mutatingwebhookconfiguration", kind: "MutatingWebhookConfiguration", namespaced: false, shortNames: [],
                     categories: ["api-extensions"], subresources: [], strategy: WebhookConfigurationStrategy(mutating: true)),
        ResourceInfo(group: "admissionregistration.k8s.io", version: "v1", resource: "validatingwebhookconfigurations",
                     singular: "validatingwebhookconfiguration", kind: "ValidatingWebhookConfiguration", namespaced: false, shortNames: [],
                     categories: ["api-extensions"], subresources: [], strategy: WebhookConfigurationStrategy(mutating: false)),
        ResourceInfo(group: "networking.k8s.io", version: "v1", resource: "ingresses", singular: "ingress", kind: "Ingress",
                     namespaced: true, shortNames: ["ing"], categories: [], subresources: ["status"], strategy: IngressStrategy()),
        ResourceInfo(group: "networking.k8s.io", version: "v1", resource: "ingressclasses", singular: "ingressclass", kind: "IngressClass",
                     namespaced: false, shortNames: [], categories: [], subresources: [], strategy: IngressClassStrategy()),
        ResourceInfo(group: "networking.k8s.io", version: "v1", resource: "servicecidrs", singular: "servicecidr", kind: "ServiceCIDR",
                     namespaced: false, shortNames: [], categories: [], subresources: ["status"], strategy: ServiceCIDRStrategy()),
        ResourceInfo(group: "policy", version: "v1", resource: "poddisruptionbudgets", singular: "poddisruptionbudget", kind: "PodDisruptionBudget",
                     namespaced: true, shortNames: ["pdb"], categories: [], subresources: ["status"], strategy: PodDisruptionBudgetStrategy()),
        ResourceInfo(group: "certificates.k8s.io", version: "v1", resource: "certificatesigningrequests", singular: "certificatesigningrequest",
                     kind: "CertificateSigningRequest", namespaced: false, shortNames: ["csr"], categories: [], subresources: ["status", "approval"],
                     strategy: CertificateSigningRequestStrategy()),
        rbac("clusterroles", "ClusterRole", namespaced: false, binding: false),
        rbac("clusterrolebindings", "ClusterRoleBinding", namespaced: false, binding: true),
        rbac("roles", "Role", namespaced: true, binding: false),
        rbac("rolebindings", "RoleBinding", namespaced: true, binding: true),
        review("authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview"),
        review("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
        review("authorization.k8s.io", "localsubjectaccessreviews", "LocalSubjectAccessReview", namespaced: true),
        review("authorization.k8s.io", "selfsubjectrulesreviews", "SelfSubjectRulesReview"),
        review("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview"),
        // kubectl 1.27's `auth whoami` asks v1beta1 (1.26's v1alpha1), as the API was then.
        review("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview", version: "v1beta1"),
        review("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview", version: "v1alpha1"),
        review("authentication.k8s.io", "tokenreviews", "TokenReview"),
        ResourceInfo(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions", singular: "customresourcedefinition",
                     kind: "CustomResourceDefinition", namespaced: false, shortNames: ["crd", "crds"], categories: ["api-extensions"],
                     subresources: ["status"], strategy: DefinitionStrategy()),
    ]

    static let crd = all.last!

    /// The API groups besides the core one, each with its one version.
    public static var groups: [(group: String, version: String)] {
        var seen = Set<String>()
        return all.filter { !$0.group.isEmpty && seen.insert($0.group).inserted }.map { ($0.group, $0.version) }
    }

    public static func find(group: String, version: String, resource: String) -> ResourceInfo? {
        all.first { $0.group == group && $0.version == version && $0.resource == resource }
    }

    public static func find(kind: String, groupVersion: String) -> ResourceInfo? {
        all.first { $0.kind == kind && $0.groupVersion == groupVersion }
    }
}
