import ArgumentParser
import Foundation
import KubeAPI
import Logging
import Synchronization

/// `--logging-format`, as Kubernetes components take it: `text` (the default) or `json`,
/// component-base's structured form: one object per line with `ts` (milliseconds since the epoch,
/// to the microsecond), `caller`, `msg`, `v` for informational lines and the line's key-value
/// pairs, which tools read without parsing text (netlab's pod trace does).
enum LoggingFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
}

/// Whether the logging system is set up (swift-log allows it once; the agent's proxy part asks again).
private let loggingBootstrapped = Atomic<Bool>(false)

func bootstrapLogging(_ level: Logger.Level, format: LoggingFormat = .text) {
    guard loggingBootstrapped.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        case .json:
            var h = JSONLogHandler(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// component-base's JSON lines, on standard error.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    static let output = Mutex<Void>(())

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata.merging(event.metadata ?? [:]) { $1 }
        if let error = event.error { all["err"] = .string("\(error)") }
        let text = Self.line(level: event.level, label: label, message: event.message.description, metadata: all)
        Self.output.withLock { _ in FileHandle.standardError.write(Data(text.utf8)) }
    }

    static func line(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, now: Date = Date()) -> String {
        let ms = String(format: "%.3f", now.timeIntervalSince1970 * 1000)
        var s = "{\"ts\":\(ms),\"caller\":\(quoted(label)),\"msg\":\(quoted(message))"
        switch level {
        case .trace: s += ",\"v\":5"
        case .debug: s += ",\"v\":4"
        case .info, .notice: s += ",\"v\":0"
        default: break
        }
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) { s += ",\(quoted(k)):\(value(v))" }
        return s + "}\n"
    }

    static func quoted(_ s: String) -> String { String(decoding: JSONValue.string(s).bytes(), as: UTF8.self) }

    static func value(_ v: Logger.MetadataValue) -> String {
        switch v {
        case .string(let s): return quoted(s)
        case .stringConvertible(let c):
            if let n = c as? any BinaryInteger { return "\(n)" }
            if let d = c as? Double, d.isFinite { return "\(d)" }
            return quoted(c.description)
        case .array(let a): return "[" + a.map(value).joined(separator: ",") + "]"
        case .dictionary(let d): return "{" + d.sorted { $0.key < $1.key }.map { "\(quoted($0.key)):\(value($0.value))" }.joined(separator: ",") + "}"
        }
    }
}
