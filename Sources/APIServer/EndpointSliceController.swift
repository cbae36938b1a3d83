import Foundation
import KubeAPI
import KubeStore
import Logging

/// The EndpointSlice controller (and the legacy Endpoints one), in the server's process: for each
/// Service with a selector, slices of at most 100 endpoints from the matching Pods' IPs,
/// readiness and nodes, labelled as upstream labels them; rewritten as Pods come, go or change
/// readiness. Writes go through the API handler, so they are validated and watched like any other.
public actor EndpointSliceController {
    let handler: APIHandler
    let logger: Logger
    public static let managedBy = "endpointslice-controller.k8s.io"
    public static let maxEndpoints = 100
    static let triggerAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"
    private var dirty = Set<String>()
    private var running = false

    public init(handler: APIHandler, logger: Logger = Logger(label: "switchyard.endpointslices")) {
        self.handler = handler
        self.logger = logger
    }

    static let services = Resources.find(group: "", version: "v1", resource: "services")!
    static let pods = Resources.find(group: "", version: "v1", resource: "pods")!
    static let slices = Resources.find(group: "discovery.k8s.io", version: "v1", resource: "endpointslices")!
    static let endpoints = Resources.find(group: "", version: "v1", resource: "endpoints")!

    /// Follows Services and Pods until cancelled: every namespace once, then those that change.
    public func run() async throws {
        let store = handler.store
        let from = try await store.currentRevision()
        let svcEvents = try await store.watch(prefix: Self.services.storePrefix, after: from)
        let podEvents = try await store.watch(prefix: Self.pods.storePrefix, after: from)
        let nsPage = try await store.list(prefix: Resources.all[0].storePrefix, after: nil, limit: 0, revision: nil)
        for kv in nsPage.items { dirty.insert(String(kv.key.split(separator: "/").last ?? "")) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for events in [svcEvents, podEvents] {
                group.addTask {
                    for try await e in events {
                        // /registry/core/<resource>/<namespace>/<name>
                        let parts = e.kv.key.split(separator: "/")
                        if parts.count >= 5 { await self.markDirty(String(parts[3])) }
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    await self.drain()
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    func markDirty(_ ns: String) { dirty.insert(ns) }

    /// Reconciles every namespace marked since the last pass.
    public func drain() async {
        let work = dirty
        dirty.removeAll()
        for ns in work.sorted() {
            do {
                try await reconcile(namespace: ns)
            } catch {
                logger.warning("endpoint slices in \(ns): \(error)")
                dirty.insert(ns)   // tried again on the next pass
            }
        }
    }

    func list(_ r: ResourceInfo, _ ns: String, labelSelector: String? = nil) async throws -> [JSONValue] {
        var q: [String: String] = [:]
        if let labelSelector { q["labelSelector"] = labelSelector }
        let res = await handler.handle(APIRequest(method: "GET", path: Self.path(r, ns), query: q))
        guard res.code == 200, let items = res.json?["items"]?.array else { throw APIError.internal("listing \(r.resource) in \(ns): \(res.json?.text() ?? "")") }
        return items
    }

    static func path(_ r: ResourceInfo, _ ns: String, _ name: String? = nil) -> String {
        (r.group.isEmpty ? "/api/v1" : "/apis/\(r.groupVersion)") + "/namespaces/\(ns)/\(r.resource)" + (name.map { "/\($0)" } ?? "")
    }

    public func reconcile(namespace ns: String) async throws {
        let services = try await list(Self.services, ns)
        let pods = try await list(Self.pods, ns)
        let existing = try await list(Self.slices, ns, labelSelector: "endpointslice.kubernetes.io/managed-by=\(Self.managedBy)")
        var keep = Set<String>()
        for svc in services {
            guard let name = svc[path: ["metadata", "name"]]?.string, let selector = svc[path: ["spec", "selector"]]?.object,
                  !selector.isEmpty, svc[path: ["spec", "type"]]?.string != "ExternalName" else { continue }
            keep.insert(name)
            let labels = selector.compactMapValues(\.string)
            let chosen = pods.filter { p in
                let l = APIHandler.labels(p)
                let phase = p[path: ["status", "phase"]]?.string
                return labels.allSatisfy { l[$0.key] == $0.value } && phase != "Succeeded" && phase != "Failed"
                    && !(p[path: ["status", "podIP"]]?.string ?? "").isEmpty
            }
            try await sync(svc, name: name, ns: ns, pods: chosen, existing: existing.filter { Self.owner($0) == name })
        }
        // Endpoints objects this controller made for Services that are gone.
        for e in try await list(Self.endpoints, ns) where e[path: ["metadata", "annotations", Self.triggerAnnotation]] != nil {
            if let n = e[path: ["metadata", "name"]]?.string, !keep.contains(n) {
                _ = await handler.handle(APIRequest(method: "DELETE", path: Self.path(Self.endpoints, ns, n)))
            }
        }
        // Slices of Services that are gone (or lost their selector).
        for s in existing where !keep.contains(Self.owner(s) ?? "") {
            if let n = s[path: ["metadata", "name"]]?.string {
                _ = await handler.handle(APIRequest(method: "DELETE", path: Self.path(Self.slices, ns, n)))
            }
        }
    }

    static func owner(_ slice: JSONValue) -> String? { slice[path: ["metadata", "labels", EndpointSlice.serviceNameLabel]]?.string }

    static func ready(_ pod: JSONValue) -> Bool {
        (pod[path: ["status", "conditions"]]?.array ?? []).contains { $0["type"] == "Ready" && $0["status"] == "True" }
    }

    /// A Service port's target port on one Pod (a named one is looked up in its containers).
    static func targetPort(_ port: JSONValue, _ pod: JSONValue) -> Int64? {
        switch port["targetPort"] ?? port["port"] {
        case .int(let p)?: return p
        case .string(let name)?:
            if let n = Int64(name) { return n }
            for c in pod[path: ["spec", "containers"]]?.array ?? [] {
                for p in c["ports"]?.array ?? [] where p["name"]?.string == name
                    && (p["protocol"]?.string ?? "TCP") == (port["protocol"]?.string ?? "TCP") {
                    return p["containerPort"]?.int
                }
            }
            return nil
        default: return nil
        }
    }

    func sync(_ svc: JSONValue, name: String, ns: String, pods: [JSONValue], existing: [JSONValue]) async throws {
        let svcPorts = svc[path: ["spec", "ports"]]?.array ?? []
        // Pods grouped by the ports they resolve to (a named target port may differ per Pod).
        var groups: [[JSONValue]: [JSONValue]] = [:]
        for p in pods {
            let ports: [JSONValue] = svcPorts.compactMap { sp in
                guard let t = Self.targetPort(sp, p) else { return nil }
                var e: [String: JSONValue] = ["port": .int(t), "protocol": sp["protocol"] ?? "TCP"]
                e["name"] = sp["name"] ?? ""
                return .object(e)
            }
            groups[ports, default: []].append(p)
        }
        if groups.isEmpty { groups[[]] = [] }   // one slice without endpoints, as upstream keeps
        var desired: [JSONValue] = []
        for (ports, members) in groups.sorted(by: { $0.key.description < $1.key.description }) {
            let eps: [JSONValue] = members.sorted { ($0[path: ["status", "podIP"]]?.string ?? "") < ($1[path: ["status", "podIP"]]?.string ?? "") }.map { p in
                let terminating = p[path: ["metadata", "deletionTimestamp"]] != nil
                let ready = Self.ready(p) && !terminating
                var e: [String: JSONValue] = [
                    "addresses": [p[path: ["status", "podIP"]] ?? ""],
                    "conditions": ["ready": .bool(ready), "serving": .bool(Self.ready(p)), "terminating": .bool(terminating)],
                    "targetRef": ["kind": "Pod", "namespace": .string(ns), "name": p[path: ["metadata", "name"]] ?? "",
                                  "uid": p[path: ["metadata", "uid"]] ?? ""],
                ]
                if let node = p[path: ["spec", "nodeName"]]?.string, !node.isEmpty { e["nodeName"] = .string(node) }
                return .object(e)
            }
            var chunk = 0
            repeat {
                let part = Array(eps.dropFirst(chunk).prefix(Self.maxEndpoints))
                desired.append(["addressType": "IPv4", "endpoints": .array(part), "ports": .array(ports)])
                chunk += Self.maxEndpoints
            } while chunk < eps.count
        }
        let labels: JSONValue = [EndpointSlice.serviceNameLabel: .string(name), "endpointslice.kubernetes.io/managed-by": .string(Self.managedBy)]
        let ownerRef: JSONValue = [["apiVersion": "v1", "kind": "Service", "name": .string(name), "uid": svc[path: ["metadata", "uid"]] ?? "",
                                    "controller": true, "blockOwnerDeletion": true]]
        // Existing slices are reused in order; what is left over goes.
        let current = existing.sorted { ($0[path: ["metadata", "name"]]?.string ?? "") < ($1[path: ["metadata", "name"]]?.string ?? "") }
        for (i, want) in desired.enumerated() {
            if i < current.count {
                var o = current[i]
                if o["endpoints"] ?? [] == want["endpoints"] && o["ports"] ?? [] == want["ports"] { continue }
                o["endpoints"] = want["endpoints"]
                o["ports"] = want["ports"]
                o["addressType"] = "IPv4"
                let r = await handler.handle(APIRequest(method: "PUT", path: Self.path(Self.slices, ns, o[path: ["metadata", "name"]]?.string ?? ""),
                                                        body: o.serialized()))
                if r.code >= 300 { throw APIError.internal("updating a slice of \(ns)/\(name): \(r.json?.text() ?? "")") }
            } else {
                var o = want
                o["apiVersion"] = "discovery.k8s.io/v1"
                o["kind"] = "EndpointSlice"
                o["metadata"] = ["generateName": .string("\(name)-"), "namespace": .string(ns), "labels": labels, "ownerReferences": ownerRef]
                let r = await handler.handle(APIRequest(method: "POST", path: Self.path(Self.slices, ns), body: o.serialized()))
                if r.code >= 300 { throw APIError.internal("creating a slice of \(ns)/\(name): \(r.json?.text() ?? "")") }
            }
        }
        for extra in current.dropFirst(desired.count) {
            _ = await handler.handle(APIRequest(method: "DELETE", path: Self.path(Self.slices, ns, extra[path: ["metadata", "name"]]?.string ?? "")))
        }
        try await syncEndpoints(name: name, ns: ns, pods: pods, svcPorts: svcPorts)
    }

    /// The legacy Endpoints object: ready addresses, not-ready ones, and the ports.
    func syncEndpoints(name: String, ns: String, pods: [JSONValue], svcPorts: [JSONValue]) async throws {
        func address(_ p: JSONValue) -> JSONValue {
            var a: [String: JSONValue] = ["ip": p[path: ["status", "podIP"]] ?? "",
                                          "targetRef": ["kind": "Pod", "namespace": .string(ns), "name": p[path: ["metadata", "name"]] ?? "",
                                                        "uid": p[path: ["metadata", "uid"]] ?? ""]]
            if let node = p[path: ["spec", "nodeName"]]?.string, !node.isEmpty { a["nodeName"] = .string(node) }
            return .object(a)
        }
        let ready = pods.filter(Self.ready).map(address), notReady = pods.filter { !Self.ready($0) }.map(address)
        let ports: [JSONValue] = svcPorts.compactMap { sp in
            guard let p = pods.first, let t = Self.targetPort(sp, p) else { return nil }
            return ["name": sp["name"] ?? "", "port": .int(t), "protocol": sp["protocol"] ?? "TCP"]
        }
        var subset: [String: JSONValue] = ["ports": .array(ports)]
        if !ready.isEmpty { subset["addresses"] = .array(ready) }
        if !notReady.isEmpty { subset["notReadyAddresses"] = .array(notReady) }
        let subsets: JSONValue = pods.isEmpty ? [] : [.object(subset)]
        let path = Self.path(Self.endpoints, ns, name)
        let cur = await handler.handle(APIRequest(method: "GET", path: path))
        if cur.code == 200, var o = cur.json {
            if o["subsets"] ?? [] == subsets { return }
            o["subsets"] = subsets
            o[path: ["metadata", "annotations", Self.triggerAnnotation]] = .string(APIHandler.rfc3339())
            _ = await handler.handle(APIRequest(method: "PUT", path: path, body: o.serialized()))
        } else {
            let o: JSONValue = ["apiVersion": "v1", "kind": "Endpoints", "subsets": subsets,
                                "metadata": ["name": .string(name), "namespace": .string(ns),
                                             "annotations": [Self.triggerAnnotation: .string(APIHandler.rfc3339())]]]
            _ = await handler.handle(APIRequest(method: "POST", path: Self.path(Self.endpoints, ns), body: o.serialized()))
        }
    }
}
