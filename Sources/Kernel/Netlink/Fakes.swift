import Foundation

/// The IPVS a proxy programs: virtual services and their real servers, and the sysctls the IPVS
/// mode sets where IPVS runs. `IPVS` is the kernel's; `FakeIPVS` is for unit tests.
public protocol IPVSInterface: AnyObject, Sendable {
    func addService(_ s: IPVSService) throws
    func updateService(_ s: IPVSService) throws
    func deleteService(_ s: IPVSService) throws
    func services() throws -> [IPVSService]
    func addDestination(_ d: IPVSDestination, to s: IPVSService) throws
    func updateDestination(_ d: IPVSDestination, of s: IPVSService) throws
    func deleteDestination(_ d: IPVSDestination, from s: IPVSService) throws
    func destinations(of s: IPVSService) throws -> [IPVSDestination]
    /// Writes a sysctl in the namespace IPVS is programmed in.
    func setSysctl(_ key: String, _ value: String) throws
}

extension IPVS: IPVSInterface {
    public func setSysctl(_ key: String, _ value: String) throws { try namespace.setSysctl(key, value) }
}

/// The links and addresses a proxy manages (the IPVS mode's kube-ipvs0 and its addresses).
/// `RouteHandle` is the kernel's; `FakeLinks` is for unit tests.
public protocol LinkInterface: AnyObject, Sendable {
    func link(named name: String) throws -> Link?
    func mustLink(_ name: String) throws -> Link
    func addDummy(_ name: String, mtu: UInt32?) throws
    func deleteLink(_ name: String) throws
    func addresses(of name: String?) throws -> [Address]
    func addresses(of l: Link) throws -> [Address]
    func addAddress(_ l: Link, _ a: IPNet, noDAD: Bool) throws
    func deleteAddress(_ name: String, _ a: IPNet) throws
}

extension RouteHandle: LinkInterface {}

/// What the fakes of kernel facilities share: one lock, a count of the calls that change
/// something, and a failure injected into the next one.
public class FakeFacility: @unchecked Sendable {
    let lock = NSLock()
    /// Calls that change something, since the start.
    public private(set) var operations = 0
    /// When set, the next call that changes something fails with this errno and changes nothing.
    public var failNext: Int32?

    public init() {}

    /// Runs a change under the lock, counted, or fails it when a failure is due.
    func change<T>(_ what: String, _ body: () throws -> T) throws -> T {
        try lock.withLock {
            operations += 1
            if let e = failNext {
                failNext = nil
                throw NetlinkError(errno: e, what: "\(what) (fake failure)")
            }
            return try body()
        }
    }
}

/// An in-memory IPVS that refuses what the kernel refuses (a service twice, a real server of a
/// service that is not there), counts every call, and fails the next one when told.
public final class FakeIPVS: FakeFacility, IPVSInterface, @unchecked Sendable {
    private var table: [(service: IPVSService, destinations: [IPVSDestination])] = []
    public private(set) var sysctls: [String: String] = [:]

    public override init() {}


    private func index(_ s: IPVSService) -> Int? { table.firstIndex { $0.service.sameService(s) } }

    public func addService(_ s: IPVSService) throws {
        try change("add virtual service") {
            guard index(s) == nil else { throw NetlinkError(errno: EEXIST, what: "add virtual service") }
            table.append((s, []))
        }
    }

    public func updateService(_ s: IPVSService) throws {
        try change("update virtual service") {
            guard let i = index(s) else { throw NetlinkError(errno: ESRCH, what: "update virtual service") }
            table[i].service = s
        }
    }

    public func deleteService(_ s: IPVSService) throws {
        try change("delete virtual service") {
            guard let i = index(s) else { throw NetlinkError(errno: ESRCH, what: "delete virtual service") }
            table.remove(at: i)
        }
    }

    public func services() throws -> [IPVSService] { lock.withLock { table.map(\.service) } }

    public func addDestination(_ d: IPVSDestination, to s: IPVSService) throws {
        try change("add real server") {
            guard let i = index(s) else { throw NetlinkError(errno: ESRCH, what: "add real server") }
            guard !table[i].destinations.contains(where: { $0.sameDestination(d) }) else { throw NetlinkError(errno: EEXIST, what: "add real server") }
            table[i].destinations.append(d)
        }
    }

    public func updateDestination(_ d: IPVSDestination, of s: IPVSService) throws {
        try change("update real server") {
            guard let i = index(s), let j = table[i].destinations.firstIndex(where: { $0.sameDestination(d) }) else {
                throw NetlinkError(errno: ENOENT, what: "update real server")
            }
            table[i].destinations[j] = d
        }
    }

    public func deleteDestination(_ d: IPVSDestination, from s: IPVSService) throws {
        try change("delete real server") {
            guard let i = index(s), let j = table[i].destinations.firstIndex(where: { $0.sameDestination(d) }) else {
                throw NetlinkError(errno: ENOENT, what: "delete real server")
            }
            table[i].destinations.remove(at: j)
        }
    }

    public func destinations(of s: IPVSService) throws -> [IPVSDestination] {
        try lock.withLock {
            guard let i = index(s) else { throw NetlinkError(errno: ESRCH, what: "list real servers") }
            return table[i].destinations
        }
    }

    public func setSysctl(_ key: String, _ value: String) throws {
        lock.withLock { sysctls[key] = value }
    }

    /// The table as `ipvsadm -Sn` would list it, sorted: one line per service and real server.
    public func dump() -> String {
        lock.withLock {
            table.map { e in
                let s = e.service
                var out = "-A \(s.fwmark != 0 ? "-f \(s.fwmark)" : "\(s.proto) \(IPNet.format(s.address)):\(s.port)") -s \(s.scheduler)"
                    + (s.flags & IPVSService.persistent != 0 ? " -p \(s.timeout)" : "") + "\n"
                for d in e.destinations.sorted(by: { ($0.address.lexicographicallyPrecedes($1.address)) || ($0.address == $1.address && $0.port < $1.port) }) {
                    out += "  -a \(IPNet.format(d.address)):\(d.port) -w \(d.weight)\n"
                }
                return out
            }.sorted().joined()
        }
    }
}

/// In-memory links and addresses: dummies only (what the proxy creates), counting every change.
public final class FakeLinks: FakeFacility, LinkInterface, @unchecked Sendable {
    private var links: [String: Link] = [:]
    private var addrs: [String: [IPNet]] = [:]
    private var nextIndex: Int32 = 100

    public override init() {}


    public func link(named name: String) throws -> Link? { lock.withLock { links[name] } }

    public func mustLink(_ name: String) throws -> Link {
        guard let l = try link(named: name) else { throw NetlinkError(errno: ENODEV, what: "no link \(name)") }
        return l
    }

    public func addDummy(_ name: String, mtu: UInt32?) throws {
        try change("add dummy \(name)") {
            guard links[name] == nil else { throw NetlinkError(errno: EEXIST, what: "add dummy \(name)") }
            nextIndex += 1
            links[name] = Link(index: nextIndex, name: name, kind: "dummy", mtu: mtu ?? 1500, mac: [], flags: 0, master: nil)
            addrs[name] = []
        }
    }

    public func deleteLink(_ name: String) throws {
        try change("delete link \(name)") {
            guard links.removeValue(forKey: name) != nil else { throw NetlinkError(errno: ENODEV, what: "delete link \(name)") }
            addrs[name] = nil
        }
    }

    public func addresses(of name: String?) throws -> [Address] {
        lock.withLock {
            links.values.filter { name == nil || $0.name == name }.flatMap { l in
                (addrs[l.name] ?? []).map { Address(index: l.index, address: $0, scope: 0) }
            }
        }
    }

    public func addresses(of l: Link) throws -> [Address] { try addresses(of: l.name) }

    public func addAddress(_ l: Link, _ a: IPNet, noDAD: Bool) throws {
        try change("add address \(a)") {
            guard links[l.name] != nil else { throw NetlinkError(errno: ENODEV, what: "add address \(a)") }
            guard !(addrs[l.name] ?? []).contains(a) else { throw NetlinkError(errno: EEXIST, what: "add address \(a)") }
            addrs[l.name, default: []].append(a)
        }
    }

    public func deleteAddress(_ name: String, _ a: IPNet) throws {
        try change("delete address \(a)") {
            guard let i = addrs[name]?.firstIndex(of: a) else { throw NetlinkError(errno: EADDRNOTAVAIL, what: "delete address \(a)") }
            addrs[name]!.remove(at: i)
        }
    }

    /// Every link with its addresses, sorted.
    public func dump() -> String {
        lock.withLock {
            links.keys.sorted().map { n in "\(n): " + (addrs[n] ?? []).map(\.description).sorted().joined(separator: " ") + "\n" }.joined()
        }
    }
}
