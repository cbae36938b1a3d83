// switchyard-echo: what a lab pod serves, as one statically linked program (the
// `switchyard/echo` image holds it and nothing else): HTTP that answers every request with the
// pod's name and the client's address (which pod answered, and whether the connection was
// masqueraded), a TCP echo, and a UDP server that answers with the pod's name.
//
//   switchyard-echo [--name NAME] [--http PORT] [--echo PORT] [--udp PORT]   (0 or off: not served)
//   switchyard-echo get http://IP:PORT/PATH                                  (a client: the body)
//
// The name is the host's (a pod's hostname is its name) unless given. Glibc only: no Foundation,
// so the program links statically and starts in milliseconds.
import Glibc
import Synchronization

/// Whether a client's request (not a kubelet probe's) has been answered: the first is logged,
/// once, with when it came (the container log's timestamp), for `netlab trace`.
let answeredOne = Atomic<Bool>(false)

func say(_ fd: Int32, _ message: String) {
    let bytes = Array(message.utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}

func fail(_ message: String) -> Never {
    say(2, "switchyard-echo: \(message)\n")
    exit(2)
}

/// `switchyard-echo get http://IP:PORT/PATH`: one GET (HTTP/1.0, an address, not a name: a
/// static program has no resolver), its body on stdout; exit status 2 when it fails. What a lab pod
/// uses as a client, in an image without a shell.
func get(_ url: String) -> Never {
    guard url.hasPrefix("http://") else { fail("get: only http://IP:PORT/PATH URLs") }
    let rest = url.dropFirst(7)
    let hostPort = rest.prefix { $0 != "/" }
    let path = rest.dropFirst(hostPort.count)
    let parts = hostPort.split(separator: ":")
    guard let host = parts.first, let port = parts.count > 1 ? UInt16(parts[1]) : 80 else { fail("get: \(url): bad address") }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    guard inet_pton(AF_INET, String(host), &sa.sin_addr) == 1 else { fail("get: \(host) is not an IPv4 address") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var tv = timeval(tv_sec: 3, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard r == 0 else { fail("get: connect \(hostPort): \(String(cString: strerror(errno)))") }
    guard sendAll(fd, Array("GET \(path.isEmpty ? "/" : path) HTTP/1.0\r\nHost: \(hostPort)\r\n\r\n".utf8)) else { fail("get: send: \(String(cString: strerror(errno)))") }
    var answer: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, 4096)
        if n <= 0 { break }
        answer += buf[0..<n]
    }
    let end = headEnd(answer)
    guard end >= 0, String(decoding: answer[0..<end], as: UTF8.self).hasPrefix("HTTP/1.1 200") || String(decoding: answer[0..<end], as: UTF8.self).hasPrefix("HTTP/1.0 200") else {
        fail("get: \(url): no 200 answer")
    }
    _ = answer[(end + 4)...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    exit(0)
}

var givenName = ""
var httpPort: UInt16? = 8080, echoPort: UInt16? = 9090, udpPort: UInt16? = 9090
var args = CommandLine.arguments.dropFirst()
if args.first == "get" {
    guard args.count == 2 else { fail("usage: switchyard-echo get http://IP:PORT/PATH") }
    get(args.last!)
}
while let flag = args.popFirst() {
    guard let value = args.popFirst() else { fail("\(flag) needs a value") }
    func port() -> UInt16? {
        if value == "0" || value == "off" { return nil }
        guard let p = UInt16(value), p > 0 else { fail("\(flag) \(value): not a port") }
        return p
    }
    switch flag {
    case "--name": givenName = value
    case "--http": httpPort = port()
    case "--echo": echoPort = port()
    case "--udp": udpPort = port()
    default: fail("unknown flag \(flag) (--name, --http, --echo, --udp)")
    }
}
let name: String = {
    if !givenName.isEmpty { return givenName }
    var buf = [CChar](repeating: 0, count: 256)
    gethostname(&buf, buf.count)
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()
signal(SIGPIPE, SIG_IGN)

func listener(_ type: Int32, _ port: UInt16) -> Int32 {
    let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { fail("socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard r == 0 else { fail("bind :\(port): \(String(cString: strerror(errno)))") }
    if type == Int32(SOCK_STREAM.rawValue) { listen(fd, 1024) }
    return fd
}

/// `ip:port` of a socket address.
func describe(_ sa: sockaddr_in) -> String {
    var addr = sa.sin_addr
    var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
    inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
    return "\(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)):\(UInt16(bigEndian: sa.sin_port))"
}

/// Runs `body` on a thread of its own (detached).
func spawn(_ body: @escaping () -> Void) {
    final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, 256 << 10)
    var thread = pthread_t()
    let r = pthread_create(&thread, &attr, { p in
        let box = Unmanaged<AnyObject>.fromOpaque(p!).takeRetainedValue()
        (box as! Box).body()
        return nil
    }, context)
    if r != 0 { Unmanaged<AnyObject>.fromOpaque(context).release() }
}

func acceptLoop(_ fd: Int32, _ handle: @escaping (Int32, sockaddr_in) -> Void) {
    spawn {
        while true {
            var sa = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let c = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(fd, $0, &len) } }
            if c < 0 { continue }
            spawn { handle(c, sa) }
        }
    }
}

func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return false }
        off += n
    }
    return true
}

/// HTTP/1.x: every request answered `200` with `NAME CLIENT_IP:PORT`, kept alive as the client
/// asks; the first one from a client (not a probe) logged.
func serveHTTP(_ fd: Int32, _ peer: sockaddr_in, name: String) {
    defer { close(fd) }
    let body = Array("\(name) \(describe(peer))\n".utf8)
    var pending: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        while pending.count < 4 || !containsHeadEnd(pending) {
            let n = read(fd, &buf, buf.count)
            if n <= 0 || pending.count > 65536 { return }
            pending += buf[0..<n]
        }
        let end = headEnd(pending)
        let raw = String(decoding: pending[0..<end], as: UTF8.self)
        let head = raw.lowercased()
        pending.removeFirst(end + 4)
        let http10 = head.split(separator: "\r\n").first?.hasSuffix("http/1.0") ?? false
        let keepAlive = http10 ? head.contains("connection: keep-alive") : !head.contains("connection: close")
        let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.count)\r\n" + (keepAlive ? "" : "Connection: close\r\n") + "\r\n"
        let sent = sendAll(fd, Array(response.utf8) + body)
        if sent, !head.contains("user-agent: kube-probe/"), !answeredOne.exchange(true, ordering: .relaxed) {
            // "GET /path HTTP/1.1": the method and path, and who asked.
            let request = (raw.split(separator: "\r\n").first ?? "").split(separator: " ").prefix(2).joined(separator: " ")
            say(1, "first request answered: \(request) from \(describe(peer))\n")
        }
        guard sent, keepAlive else { return }
    }
}

func headEnd(_ b: [UInt8]) -> Int {
    var i = 0
    while i + 3 < b.count {
        if b[i] == 13, b[i + 1] == 10, b[i + 2] == 13, b[i + 3] == 10 { return i }
        i += 1
    }
    return -1
}

func containsHeadEnd(_ b: [UInt8]) -> Bool { headEnd(b) >= 0 }

/// TCP echo: every byte back until the client closes.
func serveEcho(_ fd: Int32, _: sockaddr_in) {
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 || !sendAll(fd, Array(buf[0..<n])) { return }
    }
}

/// UDP: every datagram answered with the pod's name.
func serveUDP(_ fd: Int32, reply: [UInt8]) {
    spawn {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 8)
        while true {
            var sa = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buf, 65536, 0, $0, &len) } }
            if n < 0 { continue }
            _ = reply.withUnsafeBytes { r in
                withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, r.baseAddress, r.count, 0, $0, len) } }
            }
        }
    }
}

/// Every server on a thread of its own, set up from here: nothing of the top level's (the main
/// actor's) is captured by them.
func start(name: String, http: UInt16?, echo: UInt16?, udp: UInt16?) {
    if let p = http { acceptLoop(listener(Int32(SOCK_STREAM.rawValue), p)) { fd, peer in serveHTTP(fd, peer, name: name) } }
    if let p = echo { acceptLoop(listener(Int32(SOCK_STREAM.rawValue), p), serveEcho) }
    if let p = udp { serveUDP(listener(Int32(SOCK_DGRAM.rawValue), p), reply: Array(name.utf8)) }
}

start(name: name, http: httpPort, echo: echoPort, udp: udpPort)
say(1, "switchyard-echo \(name): http \(httpPort.map(String.init) ?? "off"), tcp echo \(echoPort.map(String.init) ?? "off"), udp \(udpPort.map(String.init) ?? "off")\n")
while true { pause() }
