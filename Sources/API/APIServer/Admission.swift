import Foundation
import KubeAPI
import KubeStore

/// Hands out ClusterIPs and NodePorts, never one twice: what is in use is rebuilt from the
/// stored Services at start, taken when a Service is admitted, and given back when it is deleted
/// (or when its create fails).
public actor Allocator {
    public let serviceRange: CIDR
    public let nodePorts: ClosedRange<Int>
    private var usedIPs = Set<UInt32>()
    private var usedPorts = Set<Int>()
    private var nextIP: UInt32 = 0
    private var nextPort: Int

    public init(serviceRange: CIDR = CIDR("10.96.0.0/12")!, nodePorts: ClosedRange<Int> = 30000...32767) {
        self.serviceRange = serviceRange
        self.nodePorts = nodePorts
        nextPort = nodePorts.lowerBound
    }

    var base: UInt32 { serviceRange.address.ipv4Value! }
    var size: UInt32 { serviceRange.prefixLength >= 32 ? 1 : UInt32(1) << UInt32(32 - serviceRange.prefixLength) }

    /// Marks an address in use; false if it was already (or is outside the range).
    public func take(ip: String) -> Bool {
        guard let a = IPAddress(ip), let v = a.ipv4Value, serviceRange.contains(a) else { return false }
        return usedIPs.insert(v).inserted
    }

    /// The next free address (round robin, skipping the network address and the first host,
    /// which upstream keeps for the `kubernetes` Service).
    public func allocateIP() -> String? {
        guard size > 4 else { return nil }
        for _ in 0..<size {
            nextIP = nextIP + 1 >= size - 1 ? 2 : max(nextIP + 1, 2)
            let v = base + nextIP
            if usedIPs.insert(v).inserted { return IPAddress(ipv4: v).description }
        }
        return nil
    }

    public func release(ip: String) {
        if let v = IPAddress(ip)?.ipv4Value { usedIPs.remove(v) }
    }

    public func take(port: Int) -> Bool { nodePorts.contains(port) && usedPorts.insert(port).inserted }

    public func allocatePort() -> Int? {
        for _ in 0..<nodePorts.count {
            let p = nextPort
            nextPort = nextPort >= nodePorts.upperBound ? nodePorts.lowerBound : nextPort + 1
            if usedPorts.insert(p).inserted { return p }
        }
        return nil
    }

    public func release(port: Int) { usedPorts.remove(port) }
}

/// Defaulting and allocation for the served kinds, as upstream's admission and registry do it.
public struct Admission: Sendable {
    public let allocator: Allocator

    public init(allocator: Allocator = Allocator()) { self.allocator = allocator }

    static func randomSuffix() -> String {
        let chars = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in chars.randomElement()! })
    }

    /// Kinds whose spec changes bump `metadata.generation`.
    static func hasGeneration(_ r: ResourceInfo) -> Bool { ["deployments", "replicasets"].contains(r.resource) }

    /// What a stored Service holds of the allocator's: (addresses, node ports).
    static func allocations(_ svc: JSONValue) -> (ips: [String], ports: [Int]) {
        let ips = (svc[path: ["spec", "clusterIPs"]]?.array?.compactMap(\.string) ?? [svc[path: ["spec", "clusterIP"]]?.string].compactMap { $0 })
            .filter { $0 != "None" && !$0.isEmpty }
        var ports = (svc[path: ["spec", "ports"]]?.array ?? []).compactMap { $0["nodePort"]?.int }.map(Int.init)
        if let h = svc[path: ["spec", "healthCheckNodePort"]]?.int { ports.append(Int(h)) }
        return (ips, ports)
    }

    /// Marks what the stored Services hold as taken (at start).
    public func load(from store: any Store) async throws {
        guard let services = Resources.find(group: "", version: "v1", resource: "services") else { return }
        let page = try await store.list(prefix: services.storePrefix, after: nil, limit: 0, revision: nil)
        for kv in page.items {
            guard let o = try? JSONValue.parse(kv.value) else { continue }
            let (ips, ports) = Self.allocations(o)
            for ip in ips { _ = await allocator.take(ip: ip) }
            for p in ports { _ = await allocator.take(port: p) }
        }
    }

    /// Gives back what a deleted (or never stored) object held.
    func release(_ o: JSONValue, _ r: ResourceInfo) async {
        guard r.resource == "services", r.group.isEmpty else { return }
        let (ips, ports) = Self.allocations(o)
        for ip in ips { await allocator.release(ip: ip) }
        for p in ports { await allocator.release(port: p) }
    }

    /// Defaults `o`, validates it, and allocates what it needs (only once it is known valid, so
    /// nothing is allocated for an object that will be refused); `old` is the stored object on an update.
    /// With `dryRun` (`?dryRun=All`) the object comes out as it would be stored, allocations
    /// included, but what it took is given back and nothing the stored object holds is released.
    func admit(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, store: any Store, dryRun: Bool = false) async throws {
        defaults(&o, r)
        try Validation.check(o, r, name: o[path: ["metadata", "name"]]?.string ?? "")
        if r.group.isEmpty && r.resource == "services" { try await allocate(&o, old: old, r, dryRun: dryRun) }
    }

    func defaults(_ o: inout JSONValue, _ r: ResourceInfo) {
        switch (r.group, r.resource) {
        case ("", "namespaces"):
            o[path: ["status", "phase"]] = o[path: ["status", "phase"]] ?? "Active"
            if o[path: ["spec", "finalizers"]] == nil { o[path: ["spec", "finalizers"]] = ["kubernetes"] }
            var labels = o[path: ["metadata", "labels"]]?.object ?? [:]
            if let n = o[path: ["metadata", "name"]]?.string { labels["kubernetes.io/metadata.name"] = .string(n) }
            o[path: ["metadata", "labels"]] = .object(labels)
        case ("", "services"):
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
        case ("", "secrets"):
            if (o["type"]?.string ?? "").isEmpty { o["type"] = "Opaque" }
        case ("", "pods"):
            if o[path: ["status", "phase"]] == nil { o[path: ["status", "phase"]] = "Pending" }
            if var spec = o["spec"] {
                Self.defaultPodSpec(&spec)
                o["spec"] = spec
            }
        case ("apps", "deployments"), ("apps", "replicasets"):
            if o[path: ["spec", "replicas"]] == nil { o[path: ["spec", "replicas"]] = 1 }
            if r.resource == "deployments" {
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
                Self.defaultPodSpec(&spec)
                o[path: ["spec", "template", "spec"]] = spec
            }
        default:
            break
        }
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

    /// A (valid, defaulted) Service's ClusterIP and NodePorts.
    func allocate(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, dryRun: Bool = false) async throws {
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        var spec = o["spec"]?.object ?? [:]
        let type = spec["type"]?.string ?? "ClusterIP"
        var ports = spec["ports"]?.array ?? []
        guard type != "ExternalName" else { return }
        var taken: [() async -> Void] = []
        func undo() async { for u in taken { await u() } }
        do {
            // The ClusterIP: immutable once set; allocated when empty; taken as asked otherwise.
            let oldIP = old?[path: ["spec", "clusterIP"]]?.string
            var ip = spec["clusterIP"]?.string ?? ""
            if let oldIP, !oldIP.isEmpty {
                if ip.isEmpty { ip = oldIP }
                guard ip == oldIP else {
                    throw APIError.invalid(r, name, [FieldError("spec.clusterIPs[0]", "Invalid value: \"\(ip)\": may not change once set")])
                }
            } else if ip.isEmpty {
                guard let a = await allocator.allocateIP() else {
                    throw APIError.internal("failed to allocate a serviceIP: range is full")
                }
                ip = a
                taken.append { await self.allocator.release(ip: a) }
            } else if ip != "None" {
                guard await allocator.take(ip: ip) else {
                    let inRange = IPAddress(ip).map { allocator.serviceRange.contains($0) } ?? false
                    throw APIError.invalid(r, name, [FieldError("spec.clusterIPs", inRange
                        ? "Invalid value: [\"\(ip)\"]: failed to allocate IP \(ip): provided IP is already allocated"
                        : "Invalid value: [\"\(ip)\"]: failed to allocate IP \(ip): the provided IP (\(ip)) is not in the valid range. The range of valid IPs is \(allocator.serviceRange)")])
                }
                taken.append { await self.allocator.release(ip: ip) }
            }
            spec["clusterIP"] = .string(ip)
            spec["clusterIPs"] = [.string(ip)]
            if ip != "None" {
                spec["ipFamilies"] = ["IPv4"]
                spec["ipFamilyPolicy"] = spec["ipFamilyPolicy"] ?? "SingleStack"
            }
            // NodePorts for NodePort and LoadBalancer Services; kept across updates.
            let oldPorts = old?[path: ["spec", "ports"]]?.array ?? []
            let oldHeld = Set(Self.allocations(old ?? .null).ports)
            var nowHeld = Set<Int>()
            if type == "NodePort" || type == "LoadBalancer" {
                for i in ports.indices {
                    if let want = ports[i]["nodePort"]?.int.map(Int.init), want != 0 {
                        if oldHeld.contains(want) { nowHeld.insert(want); continue }
                        guard await allocator.take(port: want) else {
                            throw APIError.invalid(r, name, [FieldError("spec.ports[\(i)].nodePort", "Invalid value: \(want): provided port is already allocated")])
                        }
                        taken.append { await self.allocator.release(port: want) }
                        nowHeld.insert(want)
                    } else if let same = oldPorts.first(where: { $0["port"] == ports[i]["port"] && $0["protocol"] == ports[i]["protocol"] })?["nodePort"]?.int {
                        ports[i]["nodePort"] = .int(same)
                        nowHeld.insert(Int(same))
                    } else {
                        guard let p = await allocator.allocatePort() else { throw APIError.internal("failed to allocate a nodePort: range is full") }
                        taken.append { await self.allocator.release(port: p) }
                        ports[i]["nodePort"] = .int(Int64(p))
                        nowHeld.insert(p)
                    }
                }
                spec["ports"] = .array(ports)
                if type == "LoadBalancer" && spec["externalTrafficPolicy"]?.string == "Local" {
                    if let h = spec["healthCheckNodePort"]?.int.map(Int.init), h != 0 {
                        if !oldHeld.contains(h) {
                            guard await allocator.take(port: h) else {
                                throw APIError.invalid(r, name, [FieldError("spec.healthCheckNodePort", "Invalid value: \(h): provided port is already allocated")])
                            }
                            taken.append { await self.allocator.release(port: h) }
                        }
                        nowHeld.insert(h)
                    } else if let oh = old?[path: ["spec", "healthCheckNodePort"]]?.int {
                        spec["healthCheckNodePort"] = .int(oh)
                        nowHeld.insert(Int(oh))
                    } else {
                        guard let p = await allocator.allocatePort() else { throw APIError.internal("failed to allocate a nodePort: range is full") }
                        taken.append { await self.allocator.release(port: p) }
                        spec["healthCheckNodePort"] = .int(Int64(p))
                        nowHeld.insert(p)
                    }
                } else {
                    spec["healthCheckNodePort"] = nil
                }
            } else {
                for i in ports.indices { ports[i]["nodePort"] = nil }
                if !ports.isEmpty { spec["ports"] = .array(ports) }
                spec["healthCheckNodePort"] = nil
            }
            // Ports the update no longer holds go back.
            if dryRun {
                await undo()
            } else {
                for p in oldHeld.subtracting(nowHeld) { await allocator.release(port: p) }
            }
            o["spec"] = .object(spec)
        } catch {
            await undo()
            throw error
        }
    }
}

/// Validation of the served kinds: names as upstream requires them, and for Services and
/// EndpointSlices the proxy's own validation (what passes is safe to program).
enum Validation {
    static func check(_ o: JSONValue, _ r: ResourceInfo, name: String) throws {
        var errs: [FieldError] = []
        if name.isEmpty {
            errs.append(FieldError("metadata.name", "Required value: name or generateName is required"))
        } else if r.resource != "services" {   // a Service's name is a DNS-1035 label: checked with the rest of it below
            let label = r.resource == "namespaces"
            let ok = label ? KubeAPI.Validation.isDNS1123Label(name) : KubeAPI.Validation.isDNS1123Subdomain(name)
            if !ok {
                errs.append(FieldError("metadata.name", label
                    ? "Invalid value: \"\(name)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                    : "Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))
            }
        }
        if let labels = o[path: ["metadata", "labels"]] {
            guard case .object(let l) = labels, l.values.allSatisfy({ $0.string != nil }) else {
                throw APIError.badRequest("metadata.labels must be a map of strings")
            }
        }
        func data() -> Data { o.serialized() }
        switch (r.group, r.resource) {
        case ("", "services"):
            if errs.isEmpty {
                do {
                    let svc = try JSONDecoder().decode(Service.self, from: data())
                    errs += KubeAPI.Validation.validate(svc)
                } catch {
                    throw APIError.badRequest("Service in version \"v1\" cannot be handled as a Service: \(JSONValue.describe(error))")
                }
            }
        case ("discovery.k8s.io", "endpointslices"):
            do {
                let s = try JSONDecoder().decode(EndpointSlice.self, from: data())
                errs += KubeAPI.Validation.validate(s)
            } catch {
                throw APIError.badRequest("EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: \(JSONValue.describe(error))")
            }
        case ("", "pods"):
            let containers = o[path: ["spec", "containers"]]?.array ?? []
            if containers.isEmpty { errs.append(FieldError("spec.containers", "Required value")) }
            for (i, c) in containers.enumerated() {
                if (c["name"]?.string ?? "").isEmpty { errs.append(FieldError("spec.containers[\(i)].name", "Required value")) }
                if (c["image"]?.string ?? "").isEmpty { errs.append(FieldError("spec.containers[\(i)].image", "Required value")) }
            }
        case ("apps", "deployments"), ("apps", "replicasets"):
            let sel = o[path: ["spec", "selector", "matchLabels"]]?.object ?? [:]
            let tpl = o[path: ["spec", "template", "metadata", "labels"]]?.object ?? [:]
            if sel.isEmpty && o[path: ["spec", "selector", "matchExpressions"]] == nil {
                errs.append(FieldError("spec.selector", "Required value"))
            } else if !sel.allSatisfy({ tpl[$0.key] == $0.value }) {
                errs.append(FieldError("spec.template.metadata.labels", "Invalid value: \(JSONValue.object(tpl).text()): `selector` does not match template `labels`"))
            }
            if let n = o[path: ["spec", "replicas"]]?.int, n < 0 {
                errs.append(FieldError("spec.replicas", "Invalid value: \(n): must be greater than or equal to 0"))
            }
        default:
            break
        }
        if !errs.isEmpty { throw APIError.invalid(r, name, errs) }
    }
}
