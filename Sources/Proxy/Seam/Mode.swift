#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import KubeAPI
import Logging
import Prometheus

/// One proxy mode, registered once: its name, how to build its backend and its renderer from the
/// shared configuration, how its render is loaded, and how to find and remove what it leaves in
/// the kernel. The command line, `render`, `--cleanup`, netlab and the benchmarks go through the
/// registry (`ProxyModes.all`) and never pick a mode by a switch of their own; a new mode is a
/// folder that defines its `ProxyMode` and one line in the registry.
public struct ProxyMode: Sendable {
    /// As `--proxy-mode` spells it.
    public let name: String
    /// What the mode programs, in a few words (for help and docs).
    public let summary: String
    /// The formats `render` writes for it (`--ipvs-format`), the default first.
    public let renderFormats: [String]
    /// Modes' leftovers are removed in this order, lowest first (the IPVS mode's rules jump to
    /// chains whose names the iptables mode shares, so they go first).
    public let removalOrder: Int
    /// The file extension of its render (`rules`, `nft`, `txt`).
    public let renderExtension: String
    /// The named configurations of this mode that netlab runs and compares: the mode itself, and
    /// any others worth comparing (the nftables mode's `maps` layout).
    public let variants: [Variant]

    /// The families its rules are written for so far (`ProxyConfig.ipFamily`); IPv4 first.
    public let families: [IPFamily]

    /// A configuration of a mode, by name, with the `switchyard proxy` arguments that select it.
    public struct Variant: Sendable, Hashable {
        public let name: String
        public let arguments: [String]
        public init(name: String, arguments: [String]) {
            self.name = name
            self.arguments = arguments
        }
    }

    let makeBackend: @Sendable (ProxyConfig, ModeEnvironment) throws -> any ProxyBackend
    let makeRenderer: @Sendable (ProxyConfig, String) throws -> any ProxyRenderer
    let header: @Sendable (String, String) -> RenderHeader
    let leftovers: @Sendable (LeftoverScan) async throws -> String?
    let explainer: (@Sendable (_ ruleset: String, _ query: ExplainQuery) throws -> PacketPath)?
    let live: (@Sendable (IPFamily) throws -> String)?

    public init(name: String, summary: String, renderFormats: [String] = ["default"], renderExtension: String = "rules",
                removalOrder: Int = 1, moreVariants: [Variant] = [], families: [IPFamily] = [.ipv4],
                backend: @escaping @Sendable (ProxyConfig, ModeEnvironment) throws -> any ProxyBackend,
                renderer: @escaping @Sendable (_ config: ProxyConfig, _ format: String) throws -> any ProxyRenderer,
                header: @escaping @Sendable (_ format: String, _ command: String) -> RenderHeader,
                removeLeftovers: @escaping @Sendable (LeftoverScan) async throws -> String?,
                explain: (@Sendable (_ ruleset: String, _ query: ExplainQuery) throws -> PacketPath)? = nil,
                liveRuleset: (@Sendable (_ family: IPFamily) throws -> String)? = nil) {
        self.name = name
        self.summary = summary
        self.renderFormats = renderFormats
        self.families = families
        self.removalOrder = removalOrder
        self.renderExtension = renderExtension
        variants = [Variant(name: name, arguments: ["--proxy-mode", name])] + moreVariants
        makeBackend = backend
        makeRenderer = renderer
        self.header = header
        leftovers = removeLeftovers
        explainer = explain
        live = liveRuleset
    }

    /// Whether `switchyard explain` can walk a packet through this mode's rules.
    public var explains: Bool { explainer != nil }

    /// The ways a packet can go through `ruleset` (as `render` writes it, or as the kernel's own
    /// tools print it: `liveRuleset()`).
    public func explain(_ ruleset: String, _ query: ExplainQuery) throws -> PacketPath {
        guard let explainer else { throw ProxyConfigError("explain does not walk the \(name) mode's rules yet") }
        return try explainer(ruleset, query)
    }

    /// What the kernel holds of this mode now, in the form `explain` reads, for `family`.
    public func liveRuleset(family: IPFamily = .ipv4) throws -> String {
        guard let live else { throw ProxyConfigError("explain --live does not read the \(name) mode's rules yet") }
        guard families.contains(family) else { throw ProxyConfigError("the \(name) mode writes IPv4 rules only so far") }
        return try live(family)
    }

    /// The backend of a running proxy, on the kernel's real interfaces.
    /// Throws `ProxyConfigError` for settings the mode cannot work with.
    public func backend(_ config: ProxyConfig, _ env: ModeEnvironment) throws -> any ProxyBackend {
        try makeBackend(config, env)
    }

    /// What `render` prints the ruleset with, in `format` (one of `renderFormats`).
    public func renderer(_ config: ProxyConfig, format: String? = nil) throws -> any ProxyRenderer {
        let f = format ?? renderFormats[0]
        guard renderFormats.contains(f) else {
            throw ProxyConfigError("the \(name) mode renders as \(renderFormats.joined(separator: ", ")), not \(f)")
        }
        return try makeRenderer(config, f)
    }

    /// The comment lines that open a render and how to load it; `command` is the command that made it.
    public func renderHeader(format: String? = nil, command: String) -> RenderHeader {
        header(format ?? renderFormats[0], command)
    }

    /// Finds what this mode left in the kernel and removes it; says what was removed, or nil
    /// when nothing of it was there.
    public func removeLeftovers(_ scan: LeftoverScan) async throws -> String? {
        try await leftovers(scan)
    }
}

/// What opens a render: comment lines in the loading tool's syntax (and any statements that make
/// loading it twice harmless), or, for a format that takes no comments, a note for stderr.
public struct RenderHeader: Sendable {
    public var text: String
    public var note: String?
    public init(text: String, note: String? = nil) {
        self.text = text
        self.note = note
    }

    /// `# line` for each line.
    public static func comments(_ lines: [String]) -> String { lines.map { "# \($0)\n" }.joined() }
}

/// What a running proxy gives its backend: its log, the conntrack cleaner, the /metrics registry
/// (and custom text collectors for it), and the host's addresses as they were at start.
public struct ModeEnvironment: Sendable {
    public var logger: Logger
    public var conntrack: (any ConntrackCleaner)?
    public var registry: PrometheusCollectorRegistry
    /// Adds text to every /metrics scrape (upstream's custom collectors: nfacct counters).
    public var addCollector: @Sendable (@escaping @Sendable () -> String) -> Void
    /// The host's addresses (`getifaddrs`), for `--nodeport-addresses` and the userspace mode's host portals.
    public var localAddresses: [IPAddress]

    public init(logger: Logger, conntrack: (any ConntrackCleaner)?, registry: PrometheusCollectorRegistry,
                addCollector: @escaping @Sendable (@escaping @Sendable () -> String) -> Void, localAddresses: [IPAddress]) {
        self.logger = logger
        self.conntrack = conntrack
        self.registry = registry
        self.addCollector = addCollector
        self.localAddresses = localAddresses
    }
}

/// What a removal of leftovers knows: the mode now running (nil for `--cleanup`, which removes
/// every mode's state unconditionally) and one `iptables-save` of filter, nat and mangle taken
/// before any mode's removal (nil when iptables could not be read).
public struct LeftoverScan: Sendable {
    public var running: String?
    public var iptablesSave: String?
    public init(running: String?, iptablesSave: String?) {
        self.running = running
        self.iptablesSave = iptablesSave
    }
}

extension ProxyMode {
    /// Whether this kernel has IPv6 (`/proc/net/if_inet6`): where a proxy runs an IPv6 proxier
    /// beside the IPv4 one, and where the IPv6 rules a proxy may have left are looked for.
    public static var kernelHasIPv6: Bool { access("/proc/net/if_inet6", F_OK) == 0 }
}
