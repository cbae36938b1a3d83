import Foundation

/// What the kubelet asks of a container runtime: CRI's RuntimeService and ImageService, with
/// runtime.v1's messages. `CRIClient` speaks it to a real runtime over gRPC; `FakeRuntime`
/// keeps sandboxes and containers in memory for unit tests.
public protocol ContainerRuntime: Sendable {
    func version() async throws -> Runtime_V1_VersionResponse
    func status() async throws -> Runtime_V1_StatusResponse

    /// A ready sandbox (its network set up by the runtime's CNI plugin); its ID.
    func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig, runtimeHandler: String) async throws -> String
    func stopPodSandbox(_ id: String) async throws
    func removePodSandbox(_ id: String) async throws
    func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus
    func listPodSandbox(_ filter: Runtime_V1_PodSandboxFilter?) async throws -> [Runtime_V1_PodSandbox]

    /// A created container in `sandbox`; its ID.
    func createContainer(sandbox: String, _ config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String
    func startContainer(_ id: String) async throws
    /// Stops it: the stop signal, then SIGKILL after `timeout` seconds.
    func stopContainer(_ id: String, timeout: Int64) async throws
    func removeContainer(_ id: String) async throws
    func listContainers(_ filter: Runtime_V1_ContainerFilter?) async throws -> [Runtime_V1_Container]
    func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus
    /// Runs `cmd` in the container and waits (at most `timeout` seconds, 0 for no limit).
    func execSync(_ id: String, cmd: [String], timeout: Int64) async throws -> Runtime_V1_ExecSyncResponse
    /// The runtime's streaming URL for an exec session.
    func exec(_ request: Runtime_V1_ExecRequest) async throws -> String

    /// Pulls the image; the reference the runtime keeps it by (its ID).
    func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig?) async throws -> String
    /// The image if the runtime has it.
    func imageStatus(_ image: String) async throws -> Runtime_V1_Image?
    func listImages() async throws -> [Runtime_V1_Image]
    func removeImage(_ image: String) async throws
}

/// A runtime's answer that is an error: the gRPC status code and message.
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable, Equatable { case notFound, unavailable, deadlineExceeded, other(String) }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
    public var isNotFound: Bool { code == .notFound }
}
