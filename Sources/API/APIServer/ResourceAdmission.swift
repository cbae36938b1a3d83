import APIAccess
import Foundation
import KubeAPI

/// The LimitRanger and ResourceQuota admission plugins, on by default as upstream's (off with
/// `--disable-admission-plugins`).
///
/// LimitRanger: a new pod's containers get the `default` limits and `defaultRequest` requests of
/// the namespace's LimitRanges (type Container; a missing default is the `max`, a missing default
/// request the default or the `min`, as the LimitRange's defaulting does), recorded in the
/// `kubernetes.io/limit-ranger` annotation; then every container, and the pod as a whole for type
/// Pod, must be within `min`, `max` and `maxLimitRequestRatio` — refused with upstream's words
/// otherwise (`maximum cpu usage per Container is 1, but limit is 2`).
///
/// ResourceQuota: a new object that the namespace's ResourceQuotas count (`pods`, `services`,
/// `services.nodeports`, `services.loadbalancers`, `configmaps`, `secrets`,
/// `replicationcontrollers`, `resourcequotas`, `persistentvolumeclaims`, `count/RESOURCE[.GROUP]`,
/// and for pods `requests.cpu`/`cpu`, `requests.memory`/`memory`, `limits.cpu`, `limits.memory`)
/// is refused when it would take the usage over `spec.hard` (`exceeded quota: NAME, requested:
/// pods=1, used: pods=2, limited: pods=2`), or when a quota on a compute resource meets a pod that
/// does not say how much of it it wants (`failed quota: NAME: must specify requests.cpu for: web`).
/// The usage is counted from the stored objects at each admission (terminal pods left out) and
/// written into the quota's `status` (`hard`, `used`) when the object is admitted.
extension APIHandler {
    /// Every stored value under `prefix`, now.
    func currentValues(prefix: String) async throws -> [JSONValue] {
        try await storedValues(prefix: prefix, revision: nil).compactMap { try? JSONValue.parse($0.value) }
    }


    // MARK: LimitRanger

    func admitLimitRanges(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) async throws {
        guard admissionPlugins.contains("LimitRanger"), r.group.isEmpty, r.resource == "pods", subresource == nil, old == nil,
              let ns = o[path: ["metadata", "namespace"]]?.string, let info = registry.find(group: "", version: "v1", resource: "limitranges") else { return }
        let ranges = try await currentValues(prefix: info.storePrefix + ns + "/")
        guard !ranges.isEmpty else { return }
        // The LimitRange's own defaulting, for items stored without it.
        var items: [JSONValue] = []
        for range in ranges.sorted(by: { $0.name < $1.name }) {
            for var item in range[path: ["spec", "limits"]]?.array ?? [] {
                if item["type"]?.string == "Container" {
                    var d = item["default"]?.object ?? [:], dr = item["defaultRequest"]?.object ?? [:]
                    for (k, v) in item["max"]?.object ?? [:] where d[k] == nil { d[k] = v }
                    for (k, v) in d where dr[k] == nil { dr[k] = v }
                    for (k, v) in item["min"]?.object ?? [:] where dr[k] == nil { dr[k] = v }
                    item["default"] = .object(d)
                    item["defaultRequest"] = .object(dr)
                }
                items.append(item)
            }
        }
        // Defaults, container by container (upstream: init containers, then containers).
        var notes: [String] = []
        for (field, type) in [("initContainers", "init container"), ("containers", "container")] {
            guard var list = o[path: ["spec", field]]?.array else { continue }
            for i in list.indices {
                var setRequests = Set<String>(), setLimits = Set<String>()
                for item in items where item["type"]?.string == "Container" {
                    for (k, v) in item["default"]?.object ?? [:] where list[i][path: ["resources", "limits", k]] == nil {
                        list[i][path: ["resources", "limits", k]] = v
                        setLimits.insert(k)
                    }
                    for (k, v) in item["defaultRequest"]?.object ?? [:] where list[i][path: ["resources", "requests", k]] == nil {
                        list[i][path: ["resources", "requests", k]] = v
                        setRequests.insert(k)
                    }
                }
                let name = list[i]["name"]?.string ?? ""
                if !setRequests.isEmpty { notes.append(setRequests.sorted().joined(separator: ", ") + " request for \(type) \(name)") }
                if !setLimits.isEmpty { notes.append(setLimits.sorted().joined(separator: ", ") + " limit for \(type) \(name)") }
            }
            o[path: ["spec", field]] = .array(list)
        }
        if !notes.isEmpty { o[path: ["metadata", "annotations", "kubernetes.io/limit-ranger"]] = .string("LimitRanger plugin set: " + notes.joined(separator: "; ")) }
        // Validation.
        var errors: [String] = []
        let containers = (o[path: ["spec", "initContainers"]]?.array ?? []) + (o[path: ["spec", "containers"]]?.array ?? [])
        for item in items {
            switch item["type"]?.string {
            case "Container":
                for c in containers {
                    errors += Self.limitErrors(item, kind: "Container", requests: QuotaAccounting.resourceList(c, "requests"), limits: QuotaAccounting.resourceList(c, "limits"))
                }
            case "Pod":
                var requests: [String: Double] = [:], limits: [String: Double] = [:]
                for c in o[path: ["spec", "containers"]]?.array ?? [] {
                    for (k, v) in QuotaAccounting.resourceList(c, "requests") { requests[k, default: 0] += Quantity.parse(v) ?? 0 }
                    for (k, v) in QuotaAccounting.resourceList(c, "limits") { limits[k, default: 0] += Quantity.parse(v) ?? 0 }
                }
                errors += Self.limitErrors(item, kind: "Pod", requests: requests.mapValues { QuotaAccounting.format($0, for: "") }, limits: limits.mapValues { QuotaAccounting.format($0, for: "") })
            default:
                break
            }
        }
        if !errors.isEmpty {
            let name = o[path: ["metadata", "name"]]?.string ?? ""
            throw APIError(code: 403, reason: "Forbidden", message: "pods \"\(name)\" is forbidden: \(errors.count == 1 ? errors[0] : "[" + errors.joined(separator: ", ") + "]")",
                           details: APIError.details(r, name))
        }
    }

    /// One LimitRange item's `min`, `max` and `maxLimitRequestRatio` over what a container or pod asks for.
    static func limitErrors(_ item: JSONValue, kind: String, requests: [String: String], limits: [String: String]) -> [String] {
        var errors: [String] = []
        for (k, v) in (item["min"]?.object ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let min = Quantity.parse(v), let text = v.string ?? v.int.map(String.init) else { continue }
            if let req = requests[k] {
                if let q = Quantity.parse(req), q < min { errors.append("minimum \(k) usage per \(kind) is \(text), but request is \(req)") }
            } else {
                errors.append("minimum \(k) usage per \(kind) is \(text).  No request is specified")
            }
            if let lim = limits[k], let q = Quantity.parse(lim), q < min { errors.append("minimum \(k) usage per \(kind) is \(text), but limit is \(lim)") }
        }
        for (k, v) in (item["max"]?.object ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let max = Quantity.parse(v), let text = v.string ?? v.int.map(String.init) else { continue }
            if let lim = limits[k] {
                if let q = Quantity.parse(lim), q > max { errors.append("maximum \(k) usage per \(kind) is \(text), but limit is \(lim)") }
            } else {
                errors.append("maximum \(k) usage per \(kind) is \(text).  No limit is specified")
            }
            if let req = requests[k], let q = Quantity.parse(req), q > max { errors.append("maximum \(k) usage per \(kind) is \(text), but request is \(req)") }
        }
        for (k, v) in (item["maxLimitRequestRatio"]?.object ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let ratio = Quantity.parse(v), let text = v.string ?? v.int.map(String.init), let lim = limits[k].flatMap(Quantity.parse) else { continue }
            guard let req = requests[k].flatMap(Quantity.parse), req > 0 else {
                errors.append("\(k) max limit to request ratio per \(kind) is \(text), but no request is specified or request is 0")
                continue
            }
            if lim / req > ratio { errors.append(String(format: "%@ max limit to request ratio per %@ is %@, but provided ratio is %f", k, kind, text, lim / req)) }
        }
        return errors
    }


    // MARK: ResourceQuota

    func admitResourceQuota(_ o: JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?, dryRun: Bool) async throws {
        guard admissionPlugins.contains("ResourceQuota"), old == nil, subresource == nil, r.namespaced, !(r.strategy is ReviewStrategy),
              let ns = o[path: ["metadata", "namespace"]]?.string, let quotaInfo = registry.find(group: "", version: "v1", resource: "resourcequotas") else { return }
        let quotas = try await currentValues(prefix: quotaInfo.storePrefix + ns + "/")
        guard !quotas.isEmpty else { return }
        let delta = QuotaAccounting.delta(o, group: r.group, resource: r.resource)
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        let isPod = r.group.isEmpty && r.resource == "pods"
        var admitted: [(quota: JSONValue, used: [String: Double])] = []
        for quota in quotas.sorted(by: { $0.name < $1.name }) where QuotaAccounting.tracks(quota, o, group: r.group, resource: r.resource) {
            let hard = (quota[path: ["spec", "hard"]]?.object ?? [:]).compactMapValues { Quantity.parse($0) }
            let watched = hard.keys.filter { delta[$0] != nil || (isPod && QuotaAccounting.isCompute($0)) }
            guard !watched.isEmpty else { continue }
            // A pod must say how much it wants of each compute resource a quota limits.
            if isPod {
                var missing: [String] = []
                for key in watched.filter(QuotaAccounting.isCompute).sorted() {
                    let (kind, res) = key.hasPrefix("limits.") ? ("limits", String(key.dropFirst(7))) : ("requests", key.hasPrefix("requests.") ? String(key.dropFirst(9)) : key)
                    let lacking = (o[path: ["spec", "containers"]]?.array ?? []).filter { $0[path: ["resources", kind, res]] == nil }.compactMap { $0["name"]?.string }
                    if !lacking.isEmpty { missing.append("\(key) for: \(lacking.joined(separator: ","))") }
                }
                if !missing.isEmpty {
                    throw APIError(code: 403, reason: "Forbidden", message: "pods \"\(name)\" is forbidden: failed quota: \(quota.name): must specify \(missing.joined(separator: "; "))",
                                   details: APIError.details(r, name))
                }
            }
            let used = try await quotaUsage(Set(watched), quota: quota, namespace: ns)
            let exceeded = watched.filter { (used[$0] ?? 0) + (delta[$0] ?? 0) > hard[$0]! + 1e-9 }.sorted()
            if !exceeded.isEmpty {
                func list(_ f: (String) -> Double) -> String { exceeded.map { "\($0)=\(QuotaAccounting.format(f($0), for: $0))" }.joined(separator: ",") }
                throw APIError(code: 403, reason: "Forbidden",
                               message: "\(APIError.resourceLabel(r)) \"\(name)\" is forbidden: exceeded quota: \(quota.name), requested: \(list { delta[$0] ?? 0 }), used: \(list { used[$0] ?? 0 }), limited: \(list { hard[$0]! })",
                               details: APIError.details(r, name))
            }
            admitted.append((quota, used))
        }
        guard !dryRun else { return }
        // The quotas' status, with this object counted.
        for (quota, used) in admitted {
            let hardKeys = quota[path: ["spec", "hard"]]?.object ?? [:]
            var status: [String: JSONValue] = [:]
            // What this object does not count towards keeps its last counted value.
            let before = quota[path: ["status", "used"]]?.object ?? [:]
            for (k, _) in hardKeys {
                status[k] = used[k] == nil ? (before[k] ?? "0") : .string(QuotaAccounting.format(used[k]! + (delta[k] ?? 0), for: k))
            }
            await writeQuotaStatus(quotaInfo, namespace: ns, name: quota.name, hard: .object(hardKeys), used: .object(status))
        }
    }

    /// The namespace's usage of `keys` under `quota` (its scopes), counted from the stored objects.
    func quotaUsage(_ keys: Set<String>, quota: JSONValue, namespace ns: String) async throws -> [String: Double] {
        try await QuotaAccounting.usage(keys, quota: quota) { group, resource in
            guard let info = registry.resources.first(where: { $0.group == group && $0.resource == resource && $0.namespaced }) else { return nil }
            return try await currentValues(prefix: info.storePrefix + ns + "/")
        }
    }

    func writeQuotaStatus(_ info: ResourceInfo, namespace: String, name: String, hard: JSONValue, used: JSONValue) async {
        let key = info.key(namespace: namespace, name: name)
        for _ in 0..<3 {
            guard let kv = try? await store.get(key), var q = try? JSONValue.parse(kv.value) else { return }
            q["status"] = ["hard": hard, "used": used]
            if (try? await store.update(key, value: q.serialized(), expected: kv.modRevision)) != nil { return }
        }
    }
}
