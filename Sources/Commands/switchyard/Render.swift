import ArgumentParser
import Foundation
import KubeAPI
import Logging
import ProxyIPTables
import ProxyIPVS
import ProxyNFTables
import ProxyUserspace
import ProxySeam
import IPTablesKit

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

    @Flag(name: .customLong("strict"), help: "Exit with status 1 when any object was skipped as invalid, or no Service was found (for scripts).")
    var strict = false

    @Flag(name: .customLong("no-header"), help: "Leave out the comment lines at the top that say how to load the output.")
    var noHeader = false

    @Option(name: .customLong("ipvs-format"), help: "ipvs mode only: 'list' (virtual servers as ipvsadm -Ln shows them, then the ipsets and iptables rules; the default), 'save' (as ipvsadm-save -n writes them), 'ipset' (as ipset restore takes them) or 'iptables' (as iptables-restore takes them).")
    var ipvsFormat: String = "list"

    func run() async throws {
        bootstrapLogging(flags.logLevel)
        let logger = Logger(label: "switchyard.render")
        guard !files.isEmpty else { throw ValidationError("-f FILE|DIR|- is required") }
        for f in files where f != "-" && !FileManager.default.fileExists(atPath: f) {
            throw ValidationError("-f \(f): no such file or directory")
        }
        let config = try flags.resolve()
        var set = try loadManifests(files, logger: logger)
        let noServices = set.services.isEmpty
        if noServices {
            let inputs = files.joined(separator: ", ")
            let empty = files.allSatisfy { $0 != "-" && ((try? ManifestLoader.files(at: $0)) ?? []).isEmpty }
            logger.warning(empty ? "\(inputs): no manifest files (.yaml, .yml, .json) there; the output holds the base rules only"
                                 : "\(inputs): no Service found; the output holds the base rules only")
        }
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
        let (header, note) = Self.header(mode: config.mode, ipvsFormat: ipvsFormat, command: "switchyard render --proxy-mode \(config.mode)")
        if !noHeader {
            print(header, terminator: "")
            if let note { logger.notice("\(note)") }
        }
        print(renderer.render(snap), terminator: "")
        if !set.issues.isEmpty {
            logger.warning("\(set.issues.count) invalid object(s) skipped")
        }
        if strict && (!set.issues.isEmpty || noServices) {
            throw ExitCode.failure
        }
    }

    /// The comment lines that open a render: what it is and the exact command that loads it,
    /// in the syntax of the tool that reads it; and, for formats that take no comments, a note for
    /// stderr instead.
    static func header(mode: String, ipvsFormat: String, command: String) -> (String, String?) {
        func lines(_ l: [String]) -> String { l.map { "# \($0)\n" }.joined() }
        // How to load iptables-restore input, for the iptables mode's render and the IPVS mode's rules.
        let iptablesLoad = [
            "Load it with:  iptables-restore --noflush < FILE",
            "--noflush keeps the tables' other rules: without it, iptables-restore empties each table first.",
            "Loading it again rewrites the KUBE-* chains whole and leaves a second copy of each jump from",
            "a built-in chain, which changes nothing (`switchyard proxy --cleanup` removes every copy).",
        ]
        switch mode {
        case "nftables":
            // The two statements after the comments make the load idempotent: the table is
            // created if missing and deleted, then written whole, in one transaction.
            return (lines([
                "\(command): the table ip kube-proxy as a full sync writes it, for nft -f.",
                "Load it with:  nft -f FILE",
                "It replaces the table whole in one transaction (the next two lines create it if",
                "missing and delete it), so loading it again is harmless.",
            ]) + "add table ip kube-proxy\ndelete table ip kube-proxy\n", nil)
        case "userspace":
            return (lines([
                "\(command): not for loading. The portal rules send traffic to listeners that only",
                "a running `switchyard proxy --proxy-mode userspace` has; it writes them itself.",
            ]), nil)
        case "ipvs":
            switch ipvsFormat {
            case "ipset":
                return (lines([
                    "\(command) --ipvs-format ipset: the IPVS mode's ipsets, for ipset restore.",
                    "Load it with:  ipset restore -exist < FILE",
                    "-exist makes loading it again harmless (existing sets and entries are kept).",
                ]), nil)
            case "iptables":
                return (lines(["\(command) --ipvs-format iptables: the IPVS mode's iptables rules."] + iptablesLoad
                              + ["Load the ipsets first (--ipvs-format ipset): these rules match on them."]), nil)
            case "save":
                return ("", "load this with `ipvsadm-restore < FILE` (after `ipvsadm -C` to load it again: ipvsadm-restore refuses existing virtual servers)")
            default:
                return ("", "this is what `ipvsadm -Ln` lists, not loadable; --ipvs-format save, ipset and iptables write the loadable parts")
            }
        default:
            return (lines(["\(command): the iptables-restore input of a full sync."] + iptablesLoad), nil)
        }
    }
}
