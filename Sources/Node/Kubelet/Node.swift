import CRI
import Foundation
import KubeAPI

/// The node as its kubelet describes it: labels, taints and addresses at registration; capacity,
/// allocatable, nodeInfo, images and the four conditions in its status.
public enum NodeDescription {
    public static let kubeletVersion = "v1.33.0-switchyard"

    /// This machine's numbers: CPUs, memory (Ki), the root dir's filesystem (Ki).
    public static func capacity(rootDir: String, maxPods: Int) -> [String: String] {
        let memKi = memTotalKi ?? 0
        var diskKi: Int64 = 0
        if let a = try? FileManager.default.attributesOfFileSystem(forPath: rootDir), let size = a[.systemSize] as? NSNumber {
            diskKi = size.int64Value / 1024
        }
        return ["cpu": String(ProcessInfo.processInfo.activeProcessorCount), "memory": "\(memKi)Ki", "ephemeral-storage": "\(diskKi)Ki",
                "pods": String(maxPods), "hugepages-1Gi": "0", "hugepages-2Mi": "0"]
    }

    static func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// /proc/meminfo's MemTotal in Ki, read once (nil when it cannot be read).
    static let memTotalKi: Int64? = {
        guard let info = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }) else { return nil }
        return Int64(line.split(separator: " ").dropFirst().first ?? "")
    }()

    /// This machine's memory in bytes: what a burstable container's OOM score is measured against.
    public static let memoryBytes: Int64 = (memTotalKi ?? (8 << 20)) * 1024

    public static func nodeInfo(runtime: Runtime_V1_VersionResponse) -> JSONValue {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let osRelease = read("/etc/os-release").split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) } ?? "Linux"
        return ["machineID": .string(read("/etc/machine-id")), "systemUUID": .string(read("/sys/class/dmi/id/product_uuid")),
                "bootID": .string(read("/proc/sys/kernel/random/boot_id")), "kernelVersion": .string(release), "osImage": .string(osRelease),
                "containerRuntimeVersion": .string("\(runtime.runtimeName)://\(runtime.runtimeVersion)"), "kubeletVersion": .string(kubeletVersion),
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": .string(hostArchitecture)]
    }

    public static func architecture(_ machine: String) -> String {
        switch machine { case "x86_64": "amd64"; case "aarch64": "arm64"; default: machine }
    }

    public static let hostArchitecture: String = {
        var u = utsname()
        uname(&u)
        return architecture(withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
    }()

    /// The Node a kubelet registers.
    public static func registration(_ c: KubeletConfiguration, nodeIP: String, capacity: [String: String], info: JSONValue,
                                    kubeletPort: Int) -> JSONValue {
        var labels = c.nodeLabels
        labels["kubernetes.io/hostname"] = c.nodeName
        labels["kubernetes.io/os"] = "linux"
        labels["kubernetes.io/arch"] = hostArchitecture
        labels["beta.kubernetes.io/os"] = "linux"
        labels["beta.kubernetes.io/arch"] = hostArchitecture
        var spec: [String: JSONValue] = [:]
        if !c.registerWithTaints.isEmpty { spec["taints"] = .array(c.registerWithTaints) }
        let resources = JSONValue.object(capacity.mapValues { .string($0) })
        return ["apiVersion": "v1", "kind": "Node",
                "metadata": ["name": .string(c.nodeName), "labels": .object(labels.mapValues { .string($0) }),
                             "annotations": ["volumes.kubernetes.io/controller-managed-attach-detach": "true", "node.alpha.kubernetes.io/ttl": "0"]],
                "spec": .object(spec),
                "status": ["capacity": resources, "allocatable": resources, "addresses": addresses(c, nodeIP),
                           "daemonEndpoints": daemonEndpoints(kubeletPort), "nodeInfo": info]]
    }

    /// Where the API server reaches this kubelet's API.
    static func daemonEndpoints(_ port: Int) -> JSONValue { ["kubeletEndpoint": ["Port": .int(Int64(port))]] }

    static func addresses(_ c: KubeletConfiguration, _ ip: String) -> JSONValue {
        [["type": "InternalIP", "address": .string(ip)], ["type": "Hostname", "address": .string(c.nodeName)]]
    }

    /// The conditions, each keeping its transition time while its status holds.
    public static func conditions(runtime: Runtime_V1_StatusResponse?, runtimeError: String?, old: [JSONValue], now: String) -> [JSONValue] {
        var notReady: String?
        if let runtimeError {
            notReady = "container runtime status check may not have completed yet: \(runtimeError)"
        } else if let status = runtime?.status {
            let failing = status.conditions.filter { !$0.status }
            if let c = failing.first(where: { $0.type == "RuntimeReady" }) {
                notReady = "container runtime is down: RuntimeReady=false reason:\(c.reason) message:\(c.message)"
            } else if let c = failing.first(where: { $0.type == "NetworkReady" }) {
                notReady = "container runtime network not ready: NetworkReady=false reason:\(c.reason) message:\(c.message)"
            }
        }
        let table: [(String, Bool, String, String)] = [
            ("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", notReady == nil, notReady == nil ? "KubeletReady" : "KubeletNotReady", notReady ?? "kubelet is posting ready status"),
        ]
        return table.map { type, ok, reason, message in
            let status = ok ? "True" : "False"
            let since = PodStatusBuilder.transitionTime(type, status, old: old, now: now)
            return ["type": .string(type), "status": .string(status), "reason": .string(reason), "message": .string(message),
                    "lastHeartbeatTime": .string(now), "lastTransitionTime": since]
        }
    }

    /// `status.images`: the runtime's images, largest first, at most 50 (upstream's
    /// nodeStatusMaxImages).
    public static func images(_ list: [Runtime_V1_Image]) -> JSONValue {
        .array(list.sorted { $0.size > $1.size }.prefix(50).map { i in
            ["names": .array((i.repoDigests + i.repoTags).map { .string($0) }), "sizeBytes": .int(Int64(i.size))]
        })
    }

    /// The first global IPv4 address of this namespace (for `--node-ip` unset).
    public static func defaultNodeIP() -> String {
        var addrs: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&addrs) == 0, let first = addrs else { return "127.0.0.1" }
        defer { freeifaddrs(addrs) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let a = p {
            defer { p = a.pointee.ifa_next }
            guard let sa = a.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var addr = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &addr, &buf, socklen_t(INET_ADDRSTRLEN))
            let ip = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !ip.hasPrefix("127.") { return ip }
        }
        return "127.0.0.1"
    }

    /// The CNI configuration for the node's pod CIDR: our bridge with host-local, as
    /// `switchyard cni install` writes it, the addresses kept under the kubelet's root.
    public static func cniConfig(podCIDR: String, rootDir: String) -> String {
        """
        {
          "cniVersion": "1.0.0",
          "name": "switchyard",
          "plugins": [
            {
              "type": "switchyard-bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
              "ipam": {"type": "switchyard-host-local", "dataDir": "\(rootDir)/cni/networks", "ranges": [[{"subnet": "\(podCIDR)"}]], "routes": [{"dst": "0.0.0.0/0"}]}
            }
          ]
        }

        """
    }
}
