import APIAccess
import Foundation
import KubeAPI
import KubeStore
import Synchronization

/// Who may do what (`--authorization-mode`): the modes in order, RBAC's policy read from the
/// store, the privileged group in front as upstream puts it.
public final class AccessControl: Sendable {
    public let modes: [String]
    public let chain: AuthorizerChain
    public let rbac: RBACAuthorizer?
    /// The Node mode's graph of what each node's pods use, fed from the store.
    public let nodeGraph: NodeGraph?
    /// AlwaysAllow alone: nothing is asked (and anonymous requests are not allowed).
    public let allowsAll: Bool

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    /// - Parameters:
    ///   - modes: `--authorization-mode`'s list (AlwaysAllow, AlwaysDeny, RBAC, ABAC, Node, Webhook).
    ///   - policyFile: ABAC's `--authorization-policy-file`, its text and its name.
    ///   - webhook: the Webhook mode's authorizer (`--authorization-webhook-config-file`).
    public init(modes: [String] = ["AlwaysAllow"], policyFile: (contents: String, name: String)? = nil,
                webhook: (any Authorizer)? = nil) throws {
        guard !modes.isEmpty else { throw Failure(description: "at least one authorization mode must be passed") }
        var seen = Set<String>()
        var chain: [(name: String, authorizer: any Authorizer)] = []
        var rbac: RBACAuthorizer?
        var graph: NodeGraph?
        for m in modes {
            guard seen.insert(m).inserted else { throw Failure(description: "authorization-mode \(m) has mode specified more than once") }
            switch m {
            case "AlwaysAllow": chain.append((m, AlwaysAllow()))
            case "AlwaysDeny": chain.append((m, AlwaysDeny()))
            case "RBAC":
                let r = RBACAuthorizer()
                rbac = r
                chain.append((m, r))
            case "ABAC":
                guard let file = policyFile else { throw Failure(description: "authorization-mode ABAC's authorization policy file not passed") }
                do { chain.append((m, try ABACAuthorizer(contents: file.contents, source: file.name))) } catch { throw Failure(description: "\(error)") }
            case "Node":
                let g = NodeGraph()
                graph = g
                chain.append((m, NodeAuthorizer(graph: g)))
            case "Webhook":
                guard let webhook else { throw Failure(description: "authorization-mode Webhook's authorization config file not passed") }
                chain.append((m, webhook))
            default:
                throw Failure(description: "authorization-mode \(m) is not a valid mode (one of \(AuthorizerChain.knownModes.joined(separator: ", ")))")
            }
        }
        // system:masters may do anything, whatever the modes say (upstream's privileged-group authorizer).
        if modes != ["AlwaysAllow"] { chain.insert(("Privileged", PrivilegedGroup()), at: 0) }
        self.modes = modes
        self.chain = AuthorizerChain(chain)
        self.rbac = rbac
        nodeGraph = graph
        if policyFile != nil && !modes.contains("ABAC") {
            throw Failure(description: "cannot specify --authorization-policy-file without mode ABAC")
        }
        if webhook != nil && !modes.contains("Webhook") {
            throw Failure(description: "cannot specify --authorization-webhook-config-file without mode Webhook")
        }
        allowsAll = modes == ["AlwaysAllow"]
    }

    public func authorize(_ a: RequestAttributes) async -> Decision { allowsAll ? .allow("") : await chain.authorize(a) }

    /// The user a request runs as: the one authentication found (none configured: the old
    /// insecure port's privileged user).
    @TaskLocal static var currentUser: UserInfo = .unsecured

    /// The error for a decision that is not an allow: 500 with the error when an authorizer
    /// could not decide, else upstream's 403.
    static func refusal(_ a: RequestAttributes, _ d: Decision) -> APIError {
        if case .error(let e) = d {
            return APIError(code: 500, reason: "InternalError", message: "Internal error occurred: \(e)", details: ["causes": [["message": .string(e)]]])
        }
        return forbidden(a, reason: d.reason)
    }

    /// A refused request's error, as upstream words it.
    static func forbidden(_ a: RequestAttributes, reason: String) -> APIError {
        let msg = AuthorizerChain.forbiddenMessage(a, reason: reason)
        guard a.isResourceRequest else { return APIError(code: 403, reason: "Forbidden", message: "forbidden: \(msg)", details: [:]) }
        let qualified = a.apiGroup.isEmpty ? a.resource : "\(a.resource).\(a.apiGroup)"
        var details: [String: JSONValue] = ["kind": .string(a.resource)]
        if !a.apiGroup.isEmpty { details["group"] = .string(a.apiGroup) }
        if !a.name.isEmpty { details["name"] = .string(a.name) }
        let subject = a.name.isEmpty ? "\(qualified) is forbidden" : "\(qualified) \(AuthorizerChain.quote(a.name)) is forbidden"
        return APIError(code: 403, reason: "Forbidden", message: "\(subject): \(msg)", details: details)
    }
}

/// The impersonation headers of a request (`kubectl --as`, `--as-group`, `--as-uid`).
public struct Impersonation: Sendable, Equatable {
    public var user: String?
    public var groups: [String]
    public var uid: String?
    public init(user: String?, groups: [String] = [], uid: String? = nil) {
        self.user = user
        self.groups = groups
        self.uid = uid
    }
}

// MARK: the resources

/// Roles, ClusterRoles and their bindings: names are path segments, a binding names its role.
struct RBACStrategy: ResourceStrategy {
    var binding: Bool
    var names: NameRule { .any }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        if name == "." || name == ".." {
            errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": may not be '\(name)'"))
        }
        for bad in ["/", "%"] where name.contains(bad) {
            errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": may not contain '\(bad)'"))
        }
        if binding {
            let kind = o[path: ["roleRef", "kind"]]?.string ?? ""
            if o[path: ["roleRef", "apiGroup"]]?.string != "rbac.authorization.k8s.io" {
                errs.append(FieldError("roleRef.apiGroup", "Unsupported value: \"\(o[path: ["roleRef", "apiGroup"]]?.string ?? "")\": supported values: \"rbac.authorization.k8s.io\""))
            }
            let kinds = r.resource == "clusterrolebindings" ? ["ClusterRole"] : ["ClusterRole", "Role"]
            if !kinds.contains(kind) {
                errs.append(FieldError("roleRef.kind", "Unsupported value: \"\(kind)\": supported values: \(kinds.map { "\"\($0)\"" }.joined(separator: ", "))"))
            }
            if (o[path: ["roleRef", "name"]]?.string ?? "").isEmpty { errs.append(FieldError("roleRef.name", "Required value")) }
            for (i, s) in (o["subjects"]?.array ?? []).enumerated() {
                let k = s["kind"]?.string ?? ""
                if !["User", "Group", "ServiceAccount"].contains(k) {
                    errs.append(FieldError("subjects[\(i)].kind", "Unsupported value: \"\(k)\": supported values: \"ServiceAccount\", \"User\", \"Group\""))
                }
                if (s["name"]?.string ?? "").isEmpty { errs.append(FieldError("subjects[\(i)].name", "Required value")) }
                if k == "ServiceAccount" && r.resource == "clusterrolebindings" && (s["namespace"]?.string ?? "").isEmpty {
                    errs.append(FieldError("subjects[\(i)].namespace", "Required value"))
                }
            }
        } else {
            for (i, rule) in (o["rules"]?.array ?? []).enumerated() {
                let p = PolicyRule(rule)
                if p.verbs.isEmpty { errs.append(FieldError("rules[\(i)].verbs", "Required value: verbs must contain at least one value")) }
                if !p.nonResourceURLs.isEmpty && !p.resources.isEmpty {
                    errs.append(FieldError("rules[\(i)].nonResourceURLs", "Invalid value: \(JSONValue.array(p.nonResourceURLs.map { .string($0) }).text()): rules cannot apply to both regular resources and non-resource URLs"))
                }
                if !p.resources.isEmpty && p.apiGroups.isEmpty && rule["apiGroups"] == nil {
                    errs.append(FieldError("rules[\(i)].apiGroups", "Required value: resource rules must supply at least one api group"))
                }
                if !p.nonResourceURLs.isEmpty && r.namespaced {
                    errs.append(FieldError("rules[\(i)].nonResourceURLs", "Invalid value: \(JSONValue.array(p.nonResourceURLs.map { .string($0) }).text()): namespaced rules cannot apply to non-resource URLs"))
                }
                if p.nonResourceURLs.isEmpty && p.resources.isEmpty {
                    errs.append(FieldError("rules[\(i)].resources", "Required value: resource rules must supply at least one resource"))
                }
            }
        }
        return errs
    }
    var columns: [Tables.Column] {
        binding
            ? [Tables.nameColumn, Tables.Column(name: "Role") { o in
                .string("\(o[path: ["roleRef", "kind"]]?.string ?? "")/\(o[path: ["roleRef", "name"]]?.string ?? "")") }, Tables.ageColumn]
            : [Tables.nameColumn, Tables.Column(name: "Created At") { Tables.str($0[path: ["metadata", "creationTimestamp"]]) }]
    }
}

/// The reviews: created, answered, never stored.
struct ReviewStrategy: ResourceStrategy {
    var names: NameRule { .any }
    var verbs: [String]? { ["create"] }
}

extension APIHandler {
    static let rbacGroup = "rbac.authorization.k8s.io"
    static let rbacResources = ["clusterroles", "roles", "clusterrolebindings", "rolebindings"]

    // MARK: authorization of a request

    /// The impersonated user, when `user` may impersonate it (verb `impersonate` on `users`,
    /// `groups`, `serviceaccounts` and `uids`, as upstream checks it).
    func impersonate(_ imp: Impersonation, as user: UserInfo) async throws -> UserInfo {
        if (imp.user ?? "").isEmpty && imp.groups.isEmpty && (imp.uid ?? "").isEmpty { return user }
        guard let name = imp.user, !name.isEmpty else {
            throw APIError(code: 500, reason: "InternalError", message: "Internal error occurred: requested \(imp.groups) without impersonating a user")
        }
        func check(_ a: RequestAttributes) async throws {
            let d = await access.authorize(a)
            if !d.allowed { throw AccessControl.refusal(a, d) }
        }
        var target = UserInfo(name: name, uid: imp.uid ?? "")
        if let sa = target.serviceAccount {
            try await check(.resource(user, verb: "impersonate", group: "", resource: "serviceaccounts", namespace: sa.namespace, name: sa.name))
            // A service account's groups, unless groups are given.
            if imp.groups.isEmpty { target.groups = ["system:serviceaccounts", "system:serviceaccounts:\(sa.namespace)"] }
        } else {
            try await check(.resource(user, verb: "impersonate", group: "", resource: "users", name: name))
        }
        for g in imp.groups {
            try await check(.resource(user, verb: "impersonate", group: "", resource: "groups", name: g))
            if !target.groups.contains(g) { target.groups.append(g) }
        }
        if let uid = imp.uid, !uid.isEmpty {
            try await check(.resource(user, verb: "impersonate", group: "authentication.k8s.io", resource: "uids", name: uid))
        }
        // system:anonymous is in system:unauthenticated; anyone else in system:authenticated,
        // unless the groups given say otherwise.
        if name == UserInfo.anonymousName {
            if !target.groups.contains(UserInfo.allUnauthenticated) { target.groups.append(UserInfo.allUnauthenticated) }
            return target
        }
        if target.groups.contains(UserInfo.allUnauthenticated) { return target }
        return target.authenticated()
    }

    // MARK: RBAC's policy

    /// Reads the RBAC objects from the store into the authorizer (at start, and after every
    /// write to them through this server).
    /// Every object is read at one revision, and a policy is installed only over one read at an
    /// earlier revision: refreshes that overlap cannot leave an older policy in place. One that
    /// finds the installed policy current reads nothing.
    public func refreshRBAC() async throws {
        guard let rbac = access.rbac else { return }
        let revision = try await store.currentRevision(prefix: "/registry/\(Self.rbacGroup)/")
        if rbac.revision >= revision { return }
        var lists: [String: [JSONValue]] = [:]
        for res in Self.rbacResources {
            guard let r = registry.find(group: Self.rbacGroup, version: "v1", resource: res) else { continue }
            lists[res] = try await storedValues(prefix: r.storePrefix, revision: revision).map { try r.decode($0.value) }
        }
        rbac.update(RBACPolicy(clusterRoles: lists["clusterroles"] ?? [], roles: lists["roles"] ?? [],
                               clusterRoleBindings: lists["clusterrolebindings"] ?? [], roleBindings: lists["rolebindings"] ?? []),
                    revision: revision)
    }

    /// Every key under `prefix` at `revision` (nil: now), page by page.
    func storedValues(prefix: String, revision: Int64?) async throws -> [KeyValue] {
        var out: [KeyValue] = []
        var after: String?
        repeat {
            let page = try await store.list(prefix: prefix, after: after, limit: 1000, revision: revision)
            out += page.items
            after = page.continueAfter
        } while after != nil
        return out
    }

    /// Follows the RBAC objects in the store (another API server's writes too): the policy is
    /// read again after each change. Returns when the watch ends (the caller starts it again).
    public func followRBAC() async throws {
        guard access.rbac != nil else { return }
        let prefix = "/registry/\(Self.rbacGroup)/"
        let revision = try await store.currentRevision(prefix: prefix)
        try await refreshRBAC()
        for try await _ in try await store.watch(prefix: prefix, after: revision) {
            try await refreshRBAC()
        }
    }

    /// Follows the pods for the Node mode's graph: all of them, then each change. Returns when
    /// the watch ends (the caller starts it again).
    public func followPodsForNodes() async throws {
        guard let graph = access.nodeGraph, let r = registry.find(group: "", version: "v1", resource: "pods") else { return }
        let revision = try await store.currentRevision(prefix: r.storePrefix)
        graph.replaceAll(pods: try await storedValues(prefix: r.storePrefix, revision: revision).compactMap { try? r.decode($0.value) })
        for try await e in try await store.watch(prefix: r.storePrefix, after: revision) {
            let parts = e.kv.key.dropFirst(r.storePrefix.count).split(separator: "/")
            guard parts.count == 2 else { continue }
            if e.kind == .deleted {
                graph.remove(namespace: String(parts[0]), name: String(parts[1]))
            } else if let o = try? r.decode(e.kv.value) {
                graph.set(pod: o)
            }
        }
    }

    /// Creates the default roles and bindings that are missing, and brings those marked for
    /// auto-update up to date (upstream's reconciliation at start).
    public func reconcileDefaultPolicy() async throws {
        guard access.rbac != nil else { return }
        var sets = [("clusterroles", DefaultPolicy.clusterRoles), ("clusterrolebindings", DefaultPolicy.clusterRoleBindings)]
        for (ns, o) in DefaultPolicy.roles { sets.append(("namespaces/\(ns)/roles", [o])) }
        for (ns, o) in DefaultPolicy.roleBindings { sets.append(("namespaces/\(ns)/rolebindings", [o])) }
        for (res, objects) in sets {
            let path = "/apis/\(Self.rbacGroup)/v1/\(res)"
            for o in objects {
                let name = o[path: ["metadata", "name"]]?.string ?? ""
                let created = await handle(APIRequest(method: "POST", path: path, body: o.serialized(), userAgent: "kube-apiserver"))
                if created.code == 201 { continue }
                guard created.code == 409 else { throw APIError.internal("creating \(res)/\(name): \(created.json?.text() ?? "")") }
                let current = await handle(APIRequest(method: "GET", path: "\(path)/\(name)"))
                guard var existing = current.json, existing[path: ["metadata", "annotations", "rbac.authorization.kubernetes.io/autoupdate"]] != "false" else { continue }
                var changed = false
                for k in ["rules", "subjects", "roleRef", "aggregationRule"] where o[k] != nil {
                    // Missing rules and subjects are added; what a user added stays.
                    if var have = existing[k]?.array, let want = o[k]?.array {
                        for w in want where !have.contains(w) { have.append(w); changed = true }
                        existing[k] = .array(have)
                    } else if existing[k] != o[k] {
                        existing[k] = o[k]
                        changed = true
                    }
                }
                if changed {
                    let r = await handle(APIRequest(method: "PUT", path: "\(path)/\(name)", body: existing.serialized(), userAgent: "kube-apiserver"))
                    guard r.code == 200 else { throw APIError.internal("updating \(res)/\(name): \(r.json?.text() ?? "")") }
                }
            }
        }
        try await refreshRBAC()
        // The aggregated roles (admin, edit, view) hold their parts' rules, as the
        // clusterrole-aggregation controller writes them.
        guard let policy = access.rbac?.current else { return }
        for o in DefaultPolicy.clusterRoles where o["aggregationRule"] != nil {
            let name = o[path: ["metadata", "name"]]?.string ?? ""
            let path = "/apis/\(Self.rbacGroup)/v1/clusterroles/\(name)"
            guard var existing = await handle(APIRequest(method: "GET", path: path)).json,
                  let rules = policy.roleRules(kind: "ClusterRole", name: name, namespace: "") else { continue }
            let want = JSONValue.array(rules.map(\.json))
            if existing["rules"] != want {
                existing["rules"] = want
                _ = await handle(APIRequest(method: "PUT", path: path, body: existing.serialized(), userAgent: "kube-apiserver"))
            }
        }
    }

    /// RBAC's escalation checks on a Role or ClusterRole (its rules must be the writer's own, or
    /// the writer may `escalate`) and on a binding (the role's rules must be the writer's own, or
    /// the writer may `bind` it).
    /// Upstream's checks on an RBAC write: a binding's `roleRef` may not change; writing a role
    /// whose rules the writer does not hold needs `escalate` (an `aggregationRule`, new or old,
    /// needs every permission: its rules are gathered, not written); binding a role whose rules
    /// the writer does not hold needs `bind`.
    func checkEscalation(_ o: JSONValue, _ r: ResourceInfo, old: JSONValue? = nil) async throws {
        guard r.group == Self.rbacGroup, let rbac = access.rbac else { return }
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        if let old, r.resource.hasSuffix("bindings"), old["roleRef"] != o["roleRef"] {
            throw APIError.invalid(r, name, [FieldError("roleRef", "Invalid value: \(o["roleRef"]?.text() ?? "null"): cannot change roleRef")])
        }
        let user = AccessControl.currentUser
        if user.groups.contains(UserInfo.privilegedGroup) { return }
        let ns = r.namespaced ? o[path: ["metadata", "namespace"]]?.string ?? "" : ""
        // The request's name: none on a create.
        let requestName = old == nil ? "" : name
        let policy = rbac.current
        let servant: [PolicyRule]
        switch r.resource {
        case "roles", "clusterroles":
            if await access.authorize(.resource(user, verb: "escalate", group: Self.rbacGroup, resource: r.resource, namespace: ns, name: requestName)).allowed { return }
            if o["aggregationRule"] != nil || old?["aggregationRule"] != nil {
                let everything = [PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]), PolicyRule(verbs: ["*"], nonResourceURLs: ["*"])]
                if !PolicyRule.uncovered(owner: rbac.rules(for: user, namespace: ns).rules, servant: everything).isEmpty {
                    throw APIError(code: 403, reason: "Forbidden", message: "\(APIError.resourceLabel(r)) \(AuthorizerChain.quote(name)) is forbidden: must have cluster-admin privileges to use the aggregationRule",
                                   details: APIError.details(r, name))
                }
                return
            }
            servant = (o["rules"]?.array ?? []).map(PolicyRule.init)
        case "rolebindings", "clusterrolebindings":
            let kind = o[path: ["roleRef", "kind"]]?.string ?? "", roleName = o[path: ["roleRef", "name"]]?.string ?? ""
            let roleResource = kind == "ClusterRole" ? "clusterroles" : "roles"
            if await access.authorize(.resource(user, verb: "bind", group: Self.rbacGroup, resource: roleResource, namespace: ns, name: roleName)).allowed { return }
            guard let rules = policy.roleRules(kind: kind, name: roleName, namespace: ns) else {
                let singular = kind == "ClusterRole" ? "clusterrole" : "role"
                throw APIError(code: 404, reason: "NotFound", message: "\(singular).rbac.authorization.k8s.io \"\(roleName)\" not found",
                               details: ["name": .string(roleName), "group": .string(Self.rbacGroup), "kind": .string(singular)])
            }
            servant = rules
        default: return
        }
        let owner = rbac.rules(for: user, namespace: ns).rules
        let missing = PolicyRule.compact(PolicyRule.uncovered(owner: owner, servant: servant))
        guard !missing.isEmpty else { return }
        let groups = "[" + user.groups.map { AuthorizerChain.quote($0) }.joined(separator: " ") + "]"
        let msg = "user \(AuthorizerChain.quote(user.name)) (groups=\(groups)) is attempting to grant RBAC permissions not currently held:\n"
            + missing.map(\.described).joined(separator: "\n")
        throw APIError(code: 403, reason: "Forbidden", message: "\(APIError.resourceLabel(r)) \(AuthorizerChain.quote(name)) is forbidden: \(msg)",
                       details: APIError.details(r, name))
    }

    // MARK: the reviews

    func review(_ req: APIRequest, _ t: Target, user: UserInfo) async throws -> APIResponse {
        guard req.method == "POST", t.name == nil else {
            throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
        }
        var duplicates: [String] = []
        var o = try decodeBody(req, duplicates: &duplicates)
        try checkKind(o, t.resource)
        let spec = o["spec"] ?? [:]
        switch t.resource.resource {
        case "tokenreviews":
            o = await tokenReview(o)
        case "selfsubjectreviews":
            var info: JSONValue = ["username": .string(user.name), "groups": .array(user.groups.map { .string($0) })]
            if !user.uid.isEmpty { info["uid"] = .string(user.uid) }
            if !user.extra.isEmpty { info["extra"] = .object(user.extra.mapValues { .array($0.map { .string($0) }) }) }
            o["status"] = ["userInfo": info]
        case "selfsubjectrulesreviews":
            let ns = spec["namespace"]?.string ?? ""
            guard !ns.isEmpty else { throw APIError.badRequest("no namespace on request") }
            let (rules, incomplete) = access.allowsAll ? AlwaysAllow().rules(for: user, namespace: ns) : access.chain.rules(for: user, namespace: ns)
            o["status"] = [
                "resourceRules": .array(rules.filter { !$0.resources.isEmpty }.map { r -> JSONValue in
                    var j: JSONValue = ["verbs": .array(r.verbs.map { .string($0) }), "apiGroups": .array(r.apiGroups.map { .string($0) }),
                                        "resources": .array(r.resources.map { .string($0) })]
                    if !r.resourceNames.isEmpty { j["resourceNames"] = .array(r.resourceNames.map { .string($0) }) }
                    return j
                }),
                "nonResourceRules": .array(rules.filter { !$0.nonResourceURLs.isEmpty }.map {
                    ["verbs": .array($0.verbs.map { .string($0) }), "nonResourceURLs": .array($0.nonResourceURLs.map { .string($0) })]
                }),
                "incomplete": .bool(incomplete),
            ]
        default:
            // (Self|Local)SubjectAccessReview.
            var subject = user
            if t.resource.resource != "selfsubjectaccessreviews" {
                guard let name = spec["user"]?.string ?? (spec["groups"]?.array?.isEmpty == false ? "" : nil) else {
                    throw APIError.invalid(t.resource, "", [FieldError("spec.user", "Invalid value: \"\": at least one of user or group must be specified")])
                }
                subject = UserInfo(name: name, uid: spec["uid"]?.string ?? "", groups: (spec["groups"]?.array ?? []).compactMap(\.string),
                                   extra: (spec["extra"]?.object ?? [:]).mapValues { ($0.array ?? []).compactMap(\.string) })
            }
            let local = t.resource.resource == "localsubjectaccessreviews"
            if local {
                guard let ns = t.namespace, !ns.isEmpty else { throw APIError.badRequest("namespace is required on this type: \(t.resource.kind)") }
                if let given = o[path: ["metadata", "namespace"]]?.string, !given.isEmpty, given != ns {
                    throw APIError.badRequest("spec.resourceAttributes.namespace must match namespace: \(ns)")
                }
                if spec["nonResourceAttributes"] != nil && spec["nonResourceAttributes"] != .null {
                    throw APIError.badRequest("disallowed on this kind of request")
                }
            }
            let a: RequestAttributes
            if let ra = spec["resourceAttributes"], case .object = ra {
                a = RequestAttributes(user: subject, verb: ra["verb"]?.string ?? "", isResourceRequest: true, path: "",
                                      apiGroup: ra["group"]?.string ?? "", apiVersion: ra["version"]?.string ?? "",
                                      namespace: ra["namespace"]?.string ?? "", resource: ra["resource"]?.string ?? "",
                                      subresource: ra["subresource"]?.string ?? "", name: ra["name"]?.string ?? "")
                if local && a.namespace != (t.namespace ?? "") {
                    throw APIError.invalid(t.resource, "", [FieldError("spec.resourceAttributes.namespace",
                                                                       "Invalid value: \"\(a.namespace)\": must match metadata.namespace")])
                }
            } else if let nr = spec["nonResourceAttributes"], case .object = nr {
                a = RequestAttributes(user: subject, verb: nr["verb"]?.string ?? "", isResourceRequest: false, path: nr["path"]?.string ?? "")
            } else {
                throw APIError.invalid(t.resource, "", [FieldError("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified")])
            }
            let d = await access.authorize(a)
            var status: JSONValue = ["allowed": .bool(d.allowed)]
            if case .deny = d { status["denied"] = true }
            if case .error(let e) = d { status["evaluationError"] = .string(e) } else if !d.reason.isEmpty { status["reason"] = .string(d.reason) }
            o["status"] = status
        }
        if o[path: ["metadata", "creationTimestamp"]] == nil { o[path: ["metadata", "creationTimestamp"]] = .null }
        return APIResponse(code: 201, body: .json(o))
    }
}
