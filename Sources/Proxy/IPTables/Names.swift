import IPTablesKit
import ProxySeam

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

/// The iptables mode's jumps from the built-in chains to its chains, installed once and kept.
enum Jumps {
    static let all: [JumpRule] = [
        JumpRule(table: "filter", chain: "INPUT", target: Chains.externalServices, comment: "kubernetes externally-visible service portals", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.externalServices, comment: "kubernetes externally-visible service portals", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "INPUT", target: Chains.nodePorts, comment: "kubernetes health check service ports"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.services, comment: "kubernetes service portals", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "OUTPUT", target: Chains.services, comment: "kubernetes service portals", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.forward, comment: "kubernetes forwarding rules"),
        JumpRule(table: "filter", chain: "INPUT", target: Chains.proxyFirewall, comment: "kubernetes load balancer firewall", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "OUTPUT", target: Chains.proxyFirewall, comment: "kubernetes load balancer firewall", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "filter", chain: "FORWARD", target: Chains.proxyFirewall, comment: "kubernetes load balancer firewall", match: "-m conntrack --ctstate NEW"),
        JumpRule(table: "nat", chain: "OUTPUT", target: Chains.services, comment: "kubernetes service portals"),
        JumpRule(table: "nat", chain: "PREROUTING", target: Chains.services, comment: "kubernetes service portals"),
        JumpRule(table: "nat", chain: "POSTROUTING", target: Chains.postrouting, comment: "kubernetes postrouting rules"),
    ]

    /// kubelet's own firewall chain, which kube-proxy also creates but never deletes.
    static let kubelet: [JumpRule] = [
        JumpRule(table: "filter", chain: "INPUT", target: Chains.kubeletFirewall, comment: ""),
        JumpRule(table: "filter", chain: "OUTPUT", target: Chains.kubeletFirewall, comment: ""),
    ]
}
