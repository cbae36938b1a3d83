import Foundation
import KubeAPI
@_exported import HTTPJSON
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
    public typealias TLS = HTTPJSONClient.TLS

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
                      clientCertificate: try pem(user, "client-certificate"), clientKey: try pem(user, "client-key"),
                      clientCertificateFile: user["client-certificate-data"] == nil ? user["client-certificate"]?.string.map(resolve) : nil,
                      clientKeyFile: user["client-key-data"] == nil ? user["client-key"]?.string.map(resolve) : nil)
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

/// A small Kubernetes REST client: requests, and watches read as a stream of events, over
/// `HTTPJSONClient` (one connection each).
public struct KubeClient: Sendable {
    public let config: Kubeconfig
    public var http: HTTPJSONClient

    /// Makes the connected socket itself when set (for example inside another network
    /// namespace); the client then speaks HTTP over it. Otherwise the client connects.
    public var dial: (@Sendable (_ host: String, _ port: Int) throws -> Int32)? {
        get { http.dial }
        set { http.dial = newValue }
    }

    /// The TLS context for an `https://` server, made once (or why it could not be).
    var tls: Result<NIOSSLContext, any Error>? { http.tls }

    public init(config: Kubeconfig) {
        self.config = config
        http = HTTPJSONClient(server: config.server, host: config.host, port: config.port, tls: config.tls,
                              peer: "the API server", bearerToken: { config.currentToken })
    }

    /// A client of `config`'s server whose requests carry the bearer token `token` gives at the
    /// time (a token that is renewed); the config's own credentials are not used.
    public init(config: Kubeconfig, bearerToken token: @escaping @Sendable () -> String?) {
        var c = config
        c.token = nil
        c.tokenFile = nil
        if var tls = c.tls {
            tls.clientCertificate = nil
            tls.clientKey = nil
            tls.clientCertificateFile = nil
            tls.clientKeyFile = nil
            c.tls = tls
        }
        self.config = c
        http = HTTPJSONClient(server: c.server, host: c.host, port: c.port, tls: c.tls, peer: "the API server", bearerToken: token)
    }

    /// A client for any HTTP JSON service at `url` (`http://host:port`).
    public init(url: String) throws {
        guard let u = URL(string: url), u.scheme == "http", let host = u.host else {
            throw Kubeconfig.LoadError(description: "\(url): only http:// addresses are supported")
        }
        self.init(config: Kubeconfig(server: url, namespace: "default", host: host, port: u.port ?? 80))
    }

    /// One request; the whole answer, as JSON (null if it is not).
    public func request(_ method: String, _ path: String, query: [String: String] = [:], body: JSONValue? = nil,
                        contentType: String = "application/json") async throws -> ClientResponse {
        try await http.request(method, path, query: query, body: body, contentType: contentType)
    }

    /// One request; the status and the body as it came (for answers that are not JSON, such as
    /// Prometheus metrics).
    public func rawRequest(_ method: String, _ path: String, query: [String: String] = [:], body: Data? = nil,
                           contentType: String = "application/json") async throws -> (status: Int, body: Data) {
        try await http.rawRequest(method, path, query: query, body: body, contentType: contentType)
    }

    /// `GET path?watch=1&…`: the events as they arrive (`{"type": …, "object": …}`), until the
    /// server ends the watch or the caller stops reading.
    public func watch(_ path: String, query: [String: String]) async throws -> AsyncThrowingStream<JSONValue, any Error> {
        var q = query
        q["watch"] = "1"
        return try await http.stream("GET", path, query: q)
    }

    /// A request whose answer is a stream of JSON documents, one per line.
    public func stream(_ method: String, _ path: String, query: [String: String] = [:], body: JSONValue? = nil) async throws -> AsyncThrowingStream<JSONValue, any Error> {
        try await http.stream(method, path, query: query, body: body)
    }
}
