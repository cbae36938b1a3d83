import CRI
import Foundation
import HTTPJSON
import KubeAPI
import Synchronization

/// A container's probe, as its spec says (upstream's defaults: period 10 s, timeout 1 s,
/// success threshold 1, failure threshold 3).
struct Probe: Sendable {
    enum Kind: String, Sendable { case liveness = "Liveness", readiness = "Readiness", startup = "Startup" }
    enum Action: Sendable {
        case exec([String])
        case http(host: String?, port: JSONValue, path: String, scheme: String, headers: [(String, String)])
        case tcp(host: String?, port: JSONValue)
        case grpc(port: Int, service: String)
    }
    var kind: Kind
    var action: Action
    var initialDelay: Double
    var period: Double
    var timeout: Double
    var successThreshold: Int
    var failureThreshold: Int
    /// The grace period of a stop this probe causes (liveness and startup), over the pod's.
    var terminationGracePeriodSeconds: Int64?

    init?(_ kind: Kind, _ spec: JSONValue?) {
        guard let spec, case .object = spec else { return nil }
        self.kind = kind
        if let cmd = spec[path: ["exec", "command"]]?.array {
            action = .exec(cmd.compactMap(\.string))
        } else if let h = spec["httpGet"] {
            action = .http(host: h["host"]?.string, port: h["port"] ?? 80, path: h["path"]?.string ?? "/", scheme: h["scheme"]?.string ?? "HTTP",
                           headers: (h["httpHeaders"]?.array ?? []).compactMap { x in x["name"]?.string.map { ($0, x["value"]?.string ?? "") } })
        } else if let t = spec["tcpSocket"] {
            action = .tcp(host: t["host"]?.string, port: t["port"] ?? 0)
        } else if let g = spec["grpc"] {
            action = .grpc(port: Int(g["port"]?.int ?? 0), service: g["service"]?.string ?? "")
        } else {
            return nil
        }
        initialDelay = Double(spec["initialDelaySeconds"]?.int ?? 0)
        period = Double(max(1, spec["periodSeconds"]?.int ?? 10))
        timeout = Double(max(1, spec["timeoutSeconds"]?.int ?? 1))
        successThreshold = Int(max(1, spec["successThreshold"]?.int ?? 1))
        failureThreshold = Int(max(1, spec["failureThreshold"]?.int ?? 3))
        terminationGracePeriodSeconds = spec["terminationGracePeriodSeconds"]?.int
    }

    /// A named port's number among the container's ports.
    static func port(_ p: JSONValue, in container: JSONValue) -> Int? {
        if let n = p.int { return Int(n) }
        guard let name = p.string else { return nil }
        if let n = Int(name) { return n }
        return (container["ports"]?.array ?? []).first { $0["name"]?.string == name }.flatMap { $0["containerPort"]?.int }.map(Int.init)
    }

    /// Runs once: success, or the failure's message as upstream words it.
    func run(container: JSONValue, id: String, podIP: String, runtime: any ContainerRuntime) async -> (ok: Bool, message: String) {
        switch action {
        case .exec(let cmd):
            do {
                let r = try await runtime.execSync(id, cmd: cmd, timeout: Int64(timeout))
                if r.exitCode == 0 { return (true, "") }
                let out = String(decoding: r.stdout + r.stderr, as: UTF8.self)
                return (false, out.isEmpty ? "command \(cmd.map { "\"\($0)\"" }.joined(separator: " ")) exited with \(r.exitCode)" : out)
            } catch {
                return (false, "\(error)")
            }
        case .http(let host, let p, let path, let scheme, let headers):
            guard let port = Self.port(p, in: container) else { return (false, "unknown port \(p.text())") }
            let h = host ?? podIP
            if scheme == "HTTPS" { return await Self.httpsGet(host: h, port: port, path: path, headers: headers, timeout: timeout) }
            return await Self.blocking { Self.httpGet(host: h, port: port, path: path, headers: headers, timeout: timeout) }
        case .tcp(let host, let p):
            guard let port = Self.port(p, in: container) else { return (false, "unknown port \(p.text())") }
            let h = host ?? podIP
            return await Self.blocking {
                let (fd, err) = Self.connect(h, port, timeout: timeout)
                if fd >= 0 { close(fd); return (true, "") }
                return (false, "dial tcp \(h):\(port): \(err)")
            }
        case .grpc(let port, let service):
            return await GRPCHealth.check(host: podIP, port: port, service: service, timeout: timeout)
        }
    }

    /// Socket work off the cooperative pool.
    static func blocking(_ body: @escaping @Sendable () -> (Bool, String)) async -> (ok: Bool, message: String) {
        await withCheckedContinuation { c in DispatchQueue.global().async { c.resume(returning: body()) } }
    }

    static func connect(_ host: String, _ port: Int, timeout: Double) -> (Int32, String) {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return (-1, "lookup \(host): not an IPv4 address") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return (-1, "socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int(suseconds_t((timeout - floor(timeout)) * 1e6)))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if r != 0 {
            let e = errno
            close(fd)
            return (-1, e == EINPROGRESS || e == EAGAIN ? "i/o timeout" : "connect: \(String(cString: strerror(e)).lowercased())")
        }
        return (fd, "")
    }

    /// An HTTPS GET as upstream probes make it: TLS without checking the certificate (a pod's
    /// certificate names nothing the kubelet could check), 200–399 is success; no answer within
    /// `timeout` is a failure.
    static func httpsGet(host: String, port: Int, path: String, headers: [(String, String)], timeout: Double) async -> (ok: Bool, message: String) {
        let url = "https://\(host):\(port)\(path)"
        let client = HTTPJSONClient(server: "https://\(host):\(port)", host: host, port: port, tls: .init(insecureSkipVerify: true), peer: "the pod")
        let answered = Once()
        return await withCheckedContinuation { (c: CheckedContinuation<(ok: Bool, message: String), Never>) in
            let request = Task {
                var result: (ok: Bool, message: String)
                do {
                    let r = try await client.exchange("GET", path, headers: [("User-Agent", "kube-probe/1.33"), ("Accept", "*/*")] + headers)
                    result = (200..<400).contains(r.status) ? (true, "") : (false, "HTTP probe failed with statuscode: \(r.status)")
                } catch {
                    result = (false, "Get \"\(url)\": \(error)")
                }
                if answered.claim() { c.resume(returning: result) }
            }
            Task {
                try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
                if answered.claim() {
                    request.cancel()
                    c.resume(returning: (false, "Get \"\(url)\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"))
                }
            }
        }
    }

    /// True for the first caller only.
    final class Once: Sendable {
        let flag = Atomic<Bool>(false)
        func claim() -> Bool { flag.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged }
    }

    /// An HTTP/1.1 GET: 200–399 is success (upstream's probe rule).
    static func httpGet(host: String, port: Int, path: String, headers: [(String, String)], timeout: Double) -> (Bool, String) {
        let url = "http://\(host):\(port)\(path)"
        let (fd, err) = connect(host, port, timeout: timeout)
        guard fd >= 0 else { return (false, "Get \"\(url)\": dial tcp \(host):\(port): \(err)") }
        defer { close(fd) }
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        for (k, v) in headers { request += "\(k): \(v)\r\n" }
        request += "\r\n"
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else {
            return (false, "Get \"\(url)\": write: \(String(cString: strerror(errno)))")
        }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = recv(fd, &buf, buf.count, 0)
        guard n > 0 else { return (false, "Get \"\(url)\": \(n == 0 ? "EOF" : "context deadline exceeded (Client.Timeout exceeded while awaiting headers)")") }
        let line = String(decoding: buf[0..<n], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let code = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        if (200..<400).contains(code) { return (true, "") }
        return (false, "HTTP probe failed with statuscode: \(code)")
    }
}
