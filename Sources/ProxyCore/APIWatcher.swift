import Foundation
import KubeAPI
import KubeClient
import Logging
import ServiceLifecycle

/// Feeds the runner from an API server: Services and EndpointSlices across all namespaces,
/// through list+watch informers (relist on 410, back-off while the server is away). Objects that
/// fail validation are left out and logged, as with manifests.
public struct APIWatcher: ServiceLifecycle.Service {
    let client: KubeClient
    let runner: ProxyRunner
    let logger: Logger

    public init(client: KubeClient, runner: ProxyRunner, logger: Logger = Logger(label: "switchyard.watcher")) {
        self.client = client
        self.runner = runner
        self.logger = logger
    }

    static func decode<T: Decodable>(_ type: T.Type, _ o: JSONValue) -> T? { try? JSONDecoder().decode(type, from: o.serialized()) }

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

    public func run() async throws {
        let services = Informer(client: client, path: "/api/v1/services", logger: logger)
        let slices = Informer(client: client, path: "/apis/discovery.k8s.io/v1/endpointslices", logger: logger)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await services.run { e in
                    switch e {
                    case .replace(let all):
                        let list = all.compactMap(service)
                        await runner.update { $0.replaceServices(list) }
                    case .upsert(let o):
                        if let s = service(o) { await runner.update { $0.update(service: s) } }
                        else { let k = Self.key(o); await runner.update { $0.delete(service: k) } }
                    case .delete(let o):
                        let k = Self.key(o)
                        await runner.update { $0.delete(service: k) }
                    }
                }
            }
            group.addTask {
                await slices.run { e in
                    switch e {
                    case .replace(let all):
                        let list = all.compactMap(slice)
                        await runner.update { $0.replaceSlices(list) }
                    case .upsert(let o):
                        if let s = slice(o) { await runner.update { $0.update(slice: s) } }
                        else { let k = Self.key(o); await runner.update { $0.delete(slice: k) } }
                    case .delete(let o):
                        let k = Self.key(o)
                        await runner.update { $0.delete(slice: k) }
                    }
                }
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
