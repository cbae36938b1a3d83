import ArgumentParser
import CNI
import Foundation
import NetnsKit
import Netlink

/// ADD and DEL latency of our bridge + host-local against the reference bridge +
/// host-local from /usr/lib/cni, alternating one against the other in the same run,
/// with and without ipMasq. Each plugin runs in a throw-away "node" namespace, as a
/// runtime on that node would run it, for a container namespace made beforehand.
struct CNIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cni",
        abstract: "Measure ADD/DEL latency of the switchyard bridge + host-local against the reference plugins.")

    @Option(help: "ADD/DEL pairs per plugin set and configuration.") var iterations = 40
    @Option(help: "The reference plugins' directory.") var reference = "/usr/lib/cni"
    @Option(help: "Our plugin binary (default: switchyard-cni next to this executable).") var plugin: String?
    @Option(help: "Write the markdown results here too.") var out: String?

    struct Side {
        var name: String
        var bridge: String
        var ipam: String
        var exe: String
        var adds: [Double] = []
        var dels: [Double] = []
    }

    func run() async throws {
        guard isRoot else { throw ValidationError("run as root: the benchmark uses network namespaces") }
        guard FileManager.default.isExecutableFile(atPath: "\(reference)/bridge") else {
            throw ValidationError("the reference plugins are needed in \(reference) (containernetworking-plugins)")
        }
        let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let binary = plugin ?? here.appendingPathComponent("switchyard-cni").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("\(binary) not found: swift build -c release --product switchyard-cni")
        }
        let id = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sycni-bench-\(id)").path
        let bin = "\(work)/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        for n in CNIInstaller.pluginNames { try FileManager.default.createSymbolicLink(atPath: "\(bin)/\(n)", withDestinationPath: binary) }
        let node = "sybench\(id)n"
        try Sh.must(["ip", "netns", "add", node])
        var containers: [String] = []
        defer {
            for c in containers { _ = try? Sh.run(["ip", "netns", "del", c]) }
            _ = try? Sh.run(["ip", "netns", "del", node])
        }
        try Sh.must(["ip", "-n", node, "link", "set", "lo", "up"])
        let nodeNS = Namespace.named(node)

        var rows: [String] = []
        for masq in [false, true] {
            var sides = [Side(name: "reference", bridge: "bridge", ipam: "host-local", exe: "\(reference)/bridge"),
                         Side(name: "switchyard", bridge: "switchyard-bridge", ipam: "switchyard-host-local", exe: "\(bin)/switchyard-bridge")]
            // One warm-up pair per side (not counted) creates each side's bridge.
            for round in 0...iterations {
                for (k, side) in sides.enumerated() {
                    let container = "sybench\(id)c\(containers.count)"
                    try Sh.must(["ip", "netns", "add", container])
                    containers.append(container)
                    let conf = """
                        {"cniVersion":"1.0.0","name":"bench-\(k)","type":"\(side.bridge)","bridge":"cbrb\(k)","isGateway":true,"ipMasq":\(masq),
                         "ipam":{"type":"\(side.ipam)","subnet":"10.\(120 + k).0.0/16","dataDir":"\(work)/ipam-\(k)"}}
                        """
                    var env = ["CNI_CONTAINERID": "c\(round)", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/\(container)",
                               "CNI_PATH": "\(bin):\(reference)", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
                    env["CNI_COMMAND"] = "ADD"
                    let add = try time(in: nodeNS, side.exe, env: env, input: conf)
                    env["CNI_COMMAND"] = "DEL"
                    let del = try time(in: nodeNS, side.exe, env: env, input: conf)
                    if round > 0 {
                        sides[k].adds.append(add)
                        sides[k].dels.append(del)
                    }
                    _ = try? Sh.run(["ip", "netns", "del", container])
                    containers.removeLast()
                }
                if round % 10 == 0 { log("ipMasq \(masq): \(round)/\(iterations)") }
            }
            let r = sides[0], o = sides[1]
            let ra = median(r.adds), oa = median(o.adds), rd = median(r.dels), od = median(o.dels)
            rows.append("| \(masq ? "yes" : "no") | ADD | \(ms(ra)) | \(ms(oa)) | \(String(format: "%.2f", oa / ra)) |")
            rows.append("| \(masq ? "yes" : "no") | DEL | \(ms(rd)) | \(ms(od)) | \(String(format: "%.2f", od / rd)) |")
        }
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        let text = """
            ## CNI ADD/DEL latency: switchyard bridge + host-local against the reference plugins

            Median of \(iterations) ADD/DEL pairs each, alternating reference and switchyard in the same run
            (reference: \(reference), v1.1.1 on Debian 12; kernel \(kernel); \(ProcessInfo.processInfo.activeProcessorCount) CPUs).
            Each plugin runs in a node namespace for a fresh container namespace; the IPAM plugin is each side's own host-local.

            | ipMasq | command | reference | switchyard | switchyard / reference |
            |---|---|---|---|---|
            \(rows.joined(separator: "\n"))

            Reproduce: `scripts/bench.sh cni` (or `.build/release/switchyard-bench cni --iterations \(iterations)`).

            """
        print(text)
        if let out { try text.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    /// Runs one plugin invocation from a thread inside `ns` (the child inherits the namespace); seconds.
    func time(in ns: Namespace, _ exe: String, env: [String: String], input: String) throws -> Double {
        try ns.run {
            let start = ContinuousClock.now
            let (status, out) = try Exec.run(exe, [], env: env, input: Data(input.utf8))
            let d = ContinuousClock.now - start
            guard status == 0 else {
                throw ValidationError("\(exe) \(env["CNI_COMMAND"] ?? "") failed: \(String(decoding: out, as: UTF8.self))")
            }
            return d.seconds
        }
    }

    func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.isEmpty ? 0 : s[s.count / 2]
    }

    func ms(_ s: Double) -> String { String(format: "%.1f ms", s * 1000) }

}
