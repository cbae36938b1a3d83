/// What an authorizer decides on: the user and what the request does, read from its method
/// and path as upstream's `RequestInfoFactory` reads them (`k8s.io/apiserver/pkg/endpoints/request`).
public struct RequestAttributes: Sendable, Hashable {
    public var user: UserInfo
    /// get, list, watch, create, update, patch, delete, deletecollection (resources); the
    /// lower-cased HTTP method (other paths); impersonate, escalate, bind where the server asks.
    public var verb: String
    public var isResourceRequest: Bool
    public var path: String
    public var apiGroup = ""
    public var apiVersion = ""
    public var namespace = ""
    public var resource = ""
    public var subresource = ""
    public var name = ""
    /// A list's, watch's or deletecollection's `fieldSelector`, as given (upstream's
    /// AuthorizeWithSelectors: the Node mode reads `spec.nodeName` from it).
    public var fieldSelector = ""

    public init(user: UserInfo, verb: String, isResourceRequest: Bool, path: String, apiGroup: String = "", apiVersion: String = "",
                namespace: String = "", resource: String = "", subresource: String = "", name: String = "") {
        self.user = user
        self.verb = verb
        self.isResourceRequest = isResourceRequest
        self.path = path
        self.apiGroup = apiGroup
        self.apiVersion = apiVersion
        self.namespace = namespace
        self.resource = resource
        self.subresource = subresource
        self.name = name
    }

    /// A resource request's attributes (for reviews and the server's own checks).
    public static func resource(_ user: UserInfo, verb: String, group: String, resource: String, subresource: String = "",
                                namespace: String = "", name: String = "") -> RequestAttributes {
        RequestAttributes(user: user, verb: verb, isResourceRequest: true, path: "", apiGroup: group, namespace: namespace,
                          resource: resource, subresource: subresource, name: name)
    }

    /// The parts of a namespace's path that are its own subresources, not a resource in it.
    static let namespaceSubresources: Set<String> = ["status", "finalize"]

    /// The value of a `metadata.name=V` or `metadata.name==V` term of a field selector; terms are
    /// split on commas, and a term with `!=` is no equality (`metadata.name=a!=b` is the
    /// requirement `metadata.name=a` != `b`, as upstream parses it).
    static func exactName(_ selector: String) -> String? { requiredValue("metadata.name", in: selector) }

    /// The value `field` must equal by the selector's terms (`field=V` or `field==V`), if any.
    public static func requiredValue(_ field: String, in selector: String) -> String? {
        for term in selector.split(separator: ",") where !term.contains("!=") {
            for op in ["==", "="] where term.hasPrefix(field + op) {
                let value = term.dropFirst((field + op).count)
                if !value.contains("=") { return String(value) }
            }
        }
        return nil
    }

    /// Reads `method` and `path` (and the `watch` and `fieldSelector` query parameters) as upstream does.
    public static func parse(user: UserInfo, method: String, path: String, query: [String: String]) -> RequestAttributes {
        let m = method.uppercased()
        var a = RequestAttributes(user: user, verb: m.lowercased(), isResourceRequest: false, path: path)
        var parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let prefix = parts.first, prefix == "api" || prefix == "apis" else { return a }
        parts.removeFirst()
        if prefix == "apis" {
            guard parts.count >= 2 else { return a }
            a.apiGroup = parts.removeFirst()
        } else {
            guard parts.count >= 1 else { return a }
        }
        a.apiVersion = parts.removeFirst()
        guard !parts.isEmpty else { return a }   // /api/v1, /apis/apps/v1: discovery
        a.isResourceRequest = true
        switch m {
        case "POST": a.verb = "create"
        case "GET", "HEAD": a.verb = "get"
        case "PUT": a.verb = "update"
        case "PATCH": a.verb = "patch"
        case "DELETE": a.verb = "delete"
        default: a.verb = ""
        }
        // The deprecated /watch/ prefix.
        if parts.first == "watch" {
            parts.removeFirst()
            a.verb = "watch"
        }
        if parts.first == "namespaces" {
            if parts.count > 1 {
                a.namespace = parts[1]
                if parts.count > 2 && !namespaceSubresources.contains(parts[2]) { parts.removeFirst(2) }
            }
        }
        // resource/name/subresource/…
        if parts.count >= 3 { a.subresource = parts[2] }
        if parts.count >= 2 { a.name = parts[1] }
        if parts.count >= 1 { a.resource = parts[0] }
        if a.name.isEmpty && a.verb == "get" {
            a.verb = ["1", "true"].contains(query["watch"] ?? "") ? "watch" : "list"
            // A watch or list of one object by name counts as on that name (an equality on
            // metadata.name among the selector's terms, as upstream's RequiresExactMatch finds it).
            if let fs = query["fieldSelector"] { a.name = Self.exactName(fs) ?? "" }
        }
        if a.name.isEmpty && a.verb == "delete" { a.verb = "deletecollection" }
        if ["list", "watch", "deletecollection"].contains(a.verb) { a.fieldSelector = query["fieldSelector"] ?? "" }
        return a
    }
}

/// An authorizer's answer: allow, deny (no later authorizer is asked), or no opinion (the next
/// one is); each with the reason shown to the user when the request is refused.
///
/// `error` is an authorizer that could not decide (a webhook that failed): the next one is
/// asked, and when none allows, the request fails with 500 and the error, as upstream's.
public enum Decision: Sendable, Equatable {
    case allow(String)
    case deny(String)
    case noOpinion(String)
    case error(String)

    public var allowed: Bool { if case .allow = self { return true } else { return false } }
    public var reason: String {
        switch self { case .allow(let r), .deny(let r), .noOpinion(let r), .error(let r): r }
    }
}

/// One authorization mode (`--authorization-mode`).
public protocol Authorizer: Sendable {
    func authorize(_ a: RequestAttributes) async -> Decision
}

/// What a user may do in a namespace, as `SelfSubjectRulesReview` lists it.
public protocol RuleResolver: Sendable {
    /// The rules that apply to `user` in `namespace` ("" for cluster-wide only), and whether
    /// the list is incomplete (an authorizer that cannot list its rules).
    func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], incomplete: Bool)
}

public struct AlwaysAllow: Authorizer, RuleResolver {
    public init() {}
    public func authorize(_ a: RequestAttributes) -> Decision { .allow("") }
    public func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], incomplete: Bool) {
        ([PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]), PolicyRule(verbs: ["*"], nonResourceURLs: ["*"])], false)
    }
}

public struct AlwaysDeny: Authorizer, RuleResolver {
    public init() {}
    public func authorize(_ a: RequestAttributes) -> Decision { .noOpinion("Everything is forbidden.") }
    public func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], incomplete: Bool) { ([], false) }
}

/// `system:masters` may do anything, before any mode is asked (upstream's privileged-group
/// authorizer, in front of every chain but AlwaysAllow's).
public struct PrivilegedGroup: Authorizer {
    public init() {}
    public func authorize(_ a: RequestAttributes) -> Decision {
        a.user.groups.contains(UserInfo.privilegedGroup) ? .allow("") : .noOpinion("")
    }
}

/// The modes in order: the first that allows or denies decides; when none does, the request
/// is refused with their reasons.
public struct AuthorizerChain: Authorizer, RuleResolver {
    public let modes: [(name: String, authorizer: any Authorizer)]

    public init(_ modes: [(name: String, authorizer: any Authorizer)]) { self.modes = modes }

    public func authorize(_ a: RequestAttributes) async -> Decision {
        var reasons: [String] = [], errors: [String] = []
        for m in modes {
            let d = await m.authorizer.authorize(a)
            switch d {
            case .allow, .deny: return d
            case .noOpinion(let r): if !r.isEmpty { reasons.append(r) }
            case .error(let e): errors.append(e)
            }
        }
        if !errors.isEmpty { return .error(errors.joined(separator: ", ")) }
        return .noOpinion(reasons.joined(separator: "\n"))
    }

    public func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], incomplete: Bool) {
        var rules: [PolicyRule] = []
        var incomplete = false
        for m in modes {
            if let r = m.authorizer as? any RuleResolver {
                let (more, inc) = r.rules(for: user, namespace: namespace)
                rules += more
                incomplete = incomplete || inc
            } else if !(m.authorizer is PrivilegedGroup) {
                incomplete = true
            }
        }
        return (rules, incomplete)
    }

    /// The names `--authorization-mode` takes.
    public static let knownModes = ["AlwaysAllow", "AlwaysDeny", "RBAC", "ABAC", "Node", "Webhook"]

    /// Upstream's words for a refused request: `User "alice" cannot list resource "pods" in API
    /// group "" in the namespace "default"`, with the authorizers' reason after a colon.
    public static func forbiddenMessage(_ a: RequestAttributes, reason: String) -> String {
        var msg: String
        if !a.isResourceRequest {
            msg = "User \(quote(a.user.name)) cannot \(a.verb) path \(quote(a.path))"
        } else {
            let resource = a.subresource.isEmpty ? a.resource : "\(a.resource)/\(a.subresource)"
            if !a.namespace.isEmpty {
                msg = "User \(quote(a.user.name)) cannot \(a.verb) resource \(quote(resource)) in API group \(quote(a.apiGroup)) in the namespace \(quote(a.namespace))"
            } else {
                msg = "User \(quote(a.user.name)) cannot \(a.verb) resource \(quote(resource)) in API group \(quote(a.apiGroup)) at the cluster scope"
            }
        }
        if !reason.isEmpty { msg += ": " + reason }
        return msg
    }

    /// Go's %q of a string: double quotes, backslash escapes.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case _ where c.value < 0x20: out += "\\x" + (c.value < 0x10 ? "0" : "") + String(c.value, radix: 16)
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }
}
