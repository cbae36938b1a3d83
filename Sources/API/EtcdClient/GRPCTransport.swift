import Foundation
import GRPCCore
import GRPCPings
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import KubeAPI

/// etcd's v3 API over gRPC, its native protocol (what etcdctl and kube-apiserver speak): one
/// HTTP/2 connection per member, opened at once and kept (made again with back-off when lost),
/// calls multiplexed on it. A call to a member whose connection is down fails at once rather than
/// waiting for it, so the caller can go to another.
public final class EtcdGRPCTransport: EtcdTransport, @unchecked Sendable {
    public let endpoints: [String]
    let members: [Member]
    /// Unary calls: etcd gives up on a request after its own timeout (about 7 s with the
    /// default election timeout), so a longer deadline only covers a member that stopped
    /// answering altogether.
    let unary: CallOptions
    /// Writes: a write a follower forwarded to a leader that then died waits inside etcd until
    /// its request timeout (7 s); cut short at 3 s, it is tried on another member (the store
    /// takes into account that it may have been made), which has a new leader by then.
    let writing: CallOptions
    /// Watches and snapshots last as long as they last.
    let streaming: CallOptions

    struct Member: Sendable {
        let url: String
        let grpc: GRPCClient<HTTP2ClientTransport.Posix>
        let kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>
        let watch: Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>
        let lease: Etcdserverpb_Lease.Client<HTTP2ClientTransport.Posix>
        let maintenance: Etcdserverpb_Maintenance.Client<HTTP2ClientTransport.Posix>
    }

    public init(endpoints: [String], tls: EtcdTLS? = nil) throws {
        guard !endpoints.isEmpty else { throw EtcdError.failed(member: "", message: "no etcd server given") }
        let tls = try tls?.validated()
        self.endpoints = endpoints
        // Every URL checked before any connection is made: a bad one leaves nothing running.
        let parsed = try endpoints.map { (url: $0, endpoint: try EtcdEndpoint($0, tls: tls)) }
        members = try parsed.map { url, e in
            let target: MemberTarget = switch IPAddress(e.host)?.family {
            case .ipv4: .ipv4(e.host, e.port)
            case .ipv6: .ipv6(e.host, e.port)
            case nil: .dns(e.host, e.port)
            }
            var config = HTTP2ClientTransport.Posix.Config.defaults
            // Members are near: a lost connection is tried again within tens of milliseconds,
            // and one that stops answering (a partition, no FIN) is noticed within 15 seconds.
            config.backoff = .init(initial: .milliseconds(50), max: .seconds(2), multiplier: 1.6, jitter: 0.2)
            config.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(5), allowWithoutCalls: false)
            // etcd's PINGs answered before swift-nio-http2 counts them as a flood (see PingAnswerer).
            config.channelDebuggingCallbacks.onCreateTCPConnection = { PingAnswerer.install(on: $0) }
            let security: HTTP2ClientTransport.Posix.TransportSecurity
            if e.secure {
                security = .tls { c in
                    if let ca = tls?.caFile { c.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
                    if let cert = tls?.certFile, let key = tls?.keyFile {
                        c.certificateChain = [.file(path: cert, format: .pem)]
                        c.privateKey = .file(path: key, format: .pem)
                    }
                }
            } else {
                security = .plaintext
            }
            let transport = try target.transport(security: security, config: config)
            let grpc = GRPCClient(transport: transport)
            Task { try? await grpc.runConnections() }
            return Member(url: url, grpc: grpc, kv: .init(wrapping: grpc), watch: .init(wrapping: grpc),
                          lease: .init(wrapping: grpc), maintenance: .init(wrapping: grpc))
        }
        var o = CallOptions.defaults
        o.timeout = .seconds(15)
        // etcd answers ranges up to its own limit (1.5 MiB requests, unbounded answers).
        o.maxResponseMessageBytes = Int(Int32.max)
        o.maxRequestMessageBytes = 64 << 20
        o.waitForReady = false
        unary = o
        o.timeout = .seconds(3)
        writing = o
        o.timeout = nil
        streaming = o
    }

    deinit { close() }

    public func close() {
        for m in members { m.grpc.beginGracefulShutdown() }
    }

    /// An RPC failure as `EtcdError`: unavailable members, lost connections, deadlines and
    /// etcd's own "no leader" or timeouts are `unreachable`; the rest are etcd's answer.
    static func translate(_ error: any Error, _ url: String) -> any Error {
        if error is CancellationError { return error }
        guard let e = error as? RPCError else { return EtcdError.unreachable(member: url, detail: "\(error)") }
        switch e.code {
        case .unavailable, .deadlineExceeded, .cancelled, .unknown, .internalError:
            return EtcdError.unreachable(member: url, detail: e.message)
        default:
            return EtcdError.failed(member: url, message: e.message)
        }
    }

    func unaryCall<T: Sendable>(_ member: Int, _ body: (Member) async throws -> T) async throws -> T {
        let m = members[member]
        do { return try await body(m) } catch { throw Self.translate(error, m.url) }
    }

    public func range(_ request: Etcdserverpb_RangeRequest, at member: Int) async throws -> Etcdserverpb_RangeResponse {
        try await unaryCall(member) { try await $0.kv.range(request, options: unary) }
    }

    public func put(_ request: Etcdserverpb_PutRequest, at member: Int) async throws -> Etcdserverpb_PutResponse {
        try await unaryCall(member) { try await $0.kv.put(request, options: writing) }
    }

    public func txn(_ request: Etcdserverpb_TxnRequest, at member: Int) async throws -> Etcdserverpb_TxnResponse {
        try await unaryCall(member) { try await $0.kv.txn(request, options: writing) }
    }

    public func compact(_ request: Etcdserverpb_CompactionRequest, at member: Int) async throws -> Etcdserverpb_CompactionResponse {
        try await unaryCall(member) { try await $0.kv.compact(request, options: unary) }
    }

    public func leaseGrant(_ request: Etcdserverpb_LeaseGrantRequest, at member: Int) async throws -> Etcdserverpb_LeaseGrantResponse {
        try await unaryCall(member) { try await $0.lease.leaseGrant(request, options: unary) }
    }

    public func status(at member: Int) async throws -> Etcdserverpb_StatusResponse {
        try await unaryCall(member) { try await $0.maintenance.status(Etcdserverpb_StatusRequest(), options: unary) }
    }

    public func watch(_ create: Etcdserverpb_WatchCreateRequest, at member: Int) async throws -> AsyncThrowingStream<Etcdserverpb_WatchResponse, any Error> {
        let m = members[member]
        var watchRequest = Etcdserverpb_WatchRequest()
        watchRequest.createRequest = create
        let request = watchRequest, options = streaming
        return Self.relay(m.url) { c in
            try await m.watch.watch(options: options, requestProducer: { writer in
                try await writer.write(request)
                // The request side stays open while the watch lasts.
                while true { try await Task.sleep(for: .seconds(3600)) }
            }, onResponse: { response in
                for try await message in response.messages { c.yield(message) }
            })
        }
    }

    public func snapshot(at member: Int) async throws -> AsyncThrowingStream<Etcdserverpb_SnapshotResponse, any Error> {
        let m = members[member]
        let options = streaming
        return Self.relay(m.url) { c in
            try await m.maintenance.snapshot(Etcdserverpb_SnapshotRequest(), options: options) { response in
                for try await message in response.messages { c.yield(message) }
            }
        }
    }

    /// A streaming call's messages as a stream that ends with the call, and ends the call when
    /// its reader stops.
    static func relay<M: Sendable>(_ url: String, _ call: @escaping @Sendable (AsyncThrowingStream<M, any Error>.Continuation) async throws -> Void)
        -> AsyncThrowingStream<M, any Error> {
        let (stream, c) = AsyncThrowingStream.makeStream(of: M.self)
        let task = Task {
            do {
                try await call(c)
                c.finish()
            } catch {
                c.finish(throwing: translate(error, url))
            }
        }
        c.onTermination = { _ in task.cancel() }
        return stream
    }
}

/// What a member's URL names: an address of either family, or a name to resolve.
enum MemberTarget {
    case ipv4(String, Int), ipv6(String, Int), dns(String, Int)

    func transport(security: HTTP2ClientTransport.Posix.TransportSecurity,
                   config: HTTP2ClientTransport.Posix.Config) throws -> HTTP2ClientTransport.Posix {
        switch self {
        case .ipv4(let h, let p): try HTTP2ClientTransport.Posix(target: .ipv4(address: h, port: p), transportSecurity: security, config: config)
        case .ipv6(let h, let p): try HTTP2ClientTransport.Posix(target: .ipv6(address: h, port: p), transportSecurity: security, config: config)
        case .dns(let h, let p): try HTTP2ClientTransport.Posix(target: .dns(host: h, port: p), transportSecurity: security, config: config)
        }
    }
}
