import APIAccess
import Crypto
import Foundation
import KubeAPI
import Logging
import Synchronization

/// Bearer tokens checked by a TokenReview (authentication.k8s.io/v1) POSTed to an endpoint, as
/// upstream's webhook token authenticator does it: what a kubelet with
/// `--authentication-token-webhook` sends its API server. Answers are cached for `cacheTTL`
/// (upstream's `authentication.webhook.cacheTTL`, 2 minutes), keyed by the token's hash; a review
/// that cannot be made is an error, never a user.
public final class WebhookTokenAuthenticator: Sendable {
    public enum Outcome: Sendable, Equatable {
        case user(UserInfo)
        /// The review said the token does not authenticate.
        case rejected
        /// No review could be made.
        case error(String)
    }

    public let endpoint: WebhookEndpoint
    public let cacheTTL: Duration
    let logger: Logger
    static let cacheSize = 8192
    struct Entry: Sendable {
        var outcome: Outcome
        var expires: ContinuousClock.Instant
    }
    /// By the token's SHA-256 (the token itself is not kept).
    let cache = Mutex<[Data: Entry]>([:])
    let counters = Mutex((calls: 0, hits: 0))

    public init(endpoint: WebhookEndpoint, cacheTTL: Duration = .seconds(120), logger: Logger = Logger(label: "switchyard.authentication.webhook")) {
        self.endpoint = endpoint
        self.cacheTTL = cacheTTL
        self.logger = logger
    }

    /// Reviews sent and answers found in the cache.
    public var stats: (calls: Int, hits: Int) { counters.withLock { $0 } }

    public func authenticate(token: String) async -> Outcome {
        let key = Data(SHA256.hash(data: Data(token.utf8)))
        let now = ContinuousClock.now
        if let hit = cache.withLock({ c -> Outcome? in
            guard let e = c[key] else { return nil }
            if e.expires > now { return e.outcome }
            c[key] = nil
            return nil
        }) {
            counters.withLock { $0.hits += 1 }
            return hit
        }
        counters.withLock { $0.calls += 1 }
        let review: JSONValue = ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": ["creationTimestamp": .null],
                                 "spec": ["token": .string(token)], "status": [:]]
        let outcome: Outcome
        do {
            outcome = Self.outcome(try await endpoint.post(review)["status"] ?? .null)
        } catch {
            logger.error("Failed to make webhook authenticator request: \(error)")
            return .error("\(error)")
        }
        if cacheTTL > .zero {
            cache.withLock { c in
                if c.count >= Self.cacheSize { c = c.filter { $0.value.expires > now } }
                if c.count < Self.cacheSize { c[key] = Entry(outcome: outcome, expires: now + cacheTTL) }
            }
        }
        return outcome
    }

    /// A TokenReview's status: the user it names when it authenticated.
    static func outcome(_ status: JSONValue) -> Outcome {
        guard status["authenticated"]?.bool == true, let u = status["user"], let name = u["username"]?.string, !name.isEmpty else {
            return .rejected
        }
        var extra: [String: [String]] = [:]
        if case .object(let o)? = u["extra"] { for (k, v) in o { extra[k] = v.array?.compactMap(\.string) ?? [] } }
        return .user(UserInfo(name: name, uid: u["uid"]?.string ?? "", groups: u["groups"]?.array?.compactMap(\.string) ?? [], extra: extra))
    }
}
