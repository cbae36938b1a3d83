import ArgumentParser
import Foundation
import KubeAPI
import Logging
import ProxyModes
import ProxyRuntime
import ProxySeam

struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Walk a packet through what a proxy mode programs: each rule it passes, the NAT, the endpoints it can reach and how likely each is, and the verdict.",
        discussion: """
            The rules come from manifests (-f, rendered as `render` would), a saved ruleset \
            (--rules: iptables-save output), or the kernel (--live). A packet arrives at the \
            node (from a pod or from outside) unless --from-node says the node sends it, or \
            its source is one of the node's addresses. Walks the iptables mode, and the \
            userspace mode from its render (whose comments name the listeners' endpoints).
            """)

    @OptionGroup var flags: ProxyFlags

    @Option(name: .customLong("src"), help: "The packet's source, IP[:PORT].")
    var source: String

    @Option(name: .customLong("dst"), help: "Where it goes, IP:PORT[/PROTO] (tcp by default).")
    var destination: String

    @Option(name: [.customShort("f"), .customLong("filename")], help: "Manifest file, directory, or - for stdin (repeatable).")
    var files: [String] = []

    @Option(name: .customLong("rules"), help: "A ruleset saved from the kernel (iptables-save) or written by render.")
    var rules: String?

    @Flag(name: .customLong("live"), help: "Read the rules the kernel holds now (in this network namespace).")
    var live = false

    @Option(name: .customLong("local-address"), help: "An address of the node (addrtype LOCAL; repeatable). --live reads them from the host; --node-ip counts too.")
    var localAddresses: [String] = []

    @Flag(name: .customLong("from-node"), help: "The node itself sends the packet (its OUTPUT path).")
    var fromNode = false

    @Option(name: [.customShort("o"), .customLong("output")], help: "text or json.")
    var output = "text"

    func run() async throws {
        bootstrapLogging(flags.logLevel, format: flags.loggingFormat)
        let logger = Logger(label: "switchyard.explain")
        guard [!files.isEmpty, rules != nil, live].filter({ $0 }).count == 1 else {
            throw ValidationError("give one of -f MANIFESTS, --rules FILE or --live")
        }
        guard ["text", "json"].contains(output) else { throw ValidationError("-o: text or json") }
        var config = try flags.resolve()
        let mode = mode(config)
        guard mode.explains else { throw ValidationError("explain does not walk the \(mode.name) mode's rules yet (it walks: \(ProxyModes.all.filter(\.explains).map(\.name).joined(separator: ", ")))") }
        let (src, srcPort) = try Self.endpoint(source, flag: "--src", portRequired: false)
        let (dst, dstPortOpt, proto) = try Self.target(destination)
        var locals = localAddresses + config.nodeIPs.map(\.description)
        for a in locals where IPAddress(a) == nil { throw ValidationError("--local-address \(a): not an IP address") }
        // The family of the packet picks the rules: a dual-stack node's IPv4 or IPv6 ones.
        let family = IPAddress(dst)!.family
        guard IPAddress(src)!.family == family else { throw ValidationError("--src \(source) and --dst \(destination) are of different families") }
        guard family == .ipv4 || mode.families.contains(.ipv6) else {
            throw ValidationError("explain: the \(mode.name) mode writes IPv4 rules only so far")
        }
        config.ipFamily = family

        let ruleset: String
        if live {
            ruleset = try validated { try mode.liveRuleset(family: family) }
            locals += LocalAddresses.all().map(\.description)
        } else if let rules {
            guard let text = try? String(contentsOfFile: rules, encoding: .utf8) else { throw ValidationError("--rules \(rules): cannot be read") }
            ruleset = Self.part(of: text, for: family)
        } else {
            for f in files where f != "-" && !FileManager.default.fileExists(atPath: f) {
                throw ValidationError("-f \(f): no such file or directory")
            }
            var set = try loadManifests(files, logger: logger)
            ruleset = try validated { try mode.renderer(config) }.render(ManifestFeed.snapshot(taking: &set, config: config))
        }
        let query = ExplainQuery(source: src, sourcePort: srcPort ?? 40000, destination: dst, port: dstPortOpt, proto: proto,
                                 fromNode: fromNode || locals.contains(src) || IPAddress(src)!.isLoopback, localAddresses: locals)
        let path = try validated { try mode.explain(ruleset, query) }
        print(output == "json" ? path.json.text() : path.text(), terminator: output == "json" ? "\n" : "")
    }

    /// The part of a `render` that holds `family`'s rules: a dual-stack render has an IPv4 part
    /// and, after its `# IPv6:` line, an IPv6 one; a render of one family is all of that family.
    static func part(of text: String, for family: IPFamily) -> String {
        guard let r = text.range(of: "\n# IPv6:") else { return text }
        // From the `# IPv6:` line itself (a comment to the walk), or up to it.
        return family == .ipv6 ? String(text[text.index(after: r.lowerBound)...]) : String(text[..<r.lowerBound]) + "\n"
    }

    /// `IP[:PORT]`, an IPv6 address as `[IP]:PORT` (or alone, without the brackets).
    static func endpoint(_ s: String, flag: String, portRequired: Bool) throws -> (String, Int?) {
        var parts = s.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
            let rest = s[s.index(after: close)...]
            parts = [String(s[s.index(after: s.startIndex)..<close])] + (rest.hasPrefix(":") ? [String(rest.dropFirst())] : [])
            guard rest.isEmpty || rest.hasPrefix(":") else { throw ValidationError("\(flag) \(s): [IPv6]:PORT") }
        } else if parts.count > 2 {
            parts = [s]
        }
        guard parts.count <= 2, IPAddress(parts[0]) != nil else {
            throw ValidationError("\(flag) \(s): an IPv4 address, or an IPv6 one in brackets, with :PORT if wanted")
        }
        guard parts.count == 2 else {
            if portRequired { throw ValidationError("\(flag) \(s): IP:PORT") }
            return (parts[0], nil)
        }
        guard let p = Int(parts[1]), (1...65535).contains(p) else { throw ValidationError("\(flag) \(s): the port must be 1 to 65535") }
        return (parts[0], p)
    }

    /// `IP:PORT[/PROTO]`.
    static func target(_ s: String) throws -> (String, Int, String) {
        let halves = s.split(separator: "/", maxSplits: 1).map(String.init)
        let proto = halves.count == 2 ? halves[1].lowercased() : "tcp"
        guard ["tcp", "udp", "sctp"].contains(proto) else { throw ValidationError("--dst \(s): the protocol is tcp, udp or sctp") }
        let (ip, port) = try endpoint(halves[0], flag: "--dst", portRequired: true)
        return (ip, port!, proto)
    }
}
