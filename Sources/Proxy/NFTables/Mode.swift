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
        })
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
