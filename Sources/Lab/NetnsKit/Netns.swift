import Foundation

/// What labs, netlab and the benchmarks ask of named network namespaces (under /run/netns),
/// through `ip` and `ss`.
public enum Netns {
    /// The names of the namespaces that exist now.
    public static func list() -> [String] {
        ((try? Sh.run(["ip", "netns", "list"]))?.out ?? "").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// The processes inside `ns`.
    public static func pids(_ ns: String) -> [Int32] {
        ((try? Sh.run(["ip", "netns", "pids", ns]))?.out ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    /// Until something listens on each `(ss flag, port)` in `ns` (`-ltnH` for TCP, `-lunH` for
    /// UDP), for at most 5 s; throws naming the ports that never came up.
    public static func waitForListeners(_ ns: String, _ listeners: [(flag: String, port: Int)]) throws {
        var waiting = listeners
        for _ in 0..<250 {
            waiting.removeAll { flag, port in
                ((try? Sh.run(["ip", "netns", "exec", ns, "ss", flag, "sport = :\(port)"]))?.out.isEmpty == false)
            }
            if waiting.isEmpty { return }
            usleep(20_000)
        }
        throw LabError("nothing listens on \(waiting.map { ":\($0.port)" }.joined(separator: ", ")) in \(ns)")
    }

    /// One UDP request ("ping") from `ns` to `ip:port` with socat; the reply, or nil.
    public static func udp(from ns: String, to ip: String, port: Int, timeout: Int = 1) -> String? {
        guard let r = try? Sh.run(["ip", "netns", "exec", ns, "socat", "-T\(timeout)", "-", "UDP:\(ip):\(port)"],
                                  input: "ping\n", timeout: TimeInterval(timeout + 3)),
              r.status == 0 else { return nil }
        let s = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? nil : s
    }

    /// One iperf3 stream from `ns` to `ip:port` for `seconds`; the bits per second received.
    public static func iperf(from ns: String, to ip: String, port: Int = 5201, seconds: Int) throws -> Double {
        let r = try Sh.run(["ip", "netns", "exec", ns, "iperf3", "-c", ip, "-p", String(port), "-t", String(seconds), "-J"],
                           timeout: TimeInterval(seconds + 20))
        guard r.status == 0, let json = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any],
              let end = json["end"] as? [String: Any], let recv = end["sum_received"] as? [String: Any],
              let bps = recv["bits_per_second"] as? Double else {
            throw LabError("iperf3 to \(ip):\(port) failed: \(r.err) \(r.out.prefix(300))")
        }
        return bps
    }
}
