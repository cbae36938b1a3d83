import KubeAPI
import Synchronization

/// One rule of a Role or ClusterRole (rbac.authorization.k8s.io/v1 `PolicyRule`).
public struct PolicyRule: Sendable, Hashable {
    public var verbs: [String]
    public var apiGroups: [String]
    public var resources: [String]
    public var resourceNames: [String]
    public var nonResourceURLs: [String]

    public init(verbs: [String], apiGroups: [String] = [], resources: [String] = [], resourceNames: [String] = [], nonResourceURLs: [String] = []) {
        self.verbs = verbs
        self.apiGroups = apiGroups
        self.resources = resources
        self.resourceNames = resourceNames
        self.nonResourceURLs = nonResourceURLs
    }

    public init(_ j: JSONValue) {
        func list(_ k: String) -> [String] { (j[k]?.array ?? []).compactMap(\.string) }
        self.init(verbs: list("verbs"), apiGroups: list("apiGroups"), resources: list("resources"), resourceNames: list("resourceNames"),
                  nonResourceURLs: list("nonResourceURLs"))
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["verbs": .array(verbs.map { .string($0) })]
        if !apiGroups.isEmpty || !resources.isEmpty { o["apiGroups"] = .array(apiGroups.map { .string($0) }) }
        if !resources.isEmpty { o["resources"] = .array(resources.map { .string($0) }) }
        if !resourceNames.isEmpty { o["resourceNames"] = .array(resourceNames.map { .string($0) }) }
        if !nonResourceURLs.isEmpty { o["nonResourceURLs"] = .array(nonResourceURLs.map { .string($0) }) }
        return .object(o)
    }

    /// Whether a non-resource URL pattern (`*`, a path, or a prefix ending in `*`) matches `path`,
    /// as RBAC, ABAC and audit policies read them.
    public static func urlMatches(_ pattern: String, _ path: String) -> Bool {
        pattern == "*" || pattern == path || (pattern.hasSuffix("*") && path.hasPrefix(pattern.dropLast()))
    }

    /// Whether `resources` names `resource` (`pods/log` with its subresource): exactly, by `*`,
    /// or by `*/subresource`.
    static func resourceMatches(_ resources: [String], _ resource: String, subresource: String) -> Bool {
        resources.contains { r in r == "*" || r == resource || (!subresource.isEmpty && r.hasPrefix("*/") && r.dropFirst(2) == subresource) }
    }

    /// Whether this rule allows the request (upstream's `RuleAllows`).
    public func allows(_ a: RequestAttributes) -> Bool {
        guard verbs.contains("*") || verbs.contains(a.verb) else { return false }
        if a.isResourceRequest {
            guard apiGroups.contains("*") || apiGroups.contains(a.apiGroup) else { return false }
            let combined = a.subresource.isEmpty ? a.resource : "\(a.resource)/\(a.subresource)"
            guard Self.resourceMatches(resources, combined, subresource: a.subresource) else { return false }
            return resourceNames.isEmpty || resourceNames.contains(a.name)
        }
        return nonResourceURLs.contains { Self.urlMatches($0, a.path) }
    }

    /// This rule broken into rules of one verb, group, resource and name (or one verb and URL),
    /// as upstream's escalation check compares them.
    public var atoms: [PolicyRule] {
        var out: [PolicyRule] = []
        for v in verbs {
            for g in apiGroups { for r in resources {
                if resourceNames.isEmpty { out.append(PolicyRule(verbs: [v], apiGroups: [g], resources: [r])) }
                for n in resourceNames { out.append(PolicyRule(verbs: [v], apiGroups: [g], resources: [r], resourceNames: [n])) }
            } }
            for u in nonResourceURLs { out.append(PolicyRule(verbs: [v], nonResourceURLs: [u])) }
        }
        return out
    }

    /// Whether this rule grants at least what `atom` (one of `atoms`) does.
    public func covers(_ atom: PolicyRule) -> Bool {
        func has(_ list: [String], _ v: String) -> Bool { list.contains("*") || list.contains(v) }
        guard let verb = atom.verbs.first, has(verbs, verb) else { return false }
        if let url = atom.nonResourceURLs.first {
            return nonResourceURLs.contains { Self.urlMatches($0, url) }
        }
        guard let group = atom.apiGroups.first, let resource = atom.resources.first, has(apiGroups, group) else { return false }
        let sub = resource.split(separator: "/", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        guard Self.resourceMatches(resources, resource, subresource: sub) else { return false }
        if resourceNames.isEmpty { return true }
        return atom.resourceNames.first.map(resourceNames.contains) ?? false
    }

    /// Rules of one group, resource and name (or URL) merged into one with all their verbs, and
    /// sorted by their description: upstream's `CompactRules` and the order its message lists them in.
    public static func compact(_ rules: [PolicyRule]) -> [PolicyRule] {
        var merged: [PolicyRule] = []
        for r in rules {
            if let i = merged.firstIndex(where: { $0.apiGroups == r.apiGroups && $0.resources == r.resources
                && $0.resourceNames == r.resourceNames && $0.nonResourceURLs == r.nonResourceURLs }) {
                for v in r.verbs where !merged[i].verbs.contains(v) { merged[i].verbs.append(v) }
            } else {
                merged.append(r)
            }
        }
        return merged.sorted { $0.described < $1.described }
    }

    /// The rules of `servant` that `owner` does not cover (empty: no escalation).
    public static func uncovered(owner: [PolicyRule], servant: [PolicyRule]) -> [PolicyRule] {
        servant.flatMap(\.atoms).filter { atom in !owner.contains { $0.covers(atom) } }
    }

    /// Upstream's `%+v`-like rendering of a rule in an escalation error.
    public var described: String {
        var parts: [String] = []
        func q(_ l: [String]) -> String { "[" + l.map { AuthorizerChain.quote($0) }.joined(separator: " ") + "]" }
        if !apiGroups.isEmpty { parts.append("APIGroups:\(q(apiGroups))") }
        if !resources.isEmpty { parts.append("Resources:\(q(resources))") }
        if !resourceNames.isEmpty { parts.append("ResourceNames:\(q(resourceNames))") }
        if !nonResourceURLs.isEmpty { parts.append("NonResourceURLs:\(q(nonResourceURLs))") }
        parts.append("Verbs:\(q(verbs))")
        return "{" + parts.joined(separator: ", ") + "}"
    }
}

/// The RBAC objects as the authorizer reads them: roles by name, bindings by namespace, with
/// aggregated ClusterRoles' rules gathered from the roles their selectors match.
public struct RBACPolicy: Sendable {
    struct Subject: Sendable {
        var kind: String, name: String, namespace: String
    }
    struct Binding: Sendable {
        var name: String
        var namespace: String      // "" for a ClusterRoleBinding
        var roleKind: String       // Role or ClusterRole
        var roleName: String
        var subjects: [Subject]
    }

    /// Bindings by the subjects they name (a ServiceAccount by its user name), so a request
    /// looks at the bindings of its user and groups only, however many there are.
    struct Index: Sendable {
        var byUser: [String: [Binding]] = [:]
        var byGroup: [String: [Binding]] = [:]
        mutating func add(_ b: Binding) {
            var users = Set<String>(), groups = Set<String>()
            for s in b.subjects {
                switch s.kind {
                case "User": users.insert(s.name)
                case "Group": groups.insert(s.name)
                case "ServiceAccount": users.insert(UserInfo.serviceAccountPrefix + (s.namespace.isEmpty ? b.namespace : s.namespace) + ":" + s.name)
                default: break
                }
            }
            for u in users { byUser[u, default: []].append(b) }
            for g in groups { byGroup[g, default: []].append(b) }
        }
        /// The bindings naming the user or one of its groups, each once.
        func matching(_ user: UserInfo) -> [Binding] {
            var out = byUser[user.name] ?? []
            var seen = Set(out.map(\.name))
            for g in user.groups {
                for b in byGroup[g] ?? [] where seen.insert(b.name).inserted { out.append(b) }
            }
            return out
        }
    }

    var clusterRoles: [String: [PolicyRule]] = [:]
    var roles: [String: [String: [PolicyRule]]] = [:]       // namespace → name → rules
    var clusterBindings = Index()
    var bindings: [String: Index] = [:]                     // namespace → bindings
    public private(set) var count = 0

    public init() {}

    /// Builds the policy from the four kinds' objects (as served: JSON).
    public init(clusterRoles: [JSONValue], roles: [JSONValue], clusterRoleBindings: [JSONValue], roleBindings: [JSONValue]) {
        var labelsOf: [String: [String: String]] = [:]
        var selectors: [String: [JSONValue]] = [:]
        for r in clusterRoles {
            let name = r[path: ["metadata", "name"]]?.string ?? ""
            self.clusterRoles[name] = (r["rules"]?.array ?? []).map(PolicyRule.init)
            labelsOf[name] = (r[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
            if let s = r[path: ["aggregationRule", "clusterRoleSelectors"]]?.array { selectors[name] = s }
        }
        // Aggregation: an aggregated role holds the rules of every role its selectors match
        // (what upstream's aggregation controller writes into it), aggregated roles among them
        // (admin gathers edit, which gathers view): repeated until nothing changes.
        let sortedLabels = labelsOf.sorted { $0.key < $1.key }
        for _ in 0..<max(1, selectors.count + 1) {
            var changed = false
            for (name, sels) in selectors.sorted(by: { $0.key < $1.key }) {
                var rules: [PolicyRule] = []
                for (other, labels) in sortedLabels where other != name && sels.contains(where: { Self.matches($0, labels) }) {
                    for rule in self.clusterRoles[other] ?? [] where !rules.contains(rule) { rules.append(rule) }
                }
                if self.clusterRoles[name] != rules {
                    self.clusterRoles[name] = rules
                    changed = true
                }
            }
            if !changed { break }
        }
        for r in roles {
            let ns = r[path: ["metadata", "namespace"]]?.string ?? ""
            self.roles[ns, default: [:]][r[path: ["metadata", "name"]]?.string ?? ""] = (r["rules"]?.array ?? []).map(PolicyRule.init)
        }
        for b in clusterRoleBindings { if let x = Self.binding(b, namespace: "") { self.clusterBindings.add(x) } }
        for b in roleBindings {
            let ns = b[path: ["metadata", "namespace"]]?.string ?? ""
            if let x = Self.binding(b, namespace: ns) { self.bindings[ns, default: Index()].add(x) }
        }
        count = clusterRoles.count + roles.count + clusterRoleBindings.count + roleBindings.count
    }

    static func binding(_ b: JSONValue, namespace: String) -> Binding? {
        guard let kind = b[path: ["roleRef", "kind"]]?.string, let name = b[path: ["roleRef", "name"]]?.string else { return nil }
        let subjects = (b["subjects"]?.array ?? []).map {
            Subject(kind: $0["kind"]?.string ?? "", name: $0["name"]?.string ?? "", namespace: $0["namespace"]?.string ?? "")
        }
        return Binding(name: b[path: ["metadata", "name"]]?.string ?? "", namespace: namespace, roleKind: kind, roleName: name, subjects: subjects)
    }

    /// A label selector (`matchLabels`, `matchExpressions`) against labels.
    static func matches(_ selector: JSONValue, _ labels: [String: String]) -> Bool {
        for (k, v) in selector["matchLabels"]?.object ?? [:] where labels[k] != v.string { return false }
        for e in selector["matchExpressions"]?.array ?? [] {
            let key = e["key"]?.string ?? "", values = (e["values"]?.array ?? []).compactMap(\.string)
            switch e["operator"]?.string {
            case "In": if !values.contains(labels[key] ?? "\u{0}") { return false }
            case "NotIn": if let v = labels[key], values.contains(v) { return false }
            case "Exists": if labels[key] == nil { return false }
            case "DoesNotExist": if labels[key] != nil { return false }
            default: return false
            }
        }
        return true
    }

    static func applies(_ s: Subject, to user: UserInfo, bindingNamespace: String) -> Bool {
        switch s.kind {
        case "User": return s.name == user.name
        case "Group": return user.groups.contains(s.name)
        case "ServiceAccount":
            let ns = s.namespace.isEmpty ? bindingNamespace : s.namespace
            return user.name == UserInfo.serviceAccountPrefix + ns + ":" + s.name
        default: return false
        }
    }

    func rules(of b: Binding) -> [PolicyRule] {
        b.roleKind == "ClusterRole" ? clusterRoles[b.roleName] ?? [] : roles[b.namespace]?[b.roleName] ?? []
    }

    /// The first binding whose role allows `a`, described as upstream's RBAC reason says it.
    public func allowing(_ a: RequestAttributes) -> String? {
        for b in clusterBindings.matching(a.user) {
            if rules(of: b).contains(where: { $0.allows(a) }) {
                return "RBAC: allowed by ClusterRoleBinding \(AuthorizerChain.quote(b.name)) of ClusterRole \(AuthorizerChain.quote(b.roleName)) to \(Self.who(a.user, b))"
            }
        }
        guard !a.namespace.isEmpty else { return nil }
        for b in bindings[a.namespace]?.matching(a.user) ?? [] {
            if rules(of: b).contains(where: { $0.allows(a) }) {
                return "RBAC: allowed by RoleBinding \(AuthorizerChain.quote(b.name + "/" + b.namespace)) of \(b.roleKind) \(AuthorizerChain.quote(b.roleName)) to \(Self.who(a.user, b))"
            }
        }
        return nil
    }

    /// A subject as upstream's RBAC reason names it (a ServiceAccount as `name/namespace`).
    static func who(_ user: UserInfo, _ b: Binding) -> String {
        guard let s = b.subjects.first(where: { applies($0, to: user, bindingNamespace: b.namespace) }) else {
            return "User \(AuthorizerChain.quote(user.name))"
        }
        if s.kind == "ServiceAccount" { return "ServiceAccount \(AuthorizerChain.quote(s.name + "/" + (s.namespace.isEmpty ? b.namespace : s.namespace)))" }
        return "\(s.kind) \(AuthorizerChain.quote(s.name))"
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included).
    public func rules(for user: UserInfo, namespace: String) -> [PolicyRule] {
        var out: [PolicyRule] = []
        for b in clusterBindings.matching(user) { out += rules(of: b) }
        if !namespace.isEmpty {
            for b in bindings[namespace]?.matching(user) ?? [] { out += rules(of: b) }
        }
        return out
    }

    /// The rules of the role a binding refers to (for the bind check).
    public func roleRules(kind: String, name: String, namespace: String) -> [PolicyRule]? {
        kind == "ClusterRole" ? clusterRoles[name] : roles[namespace]?[name]
    }
}

/// `--authorization-mode=RBAC`: allows what a binding of the user's grants; has no opinion
/// otherwise. Its policy is replaced whole when the RBAC objects change.
public final class RBACAuthorizer: Authorizer, RuleResolver {
    /// The policy and the store revision it was read at.
    let policy = Mutex((RBACPolicy(), Int64(-1)))

    public init() {}

    /// Installs `p`, read at `revision`, unless a policy read later is installed already.
    public func update(_ p: RBACPolicy, revision: Int64 = .max) {
        policy.withLock { if revision >= $0.1 || revision == .max { $0 = (p, revision) } }
    }
    public var current: RBACPolicy { policy.withLock { $0.0 } }
    public var revision: Int64 { policy.withLock { $0.1 } }

    // The policy is copied out (its dictionaries are shared, not copied): requests do not queue
    // on the lock while rules are matched.
    public func authorize(_ a: RequestAttributes) -> Decision {
        if let why = current.allowing(a) { return .allow(why) }
        return .noOpinion("")
    }

    public func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], incomplete: Bool) {
        (current.rules(for: user, namespace: namespace), false)
    }
}
