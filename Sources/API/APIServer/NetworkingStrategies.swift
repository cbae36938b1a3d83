import Foundation
import KubeAPI

/// networking.k8s.io/v1 Ingress, checked as upstream's `ValidateIngress`: a default backend or
/// rules; each backend a Service (name and port number or name) or a resource, not both; hosts
/// DNS names, `*.` only as the first label, never IP addresses; each path with a `pathType`
/// (`Exact`, `Prefix`, `ImplementationSpecific`), absolute, and for `Exact` and `Prefix`
/// without `//`, `/./`, `/../` or an encoded slash.
struct IngressStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }

    static func host(_ h: String, _ field: String) -> [FieldError] {
        let quoted = JSONValue.string(h).text()
        if KubeAPI.IPAddress(h) != nil {
            return [FieldError(field, "Invalid value: \(quoted): must be a DNS name, not an IP address")]
        }
        if h.hasPrefix("*.") {
            if !KubeAPI.Validation.isDNS1123Subdomain(String(h.dropFirst(2))) {
                return [FieldError(field, "Invalid value: \(quoted): a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]
            }
        } else if !KubeAPI.Validation.isDNS1123Subdomain(h) {
            return [FieldError(field, "Invalid value: \(quoted): a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]
        }
        return []
    }

    static func backend(_ b: JSONValue, _ field: String) -> [FieldError] {
        let service = b["service"], resource = b["resource"]
        if service != nil && resource != nil { return [FieldError(field, "Invalid value: \"\": cannot set both resource and service backends")] }
        if let resource {
            var errs: [FieldError] = []
            if (resource["kind"]?.string ?? "").isEmpty { errs.append(FieldError(field + ".resource.kind", "Required value")) }
            if (resource["name"]?.string ?? "").isEmpty { errs.append(FieldError(field + ".resource.name", "Required value")) }
            return errs
        }
        guard let service else { return [FieldError(field, "Invalid value: \"\": resource or service backend is required")] }
        var errs: [FieldError] = []
        let name = service["name"]?.string ?? ""
        if name.isEmpty {
            errs.append(FieldError(field + ".service.name", "Required value"))
        } else if !KubeAPI.Validation.isDNS1035Label(name) {
            errs.append(FieldError(field + ".service.name", "Invalid value: \(JSONValue.string(name).text()): a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"))
        }
        let number = service[path: ["port", "number"]]?.int, portName = service[path: ["port", "name"]]?.string ?? ""
        if number != nil && number != 0 && !portName.isEmpty {
            errs.append(FieldError(field + ".service.port", "Invalid value: \"\": cannot set both port name & port number"))
        } else if let n = number, n != 0 {
            if n < 1 || n > 65535 { errs.append(FieldError(field + ".service.port.number", "Invalid value: \(n): must be between 1 and 65535, inclusive")) }
        } else if !portName.isEmpty {
            if !KubeAPI.Validation.isIANASvcName(portName) {
                errs.append(FieldError(field + ".service.port.name", "Invalid value: \(JSONValue.string(portName).text()): must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"))
            }
        } else {
            errs.append(FieldError(field + ".service.port", "Required value: port name or number is required"))
        }
        return errs
    }

    static func path(_ p: JSONValue, _ field: String) -> [FieldError] {
        var errs: [FieldError] = []
        let path = p["path"]?.string ?? ""
        switch p["pathType"]?.string {
        case nil:
            errs.append(FieldError(field + ".pathType", "Required value: pathType must be specified"))
        case "Exact"?, "Prefix"?:
            if !path.hasPrefix("/") {
                errs.append(FieldError(field + ".path", "Invalid value: \(JSONValue.string(path).text()): must be an absolute path"))
            } else {
                for bad in ["//", "/./", "/../", "%2f", "%2F"] where path.contains(bad) {
                    errs.append(FieldError(field + ".path", "Invalid value: \(JSONValue.string(path).text()): must not contain '\(bad)'"))
                }
                for bad in ["/..", "/."] where path.hasSuffix(bad) {
                    errs.append(FieldError(field + ".path", "Invalid value: \(JSONValue.string(path).text()): cannot end with '\(bad)'"))
                }
            }
        case "ImplementationSpecific"?:
            if !path.isEmpty && !path.hasPrefix("/") {
                errs.append(FieldError(field + ".path", "Invalid value: \(JSONValue.string(path).text()): must be an absolute path"))
            }
        case let t?:
            errs.append(FieldError(field + ".pathType", "Unsupported value: \(JSONValue.string(t).text()): supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""))
        }
        errs += backend(p["backend"] ?? .object([:]), field + ".backend")
        return errs
    }

    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let spec = o["spec"] ?? .object([:])
        let rules = spec["rules"]?.array ?? []
        if spec["defaultBackend"] == nil && rules.isEmpty {
            errs.append(FieldError("spec", "Invalid value: \(spec.text()): either `defaultBackend` or `rules` must be specified"))
        }
        if let d = spec["defaultBackend"] { errs += Self.backend(d, "spec.defaultBackend") }
        if let c = spec["ingressClassName"]?.string, !KubeAPI.Validation.isDNS1123Subdomain(c) {
            errs.append(FieldError("spec.ingressClassName", "Invalid value: \(JSONValue.string(c).text()): a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))
        }
        for (i, t) in (spec["tls"]?.array ?? []).enumerated() {
            for (j, h) in (t["hosts"]?.array ?? []).enumerated() {
                errs += Self.host(h.string ?? "", "spec.tls[\(i)].hosts[\(j)]")
            }
        }
        for (i, rule) in rules.enumerated() {
            if let h = rule["host"]?.string, !h.isEmpty { errs += Self.host(h, "spec.rules[\(i)].host") }
            guard let http = rule["http"] else { continue }
            let paths = http["paths"]?.array ?? []
            if paths.isEmpty { errs.append(FieldError("spec.rules[\(i)].http.paths", "Required value")) }
            for (j, p) in paths.enumerated() { errs += Self.path(p, "spec.rules[\(i)].http.paths[\(j)]") }
        }
        for (i, ing) in (o[path: ["status", "loadBalancer", "ingress"]]?.array ?? []).enumerated() {
            if let ip = ing["ip"]?.string, KubeAPI.IPAddress(ip) == nil {
                errs.append(FieldError("status.loadBalancer.ingress[\(i)].ip", "Invalid value: \(JSONValue.string(ip).text()): must be a valid IP address"))
            }
        }
        return errs
    }

    /// As upstream's printer: up to three hosts, then `+ N more...` (N: the rules after three).
    static func hosts(_ o: JSONValue) -> String {
        let rules = o[path: ["spec", "rules"]]?.array ?? []
        var hosts: [String] = [], more = false
        for rule in rules {
            if hosts.count == 3 { more = true }
            if !more, let h = rule["host"]?.string, !h.isEmpty { hosts.append(h) }
        }
        if hosts.isEmpty { return "*" }
        return hosts.joined(separator: ",") + (more ? " + \(rules.count - 3) more..." : "")
    }

    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Class") { .string($0[path: ["spec", "ingressClassName"]]?.string ?? "<none>") },
         Tables.Column(name: "Hosts") { .string(Self.hosts($0)) },
         Tables.Column(name: "Address") { o in
             .string((o[path: ["status", "loadBalancer", "ingress"]]?.array ?? []).compactMap { $0["ip"]?.string ?? $0["hostname"]?.string }.joined(separator: ","))
         },
         Tables.Column(name: "Ports") { .string(($0[path: ["spec", "tls"]]?.array ?? []).isEmpty ? "80" : "80, 443") },
         Tables.ageColumn]
    }
}

/// networking.k8s.io/v1 IngressClass: a controller (a domain-prefixed path of at most 250
/// characters, fixed once set) and optional parameters.
struct IngressClassStrategy: ResourceStrategy {
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let controller = o[path: ["spec", "controller"]]?.string ?? ""
        if controller.isEmpty {
            errs.append(FieldError("spec.controller", "Required value"))
        } else if controller.count > 250 {
            errs.append(FieldError("spec.controller", "Too long: may not be more than 250 bytes"))
        } else {
            let parts = controller.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count < 2 || parts[1].isEmpty || !KubeAPI.Validation.isDNS1123Subdomain(String(parts[0])) {
                errs.append(FieldError("spec.controller", "Invalid value: \(JSONValue.string(controller).text()): must be a domain-prefixed path (such as \"acme.io/foo\")"))
            }
        }
        if let p = o[path: ["spec", "parameters"]] {
            if (p["kind"]?.string ?? "").isEmpty { errs.append(FieldError("spec.parameters.kind", "Required value")) }
            if (p["name"]?.string ?? "").isEmpty { errs.append(FieldError("spec.parameters.name", "Required value")) }
            let scope = p["scope"]?.string
            switch scope {
            case "Namespace"?:
                if (p["namespace"]?.string ?? "").isEmpty {
                    errs.append(FieldError("spec.parameters.namespace", "Required value: `parameters.scope` is set to 'Namespace'"))
                }
            case "Cluster"?, nil:
                if p["namespace"] != nil {
                    errs.append(FieldError("spec.parameters.namespace", "Forbidden: `parameters.scope` is set to 'Cluster'"))
                }
            case let s?:
                errs.append(FieldError("spec.parameters.scope", "Unsupported value: \(JSONValue.string(s).text()): supported values: \"Cluster\", \"Namespace\""))
            }
        }
        return errs
    }

    func defaults(_ o: inout JSONValue) {
        if o[path: ["spec", "parameters"]] != nil && o[path: ["spec", "parameters", "scope"]] == nil {
            o[path: ["spec", "parameters", "scope"]] = "Cluster"
        }
    }

    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Controller") { Tables.str($0[path: ["spec", "controller"]]) },
         Tables.Column(name: "Parameters") { o in
             guard let p = o[path: ["spec", "parameters"]] else { return "<none>" }
             let group = p["apiGroup"]?.string.map { "." + $0 } ?? ""
             return .string("\(p["kind"]?.string ?? "")\(group)/\(p["name"]?.string ?? "")")
         },
         Tables.ageColumn]
    }
}

/// The DefaultIngressClass admission plugin (on by default, as upstream's): a new Ingress that
/// names no class (neither `spec.ingressClassName` nor the `kubernetes.io/ingress.class`
/// annotation) gets the default IngressClass (`ingressclass.kubernetes.io/is-default-class:
/// "true"`); of several defaults, the newest. An IngressClass's controller is fixed once set.
extension APIHandler {
    func admitIngress(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) async throws {
        guard r.group == "networking.k8s.io", subresource == nil else { return }
        if r.resource == "ingressclasses", let old, let was = old[path: ["spec", "controller"]]?.string,
           let now = o[path: ["spec", "controller"]]?.string, was != now {
            throw APIError.invalid(r, o.name, [FieldError("spec.controller", "Invalid value: \(JSONValue.string(now).text()): field is immutable")])
        }
        guard r.resource == "ingresses", old == nil, admissionPlugins.contains("DefaultIngressClass"),
              o[path: ["spec", "ingressClassName"]] == nil, o[path: ["metadata", "annotations", "kubernetes.io/ingress.class"]] == nil,
              let classes = registry.find(group: "networking.k8s.io", version: "v1", resource: "ingressclasses") else { return }
        let defaults = try await currentValues(prefix: classes.storePrefix)
            .filter { $0[path: ["metadata", "annotations", "ingressclass.kubernetes.io/is-default-class"]]?.string == "true" }
            .sorted { ($0[path: ["metadata", "creationTimestamp"]]?.string ?? "", $0.name) > ($1[path: ["metadata", "creationTimestamp"]]?.string ?? "", $1.name) }
        if let chosen = defaults.first { o[path: ["spec", "ingressClassName"]] = .string(chosen.name) }
    }
}

/// networking.k8s.io/v1 ServiceCIDR: the ranges ClusterIPs come from, one or one of each family
/// (`ValidateServiceCIDR`); the server keeps the `kubernetes` one, its `--service-cluster-ip-range`.
struct ServiceCIDRStrategy: ResourceStrategy {
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        let cidrs = (o[path: ["spec", "cidrs"]]?.array ?? []).map { $0.string ?? "" }
        let path = "spec.cidrs"
        if cidrs.isEmpty { return [FieldError(path, "Required value: at least one CIDR required")] }
        let spec = "networking.ServiceCIDRSpec{CIDRs:\(ServiceIPFields.goStrings(cidrs))}"
        if cidrs.count > 2 { return [FieldError(path, "Invalid value: \(spec): may only hold up to 2 values")] }
        let parsed = cidrs.map(CIDR.init)
        if cidrs.count == 2, !(parsed.allSatisfy { $0 != nil } && parsed[0]!.family != parsed[1]!.family) {
            return [FieldError(path, "Invalid value: \(spec): may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64")]
        }
        return cidrs.indices.compactMap { i in
            parsed[i] == nil
                ? FieldError("\(path)[\(i)]", "Invalid value: \(JSONValue.string(cidrs[i]).text()): must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
                : nil
        }
    }

    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "CIDRs") { .string(($0[path: ["spec", "cidrs"]]?.array ?? []).compactMap(\.string).joined(separator: ",")) },
         Tables.ageColumn]
    }

    /// The default ServiceCIDR's name.
    static let defaultName = "kubernetes"
}

extension APIHandler {
    /// A ServiceCIDR's ranges never change (`ValidateServiceCIDRUpdate`), but for the one upgrade
    /// upstream allows: a single range joined by one of the other family behind it.
    func admitServiceCIDR(_ o: JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) throws {
        guard r.group == "networking.k8s.io", r.resource == "servicecidrs", subresource == nil, let old else { return }
        let was = (old[path: ["spec", "cidrs"]]?.array ?? []).compactMap(\.string)
        let now = (o[path: ["spec", "cidrs"]]?.array ?? []).compactMap(\.string)
        guard was != now, !(was.count == 1 && now.count == 2 && now[0] == was[0]) else { return }
        throw APIError.invalid(r, o.name, [FieldError("spec.cidrs", "Invalid value: \(ServiceIPFields.goStrings(now)): field is immutable")])
    }

    /// The `kubernetes` ServiceCIDR, as upstream's default-ServiceCIDR controller keeps it: created
    /// with `ranges` when missing, upgraded from single- to dual-stack when the server's ranges grew
    /// so, and marked Ready. Ranges that differ otherwise are left as they are, with a warning
    /// returned (upstream's KubernetesDefaultServiceCIDRInconsistent event).
    public func ensureDefaultServiceCIDR(_ ranges: [CIDR]) async throws -> String? {
        let path = "/apis/networking.k8s.io/v1/servicecidrs"
        let name = ServiceCIDRStrategy.defaultName
        let want = ranges.map(\.description)
        var warning: String?
        var current = await handle(APIRequest(method: "GET", path: "\(path)/\(name)", userAgent: "kube-apiserver"))
        if current.code == 404 {
            let body: JSONValue = ["apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": ["name": .string(name)],
                                   "spec": ["cidrs": .array(want.map(JSONValue.string))]]
            current = await handle(APIRequest(method: "POST", path: path, body: body.serialized(), userAgent: "kube-apiserver"))
            if current.code == 409 { current = await handle(APIRequest(method: "GET", path: "\(path)/\(name)", userAgent: "kube-apiserver")) }
        }
        guard [200, 201].contains(current.code), var o = current.json else {
            throw APIError.internal("the default ServiceCIDR: \(current.json?.text() ?? "")")
        }
        let have = (o[path: ["spec", "cidrs"]]?.array ?? []).compactMap(\.string)
        if have != want {
            if have.count == 1 && want.count == 2 && want[0] == have[0] {
                o[path: ["spec", "cidrs"]] = .array(want.map(JSONValue.string))
                let r = await handle(APIRequest(method: "PUT", path: "\(path)/\(name)", body: o.serialized(), userAgent: "kube-apiserver"))
                guard r.code == 200, let updated = r.json else { throw APIError.internal("upgrading the default ServiceCIDR: \(r.json?.text() ?? "")") }
                o = updated
            } else {
                warning = "the default ServiceCIDR holds \(have.joined(separator: ",")), not this server's --service-cluster-ip-range \(want.joined(separator: ",")): kept as it is"
            }
        }
        let ready = (o[path: ["status", "conditions"]]?.array ?? []).contains {
            $0["type"]?.string == "Ready" && $0["status"]?.string == "True"
        }
        if !ready {
            o["status"] = ["conditions": [["type": "Ready", "status": "True", "lastTransitionTime": .string(RFC3339.format(Date().timeIntervalSince1970)),
                                           "reason": "", "message": "Kubernetes default Service CIDR is ready"]]]
            let r = await handle(APIRequest(method: "PUT", path: "\(path)/\(name)/status", body: o.serialized(), userAgent: "kube-apiserver"))
            guard r.code == 200 else { throw APIError.internal("the default ServiceCIDR's status: \(r.json?.text() ?? "")") }
        }
        return warning
    }
}
