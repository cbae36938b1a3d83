import Foundation

/// How a ResourceQuota counts, as upstream's quota evaluators do: what an object adds to each
/// quota resource name (`pods`, `count/deployments.apps`, `requests.cpu`, …), which pods a scoped
/// quota tracks (`spec.scopes` and `spec.scopeSelector`), and a namespace's usage from its
/// objects. The API server's ResourceQuota admission and the resourcequota controller both
/// count with it.
public enum QuotaAccounting {
    public static let computeResources = ["cpu", "memory", "ephemeral-storage"]
    /// The core resources with a quota name of their own besides `count/…`.
    static let countedByName: Set<String> = ["pods", "services", "configmaps", "secrets", "replicationcontrollers", "resourcequotas", "persistentvolumeclaims"]

    /// A container's `resources.requests`/`limits` as strings.
    public static func resourceList(_ c: JSONValue, _ kind: String) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in c[path: ["resources", kind]]?.object ?? [:] {
            switch v {
            case .string(let s): out[k] = s
            case .int(let n): out[k] = String(n)
            case .double(let d): out[k] = String(d)
            default: break
            }
        }
        return out
    }

    /// What `o` (of `group`/`resource`) adds to each quota resource name.
    public static func delta(_ o: JSONValue, group: String, resource: String) -> [String: Double] {
        var d: [String: Double] = ["count/\(resource)\(group.isEmpty ? "" : "." + group)": 1]
        if group.isEmpty, countedByName.contains(resource) { d[resource] = 1 }
        if group.isEmpty && resource == "services" {
            let type = o[path: ["spec", "type"]]?.string ?? "ClusterIP"
            if type == "NodePort" || type == "LoadBalancer" { d["services.nodeports"] = Double(o[path: ["spec", "ports"]]?.array?.count ?? 0) }
            if type == "LoadBalancer" { d["services.loadbalancers"] = 1 }
        }
        if group.isEmpty && resource == "pods" {
            for (k, v) in podCompute(o) { d[k] = v }
        }
        return d
    }

    /// A pod's requests and limits as upstream's `PodRequests` sums them: its containers', or
    /// an init container's where that is more.
    public static func podCompute(_ pod: JSONValue) -> [String: Double] {
        var out: [String: Double] = [:]
        for kind in ["requests", "limits"] {
            var sum: [String: Double] = [:]
            for c in pod[path: ["spec", "containers"]]?.array ?? [] {
                for (k, v) in resourceList(c, kind) { sum[k, default: 0] += Quantity.parse(v) ?? 0 }
            }
            for c in pod[path: ["spec", "initContainers"]]?.array ?? [] {
                for (k, v) in resourceList(c, kind) { sum[k] = max(sum[k] ?? 0, Quantity.parse(v) ?? 0) }
            }
            for (k, v) in sum where computeResources.contains(k) {
                out["\(kind).\(k)"] = v
                if kind == "requests" { out[k] = v }
            }
        }
        return out
    }

    public static func isCompute(_ key: String) -> Bool {
        computeResources.contains(key) || computeResources.contains { key == "requests.\($0)" || key == "limits.\($0)" }
    }

    /// A quantity as upstream prints one: CPU in cores or thousandths (`1`, `500m`), bytes with
    /// the largest binary suffix that divides them (`256Mi`), counts as integers.
    public static func format(_ v: Double, for resource: String) -> String {
        if resource.hasSuffix("cpu") || resource == "cpu" {
            let m = Int64((v * 1000).rounded())
            return m % 1000 == 0 ? String(m / 1000) : "\(m)m"
        }
        let n = Int64(v.rounded())
        if resource.hasSuffix("memory") || resource.hasSuffix("storage") {
            for (suffix, factor) in [("Ei", Int64(1) << 60), ("Pi", Int64(1) << 50), ("Ti", Int64(1) << 40), ("Gi", Int64(1) << 30), ("Mi", Int64(1) << 20), ("Ki", Int64(1) << 10)]
            where n != 0 && n % factor == 0 {
                return "\(n / factor)\(suffix)"
            }
        }
        if v != v.rounded() {
            let m = Int64((v * 1000).rounded())
            return "\(m)m"
        }
        return String(n)
    }

    // MARK: scopes

    /// The quota's scopes: `spec.scopes` and `spec.scopeSelector.matchExpressions`.
    public static func isScoped(_ quota: JSONValue) -> Bool {
        !(quota[path: ["spec", "scopes"]]?.array ?? []).isEmpty || !(quota[path: ["spec", "scopeSelector", "matchExpressions"]]?.array ?? []).isEmpty
    }

    /// Whether a quota counts `o` at all: an unscoped quota counts everything in its namespace;
    /// a scoped one only the pods its scopes select, as upstream's evaluators (services,
    /// ConfigMaps, … match no scope).
    public static func tracks(_ quota: JSONValue, _ o: JSONValue, group: String, resource: String) -> Bool {
        guard isScoped(quota) else { return true }
        guard group.isEmpty, resource == "pods" else { return false }
        for s in quota[path: ["spec", "scopes"]]?.array?.compactMap(\.string) ?? [] where !podMatches(scope: s, operator: "Exists", values: [], o) {
            return false
        }
        for e in quota[path: ["spec", "scopeSelector", "matchExpressions"]]?.array ?? [] {
            guard let scope = e["scopeName"]?.string,
                  podMatches(scope: scope, operator: e["operator"]?.string ?? "", values: e["values"]?.array?.compactMap(\.string) ?? [], o) else { return false }
        }
        return true
    }

    /// One scope against a pod, as upstream's pod evaluator matches it.
    static func podMatches(scope: String, operator op: String, values: [String], _ pod: JSONValue) -> Bool {
        let spec = pod["spec"] ?? [:]
        switch scope {
        case "Terminating": return (spec["activeDeadlineSeconds"]?.int).map { $0 >= 0 } ?? false
        case "NotTerminating": return !((spec["activeDeadlineSeconds"]?.int).map { $0 >= 0 } ?? false)
        case "BestEffort": return isBestEffort(pod)
        case "NotBestEffort": return !isBestEffort(pod)
        case "CrossNamespacePodAffinity":
            for kind in ["podAffinity", "podAntiAffinity"] {
                for mode in ["requiredDuringSchedulingIgnoredDuringExecution", "preferredDuringSchedulingIgnoredDuringExecution"] {
                    for t in spec[path: ["affinity", kind, mode]]?.array ?? [] {
                        let term = t["podAffinityTerm"] ?? t
                        if !(term["namespaces"]?.array ?? []).isEmpty || term["namespaceSelector"] != nil { return true }
                    }
                }
            }
            return false
        case "PriorityClass":
            let name = spec["priorityClassName"]?.string
            switch op {
            case "In": return name.map(values.contains) ?? false
            case "NotIn": return !(name.map(values.contains) ?? false)
            case "Exists": return name != nil && name != ""
            case "DoesNotExist": return name == nil || name == ""
            default: return false
            }
        default:
            return false
        }
    }

    /// No container (init containers too) asks for or limits any resource: QoS BestEffort.
    public static func isBestEffort(_ pod: JSONValue) -> Bool {
        let containers = (pod[path: ["spec", "containers"]]?.array ?? []) + (pod[path: ["spec", "initContainers"]]?.array ?? [])
        return containers.allSatisfy { resourceList($0, "requests").isEmpty && resourceList($0, "limits").isEmpty }
    }

    /// Whether a pod still counts: one that ended (Succeeded, Failed) does not.
    public static func podCounts(_ pod: JSONValue) -> Bool {
        let phase = pod[path: ["status", "phase"]]?.string
        return phase != "Succeeded" && phase != "Failed"
    }

    // MARK: usage

    /// The resource a quota name counts (`count/deployments.apps` → apps/deployments,
    /// `services.nodeports` → /services, `requests.cpu` → /pods).
    public static func counted(_ key: String) -> (group: String, resource: String) {
        if isCompute(key) { return ("", "pods") }
        if key.hasPrefix("count/") {
            let rest = key.dropFirst(6)
            if let dot = rest.firstIndex(of: ".") { return (String(rest[rest.index(after: dot)...]), String(rest[..<dot])) }
            return ("", String(rest))
        }
        if key == "services.nodeports" || key == "services.loadbalancers" { return ("", "services") }
        return ("", key)
    }

    /// The usage of `keys` under `quota`, from the objects `objects(group, resource)` returns
    /// (the namespace's; nil for a resource that is not served, which then counts nothing).
    public static func usage(_ keys: Set<String>, quota: JSONValue,
                             objects: (_ group: String, _ resource: String) async throws -> [JSONValue]?) async throws -> [String: Double] {
        var used: [String: Double] = [:]
        var cache: [String: [JSONValue]] = [:]
        for key in keys {
            let (group, resource) = counted(key)
            let list: [JSONValue]
            if let cached = cache["\(group)/\(resource)"] {
                list = cached
            } else {
                guard var fetched = try await objects(group, resource) else { continue }
                if group.isEmpty && resource == "pods" { fetched = fetched.filter(podCounts) }
                fetched = fetched.filter { tracks(quota, $0, group: group, resource: resource) }
                cache["\(group)/\(resource)"] = fetched
                list = fetched
            }
            used[key] = list.reduce(0) { $0 + (delta($1, group: group, resource: resource)[key] ?? 0) }
        }
        return used
    }
}
