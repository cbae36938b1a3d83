import GRPCPings
import NIOCore
import NIOEmbedded
import Testing

@Suite("answering a gRPC server's PINGs before HTTP/2 counts them")
struct PingAnswererTests {
    /// An HTTP/2 frame: 9 bytes of header, then the payload.
    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
    }

    func inbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while var b = try channel.readInbound(as: ByteBuffer.self) { out += b.readBytes(length: b.readableBytes)! }
        return out
    }

    func outbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while var b = try channel.readOutbound(as: ByteBuffer.self) { out += b.readBytes(length: b.readableBytes)! }
        return out
    }

    /// Frames split anywhere across reads: every frame but the server's PINGs passes through
    /// whole and in order, each PING is answered with an ACK carrying its 8 bytes, and the ACK of
    /// a PING of the client's own passes through.
    @Test func pingsAreAnsweredAndEverythingElsePasses() throws {
        let channel = EmbeddedChannel(handler: PingAnswerer())
        let settings = Self.frame(type: 4, [0, 5, 0, 0, 0x40, 0])
        let ping1 = Self.frame(type: 6, Array(1...8))
        let data = Self.frame(type: 0, flags: 1, stream: 1, Array(repeating: 7, count: 300))
        let headers = Self.frame(type: 1, flags: 4, stream: 1, [0x88])
        let ping2 = Self.frame(type: 6, [9, 9, 9, 9, 8, 8, 8, 8])
        let ownAck = Self.frame(type: 6, flags: 1, [1, 1, 1, 1, 1, 1, 1, 1])
        let all = settings + ping1 + data + headers + ping2 + ownAck
        // Split into reads of 5 bytes, then of 100: frame headers and PINGs cut in two.
        for size in [5, 100, all.count] {
            var at = 0
            while at < all.count {
                let end = min(all.count, at + size)
                try channel.writeInbound(ByteBuffer(bytes: all[at..<end]))
                at = end
            }
            #expect(try inbound(channel) == settings + data + headers + ownAck, "reads of \(size) bytes")
            #expect(try outbound(channel) == Self.frame(type: 6, flags: 1, Array(1...8)) + Self.frame(type: 6, flags: 1, [9, 9, 9, 9, 8, 8, 8, 8]),
                    "reads of \(size) bytes")
        }
        _ = try channel.finish()
    }
}
