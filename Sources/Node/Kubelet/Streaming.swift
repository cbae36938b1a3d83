import CRI
import Foundation
import KubeAPI

/// A request to the kubelet's API that cannot be served, with the HTTP status it answers with.
public struct KubeletAPIError: Error, CustomStringConvertible, Sendable {
    public var code: Int
    public var description: String
    public init(_ code: Int, _ description: String) {
        self.code = code
        self.description = description
    }
}

/// What the kubelet's API (`/pods`, `/containerLogs`, `/exec`) asks of the kubelet.
extension Kubelet {
    /// The pods bound to this node, as the kubelet last saw them.
    public var boundPods: [JSONValue] {
        (pods.items.filter { !StaticPods.isMirror($0) } + statics.withLock { Array($0.pods.values) })
            .sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }
    }

    /// One instance of a container in the runtime.
    public struct ContainerInstance: Sendable {
        public var id: String
        public var logPath: String
        public var running: Bool
    }

    /// The current (or, with `previous`, the one before) instance of a pod's container. The pod
    /// is named by namespace and name (and uid when given, as in `/exec/NS/POD/UID/CONTAINER`).
    public func containerInstance(namespace: String, pod name: String, uid: String? = nil, container: String,
                                  previous: Bool = false) async throws -> ContainerInstance {
        guard let pod = boundPods.first(where: { $0.namespace == namespace && $0.name == name && (uid == nil || $0.uid == uid) }) else {
            throw KubeletAPIError(404, "pod \"\(name)\" in namespace \"\(namespace)\" is not found on this node")
        }
        let spec = pod["spec"]
        let names = (spec?["initContainers"]?.array ?? []) + (spec?["containers"]?.array ?? []) + (spec?["ephemeralContainers"]?.array ?? [])
        guard names.contains(where: { $0["name"]?.string == container }) else {
            throw KubeletAPIError(404, "container \"\(container)\" not found in pod \"\(namespace)/\(name)\"")
        }
        let found = try await runtime.listContainers(.with {
            $0.labelSelector = [Specs.podUIDLabel: pod.uid, Specs.containerNameLabel: container]
        }).sorted { ($0.metadata.attempt, $0.createdAt) > ($1.metadata.attempt, $1.createdAt) }
        let index = previous ? 1 : 0
        guard found.count > index else {
            throw KubeletAPIError(400, previous ? "previous terminated container \"\(container)\" in pod \"\(name)\" not found"
                                                : "container \"\(container)\" in pod \"\(name)\" is waiting to start: ContainerCreating")
        }
        let status = try await runtime.containerStatus(found[index].id)
        return ContainerInstance(id: found[index].id, logPath: status.logPath, running: status.state == .containerRunning)
    }

    /// The log of a pod's container as `kubectl logs` shows it.
    public func containerLogs(namespace: String, pod: String, container: String, previous: Bool,
                              options: ContainerLogOptions) async throws -> AsyncThrowingStream<Data, any Error> {
        let instance = try await containerInstance(namespace: namespace, pod: pod, container: container, previous: previous)
        guard !instance.logPath.isEmpty, FileManager.default.fileExists(atPath: instance.logPath) else {
            throw KubeletAPIError(404, "no log file for container \"\(container)\" in pod \"\(pod)\"")
        }
        let runtime = self.runtime, id = instance.id
        return ContainerLog.read(path: instance.logPath, options: options) {
            (try? await runtime.containerStatus(id).state) == .containerRunning
        }
    }

    /// Where an interactive command streams (CRI's `Exec`: the runtime's streaming server, for
    /// stdin and a TTY).
    public func execStream(namespace: String, pod: String, uid: String? = nil, container: String, command: [String],
                           stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String {
        guard !command.isEmpty else { throw KubeletAPIError(400, "you must specify at least 1 command") }
        let instance = try await containerInstance(namespace: namespace, pod: pod, uid: uid, container: container)
        guard instance.running else {
            throw KubeletAPIError(400, "container \"\(container)\" in pod \"\(pod)\" is not running")
        }
        return try await runtime.exec(.with {
            $0.containerID = instance.id
            $0.cmd = command
            $0.stdin = stdin
            $0.stdout = stdout
            $0.stderr = stderr && !tty
            $0.tty = tty
        })
    }

    /// Runs a command in a pod's running container and waits for it (CRI's ExecSync).
    public func exec(namespace: String, pod: String, uid: String? = nil, container: String, command: [String]) async throws -> Runtime_V1_ExecSyncResponse {
        guard !command.isEmpty else { throw KubeletAPIError(400, "you must specify at least 1 command") }
        let instance = try await containerInstance(namespace: namespace, pod: pod, uid: uid, container: container)
        guard instance.running else {
            throw KubeletAPIError(400, "container \"\(container)\" in pod \"\(pod)\" is not running")
        }
        return try await runtime.execSync(instance.id, cmd: command, timeout: 0)
    }
}
