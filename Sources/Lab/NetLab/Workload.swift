import CHost
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NetnsKit
import HostOS

/// What a netlab pod runs (`switchyard-netlab serve`, inside the pod's namespace): an HTTP
/// server that answers every request with the pod's name and the client's address (so a
/// reply shows which pod answered and whether the connection was masqueraded), a TCP echo,
/// a UDP server that answers with the pod's name, and optionally iperf3.
public enum Workload {
    public static func serve(netns: String, name: String, http: Int?, echo: Int?, udp: Int?, iperf: Int?) async throws {
        var keep: [AnyObject] = []
        if let echo { keep.append(try EchoServer(netns: netns, port: echo)) }
        if let udp { keep.append(try UDPReplyServer(netns: netns, port: udp, reply: name)) }
        if let iperf {
            let p = CommandRunner.process(["ip", "netns", "exec", netns, "iperf3", "-s", "-p", String(iperf)])
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            keep.append(p)
        }
        guard let http else {
            while true {
                try await Task.sleep(for: .seconds(3600))
                withExtendedLifetime(keep) {}
            }
        }
        // The listener is made inside the pod's namespace (on a thread that entered it), then
        // served by NIO from this one: a socket belongs to the namespace it was made in.
        let fd = try inNamespace(netns) { () -> Int32 in
            var bound: UInt16 = 0
            let fd = ch_tcp_listen(0, UInt16(http), 1024, &bound)
            guard fd >= 0 else { throw NetLabError("HTTP listener in \(netns) on :\(http): \(String(cString: strerror(-fd)))") }
            return fd
        }
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.configureHTTPServerPipeline()
                    try ch.pipeline.syncOperations.addHandler(NameHandler(name: name))
                }
            }
            .withBoundSocket(fd).get()
        try await channel.closeFuture.get()
        withExtendedLifetime(keep) {}
    }

    final class NameHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let name: String
        var keepAlive = true
        init(name: String) { self.name = name }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): keepAlive = head.isKeepAlive
            case .body: break
            case .end:
                let peer = context.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                let body = "\(name) \(peer)\n"
                var headers = HTTPHeaders([("Content-Type", "text/plain"), ("Content-Length", String(body.utf8.count))])
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
                if !keepAlive {
                    let channel = context.channel
                    done.whenComplete { _ in channel.close(promise: nil) }
                }
            }
        }
    }
}
