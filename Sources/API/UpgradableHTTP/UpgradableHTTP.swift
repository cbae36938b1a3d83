import HTTPTypes
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// HTTP/1.1 with the WebSocket upgrade (HummingbirdWebSocket's channel), where a request asking
/// to upgrade to anything else (kubectl 1.29's `Upgrade: SPDY/3.1`) is served as the plain
/// request it also is. swift-nio's typed upgrade handler drops the head of a request whose
/// `Upgrade` no upgrader takes, so the connection would close without an answer; here such a
/// request reaches the upgrade handler without its `Upgrade` header, and the responder answers it.
public enum UpgradableHTTP {
    public typealias ShouldUpgrade = @Sendable (HTTPRequest, any NIOCore.Channel, Logger) async throws
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>>

    /// The client certificate (DER) of the TLS connection a request came on, if the client
    /// presented one (asked on the channel's event loop, where the TLS handler lives).
    public static func clientCertificate(_ channel: any Channel) async -> [UInt8]? {
        try? await channel.eventLoop.submit { () -> [UInt8]? in
            guard let tls = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) else { return nil }
            return try tls.peerCertificate?.toDERBytes()
        }.get()
    }

    /// The server builder: HTTP/1.1, WebSocket messages up to `maxFrameSize`, no automatic pings.
    public static func builder(maxFrameSize: Int, shouldUpgrade: @escaping ShouldUpgrade) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            FilteredChannel(inner: HTTP1WebSocketUpgradeChannel(
                responder: responder,
                configuration: .init(ws: .init(maxFrameSize: maxFrameSize, autoPing: .disabled)),
                shouldUpgrade: shouldUpgrade))
        }
    }

    struct FilteredChannel: ServerChildChannel {
        typealias Value = HTTP1WebSocketUpgradeChannel.Value
        let inner: HTTP1WebSocketUpgradeChannel

        func setup(channel: any NIOCore.Channel, logger: Logger) -> EventLoopFuture<Value> {
            inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
                let ops = channel.pipeline.syncOperations
                let upgrader = try ops.handler(type: NIOTypedHTTPServerUpgradeHandler<HTTP1WebSocketUpgradeChannel.UpgradeResult>.self)
                try ops.addHandler(OtherUpgradesAsPlainRequests(), position: .before(upgrader))
                return value
            }
        }

        func handle(value: Value, logger: Logger) async { await inner.handle(value: value, logger: logger) }
    }

    /// Takes `Upgrade` (and its `Connection` token) off a request head that does not ask for a
    /// WebSocket; steps out of the pipeline before a WebSocket upgrade replaces HTTP.
    final class OtherUpgradesAsPlainRequests: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(var head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade") else {
                context.fireChannelRead(data)
                return
            }
            let protocols = head.headers[canonicalForm: "upgrade"].map { $0.lowercased() }
            if protocols.contains("websocket") {
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            head.headers.remove(name: "upgrade")
            let connection = head.headers[canonicalForm: "connection"].filter { $0.lowercased() != "upgrade" }.map(String.init)
            head.headers.remove(name: "connection")
            for c in connection { head.headers.add(name: "connection", value: c) }
            context.fireChannelRead(wrapInboundOut(.head(head)))
        }
    }
}
