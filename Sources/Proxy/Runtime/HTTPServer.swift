import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import HostOS

/// A response from `SimpleHTTPServer`'s handler.
public struct SimpleResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: [(String, String)]
    public var body: String
    public init(status: HTTPResponseStatus = .ok, headers: [(String, String)] = [], body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

extension ListenError {
    /// From what NIO threw when it could not bind.
    public init(host: String, port: Int, underlying: any Error) {
        if let io = underlying as? IOError {
            self.init(host: host, port: port, errno: io.errnoCode)
        } else if let e = underlying as? SocketAddressError {
            self.init(host: host, port: port, errno: nil, reason: "\(e)".contains("unknown") ? "not an IP address" : "\(e)")
        } else {
            self.init(host: host, port: port, errno: nil, reason: "\(underlying)")
        }
    }
}

/// A small HTTP/1.1 server on swift-nio for `/healthz`, `/metrics` and the
/// per-service health check node ports.
public final class SimpleHTTPServer: Sendable {
    public typealias Handler = @Sendable (_ method: HTTPMethod, _ path: String) -> SimpleResponse
    let channel: any Channel

    /// Binds `host:port` (port 0 picks one) and serves `handler` until `close()`.
    public init(host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                handler: @escaping Handler) async throws {
        do {
            channel = try await Self.bind(host: host, port: port, group: group, handler: handler)
        } catch {
            throw ListenError(host: host, port: port, underlying: error)
        }
    }

    private static func bind(host: String, port: Int, group: any EventLoopGroup, handler: @escaping Handler) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.pipeline.configureHTTPServerPipeline().flatMap {
                    ch.pipeline.addHandler(Responder(handler: handler))
                }
            }
            .bind(host: host, port: port).get()
    }

    public var port: Int { channel.localAddress?.port ?? 0 }

    public func close() async {
        try? await channel.close()
    }

    final class Responder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let handler: Handler
        var head: HTTPRequestHead?
        init(handler: @escaping Handler) { self.handler = handler }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let h = head else { return }
                let path = String(h.uri.split(separator: "?", maxSplits: 1).first ?? "")
                let r = handler(h.method, path)
                var headers = HTTPHeaders(r.headers)
                headers.replaceOrAdd(name: "Content-Length", value: String(r.body.utf8.count))
                if !h.isKeepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: r.status, headers: headers))), promise: nil)
                if h.method != .HEAD {
                    context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: r.body)))), promise: nil)
                }
                let keep = h.isKeepAlive
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                    if !keep { channel.close(promise: nil) }
                }
                head = nil
            }
        }
    }
}
