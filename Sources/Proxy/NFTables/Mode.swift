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
        backend: { config, env in
            NFTablesProxier(nft: try SystemNFTables(), options: try NFTablesOptions.resolve(config, local: env.localAddresses),
                            conntrack: env.conntrack, logger: env.logger)
        },
        renderer: { config, _ in
            NFTablesProxier(fake: FakeNFTables(), options: try NFTablesOptions.resolve(config, local: nil))
        },
        header: { _, command in
            // The two statements after the comments make the load idempotent: the table is
            // created if missing and deleted, then written whole, in one transaction.
            RenderHeader(text: RenderHeader.comments([
                "\(command): the table ip kube-proxy as a full sync writes it, for nft -f.",
                "Load it with:  nft -f FILE",
                "It replaces the table whole in one transaction (the next two lines create it if",
                "missing and delete it), so loading it again is harmless.",
            ]) + "add table ip kube-proxy\ndelete table ip kube-proxy\n")
        },
        removeLeftovers: { _ in
            let p = NFTablesProxier(nft: try SystemNFTables(), options: NFTablesOptions())
            return try p.removeLeftovers() ? "the nftables table ip kube-proxy" : nil
        },
        explain: { ruleset, query in try NFTablesProxier.explain(ruleset, query) },
        liveRuleset: { _ in try NFTablesProxier.listTable() })
}

extension NFTablesProxier {
    /// A packet through the nftables mode's table (`switchyard explain`), from a render or a
    /// full sync's script, or from the table as `nft list` prints it.
    static func explain(_ ruleset: String, _ q: ExplainQuery) throws -> PacketPath {
        let walked: [NFTWalk.Outcome]
        do {
            let listed = !ruleset.contains("add rule ") && ruleset.contains("table ip ")
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

    /// The kernel's table ip kube-proxy, as `nft list table ip kube-proxy` prints it.
    static func listTable() throws -> String {
        guard let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ProxyConfigError("--live needs the nft command (Debian's nftables package)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: nft)
        p.arguments = ["list", "table", "ip", Names.table]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let text = out.fileHandleForReading.readDataToEndOfFile()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ProxyConfigError("nft list table ip \(Names.table): \(String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
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
        if ips == nil && !config.nodeIPs.isEmpty { ips = config.nodeIPs.filter { $0.family == .ipv4 } }
        var o = NFTablesOptions(config, nodePortIPs: ips)
        o.layout = layout
        return o
    }
}
