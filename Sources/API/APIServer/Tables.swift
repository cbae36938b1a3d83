import Foundation
import KubeAPI

/// `kubectl get`'s tables (meta.k8s.io/v1 Table), with the columns kube-apiserver prints for the
/// served kinds.
enum Tables {
    static func wanted(_ accept: String?) -> Bool { accept?.contains("as=Table") == true }

    struct Column {
        var name: String
        var type = "string"
        var format = ""
        var priority = 0
        var description = ""
        var cell: (JSONValue) -> JSONValue
    }

    static func table(_ objects: [JSONValue], _ r: ResourceInfo, meta: [String: JSONValue], includeObject: String?) -> JSONValue {
        let cols = columns(r)
        let rows: [JSONValue] = objects.map { o in
            var row: [String: JSONValue] = ["cells": .array(cols.map { $0.cell(o) })]
            switch includeObject ?? "Metadata" {
            case "None": break
            case "Object": row["object"] = o
            default: row["object"] = ["kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"] ?? [:]]
            }
            return .object(row)
        }
        return ["kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": .object(meta),
                "columnDefinitions": .array(cols.map { c in
                    ["name": .string(c.name), "type": .string(c.type), "format": .string(c.format), "description": .string(c.description),
                     "priority": .int(Int64(c.priority))]
                }),
                "rows": .array(rows)]
    }

    /// kubectl's `HumanDuration`.
    static func age(_ o: JSONValue, now: Date = Date()) -> JSONValue {
        guard let t = o[path: ["metadata", "creationTimestamp"]]?.string, let d = APIHandler.parseRFC3339(t) else { return "<unknown>" }
        return .string(human(now.timeIntervalSince(d)))
    }

    static func human(_ seconds: Double) -> String {
        let s = Int(max(0, seconds))
        if s < 120 { return "\(s)s" }
        let m = s / 60
        if m < 10 { return s % 60 == 0 ? "\(m)m" : "\(m)m\(s % 60)s" }
        if m < 180 { return "\(m)m" }
        let h = m / 60
        if h < 8 { return m % 60 == 0 ? "\(h)h" : "\(h)h\(m % 60)m" }
        if h < 48 { return "\(h)h" }
        if h < 192 { return h % 24 == 0 ? "\(h / 24)d" : "\(h / 24)d\(h % 24)h" }
        if h < 24 * 365 * 2 { return "\(h / 24)d" }
        let y = h / (24 * 365)
        if y < 8 { return "\(y)y\((h / 24) % 365)d" }
        return "\(y)y"
    }

    static func str(_ v: JSONValue?) -> JSONValue { .string(v?.string ?? "") }
    static func count(_ v: JSONValue?) -> JSONValue { .int(Int64(v?.object?.count ?? v?.array?.count ?? 0)) }
    static func none(_ s: String) -> JSONValue { .string(s.isEmpty ? "<none>" : s) }

    static func columns(_ r: ResourceInfo) -> [Column] {
        if let c = r.custom { return CustomResources.columns(c) }
        let name = Column(name: "Name", format: "name") { $0[path: ["metadata", "name"]] ?? "" }
        let age = Column(name: "Age") { Tables.age($0) }
        switch (r.group, r.resource) {
        case ("", "namespaces"):
            return [name, Column(name: "Status") { str($0[path: ["status", "phase"]]) }, age]
        case ("", "services"):
            return [name,
                    Column(name: "Type") { str($0[path: ["spec", "type"]]) },
                    Column(name: "Cluster-IP") { str($0[path: ["spec", "clusterIP"]]) },
                    Column(name: "External-IP") { o in
                        let lb = (o[path: ["status", "loadBalancer", "ingress"]]?.array ?? []).compactMap { $0["ip"]?.string ?? $0["hostname"]?.string }
                        let ext = (o[path: ["spec", "externalIPs"]]?.array ?? []).compactMap(\.string)
                        let all = lb + ext
                        if !all.isEmpty { return .string(all.joined(separator: ",")) }
                        return o[path: ["spec", "type"]]?.string == "LoadBalancer" ? "<pending>" : "<none>"
                    },
                    Column(name: "Port(s)") { o in
                        none((o[path: ["spec", "ports"]]?.array ?? []).map { p in
                            let port = p["port"]?.int ?? 0, proto = p["protocol"]?.string ?? "TCP"
                            return p["nodePort"]?.int.map { "\(port):\($0)/\(proto)" } ?? "\(port)/\(proto)"
                        }.joined(separator: ","))
                    },
                    age,
                    Column(name: "Selector", priority: 1) { o in
                        none((o[path: ["spec", "selector"]]?.object ?? [:]).compactMapValues(\.string).sorted { $0.key < $1.key }
                            .map { "\($0.key)=\($0.value)" }.joined(separator: ","))
                    }]
        case ("", "pods"):
            return [name,
                    Column(name: "Ready") { o in
                        let total = o[path: ["spec", "containers"]]?.array?.count ?? 0
                        let ready = (o[path: ["status", "containerStatuses"]]?.array ?? []).filter { $0["ready"]?.bool == true }.count
                        return .string("\(ready)/\(total)")
                    },
                    Column(name: "Status") { str($0[path: ["status", "phase"]]) },
                    Column(name: "Restarts", type: "string") { o in
                        .string(String((o[path: ["status", "containerStatuses"]]?.array ?? []).reduce(Int64(0)) { $0 + ($1["restartCount"]?.int ?? 0) }))
                    },
                    age,
                    Column(name: "IP", priority: 1) { none($0[path: ["status", "podIP"]]?.string ?? "") },
                    Column(name: "Node", priority: 1) { none($0[path: ["spec", "nodeName"]]?.string ?? "") }]
        case ("", "configmaps"):
            return [name, Column(name: "Data", type: "integer") { o in
                .int(Int64((o["data"]?.object?.count ?? 0) + (o["binaryData"]?.object?.count ?? 0)))
            }, age]
        case ("", "secrets"):
            return [name, Column(name: "Type") { str($0["type"]) }, Column(name: "Data", type: "integer") { count($0["data"]) }, age]
        case ("", "serviceaccounts"):
            return [name, Column(name: "Secrets", type: "integer") { count($0["secrets"]) }, age]
        case ("", "nodes"):
            return [name, Column(name: "Status") { o in
                let ready = (o[path: ["status", "conditions"]]?.array ?? []).first { $0["type"]?.string == "Ready" }?["status"]?.string
                return .string(ready == "True" ? "Ready" : ready == nil ? "Unknown" : "NotReady")
            }, Column(name: "Roles") { _ in "<none>" }, age, Column(name: "Version") { str($0[path: ["status", "nodeInfo", "kubeletVersion"]]) }]
        case ("", "endpoints"):
            return [name, Column(name: "Endpoints") { o in
                var out: [String] = []
                for s in o["subsets"]?.array ?? [] {
                    let ports = (s["ports"]?.array ?? []).compactMap { $0["port"]?.int }
                    for a in s["addresses"]?.array ?? [] {
                        let ip = a["ip"]?.string ?? ""
                        out += ports.isEmpty ? [ip] : ports.map { "\(ip):\($0)" }
                    }
                }
                return none(out.prefix(3).joined(separator: ",") + (out.count > 3 ? " + \(out.count - 3) more..." : ""))
            }, age]
        case ("discovery.k8s.io", "endpointslices"):
            return [name, Column(name: "AddressType") { str($0["addressType"]) },
                    Column(name: "Ports") { o in none((o["ports"]?.array ?? []).compactMap { $0["port"]?.int }.map(String.init).joined(separator: ",")) },
                    Column(name: "Endpoints") { o in
                        let ips = (o["endpoints"]?.array ?? []).flatMap { $0["addresses"]?.array?.compactMap(\.string) ?? [] }
                        return none(ips.prefix(3).joined(separator: ",") + (ips.count > 3 ? " + \(ips.count - 3) more..." : ""))
                    }, age]
        case ("apps", "deployments"):
            return [name,
                    Column(name: "Ready") { o in .string("\(o[path: ["status", "readyReplicas"]]?.int ?? 0)/\(o[path: ["spec", "replicas"]]?.int ?? 0)") },
                    Column(name: "Up-to-date", type: "integer") { .int($0[path: ["status", "updatedReplicas"]]?.int ?? 0) },
                    Column(name: "Available", type: "integer") { .int($0[path: ["status", "availableReplicas"]]?.int ?? 0) },
                    age]
        case ("apps", "replicasets"):
            return [name,
                    Column(name: "Desired", type: "integer") { .int($0[path: ["spec", "replicas"]]?.int ?? 0) },
                    Column(name: "Current", type: "integer") { .int($0[path: ["status", "replicas"]]?.int ?? 0) },
                    Column(name: "Ready", type: "integer") { .int($0[path: ["status", "readyReplicas"]]?.int ?? 0) },
                    age]
        case ("", "events"):
            return [Column(name: "Last Seen") { o in
                        let t = o["lastTimestamp"]?.string ?? o["eventTime"]?.string ?? o[path: ["metadata", "creationTimestamp"]]?.string
                        return Tables.age(["metadata": ["creationTimestamp": t.map { JSONValue.string($0) } ?? .null]])
                    },
                    Column(name: "Type") { str($0["type"]) }, Column(name: "Reason") { str($0["reason"]) },
                    Column(name: "Object") { o in
                        .string("\((o[path: ["involvedObject", "kind"]]?.string ?? "").lowercased())/\(o[path: ["involvedObject", "name"]]?.string ?? "")")
                    },
                    Column(name: "Message") { str($0["message"]) }]
        default:
            return [name, age]
        }
    }
}
