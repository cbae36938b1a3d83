import Foundation
import KubeAPI
import KubeClient
import Synchronization

/// Where the API server sends a review and how it proves who it is: the cluster and user of a
/// kubeconfig-format file (`--authorization-webhook-config-file`), or an admission webhook's
/// `clientConfig` (`url` and `caBundle`).
public struct WebhookEndpoint: Sendable {
    public let url: String
    let client: HTTPJSONClient
    /// The URL's path, where reviews are POSTed.
    let path: String
    public let timeout: Duration

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        /// Worth another try: the connection failed, timed out, or the webhook answered 429 or 5xx.
        public var retriable: Bool
    }

    public init(kubeconfig: Kubeconfig, timeout: Duration) throws {
        guard let u = URL(string: kubeconfig.server) else { throw Failure(description: "\(kubeconfig.server): not a URL", retriable: false) }
        url = kubeconfig.server
        path = u.path.isEmpty ? "/" : u.path + (u.query.map { "?" + $0 } ?? "")
        self.timeout = timeout
        let config = kubeconfig
        client = HTTPJSONClient(server: config.server, host: config.host, port: config.port, tls: config.tls, peer: "the webhook",
                                bearerToken: { config.currentToken })
        if case .failure(let e)? = client.tls { throw Failure(description: "\(url): its TLS settings: \(e)", retriable: false) }
    }

    /// Reads a kubeconfig-format webhook configuration file.
    public static func load(path: String, timeout: Duration) throws -> WebhookEndpoint {
        let config: Kubeconfig
        do { config = try Kubeconfig.load(path: path) } catch { throw Failure(description: "\(error)", retriable: false) }
        return try WebhookEndpoint(kubeconfig: config, timeout: timeout)
    }

    /// An admission webhook's `url` with its `caBundle` (PEM; none: the system's roots), and the
    /// name its certificate must carry when it is not the URL's host (a Service's `NAME.NS.svc`).
    public init(url: String, caBundle: [UInt8]?, serverName: String? = nil, timeout: Duration) throws {
        guard let u = URL(string: url), u.scheme == "https", let host = u.host else {
            throw Failure(description: "\(url): a webhook's URL must be https://", retriable: false)
        }
        try self.init(kubeconfig: Kubeconfig(server: url, host: host, port: u.port ?? 443,
                                             tls: Kubeconfig.TLS(certificateAuthority: caBundle, serverName: serverName)), timeout: timeout)
    }

    /// POSTs `body` and returns the answer; a failure to connect, a timeout, or an answer that
    /// is not a 2xx JSON object throws.
    public func post(_ body: JSONValue) async throws -> JSONValue {
        let client = client, path = path, url = url
        let answer = try await Deadline.run(timeout) {
            try await client.rawRequest("POST", path, body: body.serialized())
        } onTimeout: {
            Failure(description: "Post \"\(url)\": context deadline exceeded", retriable: true)
        }
        guard (200..<300).contains(answer.status) else {
            let text = String(decoding: answer.body.prefix(512), as: UTF8.self)
            throw Failure(description: "Post \"\(url)\": the webhook answered \(answer.status): \(text)",
                          retriable: answer.status == 429 || answer.status >= 500)
        }
        guard let json = try? JSONValue.parse(answer.body), case .object = json else {
            throw Failure(description: "Post \"\(url)\": the webhook's answer is not a JSON object", retriable: false)
        }
        return json
    }
}

/// Runs an operation that cannot be cancelled (a request on a NIO channel) with a deadline: at
/// the deadline the caller gets the timeout's error, and the operation finishes on its own.
enum Deadline {
    /// The caller's continuation, resumed once: by the operation or by the timer.
    final class Slot<T: Sendable>: Sendable {
        let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)
        func resume(with r: Result<T, any Error>) { continuation.withLock { $0.take() }?.resume(with: r) }
    }

    static func run<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T,
                                 onTimeout: @escaping @Sendable () -> any Error) async throws -> T {
        let slot = Slot<T>()
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            slot.continuation.withLock { $0 = c }
            let timer = Task {
                try await Task.sleep(for: timeout)
                slot.resume(with: .failure(onTimeout()))
            }
            Task {
                do { slot.resume(with: .success(try await operation())) } catch { slot.resume(with: .failure(error)) }
                timer.cancel()
            }
        }
    }
}
