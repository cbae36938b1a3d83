import Foundation
import EtcdClient
@testable import KubeStore
import NetnsKit
import Testing

/// A TCP relay to etcd that can lose the answers to the next transactions: the request reaches
/// etcd and is carried out, and the client's connection is closed instead of answered, as when
/// a network drops a reply. (The store's client sends one request per connection.)
final class LossyRelay: @unchecked Sendable {
    let url: String
    private let fd: Int32
    private let target: Int
    private let lock = NSLock()
    private var toLose = 0
    private var stopped = false

    init(to etcdURL: String) throws {
        target = Int(etcdURL.split(separator: ":").last!)!
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(sock, $0, len) == 0 && listen(sock, 64) == 0 && getsockname(sock, $0, &len) == 0
            }
        }
        guard ok else { close(sock); throw LabError("relay: cannot listen") }
        fd = sock
        url = "http://127.0.0.1:\(UInt16(bigEndian: addr.sin_port))"
        Thread { [self] in acceptLoop() }.start()
    }

    func loseNextTransactionAnswers(_ n: Int) { lock.withLock { toLose = n } }
    var unlost: Int { lock.withLock { toLose } }

    func stop() {
        lock.withLock { stopped = true }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func acceptLoop() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { if lock.withLock({ stopped }) { return } else { continue } }
            Thread { [self] in relay(c) }.start()
        }
    }

    private func relay(_ client: Int32) {
        defer { close(client) }
        // The request: headers, then Content-Length bytes of body.
        var req: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var need: Int?
        while need == nil || req.count < need! {
            let n = read(client, &buf, buf.count)
            if n <= 0 { return }
            req += buf[0..<n]
            if need == nil, let end = req.indices.dropLast(3).first(where: { req[$0] == 13 && req[$0 + 1] == 10 && req[$0 + 2] == 13 && req[$0 + 3] == 10 }) {
                let head = String(decoding: req[..<end], as: UTF8.self).lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                need = end + 4 + length
            }
        }
        guard let up = TCP.connect("127.0.0.1", target) else { return }
        defer { close(up) }
        _ = req.withUnsafeBytes { write(up, $0.baseAddress!, $0.count) }
        var answer: [UInt8] = []
        while true {
            let n = read(up, &buf, buf.count)
            if n <= 0 { break }
            answer += buf[0..<n]
        }
        let isTxn = String(decoding: req.prefix(32), as: UTF8.self).hasPrefix("POST /v3/kv/txn")
        let lose = isTxn && lock.withLock { if toLose > 0 { toLose -= 1; return true } else { return false } }
        if !lose { _ = answer.withUnsafeBytes { write(client, $0.baseAddress!, $0.count) } }
    }
}

@Suite("etcd store: writes whose answers are lost", .enabled(if: EtcdProcess.available, "needs Debian's etcd (etcd-server)"))
struct EtcdRetryTests {
    /// A conditional update or delete that etcd carried out, but whose answer was lost, is
    /// retried; the retry's comparison then fails. That is the write succeeding, not a conflict
    /// or a missing key.
    @Test func lostAnswersAreNotConflicts() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let relay = try LossyRelay(to: etcd.url)
        defer { relay.stop() }
        // Over the JSON gateway: the relay loses answers at HTTP/1.1 requests.
        let store = try EtcdStore(transport: EtcdGatewayTransport(endpoints: [relay.url]))
        let v1 = try await store.create("/cm/default/a", value: data("one"))

        relay.loseNextTransactionAnswers(1)
        let v2 = try await store.update("/cm/default/a", value: data("two"), expected: v1.modRevision)
        #expect(relay.unlost == 0, "the first answer was lost and the write retried")
        #expect(v2.value == data("two") && v2.modRevision > v1.modRevision)
        #expect(try await store.get("/cm/default/a")?.value == data("two"))

        // A real conflict is still one.
        await #expect(throws: StoreError.self) {
            try await store.update("/cm/default/a", value: data("three"), expected: v1.modRevision)
        }

        relay.loseNextTransactionAnswers(1)
        let gone = try await store.delete("/cm/default/a", expected: v2.modRevision)
        #expect(relay.unlost == 0)
        #expect(gone.value == data("two"))
        #expect(try await store.get("/cm/default/a") == nil)

        // Unconditionally, too.
        _ = try await store.create("/cm/default/b", value: data("b"))
        relay.loseNextTransactionAnswers(1)
        #expect(try await store.delete("/cm/default/b", expected: nil).value == data("b"))
        // And a key that was never there is still missing.
        await #expect(throws: StoreError.self) { try await store.delete("/cm/default/nothing", expected: nil) }

        // An unconditional update whose answer was lost is not made a second time: one new
        // revision, one event (the full suite once saw a watch get the update twice).
        let c1 = try await store.create("/cm/default/c", value: data("c1"))
        let watch = try await store.watch(prefix: "/cm/default/c", after: c1.modRevision)
        relay.loseNextTransactionAnswers(1)
        let c2 = try await store.update("/cm/default/c", value: data("c2"), expected: nil)
        #expect(relay.unlost == 0, "the first answer was lost and the write retried")
        #expect(c2.value == data("c2") && c2.modRevision == c1.modRevision + 1)
        #expect(try await store.currentRevision() == c1.modRevision + 1, "written once")
        _ = try await store.delete("/cm/default/c", expected: nil)
        #expect(try await next(2, of: watch).map(\.kind) == [.updated, .deleted])
    }
}
