import ClusterPKI
import Foundation
import KubeAPI
import KubeClient
import Logging

/// The kubelet's client certificate, as upstream's TLS bootstrap and rotation make it: a node
/// that joins with a bootstrap token finds and checks the cluster (kubeadm join's token
/// discovery), asks for a `kubernetes.io/kube-apiserver-client-kubelet` certificate for
/// `system:node:NAME` in `system:nodes` through a CertificateSigningRequest, and once it is
/// approved and issued keeps it in `CERT_DIR/kubelet-client-current.pem` with a kubeconfig that
/// names that file; before it expires it asks for the next one with the current one.
public enum KubeletClientCertificate {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public static let fileName = "kubelet-client-current.pem"
    static let csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

    /// A bootstrap token, `ID.SECRET`.
    public static func parseToken(_ token: String) throws -> (id: String, secret: String) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let ok = parts.count == 2 && parts[0].count == 6 && parts[1].count == 16
            && (parts[0] + parts[1]).allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) }
        guard ok else { throw Failure("the bootstrap token \"\(token)\" was not of the form \"^([a-z0-9]{6})\\\\.([a-z0-9]{16})$\"") }
        return (parts[0], parts[1])
    }

    /// Token discovery: `cluster-info` read from `server` before trusting it, its kubeconfig
    /// signed with the token (the bootstrap signer's `jws-kubeconfig-ID`), the CA in it one of
    /// `caCertHashes` (unless `skipCAVerification`), then read again over TLS with that CA.
    /// Returns the CA, PEM.
    public static func discover(server: String, token: String, caCertHashes: [String], skipCAVerification: Bool,
                                timeout: Duration = .seconds(60), logger: Logger) async throws -> String {
        let (id, secret) = try parseToken(token)
        if caCertHashes.isEmpty && !skipCAVerification {
            throw Failure("token discovery needs --ca-cert-hash (sha256 of the cluster CA's public key, as `switchyard token create --print-join-command` prints it), or --discovery-token-unsafe-skip-ca-verification")
        }
        guard let url = URL(string: server), url.scheme == "https", let host = url.host else { throw Failure("--server \(server): not an https:// URL") }
        let port = url.port ?? 443
        let insecure = KubeClient(config: Kubeconfig(server: server, host: host, port: port, tls: .init(insecureSkipVerify: true)))
        let path = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
        let clock = ContinuousClock(), deadline = clock.now + timeout
        var lastProblem = "no answer yet"
        while true {
            do {
                let r = try await insecure.request("GET", path)
                if r.status == 200, let content = r.body[path: ["data", "kubeconfig"]]?.string {
                    guard let jws = r.body[path: ["data", "jws-kubeconfig-" + id]]?.string else {
                        throw Retry("there is no JWS signed token in the cluster-info ConfigMap. This token id \"\(id)\" is invalid for this cluster, can't connect")
                    }
                    guard BootstrapTokenJWS.verify(jws, content: content, tokenID: id, tokenSecret: secret) else {
                        throw Failure("failed to verify JWS signature of received cluster info object, can't trust this API Server")
                    }
                    let doc = try YAMLToJSON.convert(content)
                    guard let b64 = doc["clusters"]?.array?.first?[path: ["cluster", "certificate-authority-data"]]?.string,
                          let d = Data(base64Encoded: b64) else { throw Failure("the cluster-info ConfigMap's kubeconfig has no certificate-authority-data") }
                    let ca = String(decoding: d, as: UTF8.self)
                    if !skipCAVerification {
                        let hash = try ClusterPKI.caCertHash(of: ca)
                        guard caCertHashes.map({ $0.lowercased() }).contains(hash) else {
                            throw Failure("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"\(hash)\" are pinned")
                        }
                    }
                    // The same object again, now over a connection that checks the server.
                    let trusted = KubeClient(config: Kubeconfig(server: server, host: host, port: port, tls: .init(certificateAuthority: Array(ca.utf8))))
                    let again = try await trusted.request("GET", path)
                    guard again.body[path: ["data", "kubeconfig"]]?.string == content else {
                        throw Failure("the cluster-info read over the trusted connection differs from the one first read")
                    }
                    logger.info("cluster-info from \(server) is signed by token \(id) and its CA is pinned: trusting it")
                    return ca
                }
                if r.status == 401 || r.status == 403 {
                    throw Failure("reading cluster-info anonymously: HTTP \(r.status) \(r.body[path: ["message"]]?.string ?? ""): the API server must serve anonymous requests (--anonymous-auth, with an authorization mode such as Node,RBAC: AlwaysAllow turns them off)")
                }
                lastProblem = r.status == 200 ? "cluster-info has no kubeconfig" : "reading cluster-info: HTTP \(r.status) \(r.body[path: ["message"]]?.string ?? "")"
            } catch let e as Retry {
                lastProblem = e.description
            } catch let e as Failure {
                throw e
            } catch {
                lastProblem = "\(error)"
            }
            if clock.now >= deadline { throw Failure(lastProblem) }
            try await Task.sleep(for: .seconds(1))
        }
    }

    struct Retry: Error, CustomStringConvertible { var description: String; init(_ d: String) { description = d } }

    /// A certificate for `nodeName` asked for through `client`, once approved and issued.
    public static func request(_ client: KubeClient, nodeName: String, timeout: Duration = .seconds(300), logger: Logger) async throws -> (cert: String, key: String) {
        let (request, key) = try CertificateRequest.make(commonName: "system:node:" + nodeName, organizations: ["system:nodes"])
        let body: JSONValue = [
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": ["generateName": "node-csr-"],
            "spec": ["request": .string(Data(request.utf8).base64EncodedString()), "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "usages": ["digital signature", "client auth"]],
        ]
        let created = try await client.request("POST", csrPath, body: body)
        guard created.status == 201, let name = created.body[path: ["metadata", "name"]]?.string else {
            throw Failure("creating the certificate signing request: HTTP \(created.status): \(created.body[path: ["message"]]?.string ?? created.body.text())")
        }
        logger.info("asked for a client certificate for node \(nodeName): certificate signing request \(name)")
        let clock = ContinuousClock(), deadline = clock.now + timeout
        while clock.now < deadline {
            let r = try await client.request("GET", csrPath + "/" + name)
            if r.status == 200 {
                for c in r.body[path: ["status", "conditions"]]?.array ?? [] where ["Denied", "Failed"].contains(c["type"]?.string ?? "") {
                    throw Failure("certificate signing request \(name) is \(c["type"]!.string!.lowercased()), reason: \(c["reason"]?.string ?? ""), message: \(c["message"]?.string ?? "")")
                }
                if let b64 = r.body[path: ["status", "certificate"]]?.string, let d = Data(base64Encoded: b64), !d.isEmpty {
                    return (String(decoding: d, as: UTF8.self), key)
                }
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        throw Failure("timed out waiting for certificate signing request \(name) to be approved and issued")
    }

    /// Keeps the pair where the kubelet does (the certificate then the key, one file, 0600,
    /// written whole) and, when `kubeconfig` is given, a kubeconfig for `server` trusting `caPEM`
    /// that names the file.
    public static func store(cert: String, key: String, certDir: String, kubeconfig: String?, server: String, caPEM: String) throws {
        try FileManager.default.createDirectory(atPath: certDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let file = certDir + "/" + fileName
        try writeWhole(cert + (cert.hasSuffix("\n") ? "" : "\n") + key, to: file)
        guard let kubeconfig else { return }
        let text = """
            apiVersion: v1
            kind: Config
            clusters:
            - name: default-cluster
              cluster:
                server: \(server)
                certificate-authority-data: \(Data(caPEM.utf8).base64EncodedString())
            contexts:
            - name: default-context
              context:
                cluster: default-cluster
                user: default-auth
                namespace: default
            current-context: default-context
            users:
            - name: default-auth
              user:
                client-certificate: \(file)
                client-key: \(file)

            """
        try FileManager.default.createDirectory(atPath: (kubeconfig as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeWhole(text, to: kubeconfig)
    }

    static func writeWhole(_ text: String, to path: String) throws {
        let tmp = path + ".tmp"
        unlink(tmp)
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]), rename(tmp, path) == 0 else {
            unlink(tmp)
            throw Failure("writing \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The validity of the pair in `certDir`, and when it was written there; nil when there is none.
    public static func current(certDir: String) -> (notBefore: Date, notAfter: Date, written: Date)? {
        let path = certDir + "/" + fileName
        guard let d = FileManager.default.contents(atPath: path), let v = ClusterPKI.validity(String(decoding: d, as: UTF8.self)) else { return nil }
        let written = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? v.notBefore
        return (v.notBefore, v.notAfter, written)
    }

    /// When to ask for the next certificate: 70 to 90 % of the way through the current one's
    /// life, at random (upstream's jittered deadline). The life counts from `notBefore`, or from
    /// when the node got the certificate if that is later: signers backdate by five minutes,
    /// which for a short certificate would put the deadline in the past at once.
    public static func rotationDeadline(notBefore: Date, notAfter: Date, received: Date? = nil, jitter: Double = Double.random(in: 0.7...0.9)) -> Date {
        let start = max(notBefore, min(received ?? notBefore, notAfter))
        return start.addingTimeInterval(notAfter.timeIntervalSince(start) * jitter)
    }

    /// Rotates the pair in `certDir` until cancelled: at each deadline a new certificate is asked
    /// for with the current one (through `kubeconfig`, which names the file) and written over it;
    /// clients of that kubeconfig present the new one on their next connection.
    public static func rotate(kubeconfig: String, certDir: String, nodeName: String, logger: Logger) async {
        while !Task.isCancelled {
            guard let v = current(certDir: certDir) else {
                logger.error("certificate rotation: no client certificate in \(certDir)")
                return
            }
            let wait = rotationDeadline(notBefore: v.notBefore, notAfter: v.notAfter, received: v.written).timeIntervalSinceNow
            logger.info("certificate rotation: the client certificate expires \(v.notAfter); rotating in \(Int(max(0, wait))) s")
            if wait > 0 { try? await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
            if Task.isCancelled { return }
            do {
                let config = try Kubeconfig.load(path: kubeconfig)
                let (cert, key) = try await request(KubeClient(config: config), nodeName: nodeName, logger: logger)
                try store(cert: cert, key: key, certDir: certDir, kubeconfig: nil, server: config.server, caPEM: "")
                logger.info("certificate rotation: rotated the client certificate of node \(nodeName)")
            } catch {
                logger.error("certificate rotation: \(error); trying again in 10 s")
                try? await Task.sleep(for: .seconds(10))
            }
        }
    }
}
