import Foundation
import NetnsKit

/// What `compare` measures for one path (the direct pod IP, or a ClusterIP in one mode), all
/// from the client namespace, every loop bounded in count and time.
public struct Figures: Codable, Sendable {
    public var connectP50 = 0.0, connectP99 = 0.0      // seconds, connect() to the SYN-ACK
    public var requestP50 = 0.0, requestP99 = 0.0      // seconds, a 1-byte echo on an open connection
    public var throughput = 0.0                        // bits per second, one iperf3 stream
    public var connectionsPerSecond = 0.0              // connect, echo, close, by `concurrency` clients
    public var failedConnections = 0
    public var apiToTraffic: Double?                   // seconds, Service created to first echo
    public var proxyReady: Double?                     // seconds, proxies started to all synced and traffic
    public var proxyRSS: Int?                          // bytes, the first node's proxy once synced
}

public struct MeasureOptions: Sendable {
    public var samples = 2000          // connects and requests, at most
    public var seconds = 1.0           // bound of each latency loop and the connection-rate run
    public var iperfSeconds = 2
    public var concurrency = 4
    public init() {}
}

enum Measure {
    static func percentile(_ v: [Double], _ p: Double) -> Double {
        guard !v.isEmpty else { return 0 }
        let s = v.sorted()
        return s[min(s.count - 1, Int(Double(s.count) * p))]
    }

    /// connect() latency: a fresh connection each time, closed with a reset (no TIME_WAIT).
    static func connectLatency(_ ns: String, _ ip: String, _ port: Int, _ o: MeasureOptions) throws -> [Double] {
        try inNamespace(ns) {
            var times: [Double] = []
            let end = Date().addingTimeInterval(o.seconds)
            while times.count < o.samples && Date() < end {
                let t0 = DispatchTime.now().uptimeNanoseconds
                guard let fd = TCP.connect(ip, port, timeout: 1) else { continue }
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                TCP.reset(fd)
            }
            guard !times.isEmpty else { throw NetLabError("no connection to \(ip):\(port) succeeded") }
            return times
        }
    }

    /// Round trips of one byte on one connection to a TCP echo.
    static func requestLatency(_ ns: String, _ ip: String, _ port: Int, _ o: MeasureOptions) throws -> [Double] {
        try inNamespace(ns) {
            guard let fd = TCP.connect(ip, port, timeout: 2) else { throw NetLabError("cannot connect to \(ip):\(port)") }
            defer { close(fd) }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var times: [Double] = []
            let end = Date().addingTimeInterval(o.seconds)
            while times.count < o.samples && Date() < end {
                let t0 = DispatchTime.now().uptimeNanoseconds
                guard TCP.send(fd, [0x78]), TCP.receive(fd, count: 1) == [0x78] else { throw NetLabError("echo through \(ip):\(port) broke off") }
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            return times
        }
    }

    /// Everything but the API and proxy figures, through `ip`.
    static func path(_ ns: String, ip: String, _ o: MeasureOptions, step: (String) -> Void) throws -> Figures {
        var f = Figures()
        step("connection setup latency")
        let c = try connectLatency(ns, ip, 9090, o)
        f.connectP50 = percentile(c, 0.5); f.connectP99 = percentile(c, 0.99)
        step("request latency")
        let r = try requestLatency(ns, ip, 9090, o)
        f.requestP50 = percentile(r, 0.5); f.requestP99 = percentile(r, 0.99)
        step("throughput (iperf3, \(o.iperfSeconds) s)")
        f.throughput = try Netns.iperf(from: ns, to: ip, port: 5201, seconds: o.iperfSeconds)
        step("new connections per second (\(o.concurrency) clients, \(o.seconds) s)")
        let rate = try ConnectionRate.run(netns: ns, ip: ip, port: 9090, concurrency: o.concurrency, duration: o.seconds)
        f.connectionsPerSecond = rate.perSecond
        f.failedConnections = rate.failed
        return f
    }

    /// Tries to exchange one byte with `ip:port` until it works or `timeout` passes; the time
    /// it took, or nil. Each try is a new connection with a short connect timeout.
    static func firstEcho(_ ns: String, _ ip: String, _ port: Int, since start: DispatchTime, timeout: Double) throws -> Double? {
        try inNamespace(ns) {
            let deadline = start.uptimeNanoseconds + UInt64(timeout * 1e9)
            while DispatchTime.now().uptimeNanoseconds < deadline {
                if let fd = TCP.connect(ip, port, timeout: 0.05) {
                    let ok = TCP.send(fd, [0x79]) && TCP.receive(fd, count: 1) == [0x79]
                    TCP.reset(fd)
                    if ok { return Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9 }
                }
                usleep(2000)
            }
            return nil
        }
    }

    /// One HTTP GET (HTTP/1.0, so the server closes); the body.
    static func httpGet(_ ns: String, _ ip: String, _ port: Int, timeout: Double = 2, host: String? = nil, path: String = "/") -> String? {
        try? inNamespace(ns) {
            guard let fd = TCP.connect(ip, port, timeout: timeout) else { return nil }
            defer { close(fd) }
            guard TCP.send(fd, Array("GET \(path) HTTP/1.0\r\nHost: \(host ?? ip)\r\n\r\n".utf8)) else { return nil }
            let text = String(decoding: TCP.receiveAll(fd, limit: 4096), as: UTF8.self)
            guard text.hasPrefix("HTTP/1.1 200"), let body = text.components(separatedBy: "\r\n\r\n").dropFirst().first else { return nil }
            return body.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// GET `path` from a server inside `ns`; the status code.
    static func httpStatus(_ ns: String, _ ip: String, _ port: Int, _ path: String) -> Int? {
        try? inNamespace(ns) { NetnsKit.httpStatus(ip, port, path) }
    }
}
