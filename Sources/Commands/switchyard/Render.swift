import ArgumentParser
import Foundation
import KubeAPI
import Logging
import ProxyModes
import ProxySeam
import IngressNginx

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

    @Flag(name: .customLong("ingress"), help: "Print the nginx.conf `switchyard ingress-controller` would write for the Ingresses, IngressClasses, Services, EndpointSlices and Secrets in the manifests, instead of a ruleset.")
    var ingress = false

    @OptionGroup(title: "With --ingress") var ingressFlags: IngressFlags

    @Option(name: .customLong("ipvs-format"), help: "ipvs mode only: 'list' (virtual servers as ipvsadm -Ln shows them, then the ipsets and iptables rules; the default), 'save' (as ipvsadm-save -n writes them), 'ipset' (as ipset restore takes them) or 'iptables' (as iptables-restore takes them).")
    var ipvsFormat: String = "list"

    @Option(name: .customLong("ip-family"), help: "ipv4, ipv6 or dual: the families whose rulesets are printed, IPv4's first (default: dual when a Service has an IPv6 ClusterIP and the mode writes IPv6 rules, else ipv4).")
    var ipFamily: String?

    func run() async throws {
        bootstrapLogging(flags.logLevel, format: flags.loggingFormat)
        let logger = Logger(label: "switchyard.render")
        guard !files.isEmpty else { throw ValidationError("-f FILE|DIR|- is required") }
        for f in files where f != "-" && !FileManager.default.fileExists(atPath: f) {
            throw ValidationError("-f \(f): no such file or directory")
        }
        if ingress { return try renderIngress(logger) }
        let config = try flags.resolve()
        var set = try loadManifests(files, logger: logger)
        let noServices = set.services.isEmpty
        if noServices {
            let inputs = files.joined(separator: ", ")
            let empty = files.allSatisfy { $0 != "-" && ((try? ManifestLoader.files(at: $0)) ?? []).isEmpty }
            logger.warning(empty ? "\(inputs): no manifest files (.yaml, .yml, .json) there; the output holds the base rules only"
                                 : "\(inputs): no Service found; the output holds the base rules only")
        }
        let mode = mode(config)
        let families = try families(mode, set)
        if ipFamily == nil && !mode.families.contains(.ipv6) && Self.hasIPv6(set) {
            logger.warning("the Services' IPv6 addresses are left out: the \(mode.name) mode writes IPv4 rules only so far")
        }
        let format = mode.renderFormats.count > 1 ? ipvsFormat : nil
        guard format.map(mode.renderFormats.contains) ?? true else {
            throw ValidationError("--ipvs-format: one of \(mode.renderFormats.joined(separator: ", "))")
        }
        // Every family's renderer before anything is printed: a refused setting prints nothing.
        let renderers = try families.map { family in
            var c = config
            c.ipFamily = family
            return try validated { try mode.renderer(c, format: format) }
        }
        let snaps = ManifestFeed.snapshots(taking: &set, config: config, families: families)
        let header = mode.renderHeader(format: format, command: "switchyard render --proxy-mode \(config.mode)")
        if !noHeader {
            print(header.text, terminator: "")
            if let note = header.note { logger.notice("\(note)") }
        }
        for (i, family) in families.enumerated() {
            let renderer = renderers[i], snap = snaps[i]
            if families.count > 1 || family == .ipv6 {
                let v6 = mode.name == "iptables" ? "the IPv6 family's rules, for the IPv6 tools (ip6tables-restore --noflush)" : "the IPv6 family's rules"
                print(RenderHeader.comments(["\(family == .ipv4 ? "IPv4" : "IPv6"): \(family == .ipv4 ? "the IPv4 family's rules" : v6)"]),
                      terminator: "")
            }
            print(renderer.render(snap), terminator: "")
        }
        if !set.issues.isEmpty {
            logger.warning("\(set.issues.count) invalid object(s) skipped")
        }
        if strict && (!set.issues.isEmpty || noServices) {
            throw ExitCode.failure
        }
    }
}

extension Render {
    /// The families to print: `--ip-family`, or dual when the mode writes IPv6 rules and a
    /// Service has an IPv6 ClusterIP.
    func families(_ mode: ProxyMode, _ set: ManifestSet) throws -> [IPFamily] {
        let wanted: [IPFamily]
        switch ipFamily {
        case nil:
            return Self.hasIPv6(set) && mode.families.contains(.ipv6) ? [.ipv4, .ipv6] : [.ipv4]
        case "ipv4": wanted = [.ipv4]
        case "ipv6": wanted = [.ipv6]
        case "dual": wanted = [.ipv4, .ipv6]
        default: throw ValidationError("--ip-family: ipv4, ipv6 or dual, not \(ipFamily!)")
        }
        guard wanted.allSatisfy(mode.families.contains) else {
            throw ValidationError("--ip-family \(ipFamily!): the \(mode.name) mode writes IPv4 rules only so far")
        }
        return wanted
    }

    /// Whether a Service has an IPv6 ClusterIP.
    static func hasIPv6(_ set: ManifestSet) -> Bool {
        set.services.contains { s in ((s.spec.clusterIPs ?? []) + [s.spec.clusterIP ?? ""]).contains { $0.utf8.contains(UInt8(ascii: ":")) } }
    }

    /// `--ingress`: nginx.conf on stdout; what could not be served on stderr; the certificates
    /// it names are not printed (they are the Secrets' own).
    func renderIngress(_ logger: Logger) throws {
        let objects: [JSONValue]
        do { objects = try ManifestLoader.objects(paths: files) } catch { throw ValidationError("\(error)") }
        let sources = IngressSources(objects: objects)
        if sources.ingresses.isEmpty { logger.warning("\(files.joined(separator: ", ")): no Ingress found") }
        let rendered = NginxRenderer.render(sources, options: try ingressFlags.options())
        for w in rendered.warnings { logger.warning("\(w)") }
        if !noHeader {
            print("# switchyard render --ingress: \(rendered.ingresses.count) of \(sources.ingresses.count) Ingress(es) are this controller's; check with: nginx -t -c FILE")
        }
        print(rendered.config, terminator: "")
        if strict && (!rendered.warnings.isEmpty || rendered.ingresses.isEmpty) { throw ExitCode.failure }
    }
}
