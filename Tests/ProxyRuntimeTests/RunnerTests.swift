import Foundation
import KubeAPI
import Testing
@testable import ProxySeam
@testable import ProxyRuntime

/// Records every snapshot the runner hands it.
final class RecordingBackend: ProxyBackend, @unchecked Sendable {
    let mode = "recording"
    private let lock = NSLock()
    private var _synced: [ProxySnapshot] = []
    var synced: [ProxySnapshot] { lock.withLock { _synced } }
    func sync(_ request: SyncRequest) async throws -> SyncOutcome {
        lock.withLock { _synced.append(request.snapshot) }
        return SyncOutcome(full: true, objectsWritten: 0)
    }
    func needsFullResync() async -> Bool { false }
    func cleanup() async throws {}
}

@Suite struct RunnerTests {
    /// A runner on node n1 over a backend that records what it is asked to sync.
    static func runner(syncPeriod: Duration) -> (RecordingBackend, ProxyRunner) {
        let backend = RecordingBackend()
        return (backend, ProxyRunner(tracker: ChangeTracker(node: NodeInfo(name: "n1")), backend: backend,
                                     metrics: ProxyMetrics(mode: "recording"), minSyncPeriod: .milliseconds(10), syncPeriod: syncPeriod))
    }

    /// As upstream: no sync until the proxy is initialized (the API watcher initializes it once
    /// both Services and EndpointSlices are listed), so the first sync never has Services
    /// without their endpoints.
    @Test func nothingIsSyncedBeforeInitialization() async throws {
        let (backend, runner) = Self.runner(syncPeriod: .milliseconds(50))
        let task = Task { try await runner.run() }
        defer { task.cancel() }
        let svc = Service(metadata: ObjectMeta(name: "web", namespace: "default"),
                          spec: ServiceSpec(type: "ClusterIP", clusterIP: "10.96.0.10", ports: [ServicePort(port: 80, targetPort: .int(8080))]))
        await runner.update(initializing: false) { $0.update(service: svc) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(backend.synced.isEmpty, "the Services alone are not synced")

        let slice = EndpointSlice(metadata: ObjectMeta(name: "web-1", namespace: "default", labels: [EndpointSlice.serviceNameLabel: "web"]),
                                  endpoints: [Endpoint(addresses: ["10.244.1.2"], conditions: EndpointConditions(ready: true))],
                                  ports: [EndpointPort(protocol: "TCP", port: 8080)])
        await runner.update(initializing: true) { $0.update(slice: slice) }
        await runner.waitForSyncs(1)
        let first = try #require(backend.synced.first)
        #expect(first.servicePorts.count == 1)
        #expect(first.endpoints.values.flatMap { $0 }.map(\.ip) == ["10.244.1.2"], "the first sync has the Service with its endpoint")
    }

    /// An empty cluster still gets its first sync (and healthz its first success) once listed.
    @Test func anEmptyListInitializesAndSyncs() async throws {
        let (backend, runner) = Self.runner(syncPeriod: .seconds(30))
        let task = Task { try await runner.run() }
        defer { task.cancel() }
        await runner.update(initializing: true) { _ in }
        await runner.waitForSyncs(1)
        #expect(backend.synced.count == 1)
    }

    /// `…_no_local_endpoints_total` follows each change, also when only the changed Service is
    /// looked at again: a Local-policy Service without a local endpoint counts until one arrives,
    /// and a change to another Service leaves the count as it is.
    @Test func noLocalEndpointsFollowChanges() async throws {
        let (_, runner) = Self.runner(syncPeriod: .seconds(30))
        let metrics = await runner.metrics
        let task = Task { try await runner.run() }
        defer { task.cancel() }
        func value(_ policy: String) -> Double? {
            metrics.text().split(separator: "\n")
                .first { $0.hasPrefix("kubeproxy_sync_proxy_rules_no_local_endpoints_total") && $0.contains("\"\(policy)\"") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        @Sendable func slice(_ service: String, node: String) -> EndpointSlice {
            EndpointSlice(metadata: ObjectMeta(name: "\(service)-1", namespace: "default", labels: [EndpointSlice.serviceNameLabel: service]),
                          endpoints: [Endpoint(addresses: ["10.244.1.2"], conditions: EndpointConditions(ready: true), nodeName: node)],
                          ports: [EndpointPort(protocol: "TCP", port: 8080)])
        }
        var local = Service(metadata: ObjectMeta(name: "local", namespace: "default"),
                            spec: ServiceSpec(type: "ClusterIP", clusterIP: "10.96.0.10", ports: [ServicePort(port: 80, targetPort: .int(8080))]))
        local.spec.internalTrafficPolicy = "Local"
        let localService = local
        let other = Service(metadata: ObjectMeta(name: "other", namespace: "default"),
                            spec: ServiceSpec(type: "ClusterIP", clusterIP: "10.96.0.11", ports: [ServicePort(port: 80, targetPort: .int(8080))]))
        await runner.update { $0.update(service: localService); $0.update(slice: slice("local", node: "n2")) }
        await runner.waitForSyncs(1)
        #expect(value("internal") == 1)
        #expect(value("external") == 0)
        await runner.update { $0.update(service: other) }
        await runner.waitForSyncs(2)
        #expect(value("internal") == 1, "a change to another Service keeps the count")
        await runner.update { $0.update(slice: slice("local", node: "n1")) }
        await runner.waitForSyncs(3)
        #expect(value("internal") == 0, "a local endpoint arrived")
    }
}
