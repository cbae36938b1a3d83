import ArgumentParser
import KubeAPI
import Logging
import ProxyCore
import ProxyIPTables
import ProxyIPVS
import ProxyNFTables
import ProxyUserspace

struct Render: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the ruleset a proxy mode would program for a set of manifests.",
        discussion: """
            Reads Services, EndpointSlices, Nodes and ServiceCIDRs from YAML or JSON \
            (files, directories, or - for stdin); other kinds are skipped and invalid \
            objects are reported on stderr with their document and field. Services \
            without a ClusterIP or NodePort get one as the API server would allocate it.
            """)

    @OptionGroup var flags: ProxyFlags

    @Option(name: [.customShort("f"), .customLong("filename")], help: "Manifest file, directory, or - for stdin (repeatable).")
    var files: [String] = []

    @Option(name: .customLong("ipvs-format"), help: "ipvs mode only: 'list' (virtual servers as ipvsadm -Ln shows them, then the ipsets and iptables rules; the default), 'save' (as ipvsadm-save -n writes them), 'ipset' (as ipset restore takes them) or 'iptables' (as iptables-restore takes them).")
    var ipvsFormat: String = "list"

    func run() async throws {
        bootstrapLogging(flags.logLevel)
        let logger = Logger(label: "switchyard.render")
        guard !files.isEmpty else { throw ValidationError("-f FILE|DIR|- is required") }
        let config = try flags.resolve()
        var set = try loadManifests(files, logger: logger)
        var tracker = ChangeTracker(node: NodeInfo(name: config.hostname), serviceCIDRs: config.serviceCIDRs)
        ManifestFeed(taking: &set, config: config).apply(to: &tracker)
        let (snap, _) = tracker.snapshot()
        let renderer: any ProxyRenderer
        switch config.mode {
        case "nftables":
            renderer = NFTablesProxier(fake: FakeNFTables(), options: try flags.nftablesOptions(config, live: false))
        case "userspace":
            renderer = UserspaceRenderer(options: try flags.userspaceOptions(config, live: false))
        case "ipvs":
            guard let format = IPVSRenderer.Renderer.Format(rawValue: ipvsFormat) else {
                throw ValidationError("--ipvs-format: one of list, save, ipset, iptables")
            }
            renderer = IPVSRenderer.Renderer(options: try flags.ipvsOptions(config), format: format)
        default:
            renderer = IPTablesProxier(ipt: FakeIPTables(), options: makeIPTablesOptions(config, live: false))
        }
        print(renderer.render(snap), terminator: "")
        if !set.issues.isEmpty {
            logger.warning("\(set.issues.count) invalid object(s) skipped")
        }
    }
}
