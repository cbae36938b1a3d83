import Foundation
import KubeAPI

/// `--authorization-mode=ABAC` with `--authorization-policy-file`: one JSON policy per line
/// (`abac.authorization.kubernetes.io/v1beta1` Policy, or the unversioned v0 form), matched as
/// upstream's `pkg/auth/authorizer/abac` matches them; the first policy that matches allows.
public struct ABACAuthorizer: Authorizer, RuleResolver {
    public struct Policy: Sendable, Equatable {
        public var user = "", group = ""
        public var readonly = false
        public var apiGroup = "", resource = "", namespace = "", nonResourcePath = ""
    }

    public let policies: [Policy]

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    /// Reads a policy file: one object per line; blank lines and lines starting with `#` skipped.
    public init(contents: String, source: String = "policy file") throws {
        var out: [Policy] = []
        for (i, raw) in contents.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let j = try? JSONValue.parse(Data(line.utf8)), case .object = j else {
                throw Failure(description: "\(source): line \(i + 1): not a JSON object")
            }
            out.append(try Self.policy(j, line: i + 1, source: source))
        }
        policies = out
    }

    public init(policies: [Policy]) { self.policies = policies }

    static func policy(_ j: JSONValue, line: Int, source: String) throws -> Policy {
        func s(_ o: JSONValue?, _ k: String) -> String { o?[k]?.string ?? "" }
        switch (j["apiVersion"]?.string, j["kind"]?.string) {
        case ("abac.authorization.kubernetes.io/v1beta1", "Policy"):
            let spec = j["spec"]
            return Policy(user: s(spec, "user"), group: s(spec, "group"), readonly: spec?["readonly"]?.bool ?? false,
                          apiGroup: s(spec, "apiGroup"), resource: s(spec, "resource"), namespace: s(spec, "namespace"),
                          nonResourcePath: s(spec, "nonResourcePath"))
        case (nil, nil), ("", ""):
            // v0, converted as upstream converts it.
            var p = Policy(user: s(j, "user"), group: s(j, "group"), readonly: j["readonly"]?.bool ?? false,
                           apiGroup: "*", resource: s(j, "resource"), namespace: s(j, "namespace"))
            if p.user.isEmpty && p.group.isEmpty { p.group = UserInfo.allAuthenticated }
            if p.user == "*" || p.group == "*" { p.user = "*"; p.group = "*" }
            if p.namespace.isEmpty && p.resource.isEmpty { p.nonResourcePath = "*" }
            if p.namespace.isEmpty { p.namespace = "*" }
            if p.resource.isEmpty { p.resource = "*" }
            return p
        case (let v, let k):
            throw Failure(description: "\(source): line \(line): unknown apiVersion \(v ?? "") and kind \(k ?? ""): want abac.authorization.kubernetes.io/v1beta1 Policy")
        }
    }

    static func subjectMatches(_ p: Policy, _ u: UserInfo) -> Bool {
        var matched = false
        if !p.user.isEmpty {
            if p.user == "*" { matched = true } else {
                matched = p.user == u.name
                if !matched { return false }
            }
        }
        if !p.group.isEmpty {
            if p.group == "*" { matched = true } else {
                matched = u.groups.contains(p.group)
                if !matched { return false }
            }
        }
        return matched
    }

    static func readOnly(_ verb: String) -> Bool { ["get", "list", "watch"].contains(verb) }

    static func matches(_ p: Policy, _ a: RequestAttributes) -> Bool {
        guard subjectMatches(p, a.user), readOnly(a.verb) || !p.readonly else { return false }
        if a.isResourceRequest {
            return (p.namespace == "*" || p.namespace == a.namespace) && (p.resource == "*" || p.resource == a.resource)
                && (p.apiGroup == "*" || p.apiGroup == a.apiGroup)
        }
        return PolicyRule.urlMatches(p.nonResourcePath, a.path)
    }

    public func authorize(_ a: RequestAttributes) -> Decision {
        policies.contains { Self.matches($0, a) } ? .allow("") : .noOpinion("No policy matched.")
    }

    public func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], incomplete: Bool) {
        var rules: [PolicyRule] = []
        for p in policies where Self.subjectMatches(p, user) {
            let verbs = p.readonly ? ["get", "list", "watch"] : ["*"]
            if !p.resource.isEmpty, p.namespace == "*" || p.namespace == namespace {
                rules.append(PolicyRule(verbs: verbs, apiGroups: [p.apiGroup], resources: [p.resource]))
            }
            if !p.nonResourcePath.isEmpty { rules.append(PolicyRule(verbs: verbs, nonResourceURLs: [p.nonResourcePath])) }
        }
        return (rules, false)
    }
}
