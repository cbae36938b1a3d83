import CRI
import Foundation
import KubeAPI

/// A container's lifecycle hook (`lifecycle.postStart`, `lifecycle.preStop`): a command run in
/// it, an HTTP GET to it, or a pause, as upstream runs them. A postStart hook that fails gets the
/// container killed (`FailedPostStartHook`); a preStop hook runs before the stop signal, within
/// the grace period (`FailedPreStopHook` when it fails).
struct LifecycleHook: Sendable {
    enum Action: Sendable {
        case exec([String])
        case http(host: String?, port: JSONValue, path: String, scheme: String, headers: [(String, String)])
        case sleep(Int64)
    }
    let action: Action

    init?(_ spec: JSONValue?) {
        guard let spec, case .object = spec else { return nil }
        if let cmd = spec[path: ["exec", "command"]]?.array {
            action = .exec(cmd.compactMap(\.string))
        } else if let h = spec["httpGet"] {
            action = .http(host: h["host"]?.string, port: h["port"] ?? 80, path: h["path"]?.string ?? "/", scheme: h["scheme"]?.string ?? "HTTP",
                           headers: (h["httpHeaders"]?.array ?? []).compactMap { x in x["name"]?.string.map { ($0, x["value"]?.string ?? "") } })
        } else if let s = spec[path: ["sleep", "seconds"]]?.int {
            action = .sleep(max(0, s))
        } else {
            return nil
        }
    }

    /// Runs the hook, at most `timeout` seconds (0: no limit); nil on success, else why not, as
    /// upstream words it.
    func run(container: JSONValue, id: String, podIP: String, timeout: Int64, runtime: any ContainerRuntime) async -> String? {
        switch action {
        case .exec(let cmd):
            do {
                let r = try await runtime.execSync(id, cmd: cmd, timeout: timeout)
                if r.exitCode == 0 { return nil }
                let out = String(decoding: r.stdout + r.stderr, as: UTF8.self)
                return "command '\(cmd.joined(separator: " "))' exited with \(r.exitCode): \(out)"
            } catch {
                return "\(error)"
            }
        case .http(let host, let p, let path, let scheme, let headers):
            guard let port = Probe.port(p, in: container) else { return "unknown port \(p.text())" }
            let h = host ?? podIP
            let limit = timeout > 0 ? Double(timeout) : 30
            let (ok, message) = scheme == "HTTPS"
                ? await Probe.httpsGet(host: h, port: port, path: path, headers: headers, timeout: limit)
                : await Probe.blocking { Probe.httpGet(host: h, port: port, path: path, headers: headers, timeout: limit) }
            return ok ? nil : message
        case .sleep(let seconds):
            let s = timeout > 0 ? min(seconds, timeout) : seconds
            try? await Task.sleep(for: .seconds(s))
            return nil
        }
    }
}
