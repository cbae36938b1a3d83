import APIAccess
import Foundation
import HTTPTypes
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import UpgradableHTTP
import NIOSSL
import NIOCore
import NIOPosix
import KubeAPI
import KubeStore
import Logging
import ServiceLifecycle
import Synchronization
import HostOS

/// `switchyard server`: the API over HTTP, one responder for every path, on HummingbirdCore's
/// HTTP/1.1 server. Not through Hummingbird's `Application`: its date cache builds a Gregorian
/// calendar in the current time zone, which loads ICU's time zone data (about 4 MB resident) and
/// wakes the idle server every second; the `Date` header is formatted here instead.
public struct APIServer: Sendable {
    public let handler: APIHandler
    public let host: String
    public let port: Int
    /// Serves HTTPS with this certificate and key when set (`--tls-cert-file`, `--tls-private-key-file`).
    public let tls: TLSConfiguration?
    /// When set, a request must carry one of these bearer tokens (`--token-auth-file`).
    public let tokens: TokenFile?
    /// Requests without credentials are served as `system:anonymous` (`--anonymous-auth`), where
    /// authentication is configured and the authorization is not AlwaysAllow alone.
    public let anonymous: Bool
    /// Client certificates are asked for and read (`--client-ca-file`).
    public let clientCA: Bool
    /// Bootstrap tokens authenticate (`--enable-bootstrap-token-auth`).
    public let bootstrapTokens: Bool
    let logger: Logger

    public init(handler: APIHandler, host: String = "127.0.0.1", port: Int = 8080, tls: TLSConfiguration? = nil,
                tokens: TokenFile? = nil, anonymous: Bool = true, clientCA: Bool = false, bootstrapTokens: Bool = false,
                logger: Logger = Logger(label: "switchyard.server")) {
        self.handler = handler
        self.host = host
        self.port = port
        self.tls = tls
        self.tokens = tokens
        self.clientCA = clientCA
        self.bootstrapTokens = bootstrapTokens
        // Upstream resets --anonymous-auth to false with the AlwaysAllow authorizer.
        self.anonymous = anonymous && !handler.access.allowsAll
        self.logger = logger
    }

    /// A server TLS configuration from PEM files: the certificate (chain) and its private key;
    /// TLS 1.2 at least, as kube-apiserver.
    public static func tlsConfiguration(certificateFile: String, keyFile: String, clientCAFile: String? = nil) throws -> TLSConfiguration {
        try tlsConfiguration(certificateFile: certificateFile, keyFile: keyFile, clientCAFiles: clientCAFile.map { [$0] } ?? [])
    }

    /// The same, trusting the CAs of several files for client certificates.
    public static func tlsConfiguration(certificateFile: String, keyFile: String, clientCAFiles: [String]) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem)))
        c.minimumTLSVersion = .tlsv12
        // A closing connection waits this long for the client's close_notify (NIOSSL's 5 s
        // would hold a graceful shutdown open for every idle pooled connection).
        c.shutdownTimeout = .milliseconds(200)
        // `--client-ca-file`: a client may present a certificate, which must then be one of
        // this CA's; a client without one goes on to the other authenticators.
        if !clientCAFiles.isEmpty {
            c.certificateVerification = .optionalVerification
            c.trustRoots = .certificates(try clientCAFiles.flatMap { try NIOSSLCertificate.fromPEMFile($0) })
        }
        return c
    }

    /// The certificates of a PEM file, and nothing else from it (a file that also holds the key
    /// must not hand the key to clients), as PEM: what a kubeconfig written for clients trusts.
    public static func certificatesPEM(file: String) throws -> [UInt8] {
        var out = ""
        for cert in try NIOSSLCertificate.fromPEMFile(file) {
            let b64 = Data(try cert.toDERBytes()).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
            out += "-----BEGIN CERTIFICATE-----\n\(b64)\n-----END CERTIFICATE-----\n"
        }
        return Array(out.utf8)
    }

    /// Who a request comes from: a bearer token's user; without credentials, `system:anonymous`
    /// where allowed (or for the public paths); with no authentication configured, the old
    /// insecure port's privileged user. nil: 401.
    /// A service-account token (a JWT this server signed) is read whatever else is configured.
    static func authenticate(authorization: String?, path: String, tokens: TokenFile?, anonymous: Bool, handler: APIHandler,
                             certificate: [UInt8]? = nil, clientCA: Bool = false, bootstrapTokens: Bool = false) async -> UserInfo? {
        // x509 first, as upstream orders its authenticators.
        if let certificate, let u = UserInfo(clientCertificate: certificate) { return u }
        if let a = authorization, a.utf8.count > UserInfo.maxAuthorizationBytes { return nil }
        if let a = authorization, a.count > 7, a.prefix(7).lowercased() == "bearer " {
            if let u = tokens?.user(authorization: a) { return UserInfo(name: u.name, uid: u.uid, groups: u.groups).authenticated() }
            let token = String(a.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            if bootstrapTokens, APIHandler.bootstrapToken(token) != nil {
                return await handler.authenticateBootstrapToken(token)
            }
            if ServiceAccountTokens.looksLikeJWT(token) {
                if case .success(let u) = await handler.authenticateServiceAccount(token) { return u }
                return nil
            }
            if tokens != nil { return nil }
        }
        guard tokens != nil || clientCA || bootstrapTokens else { return .unsecured }
        return anonymous || TokenFile.publicPaths.contains(path) ? .anonymous : nil
    }


    static let impersonateUser = HTTPField.Name("Impersonate-User")!
    static let impersonateGroup = HTTPField.Name("Impersonate-Group")!
    static let impersonateUID = HTTPField.Name("Impersonate-Uid")!

    static func impersonation(_ h: HTTPFields) -> Impersonation? {
        let user = h[impersonateUser], groups = h[values: impersonateGroup], uid = h[impersonateUID]
        guard user != nil || !groups.isEmpty || uid != nil else { return nil }
        return Impersonation(user: user, groups: groups, uid: uid)
    }

    /// Converts a Hummingbird request, authenticates and runs it, and converts the answer.
    static func respond(_ handler: APIHandler, _ request: Request, tokens: TokenFile? = nil, anonymous: Bool = false, sourceIP: String? = nil,
                        certificate: [UInt8]? = nil, clientCA: Bool = false, bootstrapTokens: Bool = false) async -> Response {
        let latency = RequestLatency()
        guard let user = await authenticate(authorization: request.headers[.authorization], path: request.uri.path, tokens: tokens, anonymous: anonymous,
                                            handler: handler, certificate: certificate, clientCA: clientCA, bootstrapTokens: bootstrapTokens) else {
            return Self.response(.error(.unauthorized))
        }
        latency.authenticated(in: .now - latency.start)
        var request = request
        var query: [String: String] = [:]
        for (k, v) in request.uri.queryParameters { query[String(k)] = String(v) }
        var body = Data()
        if request.method == .post || request.method == .put || request.method == .patch || request.method == .delete {
            do {
                let buf = try await request.collectBody(upTo: APIHandler.maxBodySize)
                body = Data(buf.readableBytesView)
            } catch {
                return Self.response(.error(.tooLarge(APIHandler.maxBodySize)))
            }
        }
        var req = APIRequest(method: request.method.rawValue, path: request.uri.path, query: query,
                             contentType: request.headers[.contentType], accept: request.headers[.accept], body: body,
                             userAgent: request.headers[.userAgent])
        req.user = user
        req.impersonation = impersonation(request.headers)
        req.sourceIP = sourceIP
        req.latency = latency
        return Self.response(await handler.handle(req))
    }

    static let warningHeader = HTTPField.Name("Warning")!

    /// A `Warning` header's value: code 299, agent `-`, the text quoted (RFC 7234 section 5.5).
    static func warningValue(_ text: String) -> String {
        var quoted = ""
        for c in text.unicodeScalars {
            switch c {
            case "\"", "\\": quoted += "\\" + String(c)
            case _ where c.value < 0x20 || c.value > 0x7e: quoted += "?"
            default: quoted.unicodeScalars.append(c)
            }
        }
        return "299 - \"\(quoted)\""
    }

    static func response(_ r: APIResponse) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = r.contentType
        headers[.cacheControl] = "no-cache, private"
        for w in r.warnings { headers.append(HTTPField(name: Self.warningHeader, value: Self.warningValue(w))) }
        let status = HTTPResponse.Status(code: r.code)
        switch r.body {
        case .json(let j):
            var bytes = j.bytes()
            bytes.append(UInt8(ascii: "\n"))
            r.sized?(bytes.count)
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        case .text(let t):
            r.sized?(t.utf8.count)
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: t)))
        case .bytes(let d, _):
            r.sized?(d.count)
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: d)))
        case .stream(let s), .textStream(let s):
            headers[.transferEncoding] = "chunked"
            return Response(status: status, headers: headers, body: ResponseBody { writer in
                for try await chunk in s { try await writer.write(ByteBuffer(bytes: chunk)) }
                try await writer.finish(nil)
            })
        }
    }

    /// Serves until the task is cancelled (or SIGTERM through the service group).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let handler = self.handler, tokens = self.tokens, anonymous = self.anonymous, clientCA = self.clientCA, bootstrapTokens = self.bootstrapTokens
        let started = Flag()
        let logger = self.logger
        // HTTP/1.1, and the WebSocket upgrade of a pod's exec (relayed to its kubelet).
        let upgradable = UpgradableHTTP.builder(maxFrameSize: NodeStreams.maxMessage) { request, channel, _ in
            let certificate = clientCA ? await UpgradableHTTP.clientCertificate(channel) : nil
            return await Self.shouldUpgrade(handler, request, tokens: tokens, anonymous: anonymous, certificate: certificate, clientCA: clientCA,
                                            bootstrapTokens: bootstrapTokens, logger: logger)
        }
        let builder = try tls.map { try HTTPServerBuilder.tls(upgradable, tlsConfiguration: $0) } ?? upgradable
        let server = try builder.buildServer(
            configuration: ServerConfiguration(address: .hostname(host, port: port)),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            responder: { request, writer, channel in
                let certificate = clientCA ? await UpgradableHTTP.clientCertificate(channel) : nil
                var response = await Self.respond(handler, request, tokens: tokens, anonymous: anonymous, sourceIP: channel.remoteAddress?.ipAddress,
                                                  certificate: certificate, clientCA: clientCA, bootstrapTokens: bootstrapTokens)
                response.headers[.date] = Self.httpDate()
                let large = (response.body.contentLength ?? 0) > Self.largeResponse
                try await writer.write(response: response.head, body: response.body)
                if large { HeapTrimmer.shared.trimSoon() }
            },
            onServerRunning: { channel in started.set(); await onRunning(channel.localAddress?.port ?? 0) })
        // Watches would hold a graceful shutdown open for their whole timeout: the closer, last
        // in the group, is shut down first and ends them.
        let group = ServiceGroup(configuration: .init(services: [.init(service: server), .init(service: WatchCloser(handler: handler))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch let e as IOError where !started.isSet {
            throw ListenError(host: host, port: port, errno: e.errnoCode)
        }
    }

    /// A pod's exec, upgraded and relayed to its kubelet; anything else (or an exec that cannot
    /// be served: its error) goes to the responder as a plain request.
    static func shouldUpgrade(_ handler: APIHandler, _ request: HTTPRequest, tokens: TokenFile?, anonymous: Bool,
                              certificate: [UInt8]? = nil, clientCA: Bool = false, bootstrapTokens: Bool = false, logger: Logger) async
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let full = request.path ?? ""
        let parts = full.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? ""
        guard path.hasSuffix("/exec") else { return .dontUpgrade }
        guard var user = await authenticate(authorization: request.headerFields[.authorization], path: path, tokens: tokens, anonymous: anonymous,
                                            handler: handler, certificate: certificate, clientCA: clientCA, bootstrapTokens: bootstrapTokens) else {
            return .dontUpgrade
        }
        if let imp = impersonation(request.headerFields) {
            guard let u = try? await handler.impersonate(imp, as: user) else { return .dontUpgrade }
            user = u
        }
        guard let target = await handler.execUpgrade(path: path, rawQuery: parts.count > 1 ? parts[1] : "",
                                                     subprotocols: request.headerFields[.secWebSocketProtocol], user: user) else { return .dontUpgrade }
        var headers = HTTPFields()
        headers[.secWebSocketProtocol] = target.subprotocol
        return .upgrade(headers) { inbound, outbound, _ in
            await NodeStreams.relay(inbound, outbound, to: target.target, subprotocol: target.subprotocol, logger: logger)
        }
    }

    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.withLock { value = true } }
        var isSet: Bool { lock.withLock { value } }
    }

    /// A response this large (a list of thousands of objects) was built from a parsed copy of each
    /// object and their serialization; once it is sent, the C heap keeps those pages unless told.
    static let largeResponse = 1 << 20

        /// An HTTP `Date` header value (RFC 9110's IMF-fixdate, `Fri, 27 Nov 2026 08:03:33 GMT`).
    static func httpDate(_ seconds: time_t = time(nil)) -> String {
        let tm = APIHandler.utc(seconds)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let two = APIHandler.two
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
    }

    /// Ends the open watches when the server begins to shut down.
    struct WatchCloser: ServiceLifecycle.Service {
        let handler: APIHandler
        func run() async throws {
            try? await gracefulShutdown()
            handler.closeWatches()
        }
    }

    /// Writes a kubeconfig readable by its owner only (it may carry a token), in place at once:
    /// a client polling for it never reads half of one.
    public static func writeKubeconfig(_ text: String, to path: String) throws {
        let tmp = path + ".tmp"
        // A new file of our own: not one left behind (with its mode) and not through a symlink.
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: tmp]) }
        var ok = fchmod(fd, 0o600) == 0   // whatever the umask
        let bytes = Array(text.utf8)
        var done = 0
        while ok && done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { ok = false }
        }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }

    /// A kubeconfig for clients of a server at `url`, trusting `certificateAuthority` (PEM) for an
    /// https:// one, with a client certificate and key (PEM) and/or a bearer `token` when the
    /// server asks for credentials.
    public static func kubeconfig(server url: String, certificateAuthority: [UInt8]? = nil, token: String? = nil,
                                  clientCertificate: (cert: String, key: String)? = nil, user name: String = "switchyard") -> String {
        let ca = certificateAuthority.map { "\n    certificate-authority-data: \(Data($0).base64EncodedString())" } ?? ""
        var fields = ""
        if let c = clientCertificate {
            fields += "\n    client-certificate-data: \(Data(c.cert.utf8).base64EncodedString())"
            fields += "\n    client-key-data: \(Data(c.key.utf8).base64EncodedString())"
        }
        if let token { fields += "\n    token: \(JSONValue.string(token).text())" }   // quoted: YAML reads JSON strings
        let user = fields.isEmpty ? " {}" : fields
        return """
        apiVersion: v1
        kind: Config
        clusters:
        - name: switchyard
          cluster:
            server: \(url)\(ca)
        contexts:
        - name: switchyard
          context:
            cluster: switchyard
            user: \(name)
            namespace: default
        current-context: switchyard
        users:
        - name: \(name)
          user:\(user)

        """
    }
}

/// kube-apiserver's static token file (`--token-auth-file`): CSV lines of `token,user,uid` and
/// optionally a quoted, comma-separated list of groups. A request then needs
/// `Authorization: Bearer <token>` with one of its tokens, or gets `401 Unauthorized`; who the
/// user is does not matter yet (no authorization: RBAC comes later).
public struct TokenFile: Sendable {
    public struct User: Sendable, Equatable {
        public var name: String
        public var uid: String
        public var groups: [String]
    }
    /// In the file's order.
    public let entries: [(token: String, user: User)]
    let byToken: [String: User]
    /// What anyone may read, as upstream's `system:public-info-viewer` role allows.
    static let publicPaths: Set<String> = ["/healthz", "/livez", "/readyz", "/version"]

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Reads the file as kube-apiserver does (Go's CSV reader): at least three fields per record,
    /// a record with an empty token skipped, a repeated token's last record counting. A file
    /// without any token is refused: nobody could use the server.
    public init(contents: String, source: String = "token file") throws {
        var entries: [(token: String, user: User)] = []
        for (n, line) in contents.split(whereSeparator: \.isNewline).enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            // Fields split on commas outside double quotes; "" inside quotes is a quote.
            var fields: [String] = [], field = "", quoted = false
            var chars = Array(line)[...]
            while let ch = chars.popFirst() {
                if ch == "\"" {
                    if quoted, chars.first == "\"" { field.append("\""); chars = chars.dropFirst() } else { quoted.toggle() }
                } else if ch == ",", !quoted {
                    fields.append(field)
                    field = ""
                } else {
                    field.append(ch)
                }
            }
            fields.append(field)
            guard fields.count >= 3 else {
                throw Failure(description: "\(source), record \(n + 1): at least 3 columns (token, user name, user uid), found \(fields.count)")
            }
            if fields[0].isEmpty { continue }
            let user = User(name: fields[1], uid: fields[2], groups: fields.count > 3 ? fields[3].split(separator: ",").map(String.init) : [])
            entries.removeAll { $0.token == fields[0] }
            entries.append((fields[0], user))
        }
        guard !entries.isEmpty else { throw Failure(description: "\(source): no token") }
        self.entries = entries
        var byToken: [String: User] = [:]
        for e in entries { byToken[e.token] = e.user }
        self.byToken = byToken
    }

    /// The user a request's `Authorization` header names, if its bearer token is in the file:
    /// a map lookup, as upstream's (its cost does not grow with the file).
    public func user(authorization: String?) -> User? {
        guard let a = authorization?.utf8, a.count > 7 else { return nil }
        // "Bearer " in any case, then the token without surrounding blanks.
        let scheme = a.prefix(7)
        guard zip(scheme, "bearer ".utf8).allSatisfy({ ($0 | 0x20) == $1 || ($0 == 0x20 && $1 == 0x20) }) else { return nil }
        var token = a.dropFirst(7)[...]
        while let f = token.first, f == 0x20 || f == 0x09 { token = token.dropFirst() }
        while let l = token.last, l == 0x20 || l == 0x09 { token = token.dropLast() }
        return byToken[String(decoding: token, as: UTF8.self)]
    }
}

/// Gives the C heap's free pages back to the kernel after large responses, once for a burst of
/// them (a fifth of a second after the first, while more may follow): a list of 10,000 objects
/// frees tens of megabytes that malloc would otherwise keep.
final class HeapTrimmer: Sendable {
    static let shared = HeapTrimmer()
    private let pending = Mutex(false)

    func trimSoon() {
        let start = pending.withLock { p -> Bool in
            if p { return false }
            p = true
            return true
        }
        guard start else { return }
        Task.detached {
            try? await Task.sleep(for: .milliseconds(200))
            self.pending.withLock { $0 = false }
            ResidentMemory.releaseFreeHeapPages()
        }
    }
}
