import HTTPTypes
import HummingbirdWebSocket
import Logging
import NIOCore
import WSClient

/// An interactive exec's stream, relayed between the client's WebSocket and the container
/// runtime's streaming server (the URL CRI's `Exec` answers with). containerd 1.6's server
/// speaks `v4.channel.k8s.io`; the client may speak v5, whose one addition, the message that
/// closes stdin (channel 255), v4 has no word for: it is not passed on.
enum RuntimeStream {
    static func relay(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter, to url: String) async throws {
        var headers = HTTPFields()
        headers[.secWebSocketProtocol] = "v4.channel.k8s.io"
        let ws = url.replacingOccurrences(of: "http://", with: "ws://").replacingOccurrences(of: "https://", with: "wss://")
        try await WebSocketClient.connect(url: ws, configuration: .init(maxFrameSize: KubeletServer.maxFrame, additionalHeaders: headers),
                                          logger: Logger(label: "switchyard.kubelet.exec")) { fromRuntime, toRuntime, _ in
            try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask {
                    for try await m in inbound.messages(maxSize: KubeletServer.maxFrame) {
                        guard case .binary(let b) = m else { continue }
                        if b.readableBytesView.first == RemoteCommand.close { continue }
                        try await toRuntime.writeBinaryMessage(b)
                    }
                    try? await toRuntime.close(.normalClosure, reason: nil)
                }
                for try await m in fromRuntime.messages(maxSize: KubeletServer.maxFrame) {
                    switch m {
                    case .binary(let b): try await outbound.writeBinaryMessage(b)
                    case .text(let t): try await outbound.write(.text(t))
                    }
                }
                g.cancelAll()
            }
        }
    }
}
