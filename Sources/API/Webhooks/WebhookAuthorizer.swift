import APIAccess
import Foundation
import KubeAPI
import Logging
import Synchronization

/// `--authorization-mode=Webhook`: each decision is a SubjectAccessReview POSTed to a remote
/// service, as upstream's webhook authorizer sends it; its answer is cached (allowed for
/// `--authorization-webhook-cache-authorized-ttl`, otherwise for `…-unauthorized-ttl`), and a
/// call that fails is tried again with backoff, then fails closed: no opinion, with the error.
public final class WebhookAuthorizer: Authorizer, Sendable {
    /// `--authorization-webhook-version`: the SubjectAccessReview version sent.
    public enum Version: String, Sendable, CaseIterable {
        case v1, v1beta1
    }

    /// Upstream's `DefaultAuthorizationWebhookRetryBackoff`: 500 ms, ×1.5, five tries.
    public struct Backoff: Sendable {
        public var initial: Duration
        public var factor: Double
        public var steps: Int
        public init(initial: Duration = .milliseconds(500), factor: Double = 1.5, steps: Int = 5) {
            self.initial = initial
            self.factor = factor
            self.steps = steps
        }
    }

    public let endpoint: WebhookEndpoint
    public let version: Version
    public let authorizedTTL: Duration
    public let unauthorizedTTL: Duration
    let backoff: Backoff
    let logger: Logger

    /// Upstream's cache holds 8,192 decisions.
    static let cacheSize = 8192
    struct Cached {
        var decision: Decision
        var expires: ContinuousClock.Instant
        var stored: UInt64
    }
    struct Cache {
        var entries: [RequestAttributes: Cached] = [:]
        var counter: UInt64 = 0
    }
    let cache = Mutex(Cache())
    let counters = Mutex((calls: 0, hits: 0))

    public init(endpoint: WebhookEndpoint, version: Version = .v1beta1, authorizedTTL: Duration = .seconds(300),
                unauthorizedTTL: Duration = .seconds(30), backoff: Backoff = Backoff(),
                logger: Logger = Logger(label: "switchyard.authorization.webhook")) {
        self.endpoint = endpoint
        self.version = version
        self.authorizedTTL = authorizedTTL
        self.unauthorizedTTL = unauthorizedTTL
        self.backoff = backoff
        self.logger = logger
    }

    /// Reviews sent and decisions answered from the cache.
    public var stats: (calls: Int, hits: Int) { counters.withLock { $0 } }

    public func authorize(_ a: RequestAttributes) async -> Decision {
        // What the review says is the key: a resource request's path is not in it.
        var key = a
        if key.isResourceRequest { key.path = "" }
        let now = ContinuousClock.now
        if let hit = cache.withLock({ c -> Decision? in
            guard let e = c.entries[key] else { return nil }
            if e.expires > now { return e.decision }
            c.entries[key] = nil
            return nil
        }) {
            counters.withLock { $0.hits += 1 }
            return hit
        }
        let review: JSONValue = [
            "apiVersion": .string("authorization.k8s.io/\(version.rawValue)"), "kind": "SubjectAccessReview",
            "metadata": ["creationTimestamp": .null], "spec": Self.spec(a, version: version), "status": ["allowed": false],
        ]
        var wait = backoff.initial
        var lastError = ""
        for attempt in 1...max(1, backoff.steps) {
            counters.withLock { $0.calls += 1 }
            do {
                let answer = try await endpoint.post(review)
                let decision = Self.decision(answer["status"] ?? .null)
                let ttl = decision.allowed ? authorizedTTL : unauthorizedTTL
                if ttl > .zero { store(key, decision, until: .now + ttl) }
                return decision
            } catch let e as WebhookEndpoint.Failure {
                lastError = e.description
                guard e.retriable else { break }
            } catch {
                // Not connected at all: worth another try.
                lastError = "\(error)"
            }
            guard attempt < backoff.steps else { break }
            try? await Task.sleep(for: wait)
            wait = wait * backoff.factor
        }
        logger.error("Failed making webhook call: \(lastError)")
        return .error(lastError)
    }

    func store(_ key: RequestAttributes, _ d: Decision, until: ContinuousClock.Instant) {
        cache.withLock { c in
            if c.entries.count >= Self.cacheSize {
                // Full: the expired go, then the oldest eighth.
                let now = ContinuousClock.now
                c.entries = c.entries.filter { $0.value.expires > now }
                if c.entries.count >= Self.cacheSize {
                    let cut = c.entries.values.map(\.stored).sorted()[Self.cacheSize / 8]
                    c.entries = c.entries.filter { $0.value.stored > cut }
                }
            }
            c.counter += 1
            c.entries[key] = Cached(decision: d, expires: until, stored: c.counter)
        }
    }

    /// The review's spec as upstream writes it (empty fields left out; v1beta1 names the
    /// groups `group`).
    public static func spec(_ a: RequestAttributes, version: Version) -> JSONValue {
        var spec: [String: JSONValue] = [:]
        func put(_ o: inout [String: JSONValue], _ k: String, _ v: String) { if !v.isEmpty { o[k] = .string(v) } }
        if a.isResourceRequest {
            var r: [String: JSONValue] = [:]
            put(&r, "namespace", a.namespace)
            put(&r, "verb", a.verb)
            put(&r, "group", a.apiGroup)
            put(&r, "version", a.apiVersion)
            put(&r, "resource", a.resource)
            put(&r, "subresource", a.subresource)
            put(&r, "name", a.name)
            spec["resourceAttributes"] = .object(r)
        } else {
            var n: [String: JSONValue] = [:]
            put(&n, "path", a.path)
            put(&n, "verb", a.verb)
            spec["nonResourceAttributes"] = .object(n)
        }
        put(&spec, "user", a.user.name)
        if !a.user.groups.isEmpty { spec[version == .v1 ? "groups" : "group"] = .array(a.user.groups.map { .string($0) }) }
        if !a.user.extra.isEmpty {
            spec["extra"] = .object(a.user.extra.mapValues { .array($0.map { .string($0) }) })
        }
        put(&spec, "uid", a.user.uid)
        return .object(spec)
    }

    /// The answer's status: allowed, denied (no later authorizer is asked), or no opinion.
    static func decision(_ status: JSONValue) -> Decision {
        let reason = status["reason"]?.string ?? ""
        if status["allowed"]?.bool == true { return .allow(reason) }
        if status["denied"]?.bool == true { return .deny(reason) }
        if let e = status["evaluationError"]?.string, !e.isEmpty, reason.isEmpty { return .noOpinion(e) }
        return .noOpinion(reason)
    }
}
