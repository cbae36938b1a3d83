import Foundation
import KubeAPI
import ProxySeam

extension ProxyMode {
    /// kube-proxy's nftables mode.
    public static let nftables = ProxyMode(
        name: "nftables",
        summary: "the nftables table ip kube-proxy (sets and verdict maps), written as libnftnl batches over netlink",
        renderExtension: "nft",
        moreVariants: [Variant(name: "nftables-maps", arguments: ["--proxy-mode", "nftables", "--nftables-layout", "maps"])],
        families: [.ipv4, .ipv6],
        backend: { config, env in
            // The table ip6 kube-proxy for the IPv6 proxier of a dual-stack node.
            NFTablesProxier(nft: try SystemNFTables(family: config.ipFamily),
                            options: try NFTablesOptions.resolve(config, local: env.localAddresses),
                            conntrack: env.conntrack, logger: env.logger)
        },
        renderer: { config, _ in
            NFTablesRender(proxier: NFTablesProxier(fake: FakeNFTables(), options: try NFTablesOptions.resolve(config, local: nil)),
                           family: config.ipFamily)
        },
        header: { _, command in
            // Each family's part opens with two statements that make its load idempotent: the
            // table is created if missing and deleted, then written whole, in one transaction.
            RenderHeader(text: RenderHeader.comments([
                "\(command): the table ip kube-proxy (and, for IPv6, ip6 kube-proxy) as a full sync writes it, for nft -f.",
                "Load it with:  nft -f FILE",
                "It replaces the table whole in one transaction (its first two lines create it if",
                "missing and delete it), so loading it again is harmless.",
            ]))
        },
        removeLeftovers: { _ in
            var removed: [String] = []
            for family in [IPFamily.ipv4, .ipv6] where family == .ipv4 || ProxyMode.kernelHasIPv6 {
                var o = NFTablesOptions()
                o.common.family = family
                let p = NFTablesProxier(nft: try SystemNFTables(family: family), options: o)
                if try p.removeLeftovers() { removed.append("\(family.nftPrefix) kube-proxy") }
            }
            return removed.isEmpty ? nil : "the nftables table " + removed.joined(separator: " and ")
        },
        explain: { ruleset, query in try NFTablesProxier.explain(ruleset, query) },
        liveRuleset: { family in try NFTablesProxier.listTable(family) })
}

/// What `render` prints for one family: the full sync's script, opened by two statements that
/// make loading it idempotent (the table is created if missing and deleted, then written whole,
/// in one transaction).
struct NFTablesRender: ProxyRenderer {
    let proxier: NFTablesProxier
    let family: IPFamily

    func render(_ snapshot: ProxySnapshot) -> String {
        let t = "\(family.nftPrefix) \(Names.table)"
        return proxier.render(snapshot, preamble: "add table \(t)\ndelete table \(t)\n")
    }
}

extension NFTablesProxier {
    /// A packet through the nftables mode's table (`switchyard explain`), from a render or a
    /// full sync's script, or from the table as `nft list` prints it.
    static func explain(_ ruleset: String, _ q: ExplainQuery) throws -> PacketPath {
        let walked: [NFTWalk.Outcome]
        do {
            let listed = !ruleset.contains("add rule ") && (ruleset.contains("table ip ") || ruleset.contains("table ip6 "))
            let walk = listed ? try NFTWalk(listing: ruleset) : try NFTWalk(script: ruleset)
            walked = try walk.walk(source: q.source, sourcePort: q.sourcePort, destination: q.destination, port: q.port, proto: q.proto,
                                   fromNode: q.fromNode, local: q.localAddresses)
        } catch { throw ProxyConfigError("\(error)") }
        let outcomes = walked.map { o in
            PacketPath.Outcome(probability: o.packet.probability, hops: PacketPath.Hop.list(o.packet.hops), verdict: o.verdict,
                               endpoint: o.endpoint, masqueraded: o.packet.masqueraded)
        }
        return PacketPath(query: q, mode: "nftables", outcomes: outcomes)
    }

    /// The kernel's table ip (or ip6) kube-proxy, as `nft list table ip kube-proxy` prints it.
    static func listTable(_ family: IPFamily = .ipv4) throws -> String {
        guard let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ProxyConfigError("--live needs the nft command (Debian's nftables package)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: nft)
        p.arguments = ["list", "table", family.nftPrefix, Names.table]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let text = out.fileHandleForReading.readDataToEndOfFile()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ProxyConfigError("nft list table \(family.nftPrefix) \(Names.table): \(String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return String(decoding: text, as: UTF8.self)
    }
}

extension NFTablesOptions {
    /// The options for `config`; `local`: the host's addresses for a running proxy, nil for
    /// `render`. NodePorts are taken on the node's primary IPs by default, as upstream does
    /// (`--nodeport-addresses primary`); with no node IP known, on every local address.
    static func resolve(_ config: ProxyConfig, local: [IPAddress]?) throws -> NFTablesOptions {
        guard let layout = NFTablesLayout(rawValue: config.nftables.layout) else {
            throw ProxyConfigError("--nftables-layout must be one of: \(NFTablesLayout.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var ips = config.nodePortIPs(local: local)
        if ips == nil && !config.nodeIPs.isEmpty { ips = config.nodeIPs.filter { $0.family == config.ipFamily } }
        var o = NFTablesOptions(config, nodePortIPs: ips)
        o.layout = layout
        return o
    }
}
