import Foundation
import Synchronization

/// A container runtime in memory, for the kubelet's unit tests: sandboxes get addresses from
/// 10.88.0.0/16, containers move created → running → exited as they are started, stopped or
/// made to exit (`exit`), images are pullable when listed in `registry`, and `execSync`
/// answers with what `execHandler` says. Every call is counted in `calls`.
public final class FakeRuntime: ContainerRuntime, Sendable {
    struct Sandbox {
        var id: String
        var config: Runtime_V1_PodSandboxConfig
        var state: Runtime_V1_PodSandboxState
        var ip: String
        var created: Int64
    }
    struct Container {
        var id: String
        var sandbox: String
        var config: Runtime_V1_ContainerConfig
        var imageRef: String
        var state: Runtime_V1_ContainerState
        var created: Int64, started: Int64 = 0, finished: Int64 = 0
        var exitCode: Int32 = 0
        var reason = ""
    }
    struct State {
        var sandboxes: [String: Sandbox] = [:]
        var containers: [String: Container] = [:]
        var images: [String: String] = [:]      // name -> ID
        var registry: Set<String> = []
        var nextIP = 2
        var calls: [String] = []
        var stopTimeouts: [Int64] = []
        var failStart: [String: String] = [:]   // container name -> error message
        var execHandler: @Sendable (_ container: String, _ cmd: [String]) -> (Int32, String) = { _, _ in (0, "") }
    }
    let state = Mutex(State())

    public init(registry: Set<String> = []) {
        state.withLock { $0.registry = Set(registry.map(Self.normalize)) }
    }

    /// `busybox` → `docker.io/library/busybox:latest`, as containerd names images.
    public static func normalize(_ image: String) -> String {
        var name = image
        if !name.contains("@") && !(name.split(separator: "/").last ?? "").contains(":") { name += ":latest" }
        let first = name.split(separator: "/").first.map(String.init) ?? ""
        if !name.contains("/") { name = "docker.io/library/" + name } else if !(first.contains(".") || first.contains(":") || first == "localhost") { name = "docker.io/" + name }
        return name
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }
    static func newID() -> String { (UUID().uuidString + UUID().uuidString).replacingOccurrences(of: "-", with: "").lowercased().prefix(64).description }

    func note(_ call: String) { state.withLock { $0.calls.append(call) } }

    // MARK: what tests do

    public var calls: [String] { state.withLock { $0.calls } }
    /// The grace period (seconds) of every StopContainer, in order.
    public var stopTimeouts: [Int64] { state.withLock { $0.stopTimeouts } }
    public func makeAvailable(_ image: String) { _ = state.withLock { $0.registry.insert(Self.normalize(image)) } }
    /// The container (by name, in the pod with UID `pod`) exits with `code`.
    public func exit(pod: String, container: String, code: Int32) {
        state.withLock { s in
            guard let c = s.containers.values.filter({ $0.config.labels["io.kubernetes.pod.uid"] == pod && $0.config.metadata.name == container && $0.state == .containerRunning })
                .max(by: { $0.created < $1.created }) else { return }
            s.containers[c.id]?.state = .containerExited
            s.containers[c.id]?.exitCode = code
            s.containers[c.id]?.finished = Self.now()
            s.containers[c.id]?.reason = code == 0 ? "Completed" : "Error"
        }
    }
    /// Starting a container of this name fails with `message`.
    public func failStart(_ container: String, _ message: String?) { state.withLock { $0.failStart[container] = message } }
    public func onExec(_ h: @escaping @Sendable (_ container: String, _ cmd: [String]) -> (Int32, String)) { state.withLock { $0.execHandler = h } }
    /// The sandbox stops by itself (its network gone), as after a node's restart.
    public func killSandbox(pod: String) {
        state.withLock { s in
            for (id, sb) in s.sandboxes where sb.config.metadata.uid == pod { s.sandboxes[id]?.state = .sandboxNotready }
        }
    }
    /// The configuration the latest container of this name was created with.
    public func containerConfig(_ name: String) -> Runtime_V1_ContainerConfig? {
        state.withLock { s in s.containers.values.filter { $0.config.metadata.name == name }.max { $0.created < $1.created }?.config }
    }
    public var runningContainers: Int { state.withLock { $0.containers.values.filter { $0.state == .containerRunning }.count } }
    public var sandboxCount: Int { state.withLock { $0.sandboxes.count } }

    // MARK: ContainerRuntime

    public func version() async throws -> Runtime_V1_VersionResponse {
        .with { $0.version = "0.1.0"; $0.runtimeName = "fake"; $0.runtimeVersion = "0.1.0"; $0.runtimeApiVersion = "v1" }
    }

    public func status() async throws -> Runtime_V1_StatusResponse {
        .with {
            $0.status = .with {
                $0.conditions = [.with { $0.type = "RuntimeReady"; $0.status = true }, .with { $0.type = "NetworkReady"; $0.status = true }]
            }
        }
    }

    public func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig, runtimeHandler: String) async throws -> String {
        note("RunPodSandbox \(config.metadata.name)")
        return state.withLock { s in
            let id = Self.newID()
            let n = s.nextIP
            s.nextIP += 1
            s.sandboxes[id] = Sandbox(id: id, config: config, state: .sandboxReady, ip: "10.88.\(n / 256).\(n % 256)", created: Self.now())
            return id
        }
    }

    public func stopPodSandbox(_ id: String) async throws {
        note("StopPodSandbox")
        state.withLock { s in
            s.sandboxes[id]?.state = .sandboxNotready
            for (cid, c) in s.containers where c.sandbox == id && c.state == .containerRunning {
                s.containers[cid]?.state = .containerExited
                s.containers[cid]?.exitCode = 137
                s.containers[cid]?.finished = Self.now()
                s.containers[cid]?.reason = "Error"
            }
        }
    }

    public func removePodSandbox(_ id: String) async throws {
        note("RemovePodSandbox")
        state.withLock { s in
            s.sandboxes[id] = nil
            for (cid, c) in s.containers where c.sandbox == id { s.containers[cid] = nil }
        }
    }

    public func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus {
        guard let sb = state.withLock({ $0.sandboxes[id] }) else { throw RuntimeError(.notFound, "an error occurred when try to find sandbox: not found") }
        return .with {
            $0.id = sb.id
            $0.metadata = sb.config.metadata
            $0.state = sb.state
            $0.createdAt = sb.created
            $0.network = .with { $0.ip = sb.state == .sandboxReady ? sb.ip : "" }
            $0.labels = sb.config.labels
            $0.annotations = sb.config.annotations
        }
    }

    public func listPodSandbox(_ filter: Runtime_V1_PodSandboxFilter?) async throws -> [Runtime_V1_PodSandbox] {
        state.withLock { s in
            s.sandboxes.values.filter { sb in
                guard let f = filter else { return true }
                if !f.id.isEmpty && f.id != sb.id { return false }
                if f.hasState && f.state.state != sb.state { return false }
                return f.labelSelector.allSatisfy { sb.config.labels[$0.key] == $0.value }
            }.map { sb in
                .with { $0.id = sb.id; $0.metadata = sb.config.metadata; $0.state = sb.state; $0.createdAt = sb.created; $0.labels = sb.config.labels; $0.annotations = sb.config.annotations }
            }
        }
    }

    public func createContainer(sandbox: String, _ config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String {
        note("CreateContainer \(config.metadata.name)")
        return try state.withLock { s in
            guard s.sandboxes[sandbox]?.state == .sandboxReady else { throw RuntimeError(.other("unknown"), "sandbox \(sandbox) is not ready") }
            let ref = s.images[Self.normalize(config.image.image)] ?? config.image.image
            let id = Self.newID()
            s.containers[id] = Container(id: id, sandbox: sandbox, config: config, imageRef: ref, state: .containerCreated, created: Self.now())
            return id
        }
    }

    public func startContainer(_ id: String) async throws {
        note("StartContainer")
        try state.withLock { s in
            guard let c = s.containers[id] else { throw RuntimeError(.notFound, "container \(id) not found") }
            if let message = s.failStart[c.config.metadata.name] {
                s.containers[id]?.state = .containerExited
                s.containers[id]?.exitCode = 128
                s.containers[id]?.reason = "StartError"
                throw RuntimeError(.other("unknown"), message)
            }
            s.containers[id]?.state = .containerRunning
            s.containers[id]?.started = Self.now()
        }
    }

    public func stopContainer(_ id: String, timeout: Int64) async throws {
        note("StopContainer")
        state.withLock { s in
            s.stopTimeouts.append(timeout)
            guard s.containers[id]?.state == .containerRunning else { return }
            s.containers[id]?.state = .containerExited
            s.containers[id]?.exitCode = 137
            s.containers[id]?.reason = "Error"
            s.containers[id]?.finished = Self.now()
        }
    }

    public func removeContainer(_ id: String) async throws {
        note("RemoveContainer")
        _ = state.withLock { $0.containers.removeValue(forKey: id) }
    }

    public func listContainers(_ filter: Runtime_V1_ContainerFilter?) async throws -> [Runtime_V1_Container] {
        state.withLock { s in
            s.containers.values.filter { c in
                guard let f = filter else { return true }
                if !f.id.isEmpty && f.id != c.id { return false }
                if !f.podSandboxID.isEmpty && f.podSandboxID != c.sandbox { return false }
                if f.hasState && f.state.state != c.state { return false }
                return f.labelSelector.allSatisfy { c.config.labels[$0.key] == $0.value }
            }.map { c in
                .with {
                    $0.id = c.id; $0.podSandboxID = c.sandbox; $0.metadata = c.config.metadata; $0.image = c.config.image
                    $0.imageRef = c.imageRef; $0.state = c.state; $0.createdAt = c.created; $0.labels = c.config.labels; $0.annotations = c.config.annotations
                }
            }
        }
    }

    public func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        guard let (c, logDirectory) = state.withLock({ s in s.containers[id].map { ($0, s.sandboxes[$0.sandbox]?.config.logDirectory ?? "") } }) else {
            throw RuntimeError(.notFound, "an error occurred when try to find container \"\(id)\": not found")
        }
        return .with {
            $0.id = c.id; $0.metadata = c.config.metadata; $0.state = c.state; $0.createdAt = c.created; $0.startedAt = c.started
            $0.finishedAt = c.finished; $0.exitCode = c.exitCode; $0.image = c.config.image; $0.imageRef = c.imageRef; $0.reason = c.reason
            $0.labels = c.config.labels; $0.annotations = c.config.annotations
            // As containerd answers: the sandbox's log directory joined with the container's path.
            $0.logPath = logDirectory.isEmpty || c.config.logPath.isEmpty ? c.config.logPath : logDirectory + "/" + c.config.logPath
        }
    }

    public func execSync(_ id: String, cmd: [String], timeout: Int64) async throws -> Runtime_V1_ExecSyncResponse {
        let (handler, name, running) = state.withLock { s in (s.execHandler, s.containers[id]?.config.metadata.name ?? "", s.containers[id]?.state == .containerRunning) }
        guard running else { throw RuntimeError(.other("unknown"), "container \(id) is not running") }
        let (code, out) = handler(name, cmd)
        return .with { $0.exitCode = code; $0.stdout = Data(out.utf8) }
    }

    public func exec(_ request: Runtime_V1_ExecRequest) async throws -> String { "http://127.0.0.1:0/exec/\(request.containerID)" }

    public func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig?) async throws -> String {
        note("PullImage \(image)")
        let name = Self.normalize(image)
        return try state.withLock { s in
            guard s.registry.contains(name) else {
                throw RuntimeError(.other("unknown"), "failed to pull and unpack image \"\(name)\": failed to resolve reference \"\(name)\": \(name): not found")
            }
            let id = s.images[name] ?? "sha256:" + String(Self.newID())
            s.images[name] = id
            return id
        }
    }

    public func imageStatus(_ image: String) async throws -> Runtime_V1_Image? {
        let name = Self.normalize(image)
        guard let id = state.withLock({ $0.images[name] }) else { return nil }
        return .with { $0.id = id; $0.repoTags = [name]; $0.size = 1_000_000 }
    }

    public func listImages() async throws -> [Runtime_V1_Image] {
        state.withLock { s in s.images.map { name, id in .with { $0.id = id; $0.repoTags = [name]; $0.size = 1_000_000 } } }
    }

    public func removeImage(_ image: String) async throws {
        _ = state.withLock { $0.images.removeValue(forKey: Self.normalize(image)) }
    }
}
