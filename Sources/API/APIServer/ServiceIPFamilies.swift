import KubeAPI

/// A Service's cluster IP fields (`clusterIP`, `clusterIPs`, `ipFamilies`, `ipFamilyPolicy`) as
/// kube-apiserver's service registry prepares them before it allocates: the fields old clients
/// leave out patched from the stored object, `clusterIP` and `clusterIPs` kept in step, the
/// policy and families defaulted from the cluster's service ranges, and upgrades to and
/// downgrades from dual-stack recognised. Pure: the allocator does the rest.
struct ServiceIPFields: Equatable {
    var type: String
    var clusterIP: String
    var clusterIPs: [String]
    var ipFamilies: [String]
    var ipFamilyPolicy: String?
    var selectorless: Bool

    static let none = "None"
    static let singleStack = "SingleStack", preferDualStack = "PreferDualStack", requireDualStack = "RequireDualStack"

    init(spec: [String: JSONValue]) {
        type = spec["type"]?.string ?? "ClusterIP"
        clusterIP = spec["clusterIP"]?.string ?? ""
        clusterIPs = spec["clusterIPs"]?.array?.compactMap(\.string) ?? []
        ipFamilies = spec["ipFamilies"]?.array?.compactMap(\.string) ?? []
        ipFamilyPolicy = spec["ipFamilyPolicy"]?.string
        selectorless = (spec["selector"]?.object ?? [:]).isEmpty
    }

    /// Writes the fields back into `spec` (empty ones removed, as upstream omits them).
    func write(into spec: inout [String: JSONValue]) {
        spec["clusterIP"] = clusterIP.isEmpty ? nil : .string(clusterIP)
        spec["clusterIPs"] = clusterIPs.isEmpty ? nil : .array(clusterIPs.map { .string($0) })
        spec["ipFamilies"] = ipFamilies.isEmpty ? nil : .array(ipFamilies.map { .string($0) })
        spec["ipFamilyPolicy"] = ipFamilyPolicy.map { .string($0) }
    }

    var isHeadless: Bool { clusterIPs.count == 1 && clusterIPs[0] == Self.none }
    var getsClusterIP: Bool { type == "ClusterIP" || type == "NodePort" || type == "LoadBalancer" }

    static func family(of ip: String) -> String? {
        guard let a = IPAddress(ip) else { return nil }
        return a.family == .ipv4 ? "IPv4" : "IPv6"
    }

    // MARK: preparation (upstream's patchAllocatedValues and NormalizeClusterIPs)

    /// On an update: what the client left out of an object that keeps its addresses is the stored one's.
    mutating func patchAllocated(from old: ServiceIPFields) {
        guard old.type != "ExternalName", type != "ExternalName" else { return }
        if clusterIP.isEmpty { clusterIP = old.clusterIP }
        if clusterIPs.isEmpty && !old.clusterIPs.isEmpty { clusterIPs = old.clusterIPs }
    }

    /// Keeps `clusterIP` and `clusterIPs` in step: an old client sets the singular field only.
    mutating func normalize(old: ServiceIPFields?) {
        guard let old else {
            if !clusterIP.isEmpty && clusterIPs.isEmpty { clusterIPs = [clusterIP] }
            return
        }
        if !old.clusterIPs.isEmpty && clusterIPs.isEmpty && old.clusterIP == clusterIP { clusterIPs = old.clusterIPs }
        if old.clusterIP != clusterIP {
            if !old.clusterIP.isEmpty && clusterIP.isEmpty {
                if old.clusterIPs == clusterIPs { clusterIPs = [] }
            } else if old.clusterIPs == clusterIPs {
                clusterIPs = [clusterIP]
            }
        }
    }

    /// A type change to ExternalName drops the addresses the client did not change.
    mutating func dropForExternalName(old: ServiceIPFields?) {
        guard type == "ExternalName", let old, old.type != "ExternalName" else { return }
        if clusterIP == old.clusterIP { clusterIP = "" }
        if clusterIPs == old.clusterIPs { clusterIPs = [] }
        if ipFamilies == old.ipFamilies { ipFamilies = [] }
        if ipFamilyPolicy == old.ipFamilyPolicy { ipFamilyPolicy = nil }
    }

    // MARK: validation (upstream's ValidateServiceClusterIPsRelatedFields)

    /// The fields checked on their own and against each other.
    func relatedFieldErrors() -> [FieldError] {
        guard type != "ExternalName" else {
            var errs: [FieldError] = []
            if !clusterIPs.isEmpty { errs.append(FieldError("spec.clusterIPs", "Forbidden: may not be set for ExternalName services")) }
            if !ipFamilies.isEmpty { errs.append(FieldError("spec.ipFamilies", "Forbidden: may not be set for ExternalName services")) }
            if ipFamilyPolicy != nil { errs.append(FieldError("spec.ipFamilyPolicy", "Forbidden: may not be set for ExternalName services")) }
            return errs
        }
        var errs: [FieldError] = []
        if !clusterIP.isEmpty {
            if clusterIPs.isEmpty {
                errs.append(FieldError("spec.clusterIPs", "Required value"))
            } else if clusterIPs[0] != clusterIP {
                errs.append(FieldError("spec.clusterIPs", "Invalid value: \(Self.goStrings(clusterIPs)): first value must match `clusterIP`"))
            }
        } else if !clusterIPs.isEmpty {
            errs.append(FieldError("spec.clusterIPs", "Invalid value: \(Self.goStrings(clusterIPs)): must be empty when `clusterIP` is not specified"))
        }
        var seen = Set<String>()
        for (i, f) in ipFamilies.enumerated() {
            if f != "IPv4" && f != "IPv6" {
                errs.append(FieldError("spec.ipFamilies[\(i)]", "Unsupported value: \"\(f)\": supported values: \"IPv4\", \"IPv6\""))
            }
            if !seen.insert(f).inserted { errs.append(FieldError("spec.ipFamilies[\(i)]", "Duplicate value: \"\(f)\"")) }
        }
        if let p = ipFamilyPolicy, ![Self.preferDualStack, Self.requireDualStack, Self.singleStack].contains(p) {
            errs.append(FieldError("spec.ipFamilyPolicy", "Unsupported value: \"\(p)\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""))
        }
        var invalidIPs = false
        for (i, ip) in clusterIPs.enumerated() {
            if i == 0 && ip == Self.none {
                if clusterIPs.count > 1 {
                    invalidIPs = true
                    errs.append(FieldError("spec.clusterIPs", "Invalid value: \(Self.goStrings(clusterIPs)): 'None' must be the first and only value"))
                }
                continue
            }
            if IPAddress(ip) == nil {
                invalidIPs = true
                errs.append(FieldError("spec.clusterIPs[\(i)]", "Invalid value: \"\(ip)\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
            }
        }
        if clusterIPs.count > 2 {
            errs.append(FieldError("spec.clusterIPs", "Invalid value: \(Self.goStrings(clusterIPs)): may only hold up to 2 values"))
        }
        if invalidIPs { return errs }
        if clusterIPs.count > 1 && Set(clusterIPs.compactMap(Self.family)).count != clusterIPs.count {
            errs.append(FieldError("spec.clusterIPs", "Invalid value: \(Self.goStrings(clusterIPs)): may specify no more than one IP for each IP family"))
        }
        if !isHeadless {
            for (i, ip) in clusterIPs.enumerated() where i < ipFamilies.count {
                if ipFamilies[i] == "IPv4" && Self.family(of: ip) == "IPv6" {
                    errs.append(FieldError("spec.clusterIPs[\(i)]", "Invalid value: \"\(ip)\": expected an IPv4 value as indicated by `ipFamilies[\(i)]`"))
                }
                if ipFamilies[i] == "IPv6" && Self.family(of: ip) != "IPv6" {
                    errs.append(FieldError("spec.clusterIPs[\(i)]", "Invalid value: \"\(ip)\": expected an IPv6 value as indicated by `ipFamilies[\(i)]`"))
                }
            }
        }
        return errs
    }

    /// An update's changes to `clusterIPs` and `ipFamilies` (upstream's
    /// validateUpgradeDowngradeClusterIPs and …IPFamilies): the primary never changes, and
    /// only a SingleStack policy lets the secondary go.
    func upgradeDowngradeErrors(old: ServiceIPFields) -> [FieldError] {
        guard type != "ExternalName", old.type != "ExternalName" else { return [] }
        var errs: [FieldError] = []
        let policy = ipFamilyPolicy.map { "\"\($0)\"" } ?? "null"
        if !(old.isHeadless && isHeadless) {
            if old.clusterIPs.count == clusterIPs.count {
                for (i, ip) in old.clusterIPs.enumerated() where ip != clusterIPs[i] {
                    errs.append(FieldError("spec.clusterIPs[\(i)]", "Invalid value: \(Self.goStrings(clusterIPs)): may not change once set"))
                }
            } else if old.clusterIPs.count > clusterIPs.count {
                if clusterIPs.isEmpty {
                    errs.append(FieldError("spec.clusterIPs[0]", "Invalid value: \(Self.goStrings(clusterIPs)): primary clusterIP can not be unset"))
                } else if !old.clusterIPs.isEmpty && clusterIPs[0] != old.clusterIPs[0] {
                    errs.append(FieldError("spec.clusterIPs[0]", "Invalid value: \(Self.goStrings(clusterIPs)): may not change once set"))
                }
                if clusterIPs.count == 1 && ipFamilyPolicy != Self.singleStack {
                    errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): must be set to 'SingleStack' when releasing the secondary clusterIP"))
                }
            } else if !old.clusterIPs.isEmpty && clusterIPs[0] != old.clusterIPs[0] {
                errs.append(FieldError("spec.clusterIPs[0]", "Invalid value: \(Self.goStrings(clusterIPs)): may not change once set"))
            }
        }
        if old.isHeadless == isHeadless && !isHeadless {
            if old.ipFamilies.count == ipFamilies.count {
                if old.ipFamilies != ipFamilies {
                    errs.append(FieldError("spec.ipFamilies[0]", "Invalid value: \(Self.goFamilies(ipFamilies)): may not change once set"))
                }
            } else if old.ipFamilies.count > ipFamilies.count {
                if !ipFamilies.isEmpty && ipFamilies[0] != old.ipFamilies[0] {
                    errs.append(FieldError("spec.ipFamilies[0]", "Invalid value: \(Self.goStrings(clusterIPs)): may not change once set"))
                }
                if ipFamilies.count == 1 && ipFamilyPolicy != Self.singleStack {
                    errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): must be set to 'SingleStack' when releasing the secondary ipFamily"))
                }
            } else if !old.ipFamilies.isEmpty && !ipFamilies.isEmpty && ipFamilies[0] != old.ipFamilies[0] {
                errs.append(FieldError("spec.ipFamilies[0]", "Invalid value: \(Self.goStrings(clusterIPs)): may not change once set"))
            }
        }
        return errs
    }

    // MARK: defaulting (upstream's initIPFamilyFields)

    /// Whether a PreferDualStack Service's fields are unchanged: it is then left as it is, even
    /// when the cluster has since gained or lost a family.
    func matchesPreferDualStack(old: ServiceIPFields?) -> Bool {
        guard let old, let p = ipFamilyPolicy, old.type == type, getsClusterIP else { return false }
        return p == Self.preferDualStack && (old.ipFamilyPolicy == nil || old.ipFamilyPolicy == Self.preferDualStack)
            && old.clusterIPs == clusterIPs && old.ipFamilies == ipFamilies
    }

    /// Defaults the policy and the families for a cluster whose service ranges have `families`
    /// (the primary first); throws the errors upstream gives as field errors.
    mutating func initFamilies(old: ServiceIPFields?, cluster families: [IPFamily]) -> [FieldError] {
        guard type != "ExternalName" else { return [] }
        if matchesPreferDualStack(old: old) { return [] }
        let configured = Set(families.map { $0 == .ipv4 ? "IPv4" : "IPv6" })
        let primary = families.first == .ipv6 ? "IPv6" : "IPv4"
        if ipFamilyPolicy == nil {
            if let p = old?.ipFamilyPolicy {
                ipFamilyPolicy = p
            } else if clusterIP == Self.none && selectorless {
                ipFamilyPolicy = Self.requireDualStack
            } else {
                ipFamilyPolicy = Self.singleStack
            }
        }
        let related = relatedFieldErrors()
        if !related.isEmpty { return related }
        var errs: [FieldError] = []
        let policy = "\"\(ipFamilyPolicy!)\""
        if let old {
            if ipFamilyPolicy == Self.singleStack {
                if old.clusterIPs == clusterIPs && clusterIPs.count > 1 { clusterIPs = [clusterIPs[0]] }
                if old.ipFamilies == ipFamilies && ipFamilies.count > 1 { ipFamilies = [ipFamilies[0]] }
            } else {
                if !clusterIPs.isEmpty && clusterIPs.count < old.clusterIPs.count {
                    errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): must be 'SingleStack' to release the secondary cluster IP"))
                }
                if !ipFamilies.isEmpty && ipFamilies.count < old.ipFamilies.count {
                    errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): must be 'SingleStack' to release the secondary IP family"))
                }
            }
        }
        if ipFamilyPolicy == Self.singleStack {
            if clusterIPs.count == 2 {
                errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"))
            }
            if ipFamilies.count == 2 {
                errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
            }
        }
        for (i, ip) in clusterIPs.enumerated() {
            if ip == Self.none { break }
            guard let fam = Self.family(of: ip) else { continue }
            if i >= ipFamilies.count {
                if configured.contains(fam) {
                    ipFamilies.append(fam)
                } else {
                    errs.append(FieldError("spec.clusterIPs[\(i)]", "Invalid value: \(Self.goStrings(clusterIPs)): \(fam) is not configured on this cluster"))
                }
            }
        }
        if !errs.isEmpty { return errs }
        // Headless and selectorless: any families, even those the cluster has no range for.
        if clusterIP == Self.none && selectorless {
            if ipFamilies.isEmpty { ipFamilies = [primary] }
            if ipFamilies.count < 2 && ipFamilyPolicy != Self.singleStack {
                ipFamilies.append(ipFamilies[0] == "IPv4" ? "IPv6" : "IPv4")
            }
            return []
        }
        if ipFamilyPolicy == Self.requireDualStack && families.count < 2 {
            errs.append(FieldError("spec.ipFamilyPolicy", "Invalid value: \(policy): this cluster is not configured for dual-stack services"))
        }
        for (i, f) in ipFamilies.enumerated() where !configured.contains(f) {
            errs.append(FieldError("spec.ipFamilies[\(i)]", "Invalid value: \"\(f)\": not configured on this cluster"))
        }
        if !errs.isEmpty { return errs }
        if ipFamilies.isEmpty { ipFamilies = [primary] }
        if ipFamilyPolicy != Self.singleStack && ipFamilies.count == 1 && families.count == 2 {
            ipFamilies.append(ipFamilies[0] == "IPv4" ? "IPv6" : "IPv4")
        }
        return []
    }

    // MARK: Go's forms of values in field errors

    static func goStrings(_ a: [String]) -> String { "[]string{" + a.map { "\"\($0)\"" }.joined(separator: ", ") + "}" }
    static func goFamilies(_ a: [String]) -> String { "[]core.IPFamily{" + a.map { "\"\($0)\"" }.joined(separator: ", ") + "}" }
}
