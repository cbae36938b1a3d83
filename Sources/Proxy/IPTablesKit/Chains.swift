/// Chain names exactly as kube-proxy spells them; the iptables and IPVS modes share most of them.
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

