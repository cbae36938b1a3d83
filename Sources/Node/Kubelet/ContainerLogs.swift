import Foundation

/// A container's log as the runtime writes it (CRI's log format: one entry per line,
/// `<RFC 3339 time> <stdout|stderr> <P|F> <content>`, a `P` entry a part of a line the next
/// entries finish), read back as `kubectl logs` shows it: the content only, or each entry after
/// its time with `--timestamps`; the last lines with `--tail`, from a time with `--since`, at most
/// so many bytes with `--limit-bytes`; followed while the container runs with `-f`.
public struct ContainerLogOptions: Sendable, Equatable {
    public var follow = false
    public var timestamps = false
    /// `tailLines`: the last N lines (nil: all).
    public var tailLines: Int?
    /// `limitBytes`: at most this many bytes of output.
    public var limitBytes: Int?
    /// `sinceSeconds` / `sinceTime`, as a time: entries before it are left out.
    public var since: Date?

    public init(follow: Bool = false, timestamps: Bool = false, tailLines: Int? = nil, limitBytes: Int? = nil, since: Date? = nil) {
        self.follow = follow
        self.timestamps = timestamps
        self.tailLines = tailLines
        self.limitBytes = limitBytes
        self.since = since
    }

    /// From the query of `/containerLogs` (and of the API's `pods/log`): `follow`, `timestamps`,
    /// `tailLines`, `limitBytes`, `sinceSeconds`, `sinceTime`; a malformed number is an error.
    public init(query: [String: String], now: Date = Date()) throws {
        func flag(_ k: String) -> Bool { ["true", "1"].contains(query[k]?.lowercased() ?? "") }
        func number(_ k: String) throws -> Int? {
            guard let v = query[k], !v.isEmpty else { return nil }
            guard let n = Int(v), n >= 0 else { throw KubeletError("\(k): \(v) is not a non-negative integer") }
            return n
        }
        follow = flag("follow")
        timestamps = flag("timestamps")
        tailLines = try number("tailLines")
        limitBytes = try number("limitBytes")
        if let s = try number("sinceSeconds") { since = now.addingTimeInterval(-Double(s)) }
        if let t = query["sinceTime"], !t.isEmpty {
            guard let d = ContainerLog.parseTime(t) else { throw KubeletError("sinceTime: \(t) is not an RFC 3339 time") }
            since = d
        }
    }
}

public enum ContainerLog {
    /// One entry of a CRI log file.
    public struct Entry: Sendable, Equatable {
        public var time: String
        public var stream: String
        /// A part of a line (`P`): no newline follows its content.
        public var partial: Bool
        public var content: [UInt8]
    }

    /// Parses one line of the file (without its newline); nil for a line that is not an entry.
    public static func parse<C: Collection>(_ line: C) -> Entry? where C.Element == UInt8, C.Index == Int {
        guard let s1 = line.firstIndex(of: 0x20) else { return nil }
        let afterTime = line.index(after: s1)
        guard let s2 = line[afterTime...].firstIndex(of: 0x20) else { return nil }
        let stream = String(decoding: line[afterTime..<s2], as: UTF8.self)
        guard stream == "stdout" || stream == "stderr" else { return nil }
        let afterStream = line.index(after: s2)
        let s3 = line[afterStream...].firstIndex(of: 0x20) ?? line.endIndex
        let tag = String(decoding: line[afterStream..<s3], as: UTF8.self)
        let content = s3 < line.endIndex ? Array(line[line.index(after: s3)...]) : []
        return Entry(time: String(decoding: line[line.startIndex..<s1], as: UTF8.self), stream: stream,
                     partial: tag.split(separator: ":").first == "P", content: content)
    }

    /// What `kubectl logs` shows of an entry.
    public static func render(_ e: Entry, timestamps: Bool) -> [UInt8] {
        var out: [UInt8] = []
        if timestamps { out += Array(e.time.utf8); out.append(0x20) }
        out += e.content
        if !e.partial { out.append(0x0a) }
        return out
    }

    /// An RFC 3339 time with or without fractional seconds (the runtime writes nanoseconds).
    public static func parseTime(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        // Foundation reads at most milliseconds: the fraction is cut to three digits.
        var t = s
        if let dot = t.firstIndex(of: "."), let end = t[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }) {
            let digits = t[t.index(after: dot)..<end]
            t = String(t[..<dot]) + "." + String((digits + "000").prefix(3)) + String(t[end...])
        } else {
            f.formatOptions = [.withInternetDateTime]
        }
        return f.date(from: t)
    }

    /// The entries of a file's bytes, in order; an unfinished last line is left for later
    /// (`rest` is where it starts).
    public static func entries(_ bytes: [UInt8]) -> (entries: [Entry], rest: Int) {
        var out: [Entry] = []
        var start = 0
        while let nl = bytes[start...].firstIndex(of: 0x0a) {
            if let e = parse(bytes[start..<nl]) { out.append(e) }
            start = nl + 1
        }
        return (out, start)
    }

    /// The entries that make up the last `n` lines (a line being its partial entries and the
    /// full entry that ends it).
    public static func tail(_ entries: [Entry], lines n: Int) -> ArraySlice<Entry> {
        guard n > 0 else { return entries[entries.endIndex...] }
        var seen = 0, i = entries.endIndex
        while i > entries.startIndex {
            let e = entries[i - 1]
            if !e.partial {
                if seen == n { break }
                seen += 1
            }
            i -= 1
        }
        return entries[i...]
    }

    /// The log of the file at `path` as `kubectl logs` shows it; with `follow`, the stream goes
    /// on with what is appended while `running()` says the container runs (asked at most once a
    /// second while nothing new comes), and ends once it stops and the file has no more.
    public static func read(path: String, options: ContainerLogOptions,
                            running: @escaping @Sendable () async -> Bool) -> AsyncThrowingStream<Data, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    guard let handle = FileHandle(forReadingAtPath: path) else {
                        throw KubeletError("failed to open log file \"\(path)\": \(String(cString: strerror(errno)))")
                    }
                    defer { try? handle.close() }
                    var budget = options.limitBytes ?? Int.max
                    func emit(_ entries: some Sequence<Entry>) -> Bool {
                        var chunk: [UInt8] = []
                        for e in entries {
                            if let since = options.since, let t = parseTime(e.time), t < since { continue }
                            var bytes = render(e, timestamps: options.timestamps)
                            if bytes.count > budget { bytes = Array(bytes.prefix(budget)) }
                            budget -= bytes.count
                            chunk += bytes
                            if budget == 0 { break }
                        }
                        if !chunk.isEmpty { continuation.yield(Data(chunk)) }
                        return budget > 0
                    }
                    var pending = [UInt8](try handle.readToEnd() ?? Data())
                    let first = entries(pending)
                    pending.removeFirst(first.rest)
                    let shown = options.tailLines.map { tail(first.entries, lines: $0) } ?? first.entries[...]
                    guard emit(shown), options.follow else { continuation.finish(); return }
                    var lastCheck = ContinuousClock.now
                    while !Task.isCancelled {
                        let more = [UInt8](handle.availableData)
                        if !more.isEmpty {
                            pending += more
                            let next = entries(pending)
                            pending.removeFirst(next.rest)
                            guard emit(next.entries) else { break }
                            continue
                        }
                        if ContinuousClock.now - lastCheck >= .seconds(1) {
                            lastCheck = .now
                            if !(await running()) {
                                // What the container wrote last, then the end.
                                pending += [UInt8](handle.availableData)
                                _ = emit(entries(pending).entries)
                                break
                            }
                        }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    continuation.finish()
                } catch is CancellationError {
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
