import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// What the EndpointSlice and Endpoints controllers share: the Services, their selectors by
/// namespace (so a Pod's change finds its Services without a scan), and which Pods a Service's
/// endpoints are made of, with the ports each resolves to.
final class ServiceEndpoints: Sendable {
    let services: Informer<JSONValue>
    let pods: Informer<JSONValue>
    let nodes: Informer<JSONValue>
    /// namespace → service name → selector.
    let selectors = Mutex<[String: [String: [String: String]]]>([:])
    /// Per Service, each Pod's trigger time as last published (upstream's TriggerTimeTracker).
    let triggers = Mutex<[String: [String: Date]]>([:])

    init(_ informers: SharedInformers) {
        services = informers.informer("/api/v1/services", slim: Slim.managedFields)
        pods = informers.pods
        nodes = informers.nodes
    }

    /// Calls `touched` with the key of every Service a change of Service or Pod concerns.
    func follow(_ touched: @escaping @Sendable (String) async -> Void) {
        services.onChange { [self] c in
            let (ns, name) = Self.split(c.key)
            selectors.withLock { s in s[ns, default: [:]][name] = c.new.flatMap(Self.selector) }
            await touched(c.key)
        }
        pods.onChange { [self] c in
            guard let ns = (c.new ?? c.old)?.namespace else { return }
            let labelSets = [c.new, c.old].compactMap { $0?.labels }
            let hit = selectors.withLock { s in
                (s[ns] ?? [:]).filter { _, sel in labelSets.contains { Self.selects(sel, $0) } }.map(\.key)
            }
            for name in hit { await touched("\(ns)/\(name)") }
        }
    }

    static func split(_ key: String) -> (String, String) {
        let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
        return parts.count == 2 ? (parts[0], parts[1]) : ("", key)
    }

    /// A Service's selector, nil when it has none (or is an ExternalName Service): its endpoints
    /// are then someone else's.
    static func selector(_ svc: JSONValue) -> [String: String]? {
        guard svc[path: ["spec", "type"]]?.string != "ExternalName", let sel = svc[path: ["spec", "selector"]]?.object, !sel.isEmpty else { return nil }
        return sel.compactMapValues(\.string)
    }

    /// Whether a Service's selector picks a Pod with these labels.
    static func selects(_ selector: [String: String], _ labels: [String: String]) -> Bool {
        selector.allSatisfy { labels[$0.key] == $0.value }
    }

    /// The Pods behind a Service, as upstream's `ShouldPodBeInEndpoints` picks them: selected, not
    /// finished, with an IP; terminating ones only when `includeTerminating`.
    func members(_ svc: JSONValue, selector: [String: String], includeTerminating: Bool) -> [JSONValue] {
        let ns = svc.namespace
        return pods.filter { p in
            guard p.namespace == ns, !(p[path: ["status", "podIP"]]?.string ?? "").isEmpty, !PodStatus.isTerminal(p) else { return false }
            if !includeTerminating && p.isDeleting { return false }
            return Self.selects(selector, p.labels)
        }.sorted { ($0[path: ["status", "podIP"]]?.string ?? "") < ($1[path: ["status", "podIP"]]?.string ?? "") }
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

    /// The Service's ports as they resolve on one Pod, in the EndpointSlice's shape.
    static func ports(_ svc: JSONValue, _ pod: JSONValue) -> [JSONValue] {
        (svc[path: ["spec", "ports"]]?.array ?? []).compactMap { sp in
            guard let t = targetPort(sp, pod) else { return nil }
            var e: [String: JSONValue] = ["name": sp["name"] ?? "", "port": .int(t), "protocol": sp["protocol"] ?? "TCP"]
            if let ap = sp["appProtocol"] { e["appProtocol"] = ap }
            return .object(e)
        }
    }

    /// A Pod's hostname in its Service's endpoints: set when its subdomain is the Service.
    static func hostname(_ pod: JSONValue, _ svc: JSONValue) -> String? {
        guard let h = pod[path: ["spec", "hostname"]]?.string, !h.isEmpty, pod[path: ["spec", "subdomain"]]?.string == svc.name else { return nil }
        return h
    }

    /// The labels of what is made for a Service: its own (but the reserved ones), the headless
    /// marker for a headless Service, and `extra`.
    static func labels(_ svc: JSONValue, reserved: Set<String>, _ extra: [String: String]) -> JSONValue {
        var l = svc.labels.filter { !reserved.contains($0.key) }
        let ip = svc[path: ["spec", "clusterIP"]]?.string ?? ""
        if ip.isEmpty || ip == "None" { l["service.kubernetes.io/headless"] = "" }
        for (k, v) in extra { l[k] = v }
        return .object(l.mapValues { .string($0) })
    }

    /// When the change now published began, as upstream's TriggerTimeTracker computes it: the
    /// earliest trigger time that changed since the last time — a Pod's Ready transition, or the
    /// Service's creation for a Service seen for the first time; now when none is known (a Pod
    /// gone), so the proxy's network programming latency still covers the change from here on.
    func triggerTime(_ key: String, _ svc: JSONValue, _ pods: [JSONValue]) -> Date {
        let now = Date()
        return triggers.withLock { t in
            var changed: [Date] = []
            let before = t[key]
            var after: [String: Date] = [:]
            for p in pods {
                let ready = (p[path: ["status", "conditions"]]?.array ?? []).first { $0["type"] == "Ready" }
                let at = ready?["lastTransitionTime"]?.string.flatMap(Time.parse) ?? before?[p.name] ?? now
                after[p.name] = at
                if before?[p.name] != at { changed.append(at) }
            }
            if before == nil, let created = svc[path: ["metadata", "creationTimestamp"]]?.string.flatMap(Time.parse) { changed.append(created) }
            t[key] = after
            return changed.min() ?? now
        }
    }

    func forget(_ key: String) { triggers.withLock { $0[key] = nil } }

    static let triggerAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"
}

/// The EndpointSlice controller: for each Service with a selector, EndpointSlices of at most
/// `--max-endpoints-per-slice` (100) endpoints from the selected Pods' IPs, readiness, serving
/// and terminating conditions, nodes and zones, grouped by the ports they resolve to, labelled
/// and owned as upstream's (`kubernetes.io/service-name`, `endpointslice.kubernetes.io/managed-by:
/// endpointslice-controller.k8s.io`, the Service's labels); rewritten as Pods change, removed
/// when the Service loses its selector (the garbage collector removes them with the Service).
public final class EndpointSliceController: Controller, Sendable {
    public let name = "endpointslice"
    public static let managedBy = "endpointslice-controller.k8s.io"
    static let managedByLabel = "endpointslice.kubernetes.io/managed-by"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let maxEndpoints: Int
    let workers: Int
    let shared = Mutex<ServiceEndpoints?>(nil)
    let slices: Informer<KnownSlice>
    /// The slices this controller manages, per Service (`namespace/name`) and by name, from the
    /// informer's events and the controller's own writes (the newer of the two wins), so a
    /// reconcile right after a write sees it.
    let index = Mutex<[String: [String: KnownSlice]]>([:])

    /// A managed slice, kept serialized (parsed only when its Service is reconciled).
    struct KnownSlice: Sendable {
        var service: String
        var name: String
        var revision: Int64
        var body: Data

        init?(_ o: JSONValue) {
            guard o[path: ["metadata", "labels", EndpointSliceController.managedByLabel]]?.string == EndpointSliceController.managedBy,
                  let svc = o[path: ["metadata", "labels", EndpointSlice.serviceNameLabel]]?.string else { return nil }
            service = "\(o.namespace)/\(svc)"
            name = o.name
            revision = Int64(o[path: ["metadata", "resourceVersion"]]?.string ?? "") ?? 0
            body = Slim.managedFields(o).serialized()
        }
    }

    public init(api: API, maxEndpointsPerSlice: Int = 100, workers: Int = 5, logger: Logger = Logger(label: "switchyard.endpointslice")) {
        self.api = api
        self.logger = logger
        self.maxEndpoints = maxEndpointsPerSlice
        self.workers = workers
        slices = Informer(api, path: "/apis/discovery.k8s.io/v1/endpointslices", keeps: false, decode: KnownSlice.init)
    }

    public func setUp(_ informers: SharedInformers) {
        let s = ServiceEndpoints(informers)
        shared.withLock { $0 = s }
        s.follow { [queue] key in await queue.add(key) }
        slices.onChange { [weak self] c in
            guard let self else { return }
            let (ns, name) = ServiceEndpoints.split(c.key)
            if let k = c.new {
                self.remember(k)
                await self.queue.add(k.service)
            } else if let svc = self.forget(namespace: ns, slice: name, service: c.old?.service) {
                await self.queue.add(svc)
            }
        }
    }

    func remember(_ k: KnownSlice) {
        index.withLock { i in
            if let known = i[k.service]?[k.name], known.revision > k.revision { return }
            i[k.service, default: [:]][k.name] = k
        }
    }

    /// Forgets a slice gone; returns the Service it was for.
    @discardableResult
    func forget(namespace ns: String, slice name: String, service: String? = nil) -> String? {
        index.withLock { i in
            let svc = service ?? i.first { $0.key.hasPrefix(ns + "/") && $0.value[name] != nil }?.key
            guard let svc else { return nil }
            i[svc]?[name] = nil
            if i[svc]?.isEmpty == true { i[svc] = nil }
            return svc
        }
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.slices.run() }
            g.addTask {
                await self.slices.waitForSync()
                await runWorkers(self.queue, workers: self.workers, logger: self.logger, name: self.name) { [self] key in try await sync(key) }
            }
            await g.next()
            g.cancelAll()
        }
    }

    func path(_ ns: String, _ name: String? = nil) -> String { API.path("discovery.k8s.io/v1", "endpointslices", namespace: ns, name: name) }

    /// One Service: its slices from the Pods its selector picks; none if it has no selector or is gone.
    func sync(_ key: String) async throws {
        guard let s = shared.withLock({ $0 }) else { return }
        let (ns, name) = ServiceEndpoints.split(key)
        let existing = index.withLock { $0[key] ?? [:] }
        guard let svc = s.services.get(key), let selector = ServiceEndpoints.selector(svc) else {
            // Gone, or no longer selecting: the slices this controller wrote for it go.
            for n in existing.keys.sorted() {
                do { try await api.delete(path(ns, n)) } catch let e as APIStatusError where e.isNotFound {}
                forget(namespace: ns, slice: n, service: key)
            }
            s.forget(key)
            return
        }
        let pods = s.members(svc, selector: selector, includeTerminating: true)
        let trigger = s.triggerTime(key, svc, pods)
        let publishNotReady = svc[path: ["spec", "publishNotReadyAddresses"]]?.bool == true
        // One set of slices per address type the Service has (its families; both for a
        // headless Service without any), each Pod in it by its address of that family.
        var desired: [JSONValue] = []
        for addressType in Self.addressTypes(svc) {
            // Pods grouped by the ports they resolve to (a named target port may differ per Pod).
            var groups: [[JSONValue]: [(pod: JSONValue, ip: String)]] = [:]
            for p in pods {
                guard let ip = Self.address(of: p, type: addressType) else { continue }
                groups[ServiceEndpoints.ports(svc, p), default: []].append((p, ip))
            }
            if groups.isEmpty { groups[[]] = [] }   // one slice without endpoints, as upstream keeps
            for (ports, members) in groups.sorted(by: { $0.key.description < $1.key.description }) {
                let eps: [JSONValue] = members.map { m in
                    let p = m.pod
                    let terminating = p.isDeleting
                    let serving = PodStatus.isReady(p) || publishNotReady
                    var e: [String: JSONValue] = [
                        "addresses": [.string(m.ip)],
                        "conditions": ["ready": .bool(serving && !terminating), "serving": .bool(serving), "terminating": .bool(terminating)],
                        "targetRef": ["kind": "Pod", "namespace": .string(ns), "name": .string(p.name), "uid": .string(p.uid)],
                    ]
                    if let h = ServiceEndpoints.hostname(p, svc) { e["hostname"] = .string(h) }
                    if let node = p[path: ["spec", "nodeName"]]?.string, !node.isEmpty {
                        e["nodeName"] = .string(node)
                        if let zone = s.nodes.get(node)?[path: ["metadata", "labels", "topology.kubernetes.io/zone"]]?.string { e["zone"] = .string(zone) }
                    }
                    return .object(e)
                }
                var chunk = 0
                repeat {
                    desired.append(["addressType": .string(addressType), "endpoints": .array(Array(eps.dropFirst(chunk).prefix(maxEndpoints))),
                                    "ports": .array(ports)])
                    chunk += maxEndpoints
                } while chunk < eps.count
            }
        }
        let labels = ServiceEndpoints.labels(svc, reserved: [EndpointSlice.serviceNameLabel, Self.managedByLabel],
                                             [EndpointSlice.serviceNameLabel: name, Self.managedByLabel: Self.managedBy])
        let current = try existing.values.map { try JSONValue.parse($0.body) }.sorted { $0.name < $1.name }
        // Nothing to do when the slices already hold exactly the desired endpoints, ports and labels.
        func content(_ o: JSONValue) -> JSONValue { ["addressType": o["addressType"] ?? "", "endpoints": o["endpoints"] ?? [], "ports": o["ports"] ?? []] }
        if current.count == desired.count && Set(current.map(content)) == Set(desired.map(content))
            && current.allSatisfy({ $0[path: ["metadata", "labels"]] == labels }) {
            return
        }
        let annotation = RFC3339.formatNano(trigger.timeIntervalSince1970)
        // Existing slices of the same address type (which never changes) are reused in order;
        // what is left over goes.
        var reusable: [String: [JSONValue]] = [:]
        for c in current { reusable[c["addressType"]?.string ?? "IPv4", default: []].append(c) }
        for want in desired {
            let type = want["addressType"]?.string ?? "IPv4"
            if var o = reusable[type]?.first {
                reusable[type]!.removeFirst()
                if content(o) == content(want) && o[path: ["metadata", "labels"]] == labels { continue }
                o["endpoints"] = want["endpoints"]
                o["ports"] = want["ports"]
                o[path: ["metadata", "labels"]] = labels
                o[path: ["metadata", "annotations", ServiceEndpoints.triggerAnnotation]] = .string(annotation)
                if let written = KnownSlice(try await api.update(path(ns, o.name), o)) { remember(written) }
            } else {
                var o = want
                o["apiVersion"] = "discovery.k8s.io/v1"
                o["kind"] = "EndpointSlice"
                o["metadata"] = ["generateName": .string("\(name)-"), "namespace": .string(ns), "labels": labels,
                                 "ownerReferences": [Owners.reference(svc, apiVersion: "v1", kind: "Service")],
                                 "annotations": [ServiceEndpoints.triggerAnnotation: .string(annotation)]]
                if let written = KnownSlice(try await api.create(path(ns), o)) { remember(written) }
            }
        }
        for extra in reusable.values.flatMap({ $0 }).sorted(by: { $0.name < $1.name }) {
            do { try await api.delete(path(ns, extra.name)) } catch let e as APIStatusError where e.isNotFound {}
            forget(namespace: ns, slice: extra.name, service: key)
        }
    }

    /// The address types of a Service's slices, as upstream's getAddressTypesForService: its
    /// `ipFamilies`; else its ClusterIP's family; else (headless) both.
    static func addressTypes(_ svc: JSONValue) -> [String] {
        var types: [String] = []
        for f in svc[path: ["spec", "ipFamilies"]]?.array?.compactMap(\.string) ?? [] where (f == "IPv4" || f == "IPv6") && !types.contains(f) {
            types.append(f)
        }
        if !types.isEmpty { return types }
        if let ip = svc[path: ["spec", "clusterIP"]]?.string, !ip.isEmpty, ip != "None" {
            return [ip.utf8.contains(UInt8(ascii: ":")) ? "IPv6" : "IPv4"]
        }
        return ["IPv4", "IPv6"]
    }

    /// A Pod's address of `type` (`IPv4`, `IPv6`): the first of `status.podIPs` of that family,
    /// else `status.podIP` if it is; nil when it has none (it is then in no slice of that type).
    static func address(of pod: JSONValue, type: String) -> String? {
        let v6 = type == "IPv6"
        let ips = (pod[path: ["status", "podIPs"]]?.array ?? []).compactMap { $0["ip"]?.string }
        for ip in ips + [pod[path: ["status", "podIP"]]?.string].compactMap({ $0 }) where !ip.isEmpty && ip.utf8.contains(UInt8(ascii: ":")) == v6 {
            return ip
        }
        return nil
    }
}

/// The Endpoints controller: the legacy Endpoints object of each Service with a selector —
/// ready addresses and not-ready ones per set of ports (at most 1,000, then marked
/// `endpoints.kubernetes.io/over-capacity: truncated`), deleted with its Service.
public final class EndpointsController: Controller, Sendable {
    public let name = "endpoint"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let workers: Int
    let shared = Mutex<ServiceEndpoints?>(nil)
    static let maxAddresses = 1000

    public init(api: API, workers: Int = 5, logger: Logger = Logger(label: "switchyard.endpoint")) {
        self.api = api
        self.workers = workers
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let s = ServiceEndpoints(informers)
        shared.withLock { $0 = s }
        s.follow { [queue] key in await queue.add(key) }
    }

    public func run() async {
        await runWorkers(queue, workers: workers, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        guard let s = shared.withLock({ $0 }) else { return }
        let (ns, name) = ServiceEndpoints.split(key)
        let path = API.path("v1", "endpoints", namespace: ns, name: name)
        guard let svc = s.services.get(key) else {
            // The Service is gone: so is its Endpoints object.
            do { try await api.delete(path) } catch let e as APIStatusError where e.isNotFound {}
            return
        }
        // Without a selector, the Endpoints are the user's.
        guard let selector = ServiceEndpoints.selector(svc) else { return }
        let tolerate = svc[path: ["spec", "publishNotReadyAddresses"]]?.bool == true
        let pods = s.members(svc, selector: selector, includeTerminating: tolerate)
        // Addresses grouped by the ports they resolve to, one subset each.
        var groups: [[JSONValue]: (ready: [JSONValue], notReady: [JSONValue])] = [:]
        var total = 0
        for p in pods {
            let ports = ServiceEndpoints.ports(svc, p).map { p -> JSONValue in
                var p = p
                if p["name"] == "" { p["name"] = nil }
                return p
            }
            if ports.isEmpty && !(svc[path: ["spec", "ports"]]?.array ?? []).isEmpty { continue }
            guard total < Self.maxAddresses else { total += 1; continue }
            var a: [String: JSONValue] = ["ip": p[path: ["status", "podIP"]] ?? "",
                                          "targetRef": ["kind": "Pod", "namespace": .string(ns), "name": .string(p.name), "uid": .string(p.uid)]]
            if let h = ServiceEndpoints.hostname(p, svc) { a["hostname"] = .string(h) }
            if let node = p[path: ["spec", "nodeName"]]?.string, !node.isEmpty { a["nodeName"] = .string(node) }
            if tolerate || PodStatus.isReady(p) { groups[ports, default: ([], [])].ready.append(.object(a)) } else { groups[ports, default: ([], [])].notReady.append(.object(a)) }
            total += 1
        }
        let subsets: [JSONValue] = groups.sorted { $0.key.description < $1.key.description }.map { ports, addrs in
            var subset: [String: JSONValue] = [:]
            if !ports.isEmpty { subset["ports"] = .array(ports) }
            if !addrs.ready.isEmpty { subset["addresses"] = .array(addrs.ready) }
            if !addrs.notReady.isEmpty { subset["notReadyAddresses"] = .array(addrs.notReady) }
            return .object(subset)
        }
        let labels = ServiceEndpoints.labels(svc, reserved: [], [:])
        let truncated = total > Self.maxAddresses
        let trigger = RFC3339.formatNano(s.triggerTime(key, svc, pods).timeIntervalSince1970)
        var current: JSONValue?
        do { current = try await api.get(path) } catch let e as APIStatusError where e.isNotFound {}
        if var o = current {
            let wasTruncated = o[path: ["metadata", "annotations", "endpoints.kubernetes.io/over-capacity"]] != nil
            if (o["subsets"] ?? []) == .array(subsets) && o[path: ["metadata", "labels"]] ?? [:] == labels && wasTruncated == truncated { return }
            o["subsets"] = .array(subsets)
            o[path: ["metadata", "labels"]] = labels
            o[path: ["metadata", "annotations", ServiceEndpoints.triggerAnnotation]] = .string(trigger)
            o[path: ["metadata", "annotations", "endpoints.kubernetes.io/over-capacity"]] = truncated ? "truncated" : nil
            _ = try await api.update(path, o)
        } else {
            var annotations: [String: JSONValue] = [ServiceEndpoints.triggerAnnotation: .string(trigger)]
            if truncated { annotations["endpoints.kubernetes.io/over-capacity"] = "truncated" }
            let o: JSONValue = ["apiVersion": "v1", "kind": "Endpoints", "subsets": .array(subsets),
                                "metadata": ["name": .string(name), "namespace": .string(ns), "labels": labels, "annotations": .object(annotations)]]
            do { _ = try await api.create(API.path("v1", "endpoints", namespace: ns), o) } catch let e as APIStatusError where e.isAlreadyExists {
                throw e   // someone else's meanwhile: retried with it
            }
        }
    }
}
