import Foundation
import KubeAPI
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Yams

/// Where a client finds its API server and how it proves who it is: a kubeconfig's current
/// context, as kubectl reads it.
public struct Kubeconfig: Sendable, Equatable {
    public var server: String
    public var namespace: String
    public var host: String
    public var port: Int
    /// For an `https://` server; nil for `http://`.
    public var tls: TLS?
    /// `Authorization: Bearer` (the user's `token`, or `tokenFile`'s contents when it was read).
    public var token: String?
    /// The user's `tokenFile`, read again for every request, as client-go re-reads it: a projected
    /// service account token is rotated under the proxy.
    public var tokenFile: String?

    /// The cluster's and user's TLS settings, PEM read from the `-data` fields or the files named.
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

        public init(certificateAuthority: [UInt8]? = nil, insecureSkipVerify: Bool = false, serverName: String? = nil,
                    clientCertificate: [UInt8]? = nil, clientKey: [UInt8]? = nil) {
            self.certificateAuthority = certificateAuthority
            self.insecureSkipVerify = insecureSkipVerify
            self.serverName = serverName
            self.clientCertificate = clientCertificate
            self.clientKey = clientKey
        }
    }

    public init(server: String, namespace: String = "default", host: String, port: Int, tls: TLS? = nil, token: String? = nil,
                tokenFile: String? = nil) {
        self.server = server
        self.namespace = namespace
        self.host = host
        self.port = port
        self.tls = tls
        self.token = token
        self.tokenFile = tokenFile
    }

    /// The bearer token to send now: the token file's current contents, else the token.
    public var currentToken: String? {
        if let tokenFile, let d = FileManager.default.contents(atPath: tokenFile) {
            let t = String(decoding: d, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if !t.isEmpty { return t }
        }
        return token
    }

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Reads the file (`KUBECONFIG` conventions are the caller's). Files it names are relative to
    /// the kubeconfig's directory, as kubectl takes them.
    public static func load(path: String) throws -> Kubeconfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw LoadError(description: "\(path): cannot read the kubeconfig") }
        return try parse(text, source: path, directory: (path as NSString).deletingLastPathComponent)
    }

    public static func parse(_ text: String, source: String = "kubeconfig", directory: String = ".") throws -> Kubeconfig {
        let doc = try YAMLToJSON.convert(text)
        guard let current = doc["current-context"]?.string, !current.isEmpty else { throw LoadError(description: "\(source): no current-context") }
        guard let ctx = doc["contexts"]?.array?.first(where: { $0["name"]?.string == current })?["context"] else {
            throw LoadError(description: "\(source): context \"\(current)\" not found")
        }
        guard let clusterName = ctx["cluster"]?.string,
              let cluster = doc["clusters"]?.array?.first(where: { $0["name"]?.string == clusterName })?["cluster"],
              let server = cluster["server"]?.string else {
            throw LoadError(description: "\(source): the cluster of context \"\(current)\" has no server")
        }
        let user = ctx["user"]?.string.flatMap { name in doc["users"]?.array?.first(where: { $0["name"]?.string == name })?["user"] } ?? [:]
        guard let url = URL(string: server), url.scheme == "http" || url.scheme == "https", let host = url.host else {
            throw LoadError(description: "\(source): server \(server): not an http:// or https:// URL")
        }
        /// A file the kubeconfig names, relative to its directory unless absolute.
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : directory + "/" + file }
        /// A PEM from `<field>-data` (base64) or the file `<field>` names.
        func pem(_ fields: JSONValue, _ field: String) throws -> [UInt8]? {
            if let b64 = fields["\(field)-data"]?.string {
                guard let d = Data(base64Encoded: b64, options: .ignoreUnknownCharacters) else {
                    throw LoadError(description: "\(source): \(field)-data is not base64")
                }
                return Array(d)
            }
            guard let file = fields[field]?.string else { return nil }
            let path = resolve(file)
            guard let d = FileManager.default.contents(atPath: path) else { throw LoadError(description: "\(source): \(field): cannot read \(path)") }
            return Array(d)
        }
        var tls: TLS?
        if url.scheme == "https" {
            tls = TLS(certificateAuthority: try pem(cluster, "certificate-authority"),
                      insecureSkipVerify: cluster["insecure-skip-tls-verify"]?.bool ?? false,
                      serverName: cluster["tls-server-name"]?.string,
                      clientCertificate: try pem(user, "client-certificate"), clientKey: try pem(user, "client-key"))
        }
        var token = user["token"]?.string
        var tokenFile: String?
        if token == nil, let file = user["tokenFile"]?.string {
            let path = resolve(file)
            guard let d = FileManager.default.contents(atPath: path) else { throw LoadError(description: "\(source): tokenFile: cannot read \(path)") }
            token = String(decoding: d, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            tokenFile = path
        }
        if user["exec"] != nil || user["auth-provider"] != nil, token == nil, tls?.clientCertificate == nil {
            throw LoadError(description: "\(source): the user of context \"\(current)\" authenticates with an exec or auth-provider plugin, which this client does not run; use a token or a client certificate")
        }
        return Kubeconfig(server: server, namespace: ctx["namespace"]?.string ?? "default", host: host,
                          port: url.port ?? (url.scheme == "https" ? 443 : 80), tls: tls, token: token, tokenFile: tokenFile)
    }
}

/// The API server's answer to a request that is not a watch.
public struct ClientResponse: Sendable {
    public var status: Int
    public var body: JSONValue
}

public struct ClientError: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var description: String
}

/// A small Kubernetes REST client over HTTP/1.1 (swift-nio): requests, and watches read as a
/// stream of events, one connection each.
public struct KubeClient: Sendable {
    public let config: Kubeconfig
    /// Makes the connected socket itself when set (for example inside another network
    /// namespace); the client then speaks HTTP over it. Otherwise the client connects.
    public var dial: (@Sendable (_ host: String, _ port: Int) throws -> Int32)?

    /// The TLS context for an `https://` server, made once (or why it could not be).
    let tls: Result<NIOSSLContext, any Error>?

    public init(config: Kubeconfig) {
        self.config = config
        tls = config.tls.map { t in Result { try Self.context(t) } }
    }

    /// A client for any HTTP JSON service at `url` (`http://host:port`).
    public init(url: String) throws {
        guard let u = URL(string: url), u.scheme == "http", let host = u.host else {
            throw Kubeconfig.LoadError(description: "\(url): only http:// addresses are supported")
        }
        self.init(config: Kubeconfig(server: url, namespace: "default", host: host, port: u.port ?? 80))
    }

    static func context(_ t: Kubeconfig.TLS) throws -> NIOSSLContext {
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
        let ssl = try tls?.get()
        // The name the server's certificate is checked against: `tls-server-name`, else the host
        // (an IP address is not sent as SNI, and is checked against the certificate's IP SANs).
        let name = config.tls?.serverName ?? (IPAddress(config.host) == nil ? config.host : nil)
        let setUp: @Sendable (any NIOCore.Channel) -> EventLoopFuture<Channel> = { ch in
            ch.eventLoop.makeCompletedFuture {
                if let ssl { try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: ssl, serverHostname: name)) }
                try ch.pipeline.syncOperations.addHTTPClientHandlers()
                return try Channel(wrappingChannelSynchronously: ch)
            }
        }
        if let dial {
            let (host, port) = (config.host, config.port)
            let fd = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Int32, any Error>) in
                // dial blocks (and may switch namespaces on a thread of its own): off the caller's executor.
                DispatchQueue.global().async { c.resume(with: Result { try dial(host, port) }) }
            }
            return try await bootstrap.withConnectedSocket(fd, channelInitializer: setUp)
        }
        do {
            return try await bootstrap.connect(host: config.host, port: config.port, channelInitializer: setUp)
        } catch {
            throw ClientError(status: 0, description: "cannot connect to the API server at \(config.server): \(Self.reason(error))")
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

    func head(_ method: HTTPMethod, _ uri: String, bodyLength: Int?, contentType: String?) -> HTTPRequestHead {
        var h = HTTPHeaders([("Host", "\(config.host):\(config.port)"), ("Accept", "application/json"), ("User-Agent", "switchyard")])
        if let bodyLength { h.add(name: "Content-Length", value: String(bodyLength)) }
        if let contentType { h.add(name: "Content-Type", value: contentType) }
        if let token = config.currentToken { h.add(name: "Authorization", value: "Bearer \(token)") }
        h.add(name: "Connection", value: "close")
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
        let channel = try await connect()
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(contentsOf: Self.parts(head(HTTPMethod(rawValue: method), Self.uri(path, query), bodyLength: body?.count ?? 0,
                                                                 contentType: body == nil ? nil : contentType), body.map(Array.init)))
            var status = 0
            var buf = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let h): status = Int(h.status.code)
                case .body(var b): buf.writeBuffer(&b)
                case .end: return (status, Data(buf.readableBytesView))
                }
            }
            throw ClientError(status: 0, description: "\(method) \(path): the connection closed early")
        }
    }

    /// `GET path?watch=1&…`: the events as they arrive (`{"type": …, "object": …}`), until the
    /// server ends the watch or the caller stops reading.
    public func watch(_ path: String, query: [String: String]) async throws -> AsyncThrowingStream<JSONValue, any Error> {
        var q = query
        q["watch"] = "1"
        return try await stream("GET", path, query: q)
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
