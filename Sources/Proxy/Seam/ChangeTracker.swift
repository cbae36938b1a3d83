import Foundation
import KubeAPI

/// Turns Service and EndpointSlice events into immutable `ProxySnapshot`s.
///
/// Only services that saw an event are recomputed when the next snapshot is
/// taken, so a change costs O(changed services), not O(services).
public struct ChangeTracker: Sendable {
    public let family: IPFamily
    public private(set) var node: NodeInfo
    /// Per Service, only what the proxy uses of it: its ports for this family, computed once on
    /// arrival (empty for an ExternalName Service or one without an address of this family).
    private var services: [NamespacedName: [ServicePortInfo]] = [:]
    /// Per EndpointSlice, only what endpoint selection reads (10,000 decoded slices of 10
    /// endpoints each take about three times the room).
    private var slices: [NamespacedName: SliceEntry] = [:]
    private var slicesByService: [NamespacedName: Set<NamespacedName>] = [:]
    private var portsByService: [NamespacedName: [ServicePortName]] = [:]
    private var endpointKeysByService: [NamespacedName: [ServicePortName]] = [:]
    private var configuredServiceCIDRs: [CIDR]
    private var serviceCIDRObjects: [String: [CIDR]] = [:]
    private var dirty: Set<NamespacedName> = []
    private var nodeChanged = true
    private var current = ProxySnapshot()

    /// Service and EndpointSlice events that changed something, since the start (kube-proxy's
    /// `…_service_changes_total` and `…_endpoint_changes_total`).
    public private(set) var serviceChanges = 0
    public private(set) var endpointChanges = 0
    /// Services with a pending Service change, and with a pending endpoint change (the
    /// `…_changes_pending` gauges), until the next snapshot.
    public private(set) var pendingServiceChanges: Set<NamespacedName> = []
    public private(set) var pendingEndpointChanges: Set<NamespacedName> = []
    /// The `endpoints.kubernetes.io/last-change-trigger-time` of the slices changed since the last
    /// snapshot; a sync that succeeds reports `now - each` as network programming latency. Times
    /// from before this tracker started are left out, as upstream leaves out the initial list.
    public private(set) var pendingTriggerTimes: [Double] = []
    private let startTime = Date().timeIntervalSince1970
    public static let triggerTimeAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"

    public init(family: IPFamily = .ipv4, node: NodeInfo, serviceCIDRs: [CIDR] = []) {
        self.family = family
        self.node = node
        self.configuredServiceCIDRs = serviceCIDRs.filter { $0.family == family }
    }

    public var hasPendingChanges: Bool { !dirty.isEmpty || nodeChanged }

    // MARK: events

    /// Add or update a Service (nil `service` with `old` deletes).
    public mutating func update(service: Service) {
        let key = service.namespacedName
        let infos = Self.servicePorts(of: service, family: family)
        if services[key] != infos {
            services[key] = infos
            dirty.insert(key)
            serviceChanges += 1
            pendingServiceChanges.insert(key)
        }
    }

    public mutating func delete(service key: NamespacedName) {
        if services.removeValue(forKey: key) != nil {
            dirty.insert(key)
            serviceChanges += 1
            pendingServiceChanges.insert(key)
        }
    }

    public mutating func update(slice object: EndpointSlice) {
        let key = object.namespacedName
        // A slice of the other family is not this tracker's (upstream's tracker ignores it too);
        // `addressType` never changes, but a slice replaced under the same name is let go.
        guard object.addressType == family.rawValue else {
            delete(slice: key)
            return
        }
        let slice = SliceEntry(object, node: node.name)
        if let old = slices[key] {
            if old == slice { return }
            if let svc = old.serviceName { markSliceService(NamespacedName(namespace: key.namespace, name: svc), key, remove: true) }
        }
        slices[key] = slice
        if let svc = slice.serviceName { markSliceService(NamespacedName(namespace: key.namespace, name: svc), key, remove: false) }
        if let text = object.metadata.annotations?[Self.triggerTimeAnnotation], let t = RFC3339.seconds(text), t >= startTime {
            pendingTriggerTimes.append(t)
        }
    }

    public mutating func delete(slice key: NamespacedName) {
        guard let old = slices.removeValue(forKey: key) else { return }
        if let svc = old.serviceName { markSliceService(NamespacedName(namespace: key.namespace, name: svc), key, remove: true) }
    }

    private mutating func markSliceService(_ svc: NamespacedName, _ slice: NamespacedName, remove: Bool) {
        if remove {
            slicesByService[svc]?.remove(slice)
            if slicesByService[svc]?.isEmpty == true { slicesByService[svc] = nil }
        } else {
            slicesByService[svc, default: []].insert(slice)
        }
        dirty.insert(svc)
        endpointChanges += 1
        pendingEndpointChanges.insert(svc)
    }

    /// The trigger times collected since the last call (the runner takes them with a snapshot).
    public mutating func takeTriggerTimes() -> [Double] {
        defer { pendingTriggerTimes.removeAll() }
        return pendingTriggerTimes
    }

    public mutating func update(node newNode: NodeInfo) {
        if newNode != node {
            if newNode.name != node.name {
                for k in Array(slices.keys) { slices[k]!.localize(node: newNode.name) }
            }
            node = newNode
            nodeChanged = true
        }
    }

    public mutating func update(serviceCIDR: ServiceCIDR) {
        let cidrs = (serviceCIDR.spec.cidrs ?? []).compactMap { CIDR($0)?.network }.filter { $0.family == family }
        let name = serviceCIDR.metadata.name ?? ""
        // A status write (the default one's Ready condition) changes no rule.
        guard serviceCIDRObjects[name] != cidrs else { return }
        serviceCIDRObjects[name] = cidrs
        nodeChanged = true
    }

    /// Replaces every ServiceCIDR (an informer's relist); a full sync only when the ranges differ.
    public mutating func replaceServiceCIDRs(_ all: [ServiceCIDR]) {
        let names = Set(all.map { $0.metadata.name ?? "" })
        for k in serviceCIDRObjects.keys where !names.contains(k) { delete(serviceCIDR: k) }
        for c in all { update(serviceCIDR: c) }
    }

    public mutating func delete(serviceCIDR name: String) {
        if serviceCIDRObjects.removeValue(forKey: name) != nil { nodeChanged = true }
    }

    /// Replaces every Service (an informer's relist); only what differs is marked changed.
    public mutating func replaceServices(_ newServices: [Service]) {
        let keys = Set(newServices.map(\.namespacedName))
        for k in services.keys where !keys.contains(k) { delete(service: k) }
        for s in newServices { update(service: s) }
    }

    /// Replaces every EndpointSlice (an informer's relist), taking the slices out of `newSlices`
    /// one by one as they are read, so the decoded objects are freed while the tracker's own,
    /// smaller entries are built (at 10,000 slices the two together would be the proxy's peak).
    /// Only what differs is marked changed; the last slice of a name wins.
    public mutating func replaceSlices(draining newSlices: inout [EndpointSlice]) {
        let keys = Set(newSlices.map(\.namespacedName))
        for k in slices.keys where !keys.contains(k) { delete(slice: k) }
        var seen = Set<NamespacedName>()
        while let s = newSlices.popLast() {
            if seen.insert(s.namespacedName).inserted { update(slice: s) }
        }
    }

    /// Replaces everything with the given objects (a relist, or manifests re-read), draining
    /// `slices` as `replaceSlices(draining:)` does; only what differs is marked changed.
    public mutating func replaceAll(services newServices: [Service], draining slices: inout [EndpointSlice],
                                    serviceCIDRs: [ServiceCIDR] = []) {
        replaceSlices(draining: &slices)
        replaceServices(newServices)
        let names = Set(serviceCIDRs.map { $0.metadata.name ?? "" })
        for k in serviceCIDRObjects.keys where !names.contains(k) { delete(serviceCIDR: k) }
        for c in serviceCIDRs {
            let cidrs = (c.spec.cidrs ?? []).compactMap { CIDR($0)?.network }.filter { $0.family == family }
            if serviceCIDRObjects[c.metadata.name ?? ""] != cidrs { update(serviceCIDR: c) }
        }
    }

    // MARK: snapshots

    /// The snapshot after all events so far, and the services that changed since
    /// the previous call (nil when node-wide state changed, so every service must be redone).
    public mutating func snapshot() -> (ProxySnapshot, changed: Set<NamespacedName>?) {
        var snap = current
        // Drop our reference first, so that when nobody else holds the previous
        // snapshot the changes below are made in place, in O(changed).
        current = ProxySnapshot()
        let previousNodeName = snap.node.name
        let changed = dirty
        pendingServiceChanges.removeAll()
        pendingEndpointChanges.removeAll()
        for key in dirty {
            for old in portsByService[key] ?? [] { snap.servicePorts[old] = nil }
            for old in endpointKeysByService[key] ?? [] { snap.endpoints[old] = nil }
            portsByService[key] = nil
            endpointKeysByService[key] = nil
            if let infos = services[key] {
                for i in infos { snap.servicePorts[i.name] = i }
                if !infos.isEmpty { portsByService[key] = infos.map(\.name) }
            }
            let eps = endpoints(for: key)
            for (k, v) in eps { snap.endpoints[k] = v }
            if !eps.isEmpty { endpointKeysByService[key] = Array(eps.keys) }
        }
        dirty.removeAll(keepingCapacity: true)
        var allChanged = false
        if nodeChanged {
            snap.node = node
            var cidrs = configuredServiceCIDRs
            for k in serviceCIDRObjects.keys.sorted() { cidrs += serviceCIDRObjects[k]! }
            var seen = Set<CIDR>()
            snap.serviceCIDRs = cidrs.filter { seen.insert($0).inserted }
            nodeChanged = false
            allChanged = true
            // Local-ness of endpoints depends on the node name: recompute them all.
            if previousNodeName != node.name {
                for key in Set(endpointKeysByService.keys).union(slicesByService.keys) {
                    for old in endpointKeysByService[key] ?? [] { snap.endpoints[old] = nil }
                    let eps = endpoints(for: key)
                    for (k, v) in eps { snap.endpoints[k] = v }
                    endpointKeysByService[key] = eps.isEmpty ? nil : Array(eps.keys)
                }
            }
        }
        snap.generation = snap.generation + 1
        snap.portsByService = portsByService
        current = snap
        return (snap, allChanged ? nil : changed)
    }

    /// Upstream's `newBaseServiceInfo`, per port, for this family.
    public static func servicePorts(of svc: Service, family: IPFamily) -> [ServicePortInfo] {
        let spec = svc.spec
        if spec.serviceType == .externalName { return [] }
        let ips = (spec.clusterIPs?.isEmpty == false ? spec.clusterIPs! : [spec.clusterIP ?? ""])
        guard let clusterIP = ips.lazy.compactMap({ IPAddress($0) }).first(where: { $0.family == family }) else {
            return []
        }
        let key = svc.namespacedName
        let type = spec.serviceType
        let externalIPs = (spec.externalIPs ?? []).compactMap { IPAddress($0) }.filter { $0.family == family }
        let accessibleType = type == .nodePort || type == .loadBalancer || (type == .clusterIP && !(spec.externalIPs ?? []).isEmpty)
        let externalLocal = accessibleType && spec.externalTrafficPolicy == "Local"
        var lbVIPs: [IPAddress] = []
        if type == .loadBalancer {
            for ing in svc.status?.loadBalancer?.ingress ?? [] {
                if ing.ipMode == "Proxy" { continue }
                if let s = ing.ip, let ip = IPAddress(s), ip.family == family { lbVIPs.append(ip) }
            }
        }
        let ranges = (spec.loadBalancerSourceRanges ?? []).compactMap { CIDR($0.trimmingCharacters(in: " \t")) }
            .filter { $0.family == family }
        let affinity = spec.sessionAffinity == "ClientIP"
        let timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800
        let hc = (type == .loadBalancer && externalLocal) ? (spec.healthCheckNodePort ?? 0) : 0
        return (spec.ports ?? []).map { p in
            let proto = L4Protocol(rawValue: p.protocol ?? "TCP") ?? .tcp
            return ServicePortInfo(
                name: ServicePortName(service: key, port: p.name ?? "", proto: proto),
                clusterIP: clusterIP, port: p.port, targetPort: p.targetPort,
                nodePort: (type == .nodePort || type == .loadBalancer) ? (p.nodePort ?? 0) : 0,
                externalIPs: externalIPs, loadBalancerVIPs: lbVIPs, loadBalancerSourceRanges: lbVIPs.isEmpty ? [] : ranges,
                sessionAffinityClientIP: affinity, stickyMaxAgeSeconds: timeout,
                externalPolicyLocal: externalLocal, internalPolicyLocal: spec.internalTrafficPolicy == "Local",
                healthCheckNodePort: hc, trafficDistribution: spec.trafficDistribution)
        }
    }

    /// Upstream's endpoint slice cache: merge the service's slices of this family,
    /// one endpoint per first address, deduplicated, sorted by `ip:port`. A service with one
    /// slice (the common case) shares that slice's lists: the snapshot holds no copy of them.
    private func endpoints(for svc: NamespacedName) -> [ServicePortName: [EndpointInfo]] {
        guard let names = slicesByService[svc] else { return [:] }
        var out: [ServicePortName: [EndpointInfo]] = [:]
        if names.count == 1 {
            guard let slice = slices[names.first!], slice.addressType == family.rawValue else { return [:] }
            for (k, v) in slice.ports where !v.isEmpty { out[ServicePortName(service: svc, port: k.name, proto: k.proto)] = v }
            return out
        }
        var byPort: [ServicePortName: [String: EndpointInfo]] = [:]
        for sliceName in names.sorted() {
            guard let slice = slices[sliceName], slice.addressType == family.rawValue else { continue }
            for (k, eps) in slice.ports {
                let spn = ServicePortName(service: svc, port: k.name, proto: k.proto)
                var set = byPort[spn] ?? [:]
                for info in eps { SliceEntry.merge(info, into: &set) }
                byPort[spn] = set
            }
        }
        for (k, v) in byPort where !v.isEmpty { out[k] = v.values.sorted() }
        return out
    }
}

/// What endpoint selection reads of an EndpointSlice: per port, its endpoints as the
/// snapshot carries them (upstream's defaults applied, one per first address, deduplicated
/// preferring a ready copy, sorted by `ip:port`). A port without a number and an endpoint
/// without an address are left out, as the endpoint slice cache leaves them out.
struct SliceEntry: Equatable, Sendable {
    struct PortKey: Hashable, Sendable {
        var name: String
        var proto: L4Protocol
    }

    var serviceName: String?
    var addressType: String
    var ports: [PortKey: [EndpointInfo]]

    init(_ slice: EndpointSlice, node: String) {
        serviceName = slice.serviceName
        addressType = slice.addressType
        var byPort: [PortKey: [String: EndpointInfo]] = [:]
        for p in slice.ports ?? [] {
            guard let portNum = p.port else { continue }
            let key = PortKey(name: p.name ?? "", proto: L4Protocol(rawValue: p.protocol ?? "TCP") ?? .tcp)
            var set = byPort[key] ?? [:]
            for ep in slice.endpoints ?? [] {
                guard let addr = ep.addresses.first else { continue }
                let ready = ep.conditions?.ready ?? true
                let info = EndpointInfo(
                    ip: addr, port: portNum, ready: ready, serving: ep.conditions?.serving ?? ready,
                    terminating: ep.conditions?.terminating ?? false,
                    isLocal: ep.nodeName != nil && ep.nodeName == node, nodeName: ep.nodeName, zone: ep.zone,
                    zoneHints: Set(ep.hints?.forZones?.map(\.name) ?? []),
                    nodeHints: Set(ep.hints?.forNodes?.map(\.name) ?? []))
                Self.merge(info, into: &set)
            }
            byPort[key] = set
        }
        ports = byPort.mapValues { $0.values.sorted() }
    }

    /// Upstream prefers the copy that is ready when slices (or one slice) disagree.
    static func merge(_ info: EndpointInfo, into set: inout [String: EndpointInfo]) {
        if let existing = set[info.endpoint], existing.ready && !info.ready { return }
        set[info.endpoint] = info
    }

    /// `isLocal` for another node name.
    mutating func localize(node: String) {
        for k in Array(ports.keys) {
            ports[k] = ports[k]!.map { var e = $0; e.isLocal = e.nodeName != nil && e.nodeName == node; return e }
        }
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
