import CMnl
import CNftnl
import KubeAPI
import Foundation
import Netlink

/// A NETLINK_NETFILTER socket (the Netlink module's) that sends nf_tables batches and reads
/// back state. Safe to share: a lock keeps one exchange at a time.
final class NFTSocket: @unchecked Sendable {
    private let socket: NetlinkSocket
    private let lock = NSLock()

    /// Opens the socket in the network namespace at `netns` (nil: this process's).
    init(netns: String? = nil) throws {
        socket = try NetlinkSocket(NETLINK_NETFILTER, in: Namespace(path: netns))
        socket.setBuffer(SO_RCVBUFFORCE, 8 << 20)
    }

    var portID: UInt32 { socket.portID }

    func nextSeq() -> UInt32 {
        lock.withLock { socket.nextSequence() }
    }

    /// Sends a finished batch in one `sendmsg` (the kernel needs a batch in one
    /// message) and waits until the kernel has processed it: errors of the batch
    /// arrive before the answer to a generation request sent right after it.
    func commit(_ batch: Batch) throws {
        let iovCount = nftnl_batch_iovec_len(batch.raw)
        var iov = [iovec](repeating: iovec(), count: Int(iovCount))
        nftnl_batch_iovec(batch.raw, &iov, UInt32(iovCount))
        let length = iov.reduce(0) { $0 + $1.iov_len }
        try lock.withLock {
            let e = socket.setBuffer(SO_SNDBUFFORCE, length + 65536)
            if e != 0 { throw NetlinkError(errno: e, what: "raise the netlink send buffer to \(length) bytes") }
            try socket.send(iovecs: &iov, "send nf_tables batch of \(length) bytes")
            try fence(batch)
        }
    }

    /// Asks for the ruleset generation and reads every message up to its answer,
    /// turning the first error of `batch` into a thrown error.
    private func fence(_ batch: Batch) throws {
        let fenceSeq = socket.nextSequence()
        var buf = [UInt8](repeating: 0, count: 256)
        let len = buf.withUnsafeMutableBytes { raw -> Int in
            let p = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            let nlh = nftnl_nlmsg_build_hdr(p, UInt16(NFT_MSG_GETGEN.rawValue), UInt16(AF_UNSPEC), UInt16(NLM_F_REQUEST | NLM_F_ACK), fenceSeq)!
            return Int(nlh.pointee.nlmsg_len)
        }
        try buf.withUnsafeBytes { try socket.send(UnsafeRawBufferPointer(rebasing: $0[..<len]), "send generation request") }
        var firstError: NetlinkError?
        var done = false
        try socket.receive(until: { done }, "read nf_tables answers") { nlh in
            guard nlh.pointee.nlmsg_type == UInt16(NLMSG_ERROR) else { return }
            let err = Self.error(nlh)
            if err.code != 0, firstError == nil {
                firstError = NetlinkError(errno: err.code, what: batch.describe(seq: err.seq))
            }
            if err.seq == fenceSeq { done = true }
        }
        if let firstError { throw firstError }
    }

    /// Sends a dump request built by `build` and hands every answer message to `each`.
    func dump(_ build: (UnsafeMutablePointer<CChar>, UInt32) -> Void,
              _ each: (UnsafePointer<nlmsghdr>) -> Void) throws {
        try lock.withLock {
            let s = socket.nextSequence()
            var buf = [CChar](repeating: 0, count: 4096)
            let len = buf.withUnsafeMutableBufferPointer { p -> Int in
                build(p.baseAddress!, s)
                return Int(UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: nlmsghdr.self).pointee.nlmsg_len)
            }
            try buf.withUnsafeBytes { try socket.send(UnsafeRawBufferPointer(rebasing: $0[..<len]), "send dump request") }
            var finished = false
            var failure: Int32 = 0
            try socket.receive(until: { finished }, "read dump") { nlh in
                guard nlh.pointee.nlmsg_seq == s else { return }
                if nlh.pointee.nlmsg_type == UInt16(NLMSG_DONE) {
                    finished = true
                } else if nlh.pointee.nlmsg_type == UInt16(NLMSG_ERROR) {
                    failure = Self.error(nlh).code
                    finished = true
                } else {
                    each(nlh)
                }
            }
            if failure != 0 { throw NetlinkError(errno: failure, what: "dump") }
        }
    }

    /// The errno (positive, 0 for an ack) and the sequence number an NLMSG_ERROR answers.
    private static func error(_ nlh: UnsafePointer<nlmsghdr>) -> (code: Int32, seq: UInt32) {
        let err = UnsafeRawPointer(nlh).advanced(by: MemoryLayout<nlmsghdr>.size).assumingMemoryBound(to: nlmsgerr.self)
        return (-err.pointee.error, err.pointee.msg.nlmsg_seq)
    }
}

/// One nf_tables transaction under construction: begin, messages, end.
final class Batch {
    let raw: OpaquePointer
    private let socket: NFTSocket
    private(set) var messages = 0
    private var ended = false
    /// What each message asked for, by sequence number, so an error can say so
    /// (built only when one is needed).
    private var labels: [UInt32: () -> String] = [:]

    private let family: UInt32

    init(socket: NFTSocket, family: IPFamily = .ipv4) {
        self.socket = socket
        self.family = family.nfproto
        // Every message must fit in the overrun space: element lists reach 64 KiB.
        raw = nftnl_batch_alloc(UInt32(2 << 20), UInt32(256 << 10))!
        nftnl_batch_begin(current(), socket.nextSeq())
        advance()
    }

    deinit { nftnl_batch_free(raw) }

    private func current() -> UnsafeMutablePointer<CChar> {
        nftnl_batch_buffer(raw).assumingMemoryBound(to: CChar.self)
    }

    private func advance() {
        if nftnl_batch_update(raw) < 0 { fatalError("nftnl_batch_update: out of memory") }
    }

    /// Starts a message of `type` with `flags`, lets `fill` write its payload, and
    /// records `label` for error reports.
    func add(_ type: UInt32, flags: Int32, label: @escaping @autoclosure () -> String,
             _ fill: (UnsafeMutablePointer<nlmsghdr>) -> Void) {
        let s = socket.nextSeq()
        let nlh = nftnl_nlmsg_build_hdr(current(), UInt16(type), UInt16(family), UInt16(flags), s)!
        fill(nlh)
        labels[s] = label
        messages += 1
        advance()
    }

    private var setIDs: UInt32 = 0x8000_0000
    /// IDs for named sets, from a range the anonymous sets' numbers do not reach.
    func nextSetID() -> UInt32 {
        setIDs &+= 1
        return setIDs
    }

    func finish() {
        precondition(!ended)
        nftnl_batch_end(current(), socket.nextSeq())
        advance()
        ended = true
    }

    func describe(seq: UInt32) -> String { labels[seq]?() ?? "nf_tables batch" }
}
