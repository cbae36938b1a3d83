import ProxySeam

/// Chain names exactly as kube-proxy's iptables mode spells them.
public enum Chains {
    public static let services = "KUBE-SERVICES"
    public static let externalServices = "KUBE-EXTERNAL-SERVICES"
    public static let nodePorts = "KUBE-NODEPORTS"
    public static let postrouting = "KUBE-POSTROUTING"
    public static let markMasq = "KUBE-MARK-MASQ"
    public static let forward = "KUBE-FORWARD"
    public static let proxyFirewall = "KUBE-PROXY-FIREWALL"
    public static let canary = "KUBE-PROXY-CANARY"
    public static let kubeletFirewall = "KUBE-FIREWALL"

    public static let servicePrefixes = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-"]

    public static func isServiceChain(_ s: Substring) -> Bool {
        servicePrefixes.contains { s.hasPrefix($0) }
    }
}

/// Precomputed names for one service port.
struct ServiceChainNames {
    let nameString: String
    let proto: String
    let svc: String
    let svl: String
    let fw: String
    let ext: String

    init(_ info: ServicePortInfo) {
        nameString = info.nameString
        proto = info.proto.lower
        let h = ChainHash.servicePort(nameString, proto: proto)
        svc = "KUBE-SVC-" + h
        svl = "KUBE-SVL-" + h
        fw = "KUBE-FW-" + h
        ext = "KUBE-EXT-" + h
    }

    func endpointChain(_ ep: EndpointInfo) -> String {
        "KUBE-SEP-" + ChainHash.endpoint(nameString, proto: proto, endpoint: ep.endpoint)
    }
}

/// A jump from a built-in chain to one of ours, installed once and kept.
struct JumpRule {
    let table: String
    let chain: String
    let target: String
    let comment: String
    let extra: String

    /// The rule as `iptables-save` prints it (and as we write it).
    var spec: String {
        var s = "-A \(chain)"
        if !extra.isEmpty { s += " \(extra)" }
        if !comment.isEmpty { s += " -m comment --comment \"\(comment)\"" }
        return s + " -j \(target)"
    }

    static let all: [JumpRule] = [
        JumpRule(table: "filter", chain: "INPUT", target: Chains.externalServices, comment: "kubernetes externally-visible service portals", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.externalServices, comment: "kubernetes externally-visible service portals", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "INPUT", target: Chains.nodePorts, comment: "kubernetes health check service ports", extra: ""),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.services, comment: "kubernetes service portals", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "OUTPUT", target: Chains.services, comment: "kubernetes service portals", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.forward, comment: "kubernetes forwarding rules", extra: ""),
        JumpRule(table: "filter", chain: "INPUT", target: Chains.proxyFirewall, comment: "kubernetes load balancer firewall", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "OUTPUT", target: Chains.proxyFirewall, comment: "kubernetes load balancer firewall", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.proxyFirewall, comment: "kubernetes load balancer firewall", extra: "-m conntrack --ctstate NEW"),
        JumpRule(table: "nat", chain: "OUTPUT", target: Chains.services, comment: "kubernetes service portals", extra: ""),
        JumpRule(table: "nat", chain: "PREROUTING", target: Chains.services, comment: "kubernetes service portals", extra: ""),
        JumpRule(table: "nat", chain: "POSTROUTING", target: Chains.postrouting, comment: "kubernetes postrouting rules", extra: ""),
    ]

    /// kubelet's own firewall chain, which kube-proxy also creates but never deletes.
    static let kubelet: [JumpRule] = [
        JumpRule(table: "filter", chain: "INPUT", target: Chains.kubeletFirewall, comment: "", extra: ""),
        JumpRule(table: "filter", chain: "OUTPUT", target: Chains.kubeletFirewall, comment: "", extra: ""),
    ]
}
