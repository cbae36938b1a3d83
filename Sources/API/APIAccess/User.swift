import ClusterPKI
/// Who a request comes from, as an authenticator found it (upstream's `user.Info`).
public struct UserInfo: Sendable, Hashable {
    public var name: String
    public var uid: String
    public var groups: [String]
    public var extra: [String: [String]]

    public init(name: String, uid: String = "", groups: [String] = [], extra: [String: [String]] = [:]) {
        self.name = name
        self.uid = uid
        self.groups = groups
        self.extra = extra
    }

    // Upstream's well-known names (k8s.io/apiserver/pkg/authentication/user).
    public static let anonymousName = "system:anonymous"
    public static let allUnauthenticated = "system:unauthenticated"
    public static let allAuthenticated = "system:authenticated"
    public static let privilegedGroup = "system:masters"
    public static let nodesGroup = "system:nodes"
    public static let serviceAccountPrefix = "system:serviceaccount:"

    /// A request without credentials where anonymous requests are allowed.
    public static let anonymous = UserInfo(name: anonymousName, groups: [allUnauthenticated])

    /// kube-apiserver's old insecure port served every request as this user: in `system:masters`.
    public static let unsecured = UserInfo(name: "system:unsecured", groups: [privilegedGroup, allAuthenticated])

    /// An authenticated user's groups: `system:authenticated` added once, as upstream's
    /// authenticator chain adds it.
    public func authenticated() -> UserInfo {
        var u = self
        if !u.groups.contains(Self.allAuthenticated) && u.name != Self.anonymousName { u.groups.append(Self.allAuthenticated) }
        return u
    }

    /// The user a verified client certificate (DER) names: its subject's common name, and its
    /// organizations as groups (upstream's x509 authenticator). nil when it names no one.
    public init?(clientCertificate der: [UInt8]) {
        guard let id = ClusterPKI.clientIdentity(der: der) else { return nil }
        self = UserInfo(name: id.name, groups: id.groups).authenticated()
    }

    /// The longest `Authorization` header an authenticator reads (16 KiB): no credential is
    /// this long (a service-account token is about 1 KiB), so a longer one is refused before
    /// anything decodes it.
    public static let maxAuthorizationBytes = 16 * 1024

    /// `system:serviceaccount:NS:NAME` → (NS, NAME).
    public var serviceAccount: (namespace: String, name: String)? {
        guard name.hasPrefix(Self.serviceAccountPrefix) else { return nil }
        let rest = name.dropFirst(Self.serviceAccountPrefix.count).split(separator: ":", omittingEmptySubsequences: false)
        guard rest.count == 2, !rest[0].isEmpty, !rest[1].isEmpty else { return nil }
        return (String(rest[0]), String(rest[1]))
    }
}
