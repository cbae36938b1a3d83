import ClusterPKI
import Foundation
import HTTPTypes
import HummingbirdCore
import HummingbirdTLS
import KubeAPI
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// A webhook for the tests: an HTTPS server on 127.0.0.1 with a certificate of its own CA,
/// answering each POSTed review with what `answer` returns, and remembering what it got.
final class TestWebhookServer: Sendable {
    struct Received: Sendable {
        var path: String
        var authorization: String?
        var body: JSONValue
    }
    let caPEM: String
    let port: Int
    final class Log: Sendable { let list = Mutex<[Received]>([]) }
    let log: Log
    let task: Task<Void, any Error>
    let dir: String

    /// The status and body sent back for a request.
    typealias Answer = @Sendable (Received) async -> (status: Int, body: JSONValue)

    init(answer: @escaping Answer) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-webhook-\(UUID().uuidString)").path
        self.dir = dir
        let pki = try ClusterPKI.loadOrCreate(in: dir)
        caPEM = pki.caPEM
        let pair = try pki.servingCertificate(dnsNames: ["localhost"], addresses: ["127.0.0.1"])
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: try NIOSSLCertificate.fromPEMFile(pair.cert).map { .certificate($0) },
                                                          privateKey: .privateKey(try NIOSSLPrivateKey(file: pair.key, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        let log = Log()
        self.log = log
        let ready = AsyncStream<Int>.makeStream()
        let logger = Logger(label: "test.webhook")
        let server = try HTTPServerBuilder.tls(.http1(), tlsConfiguration: tls).buildServer(
            configuration: ServerConfiguration(address: .hostname("127.0.0.1", port: 0)),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
            responder: { request, writer, _ in
                let bytes = try await request.body.collect(upTo: 1 << 20)
                let r = Received(path: request.uri.path, authorization: request.headers[.authorization],
                                 body: (try? JSONValue.parse(Data(buffer: bytes))) ?? .null)
                log.list.withLock { $0.append(r) }
                let (status, body) = await answer(r)
                var headers = HTTPFields()
                headers[.contentType] = "application/json"
                let response = Response(status: .init(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body.bytes())))
                try await writer.write(response: response.head, body: response.body)
            },
            onServerRunning: { channel in ready.continuation.yield(channel.localAddress?.port ?? 0) })
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], logger: logger))
        task = Task { try await group.run() }
        var it = ready.stream.makeAsyncIterator()
        port = await it.next() ?? 0
    }

    var url: String { "https://127.0.0.1:\(port)" }
    var requests: [Received] { log.list.withLock { $0 } }

    /// A kubeconfig-format file naming this webhook (at `path` on it), trusting its CA, with
    /// `token` as the user's credential.
    func kubeconfig(path: String = "/authorize", token: String = "server-secret") throws -> String {
        let file = dir + "/webhook.kubeconfig"
        try """
            apiVersion: v1
            kind: Config
            clusters:
            - name: webhook
              cluster:
                server: \(url)\(path)
                certificate-authority-data: \(Data(caPEM.utf8).base64EncodedString())
            users:
            - name: apiserver
              user:
                token: \(token)
            contexts:
            - name: webhook
              context: {cluster: webhook, user: apiserver}
            current-context: webhook
            """.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func stop() {
        task.cancel()
        try? FileManager.default.removeItem(atPath: dir)
    }
}
