import CRI
import Foundation
import Prometheus

/// The kubelet's metrics on its `/metrics`, with upstream's names, types, help texts, labels and
/// buckets (`pkg/kubelet/metrics`): each pod's start-up, and every call to the container runtime
/// counted, timed and its errors counted by upstream's operation names.
public final class KubeletMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    /// `kubelet_pod_start_duration_seconds`' buckets: 0.5 s to an hour.
    static let podStartBuckets: [Duration] = [0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600]
        .map { .milliseconds(Int64($0 * 1000)) }
    /// `ExponentialBuckets(0.005, 2.5, 14)`: 5 ms to about 745 s.
    static let runtimeBuckets: [Duration] = (0..<14).map { .nanoseconds(Int64((0.005 * pow(2.5, Double($0)) * 1e9).rounded())) }

    static var operations: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "kubelet_runtime_operations_total", unitName: "", helpText: "Cumulative number of runtime operations by operation type.")
    }
    static var operationsDuration: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "kubelet_runtime_operations_duration_seconds", unitName: "",
                             helpText: "Duration in seconds of runtime operations. Broken down by operation type.")
    }
    static var operationsErrors: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "kubelet_runtime_operations_errors_total", unitName: "",
                             helpText: "Cumulative number of runtime operation errors by operation type.")
    }

    let podStartDuration: DurationHistogram

    public init() {
        podStartDuration = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(metricName: "kubelet_pod_start_duration_seconds", unitName: "",
                                             helpText: "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run"),
            labels: [], buckets: Self.podStartBuckets)
    }

    /// One runtime call, by upstream's operation name (`run_podsandbox`, `create_container`, …).
    func runtimeCall(_ operation: String, failed: Bool, elapsed: Duration) {
        let labels = [("operation_type", operation)]
        registry.makeCounter(descriptor: Self.operations, labels: labels).increment()
        registry.makeDurationHistogram(descriptor: Self.operationsDuration, labels: labels, buckets: Self.runtimeBuckets).record(elapsed)
        if failed { registry.makeCounter(descriptor: Self.operationsErrors, labels: labels).increment() }
    }

    /// The exposition text.
    public func text() -> String { registry.emitToString() }
}

/// The runtime as the kubelet calls it: each call counted and timed into `KubeletMetrics` under
/// the operation name upstream's instrumented runtime service gives it.
struct MeasuredRuntime: ContainerRuntime {
    let inner: any ContainerRuntime
    let metrics: KubeletMetrics

    func measured<T>(_ operation: String, _ call: () async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        do {
            let r = try await call()
            metrics.runtimeCall(operation, failed: false, elapsed: .now - start)
            return r
        } catch {
            metrics.runtimeCall(operation, failed: true, elapsed: .now - start)
            throw error
        }
    }

    func version() async throws -> Runtime_V1_VersionResponse { try await measured("version") { try await inner.version() } }
    func status() async throws -> Runtime_V1_StatusResponse { try await measured("status") { try await inner.status() } }
    func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig, runtimeHandler: String) async throws -> String {
        try await measured("run_podsandbox") { try await inner.runPodSandbox(config, runtimeHandler: runtimeHandler) }
    }
    func stopPodSandbox(_ id: String) async throws { try await measured("stop_podsandbox") { try await inner.stopPodSandbox(id) } }
    func removePodSandbox(_ id: String) async throws { try await measured("remove_podsandbox") { try await inner.removePodSandbox(id) } }
    func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus {
        try await measured("podsandbox_status") { try await inner.podSandboxStatus(id) }
    }
    func listPodSandbox(_ filter: Runtime_V1_PodSandboxFilter?) async throws -> [Runtime_V1_PodSandbox] {
        try await measured("list_podsandbox") { try await inner.listPodSandbox(filter) }
    }
    func createContainer(sandbox: String, _ config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String {
        try await measured("create_container") { try await inner.createContainer(sandbox: sandbox, config, sandboxConfig: sandboxConfig) }
    }
    func startContainer(_ id: String) async throws { try await measured("start_container") { try await inner.startContainer(id) } }
    func stopContainer(_ id: String, timeout: Int64) async throws {
        try await measured("stop_container") { try await inner.stopContainer(id, timeout: timeout) }
    }
    func removeContainer(_ id: String) async throws { try await measured("remove_container") { try await inner.removeContainer(id) } }
    func listContainers(_ filter: Runtime_V1_ContainerFilter?) async throws -> [Runtime_V1_Container] {
        try await measured("list_containers") { try await inner.listContainers(filter) }
    }
    func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        try await measured("container_status") { try await inner.containerStatus(id) }
    }
    func execSync(_ id: String, cmd: [String], timeout: Int64) async throws -> Runtime_V1_ExecSyncResponse {
        try await measured("exec_sync") { try await inner.execSync(id, cmd: cmd, timeout: timeout) }
    }
    func exec(_ request: Runtime_V1_ExecRequest) async throws -> String { try await measured("exec") { try await inner.exec(request) } }
    func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig?) async throws -> String {
        try await measured("pull_image") { try await inner.pullImage(image, sandboxConfig: sandboxConfig) }
    }
    func imageStatus(_ image: String) async throws -> Runtime_V1_Image? { try await measured("image_status") { try await inner.imageStatus(image) } }
    func listImages() async throws -> [Runtime_V1_Image] { try await measured("list_images") { try await inner.listImages() } }
    func removeImage(_ image: String) async throws { try await measured("remove_image") { try await inner.removeImage(image) } }
}
