import Crypto
import Foundation
import KubeAPI

/// Service-account tokens as kube-apiserver issues and reads them: JWTs signed with the
/// server's key (ES256 here; upstream takes RSA or ECDSA keys), with upstream's claims
/// (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`, and `kubernetes.io` naming the namespace,
/// the service account and the object the token is bound to). Verification checks the algorithm,
/// the signature, the issuer, the audience and the times; whether the account and the bound
/// object still exist is the server's part.
public struct ServiceAccountTokens: Sendable {
    public let issuer: String
    /// The API's audiences (`--api-audiences`, by default the issuer).
    public let audiences: [String]
    /// The key, as its raw bytes (swift-crypto's key types are not Sendable): made into a key
    /// where it signs or verifies.
    let rawKey: Data
    var key: P256.Signing.PrivateKey { (try? P256.Signing.PrivateKey(rawRepresentation: rawKey)) ?? P256.Signing.PrivateKey() }
    /// The key's id: the unpadded base64url SHA-256 of its public key in DER, as upstream's.
    public let keyID: String

    public struct Failure: Error, CustomStringConvertible, Equatable {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// What a verified token says.
    public struct Claims: Sendable, Equatable {
        public var namespace: String
        public var serviceAccount: String
        public var serviceAccountUID: String
        public var audiences: [String]
        public var expires: Date
        public var id: String
        /// The object it is bound to: (kind, name, uid) of a Pod, Secret or Node.
        public var bound: [(kind: String, name: String, uid: String)]
        /// A legacy token's Secret (`kubernetes.io/service-account-token`), which it lives as long as.
        public var legacySecret: String?
        public static func == (a: Claims, b: Claims) -> Bool {
            a.namespace == b.namespace && a.serviceAccount == b.serviceAccount && a.serviceAccountUID == b.serviceAccountUID
                && a.audiences == b.audiences && a.expires == b.expires && a.id == b.id && a.legacySecret == b.legacySecret
                && a.bound.map { "\($0.kind)/\($0.name)/\($0.uid)" } == b.bound.map { "\($0.kind)/\($0.name)/\($0.uid)" }
        }
        /// The user the token authenticates as.
        public var user: UserInfo {
            var extra: [String: [String]] = id.isEmpty ? [:] : ["authentication.kubernetes.io/credential-id": ["JTI=\(id)"]]
            for b in bound where b.kind == "Pod" {
                extra["authentication.kubernetes.io/pod-name"] = [b.name]
                extra["authentication.kubernetes.io/pod-uid"] = [b.uid]
            }
            return UserInfo(name: UserInfo.serviceAccountPrefix + "\(namespace):\(serviceAccount)", uid: serviceAccountUID,
                            groups: ["system:serviceaccounts", "system:serviceaccounts:\(namespace)", UserInfo.allAuthenticated], extra: extra)
        }
    }

    public static let defaultIssuer = "https://kubernetes.default.svc.cluster.local"

    public init(key: P256.Signing.PrivateKey, issuer: String = defaultIssuer, audiences: [String]? = nil) {
        rawKey = key.rawRepresentation
        self.issuer = issuer
        self.audiences = audiences ?? [issuer]
        keyID = Self.base64url(Data(SHA256.hash(data: key.publicKey.derRepresentation)))
    }

    /// The key in `path` (PEM), or a new one written there (mode 0600) when there is none.
    public static func loadOrCreateKey(path: String) throws -> P256.Signing.PrivateKey {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            do { return try P256.Signing.PrivateKey(pemRepresentation: text) } catch {
                throw Failure(description: "\(path): not an ECDSA P-256 private key in PEM (\(error))")
            }
        }
        let key = P256.Signing.PrivateKey()
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]),
              rename(tmp, path) == 0 else { throw Failure(description: "writing \(path): errno \(errno)") }
        return key
    }

    static func base64url(_ d: Data) -> String {
        d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func fromBase64url(_ s: Substring) -> Data? {
        guard s.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { return nil }
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t)
    }

    /// A token for `namespace/serviceAccount`, valid `seconds` from `now`.
    public func issue(namespace: String, serviceAccount: String, uid: String, audiences: [String], seconds: Int64, now: Date = Date(),
                      bound: [(kind: String, name: String, uid: String)] = []) throws -> (token: String, expires: Date) {
        let iat = Int64(now.timeIntervalSince1970)
        let exp = iat + seconds
        var k8s: [String: JSONValue] = ["namespace": .string(namespace), "serviceaccount": ["name": .string(serviceAccount), "uid": .string(uid)]]
        for b in bound { k8s[b.kind.lowercased()] = ["name": .string(b.name), "uid": .string(b.uid)] }
        let claims: JSONValue = [
            "aud": .array(audiences.map { .string($0) }), "exp": .int(exp), "iat": .int(iat), "nbf": .int(iat), "iss": .string(issuer),
            "jti": .string(UUID().uuidString.lowercased()), "sub": .string(UserInfo.serviceAccountPrefix + "\(namespace):\(serviceAccount)"),
            "kubernetes.io": .object(k8s),
        ]
        let header: JSONValue = ["alg": "ES256", "kid": .string(keyID)]
        let signingInput = Self.base64url(header.serialized()) + "." + Self.base64url(claims.serialized())
        let signature = try key.signature(for: Data(signingInput.utf8))
        return (signingInput + "." + Self.base64url(signature.rawRepresentation), Date(timeIntervalSince1970: TimeInterval(exp)))
    }

    /// The issuer of legacy, Secret-based tokens.
    public static let legacyIssuer = "kubernetes/serviceaccount"

    /// A legacy token for `namespace/serviceAccount`, kept in the Secret `secretName` (of type
    /// `kubernetes.io/service-account-token`): upstream's claims, no audience, no expiry; it is
    /// valid while that Secret holds it.
    public func issueLegacy(namespace: String, serviceAccount: String, uid: String, secretName: String) throws -> String {
        let claims: JSONValue = [
            "iss": .string(Self.legacyIssuer), "kubernetes.io/serviceaccount/namespace": .string(namespace),
            "kubernetes.io/serviceaccount/secret.name": .string(secretName), "kubernetes.io/serviceaccount/service-account.name": .string(serviceAccount),
            "kubernetes.io/serviceaccount/service-account.uid": .string(uid), "sub": .string(UserInfo.serviceAccountPrefix + "\(namespace):\(serviceAccount)"),
        ]
        let header: JSONValue = ["alg": "ES256", "kid": .string(keyID)]
        let signingInput = Self.base64url(header.serialized()) + "." + Self.base64url(claims.serialized())
        let signature = try key.signature(for: Data(signingInput.utf8))
        return signingInput + "." + Self.base64url(signature.rawRepresentation)
    }

    /// Whether `token` looks like a JWT at all (three base64url parts): others go to the other authenticators.
    public static func looksLikeJWT(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 3 && parts.allSatisfy { !$0.isEmpty && fromBase64url($0) != nil }
    }

    /// The token's claims when it is one of ours, signed, meant for `audiences` (the API's when
    /// nil) and within its times; upstream's words otherwise.
    public func verify(_ token: String, audiences wanted: [String]? = nil, now: Date = Date()) -> Result<Claims, Failure> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let h = Self.fromBase64url(parts[0]), let c = Self.fromBase64url(parts[1]), let sig = Self.fromBase64url(parts[2]),
              let header = try? JSONValue.parse(h), let claims = try? JSONValue.parse(c) else {
            return .failure(Failure(description: "invalid bearer token"))
        }
        // The algorithm is ours alone: `none`, HS256 (a public key as an HMAC secret) and any
        // other are refused before anything else is read.
        guard header["alg"]?.string == "ES256" else { return .failure(Failure(description: "invalid bearer token, unexpected signature algorithm")) }
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: sig),
              key.publicKey.isValidSignature(signature, for: Data((parts[0] + "." + parts[1]).utf8)) else {
            return .failure(Failure(description: "invalid bearer token, square/go-jose: error in cryptographic primitive"))
        }
        if claims["iss"]?.string == Self.legacyIssuer {
            let prefix = "kubernetes.io/serviceaccount/"
            guard let ns = claims[prefix + "namespace"]?.string, let name = claims[prefix + "service-account.name"]?.string,
                  let secret = claims[prefix + "secret.name"]?.string, claims["sub"]?.string == UserInfo.serviceAccountPrefix + "\(ns):\(name)" else {
                return .failure(Failure(description: "invalid bearer token, service account token claims are malformed"))
            }
            return .success(Claims(namespace: ns, serviceAccount: name, serviceAccountUID: claims[prefix + "service-account.uid"]?.string ?? "",
                                   audiences: wanted ?? audiences, expires: .distantFuture, id: "", bound: [], legacySecret: secret))
        }
        guard claims["iss"]?.string == issuer else { return .failure(Failure(description: "invalid bearer token, token issuer not recognized")) }
        let aud = claims["aud"]?.array?.compactMap(\.string) ?? claims["aud"]?.string.map { [$0] } ?? []
        let want = wanted ?? audiences
        guard aud.contains(where: want.contains) else { return .failure(Failure(description: "invalid bearer token, token audiences \(aud) is invalid for the target audiences \(want)")) }
        let t = Int64(now.timeIntervalSince1970)
        guard let exp = claims["exp"]?.int, t < exp else { return .failure(Failure(description: "invalid bearer token, service account token has expired")) }
        if let nbf = claims["nbf"]?.int, t + 60 < nbf { return .failure(Failure(description: "invalid bearer token, service account token is not valid yet")) }
        let k8s = claims["kubernetes.io"] ?? [:]
        guard let ns = k8s["namespace"]?.string, let name = k8s[path: ["serviceaccount", "name"]]?.string,
              claims["sub"]?.string == UserInfo.serviceAccountPrefix + "\(ns):\(name)" else {
            return .failure(Failure(description: "invalid bearer token, service account token claims are malformed"))
        }
        var bound: [(kind: String, name: String, uid: String)] = []
        for (kind, key) in [("Pod", "pod"), ("Secret", "secret"), ("Node", "node")] {
            if let n = k8s[path: [key, "name"]]?.string { bound.append((kind, n, k8s[path: [key, "uid"]]?.string ?? "")) }
        }
        return .success(Claims(namespace: ns, serviceAccount: name, serviceAccountUID: k8s[path: ["serviceaccount", "uid"]]?.string ?? "",
                               audiences: aud, expires: Date(timeIntervalSince1970: TimeInterval(exp)), id: claims["jti"]?.string ?? "", bound: bound))
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    public var jwks: JSONValue {
        let raw = key.publicKey.x963Representation   // 04 || x || y
        return ["keys": [["use": "sig", "kty": "EC", "kid": .string(keyID), "crv": "P-256", "alg": "ES256",
                          "x": .string(Self.base64url(raw.dropFirst().prefix(32))), "y": .string(Self.base64url(raw.suffix(32)))]]]
    }

    /// `/.well-known/openid-configuration`, as upstream serves it.
    public func openIDConfiguration(jwksURI: String? = nil) -> JSONValue {
        ["issuer": .string(issuer), "jwks_uri": .string(jwksURI ?? issuer + "/openid/v1/jwks"), "response_types_supported": ["id_token"],
         "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"]]
    }
}

extension ServiceAccountTokens {
    /// Tokens signed with a key made now and kept nowhere (a server without a data directory,
    /// tests).
    public static func ephemeral(issuer: String = defaultIssuer) -> ServiceAccountTokens {
        ServiceAccountTokens(key: P256.Signing.PrivateKey(), issuer: issuer)
    }

    /// Tokens signed with the key in `path` (made there on first use).
    public static func withKey(at path: String, issuer: String = defaultIssuer, audiences: [String]? = nil) throws -> ServiceAccountTokens {
        ServiceAccountTokens(key: try loadOrCreateKey(path: path), issuer: issuer, audiences: audiences)
    }
}
