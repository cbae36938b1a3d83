import Foundation
import HTTPTypes
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import KubeAPI
import Kubelet
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import UpgradableHTTP

/// The kubelet's API (upstream's port 10250), over HTTPS:
/// - `GET /healthz`: `ok`;
/// - `GET /pods`: the pods bound to this node, a `PodList`;
/// - `GET /containerLogs/NS/POD/CONTAINER`: a container's log (`follow`, `tailLines`,
///   `timestamps`, `previous`, `limitBytes`, `sinceSeconds`, `sinceTime`);
/// - `/exec/NS/POD/CONTAINER` (or `/exec/NS/POD/UID/CONTAINER`) upgraded to a WebSocket speaking
///   `v5.channel.k8s.io` or `v4.channel.k8s.io`: the command's output on channels 1 and 2, its
///   end on channel 3. Without stdin and a TTY the command runs to its end through CRI's
///   ExecSync; with either, the stream is relayed to the runtime's streaming server (CRI's Exec).
///
/// The API server reaches it for `kubectl logs` and `kubectl exec`. Every request, the
/// WebSocket upgrade too, is authenticated and authorised first (`KubeletAccess`).
public struct KubeletServer: Sendable {
    public let kubelet: Kubelet
    public let address: String
    public let port: Int
    public let tls: TLSConfiguration?
    public let access: KubeletAccess
    let logger: Logger

    public init(kubelet: Kubelet, address: String, port: Int, tls: TLSConfiguration?, access: KubeletAccess = .alwaysAllow,
                logger: Logger = Logger(label: "switchyard.kubelet.server")) {
        self.kubelet = kubelet
        self.address = address
        self.port = port
        self.tls = tls
        self.access = access
        self.logger = logger
    }

    /// Serves until cancelled; `onRunning` gets the port listened on (the chosen one for port 0).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let kubelet = self.kubelet, access = self.access
        let upgrade = UpgradableHTTP.builder(maxFrameSize: Self.maxFrame) { request, channel, _ in
            // Refused, the request is not upgraded: the responder answers it with the refusal.
            let path = (request.path ?? "").split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
            let certificate = access.x509 ? await UpgradableHTTP.clientCertificate(channel) : nil
            if await access.check(certificate: certificate, authorization: request.headerFields[.authorization],
                                  method: request.method.rawValue, path: path) != nil {
                return .dontUpgrade
            }
            return Self.shouldUpgrade(kubelet, request)
        }
        let builder = try tls.map { try HTTPServerBuilder.tls(upgrade, tlsConfiguration: $0) } ?? upgrade
        let server = try builder.buildServer(
            configuration: ServerConfiguration(address: .hostname(address, port: port)),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            responder: { request, writer, channel in
                let certificate = access.x509 ? await UpgradableHTTP.clientCertificate(channel) : nil
                let response: Response
                if let refused = await access.check(certificate: certificate, authorization: request.headers[.authorization],
                                                    method: request.method.rawValue, path: request.uri.path) {
                    response = Self.text(HTTPResponse.Status(code: refused.status), refused.message)
                } else {
                    response = await Self.respond(kubelet, request)
                }
                try await writer.write(response: response.head, body: response.body)
            },
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) })
        // Cancelled, the server shuts down gracefully (a cancelled HummingbirdCore server logs
        // its open connections as errors).
        // The group runs in a task of its own, so the caller's cancellation reaches it only as
        // that graceful shutdown.
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], logger: logger))
        let running = Task { try await group.run() }
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }

    static let maxFrame = 1 << 20

    // MARK: HTTP

    static func respond(_ kubelet: Kubelet, _ request: Request) async -> Response {
        let parts = request.uri.path.split(separator: "/").map(String.init)
        var query: [String: String] = [:]
        for (k, v) in request.uri.queryParameters { query[String(k)] = String(v) }
        guard request.method == .get || (parts.first == "exec" && request.method == .post) else {
            return text(.methodNotAllowed, "405 method not allowed")
        }
        switch parts.first {
        case "healthz" where parts.count == 1:
            return text(.ok, "ok")
        case "metrics" where parts.count == 1:
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: kubelet.metrics.text())))
        case "pods" where parts.count == 1:
            let list: JSONValue = ["kind": "PodList", "apiVersion": "v1", "metadata": [:], "items": .array(kubelet.boundPods)]
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: list.bytes())))
        case "containerLogs" where parts.count == 4:
            do {
                let options = try ContainerLogOptions(query: query)
                let stream = try await kubelet.containerLogs(namespace: parts[1], pod: parts[2], container: parts[3],
                                                             previous: ["true", "1"].contains(query["previous"] ?? ""), options: options)
                var headers = HTTPFields()
                headers[.contentType] = "text/plain"
                headers[.transferEncoding] = "chunked"
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    for try await chunk in stream { try await writer.write(ByteBuffer(bytes: chunk)) }
                    try await writer.finish(nil)
                })
            } catch let e as KubeletAPIError {
                return text(HTTPResponse.Status(code: e.code), e.description)
            } catch {
                return text(.badRequest, "\(error)")
            }
        case "exec" where parts.count == 4 || parts.count == 5:
            // Not upgraded: a client that does not speak WebSocket (SPDY/3.1 is not served).
            return text(.badRequest, "Upgrade request required: this kubelet serves exec over WebSocket (\(RemoteCommand.protocols.joined(separator: ", ")))")
        default:
            return text(.notFound, "404 page not found")
        }
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body + "\n")))
    }

    // MARK: exec

    static func shouldUpgrade(_ kubelet: Kubelet, _ request: HTTPRequest) -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let full = request.path ?? ""
        let path = full.split(separator: "?", maxSplits: 1).first ?? ""
        let parts = path.split(separator: "/").map(String.init)
        guard parts.first == "exec", parts.count == 4 || parts.count == 5,
              let chosen = RemoteCommand.negotiate(request.headerFields[.secWebSocketProtocol]) else { return .dontUpgrade }
        let rawQuery = full.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        var asked = RemoteCommand.ExecOptions(query: RemoteCommand.query(rawQuery))
        asked.container = parts.last!
        let options = asked
        let (namespace, pod, uid) = (parts[1], parts[2], parts.count == 5 ? parts[3] : nil)
        var headers = HTTPFields()
        headers[.secWebSocketProtocol] = chosen
        return .upgrade(headers) { inbound, outbound, _ in
            func send(_ channel: UInt8, _ bytes: [UInt8]) async throws {
                var rest = bytes[...]
                repeat {
                    let part = rest.prefix(maxFrame - 1)
                    rest = rest.dropFirst(part.count)
                    try await outbound.write(.binary(ByteBuffer(bytes: RemoteCommand.frame(channel, part))))
                } while !rest.isEmpty
            }
            let status: JSONValue
            if options.stdin || options.tty {
                // Interactive: relayed to the runtime's streaming server (CRI `Exec`), which
                // writes the end itself.
                do {
                    let url = try await kubelet.execStream(namespace: namespace, pod: pod, uid: uid, container: options.container, command: options.command,
                                                           stdin: options.stdin, stdout: options.stdout, stderr: options.stderr, tty: options.tty)
                    try await RuntimeStream.relay(inbound, outbound, to: url)
                    return
                } catch let e as KubeletAPIError {
                    status = RemoteCommand.failure(e.description, reason: e.code == 404 ? "NotFound" : "BadRequest", code: e.code)
                } catch {
                    status = RemoteCommand.failure("Internal error occurred: error executing command in container: \(error)")
                }
            } else {
                do {
                    let r = try await kubelet.exec(namespace: namespace, pod: pod, uid: uid, container: options.container, command: options.command)
                    if options.stdout, !r.stdout.isEmpty { try await send(RemoteCommand.stdout, Array(r.stdout)) }
                    if options.stderr, !r.stderr.isEmpty { try await send(RemoteCommand.stderr, Array(r.stderr)) }
                    status = RemoteCommand.exitStatus(r.exitCode, command: options.command)
                } catch let e as KubeletAPIError {
                    status = RemoteCommand.failure(e.description, reason: e.code == 404 ? "NotFound" : "BadRequest", code: e.code)
                } catch {
                    status = RemoteCommand.failure("Internal error occurred: error executing command in container: \(error)")
                }
            }
            try await send(RemoteCommand.error, status.bytes())
        }
    }
}

extension KubeletServer {
    /// The kubelet with its API: the server listens first (on the configured port, or the one
    /// the system picks for 0, which the Node's `daemonEndpoints` then names), then the kubelet
    /// runs; both until cancelled. A port that cannot be listened on is an error at once.
    public static func serve(_ kubelet: Kubelet, access: KubeletAccess = .alwaysAllow, logger: Logger = Logger(label: "switchyard.kubelet.server")) async throws {
        let c = kubelet.config
        let ip = c.nodeIP.isEmpty ? NodeDescription.defaultNodeIP() : c.nodeIP
        let files = try ServingCertificate.files(certFile: c.tlsCertFile, keyFile: c.tlsPrivateKeyFile,
                                                 certDir: c.certDir.isEmpty ? c.rootDir + "/pki" : c.certDir,
                                                 hostname: c.nodeName, addresses: [ip, "127.0.0.1"])
        let server = KubeletServer(kubelet: kubelet, address: c.address, port: c.port,
                                   tls: try ServingCertificate.tlsConfiguration(cert: files.cert, key: files.key, clientCAFile: c.clientCAFile),
                                   access: access, logger: logger)
        let (listening, announce) = AsyncStream.makeStream(of: Int.self)
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask {
                do {
                    try await server.run { port in announce.yield(port); announce.finish() }
                } catch {
                    announce.finish()
                    throw KubeletAPIError(0, "the kubelet's API cannot listen on \(c.address):\(c.port): \(error)")
                }
            }
            var first: Int?
            for await port in listening { first = port }
            guard let port = first else { try await g.next(); return }
            kubelet.servingPort = port
            logger.info("kubelet API on https://\(c.address):\(port)")
            g.addTask { try await kubelet.run() }
            try await g.next()
            g.cancelAll()
        }
    }
}
