import Foundation
import KubeAPI
import NIOCore
import NIOHTTP1
import NIOPosix
import Yams

/// Where a client finds its API server: a kubeconfig's current context.
public struct Kubeconfig: Sendable, Equatable {
    public var server: String
    public var namespace: String
    public var host: String
    public var port: Int

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Reads the file (`KUBECONFIG` conventions are the caller's): the current context's cluster
    /// server and namespace. Plain `http://` servers only in this build.
    public static func load(path: String) throws -> Kubeconfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw LoadError(description: "\(path): cannot read the kubeconfig") }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String = "kubeconfig") throws -> Kubeconfig {
        let doc = try YAMLToJSON.convert(text)
        guard let current = doc["current-context"]?.string, !current.isEmpty else { throw LoadError(description: "\(source): no current-context") }
        guard let ctx = doc["contexts"]?.array?.first(where: { $0["name"]?.string == current })?["context"] else {
            throw LoadError(description: "\(source): context \"\(current)\" not found")
        }
        guard let clusterName = ctx["cluster"]?.string,
              let server = doc["clusters"]?.array?.first(where: { $0["name"]?.string == clusterName })?[path: ["cluster", "server"]]?.string else {
            throw LoadError(description: "\(source): the cluster of context \"\(current)\" has no server")
        }
        guard let url = URL(string: server), url.scheme == "http", let host = url.host else {
            throw LoadError(description: "\(source): server \(server): only http:// servers are supported in this build (TLS comes with authentication)")
        }
        return Kubeconfig(server: server, namespace: ctx["namespace"]?.string ?? "default", host: host, port: url.port ?? 80)
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

    public init(config: Kubeconfig) { self.config = config }

    /// A client for any HTTP JSON service at `url` (`http://host:port`).
    public init(url: String) throws {
        guard let u = URL(string: url), u.scheme == "http", let host = u.host else {
            throw Kubeconfig.LoadError(description: "\(url): only http:// addresses are supported")
        }
        config = Kubeconfig(server: url, namespace: "default", host: host, port: u.port ?? 80)
    }

    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    func connect() async throws -> Channel {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(5))
        let setUp: @Sendable (any NIOCore.Channel) -> EventLoopFuture<Channel> = { ch in
            ch.eventLoop.makeCompletedFuture {
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
        return try await bootstrap.connect(host: config.host, port: config.port, channelInitializer: setUp)
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
        h.add(name: "Connection", value: "close")
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: h)
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
            try await outbound.write(.head(head(HTTPMethod(rawValue: method), Self.uri(path, query), bodyLength: body?.count ?? 0,
                                                contentType: body == nil ? nil : contentType)))
            if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
            try await outbound.write(.end(nil))
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
                        try await outbound.write(.head(head))
                        if let data { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: data)))) }
                        try await outbound.write(.end(nil))
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
