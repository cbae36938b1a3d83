import Foundation

/// What `/proc/PID/stat` says of a process after its command name (which may hold spaces and
/// parentheses, so it is read from the last `)`): its state and its parent.
public struct ProcStat: Sendable {
    /// `R`, `S`, `Z` (a zombie, waiting to be reaped), …
    public let state: Character
    public let ppid: Int32

    public init?(_ pid: Int32) {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 1, let state = fields[0].first, let ppid = Int32(fields[1]) else { return nil }
        self.state = state
        self.ppid = ppid
    }

    public var isZombie: Bool { state == "Z" }
}

/// An HTTP GET of `path` (HTTP/1.0, so the server closes) from where the caller runs: the
/// answer's status code, or nil when it cannot be had within `timeout`.
public func httpStatus(_ ip: String, _ port: Int, _ path: String, timeout: TimeInterval = 1) -> Int? {
    guard let fd = TCP.connect(ip, port, timeout: timeout) else { return nil }
    defer { close(fd) }
    guard TCP.send(fd, Array("GET \(path) HTTP/1.0\r\nHost: \(ip)\r\n\r\n".utf8)) else { return nil }
    let text = String(decoding: TCP.receiveAll(fd, limit: 4096), as: UTF8.self)
    return text.split(separator: " ").dropFirst().first.flatMap { Int($0) }
}
