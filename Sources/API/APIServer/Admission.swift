import Foundation
import KubeAPI
import KubeStore

/// Hands out ClusterIPs and NodePorts, never one twice: what is in use is rebuilt from the
/// stored Services at start, taken when a Service is admitted, and given back when it is deleted
/// (or when its create fails).
///
/// Several API servers on one etcd each keep such a set, and one server's set does not see what
/// another just handed out. With `claims`, each address and port is also a key in the store,
/// made with a create that fails when the key exists (current kube-apiserver's IPAddress objects,
/// `/registry/ipaddresses/IP`, work the same way): the store decides, and the set in memory is
/// the first guess. A key another server made is marked taken here too.
public actor Allocator {
    /// The service ranges, one per family, the primary (`--service-cluster-ip-range`'s first) first.
    public let serviceRanges: [CIDR]
    public let nodePorts: ClosedRange<Int>
    let claims: (any AllocationClaims)?
    /// Per range (same index as `serviceRanges`): offsets in use, and the last one handed out.
    private var usedIPs: [Set<UInt32>]
    private var nextIP: [UInt32]
    private var usedPorts = Set<Int>()
    private var nextPort: Int

    /// The largest range: 2^20 addresses (an IPv4 /12, an IPv6 /108), as kube-apiserver's bitmap allocator.
    public static let maxRangeBits = 20

    public init(serviceRange: CIDR = CIDR("10.96.0.0/12")!, nodePorts: ClosedRange<Int> = 30000...32767, claims: (any AllocationClaims)? = nil) {
        self.init(serviceRanges: [serviceRange], nodePorts: nodePorts, claims: claims)
    }

    /// `serviceRanges`: one or two ranges of different families (dual-stack), the primary first.
    public init(serviceRanges: [CIDR], nodePorts: ClosedRange<Int> = 30000...32767, claims: (any AllocationClaims)? = nil) {
        precondition(!serviceRanges.isEmpty && serviceRanges.count <= 2, "one or two service ranges")
        self.serviceRanges = serviceRanges.map(\.network)
        self.nodePorts = nodePorts
        self.claims = claims
        usedIPs = Array(repeating: [], count: serviceRanges.count)
        nextIP = Array(repeating: 0, count: serviceRanges.count)
        nextPort = nodePorts.lowerBound
    }

    /// The primary range.
    public nonisolated var serviceRange: CIDR { serviceRanges[0] }
    /// The families services may have here, the primary first.
    public nonisolated var families: [IPFamily] { serviceRanges.map(\.family) }
    public nonisolated func range(for family: IPFamily) -> CIDR? { serviceRanges.first { $0.family == family } }

    /// Addresses in range `i` (at most 2^maxRangeBits).
    nonisolated func size(_ i: Int) -> UInt32 {
        let bits = (serviceRanges[i].family == .ipv4 ? 32 : 128) - serviceRanges[i].prefixLength
        return bits >= Self.maxRangeBits ? UInt32(1) << UInt32(Self.maxRangeBits) : UInt32(1) << UInt32(bits)
    }

    /// Which range holds `ip`, and its offset there.
    nonisolated func locate(_ ip: IPAddress) -> (range: Int, offset: UInt32)? {
        guard let i = serviceRanges.firstIndex(where: { $0.contains(ip) }) else { return nil }
        let b = ip.bytes, base = serviceRanges[i].address.bytes
        // The offset is in the last 32 bits (ranges are at most 2^20 addresses); an IPv6 address
        // that differs above them is outside the range's first 2^20.
        guard b.dropLast(4).elementsEqual(base.dropLast(4)) else { return nil }
        let low = b.suffix(4).reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }
        let baseLow = base.suffix(4).reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }
        let offset = low &- baseLow
        guard offset < size(i) else { return nil }
        return (i, offset)
    }

    /// The address `offset` into range `i` (offset 1: the `kubernetes` Service's, in the primary range).
    public nonisolated func address(range i: Int, offset: UInt32) -> IPAddress {
        let base = serviceRanges[i].address
        if base.family == .ipv4 { return IPAddress(ipv4: base.ipv4Value! + offset) }
        var b = base.bytes
        let low = b.suffix(4).reduce(UInt32(0)) { ($0 << 8) | UInt32($1) } + offset
        for k in 0..<4 { b[12 + k] = UInt8((low >> UInt32(24 - 8 * k)) & 0xff) }
        return IPAddress(bytes: b)!
    }

    static func ipKey(_ ip: String) -> String { "/registry/ipaddresses/\(ip)" }
    static func portKey(_ port: Int) -> String { "/registry/servicenodeports/\(port)" }

    static func ipClaim(_ ip: String) -> Data {
        let family = ip.utf8.contains(UInt8(ascii: ":")) ? "IPv6" : "IPv4"
        let o: JSONValue = ["apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
                            "metadata": ["name": .string(ip), "labels": ["ipaddress.kubernetes.io/ip-family": .string(family),
                                                                       "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"]]]
        return o.serialized()
    }

    static func portClaim(_ port: Int) -> Data { Data("{\"nodePort\":\(port)}".utf8) }

    /// Marks an address in use; false if it was already (or is outside every range). With claims,
    /// an address this server thinks taken is looked up in the store (another server may have
    /// given it back).
    public func take(ip: String) async throws -> Bool {
        guard let a = IPAddress(ip), let (i, v) = locate(a) else { return false }
        let name = a.description
        guard let claims else { return usedIPs[i].insert(v).inserted }
        let fresh = usedIPs[i].insert(v).inserted
        do { return try await claims.claim(Self.ipKey(name), Self.ipClaim(name)) } catch {
            if fresh { usedIPs[i].remove(v) }
            throw error
        }
    }

    /// The next free address of the primary family.
    public func allocateIP() async throws -> String? { try await allocateIP(family: serviceRanges[0].family) }

    /// The next free address of `family` (round robin, skipping the network address and the first
    /// host, which upstream keeps for the `kubernetes` Service, and IPv4's broadcast address);
    /// nil when the range is full or the family has none here.
    public func allocateIP(family: IPFamily) async throws -> String? {
        guard let i = serviceRanges.firstIndex(where: { $0.family == family }) else { return nil }
        let size = size(i)
        let last = family == .ipv4 ? size - 1 : size   // one past the last address handed out
        guard last > 2 else { return nil }
        for _ in 0..<size {
            nextIP[i] = nextIP[i] + 1 >= last ? 2 : max(nextIP[i] + 1, 2)
            let v = nextIP[i]
            guard usedIPs[i].insert(v).inserted else { continue }
            let ip = address(range: i, offset: v).description
            do {
                if try await claims?.claim(Self.ipKey(ip), Self.ipClaim(ip)) ?? true { return ip }
            } catch {
                usedIPs[i].remove(v)
                throw error
            }
        }
        return nil
    }

    public func release(ip: String) async {
        guard let a = IPAddress(ip), let (i, v) = locate(a) else { return }
        // The store's key first: until it is gone, this server does not hand the address out again.
        await claims?.release(Self.ipKey(a.description))
        usedIPs[i].remove(v)
    }

    public func take(port: Int) async throws -> Bool {
        guard nodePorts.contains(port) else { return false }
        guard let claims else { return usedPorts.insert(port).inserted }
        let fresh = usedPorts.insert(port).inserted
        do { return try await claims.claim(Self.portKey(port), Self.portClaim(port)) } catch {
            if fresh { usedPorts.remove(port) }
            throw error
        }
    }

    public func allocatePort() async throws -> Int? {
        for _ in 0..<nodePorts.count {
            let p = nextPort
            nextPort = nextPort >= nodePorts.upperBound ? nodePorts.lowerBound : nextPort + 1
            guard usedPorts.insert(p).inserted else { continue }
            do {
                if try await claims?.claim(Self.portKey(p), Self.portClaim(p)) ?? true { return p }
            } catch {
                usedPorts.remove(p)
                throw error
            }
        }
        return nil
    }

    public func release(port: Int) async {
        await claims?.release(Self.portKey(port))
        usedPorts.remove(port)
    }

    /// The keys of the claims in the store (none without claims).
    func claimed() async throws -> Set<String> {
        guard let claims else { return [] }
        return try await claims.existing(prefixes: ["/registry/ipaddresses/", "/registry/servicenodeports/"])
    }

    /// Marks what a stored Service holds (at start), and claims it in the store if no key of
    /// `claimed` says so yet (a Service stored before there were claims).
    func mark(ip: String, claimed: Set<String>) async throws {
        guard let a = IPAddress(ip), let (i, v) = locate(a) else { return }
        usedIPs[i].insert(v)
        let name = a.description
        if !claimed.contains(Self.ipKey(name)) { _ = try await claims?.claim(Self.ipKey(name), Self.ipClaim(name)) }
    }

    func mark(port: Int, claimed: Set<String>) async throws {
        guard nodePorts.contains(port) else { return }
        usedPorts.insert(port)
        if !claimed.contains(Self.portKey(port)) { _ = try await claims?.claim(Self.portKey(port), Self.portClaim(port)) }
    }
}

/// Keys that stand for an allocation: made by a create that fails when the key exists.
public protocol AllocationClaims: Sendable {
    /// Makes the key; false when it exists (someone holds it).
    func claim(_ key: String, _ value: Data) async throws -> Bool
    /// Removes the key, if it is there.
    func release(_ key: String) async
    /// The keys under `prefixes` now.
    func existing(prefixes: [String]) async throws -> Set<String>
}

/// Claims as keys of the store the servers share.
public struct StoreClaims: AllocationClaims {
    let store: any Store
    public init(store: any Store) { self.store = store }

    public func claim(_ key: String, _ value: Data) async throws -> Bool {
        do {
            try await store.create(key, value: value)
            return true
        } catch StoreError.exists {
            return false
        }
    }

    public func release(_ key: String) async {
        _ = try? await store.delete(key, expected: nil)
    }

    public func existing(prefixes: [String]) async throws -> Set<String> {
        var keys = Set<String>()
        for p in prefixes { keys.formUnion(try await store.list(prefix: p, after: nil, limit: 0, revision: nil).items.map(\.key)) }
        return keys
    }
}

/// Defaulting and allocation for the served kinds, as upstream's admission and registry do it.
public struct Admission: Sendable {
    public let allocator: Allocator

    public init(allocator: Allocator = Allocator()) { self.allocator = allocator }

    static func randomSuffix() -> String {
        let chars = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in chars.randomElement()! })
    }


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
        // The claims already made, read once: only what a Service holds without one is claimed.
        let claimed = try await allocator.claimed()
        for kv in page.items {
            guard let o = try? JSONValue.parse(kv.value) else { continue }
            let (ips, ports) = Self.allocations(o)
            for ip in ips { try await allocator.mark(ip: ip, claimed: claimed) }
            for p in ports { try await allocator.mark(port: p, claimed: claimed) }
        }
    }

    /// Undoes the allocations of an update that was not stored: releases what `new` holds and
    /// `old` does not, and takes again what `old` holds and `new` does not.
    func undo(update new: JSONValue, of old: JSONValue, _ r: ResourceInfo) async {
        guard r.resource == "services", r.group.isEmpty else { return }
        let (newIPs, newPorts) = Self.allocations(new), (oldIPs, oldPorts) = Self.allocations(old)
        for ip in Set(newIPs).subtracting(oldIPs) { await allocator.release(ip: ip) }
        for p in Set(newPorts).subtracting(oldPorts) { await allocator.release(port: p) }
        for ip in Set(oldIPs).subtracting(newIPs) { _ = try? await allocator.take(ip: ip) }
        for p in Set(oldPorts).subtracting(newPorts) { _ = try? await allocator.take(port: p) }
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
        if r.group.isEmpty && r.resource == "pods" && old == nil {
            try await Self.priority(&o, store: store)
            Self.defaultTolerations(&o)
        }
        try Validation.check(o, r, name: o[path: ["metadata", "name"]]?.string ?? "")
        if r.group.isEmpty && r.resource == "services" { try await allocate(&o, old: old, r, dryRun: dryRun) }
    }

    /// The Priority admission plugin: a new Pod's `priority` (and `preemptionPolicy`) from its
    /// `priorityClassName`, else from the global default class, else 0.
    static func priority(_ o: inout JSONValue, store: any Store) async throws {
        let classes = Resources.find(group: "scheduling.k8s.io", version: "v1", resource: "priorityclasses")!
        var chosen: JSONValue?
        if let name = o[path: ["spec", "priorityClassName"]]?.string, !name.isEmpty {
            guard let kv = try await store.get(classes.key(namespace: nil, name: name)), let c = try? JSONValue.parse(kv.value) else {
                throw APIError(code: 403, reason: "Forbidden", message: "pods \"\(o[path: ["metadata", "name"]]?.string ?? "")\" is forbidden: no PriorityClass with name \(name) was found")
            }
            chosen = c
        } else {
            chosen = try await store.list(prefix: classes.storePrefix, after: nil, limit: 0, revision: nil).items
                .compactMap { try? JSONValue.parse($0.value) }.first { $0["globalDefault"]?.bool == true }
            if let chosen { o[path: ["spec", "priorityClassName"]] = .string(chosen.name) }
        }
        let value = chosen?["value"]?.int ?? 0
        if let given = o[path: ["spec", "priority"]]?.int, given != value {
            throw APIError(code: 403, reason: "Forbidden", message: "pods \"\(o[path: ["metadata", "name"]]?.string ?? "")\" is forbidden: the integer value of priority (\(given)) must not be provided in pod spec; priority admission controller computed \(value) from the given PriorityClass name")
        }
        o[path: ["spec", "priority"]] = .int(value)
        o[path: ["spec", "preemptionPolicy"]] = .string(chosen?["preemptionPolicy"]?.string ?? "PreemptLowerPriority")
    }

    /// The DefaultTolerationSeconds admission plugin: 300 s tolerations of the not-ready and
    /// unreachable NoExecute taints, unless the Pod tolerates them already.
    static func defaultTolerations(_ o: inout JSONValue) {
        var tolerations = o[path: ["spec", "tolerations"]]?.array ?? []
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            let covered = tolerations.contains { t in
                let k = t["key"]?.string ?? "", op = t["operator"]?.string ?? "Equal", effect = t["effect"]?.string ?? ""
                return (k == key || (k.isEmpty && op == "Exists")) && (effect.isEmpty || effect == "NoExecute")
            }
            if !covered {
                tolerations.append(["key": .string(key), "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300])
            }
        }
        o[path: ["spec", "tolerations"]] = .array(tolerations)
    }

    func defaults(_ o: inout JSONValue, _ r: ResourceInfo) { r.strategy.defaults(&o) }

    /// A (valid, defaulted) Service's ClusterIP and NodePorts.
    func allocate(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, dryRun: Bool = false) async throws {
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        var spec = o["spec"]?.object ?? [:]
        let type = spec["type"]?.string ?? "ClusterIP"
        var ports = spec["ports"]?.array ?? []
        var taken: [() async -> Void] = []
        func undo() async { for u in taken { await u() } }
        // The address fields as upstream's registry prepares them, then allocation.
        var fields = ServiceIPFields(spec: spec)
        let oldFields = (old?["spec"]?.object).map(ServiceIPFields.init(spec:))
        if let oldFields { fields.patchAllocated(from: oldFields) }
        fields.normalize(old: oldFields)
        fields.dropForExternalName(old: oldFields)
        if type == "ExternalName" {
            let errs = fields.relatedFieldErrors()
            if !errs.isEmpty { throw APIError.invalid(r, name, errs) }
            fields.write(into: &spec)
            o["spec"] = .object(spec)
            // What the Service held before it became an ExternalName goes back.
            if !dryRun, let old {
                let (ips, heldPorts) = Self.allocations(old)
                for ip in ips { await allocator.release(ip: ip) }
                for p in heldPorts { await allocator.release(port: p) }
            }
            return
        }
        let familyErrors = fields.initFamilies(old: oldFields, cluster: allocator.families)
        if !familyErrors.isEmpty { throw APIError.invalid(r, name, familyErrors) }
        do {
            try await allocateClusterIPs(&fields, old: oldFields, r, name: name, taken: &taken)
            if let oldFields {
                let errs = fields.upgradeDowngradeErrors(old: oldFields)
                if !errs.isEmpty { throw APIError.invalid(r, name, errs) }
            }
            fields.write(into: &spec)
            // NodePorts for NodePort and LoadBalancer Services; kept across updates.
            let oldPorts = old?[path: ["spec", "ports"]]?.array ?? []
            let oldHeld = Set(Self.allocations(old ?? .null).ports)
            var nowHeld = Set<Int>()
            if type == "NodePort" || type == "LoadBalancer" {
                for i in ports.indices {
                    if let want = ports[i]["nodePort"]?.int.map(Int.init), want != 0 {
                        if oldHeld.contains(want) { nowHeld.insert(want); continue }
                        guard try await allocator.take(port: want) else {
                            throw APIError.invalid(r, name, [FieldError("spec.ports[\(i)].nodePort", "Invalid value: \(want): provided port is already allocated")])
                        }
                        taken.append { await self.allocator.release(port: want) }
                        nowHeld.insert(want)
                    } else if let same = oldPorts.first(where: { $0["port"] == ports[i]["port"] && $0["protocol"] == ports[i]["protocol"] })?["nodePort"]?.int {
                        ports[i]["nodePort"] = .int(same)
                        nowHeld.insert(Int(same))
                    } else {
                        guard let p = try await allocator.allocatePort() else { throw APIError.internal("failed to allocate a nodePort: range is full") }
                        taken.append { await self.allocator.release(port: p) }
                        ports[i]["nodePort"] = .int(Int64(p))
                        nowHeld.insert(p)
                    }
                }
                spec["ports"] = .array(ports)
                if type == "LoadBalancer" && spec["externalTrafficPolicy"]?.string == "Local" {
                    if let h = spec["healthCheckNodePort"]?.int.map(Int.init), h != 0 {
                        if !oldHeld.contains(h) {
                            guard try await allocator.take(port: h) else {
                                throw APIError.invalid(r, name, [FieldError("spec.healthCheckNodePort", "Invalid value: \(h): provided port is already allocated")])
                            }
                            taken.append { await self.allocator.release(port: h) }
                        }
                        nowHeld.insert(h)
                    } else if let oh = old?[path: ["spec", "healthCheckNodePort"]]?.int {
                        spec["healthCheckNodePort"] = .int(oh)
                        nowHeld.insert(Int(oh))
                    } else {
                        guard let p = try await allocator.allocatePort() else { throw APIError.internal("failed to allocate a nodePort: range is full") }
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
            // Addresses and ports the update no longer holds go back (a downgrade's secondary address).
            if dryRun {
                await undo()
            } else {
                for p in oldHeld.subtracting(nowHeld) { await allocator.release(port: p) }
                let nowIPs = Set(fields.clusterIPs)
                for ip in Self.allocations(old ?? .null).ips where !nowIPs.contains(ip) { await allocator.release(ip: ip) }
            }
            o["spec"] = .object(spec)
        } catch {
            await undo()
            throw error
        }
    }
}

extension Admission {
    /// The addresses of `fields` (families already defaulted): on create (or from ExternalName),
    /// one per family, taken as asked or allocated; on an update, only an upgrade's secondary.
    /// What is taken is added to `taken` as its undo.
    func allocateClusterIPs(_ fields: inout ServiceIPFields, old: ServiceIPFields?, _ r: ResourceInfo, name: String,
                            taken: inout [() async -> Void]) async throws {
        if fields.matchesPreferDualStack(old: old) { return }
        var indices: [Int]
        if let old, old.type != "ExternalName" {
            if old.isHeadless { return }
            guard old.ipFamilies.count == 1 && fields.ipFamilies.count == 2 else { return }   // only an upgrade allocates
            indices = [1]
        } else {
            if fields.clusterIPs.first == ServiceIPFields.none { return }
            indices = Array(fields.ipFamilies.indices)
        }
        for i in indices {
            if i >= fields.clusterIPs.count { fields.clusterIPs.append("") }
            let family: IPFamily = fields.ipFamilies[i] == "IPv6" ? .ipv6 : .ipv4
            let want = fields.clusterIPs[i]
            if want.isEmpty {
                guard let a = try await allocator.allocateIP(family: family) else {
                    throw APIError.internal("failed to allocate a serviceIP: range is full")
                }
                taken.append { await self.allocator.release(ip: a) }
                fields.clusterIPs[i] = a
            } else {
                guard try await allocator.take(ip: want) else {
                    let range = allocator.range(for: family)
                    let inRange = IPAddress(want).map { range?.contains($0) ?? false } ?? false
                    let ips = ServiceIPFields.goStrings(fields.clusterIPs)
                    throw APIError.invalid(r, name, [FieldError("spec.clusterIPs", inRange
                        ? "Invalid value: \(ips): failed to allocate IP \(want): provided IP is already allocated"
                        : "Invalid value: \(ips): failed to allocate IP \(want): the provided IP (\(want)) is not in the valid range. The range of valid IPs is \(range?.description ?? "")")])
                }
                taken.append { await self.allocator.release(ip: want) }
            }
        }
        fields.clusterIP = fields.clusterIPs[0]
    }
}

/// Validation of the served kinds: names as upstream requires them, and for Services and
/// EndpointSlices the proxy's own validation (what passes is safe to program).
enum Validation {
    static func check(_ o: JSONValue, _ r: ResourceInfo, name: String) throws {
        var errs: [FieldError] = []
        if name.isEmpty {
            errs.append(FieldError("metadata.name", "Required value: name or generateName is required"))
        } else {
            switch r.strategy.names {
            case .label where !KubeAPI.Validation.isDNS1123Label(name):
                errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"))
            case .subdomain where !KubeAPI.Validation.isDNS1123Subdomain(name):
                errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))
            case .dns1035 where !KubeAPI.Validation.isDNS1035Label(name):
                errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"))
            default: break
            }
        }
        if let labels = o[path: ["metadata", "labels"]] {
            guard case .object(let l) = labels, l.values.allSatisfy({ $0.string != nil }) else {
                throw APIError.badRequest("metadata.labels must be a map of strings")
            }
        }
        // A Service's name is checked with the rest of it: only when its name is there.
        if errs.isEmpty || r.strategy.names != .any { errs += try r.strategy.validate(o, r) }
        if !errs.isEmpty { throw APIError.invalid(r, name, errs) }
    }
}
