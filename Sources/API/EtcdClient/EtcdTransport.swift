import Foundation

/// How a client reaches etcd's v3 API: the calls the API server's store makes, with etcd's own
/// messages (generated from etcd's protos). Each call names the member it goes to (an index into
/// `endpoints`); choosing another when one fails is the caller's business, since only the caller
/// knows whether a request may be sent twice.
///
/// Two transports: gRPC, etcd's native protocol (`EtcdGRPCTransport`, what the server uses), and
/// etcd's JSON gateway (`EtcdGatewayTransport`, the same messages as JSON over HTTP/1.1, kept to
/// compare the two in one run and for the tests that cut connections at HTTP requests).
public protocol EtcdTransport: Sendable {
    /// The members' client URLs (`http://127.0.0.1:2379`), in the order given.
    var endpoints: [String] { get }
    func range(_ request: Etcdserverpb_RangeRequest, at member: Int) async throws -> Etcdserverpb_RangeResponse
    func put(_ request: Etcdserverpb_PutRequest, at member: Int) async throws -> Etcdserverpb_PutResponse
    func txn(_ request: Etcdserverpb_TxnRequest, at member: Int) async throws -> Etcdserverpb_TxnResponse
    func compact(_ request: Etcdserverpb_CompactionRequest, at member: Int) async throws -> Etcdserverpb_CompactionResponse
    func leaseGrant(_ request: Etcdserverpb_LeaseGrantRequest, at member: Int) async throws -> Etcdserverpb_LeaseGrantResponse
    func status(at member: Int) async throws -> Etcdserverpb_StatusResponse
    /// One watch: `create` is sent and the responses come as etcd sends them (the first says it
    /// was created). Ending the stream's iteration cancels the watch.
    func watch(_ create: Etcdserverpb_WatchCreateRequest, at member: Int) async throws -> AsyncThrowingStream<Etcdserverpb_WatchResponse, any Error>
    /// The maintenance Snapshot: etcd's database in chunks, the last ending with its SHA-256.
    func snapshot(at member: Int) async throws -> AsyncThrowingStream<Etcdserverpb_SnapshotResponse, any Error>
    /// Closes the connections (calls in flight finish first).
    func close()
}

/// A call's failure, as the caller must tell them apart.
public enum EtcdError: Error, CustomStringConvertible, Sendable {
    /// The member was not reached, lost its connection, or cannot serve now (no leader, a timeout
    /// inside etcd): another member may answer, and the request may or may not have been carried
    /// out.
    case unreachable(member: String, detail: String)
    /// etcd answered with an error (a compacted or future revision, a request too large, …).
    case failed(member: String, message: String)

    public var description: String {
        switch self {
        case .unreachable(let m, let d): "etcd \(m) unreachable: \(d)"
        case .failed(let m, let msg): m.isEmpty ? msg : "etcd \(m): \(msg)"
        }
    }

    public var isUnreachable: Bool { if case .unreachable = self { true } else { false } }
}

/// TLS to etcd, as kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`
/// give it: the CA that signed the members' serving certificates (else the system's roots), and
/// the client certificate and key etcd asks for with `--client-cert-auth`.
public struct EtcdTLS: Sendable, Equatable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }

    /// Both or neither of the certificate and key; every named file readable.
    public func validated() throws -> EtcdTLS {
        if (certFile == nil) != (keyFile == nil) {
            throw EtcdError.failed(member: "", message: "--etcd-certfile and --etcd-keyfile go together")
        }
        for f in [caFile, certFile, keyFile].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: f) {
            throw EtcdError.failed(member: "", message: "\(f): cannot read")
        }
        return self
    }
}

/// A member's client URL taken apart: `http://host:port`, `https://host:port` or `host:port`
/// (then http, or https when TLS files are given).
public struct EtcdEndpoint: Sendable, Equatable {
    public var secure: Bool
    public var host: String
    public var port: Int

    public init(_ url: String, tls: EtcdTLS?) throws {
        var rest = Substring(url)
        if rest.hasPrefix("https://") { secure = true; rest = rest.dropFirst(8) }
        else if rest.hasPrefix("http://") { secure = false; rest = rest.dropFirst(7) }
        else { secure = tls != nil }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        let hostPart: Substring, portPart: Substring?
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            hostPart = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            portPart = after.hasPrefix(":") ? after.dropFirst() : nil
        } else if let colon = rest.lastIndex(of: ":") {
            hostPart = rest[..<colon]
            portPart = rest[rest.index(after: colon)...]
        } else {
            hostPart = rest
            portPart = nil
        }
        guard !hostPart.isEmpty, !hostPart.contains("/") else {
            throw EtcdError.failed(member: url, message: "not an etcd client URL (http://HOST:PORT)")
        }
        host = String(hostPart)
        if let portPart {
            guard let p = Int(portPart), (1...65535).contains(p) else {
                throw EtcdError.failed(member: url, message: "not an etcd client URL: port \(portPart)")
            }
            port = p
        } else {
            port = 2379
        }
    }
}
