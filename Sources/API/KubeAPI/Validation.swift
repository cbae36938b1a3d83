/// One problem with one field, in the shape of Kubernetes' `field.Error`.
public struct FieldError: Hashable, Sendable, CustomStringConvertible {
    public var field: String
    public var message: String
    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }
    public var description: String { "\(field): \(message)" }
}

/// Validation of the fields a service proxy turns into rules, with upstream's rules.
///
/// - Important: anything that passes here must be safe to put into an
///   `iptables-restore` script, an nftables transaction or an IPVS message.
public enum Validation {
    public static let protocols: Set<String> = ["TCP", "UDP", "SCTP"]

    /// RFC 1123 label: lower case alphanumerics and '-', at most 63 characters.
    public static func isDNS1123Label(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 63 else { return false }
        let u = Array(s.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard alnum(u.first!), alnum(u.last!) else { return false }
        return u.allSatisfy { alnum($0) || $0 == 45 }
    }

    /// RFC 1035 label (Service names): an RFC 1123 label that starts with a letter.
    public static func isDNS1035Label(_ s: String) -> Bool {
        guard isDNS1123Label(s), let f = s.utf8.first else { return false }
        return f >= 97 && f <= 122
    }

    /// RFC 1123 subdomain (EndpointSlice and Node names).
    public static func isDNS1123Subdomain(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNS1123Label(String($0)) }
    }

    /// IANA_SVC_NAME, used for named target ports: at most 15 characters, a letter somewhere, no "--".
    static func hasDoubleHyphen(_ s: String) -> Bool {
        var last: UInt8 = 0
        for c in s.utf8 {
            if c == UInt8(ascii: "-") && last == c { return true }
            last = c
        }
        return false
    }

    public static func isIANASvcName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 15, isDNS1123Label(s), !hasDoubleHyphen(s) else { return false }
        return s.utf8.contains { $0 >= 97 && $0 <= 122 }
    }

    public static func validate(_ svc: Service) -> [FieldError] {
        var errs: [FieldError] = []
        let name = svc.metadata.name ?? ""
        if name.isEmpty {
            errs.append(FieldError("metadata.name", "Required value: name is required"))
        } else if !isDNS1035Label(name) {
            errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"))
        }
        if let ns = svc.metadata.namespace, !isDNS1123Label(ns) {
            errs.append(FieldError("metadata.namespace", "Invalid value: \"\(ns)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"))
        }
        let spec = svc.spec
        if let t = spec.type, ServiceType(rawValue: t) == nil {
            errs.append(FieldError("spec.type", "Unsupported value: \"\(t)\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""))
        }
        if spec.serviceType == .externalName { return errs }
        if let ip = spec.clusterIP, !ip.isEmpty, ip != "None", IPAddress(ip) == nil {
            errs.append(FieldError("spec.clusterIP", "Invalid value: \"\(ip)\": must be a valid IP address or \"None\""))
        }
        for (i, ip) in (spec.clusterIPs ?? []).enumerated() where !(ip == "None" || ip.isEmpty) && IPAddress(ip) == nil {
            errs.append(FieldError("spec.clusterIPs[\(i)]", "Invalid value: \"\(ip)\": must be a valid IP address"))
        }
        let ports = spec.ports ?? []
        if ports.isEmpty && spec.clusterIP != "None" {
            errs.append(FieldError("spec.ports", "Required value"))
        }
        var names = Set<String>()
        var seen = Set<String>()
        for (i, p) in ports.enumerated() {
            let f = "spec.ports[\(i)]"
            let pname = p.name ?? ""
            if ports.count > 1 && pname.isEmpty {
                errs.append(FieldError("\(f).name", "Required value"))
            } else if !pname.isEmpty && !isDNS1123Label(pname) {
                errs.append(FieldError("\(f).name", "Invalid value: \"\(pname)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"))
            } else if !names.insert(pname).inserted {
                errs.append(FieldError("\(f).name", "Duplicate value: \"\(pname)\""))
            }
            if !(1...65535).contains(p.port) {
                errs.append(FieldError("\(f).port", "Invalid value: \(p.port): must be between 1 and 65535, inclusive"))
            }
            let proto = p.protocol ?? "TCP"
            if !protocols.contains(proto) {
                errs.append(FieldError("\(f).protocol", "Unsupported value: \"\(proto)\": supported values: \"SCTP\", \"TCP\", \"UDP\""))
            }
            if !seen.insert("\(proto)/\(p.port)").inserted {
                errs.append(FieldError(f, "Duplicate value: {\"protocol\":\"\(proto)\",\"port\":\(p.port)}"))
            }
            switch p.targetPort {
            case .int(let t) where !(1...65535).contains(t):
                errs.append(FieldError("\(f).targetPort", "Invalid value: \(t): must be between 1 and 65535, inclusive"))
            case .string(let s) where !isIANASvcName(s):
                errs.append(FieldError("\(f).targetPort", "Invalid value: \"\(s)\": must be a valid port name (IANA_SVC_NAME)"))
            default: break
            }
            if let np = p.nodePort, !(0...65535).contains(np) {
                errs.append(FieldError("\(f).nodePort", "Invalid value: \(np): must be between 1 and 65535, inclusive"))
            }
        }
        for (i, ip) in (spec.externalIPs ?? []).enumerated() where IPAddress(ip) == nil {
            errs.append(FieldError("spec.externalIPs[\(i)]", "Invalid value: \"\(ip)\": must be a valid IP address"))
        }
        for (i, r) in (spec.loadBalancerSourceRanges ?? []).enumerated() {
            let t = r.trimmingSpaces
            if CIDR(t) == nil {
                errs.append(FieldError("spec.loadBalancerSourceRanges[\(i)]", "Invalid value: \"\(r)\": must be a valid CIDR"))
            }
        }
        if let a = spec.sessionAffinity, a != "None", a != "ClientIP" {
            errs.append(FieldError("spec.sessionAffinity", "Unsupported value: \"\(a)\": supported values: \"ClientIP\", \"None\""))
        }
        if let t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds, !(1...86400).contains(t) {
            errs.append(FieldError("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "Invalid value: \(t): must be greater than 0 and less than 86400"))
        }
        if let p = spec.externalTrafficPolicy, p != "Cluster", p != "Local" {
            errs.append(FieldError("spec.externalTrafficPolicy", "Unsupported value: \"\(p)\": supported values: \"Cluster\", \"Local\""))
        }
        if let p = spec.internalTrafficPolicy, p != "Cluster", p != "Local" {
            errs.append(FieldError("spec.internalTrafficPolicy", "Unsupported value: \"\(p)\": supported values: \"Cluster\", \"Local\""))
        }
        if let h = spec.healthCheckNodePort, !(0...65535).contains(h) {
            errs.append(FieldError("spec.healthCheckNodePort", "Invalid value: \(h): must be between 1 and 65535, inclusive"))
        }
        for (i, ing) in (svc.status?.loadBalancer?.ingress ?? []).enumerated() {
            if let ip = ing.ip, IPAddress(ip) == nil {
                errs.append(FieldError("status.loadBalancer.ingress[\(i)].ip", "Invalid value: \"\(ip)\": must be a valid IP address"))
            }
            if let m = ing.ipMode, m != "VIP", m != "Proxy" {
                errs.append(FieldError("status.loadBalancer.ingress[\(i)].ipMode", "Unsupported value: \"\(m)\": supported values: \"Proxy\", \"VIP\""))
            }
        }
        return errs
    }

    public static func validate(_ slice: EndpointSlice) -> [FieldError] {
        var errs: [FieldError] = []
        let name = slice.metadata.name ?? ""
        if name.isEmpty && (slice.metadata.generateName ?? "").isEmpty {
            errs.append(FieldError("metadata.name", "Required value: name or generateName is required"))
        } else if !name.isEmpty && !isDNS1123Subdomain(name) {
            errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"))
        }
        let family: IPFamily?
        switch slice.addressType {
        case "IPv4": family = .ipv4
        case "IPv6": family = .ipv6
        case "FQDN": family = nil
        default:
            errs.append(FieldError("addressType", "Unsupported value: \"\(slice.addressType)\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""))
            return errs
        }
        for (i, ep) in (slice.endpoints ?? []).enumerated() {
            if ep.addresses.isEmpty || ep.addresses.count > 100 {
                errs.append(FieldError("endpoints[\(i)].addresses", "Invalid value: must contain between 1 and 100 addresses"))
            }
            guard let family else { continue }
            for (j, a) in ep.addresses.enumerated() {
                guard let ip = IPAddress(a), ip.family == family else {
                    errs.append(FieldError("endpoints[\(i)].addresses[\(j)]", "Invalid value: \"\(a)\": must be a valid \(family.rawValue) address"))
                    continue
                }
            }
        }
        var names = Set<String>()
        for (i, p) in (slice.ports ?? []).enumerated() {
            if let port = p.port, !(1...65535).contains(port) {
                errs.append(FieldError("ports[\(i)].port", "Invalid value: \(port): must be between 1 and 65535, inclusive"))
            }
            if let proto = p.protocol, !protocols.contains(proto) {
                errs.append(FieldError("ports[\(i)].protocol", "Unsupported value: \"\(proto)\": supported values: \"SCTP\", \"TCP\", \"UDP\""))
            }
            let pn = p.name ?? ""
            if !pn.isEmpty && !isDNS1123Label(pn) {
                errs.append(FieldError("ports[\(i)].name", "Invalid value: \"\(pn)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"))
            } else if !names.insert(pn).inserted {
                errs.append(FieldError("ports[\(i)].name", "Duplicate value: \"\(pn)\""))
            }
        }
        if let svc = slice.serviceName, !isDNS1035Label(svc) {
            errs.append(FieldError("metadata.labels[kubernetes.io/service-name]", "Invalid value: \"\(svc)\": must be a valid Service name"))
        }
        return errs
    }

    public static func validate(_ cidr: ServiceCIDR) -> [FieldError] {
        var errs: [FieldError] = []
        let cidrs = cidr.spec.cidrs ?? []
        if cidrs.isEmpty || cidrs.count > 2 {
            errs.append(FieldError("spec.cidrs", "Invalid value: must contain one or two CIDRs"))
        }
        for (i, c) in cidrs.enumerated() where CIDR(c) == nil {
            errs.append(FieldError("spec.cidrs[\(i)]", "Invalid value: \"\(c)\": must be a valid CIDR"))
        }
        return errs
    }
}

extension String {
    var trimmingSpaces: String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
