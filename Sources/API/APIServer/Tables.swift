import Foundation
import KubeAPI

/// `kubectl get`'s tables (meta.k8s.io/v1 Table), with the columns kube-apiserver prints for the
/// served kinds.
public enum Tables {
    static func wanted(_ accept: String?) -> Bool { accept?.contains("as=Table") == true }

    /// One column: its definition, and how a row's cell is made from an object.
    public struct Column: Sendable {
        var name: String
        var type = "string"
        var format = ""
        var priority = 0
        var description = ""
        var cell: @Sendable (JSONValue) -> JSONValue
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

    static func columns(_ r: ResourceInfo) -> [Column] { r.strategy.columns }

    public static let nameColumn = Column(name: "Name", format: "name") { $0[path: ["metadata", "name"]] ?? "" }
    public static let ageColumn = Column(name: "Age") { Tables.age($0) }
}
