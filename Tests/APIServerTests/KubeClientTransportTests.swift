import Foundation
import Synchronization
@testable import KubeClient
import Testing

/// The client's requests against a server that answers as soon as it has read a request's head
/// and closes at once (as an HTTP/1.1 server may with `Connection: close`): the answer must be
/// read, not lost to a write of the request's end after the close.
@Suite struct KubeClientTransportTests {
    /// A loopback server on its own thread: reads up to the blank line after the head, answers
    /// `{}` and closes. Returns its port; it stops after `connections` connections.
    static func answeringServer(connections: Int) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { close(fd); throw POSIXError(.EADDRINUSE) }
        let port = Int(UInt16(bigEndian: sa.sin_port))
        let answer = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".utf8)
        Thread.detachNewThread {
            defer { close(fd) }
            for _ in 0..<connections {
                let c = accept(fd, nil, nil)
                guard c >= 0 else { return }
                var seen = [UInt8]()
                var buf = [UInt8](repeating: 0, count: 4096)
                while !seen.suffix(4).elementsEqual([13, 10, 13, 10]) {
                    let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, 1, 0) }
                    if n <= 0 { break }
                    seen.append(buf[0])
                }
                _ = answer.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(c)
            }
        }
        return port
    }

    final class Stop: Sendable { let flag = Atomic<Bool>(false) }

    @Test func anAnswerBeforeTheRequestsEndIsRead() async throws {
        let count = 100   // before the fix, about 40% of them failed
        let port = try Self.answeringServer(connections: count)
        let client = try KubeClient(url: "http://127.0.0.1:\(port)")
        // Tasks that keep the cooperative threads busy, so the client's task waits between its
        // writes as it does on a loaded machine, while the event loop takes in the answer.
        let busy = ProcessInfo.processInfo.activeProcessorCount * 2
        let stop = Stop()
        let spinners = (0..<busy).map { _ in
            Task.detached {
                while !stop.flag.load(ordering: .relaxed) {
                    let until = DispatchTime.now().uptimeNanoseconds + 2_000_000
                    while DispatchTime.now().uptimeNanoseconds < until {}
                    await Task.yield()
                }
            }
        }
        defer {
            stop.flag.store(true, ordering: .relaxed)
            for s in spinners { s.cancel() }
        }
        var failures: [String] = []
        for _ in 0..<count {
            do {
                let r = try await client.request("GET", "/api/v1/namespaces")
                if r.status != 200 || r.body != .object([:]) { failures.append("status \(r.status), body \(r.body)") }
            } catch {
                failures.append("\(error)")
            }
        }
        #expect(failures.count == 0, "\(failures.count) of \(count) requests failed, first: \(failures.first ?? "")")
    }
}
