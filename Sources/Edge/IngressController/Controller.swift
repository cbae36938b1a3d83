import ControllerKit
import Foundation
import IngressNginx
import KubeAPI
import Logging
import Synchronization

/// `switchyard ingress-controller`: keeps an nginx serving the cluster's Ingresses, as
/// ingress-nginx does. It follows Ingresses, IngressClasses, Services, EndpointSlices and Secrets;
/// after a change it renders the configuration (`NginxRenderer`), and only when the result
/// differs from what nginx runs it writes it, has nginx check it (`nginx -t`) and reloads nginx
/// (SIGHUP: the old workers finish their requests). Reloads are at most one per
/// `minReloadInterval`: a burst of changes is one reload. It writes the Ingresses'
/// `status.loadBalancer` from `--publish-status-address` or the `--publish-service`'s own.
public final class IngressController: Sendable {
    public struct Configuration: Sendable {
        public var nginx = NginxOptions()
        /// The nginx binary.
        public var nginxBinary = "/usr/sbin/nginx"
        /// `--publish-service NAMESPACE/NAME`: its `status.loadBalancer` is the Ingresses' too.
        public var publishService: String?
        /// `--publish-status-address`: the addresses written into the Ingresses' status.
        public var publishStatusAddress: [String] = []
        /// `--watch-namespace`: only this namespace's objects (nil: all).
        public var watchNamespace: String?
        /// The shortest time between two reloads.
        public var minReloadInterval: Duration = .seconds(1)
        public init() {}
    }

    let api: API
    let config: Configuration
    let logger: Logger
    let ingresses: Informer<JSONValue>
    let classes: Informer<JSONValue>
    let services: Informer<JSONValue>
    let slices: Informer<JSONValue>
    let secrets: Informer<JSONValue>
    let nginx: NginxProcess
    let dirty: AsyncStream<Void>.Continuation
    let changes: AsyncStream<Void>
    struct State {
        var running: RenderedNginx?
        var reloads = 0
        var lastReload: ContinuousClock.Instant?
    }
    let state = Mutex(State())

    public init(api: API, configuration: Configuration, logger: Logger = Logger(label: "switchyard.ingress-controller")) {
        self.api = api
        self.config = configuration
        self.logger = logger
        let informers = SharedInformers(api: api, logger: logger)
        func path(_ groupVersion: String, _ resource: String) -> String {
            API.path(groupVersion, resource, namespace: configuration.watchNamespace)
        }
        ingresses = informers.informer(path("networking.k8s.io/v1", "ingresses"), slim: Slim.managedFields)
        classes = informers.informer(API.path("networking.k8s.io/v1", "ingressclasses"), slim: Slim.managedFields)
        services = informers.informer(path("v1", "services"), slim: Slim.managedFields)
        slices = informers.informer(path("discovery.k8s.io/v1", "endpointslices"), slim: Slim.managedFields)
        secrets = informers.informer(path("v1", "secrets"), slim: Slim.managedFields)
        nginx = NginxProcess(binary: configuration.nginxBinary, runDirectory: configuration.nginx.runDirectory, logger: logger)
        (changes, dirty) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.informers = informers
    }
    let informers: SharedInformers

    /// How many times nginx has been reloaded (its first start is not one).
    public var reloads: Int { state.withLock { $0.reloads } }
    /// What nginx runs now.
    public var running: RenderedNginx? { state.withLock { $0.running } }

    /// Runs until cancelled; then nginx is stopped gracefully.
    public func run() async throws {
        // The run directory readable by nginx's workers (its temporary files are there); the
        // certificates' directory by root only (the master reads them).
        try FileManager.default.createDirectory(atPath: config.nginx.runDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        try FileManager.default.createDirectory(atPath: config.nginx.runDirectory + "/ssl", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        for i in [ingresses, classes, services, slices, secrets] {
            i.onChange { [dirty] _ in dirty.yield() }
        }
        try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { await self.informers.run() }
                g.addTask {
                    await self.informers.waitForSync()
                    self.dirty.yield()
                    for await _ in self.changes {
                        await self.waitForReloadSlot()
                        do { try await self.sync() } catch { self.logger.error("sync: \(error)") }
                    }
                }
                g.addTask { await self.nginx.superviseUntilCancelled() }
                try await g.next()
                g.cancelAll()
            }
        } onCancel: {
            dirty.finish()
        }
        // Waited for outside the cancelled task, whose sleeps would end at once.
        let nginx = self.nginx
        await Task { await nginx.stop() }.value
    }

    func waitForReloadSlot() async {
        guard let last = state.withLock({ $0.lastReload }) else { return }
        let next = last + config.minReloadInterval
        if next > .now { try? await Task.sleep(until: next, clock: .continuous) }
    }

    func currentSources() -> IngressSources {
        IngressSources(ingresses: ingresses.items, ingressClasses: classes.items, services: services.items,
                       endpointSlices: slices.items, secrets: secrets.items)
    }

    /// Renders; applies what changed; writes the statuses.
    func sync() async throws {
        let rendered = NginxRenderer.render(currentSources(), options: config.nginx)
        let previous = state.withLock { $0.running }
        if previous?.config != rendered.config || previous?.files != rendered.files {
            for w in rendered.warnings where !(previous?.warnings.contains(w) ?? false) { logger.warning("\(w)") }
            try await apply(rendered, first: previous == nil)
        }
        try await writeStatuses(rendered.ingresses)
    }

    func apply(_ r: RenderedNginx, first: Bool) async throws {
        let run = config.nginx.runDirectory
        for (file, text) in r.files {
            try NginxProcess.write(text, to: run + "/" + file, mode: 0o600)
        }
        try NginxProcess.write(r.config, to: run + "/nginx.conf.new", mode: 0o644)
        if let problem = await nginx.test(configuration: run + "/nginx.conf.new") {
            // What nginx runs stays as it was; what was written for the refused file goes.
            let kept = state.withLock { $0.running?.files } ?? [:]
            for file in r.files.keys where kept[file] == nil { unlink(run + "/" + file) }
            unlink(run + "/nginx.conf.new")
            throw IngressControllerError.rejected(problem)
        }
        guard rename(run + "/nginx.conf.new", run + "/nginx.conf") == 0 else { throw IngressControllerError.io("rename nginx.conf: errno \(errno)") }
        // Certificates no longer named are removed (after nginx has stopped reading them below).
        let stale = (state.withLock { $0.running?.files.keys.map { $0 } } ?? []).filter { r.files[$0] == nil }
        if first || !nginx.isRunning {
            try await nginx.start(configuration: run + "/nginx.conf")
            logger.info("nginx started with \(r.ingresses.count) Ingress(es)")
        } else {
            try nginx.reload()
            logger.info("Backend successfully reloaded")
        }
        state.withLock {
            if !first { $0.reloads += 1 }
            $0.running = r
            $0.lastReload = .now
        }
        for f in stale { unlink(run + "/" + f) }
    }

    /// The addresses the Ingresses are reached at.
    func publishedAddresses() -> [JSONValue] {
        if !config.publishStatusAddress.isEmpty {
            return config.publishStatusAddress.map { a in
                IPAddress(a) != nil ? ["ip": .string(a)] : ["hostname": .string(a)]
            }
        }
        guard let svc = config.publishService, let s = services.get(svc) else { return [] }
        return (s[path: ["status", "loadBalancer", "ingress"]]?.array ?? []).map { i -> JSONValue in
            var o: [String: JSONValue] = [:]
            if let ip = i["ip"]?.string { o["ip"] = .string(ip) }
            if let h = i["hostname"]?.string { o["hostname"] = .string(h) }
            return .object(o)
        }
    }

    func writeStatuses(_ keys: [String]) async throws {
        let want: JSONValue = .array(publishedAddresses())
        for key in keys {
            guard let ing = ingresses.get(key) else { continue }
            let have = ing[path: ["status", "loadBalancer", "ingress"]] ?? .array([])
            guard have != want else { continue }
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            var updated = ing
            updated[path: ["status", "loadBalancer"]] = want == .array([]) ? .object([:]) : ["ingress": want]
            do {
                _ = try await api.update(API.path("networking.k8s.io/v1", "ingresses", namespace: parts[0], name: parts[1], subresource: "status"), updated)
                logger.info("updated status of Ingress \(key)")
            } catch let e as APIStatusError where e.isConflict || e.isNotFound {
                // A newer version comes through the informer and is synced again.
                continue
            }
        }
    }
}

public enum IngressControllerError: Error, CustomStringConvertible {
    case rejected(String)
    case io(String)
    case nginx(String)
    public var description: String {
        switch self {
        case .rejected(let why): return "nginx rejected the rendered configuration (nginx -t), which is not applied: \(why)"
        case .io(let why): return why
        case .nginx(let why): return why
        }
    }
}
