import NIOCore
import NIOSSL

/// Answers a gRPC server's HTTP/2 PINGs itself, before swift-nio-http2 sees them.
///
/// grpc-go servers (etcd, containerd) estimate the connection's bandwidth-delay product by sending a
/// PING whenever it receives data, so a client making calls one after another gets a PING with
/// nearly every call. swift-nio-http2 counts inbound PINGs among the control frames it limits
/// against floods (200 in 30 seconds) and closes the connection past that: under a few hundred
/// writes every connection to etcd was torn down within a second or two, failing the watches on
/// it ("Stream unexpectedly closed"), and containerd's connection now and then while pods start. This handler sits between the socket (or TLS) and the HTTP/2
/// handler, reads the frames' 9-byte headers, answers each PING with its ACK (as RFC 9113 §6.7
/// requires, with the same 8 bytes) and passes every other frame on untouched. The client's own
/// PINGs' ACKs still reach swift-nio-http2.
public final class PingAnswerer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    public init() {}

    /// The start of a frame whose end has not come yet.
    private var partial: ByteBuffer?

    static let ping: UInt8 = 6, ack: UInt8 = 1, headerLength = 9

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var before = partial {
            before.writeBuffer(&bytes)
            bytes = before
            partial = nil
        }
        // Whole frames, passed on in runs between the PINGs taken out.
        var runStart = bytes.readerIndex
        var at = bytes.readerIndex
        var answered = false
        while bytes.writerIndex - at >= Self.headerLength {
            let high = Int(bytes.getInteger(at: at, as: UInt8.self)!), low = Int(bytes.getInteger(at: at + 1, as: UInt16.self)!)
            let length = high << 16 | low
            guard bytes.writerIndex - at >= Self.headerLength + length else { break }
            let type = bytes.getInteger(at: at + 3, as: UInt8.self)!, flags = bytes.getInteger(at: at + 4, as: UInt8.self)!
            if type == Self.ping, flags & Self.ack == 0, length == 8 {
                if at > runStart { context.fireChannelRead(wrapInboundOut(bytes.getSlice(at: runStart, length: at - runStart)!)) }
                var reply = context.channel.allocator.buffer(capacity: Self.headerLength + 8)
                reply.writeBytes([0, 0, 8, Self.ping, Self.ack, 0, 0, 0, 0])
                reply.writeImmutableBuffer(bytes.getSlice(at: at + Self.headerLength, length: 8)!)
                context.write(NIOAny(reply), promise: nil)
                answered = true
                runStart = at + Self.headerLength + length
            }
            at += Self.headerLength + length
        }
        if at > runStart { context.fireChannelRead(wrapInboundOut(bytes.getSlice(at: runStart, length: at - runStart)!)) }
        if bytes.writerIndex > at { partial = bytes.getSlice(at: at, length: bytes.writerIndex - at) }
        if answered { context.flush() }
    }

    /// Puts the handler in a new connection's pipeline: after TLS if there is TLS, else first.
    /// Given as gRPC's `channelDebuggingCallbacks.onCreateTCPConnection`, which runs once the
    /// connection's pipeline is made and before its first byte is read.
    public static func install(on channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            if let tls = try? sync.handler(type: NIOSSLClientHandler.self) {
                try sync.addHandler(PingAnswerer(), position: .after(tls))
            } else {
                try sync.addHandler(PingAnswerer(), position: .first)
            }
        }
    }
}
