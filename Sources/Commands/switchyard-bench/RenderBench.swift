import ArgumentParser
import Foundation
import KubeAPI
import NetnsKit
import HostOS

/// `render` as the user runs it: the `switchyard` process, from a manifest file to the ruleset
/// on stdout, JSON and YAML, in the iptables and nftables modes; against `iptables-restore` of
/// the iptables output in a fresh namespace, measured in the same run.
struct RenderBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Measure `switchyard render` as a command (file to ruleset) against iptables-restore of its output.")

    @Option(help: "Numbers of services (comma-separated).") var services = "1000,10000"
    @Option(help: "Endpoints per service.") var endpoints = 10
    @Option(help: "Runs of each render (the median is reported).") var repeats = 3
    @Option(help: "The switchyard binary.") var switchyard = ".build/release/switchyard"
    @Option(help: "The iptables-restore to measure against: system, legacy or nft.") var iptablesBackend = "legacy"
    @Option(help: "Write the markdown results here too.") var out: String?
    @Option(help: "Keep the generated manifests in this directory (default: a temporary one, removed after).") var inputs: String?

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the baseline loads rules in a network namespace") }
        guard FileManager.default.isExecutableFile(atPath: switchyard) else { throw ValidationError("--switchyard \(switchyard): not an executable") }
        let sizes = services.split(separator: ",").compactMap { Int($0) }
        guard !sizes.isEmpty else { throw ValidationError("--services: numbers, comma-separated") }
        let shims = try Bench.selectIPTables(iptablesBackend)
        defer { if let shims { try? FileManager.default.removeItem(atPath: shims) } }
        let dir = inputs.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("sy-render-bench-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { if inputs == nil { try? FileManager.default.removeItem(at: dir) } }

        var report = "| services × endpoints | input | iptables render | nftables render | nftables ÷ iptables | iptables-restore (\(iptablesBackend)) of the iptables output | iptables render ÷ restore |\n"
        report += "|---|---|---|---|---|---|---|\n"
        for n in sizes {
            let (svcs, slices) = Bench.objects(services: n, endpoints: endpoints)
            let json = dir.appendingPathComponent("all-\(n).json").path
            let yaml = dir.appendingPathComponent("all-\(n).yaml").path
            try Self.writeJSON(svcs, slices, to: json)
            try Self.writeYAML(svcs, slices, to: yaml)
            let rules = dir.appendingPathComponent("out-\(n).rules").path
            var restore = 0.0
            for (format, file) in [("JSON", json), ("YAML", yaml)] {
                let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
                let ipt = try median((0..<repeats).map { _ in try time(render: file, mode: "iptables", to: rules) })
                let nft = try median((0..<repeats).map { _ in try time(render: file, mode: "nftables", to: nil) })
                if format == "JSON" { restore = try Self.restore(rules) }
                log("\(n) services, \(format) (\(size / 1_000_000) MB): iptables render \(fmt(ipt)), nftables \(fmt(nft)); restore \(fmt(restore))")
                report += "| \(n) × \(endpoints) | \(format), \(String(format: "%.1f", Double(size) / 1e6)) MB | \(fmt(ipt)) | \(fmt(nft)) | "
                    + "\(String(format: "%.2f×", nft / ipt)) | \(fmt(restore)) | \(pct(ipt / restore)) |\n"
            }
        }
        print(report)
        if let out { try report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// One `switchyard render` run, wall clock, its output to `path` (nil: discarded).
    func time(render file: String, mode: String, to path: String?) throws -> Double {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: switchyard)
        p.arguments = ["render", "--proxy-mode", mode, "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16", "-f", file]
        if let path {
            // A file of its own: createFile replaces what is at the path (it once replaced /dev/null).
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        } else {
            p.standardOutput = FileHandle.nullDevice
        }
        p.standardError = FileHandle.nullDevice
        let start = Date()
        try p.run()
        p.waitUntilExit()
        let t = Date().timeIntervalSince(start)
        guard p.terminationStatus == 0 else { throw ValidationError("switchyard render \(mode) -f \(file) exited \(p.terminationStatus)") }
        return t
    }

    /// `iptables-restore --noflush` of the rendered rules into a fresh namespace.
    static func restore(_ rules: String) throws -> Double { try restore(rules) { _ in () }.seconds }

    /// The same, then `body` in that namespace (its name given) before it is deleted.
    static func restore<T>(_ rules: String, then body: (String) throws -> T) throws -> (seconds: Double, result: T) {
        let ns = "sybenchr\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let start = Date()
        try CommandRunner(netns: ns).run(["iptables-restore", "-w", "5", "--noflush"], input: [.file(rules)], timeout: .seconds(3600))
        let seconds = Date().timeIntervalSince(start)
        return (seconds, try body(ns))
    }

    /// The objects as one JSON `List`, as a manifest file of the whole cluster.
    static func writeJSON(_ svcs: [Service], _ slices: [EndpointSlice], to path: String) throws {
        struct List: Encodable { let apiVersion = "v1"; let kind = "List"; let items: [Item] }
        enum Item: Encodable {
            case s(Service), e(EndpointSlice)
            func encode(to e: any Encoder) throws {
                switch self { case .s(let x): try x.encode(to: e); case .e(let x): try x.encode(to: e) }
            }
        }
        try JSONEncoder().encode(List(items: svcs.map(Item.s) + slices.map(Item.e))).write(to: URL(fileURLWithPath: path))
    }

    /// The same objects as block-style YAML documents, as people write manifests.
    static func writeYAML(_ svcs: [Service], _ slices: [EndpointSlice], to path: String) throws {
        let encoder = JSONEncoder()
        var text = ""
        for data in try svcs.map({ try encoder.encode($0) }) + slices.map({ try encoder.encode($0) }) {
            text += "---\n"
            emit(try JSONValue.parse(data), indent: "", into: &text, inList: false)
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func emit(_ v: JSONValue, indent: String, into out: inout String, inList: Bool) {
        switch v {
        case .object(let o):
            var first = true
            for k in o.keys.sorted() {
                let prefix = (inList && first) ? "" : indent
                first = false
                switch o[k]! {
                case .object(let c) where !c.isEmpty:
                    out += "\(prefix)\(k):\n"
                    emit(.object(c), indent: indent + "  ", into: &out, inList: false)
                case .array(let a) where !a.isEmpty:
                    out += "\(prefix)\(k):\n"
                    emit(.array(a), indent: indent, into: &out, inList: false)
                default:
                    out += "\(prefix)\(k): \(scalar(o[k]!))\n"
                }
            }
        case .array(let a):
            for e in a {
                if case .object = e {
                    out += "\(indent)- "
                    emit(e, indent: indent + "  ", into: &out, inList: true)
                } else {
                    out += "\(indent)- \(scalar(e))\n"
                }
            }
        default:
            out += "\(indent)\(scalar(v))\n"
        }
    }

    /// A scalar as plain YAML; strings that YAML would read as something else are quoted.
    static func scalar(_ v: JSONValue) -> String {
        switch v {
        case .string(let s):
            let plain = !s.isEmpty && !s.contains(":") && !s.contains("#") && Int(s) == nil
                && !["true", "false", "yes", "no", "on", "off", "null", "~"].contains(s.lowercased())
            return plain ? s : v.text()
        case .object: return "{}"
        case .array: return "[]"
        default: return v.text()
        }
    }
}
