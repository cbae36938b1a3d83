import Foundation
import Synchronization
import KubeAPI
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A server's answer to a request that is not a stream.
public struct ClientResponse: Sendable {
    public var status: Int
    public var body: JSONValue
    public init(status: Int, body: JSONValue) {
        self.status = status
        self.body = body
    }
}

public struct ClientError: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var description: String
    public init(status: Int, description: String) {
        self.status = status
        self.description = description
    }
}

/// JSON over HTTP/1.1 (swift-nio): requests, and answers read as a stream of JSON documents one
/// per line, one connection each; plain or TLS, with a bearer token. The Kubernetes client
/// speaks to the API server through it, and the etcd store to etcd's JSON gateway.
public struct HTTPJSONClient: Sendable {
    /// The TLS settings, PEM.
    public struct TLS: Sendable, Equatable {
        /// `certificate-authority(-data)`: the roots the server's certificate must chain to (the
        /// system's when nil).
        public var certificateAuthority: [UInt8]?
        /// `insecure-skip-tls-verify`.
        public var insecureSkipVerify = false
        /// `tls-server-name`: the name checked in the server's certificate instead of the host.
        public var serverName: String?
        /// `client-certificate(-data)` and `client-key(-data)`.
        public var clientCertificate: [UInt8]?
        public var clientKey: [UInt8]?
        /// The files the client pair was read from (a kubeconfig's `client-certificate` and
        /// `client-key`), read again when they change: a kubelet's rotated certificate is
        /// written there, and the next connection presents it.
        public var clientCertificateFile: String?
        public var clientKeyFile: String?

        public init(certificateAuthority: [UInt8]? = nil, insecureSkipVerify: Bool = false, serverName: String? = nil,
                    clientCertificate: [UInt8]? = nil, clientKey: [UInt8]? = nil, clientCertificateFile: String? = nil, clientKeyFile: String? = nil) {
            self.certificateAuthority = certificateAuthority
            self.insecureSkipVerify = insecureSkipVerify
            self.serverName = serverName
            self.clientCertificate = clientCertificate
            self.clientKey = clientKey
            self.clientCertificateFile = clientCertificateFile
            self.clientKeyFile = clientKeyFile
        }
    }

    /// The TLS context of a client whose pair comes from files: made again when a file changes
    /// (its size, time or inode), after which idle connections, made with the old pair, close.
    final class ReloadingContext: Sendable {
        let settings: TLS
        let current: Mutex<(stamp: [Int], context: NIOSSLContext)?>

        init(_ settings: TLS, first: NIOSSLContext?) {
            self.settings = settings
            current = Mutex(first.map { (Self.stamp(settings), $0) })
        }

        static func stamp(_ t: TLS) -> [Int] {
            [t.clientCertificateFile, t.clientKeyFile].compactMap { $0 }.flatMap { path -> [Int] in
                var st = stat()
                guard stat(path, &st) == 0 else { return [-1] }
                return [Int(st.st_ino), Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec)]
            }
        }

        /// The context for a new connection, and whether it is new since the last call.
        func context() throws -> (NIOSSLContext, changed: Bool) {
            let now = Self.stamp(settings)
            if let c = current.withLock({ $0 }), c.stamp == now { return (c.context, false) }
            var t = settings
            if let f = t.clientCertificateFile, let d = FileManager.default.contents(atPath: f) { t.clientCertificate = Array(d) }
            if let f = t.clientKeyFile, let d = FileManager.default.contents(atPath: f) { t.clientKey = Array(d) }
            let made = try HTTPJSONClient.context(t)
            let had = current.withLock { c -> Bool in
                let had = c != nil
                c = (now, made)
                return had
            }
            return (made, had)
        }
    }

    /// The server's address as given, for messages.
    public let server: String
    public let host: String
    public let port: Int
    /// What the server is, for messages ("the API server", "etcd").
    public let peer: String
    let tlsSettings: TLS?
    let bearerToken: @Sendable () -> String?
    /// Makes the connected socket itself when set (for example inside another network
    /// namespace); the client then speaks HTTP over it. Otherwise the client connects.
    public var dial: (@Sendable (_ host: String, _ port: Int) throws -> Int32)?

    /// The TLS context for an `https://` server, made once (or why it could not be).
    public let tls: Result<NIOSSLContext, any Error>?
    /// Idle keep-alive connections for requests (streams have their own); shared by copies.
    let pool = ConnectionPool()
    /// When the client pair comes from files: the context as they are now.
    let reloading: ReloadingContext?

    public init(server: String, host: String, port: Int, tls: TLS? = nil, peer: String = "the server",
                bearerToken: @escaping @Sendable () -> String? = { nil }) {
        self.server = server
        self.host = host
        self.port = port
        self.peer = peer
        tlsSettings = tls
        self.bearerToken = bearerToken
        let first = tls.map { t in Result { try Self.context(t) } }
        self.tls = first
        // Given only the files, the first context (made without the pair) is not theirs.
        reloading = tls.flatMap { t in
            t.clientCertificateFile == nil && t.clientKeyFile == nil ? nil : ReloadingContext(t, first: t.clientCertificate == nil ? nil : try? first?.get())
        }
    }

    /// The TLS context for a new connection (nil for plain HTTP); idle connections close when
    /// the client pair's files changed.
    func currentContext() throws -> NIOSSLContext? {
        guard let reloading else { return try tls?.get() }
        let (c, changed) = try reloading.context()
        if changed { pool.closeIdle() }
        return c
    }

    /// A client for the plain HTTP service at `url` (`http://host:port`).
    public init(url: String, peer: String) throws {
        guard let u = URL(string: url), u.scheme == "http", let host = u.host else {
            throw ClientError(status: 0, description: "\(url): only http:// addresses are supported")
        }
        self.init(server: url, host: host, port: u.port ?? 80, peer: peer)
    }

    static func context(_ t: TLS) throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        if let ca = t.certificateAuthority { c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(ca)) }
        if t.insecureSkipVerify { c.certificateVerification = .none }
        if let cert = t.clientCertificate, let key = t.clientKey {
            c.certificateChain = try NIOSSLCertificate.fromPEMBytes(cert).map { .certificate($0) }
            c.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: key, format: .pem))
        }
        return try NIOSSLContext(configuration: c)
    }

    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    func connect() async throws -> Channel {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(5))
        let ssl = try currentContext()
        // The name the server's certificate is checked against: `tls-server-name`, else the host
        // (an IP address is not sent as SNI, and is checked against the certificate's IP SANs).
        let name = tlsSettings?.serverName ?? (Self.isIPAddress(host) ? nil : host)
        let setUp: @Sendable (any NIOCore.Channel) -> EventLoopFuture<Channel> = { ch in
            ch.eventLoop.makeCompletedFuture {
                if let ssl { try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: ssl, serverHostname: name)) }
                try ch.pipeline.syncOperations.addHTTPClientHandlers()
                return try Channel(wrappingChannelSynchronously: ch)
            }
        }
        if let dial {
            let (host, port) = (self.host, self.port)
            let fd = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Int32, any Error>) in
                // dial blocks (and may switch namespaces on a thread of its own): off the caller's executor.
                DispatchQueue.global().async { c.resume(with: Result { try dial(host, port) }) }
            }
            return try await bootstrap.withConnectedSocket(fd, channelInitializer: setUp)
        }
        do {
            return try await bootstrap.connect(host: host, port: port, channelInitializer: setUp)
        } catch {
            throw ClientError(status: 0, description: "cannot connect to \(peer) at \(server): \(Self.reason(error))")
        }
    }

    /// Why a connection failed, in words: the system's message, not NIO's types.
    static func reason(_ error: any Error) -> String {
        if let e = error as? NIOConnectionError {
            if let first = e.connectionErrors.first { return reason(first.error) }
            return "cannot resolve \(e.host)"
        }
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
        if let c = error as? ChannelError, case .connectTimeout(let t) = c { return "no answer within \(t.nanoseconds / 1_000_000_000) s" }
        return "\(error)"
    }

    static func uri(_ path: String, _ query: [String: String]) -> String {
        guard !query.isEmpty else { return path }
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+,;")
        return path + "?" + query.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.value)" }.joined(separator: "&")
    }

    func head(_ method: HTTPMethod, _ uri: String, bodyLength: Int?, contentType: String?, keepAlive: Bool = false) -> HTTPRequestHead {
        var h = HTTPHeaders([("Host", "\(host):\(port)"), ("Accept", "application/json"), ("User-Agent", "switchyard")])
        if let bodyLength { h.add(name: "Content-Length", value: String(bodyLength)) }
        if let contentType { h.add(name: "Content-Type", value: contentType) }
        if let token = bearerToken() { h.add(name: "Authorization", value: "Bearer \(token)") }
        if !keepAlive { h.add(name: "Connection", value: "close") }
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: h)
    }

    /// A request's head, body and end, written together: a server may answer (and, the request
    /// asking for `Connection: close`, close) as soon as it has the head, and an end written on
    /// its own after that fails with "I/O on closed channel" although the answer has arrived.
    static func parts(_ head: HTTPRequestHead, _ body: [UInt8]?) -> [HTTPClientRequestPart] {
        var parts: [HTTPClientRequestPart] = [.head(head)]
        if let body { parts.append(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        parts.append(.end(nil))
        return parts
    }

    /// One request; the whole answer, as JSON (null if it is not).
    public func request(_ method: String, _ path: String, query: [String: String] = [:], body: JSONValue? = nil,
                        contentType: String = "application/json") async throws -> ClientResponse {
        let (status, bytes) = try await rawRequest(method, path, query: query, body: body.map { Data($0.serialized()) }, contentType: contentType)
        return ClientResponse(status: status, body: (try? JSONValue.parse(bytes)) ?? .null)
    }

    /// One request; the status and the body as it came (for answers that are not JSON, such as
    /// Prometheus metrics).
    public func rawRequest(_ method: String, _ path: String, query: [String: String] = [:], body: Data? = nil,
                           contentType: String = "application/json") async throws -> (status: Int, body: Data) {
        let answer = try await exchange(method, path, query: query, body: body, contentType: contentType)
        return (answer.status, answer.body)
    }

    /// One request with headers of its own (`Accept` among them replaces the client's); the
    /// answer's status, headers and body (for HTTP services that are not JSON APIs, such as an
    /// image registry).
    public func exchange(_ method: String, _ path: String, query: [String: String] = [:], body: Data? = nil,
                         contentType: String = "application/json", headers extra: [(String, String)] = [])
        async throws -> (status: Int, headers: [(String, String)], body: Data) {
        var h = head(HTTPMethod(rawValue: method), Self.uri(path, query), bodyLength: body?.count ?? 0,
                     contentType: body == nil ? nil : contentType, keepAlive: true)
        for (name, value) in extra { h.headers.replaceOrAdd(name: name, value: value) }
        let parts = Self.parts(h, body.map(Array.init))
        // On an idle connection first; if the server had closed it, on a new one.
        while true {
            if let reloading, (try? reloading.context())?.changed == true { pool.closeIdle() }
            let reused = pool.take()
            let connection: PooledConnection
            if let reused { connection = reused } else { connection = PooledConnection(try await connect()) }
            do {
                let answer = try await connection.send(parts)
                if answer.keepAlive { pool.put(connection) } else { connection.close() }
                return (answer.status, answer.headers, answer.body)
            } catch is PooledConnection.ClosedBeforeAnswer {
                if reused != nil { continue }
                throw ClientError(status: 0, description: "\(method) \(path): the connection closed early")
            }
        }
    }

    /// A request whose answer is a stream of JSON documents, one per line (a watch; etcd's
    /// `/v3/watch`).
    public func stream(_ method: String, _ path: String, query: [String: String] = [:], body: JSONValue? = nil) async throws -> AsyncThrowingStream<JSONValue, any Error> {
        let channel = try await connect()
        let uri = Self.uri(path, query)
        let data = body.map { Array($0.serialized()) }
        let head = self.head(HTTPMethod(rawValue: method), uri, bodyLength: data?.count, contentType: data == nil ? nil : "application/json")
        return AsyncThrowingStream { c in
            let task = Task {
                do {
                    try await channel.executeThenClose { inbound, outbound in
                        try await outbound.write(contentsOf: Self.parts(head, data))
                        var pending = [UInt8]()
                        var status = 0
                        for try await part in inbound {
                            switch part {
                            case .head(let h):
                                status = Int(h.status.code)
                            case .body(let b):
                                pending += b.readableBytesView
                                while let nl = pending.firstIndex(of: 0x0a) {
                                    let line = Array(pending[..<nl])
                                    pending.removeFirst(nl + 1)
                                    if line.isEmpty { continue }
                                    let v = try JSONValue.parse(Data(line))
                                    if status != 200 { throw ClientError(status: status, description: "watch \(path): \(status) \(v["message"]?.string ?? "")") }
                                    c.yield(v)
                                }
                            case .end:
                                if status != 200, !pending.isEmpty {
                                    let v = try? JSONValue.parse(Data(pending))
                                    throw ClientError(status: status, description: "watch \(path): \(status) \(v?["message"]?.string ?? "")")
                                }
                                return
                            }
                        }
                    }
                    c.finish()
                } catch {
                    c.finish(throwing: error)
                }
            }
            // A reader that stops closes the connection (cancelling the task alone leaves the
            // server streaming to a socket nobody reads).
            c.onTermination = { _ in
                task.cancel()
                channel.channel.close(promise: nil)
            }
        }
    }
}

extension HTTPJSONClient {
    /// A GET whose answer's body is passed on as it comes (a container's log, followed): the
    /// stream once the answer is `200 OK`; another status throws, with the body's text.
    public func byteStream(_ path: String, query: [String: String] = [:]) async throws -> AsyncThrowingStream<Data, any Error> {
        let channel = try await connect()
        let head = self.head(.GET, Self.uri(path, query), bodyLength: nil, contentType: nil)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        let (answered, answer) = AsyncThrowingStream.makeStream(of: Int.self)
        let peer = self.peer
        let task = Task {
            var status = 0
            var errorBody = Data()
            do {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(contentsOf: Self.parts(head, nil))
                    for try await part in inbound {
                        switch part {
                        case .head(let h):
                            status = Int(h.status.code)
                            if status == 200 { answer.yield(status); answer.finish() }
                        case .body(let b):
                            if status == 200 { continuation.yield(Data(b.readableBytesView)) } else { errorBody += b.readableBytesView }
                        case .end:
                            return
                        }
                    }
                }
                if status != 200 {
                    let text = String(decoding: errorBody, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    answer.finish(throwing: ClientError(status: status, description: text.isEmpty ? "\(peer) answered \(status)" : text))
                }
                continuation.finish()
            } catch {
                answer.finish(throwing: error)
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in
            task.cancel()
            channel.channel.close(promise: nil)
        }
        do {
            for try await _ in answered { break }
        } catch {
            task.cancel()
            throw error
        }
        return stream
    }
}

extension HTTPJSONClient {
    /// Whether `s` is an IPv4 or IPv6 address (not sent as SNI; checked against IP SANs).
    static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }
}
