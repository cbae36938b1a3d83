import Glibc

/// A listener that could not be opened: the address, and why in words, with what to try for the
/// errors a user can do something about. The proxy's health and metrics servers and the API
/// server report a failed listen with it.
public struct ListenError: Error, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var errno: Int32?
    public var reason: String

    /// From an errno; the reason is `strerror`'s.
    public init(host: String, port: Int, errno: Int32) {
        self.init(host: host, port: port, errno: errno, reason: String(cString: strerror(errno)))
    }

    public init(host: String, port: Int, errno: Int32?, reason: String) {
        self.host = host
        self.port = port
        self.errno = errno
        self.reason = reason
    }

    /// What to try, for the errors a user can do something about.
    public var hint: String? {
        switch errno {
        case EADDRINUSE: return "another process is listening there (a second proxy or server?)"
        case EADDRNOTAVAIL:
            return host.hasPrefix("127.") || host == "::1"
                ? "no interface has that address: in a new network namespace, bring loopback up (ip link set lo up)"
                : "no interface of this host has that address"
        case EACCES: return "ports below 1024 need root"
        default: return nil
        }
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "cannot listen on \(h):\(port): \(reason)" + (hint.map { "; \($0)" } ?? "")
    }
}
