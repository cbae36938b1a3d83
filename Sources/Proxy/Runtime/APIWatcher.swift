import Foundation
import KubeAPI
import KubeClient
import Logging
import ServiceLifecycle
import ProxySeam
import HostOS

/// Feeds the runners from an API server: Services and EndpointSlices across all namespaces,
/// through list+watch informers (relist on 410, back-off while the server is away). Objects that
/// fail validation are left out and logged, as with manifests. A dual-stack node has a runner per
/// family (upstream's metaproxier): each gets every event, and its tracker keeps its family's part.
public struct APIWatcher: ServiceLifecycle.Service {
    let client: KubeClient
    let runners: [ProxyRunner]
    let logger: Logger
    /// Which kinds have been listed once: the first sync waits for Services and EndpointSlices
    /// (ServiceCIDRs, which an older server may not serve, are not waited for).
    let listed = ListedKinds(required: [Self.servicesPath, Self.slicesPath])
    static let servicesPath = "/api/v1/services"
    static let slicesPath = "/apis/discovery.k8s.io/v1/endpointslices"
    static let serviceCIDRsPath = "/apis/networking.k8s.io/v1/servicecidrs"

    actor ListedKinds {
        let required: Set<String>
        var paths: Set<String> = []
        init(required: Set<String>) { self.required = required }
        func add(_ path: String) -> Bool { paths.insert(path); return all }
        var all: Bool { required.isSubset(of: paths) }
    }

    public init(client: KubeClient, runners: [ProxyRunner], logger: Logger = Logger(label: "switchyard.watcher")) {
        precondition(!runners.isEmpty)
        self.client = client
        self.runners = runners
        self.logger = logger
    }

    public init(client: KubeClient, runner: ProxyRunner, logger: Logger = Logger(label: "switchyard.watcher")) {
        self.init(client: client, runners: [runner], logger: logger)
    }

    /// One change to every runner.
    func update(initializing: Bool, _ change: @escaping @Sendable (inout ChangeTracker) -> Void) async {
        for r in runners { await r.update(initializing: initializing, change) }
    }

    /// Services and slices through their fast decoders (no Codable); Codable for anything those refuse.
    static func decode<T: Decodable>(_ type: T.Type, _ o: JSONValue) -> T? {
        if let F = type as? any FastDecodable.Type, let v = F.init(fast: o) as? T { return v }
        return try? JSONDecoder().decode(type, from: o.serialized())
    }

    func service(_ o: JSONValue) -> KubeAPI.Service? {
        guard let s = Self.decode(KubeAPI.Service.self, o) else { logger.warning("skipping a Service that does not decode"); return nil }
        let errs = Validation.validate(s)
        if !errs.isEmpty {
            logger.warning("skipping Service \(s.namespacedName): \(errs.map(\.description).joined(separator: "; "))")
            return nil
        }
        return s
    }

    func slice(_ o: JSONValue) -> EndpointSlice? {
        guard let s = Self.decode(EndpointSlice.self, o) else { logger.warning("skipping an EndpointSlice that does not decode"); return nil }
        let errs = Validation.validate(s)
        if !errs.isEmpty {
            logger.warning("skipping EndpointSlice \(s.metadata.namespace ?? "")/\(s.metadata.name ?? ""): \(errs.map(\.description).joined(separator: "; "))")
            return nil
        }
        return s
    }

    static func key(_ o: JSONValue) -> NamespacedName {
        NamespacedName(namespace: o[path: ["metadata", "namespace"]]?.string ?? "default", name: o[path: ["metadata", "name"]]?.string ?? "")
    }

    /// Feeds one kind into the tracker: a relist replaces them all, an object that does not
    /// validate is taken out (as if deleted), a deletion deletes. Listed objects are decoded
    /// page by page as they arrive.
    /// `family`: of an object a runner of one family alone keeps (an EndpointSlice's address
    /// type); a relist gives each runner its family's objects, moved out of the listing, so that
    /// no object is held twice. Without it every runner gets every object.
    func follow<T: Sendable>(_ path: String, decode: @escaping @Sendable (JSONValue) -> T?,
                             replace: @escaping @Sendable (inout ChangeTracker, Listing<T>) -> Void,
                             update: @escaping @Sendable (inout ChangeTracker, T) -> Void,
                             delete: @escaping @Sendable (inout ChangeTracker, NamespacedName) -> Void,
                             family: (@Sendable (T) -> String)? = nil) async {
        await Informer(client: client, path: path, logger: logger).run(mapListed: decode, replace: { list in
            let ready = await listed.add(path)
            if runners.count > 1, let family {
                for (r, part) in zip(runners, ProxyRunner.split(&list.items, among: runners, family: family)) {
                    let mine = Listing(part)
                    await r.update(initializing: ready) { replace(&$0, mine) }
                }
            } else {
                for r in runners { await r.update(initializing: ready) { replace(&$0, list) } }
            }
            // The pages' parsed JSON and the decoded objects are gone: return their pages.
            ResidentMemory.releaseFreeHeapPages()
        }, watched: { e in
            switch e {
            case .replace: break   // lists come to `replace`
            case .upsert(let o):
                let ready = await listed.all
                if let x = decode(o) { await self.update(initializing: ready) { update(&$0, x) } }
                else { let k = Self.key(o); await self.update(initializing: ready) { delete(&$0, k) } }
            case .delete(let o):
                let k = Self.key(o)
                await self.update(initializing: await listed.all) { delete(&$0, k) }
            }
        })
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await follow(Self.servicesPath, decode: service, replace: { $0.replaceServices($1.items) },
                             update: { $0.update(service: $1) }, delete: { $0.delete(service: $1) })
            }
            group.addTask {
                await follow(Self.slicesPath, decode: slice, replace: { $0.replaceSlices(draining: &$1.items) },
                             update: { $0.update(slice: $1) }, delete: { $0.delete(slice: $1) }, family: { $0.addressType })
            }
            group.addTask {
                // The cluster's ServiceCIDRs (upstream's kube-proxy follows them for the rule that
                // drops traffic to unallocated ClusterIPs), beside the --service-cluster-ip-range given.
                await follow(Self.serviceCIDRsPath, decode: { Self.decode(ServiceCIDR.self, $0) }, replace: { $0.replaceServiceCIDRs($1.items) },
                             update: { $0.update(serviceCIDR: $1) }, delete: { $0.delete(serviceCIDR: $1.name) })
            }
            group.addTask {
                // Until the service group shuts down.
                try? await gracefulShutdown()
            }
            await group.next()
            group.cancelAll()
        }
    }
}

extension APIWatcher: CustomStringConvertible {
    public var description: String { "APIWatcher(\(client.config.server))" }
}
