import Foundation
import KubeAPI

/// Kubernetes' remote command protocol over WebSocket (k8s.io/apimachinery's `remotecommand`):
/// every binary message starts with its channel's number; channel 3 carries the command's end as
/// a `Status` object.
public enum RemoteCommand {
    /// The subprotocols served, best first (kubectl 1.30 and later offer `v5.channel.k8s.io`).
    public static let protocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]

    public static let stdin: UInt8 = 0, stdout: UInt8 = 1, stderr: UInt8 = 2, error: UInt8 = 3, resize: UInt8 = 4, close: UInt8 = 255

    /// The subprotocol to answer with, from a `Sec-WebSocket-Protocol` header (the client's
    /// choices, comma-separated, best first): the first one served.
    public static func negotiate(_ header: String?) -> String? {
        let offered = (header ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return offered.first { protocols.contains($0) }
    }

    /// The command's end: `Success`, or `NonZeroExitCode` with the code as kubectl reads it.
    public static func exitStatus(_ code: Int32, command: [String]) -> JSONValue {
        if code == 0 { return ["metadata": [:], "status": "Success"] }
        let message = "command terminated with non-zero exit code: error executing command [\(command.joined(separator: " "))], exit code \(code)"
        return ["metadata": [:], "status": "Failure", "message": .string(message), "reason": "NonZeroExitCode",
                "details": ["causes": [["reason": "ExitCode", "message": .string("\(code)")]]]]
    }

    /// A failure before or instead of the command's end.
    public static func failure(_ message: String, reason: String = "InternalError", code: Int = 500) -> JSONValue {
        ["metadata": [:], "status": "Failure", "message": .string(message), "reason": .string(reason), "code": .int(Int64(code))]
    }

    /// A message on a channel.
    public static func frame(_ channel: UInt8, _ bytes: some Sequence<UInt8>) -> [UInt8] { [channel] + bytes }

    /// The query of a request as it came, in order, decoded (`+` a space, `%XX` a byte); names
    /// may repeat (`command=sh&command=-c`).
    public static func query(_ raw: Substring) -> [(String, String)] {
        raw.split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                let spaced = s.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
        }
    }

    /// What an exec request asks for, from its query.
    public struct ExecOptions: Sendable, Equatable {
        public var command: [String] = []
        public var container = ""
        public var stdin = false, stdout = false, stderr = false, tty = false

        public init(query: [(String, String)]) {
            func flag(_ v: String) -> Bool { ["true", "1"].contains(v.lowercased()) }
            for (k, v) in query {
                switch k {
                case "command": command.append(v)
                case "container": container = v
                case "stdin", "input": stdin = flag(v)
                case "stdout", "output": stdout = flag(v)
                case "stderr", "error": stderr = flag(v)
                case "tty": tty = flag(v)
                default: break
                }
            }
        }
    }
}
