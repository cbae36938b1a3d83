import CRI
import Foundation
import KubeAPI

/// A PodSpec turned into what CRI takes, as the kubelet's kuberuntime does: the sandbox's
/// configuration (metadata, hostname, DNS, log directory, ports, labels the kubelet finds its
/// pods by again), and each container's (image, command and args, environment, mounts, Linux
/// resources and security context, labels and annotations).
public enum Specs {
    public static let podNameLabel = "io.kubernetes.pod.name"
    public static let podNamespaceLabel = "io.kubernetes.pod.namespace"
    public static let podUIDLabel = "io.kubernetes.pod.uid"
    public static let containerNameLabel = "io.kubernetes.container.name"
    public static let restartCountAnnotation = "io.kubernetes.container.restartCount"
    public static let containerHashAnnotation = "io.kubernetes.container.hash"
    public static let terminationGraceAnnotation = "io.kubernetes.pod.terminationGracePeriod"

    /// Where a pod's logs go: `LOGS/NAMESPACE_NAME_UID`.
    public static func logDirectory(_ pod: JSONValue, root: String) -> String {
        "\(root)/\(pod.namespace)_\(pod.name)_\(pod.uid)"
    }

    public static func sandboxConfig(_ pod: JSONValue, attempt: UInt32, logRoot: String, dns: DNS) -> Runtime_V1_PodSandboxConfig {
        let spec = pod["spec"] ?? [:]
        return .with {
            $0.metadata = .with { $0.name = pod.name; $0.namespace = pod.namespace; $0.uid = pod.uid; $0.attempt = attempt }
            var hostname = spec["hostname"]?.string ?? String(pod.name.prefix(63))
            if let sub = spec["subdomain"]?.string, !sub.isEmpty, spec["setHostnameAsFQDN"]?.bool == true {
                hostname += ".\(sub).\(pod.namespace).svc.\(dns.clusterDomain)"
            }
            $0.hostname = spec["hostNetwork"]?.bool == true ? "" : hostname
            $0.logDirectory = logDirectory(pod, root: logRoot)
            $0.labels = pod.labels.merging([podNameLabel: pod.name, podNamespaceLabel: pod.namespace, podUIDLabel: pod.uid]) { _, k in k }
            $0.annotations = (pod[path: ["metadata", "annotations"]]?.object ?? [:]).compactMapValues(\.string)
            if let config = dns.config(for: pod) { $0.dnsConfig = config }
            $0.portMappings = (spec["containers"]?.array ?? []).flatMap { c in
                (c["ports"]?.array ?? []).compactMap { p -> Runtime_V1_PortMapping? in
                    guard let hostPort = p["hostPort"]?.int, hostPort > 0 else { return nil }
                    return .with {
                        $0.containerPort = Int32(p["containerPort"]?.int ?? 0)
                        $0.hostPort = Int32(hostPort)
                        $0.hostIp = p["hostIP"]?.string ?? ""
                        $0.protocol = switch p["protocol"]?.string ?? "TCP" { case "UDP": .udp; case "SCTP": .sctp; default: .tcp }
                    }
                }
            }
            $0.linux = .with {
                $0.securityContext = .with {
                    if spec["hostNetwork"]?.bool == true || spec["hostPID"]?.bool == true || spec["hostIPC"]?.bool == true {
                        $0.namespaceOptions = .with {
                            $0.network = spec["hostNetwork"]?.bool == true ? .node : .pod
                            $0.pid = spec["hostPID"]?.bool == true ? .node : .container
                            $0.ipc = spec["hostIPC"]?.bool == true ? .node : .pod
                        }
                    }
                    if let user = spec[path: ["securityContext", "runAsUser"]]?.int { $0.runAsUser = .with { $0.value = user } }
                }
                $0.sysctls = Dictionary((spec[path: ["securityContext", "sysctls"]]?.array ?? []).compactMap { s in
                    s["name"]?.string.map { ($0, s["value"]?.string ?? "") }
                }, uniquingKeysWith: { _, b in b })
            }
        }
    }

    /// The cluster's DNS as `--cluster-dns` and `--cluster-domain` give it.
    public struct DNS: Sendable {
        public var servers: [String]
        public var clusterDomain: String
        public init(servers: [String], clusterDomain: String) {
            self.servers = servers
            self.clusterDomain = clusterDomain
        }

        /// The pod's resolv.conf by its dnsPolicy (nil: the runtime copies the node's).
        public func config(for pod: JSONValue) -> Runtime_V1_DNSConfig? {
            let spec = pod["spec"] ?? [:]
            var policy = spec["dnsPolicy"]?.string ?? "ClusterFirst"
            if policy == "ClusterFirst" && spec["hostNetwork"]?.bool == true { policy = "Default" }
            if policy == "ClusterFirstWithHostNet" { policy = "ClusterFirst" }
            var config = Runtime_V1_DNSConfig()
            switch policy {
            case "ClusterFirst" where !servers.isEmpty:
                config.servers = servers
                config.searches = ["\(pod.namespace).svc.\(clusterDomain)", "svc.\(clusterDomain)", clusterDomain]
                config.options = ["ndots:5"]
            case "None":
                break
            default:
                if spec["dnsConfig"] == nil { return nil }
            }
            if let extra = spec["dnsConfig"] {
                config.servers += (extra["nameservers"]?.array ?? []).compactMap(\.string)
                config.searches += (extra["searches"]?.array ?? []).compactMap(\.string)
                for o in extra["options"]?.array ?? [] {
                    guard let name = o["name"]?.string else { continue }
                    config.options.removeAll { $0 == name || $0.hasPrefix(name + ":") }
                    config.options.append(o["value"]?.string.map { "\(name):\($0)" } ?? name)
                }
            }
            return config
        }
    }

    /// What a container is given besides its spec: its environment and mounts, resolved by the
    /// kubelet from the API (ConfigMaps, Secrets, Services) and the pod's volumes.
    public struct Resolved: Sendable {
        public var env: [(String, String)]
        public var mounts: [Runtime_V1_Mount]
        public init(env: [(String, String)], mounts: [Runtime_V1_Mount]) {
            self.env = env
            self.mounts = mounts
        }
    }

    public static func containerConfig(_ pod: JSONValue, _ container: JSONValue, restartCount: Int, imageRef: String, resolved: Resolved) -> Runtime_V1_ContainerConfig {
        let name = container["name"]?.string ?? ""
        let podSpec = pod["spec"] ?? [:]
        return .with {
            $0.metadata = .with { $0.name = name; $0.attempt = UInt32(restartCount) }
            $0.image = .with { $0.image = imageRef; $0.userSpecifiedImage = container["image"]?.string ?? "" }
            $0.command = (container["command"]?.array ?? []).compactMap(\.string)
            $0.args = (container["args"]?.array ?? []).compactMap(\.string)
            $0.workingDir = container["workingDir"]?.string ?? ""
            $0.envs = resolved.env.map { kv in .with { $0.key = kv.0; $0.value = Data(kv.1.utf8) } }
            $0.mounts = resolved.mounts
            $0.labels = [containerNameLabel: name, podNameLabel: pod.name, podNamespaceLabel: pod.namespace, podUIDLabel: pod.uid]
            $0.annotations = [restartCountAnnotation: String(restartCount), containerHashAnnotation: hash(container),
                              terminationGraceAnnotation: String(podSpec["terminationGracePeriodSeconds"]?.int ?? 30),
                              "io.kubernetes.container.terminationMessagePath": container["terminationMessagePath"]?.string ?? "/dev/termination-log"]
            $0.logPath = "\(name)/\(restartCount).log"
            $0.stdin = container["stdin"]?.bool ?? false
            $0.stdinOnce = container["stdinOnce"]?.bool ?? false
            $0.tty = container["tty"]?.bool ?? false
            $0.linux = .with {
                $0.resources = linuxResources(container, qos: QoS.of(pod), nodeMemory: NodeDescription.memoryBytes)
                $0.securityContext = securityContext(container, pod: podSpec)
            }
        }
    }

    /// A container's spec hash: a restart with a changed spec is a new container (upstream
    /// compares it to decide on a restart too).
    public static func hash(_ container: JSONValue) -> String {
        var h: UInt32 = 2_166_136_261
        for b in container.serialized() { h = (h ^ UInt32(b)) &* 16_777_619 }
        return String(h, radix: 16)
    }

    public enum QoS: String, Sendable { case guaranteed = "Guaranteed", burstable = "Burstable", bestEffort = "BestEffort"
        /// The pod's QoS class, as upstream's GetPodQOS.
        public static func of(_ pod: JSONValue) -> QoS {
            let containers = (pod[path: ["spec", "containers"]]?.array ?? []) + (pod[path: ["spec", "initContainers"]]?.array ?? [])
            var any = false, guaranteed = true
            for c in containers {
                let requests = c[path: ["resources", "requests"]]?.object ?? [:], limits = c[path: ["resources", "limits"]]?.object ?? [:]
                if !requests.isEmpty || !limits.isEmpty { any = true }
                for r in ["cpu", "memory"] {
                    guard let l = limits[r] else { guaranteed = false; continue }
                    if let q = requests[r], Quantity.parse(q) != Quantity.parse(l) { guaranteed = false }
                }
            }
            if !any { return .bestEffort }
            return guaranteed ? .guaranteed : .burstable
        }
    }

    /// CPU shares and quota, the memory limit, and the OOM score by QoS (upstream's
    /// GetContainerOOMScoreAdjust: -997 guaranteed, 1000 best effort, between by the memory
    /// request's share of the node for burstable).
    public static func linuxResources(_ container: JSONValue, qos: QoS, nodeMemory: Int64) -> Runtime_V1_LinuxContainerResources {
        let requests = container[path: ["resources", "requests"]], limits = container[path: ["resources", "limits"]]
        return .with {
            let cpuRequest = Quantity.milli(requests?["cpu"] ?? limits?["cpu"])
            $0.cpuShares = max(2, cpuRequest * 1024 / 1000)
            $0.cpuPeriod = 100_000
            if let l = limits?["cpu"] { $0.cpuQuota = max(1000, Quantity.milli(l) * 100_000 / 1000) }
            if let m = limits?["memory"] { $0.memoryLimitInBytes = Quantity.value(m) }
            switch qos {
            case .guaranteed: $0.oomScoreAdj = -997
            case .bestEffort: $0.oomScoreAdj = 1000
            case .burstable:
                let request = Quantity.value(requests?["memory"])
                let score = 1000 - (1000 * request) / max(1, nodeMemory)
                $0.oomScoreAdj = min(999, max(2, score))
            }
        }
    }

    public static func securityContext(_ container: JSONValue, pod: JSONValue) -> Runtime_V1_LinuxContainerSecurityContext {
        let sc = container["securityContext"] ?? [:], psc = pod["securityContext"] ?? [:]
        return .with {
            if let user = sc["runAsUser"]?.int ?? psc["runAsUser"]?.int { $0.runAsUser = .with { $0.value = user } }
            if let group = sc["runAsGroup"]?.int ?? psc["runAsGroup"]?.int { $0.runAsGroup = .with { $0.value = group } }
            $0.readonlyRootfs = sc["readOnlyRootFilesystem"]?.bool ?? false
            $0.privileged = sc["privileged"]?.bool ?? false
            $0.supplementalGroups = (psc["supplementalGroups"]?.array ?? []).compactMap(\.int)
            if let caps = sc["capabilities"] {
                $0.capabilities = .with {
                    $0.addCapabilities = (caps["add"]?.array ?? []).compactMap(\.string)
                    $0.dropCapabilities = (caps["drop"]?.array ?? []).compactMap(\.string)
                }
            }
            $0.noNewPrivs = sc["allowPrivilegeEscalation"]?.bool == false
            if spec(pod, "hostPID") {
                $0.namespaceOptions = .with { $0.pid = .node; $0.network = spec(pod, "hostNetwork") ? .node : .pod; $0.ipc = spec(pod, "hostIPC") ? .node : .pod }
            } else {
                $0.namespaceOptions = .with {
                    $0.pid = pod["shareProcessNamespace"]?.bool == true ? .pod : .container
                    $0.network = spec(pod, "hostNetwork") ? .node : .pod
                    $0.ipc = spec(pod, "hostIPC") ? .node : .pod
                }
            }
        }
    }

    static func spec(_ pod: JSONValue, _ field: String) -> Bool { pod[field]?.bool == true }

    /// The image's pull policy as defaulted upstream: Always for `:latest` or no tag, else IfNotPresent.
    public static func pullPolicy(_ container: JSONValue) -> String {
        if let p = container["imagePullPolicy"]?.string, !p.isEmpty { return p }
        let image = container["image"]?.string ?? ""
        if image.contains("@") { return "IfNotPresent" }
        let last = image.split(separator: "/").last ?? ""
        return !last.contains(":") || last.hasSuffix(":latest") ? "Always" : "IfNotPresent"
    }
}
