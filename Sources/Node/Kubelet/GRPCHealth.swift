import GRPCCore
import GRPCNIOTransportHTTP2

/// A gRPC probe: the standard health service's `grpc.health.v1.Health/Check` on the pod's
/// address, a new connection each time (as upstream dials for each probe), answered `SERVING`
/// or a failure worded as upstream's.
enum GRPCHealth {
    /// The request and response as bytes: `HealthCheckRequest { string service = 1; }` and
    /// `HealthCheckResponse { ServingStatus status = 1; }` are one field each.
    struct Raw: MessageSerializer, MessageDeserializer {
        func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
        func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] { bytes.withUnsafeBytes { Array($0) } }
    }

    static let statuses = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]

    /// The request for `service` ("" for the server as a whole).
    static func request(service: String) -> [UInt8] {
        let name = Array(service.utf8)
        guard !name.isEmpty else { return [] }
        var out: [UInt8] = [0x0a]
        var n = name.count
        while n >= 0x80 { out.append(UInt8(n & 0x7f) | 0x80); n >>= 7 }
        out.append(UInt8(n))
        return out + name
    }

    /// The response's status (0, UNKNOWN, when the field is absent); nil for bytes that are not one.
    static func status(_ bytes: [UInt8]) -> Int? {
        var i = 0, status = 0
        while i < bytes.count {
            let tag = bytes[i]; i += 1
            func varint() -> Int? {
                var v = 0, shift = 0
                while i < bytes.count {
                    let b = bytes[i]; i += 1
                    v |= Int(b & 0x7f) << shift
                    if b < 0x80 { return v }
                    shift += 7
                    if shift > 63 { return nil }
                }
                return nil
            }
            switch tag & 0x07 {
            case 0: guard let v = varint() else { return nil }; if tag >> 3 == 1 { status = v }
            case 2: guard let len = varint(), i + len <= bytes.count else { return nil }; i += len
            case 1: i += 8
            case 5: i += 4
            default: return nil
            }
        }
        return status
    }

    static func check(host: String, port: Int, service: String, timeout: Double) async -> (ok: Bool, message: String) {
        let address = "\(host):\(port)"
        do {
            let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: host, port: port), transportSecurity: .plaintext)
            var options = CallOptions.defaults
            options.timeout = .milliseconds(Int64(timeout * 1000))
            let answer = try await withGRPCClient(transport: transport) { client in
                try await client.unary(request: ClientRequest(message: request(service: service)),
                                       descriptor: MethodDescriptor(fullyQualifiedService: "grpc.health.v1.Health", method: "Check"),
                                       serializer: Raw(), deserializer: Raw(), options: options) { try $0.message }
            }
            guard let status = Self.status(answer) else { return (false, "error: health rpc probe failed: the answer is not a HealthCheckResponse") }
            if status == 1 { return (true, "") }
            return (false, "service unhealthy (responded with \"\(status < statuses.count ? statuses[status] : String(status))\")")
        } catch let e as RPCError where e.code == .deadlineExceeded || e.code == .unavailable {
            return (false, "timeout: failed to connect service \"\(address)\" within \(Int(timeout))s: \(e.code == .deadlineExceeded ? "context deadline exceeded" : e.message)")
        } catch let e as RPCError {
            return (false, "error: health rpc probe failed: rpc error: code = \(e.code) desc = \(e.message)")
        } catch {
            return (false, "error: health rpc probe failed: \(error)")
        }
    }
}
