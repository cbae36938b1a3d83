import APIAccess
import Foundation
import HTTPJSON
import HTTPTypes
import HummingbirdWebSocket
import KubeAPI
import Logging
import NIOCore
import NIOSSL
import WSClient

/// `pods/log` and `pods/exec`: the API server finds the pod's node and passes the request to
/// that node's kubelet (its `InternalIP`, else `ExternalIP`, else `Hostname`, at the port of
/// `status.daemonEndpoints.kubeletEndpoint`), over HTTPS without checking the kubelet's
/// certificate, as kube-apiserver does without `--kubelet-certificate-authority`, presenting
/// its kubelet client certificate (`--kubelet-client-certificate`) when it has one. A log is
/// streamed back as it comes; an exec's WebSocket is relayed message by message to a WebSocket
/// opened to the kubelet with the same subprotocol.
struct KubeletTarget: Sendable {
    var host: String
    var port: Int
    var namespace: String
    var pod: String
    var container: String
    /// The node's name: what its certificate is asked for (an address is not a TLS server name).
    var node: String

    var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// An exec's kubelet: its WebSocket address and the name its certificate is asked for.
struct ExecTarget: Sendable {
    var url: String
    var serverName: String
    var credentials: KubeletClientCredentials?
}

/// The pair the API server presents to kubelets (`--kubelet-client-certificate`,
/// `--kubelet-client-key`), read from its files at each connection (they may be renewed).
public struct KubeletClientCredentials: Sendable, Equatable {
    public var certificateFile: String
    public var keyFile: String
    public init(certificateFile: String, keyFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}

enum NodeStreams {
    /// The remote command subprotocols the kubelet serves, best first (the server relays, so it
    /// offers no other).
    static let protocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]

    static func negotiate(_ header: String?) -> String? {
        let offered = (header ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return offered.first { protocols.contains($0) }
    }

    /// The client reads the pair from its files when it connects.
    static func kubeletTLS(_ credentials: KubeletClientCredentials?) -> HTTPJSONClient.TLS {
        HTTPJSONClient.TLS(insecureSkipVerify: true, clientCertificateFile: credentials?.certificateFile, clientKeyFile: credentials?.keyFile)
    }

    static func clientTLS(_ credentials: KubeletClientCredentials?) throws -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateVerification = .none
        if let credentials {
            c.certificateChain = try NIOSSLCertificate.fromPEMFile(credentials.certificateFile).map { .certificate($0) }
            c.privateKey = .privateKey(try NIOSSLPrivateKey(file: credentials.keyFile, format: .pem))
        }
        return c
    }

    static let maxMessage = 1 << 20

    /// Relays an upgraded exec connection to the kubelet at `url` and back until the kubelet
    /// ends it; a kubelet that cannot be reached is reported on the error channel.
    static func relay(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter, to target: Result<ExecTarget, APIError>,
                      subprotocol: String, logger: Logger) async {
        let t: ExecTarget
        switch target {
        case .success(let found): t = found
        case .failure(let e):
            // Refused before reaching the kubelet: the Status goes where kubectl reads the end.
            try? await outbound.write(.binary(ByteBuffer(bytes: [3] + e.status.bytes())))
            return
        }
        var headers = HTTPFields()
        headers[.secWebSocketProtocol] = subprotocol
        do {
            try await WebSocketClient.connect(url: t.url, configuration: .init(maxFrameSize: maxMessage, additionalHeaders: headers, sniHostname: t.serverName),
                                              tlsConfiguration: try clientTLS(t.credentials), logger: logger) { fromKubelet, toKubelet, _ in
                try await withThrowingTaskGroup(of: Void.self) { g in
                    g.addTask {
                        for try await m in inbound.messages(maxSize: maxMessage) { try await forward(m, toKubelet) }
                        // The client went away: the kubelet's side ends too.
                        try? await toKubelet.close(.normalClosure, reason: nil)
                    }
                    for try await m in fromKubelet.messages(maxSize: maxMessage) { try await forward(m, outbound) }
                    g.cancelAll()
                }
            }
        } catch {
            let status: JSONValue = ["metadata": [:], "status": "Failure", "message": .string("error dialing backend: \(error)"),
                                     "reason": "InternalError", "code": 500]
            try? await outbound.write(.binary(ByteBuffer(bytes: [3] + status.bytes())))
        }
    }

    static func forward(_ m: WebSocketMessage, _ to: WebSocketOutboundWriter) async throws {
        switch m {
        case .binary(let b): try await to.writeBinaryMessage(b)
        case .text(let t): try await to.write(.text(t))
        }
    }
}

extension APIHandler {
    /// The kubelet that runs a pod's container, as upstream finds it, with upstream's errors: a
    /// container must be named when the pod has several; a pod not yet bound has no host.
    func kubeletTarget(namespace: String, pod name: String, container: String?) async throws -> KubeletTarget {
        guard let pods = registry.find(group: "", version: "v1", resource: "pods"),
              let nodes = registry.find(group: "", version: "v1", resource: "nodes") else { throw APIError.badRequest("pods are not served") }
        let pod = try await get(pods, namespace: namespace, name: name, subresource: nil)
        let spec = pod["spec"]
        func names(_ field: String) -> [String] { spec?[field]?.array?.compactMap { $0["name"]?.string } ?? [] }
        let containers = names("containers"), inits = names("initContainers"), ephemeral = names("ephemeralContainers")
        var chosen = container ?? ""
        if chosen.isEmpty {
            guard containers.count == 1 else {
                var message = "a container name must be specified for pod \(name), choose one of: [\(containers.joined(separator: " "))]"
                if !inits.isEmpty { message += " or one of the init containers: [\(inits.joined(separator: " "))]" }
                throw APIError.badRequest(message)
            }
            chosen = containers[0]
        }
        guard (containers + inits + ephemeral).contains(chosen) else { throw APIError.badRequest("container \(chosen) is not valid for pod \(name)") }
        guard let nodeName = spec?["nodeName"]?.string, !nodeName.isEmpty else {
            throw APIError.badRequest("pod \(name) does not have a host assigned")
        }
        let node = try await get(nodes, namespace: nil, name: nodeName, subresource: nil)
        let addresses = node[path: ["status", "addresses"]]?.array ?? []
        var host: String?
        for type in ["InternalIP", "ExternalIP", "Hostname"] where host == nil {
            host = addresses.first { $0["type"]?.string == type }?["address"]?.string
        }
        guard let host else {
            throw APIError(code: 500, reason: "InternalError", message: "no preferred addresses found; known addresses: []")
        }
        let port = node[path: ["status", "daemonEndpoints", "kubeletEndpoint", "Port"]]?.int.map(Int.init) ?? 10250
        return KubeletTarget(host: host, port: port > 0 ? port : 10250, namespace: namespace, pod: name, container: chosen, node: nodeName)
    }

    /// `GET pods/NAME/log`: the container's log from its kubelet, streamed.
    func podLog(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let target = try await kubeletTarget(namespace: t.namespace ?? "", pod: t.name ?? "", container: req.query["container"])
        var query: [String: String] = [:]
        for k in ["follow", "previous", "timestamps", "tailLines", "limitBytes", "sinceSeconds", "sinceTime"] {
            if let v = req.query[k] { query[k] = v }
        }
        for k in ["tailLines", "limitBytes", "sinceSeconds"] {
            if let v = query[k], Int(v).map({ $0 < 0 }) ?? true {
                throw APIError.badRequest("\(k): Invalid value: \"\(v)\": must be a non-negative integer")
            }
        }
        let path = "/containerLogs/\(target.namespace)/\(target.pod)/\(target.container)"
        let client = HTTPJSONClient(server: "https://\(target.authority)", host: target.host, port: target.port,
                                    tls: NodeStreams.kubeletTLS(kubeletClient), peer: "the kubelet")
        do {
            return APIResponse(code: 200, body: .textStream(try await client.byteStream(path, query: query)))
        } catch let e as ClientError where e.status >= 400 {
            throw APIError(code: e.status, reason: e.status == 404 ? "NotFound" : "BadRequest", message: e.description)
        } catch {
            throw APIError(code: 500, reason: "InternalError", message: "Get \"https://\(target.authority)\(path)\": \(error)")
        }
    }

    /// Where an exec request goes: the kubelet's WebSocket address for it, the request's query
    /// kept as it came (its `command`s repeat, in order). Errors as upstream's.
    func execTarget(namespace: String, pod: String, container: String?, hasCommand: Bool, rawQuery: Substring) async throws -> ExecTarget {
        let target = try await kubeletTarget(namespace: namespace, pod: pod, container: container)
        guard hasCommand else { throw APIError.badRequest("you must specify at least 1 command") }
        return ExecTarget(url: "wss://\(target.authority)/exec/\(target.namespace)/\(target.pod)/\(target.container)?\(rawQuery)",
                          serverName: target.node, credentials: kubeletClient)
    }

    /// An exec request that is not a WebSocket upgrade (SPDY/3.1 is not served): its errors, or
    /// why it cannot be served.
    func execWithoutUpgrade(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        _ = try await execTarget(namespace: t.namespace ?? "", pod: t.name ?? "", container: req.query["container"],
                                 hasCommand: req.query["command"] != nil, rawQuery: "")
        throw APIError.badRequest("Upgrade request required: exec is served over WebSocket (\(NodeStreams.protocols.joined(separator: ", "))); kubectl 1.30 and later speak it")
    }

    /// Whether (and how) a request is upgraded to a WebSocket: an exec of a pod, in a subprotocol
    /// both ends speak; with where it goes, or why it cannot (told on the error channel once
    /// upgraded: a WebSocket handshake refused carries no reason kubectl shows).
    func execUpgrade(path: String, rawQuery: Substring, subprotocols: String?, user: UserInfo = .unsecured) async -> (target: Result<ExecTarget, APIError>, subprotocol: String)? {
        let seg = path.split(separator: "/").map(String.init)
        guard seg.count == 7, seg[0] == "api", seg[1] == "v1", seg[2] == "namespaces", seg[4] == "pods", seg[6] == "exec",
              let chosen = NodeStreams.negotiate(subprotocols) else { return nil }
        // A WebSocket exec is a GET that runs a command: `create` on pods/exec is asked too, as
        // upstream asks it of a WebSocket upgrade from 1.35 (AuthorizePodWebsocketUpgradeCreatePermission;
        // 1.33 asks `get` only).
        if !access.allowsAll {
            for verb in ["get", "create"] {
                let a = RequestAttributes.resource(user, verb: verb, group: "", resource: "pods", subresource: "exec", namespace: seg[3], name: seg[5])
                let d = await access.authorize(a)
                if !d.allowed { return (.failure(AccessControl.refusal(a, d)), chosen) }
            }
        }
        var container: String?
        var hasCommand = false
        for pair in rawQuery.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv[0] == "command" { hasCommand = true }
            if kv[0] == "container", kv.count > 1 { container = String(kv[1]).removingPercentEncoding }
        }
        do {
            return (.success(try await execTarget(namespace: seg[3], pod: seg[5], container: container, hasCommand: hasCommand, rawQuery: rawQuery)), chosen)
        } catch let e as APIError {
            return (.failure(e), chosen)
        } catch {
            return (.failure(APIError(code: 500, reason: "InternalError", message: "\(error)")), chosen)
        }
    }
}
