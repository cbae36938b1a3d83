import Foundation
import KubeAPI

/// The kubelet's settings: its flags and the KubeletConfiguration (kubelet.config.k8s.io/v1beta1)
/// fields they stand for, with upstream's defaults.
public struct KubeletConfiguration: Sendable {
    public var nodeName: String
    /// The node's address (`--node-ip`); the first global IPv4 address when empty.
    public var nodeIP = ""
    public var maxPods = 110
    public var registerWithTaints: [JSONValue] = []
    public var nodeLabels: [String: String] = [:]
    public var clusterDNS: [String] = []
    public var clusterDomain = "cluster.local"
    /// `--root-dir`: volumes and pod directories.
    public var rootDir = "/var/lib/kubelet"
    /// `podLogsDir`.
    public var podLogsDir = "/var/log/pods"
    /// Where the runtime reads its CNI configuration; the kubelet writes the node's there once it
    /// knows the pod CIDR.
    public var cniConfDir = "/etc/cni/net.d"
    /// `nodeStatusUpdateFrequency`: how often the node's status is computed (and written when it
    /// changed, or at least every `nodeStatusReportFrequency`).
    public var nodeStatusUpdateFrequency: Duration = .seconds(10)
    public var nodeStatusReportFrequency: Duration = .seconds(300)
    /// `nodeLeaseDurationSeconds`; the Lease is renewed every quarter of it.
    public var nodeLeaseDurationSeconds = 40
    /// How often the runtime is relisted for changes (the PLEG's period).
    public var relistPeriod: Duration = .seconds(1)
    /// `syncFrequency`: each pod is synced at least this often.
    public var syncFrequency: Duration = .seconds(60)
    /// A crashing container's first back-off (doubling to `maxBackOff`).
    public var backOff: Duration = .seconds(10)
    public var maxBackOff: Duration = .seconds(300)
    /// The container runtime's name in container IDs (`containerd://…`), from CRI's Version.
    public var runtimeName = "containerd"
    /// `port` and `address`: where the kubelet's API listens (HTTPS). Port 0 takes a free one,
    /// which the Node's `daemonEndpoints` then names.
    public var port = 10250
    public var address = "0.0.0.0"
    /// `tlsCertFile` and `tlsPrivateKeyFile`; when empty, a self-signed pair in `certDir`
    /// (`kubelet.crt`, `kubelet.key`), made once, as upstream.
    public var tlsCertFile = ""
    public var tlsPrivateKeyFile = ""
    /// `--cert-dir`; `<rootDir>/pki` when empty.
    public var certDir = ""
    /// `staticPodPath` (`--pod-manifest-path`): a directory of pod manifests the kubelet runs as
    /// static pods; none when empty. Read again every `fileCheckFrequency`.
    public var staticPodPath = ""
    public var fileCheckFrequency: Duration = .seconds(20)
    /// `authentication.anonymous.enabled` (`--anonymous-auth`): a request to the kubelet's API
    /// without credentials is served as `system:anonymous`; otherwise it is a 401.
    public var anonymousAuth = true
    /// `authentication.x509.clientCAFile` (`--client-ca-file`): client certificates signed by
    /// these CAs authenticate (the API server's, for logs and exec).
    public var clientCAFile = ""
    /// `authentication.webhook.enabled` (`--authentication-token-webhook`): bearer tokens are
    /// checked by a TokenReview to the API server, the answers kept for `cacheTTL`.
    public var authenticationTokenWebhook = false
    public var authenticationTokenWebhookCacheTTL: Duration = .seconds(120)
    /// `authorization.mode` (`--authorization-mode`): `AlwaysAllow`, or `Webhook` (each request a
    /// SubjectAccessReview on the node's `nodes` subresource, answers kept for the TTLs).
    public var authorizationMode = "AlwaysAllow"
    public var authorizationWebhookCacheAuthorizedTTL: Duration = .seconds(300)
    public var authorizationWebhookCacheUnauthorizedTTL: Duration = .seconds(30)

    public init(nodeName: String) { self.nodeName = nodeName }

    /// The kubelet.config.k8s.io/v1beta1 defaults where they differ from the flags': a kubelet
    /// started from a configuration file denies anonymous requests and asks the API server,
    /// unless the file says otherwise.
    public mutating func applyFileDefaults() {
        anonymousAuth = false
        authenticationTokenWebhook = true
        authorizationMode = "Webhook"
    }

    /// Applies a KubeletConfiguration document's fields (JSON or YAML already parsed).
    public mutating func apply(_ doc: JSONValue) throws {
        if let kind = doc["kind"]?.string, kind != "KubeletConfiguration" {
            throw KubeletError("--config: kind is \(kind), want KubeletConfiguration")
        }
        if let v = doc["maxPods"]?.int { maxPods = Int(v) }
        if let v = doc["clusterDNS"]?.array { clusterDNS = v.compactMap(\.string) }
        if let v = doc["clusterDomain"]?.string { clusterDomain = v }
        if let v = doc["podLogsDir"]?.string { podLogsDir = v }
        if let v = doc["registerWithTaints"]?.array { registerWithTaints = v }
        if let v = doc["nodeLeaseDurationSeconds"]?.int { nodeLeaseDurationSeconds = Int(v) }
        if let v = doc["nodeStatusUpdateFrequency"]?.string { nodeStatusUpdateFrequency = try Self.duration(v) }
        if let v = doc["nodeStatusReportFrequency"]?.string { nodeStatusReportFrequency = try Self.duration(v) }
        if let v = doc["syncFrequency"]?.string { syncFrequency = try Self.duration(v) }
        if let v = doc["port"]?.int { port = Int(v) }
        if let v = doc["staticPodPath"]?.string { staticPodPath = v }
        if let v = doc["fileCheckFrequency"]?.string { fileCheckFrequency = try Self.duration(v) }
        if let v = doc["address"]?.string { address = v }
        if let v = doc["tlsCertFile"]?.string { tlsCertFile = v }
        if let v = doc["tlsPrivateKeyFile"]?.string { tlsPrivateKeyFile = v }
        if let a = doc["authentication"] {
            if let v = a[path: ["anonymous", "enabled"]]?.bool { anonymousAuth = v }
            if let v = a[path: ["x509", "clientCAFile"]]?.string { clientCAFile = v }
            if let v = a[path: ["webhook", "enabled"]]?.bool { authenticationTokenWebhook = v }
            if let v = a[path: ["webhook", "cacheTTL"]]?.string { authenticationTokenWebhookCacheTTL = try Self.duration(v) }
        }
        if let a = doc["authorization"] {
            if let v = a["mode"]?.string { authorizationMode = v }
            if let v = a[path: ["webhook", "cacheAuthorizedTTL"]]?.string { authorizationWebhookCacheAuthorizedTTL = try Self.duration(v) }
            if let v = a[path: ["webhook", "cacheUnauthorizedTTL"]]?.string { authorizationWebhookCacheUnauthorizedTTL = try Self.duration(v) }
        }
        guard ["AlwaysAllow", "Webhook"].contains(authorizationMode) else {
            throw KubeletError("authorization.mode: \(authorizationMode): want AlwaysAllow or Webhook")
        }
    }

    /// A Go duration (`10s`, `1m30s`, `500ms`).
    public static func duration(_ s: String) throws -> Duration {
        var total = 0.0, number = ""
        var i = s.startIndex
        while i < s.endIndex {
            let ch = s[i]
            if ch.isNumber || ch == "." { number.append(ch); i = s.index(after: i); continue }
            var unit = String(ch)
            let next = s.index(after: i)
            if ch == "m" && next < s.endIndex && s[next] == "s" { unit = "ms"; i = next }
            guard let n = Double(number) else { throw KubeletError("invalid duration \(s)") }
            switch unit {
            case "h": total += n * 3600
            case "m": total += n * 60
            case "s": total += n
            case "ms": total += n / 1000
            default: throw KubeletError("invalid duration \(s)")
            }
            number = ""
            i = s.index(after: i)
        }
        guard number.isEmpty || s == "0" else { throw KubeletError("invalid duration \(s): missing unit") }
        return .milliseconds(Int64(total * 1000))
    }
}

public struct KubeletError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
