import Foundation
import GRPCCore
import GRPCPings
import GRPCNIOTransportHTTP2
import GRPCProtobuf

/// CRI over gRPC on a unix socket (`unix:///run/containerd/containerd.sock`), as the kubelet's
/// remote runtime service: every call with a deadline (the kubelet's
/// `--runtime-request-timeout`, 2 minutes), messages up to 16 MiB each way.
public final class CRIClient: ContainerRuntime, @unchecked Sendable {
    public let endpoint: String
    let grpc: GRPCClient<HTTP2ClientTransport.Posix>
    let runtime: Runtime_V1_RuntimeService.Client<HTTP2ClientTransport.Posix>
    let images: Runtime_V1_ImageService.Client<HTTP2ClientTransport.Posix>
    let connections: Task<Void, Never>
    let options: CallOptions
    /// Pulls take as long as the image does (the kubelet has no deadline for them either).
    let pullOptions: CallOptions

    /// - Parameter endpoint: `unix:///path` or a plain path.
    public init(endpoint: String, timeout: Duration = .seconds(120)) throws {
        self.endpoint = endpoint
        let path = endpoint.hasPrefix("unix://") ? String(endpoint.dropFirst("unix://".count)) : endpoint
        guard path.hasPrefix("/") else {
            throw RuntimeError(.other("invalid"), "\(endpoint): the runtime endpoint must be a unix socket (unix:///path)")
        }
        // A local socket: reconnecting is cheap, so a lost connection is made again within
        // milliseconds, not after gRPC's default first second of back-off.
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.backoff = .init(initial: .milliseconds(20), max: .seconds(2), multiplier: 1.6, jitter: 0.2)
        // containerd's PINGs (one with nearly every call) answered before swift-nio-http2 takes
        // them for a flood and closes the connection (see PingAnswerer).
        config.channelDebuggingCallbacks.onCreateTCPConnection = { PingAnswerer.install(on: $0) }
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: path), transportSecurity: .plaintext, config: config)
        grpc = GRPCClient(transport: transport)
        runtime = Runtime_V1_RuntimeService.Client(wrapping: grpc)
        images = Runtime_V1_ImageService.Client(wrapping: grpc)
        var o = CallOptions.defaults
        o.timeout = timeout
        o.maxRequestMessageBytes = 16 << 20
        o.maxResponseMessageBytes = 16 << 20
        // A call made while the connection is (re)established waits for it instead of failing.
        o.waitForReady = true
        options = o
        o.timeout = nil
        pullOptions = o
        let grpc = self.grpc
        connections = Task { try? await grpc.runConnections() }
    }

    /// Ends the connection (calls in flight finish first).
    public func close() {
        grpc.beginGracefulShutdown()
    }

    deinit { grpc.beginGracefulShutdown() }

    /// A call's failure as the runtime worded it. A read whose connection closed under it (as
    /// it did now and then while many pods started, before `PingAnswerer`; containerd may still
    /// restart) is made again, up to three times, once the connection is back.
    func call<T: Sendable>(_ what: String, read: Bool = false, _ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch let e as RPCError where e.code == .unavailable && attempt < 3 && read {
                attempt += 1
                try await Task.sleep(for: .milliseconds(20 * attempt))
                continue
            } catch {
                throw Self.runtimeError(what, error)
            }
        }
    }

    static func runtimeError(_ what: String, _ error: any Error) -> any Error {
        do {
            throw error
        } catch let e as RPCError {
            let code: RuntimeError.Code = switch e.code {
            case .notFound: .notFound
            case .unavailable: .unavailable
            case .deadlineExceeded: .deadlineExceeded
            default: .other("\(e.code)")
            }
            return RuntimeError(code, "\(what): \(e.message.isEmpty ? "\(e.code)" : e.message)")
        } catch {
            return error
        }
    }

    public func version() async throws -> Runtime_V1_VersionResponse {
        try await call("Version", read: true) { try await runtime.version(.with { $0.version = "v1" }, options: options) }
    }

    public func status() async throws -> Runtime_V1_StatusResponse {
        try await call("Status", read: true) { try await runtime.status(Runtime_V1_StatusRequest(), options: options) }
    }

    public func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig, runtimeHandler: String) async throws -> String {
        try await call("RunPodSandbox") {
            try await runtime.runPodSandbox(.with { $0.config = config; $0.runtimeHandler = runtimeHandler }, options: options).podSandboxID
        }
    }

    public func stopPodSandbox(_ id: String) async throws {
        _ = try await call("StopPodSandbox") { try await runtime.stopPodSandbox(.with { $0.podSandboxID = id }, options: options) }
    }

    public func removePodSandbox(_ id: String) async throws {
        _ = try await call("RemovePodSandbox") { try await runtime.removePodSandbox(.with { $0.podSandboxID = id }, options: options) }
    }

    public func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus {
        try await call("PodSandboxStatus", read: true) { try await runtime.podSandboxStatus(.with { $0.podSandboxID = id }, options: options).status }
    }

    public func listPodSandbox(_ filter: Runtime_V1_PodSandboxFilter?) async throws -> [Runtime_V1_PodSandbox] {
        try await call("ListPodSandbox", read: true) {
            try await runtime.listPodSandbox(.with { if let filter { $0.filter = filter } }, options: options).items
        }
    }

    public func createContainer(sandbox: String, _ config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String {
        try await call("CreateContainer") {
            try await runtime.createContainer(.with {
                $0.podSandboxID = sandbox
                $0.config = config
                $0.sandboxConfig = sandboxConfig
            }, options: options).containerID
        }
    }

    public func startContainer(_ id: String) async throws {
        _ = try await call("StartContainer") { try await runtime.startContainer(.with { $0.containerID = id }, options: options) }
    }

    public func stopContainer(_ id: String, timeout: Int64) async throws {
        var o = options
        // The call lasts as long as the grace period, and then some.
        o.timeout = .seconds(max(0, timeout)) + (options.timeout ?? .seconds(120))
        let callOptions = o
        _ = try await call("StopContainer") {
            try await runtime.stopContainer(.with { $0.containerID = id; $0.timeout = timeout }, options: callOptions)
        }
    }

    public func removeContainer(_ id: String) async throws {
        _ = try await call("RemoveContainer") { try await runtime.removeContainer(.with { $0.containerID = id }, options: options) }
    }

    public func listContainers(_ filter: Runtime_V1_ContainerFilter?) async throws -> [Runtime_V1_Container] {
        try await call("ListContainers", read: true) {
            try await runtime.listContainers(.with { if let filter { $0.filter = filter } }, options: options).containers
        }
    }

    public func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        try await call("ContainerStatus", read: true) { try await runtime.containerStatus(.with { $0.containerID = id }, options: options).status }
    }

    public func execSync(_ id: String, cmd: [String], timeout: Int64) async throws -> Runtime_V1_ExecSyncResponse {
        var o = options
        if timeout > 0 { o.timeout = .seconds(timeout) + .seconds(5) } else { o.timeout = nil }
        let callOptions = o
        return try await call("ExecSync") {
            try await runtime.execSync(.with { $0.containerID = id; $0.cmd = cmd; $0.timeout = timeout }, options: callOptions)
        }
    }

    public func exec(_ request: Runtime_V1_ExecRequest) async throws -> String {
        try await call("Exec") { try await runtime.exec(request, options: options).url }
    }

    public func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig?) async throws -> String {
        try await call("PullImage \(image)") {
            try await images.pullImage(.with {
                $0.image = .with { $0.image = image }
                if let sandboxConfig { $0.sandboxConfig = sandboxConfig }
            }, options: pullOptions).imageRef
        }
    }

    public func imageStatus(_ image: String) async throws -> Runtime_V1_Image? {
        let r = try await call("ImageStatus \(image)", read: true) { try await images.imageStatus(.with { $0.image = .with { $0.image = image } }, options: options) }
        return r.hasImage ? r.image : nil
    }

    public func listImages() async throws -> [Runtime_V1_Image] {
        try await call("ListImages", read: true) { try await images.listImages(Runtime_V1_ListImagesRequest(), options: options).images }
    }

    public func removeImage(_ image: String) async throws {
        _ = try await call("RemoveImage \(image)") { try await images.removeImage(.with { $0.image = .with { $0.image = image } }, options: options) }
    }
}
