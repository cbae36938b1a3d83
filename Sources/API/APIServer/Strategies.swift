import Foundation
import KubeAPI

/// The part of a resource's declaration that is code: how its objects are defaulted and
/// validated beyond their schema (upstream's registry strategies), how `kubectl get` prints them,
/// and whether spec changes bump `metadata.generation`. Each served resource declares one
/// (`Resources.all`); the handlers, admission and tables ask it instead of switching on kinds.
public protocol ResourceStrategy: Sendable {
    /// Fills what upstream's defaulting fills.
    func defaults(_ o: inout JSONValue)
    /// Field errors beyond the generic ones (the name, labels); throws for objects that do not
    /// decode at all (400, as upstream's decoder answers).
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError]
    /// The columns of `kubectl get`.
    var columns: [Tables.Column] { get }
    /// Whether a change of the spec bumps `metadata.generation`.
    var tracksGeneration: Bool { get }
    /// How the name is checked (most kinds: a DNS-1123 subdomain).
    var names: NameRule { get }
    /// The resource whose storage this one shares, as (group, resource), when its objects are
    /// another version's in the store (events.k8s.io/v1 Events are core Events there); nil when
    /// it has its own.
    var storedAs: (group: String, resource: String)? { get }
    /// An object as stored, turned into this resource's form (read), and back (write).
    func fromStorage(_ o: inout JSONValue)
    func toStorage(_ o: inout JSONValue)
    /// The verbs served when not all of them are (the reviews: create only).
    var verbs: [String]? { get }
}

public enum NameRule: Sendable {
    case subdomain, label, dns1035, any
}

extension ResourceStrategy {
    public func defaults(_ o: inout JSONValue) {}
    public func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] { [] }
    public var columns: [Tables.Column] { [Tables.nameColumn, Tables.ageColumn] }
    public var tracksGeneration: Bool { false }
    public var names: NameRule { .subdomain }
    public var storedAs: (group: String, resource: String)? { nil }
    public func fromStorage(_ o: inout JSONValue) {}
    public func toStorage(_ o: inout JSONValue) {}
    public var verbs: [String]? { nil }
}

/// A kind with nothing of its own beyond its schema.
public struct GenericStrategy: ResourceStrategy {
    public init() {}
}

struct NamespaceStrategy: ResourceStrategy {
    var names: NameRule { .label }
    func defaults(_ o: inout JSONValue) {
        o[path: ["status", "phase"]] = o[path: ["status", "phase"]] ?? "Active"
        if o[path: ["spec", "finalizers"]] == nil { o[path: ["spec", "finalizers"]] = ["kubernetes"] }
        var labels = o[path: ["metadata", "labels"]]?.object ?? [:]
        if let n = o[path: ["metadata", "name"]]?.string { labels["kubernetes.io/metadata.name"] = .string(n) }
        o[path: ["metadata", "labels"]] = .object(labels)
    }
    var columns: [Tables.Column] { [Tables.nameColumn, Tables.Column(name: "Status") { Tables.str($0[path: ["status", "phase"]]) }, Tables.ageColumn] }
}

struct ServiceStrategy: ResourceStrategy {
    /// A Service's name is a DNS-1035 label: checked with the rest of it, by the proxy's own validation.
    var names: NameRule { .any }
    func defaults(_ o: inout JSONValue) {
        var spec = o["spec"]?.object ?? [:]
        let type = spec["type"]?.string ?? "ClusterIP"
        spec["type"] = .string(type)
        if spec["sessionAffinity"] == nil { spec["sessionAffinity"] = "None" }
        if type == "NodePort" || type == "LoadBalancer", spec["externalTrafficPolicy"] == nil { spec["externalTrafficPolicy"] = "Cluster" }
        if type != "ExternalName", spec["internalTrafficPolicy"] == nil { spec["internalTrafficPolicy"] = "Cluster" }
        var ports = spec["ports"]?.array ?? []
        for i in ports.indices {
            if ports[i]["protocol"] == nil { ports[i]["protocol"] = "TCP" }
            if ports[i]["targetPort"] == nil, let p = ports[i]["port"] { ports[i]["targetPort"] = p }
        }
        if !ports.isEmpty { spec["ports"] = .array(ports) }
        o["spec"] = .object(spec)
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        do {
            let svc = try JSONDecoder().decode(Service.self, from: o.serialized())
            return KubeAPI.Validation.validate(svc)
        } catch {
            throw APIError.badRequest("Service in version \"v1\" cannot be handled as a Service: \(JSONValue.describe(error))")
        }
    }
    var columns: [Tables.Column] {
        return [Tables.nameColumn,
            Tables.Column(name: "Type") { Tables.str($0[path: ["spec", "type"]]) },
            Tables.Column(name: "Cluster-IP") { Tables.str($0[path: ["spec", "clusterIP"]]) },
            Tables.Column(name: "External-IP") { o in
                let lb = (o[path: ["status", "loadBalancer", "ingress"]]?.array ?? []).compactMap { $0["ip"]?.string ?? $0["hostname"]?.string }
                let ext = (o[path: ["spec", "externalIPs"]]?.array ?? []).compactMap(\.string)
                let all = lb + ext
                if !all.isEmpty { return .string(all.joined(separator: ",")) }
                return o[path: ["spec", "type"]]?.string == "LoadBalancer" ? "<pending>" : "<none>"
            },
            Tables.Column(name: "Port(s)") { o in
                Tables.none((o[path: ["spec", "ports"]]?.array ?? []).map { p in
                    let port = p["port"]?.int ?? 0, proto = p["protocol"]?.string ?? "TCP"
                    return p["nodePort"]?.int.map { "\(port):\($0)/\(proto)" } ?? "\(port)/\(proto)"
                }.joined(separator: ","))
            },
            Tables.ageColumn,
            Tables.Column(name: "Selector", priority: 1) { o in
                Tables.none((o[path: ["spec", "selector"]]?.object ?? [:]).compactMapValues(\.string).sorted { $0.key < $1.key }
                    .map { "\($0.key)=\($0.value)" }.joined(separator: ","))
            }]
    }
}

struct EndpointSliceStrategy: ResourceStrategy {
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        do {
            let s = try JSONDecoder().decode(EndpointSlice.self, from: o.serialized())
            return KubeAPI.Validation.validate(s)
        } catch {
            throw APIError.badRequest("EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: \(JSONValue.describe(error))")
        }
    }
    var columns: [Tables.Column] {
        return [Tables.nameColumn, Tables.Column(name: "AddressType") { Tables.str($0["addressType"]) },
            Tables.Column(name: "Ports") { o in Tables.none((o["ports"]?.array ?? []).compactMap { $0["port"]?.int }.map(String.init).joined(separator: ",")) },
            Tables.Column(name: "Endpoints") { o in
                let ips = (o["endpoints"]?.array ?? []).flatMap { $0["addresses"]?.array?.compactMap(\.string) ?? [] }
                return Tables.none(ips.prefix(3).joined(separator: ",") + (ips.count > 3 ? " + \(ips.count - 3) more..." : ""))
            }, Tables.ageColumn]
    }
}

struct PodStrategy: ResourceStrategy {
    func defaults(_ o: inout JSONValue) {
        if o[path: ["status", "phase"]] == nil { o[path: ["status", "phase"]] = "Pending" }
        if var spec = o["spec"] {
            Self.defaultPodSpec(&spec)
            o["spec"] = spec
        }
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let containers = o[path: ["spec", "containers"]]?.array ?? []
        if containers.isEmpty { errs.append(FieldError("spec.containers", "Required value")) }
        for (i, c) in containers.enumerated() {
            if (c["name"]?.string ?? "").isEmpty { errs.append(FieldError("spec.containers[\(i)].name", "Required value")) }
            if (c["image"]?.string ?? "").isEmpty { errs.append(FieldError("spec.containers[\(i)].image", "Required value")) }
        }
        return errs
    }
    var columns: [Tables.Column] {
        return [Tables.nameColumn,
            Tables.Column(name: "Ready") { o in
                let total = o[path: ["spec", "containers"]]?.array?.count ?? 0
                let ready = (o[path: ["status", "containerStatuses"]]?.array ?? []).filter { $0["ready"]?.bool == true }.count
                return .string("\(ready)/\(total)")
            },
            Tables.Column(name: "Status") { Tables.str($0[path: ["status", "phase"]]) },
            Tables.Column(name: "Restarts", type: "string") { o in
                .string(String((o[path: ["status", "containerStatuses"]]?.array ?? []).reduce(Int64(0)) { $0 + ($1["restartCount"]?.int ?? 0) }))
            },
            Tables.ageColumn,
            Tables.Column(name: "IP", priority: 1) { Tables.none($0[path: ["status", "podIP"]]?.string ?? "") },
            Tables.Column(name: "Node", priority: 1) { Tables.none($0[path: ["spec", "nodeName"]]?.string ?? "") }]
    }

    /// Upstream's pod spec defaults (SetDefaults_PodSpec, _Container, _ContainerPort), for pods
    /// and the pod templates of workloads alike: what `kubectl describe` shows blank otherwise.
    static func defaultPodSpec(_ spec: inout JSONValue) {
        guard var s = spec.object else { return }
        if s["restartPolicy"] == nil { s["restartPolicy"] = "Always" }
        if s["dnsPolicy"] == nil { s["dnsPolicy"] = "ClusterFirst" }
        if s["terminationGracePeriodSeconds"] == nil { s["terminationGracePeriodSeconds"] = 30 }
        if s["schedulerName"] == nil { s["schedulerName"] = "default-scheduler" }
        if s["securityContext"] == nil { s["securityContext"] = .object([:]) }
        for key in ["initContainers", "containers"] {
            guard var list = s[key]?.array else { continue }
            for i in list.indices {
                guard var c = list[i].object else { continue }
                if c["terminationMessagePath"] == nil { c["terminationMessagePath"] = "/dev/termination-log" }
                if c["terminationMessagePolicy"] == nil { c["terminationMessagePolicy"] = "File" }
                if c["imagePullPolicy"] == nil {
                    // Always for :latest or no tag (and no digest), else IfNotPresent.
                    let image = c["image"]?.string ?? ""
                    let last = image.split(separator: "/").last.map(String.init) ?? image
                    let tag = last.contains("@") ? "digest" : (last.split(separator: ":", maxSplits: 1).dropFirst().first.map(String.init) ?? "latest")
                    c["imagePullPolicy"] = tag == "latest" ? "Always" : "IfNotPresent"
                }
                if var ports = c["ports"]?.array {
                    for j in ports.indices where ports[j]["protocol"] == nil { ports[j]["protocol"] = "TCP" }
                    c["ports"] = .array(ports)
                }
                list[i] = .object(c)
            }
            s[key] = .array(list)
        }
        spec = .object(s)
    }
}

/// Deployments and ReplicaSets: replicas and (for Deployments) the rollout's defaults, the pod
/// template's, the selector matching the template.
struct WorkloadStrategy: ResourceStrategy {
    var deployment: Bool
    var tracksGeneration: Bool { true }
    func defaults(_ o: inout JSONValue) {
        if o[path: ["spec", "replicas"]] == nil { o[path: ["spec", "replicas"]] = 1 }
        if deployment {
            if o[path: ["spec", "revisionHistoryLimit"]] == nil { o[path: ["spec", "revisionHistoryLimit"]] = 10 }
            // As upstream's SetDefaults_Deployment: an empty strategy (what `kubectl create
            // deployment` sends) is RollingUpdate with 25% / 25%.
            var strategy = o[path: ["spec", "strategy"]]?.object ?? [:]
            if (strategy["type"]?.string ?? "").isEmpty { strategy["type"] = "RollingUpdate" }
            if strategy["type"]?.string == "RollingUpdate" {
                var ru = strategy["rollingUpdate"]?.object ?? [:]
                if ru["maxUnavailable"] == nil { ru["maxUnavailable"] = "25%" }
                if ru["maxSurge"] == nil { ru["maxSurge"] = "25%" }
                strategy["rollingUpdate"] = .object(ru)
            }
            o[path: ["spec", "strategy"]] = .object(strategy)
            if o[path: ["spec", "progressDeadlineSeconds"]] == nil { o[path: ["spec", "progressDeadlineSeconds"]] = 600 }
        }
        if var spec = o[path: ["spec", "template", "spec"]] {
            PodStrategy.defaultPodSpec(&spec)
            o[path: ["spec", "template", "spec"]] = spec
        }
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        checkSelector(o, selector: ["spec", "selector"], labels: ["spec", "template", "metadata", "labels"], errs: &errs)
        checkReplicas(o, errs: &errs)
        return errs
    }
    var columns: [Tables.Column] {
        if deployment {
            return [Tables.nameColumn,
                    Tables.Column(name: "Ready") { o in .string("\(o[path: ["status", "readyReplicas"]]?.int ?? 0)/\(o[path: ["spec", "replicas"]]?.int ?? 0)") },
                    Tables.Column(name: "Up-to-date", type: "integer") { .int($0[path: ["status", "updatedReplicas"]]?.int ?? 0) },
                    Tables.Column(name: "Available", type: "integer") { .int($0[path: ["status", "availableReplicas"]]?.int ?? 0) },
                    Tables.ageColumn]
        }
        return [Tables.nameColumn,
                Tables.Column(name: "Desired", type: "integer") { .int($0[path: ["spec", "replicas"]]?.int ?? 0) },
                Tables.Column(name: "Current", type: "integer") { .int($0[path: ["status", "replicas"]]?.int ?? 0) },
                Tables.Column(name: "Ready", type: "integer") { .int($0[path: ["status", "readyReplicas"]]?.int ?? 0) },
                Tables.ageColumn]
    }
}

struct SecretStrategy: ResourceStrategy {
    func defaults(_ o: inout JSONValue) {
        if (o["type"]?.string ?? "").isEmpty { o["type"] = "Opaque" }
        // `stringData` is merged into `data` on write (base64, overwriting), and never stored.
        if let strings = o["stringData"]?.object {
            var data = o["data"]?.object ?? [:]
            for (k, v) in strings { data[k] = .string(Data((v.string ?? "").utf8).base64EncodedString()) }
            o["data"] = .object(data)
            o["stringData"] = nil
        }
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.Column(name: "Type") { Tables.str($0["type"]) }, Tables.Column(name: "Data", type: "integer") { Tables.count($0["data"]) },
         Tables.ageColumn]
    }
}

struct ConfigMapStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.Column(name: "Data", type: "integer") { o in
            .int(Int64((o["data"]?.object?.count ?? 0) + (o["binaryData"]?.object?.count ?? 0)))
        }, Tables.ageColumn]
    }
}

struct ServiceAccountStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.Column(name: "Secrets", type: "integer") { Tables.count($0["secrets"]) }, Tables.ageColumn]
    }
}

struct NodeStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        return [Tables.nameColumn, Tables.Column(name: "Status") { o in
            let ready = (o[path: ["status", "conditions"]]?.array ?? []).first { $0["type"]?.string == "Ready" }?["status"]?.string
            return .string(ready == "True" ? "Ready" : ready == nil ? "Unknown" : "NotReady")
        }, Tables.Column(name: "Roles") { _ in "<none>" }, Tables.ageColumn, Tables.Column(name: "Version") { Tables.str($0[path: ["status", "nodeInfo", "kubeletVersion"]]) }]
    }
}

struct EndpointsStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        return [Tables.nameColumn, Tables.Column(name: "Endpoints") { o in
            var out: [String] = []
            for s in o["subsets"]?.array ?? [] {
            let ports = (s["ports"]?.array ?? []).compactMap { $0["port"]?.int }
            for a in s["addresses"]?.array ?? [] {
                let ip = a["ip"]?.string ?? ""
                out += ports.isEmpty ? [ip] : ports.map { "\(ip):\($0)" }
            }
            }
            return Tables.none(out.prefix(3).joined(separator: ",") + (out.count > 3 ? " + \(out.count - 3) more..." : ""))
        }, Tables.ageColumn]
    }
}

struct EventStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        return [Tables.Column(name: "Last Seen") { o in
                let t = o["lastTimestamp"]?.string ?? o["deprecatedLastTimestamp"]?.string ?? o[path: ["series", "lastObservedTime"]]?.string
                    ?? o["eventTime"]?.string ?? o[path: ["metadata", "creationTimestamp"]]?.string
                return Tables.age(["metadata": ["creationTimestamp": t.map { JSONValue.string($0) } ?? .null]])
            },
            Tables.Column(name: "Type") { Tables.str($0["type"]) }, Tables.Column(name: "Reason") { Tables.str($0["reason"]) },
            Tables.Column(name: "Object") { o in
                let ref = o["involvedObject"] ?? o["regarding"] ?? [:]
                return .string("\((ref["kind"]?.string ?? "").lowercased())/\(ref["name"]?.string ?? "")")
            },
            Tables.Column(name: "Message") { Tables.str($0["message"] ?? $0["note"]) }]
    }
}

/// CustomResourceDefinitions: defaulted and checked as apiextensions-apiserver does
/// (`CustomResources`); the handler establishes them and serves what they declare.
struct DefinitionStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    func defaults(_ o: inout JSONValue) { CustomResources.defaults(&o) }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] { CustomResources.validate(o) }
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.Column(name: "Created At", type: "date") { $0[path: ["metadata", "creationTimestamp"]] ?? .null }]
    }
}

/// A custom resource: its version's schema defaults and checks it (in the handler, which has
/// the schemas); its definition's printer columns print it.
struct CustomStrategy: ResourceStrategy {
    var info: CustomInfo
    var tracksGeneration: Bool { true }
    var columns: [Tables.Column] { CustomResources.columns(info) }
}
