import Foundation
import KubeAPI
import KubeClient
import Logging
import Synchronization

/// `--use-service-account-credentials`: each controller talks to the API server as a service
/// account of its own in `kube-system` (`deployment-controller`, `node-controller`, …), bound to
/// its `system:controller:NAME` role, as upstream's controller manager does. The manager's own
/// identity (what `base` authenticates as) makes the accounts when missing and asks the
/// TokenRequest API for their tokens (an hour each, renewed when 80% of it has passed);
/// the shared informers keep the manager's identity.
public final class ServiceAccountCredentials: Sendable {
    public static let namespace = "kube-system"
    /// Upstream's: tokens of an hour.
    public static let expirationSeconds = 3600

    let root: API
    let base: KubeClient
    let logger: Logger
    struct Token {
        var value: String
        var renewAt: Date
    }
    let tokens = Mutex<[String: Token?]>([:])

    public init(base: KubeClient, logger: Logger = Logger(label: "switchyard.controller-manager")) {
        self.base = base
        root = API(base, fieldManager: "kube-controller-manager")
        self.logger = logger
    }

    /// The API as `serviceAccount`: its requests carry the account's current token (none until
    /// the account is registered and `start` got it).
    public func api(serviceAccount: String, fieldManager: String) -> API {
        var client = KubeClient(config: base.config) { [self] in tokens.withLock { $0[serviceAccount]??.value } }
        client.dial = base.dial
        return API(client, fieldManager: fieldManager)
    }

    /// An account whose token `start` gets and `run` renews (a controller that runs uses it).
    public func register(_ serviceAccount: String) {
        tokens.withLock { if $0[serviceAccount] == nil { $0[serviceAccount] = .some(nil) } }
    }

    public var accounts: [String] { tokens.withLock { $0.keys.sorted() } }

    /// Makes each account (when missing) and gets its first token, trying again until every one
    /// has one (a server still starting, a role not yet reconciled) or the task is cancelled.
    public func start() async {
        var delay: Duration = .milliseconds(200)
        while !Task.isCancelled {
            var missing: [String] = []
            for name in accounts where tokens.withLock({ $0[name]??.value }) == nil {
                do { try await renew(name) } catch {
                    missing.append(name)
                    logger.warning("service account kube-system/\(name): \(error)")
                }
            }
            if missing.isEmpty { return }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }

    /// Renews each token (once `start` got the first) when it is due, until cancelled.
    public func run() async {
        while !Task.isCancelled {
            let now = Date()
            let due = tokens.withLock { t in t.compactMap { k, v in v.map { $0.renewAt <= now } == true ? k : nil } }
            for name in due {
                do { try await renew(name) } catch { logger.warning("renewing the token of kube-system/\(name): \(error)") }
            }
            let next = tokens.withLock { t in t.values.compactMap { $0?.renewAt }.min() } ?? now.addingTimeInterval(10)
            try? await Task.sleep(for: .seconds(max(1, min(next.timeIntervalSinceNow, 60))))
        }
    }

    /// The account (made if missing) and a new token for it.
    func renew(_ name: String) async throws {
        let account = API.path("v1", "serviceaccounts", namespace: Self.namespace, name: name)
        do { _ = try await root.get(account) } catch let e as APIStatusError where e.isNotFound {
            do {
                _ = try await root.create(API.path("v1", "serviceaccounts", namespace: Self.namespace),
                                          ["apiVersion": "v1", "kind": "ServiceAccount", "metadata": ["name": .string(name), "namespace": .string(Self.namespace)]])
            } catch let e as APIStatusError where e.isAlreadyExists {}
        }
        let answer = try await root.create(account + "/token", ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                                                "spec": ["expirationSeconds": .int(Int64(Self.expirationSeconds))]])
        guard let token = answer[path: ["status", "token"]]?.string, !token.isEmpty else {
            throw APIStatusError(code: 0, reason: "InternalError", message: "the TokenRequest for kube-system/\(name) returned no token")
        }
        let lifetime = answer[path: ["status", "expirationTimestamp"]]?.string.flatMap(Time.parse).map { $0.timeIntervalSinceNow }
            ?? Double(Self.expirationSeconds)
        tokens.withLock { $0[name] = Token(value: token, renewAt: Date().addingTimeInterval(max(5, lifetime * 0.8))) }
    }
}
