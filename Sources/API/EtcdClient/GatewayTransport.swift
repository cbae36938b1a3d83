import Foundation
import HTTPJSON
import KubeAPI
import SwiftProtobuf

/// etcd's v3 API through its JSON gateway (`POST /v3/kv/range` and so on, on the client port):
/// the same messages as gRPC, as protobuf's JSON mapping with etcd's field names, over HTTP/1.1,
/// one request per connection at a time. Slower than gRPC (see the README's figures); kept to
/// compare the two in one run, and for tests that lose answers at HTTP requests.
public struct EtcdGatewayTransport: EtcdTransport {
    public let endpoints: [String]
    let clients: [HTTPJSONClient]

    static let encoding: JSONEncodingOptions = {
        var o = JSONEncodingOptions()
        o.preserveProtoFieldNames = true
        return o
    }()
    static let decoding: JSONDecodingOptions = {
        var o = JSONDecodingOptions()
        o.ignoreUnknownFields = true
        return o
    }()

    public init(endpoints: [String]) throws {
        guard !endpoints.isEmpty else { throw EtcdError.failed(member: "", message: "no etcd server given") }
        self.endpoints = endpoints
        clients = try endpoints.map { try HTTPJSONClient(url: $0, peer: "etcd") }
    }

    public func close() {}

    func call<Response: SwiftProtobuf.Message>(_ path: String, _ request: some SwiftProtobuf.Message, at member: Int) async throws -> Response {
        let body: Data = try request.jsonUTF8Data(options: Self.encoding)
        let answer: (status: Int, body: Data)
        do {
            answer = try await clients[member].rawRequest("POST", path, body: body)
        } catch {
            throw EtcdError.unreachable(member: endpoints[member], detail: "\(error)")
        }
        guard answer.status == 200 else { throw Self.error(answer.status, answer.body, endpoints[member]) }
        return try Response(jsonUTF8Data: answer.body, options: Self.decoding)
    }

    /// The gateway's error (`{"error": …, "code": N, "message": …}`, N a gRPC code): 14
    /// (unavailable) and 4 (deadline) are a member that cannot serve now.
    static func error(_ status: Int, _ body: Data, _ member: String) -> EtcdError {
        let v = (try? JSONValue.parse(body)) ?? .null
        let message = v["message"]?.string ?? v["error"]?.string ?? "HTTP \(status)"
        let code = v["code"]?.int ?? 0
        if code == 14 || code == 4 || status == 503 { return .unreachable(member: member, detail: message) }
        return .failed(member: member, message: message)
    }

    public func range(_ request: Etcdserverpb_RangeRequest, at member: Int) async throws -> Etcdserverpb_RangeResponse {
        try await call("/v3/kv/range", request, at: member)
    }

    public func put(_ request: Etcdserverpb_PutRequest, at member: Int) async throws -> Etcdserverpb_PutResponse {
        try await call("/v3/kv/put", request, at: member)
    }

    public func txn(_ request: Etcdserverpb_TxnRequest, at member: Int) async throws -> Etcdserverpb_TxnResponse {
        try await call("/v3/kv/txn", request, at: member)
    }

    public func compact(_ request: Etcdserverpb_CompactionRequest, at member: Int) async throws -> Etcdserverpb_CompactionResponse {
        try await call("/v3/kv/compaction", request, at: member)
    }

    public func leaseGrant(_ request: Etcdserverpb_LeaseGrantRequest, at member: Int) async throws -> Etcdserverpb_LeaseGrantResponse {
        try await call("/v3/lease/grant", request, at: member)
    }

    public func status(at member: Int) async throws -> Etcdserverpb_StatusResponse {
        try await call("/v3/maintenance/status", Etcdserverpb_StatusRequest(), at: member)
    }

    public func watch(_ create: Etcdserverpb_WatchCreateRequest, at member: Int) async throws -> AsyncThrowingStream<Etcdserverpb_WatchResponse, any Error> {
        var request = Etcdserverpb_WatchRequest()
        request.createRequest = create
        return try await stream("/v3/watch", request, at: member)
    }

    public func snapshot(at member: Int) async throws -> AsyncThrowingStream<Etcdserverpb_SnapshotResponse, any Error> {
        try await stream("/v3/maintenance/snapshot", Etcdserverpb_SnapshotRequest(), at: member)
    }

    /// A streaming call: one `{"result": message}` (or `{"error": …}`) per line.
    func stream<Response: SwiftProtobuf.Message>(_ path: String, _ request: some SwiftProtobuf.Message, at member: Int) async throws
        -> AsyncThrowingStream<Response, any Error> {
        let url = endpoints[member]
        let lines: AsyncThrowingStream<JSONValue, any Error>
        do {
            let body = try JSONValue.parse(request.jsonUTF8Data(options: Self.encoding))
            lines = try await clients[member].stream("POST", path, body: body)
        } catch {
            throw EtcdError.unreachable(member: url, detail: "\(error)")
        }
        let (out, c) = AsyncThrowingStream.makeStream(of: Response.self)
        let task = Task {
            do {
                for try await line in lines {
                    if let e = line["error"] {
                        throw Self.error(e["http_code"]?.int.map { Int($0) } ?? 500, Data(e.text().utf8), url)
                    }
                    c.yield(try Response(jsonUTF8Data: Data((line["result"] ?? [:]).text().utf8), options: Self.decoding))
                }
                c.finish()
            } catch let e as EtcdError {
                c.finish(throwing: e)
            } catch {
                c.finish(throwing: EtcdError.unreachable(member: url, detail: "\(error)"))
            }
        }
        c.onTermination = { _ in task.cancel() }
        return out
    }
}
