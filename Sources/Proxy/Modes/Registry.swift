import ProxyIPTables
import ProxyIPVS
import ProxyNFTables
import ProxySeam
import ProxyUserspace

/// Every proxy mode, in the order help and docs list them, the default first. A new mode is a
/// folder under Sources/Proxy that defines its `ProxyMode`, and one line here.
public enum ProxyModes {
    public static let all: [ProxyMode] = [
        .iptables,
        .nftables,
        .ipvs,
        .userspace,
    ]

    /// The default `--proxy-mode`.
    public static var standard: ProxyMode { all[0] }

    public static var names: [String] { all.map(\.name) }

    public static func named(_ name: String) -> ProxyMode? { all.first { $0.name == name } }

    /// Every mode's variants (`nftables-maps` beside `nftables`), in order.
    public static var variants: [ProxyMode.Variant] { all.flatMap(\.variants) }

    public static func variant(_ name: String) -> ProxyMode.Variant? { variants.first { $0.name == name } }

}
