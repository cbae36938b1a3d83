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
    /// Services to reconcile, as `namespace/name`.
    private var dirty = Set<String>()
    /// Wakes the reconcile loop when `dirty` gains a Service (no polling while nothing changes).
    private var wake: AsyncStream<Void>.Continuation?
    /// Each Service's selector, from the events (so a Pod change finds its Services without a list).
    private var selectors: [String: [String: [String: String]]] = [:]
    /// Services whose slices this controller wrote.
    private var managed = Set<String>()
    /// Per Service, each Pod's trigger time as last seen (its Ready condition's lastTransitionTime),
    /// as upstream's TriggerTimeTracker keeps them, for the slices' last-change-trigger-time.
    private var podTriggers: [String: [String: Date]] = [:]
    /// The slices this controller manages, per Service (`namespace/name`) and by slice name, from
    /// the store's events and its own writes: a reconcile reads them here, not with a list that
    /// would cost as much as there are slices in the namespace.
    private var slicesOf: [String: [String: KnownSlice]] = [:]

    /// A managed slice as last seen, kept serialized: parsed again only when its Service is
    /// reconciled (a JSONValue tree costs several times its text, times 10,000 Services).
    struct KnownSlice {
        var revision: Int64
        var value: Data
    }

    /// A stored value with the resourceVersion the API would show for it (the store keeps the
    /// revision beside the value, not in it).
    static func stamped(_ o: JSONValue, _ revision: Int64) -> JSONValue {
        var o = o
        var meta = o["metadata"] ?? [:]
        meta["resourceVersion"] = .string(String(revision))
        o["metadata"] = meta
        return o
    }

    static func revision(_ o: JSONValue) -> Int64 { Int64(o[path: ["metadata", "resourceVersion"]]?.string ?? "") ?? 0 }

    /// Notes a managed slice as it now is (an older version than the one known is ignored).
    func remember(_ o: JSONValue, ns: String) {
        guard o[path: ["metadata", "labels", "endpointslice.kubernetes.io/managed-by"]]?.string == Self.managedBy,
              let svc = Self.owner(o), let name = o[path: ["metadata", "name"]]?.string else { return }
        let key = "\(ns)/\(svc)"
        if let known = slicesOf[key]?[name], known.revision > Self.revision(o) { return }
        slicesOf[key, default: [:]][name] = KnownSlice(revision: Self.revision(o), value: o.serialized())
    }

    func forget(service key: String, slice name: String) {
        slicesOf[key]?[name] = nil
        if slicesOf[key]?.isEmpty == true { slicesOf[key] = nil }
    }

    func sliceChanged(_ e: StoreEvent) {
        guard let (ns, name) = Self.split(e.kv.key) else { return }
        if e.kind == .deleted {
            if let old = e.previous.flatMap({ try? JSONValue.parse($0.value) }), let svc = Self.owner(old) {
                forget(service: "\(ns)/\(svc)", slice: name)
            } else {
                for key in slicesOf.keys where slicesOf[key]?[name] != nil { forget(service: key, slice: name) }
            }
        } else if let o = try? JSONValue.parse(e.kv.value) {
            remember(Self.stamped(o, e.kv.modRevision), ns: ns)
        }
    }

    public init(handler: APIHandler, logger: Logger = Logger(label: "switchyard.endpointslices")) {
        self.handler = handler
        self.logger = logger
    }

    static let services = Resources.find(group: "", version: "v1", resource: "services")!
    static let pods = Resources.find(group: "", version: "v1", resource: "pods")!
    static let slices = Resources.find(group: "discovery.k8s.io", version: "v1", resource: "endpointslices")!
    static let endpoints = Resources.find(group: "", version: "v1", resource: "endpoints")!

    /// /registry/core/<resource>/<namespace>/<name> → (namespace, name)
    static func split(_ key: String) -> (String, String)? {
        let parts = key.split(separator: "/")
        return parts.count >= 5 ? (String(parts[3]), String(parts[4])) : nil
    }

    static func selector(_ value: Data) -> [String: String]? {
        guard let o = try? JSONValue.parse(value), o[path: ["spec", "type"]]?.string != "ExternalName",
              let sel = o[path: ["spec", "selector"]]?.object, !sel.isEmpty else { return nil }
        return sel.compactMapValues(\.string)
    }

    func markDirty(_ key: String) {
        dirty.insert(key)
        wake?.yield()
    }

    var hasWork: Bool { !dirty.isEmpty }

    /// Follows Services and Pods until cancelled: every Service once, then those a change touches.
    /// `onSynced` is called once the Services and slices present at the start are reconciled.
    public func run(onSynced: @escaping @Sendable () async -> Void = {}) async throws {
        let (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        defer { wake.finish() }
        let store = handler.store
        let from = try await store.currentRevision()
        let svcEvents = try await store.watch(prefix: Self.services.storePrefix, after: from)
        let podEvents = try await store.watch(prefix: Self.pods.storePrefix, after: from)
        let sliceEvents = try await store.watch(prefix: Self.slices.storePrefix, after: from)
        let all = try await store.list(prefix: Self.services.storePrefix, after: nil, limit: 0, revision: from)
        for kv in all.items {
            guard let (ns, name) = Self.split(kv.key) else { continue }
            selectors[ns, default: [:]][name] = Self.selector(kv.value)
            markDirty("\(ns)/\(name)")
        }
        // Slices this controller made before a restart.
        let slices = try await store.list(prefix: Self.slices.storePrefix, after: nil, limit: 0, revision: from)
        for kv in slices.items {
            guard let (ns, _) = Self.split(kv.key), let o = try? JSONValue.parse(kv.value),
                  o[path: ["metadata", "labels", "endpointslice.kubernetes.io/managed-by"]]?.string == Self.managedBy,
                  let svc = Self.owner(o) else { continue }
            managed.insert("\(ns)/\(svc)")
            markDirty("\(ns)/\(svc)")
            remember(Self.stamped(o, kv.modRevision), ns: ns)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await e in svcEvents { await self.serviceChanged(e) }
            }
            group.addTask {
                for try await e in podEvents { await self.podChanged(e) }
            }
            group.addTask {
                for try await e in sliceEvents { await self.sliceChanged(e) }
            }
            group.addTask {
                await self.drain()
                await onSynced()
                for await _ in wakeups {
                    // A burst of events is handled in passes 20 ms apart; a Service whose
                    // reconcile failed stays marked and is tried again on the next pass.
                    repeat {
                        try await Task.sleep(for: .milliseconds(20))
                        await self.drain()
                    } while await self.hasWork
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    func serviceChanged(_ e: StoreEvent) {
        guard let (ns, name) = Self.split(e.kv.key) else { return }
        selectors[ns, default: [:]][name] = e.kind == .deleted ? nil : Self.selector(e.kv.value)
        markDirty("\(ns)/\(name)")
    }

    func podChanged(_ e: StoreEvent) {
        guard let (ns, _) = Self.split(e.kv.key) else { return }
        var labelSets: [[String: String]] = []
        for v in [e.kv.value, e.previous?.value].compactMap({ $0 }) {
            if let o = try? JSONValue.parse(v) { labelSets.append(APIHandler.labels(o)) }
        }
        for (svc, sel) in selectors[ns] ?? [:] where labelSets.contains(where: { l in sel.allSatisfy { l[$0.key] == $0.value } }) {
            markDirty("\(ns)/\(svc)")
        }
    }

    /// Reconciles every Service marked since the last pass.
    public func drain() async {
        let work = dirty
        dirty.removeAll()
        for key in work.sorted() {
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            do {
                try await reconcile(namespace: parts[0], service: parts[1])
            } catch {
                logger.warning("endpoint slices of \(key): \(error)")
                dirty.insert(key)   // tried again on the next pass
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

    /// One Service: its slices and Endpoints from the Pods its selector picks; none if it has no
    /// selector (its slices are someone else's) or is gone.
    public func reconcile(namespace ns: String, service name: String) async throws {
        let key = "\(ns)/\(name)"
        let got = await handler.handle(APIRequest(method: "GET", path: Self.path(Self.services, ns, name)))
        let svc = got.code == 200 ? got.json : nil
        let selector = svc.flatMap { Self.selector($0.serialized()) }
        guard let svc, let selector else {
            // Gone, or no longer selecting: what this controller wrote for it goes.
            guard managed.contains(key) else { return }
            for n in (slicesOf[key] ?? [:]).keys.sorted() {
                _ = await handler.handle(APIRequest(method: "DELETE", path: Self.path(Self.slices, ns, n)))
                forget(service: key, slice: n)
            }
            let ep = await handler.handle(APIRequest(method: "GET", path: Self.path(Self.endpoints, ns, name)))
            if ep.code == 200, ep.json?[path: ["metadata", "annotations", Self.triggerAnnotation]] != nil {
                _ = await handler.handle(APIRequest(method: "DELETE", path: Self.path(Self.endpoints, ns, name)))
            }
            managed.remove(key)
            podTriggers[key] = nil
            return
        }
        let pods = try await list(Self.pods, ns).filter { p in
            let l = APIHandler.labels(p)
            let phase = p[path: ["status", "phase"]]?.string
            return selector.allSatisfy { l[$0.key] == $0.value } && phase != "Succeeded" && phase != "Failed"
                && !(p[path: ["status", "podIP"]]?.string ?? "").isEmpty
        }
        let existing = try (slicesOf[key] ?? [:]).values.map { try JSONValue.parse($0.value) }
        let trigger = triggerTime(key, svc, pods)
        managed.insert(key)
        try await sync(svc, name: name, ns: ns, pods: pods, existing: existing, trigger: trigger)
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

    /// When the change this reconcile publishes began, as upstream's TriggerTimeTracker computes
    /// it: the earliest trigger time that changed since the last reconcile — a Pod's Ready
    /// transition, or the Service's creation for a Service seen for the first time. A change with
    /// no such time (a Pod gone, a status without lastTransitionTime) is stamped with now, so the
    /// proxy's network programming latency still covers it from the controller on.
    func triggerTime(_ key: String, _ svc: JSONValue, _ pods: [JSONValue]) -> Date {
        let now = Date()
        var changed: [Date] = []
        let before = podTriggers[key]
        var after: [String: Date] = [:]
        for p in pods {
            let name = p[path: ["metadata", "name"]]?.string ?? ""
            let ready = (p[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "Ready" }
            let t = ready?["lastTransitionTime"]?.string.flatMap(parseTime) ?? before?[name] ?? now
            after[name] = t
            if before?[name] != t { changed.append(t) }
        }
        if before == nil, let created = svc[path: ["metadata", "creationTimestamp"]]?.string.flatMap(parseTime) {
            changed.append(created)
        }
        podTriggers[key] = after
        return changed.min() ?? now
    }

    /// An RFC 3339 time (with or without fractional seconds).
    func parseTime(_ s: String) -> Date? { RFC3339.seconds(s).map(Date.init(timeIntervalSince1970:)) }

    /// Go's RFC3339Nano in UTC, as upstream writes the annotation.
    static func rfc3339Nano(_ d: Date) -> String {
        let whole = floor(d.timeIntervalSince1970)
        var nanos = Int(((d.timeIntervalSince1970 - whole) * 1e9).rounded())
        if nanos >= 1_000_000_000 { nanos = 999_999_999 }
        let base = String(APIHandler.rfc3339(Date(timeIntervalSince1970: whole)).dropLast())
        guard nanos > 0 else { return base + "Z" }
        var frac = String(nanos)
        frac = String(repeating: "0", count: 9 - frac.count) + frac
        while frac.hasSuffix("0") { frac.removeLast() }
        return base + "." + frac + "Z"
    }

    func sync(_ svc: JSONValue, name: String, ns: String, pods: [JSONValue], existing: [JSONValue], trigger: Date) async throws {
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
        // Nothing to do when the slices already hold exactly the desired endpoints and ports.
        func content(_ o: JSONValue) -> JSONValue { ["endpoints": o["endpoints"] ?? [], "ports": o["ports"] ?? []] }
        let unchanged = existing.count == desired.count && Set(existing.map(content)) == Set(desired.map(content))
        // Otherwise existing slices are reused in order; what is left over goes.
        let current = unchanged ? [] : existing.sorted { ($0[path: ["metadata", "name"]]?.string ?? "") < ($1[path: ["metadata", "name"]]?.string ?? "") }
        if unchanged { desired = [] }
        for (i, want) in desired.enumerated() {
            if i < current.count {
                var o = current[i]
                if o["endpoints"] ?? [] == want["endpoints"] && o["ports"] ?? [] == want["ports"] { continue }
                o["endpoints"] = want["endpoints"]
                o["ports"] = want["ports"]
                o["addressType"] = "IPv4"
                o[path: ["metadata", "annotations", Self.triggerAnnotation]] = .string(Self.rfc3339Nano(trigger))
                let r = await handler.handle(APIRequest(method: "PUT", path: Self.path(Self.slices, ns, o[path: ["metadata", "name"]]?.string ?? ""),
                                                        query: Self.manager, body: o.serialized()))
                if r.code >= 300 { throw APIError.internal("updating a slice of \(ns)/\(name): \(r.json?.text() ?? "")") }
                if let written = r.json { remember(written, ns: ns) }
            } else {
                var o = want
                o["apiVersion"] = "discovery.k8s.io/v1"
                o["kind"] = "EndpointSlice"
                o["metadata"] = ["generateName": .string("\(name)-"), "namespace": .string(ns), "labels": labels, "ownerReferences": ownerRef,
                                 "annotations": [Self.triggerAnnotation: .string(Self.rfc3339Nano(trigger))]]
                let r = await handler.handle(APIRequest(method: "POST", path: Self.path(Self.slices, ns), query: Self.manager, body: o.serialized()))
                if r.code >= 300 { throw APIError.internal("creating a slice of \(ns)/\(name): \(r.json?.text() ?? "")") }
                if let written = r.json { remember(written, ns: ns) }
            }
        }
        for extra in current.dropFirst(desired.count) where !unchanged {
            let n = extra[path: ["metadata", "name"]]?.string ?? ""
            _ = await handler.handle(APIRequest(method: "DELETE", path: Self.path(Self.slices, ns, n)))
            forget(service: "\(ns)/\(name)", slice: n)
        }
        try await syncEndpoints(name: name, ns: ns, pods: pods, svcPorts: svcPorts)
    }

    /// The field manager of the controller's writes, as upstream's controllers are named in
    /// managedFields.
    static let manager = ["fieldManager": "kube-controller-manager"]

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
            _ = await handler.handle(APIRequest(method: "PUT", path: path, query: Self.manager, body: o.serialized()))
        } else {
            let o: JSONValue = ["apiVersion": "v1", "kind": "Endpoints", "subsets": subsets,
                                "metadata": ["name": .string(name), "namespace": .string(ns),
                                             "annotations": [Self.triggerAnnotation: .string(APIHandler.rfc3339())]]]
            _ = await handler.handle(APIRequest(method: "POST", path: Self.path(Self.endpoints, ns), query: Self.manager, body: o.serialized()))
        }
    }
}
