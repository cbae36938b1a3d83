import Foundation
import HTTPTypes
import HummingbirdCore
import NIOCore
import NIOPosix
import KubeAPI
import KubeStore
import Logging
import ServiceLifecycle

/// `switchyard server`: the API over HTTP, one responder for every path, on HummingbirdCore's
/// HTTP/1.1 server. Not through Hummingbird's `Application`: its date cache builds a Gregorian
/// calendar in the current time zone, which loads ICU's time zone data (about 4 MB resident) and
/// wakes the idle server every second; the `Date` header is formatted here instead.
public struct APIServer: Sendable {
    public let handler: APIHandler
    public let host: String
    public let port: Int
    let logger: Logger

    public init(handler: APIHandler, host: String = "127.0.0.1", port: Int = 8080, logger: Logger = Logger(label: "switchyard.server")) {
        self.handler = handler
        self.host = host
        self.port = port
        self.logger = logger
    }

    /// Converts a Hummingbird request, runs it, and converts the answer.
    static func respond(_ handler: APIHandler, _ request: Request) async -> Response {
        var request = request
        var query: [String: String] = [:]
        for (k, v) in request.uri.queryParameters { query[String(k)] = String(v) }
        var body = Data()
        if request.method == .post || request.method == .put || request.method == .patch || request.method == .delete {
            do {
                let buf = try await request.collectBody(upTo: APIHandler.maxBodySize)
                body = Data(buf.readableBytesView)
            } catch {
                return Self.response(.error(.tooLarge(APIHandler.maxBodySize)))
            }
        }
        let req = APIRequest(method: request.method.rawValue, path: request.uri.path, query: query,
                             contentType: request.headers[.contentType], accept: request.headers[.accept], body: body)
        return Self.response(await handler.handle(req))
    }

    static func response(_ r: APIResponse) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = r.contentType
        headers[.cacheControl] = "no-cache, private"
        let status = HTTPResponse.Status(code: r.code)
        switch r.body {
        case .json(let j):
            let d = Data((j.text() + "\n").utf8)
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: d)))
        case .text(let t):
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: t)))
        case .bytes(let d, _):
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: d)))
        case .stream(let s):
            headers[.transferEncoding] = "chunked"
            return Response(status: status, headers: headers, body: ResponseBody { writer in
                for try await chunk in s { try await writer.write(ByteBuffer(bytes: chunk)) }
                try await writer.finish(nil)
            })
        }
    }

    /// Serves until the task is cancelled (or SIGTERM through the service group).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let handler = self.handler
        let server = try HTTPServerBuilder.http1().buildServer(
            configuration: ServerConfiguration(address: .hostname(host, port: port)),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            responder: { request, writer, _ in
                var response = await Self.respond(handler, request)
                response.headers[.date] = Self.httpDate()
                try await writer.write(response: response.head, body: response.body)
            },
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) })
        // Watches would hold a graceful shutdown open for their whole timeout: the closer, last
        // in the group, is shut down first and ends them.
        let group = ServiceGroup(configuration: .init(services: [.init(service: server), .init(service: WatchCloser(handler: handler))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// An HTTP `Date` header value (RFC 9110's IMF-fixdate, `Fri, 27 Nov 2026 08:03:33 GMT`).
    static func httpDate(_ seconds: time_t = time(nil)) -> String {
        var t = seconds
        var tm = tm()
        gmtime_r(&t, &tm)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
    }

    /// Ends the open watches when the server begins to shut down.
    struct WatchCloser: ServiceLifecycle.Service {
        let handler: APIHandler
        func run() async throws {
            try? await gracefulShutdown()
            handler.closeWatches()
        }
    }

    /// A kubeconfig for clients of a server at `url` (no credentials: TLS, tokens and RBAC come later).
    public static func kubeconfig(server url: String) -> String {
        """
        apiVersion: v1
        kind: Config
        clusters:
        - name: switchyard
          cluster:
            server: \(url)
        contexts:
        - name: switchyard
          context:
            cluster: switchyard
            user: switchyard
            namespace: default
        current-context: switchyard
        users:
        - name: switchyard
          user: {}

        """
    }
}
