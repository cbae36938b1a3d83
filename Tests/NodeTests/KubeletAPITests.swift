import APIAccess
import APIServer
import ClusterPKI
import CRI
import Foundation
import HTTPJSON
import KubeAPI
@testable import Kubelet
@testable import KubeletServer
import NIOSSL
import Synchronization
import Testing

/// A container's log read back as `kubectl logs` shows it, from the CRI log format.
@Suite("container logs")
struct ContainerLogTests {
    static let file = """
    2026-12-05T10:00:00.100000000Z stdout F first line
    2026-12-05T10:00:01.200000000Z stderr F an error
    2026-12-05T10:00:02.300000000Z stdout P part one, 
    2026-12-05T10:00:02.400000000Z stdout F part two
    2026-12-05T10:00:03.500000000Z stdout F last line

    """

    @Test func entriesAreParsedAndRenderedAsKubectlShowsThem() {
        let (entries, rest) = ContainerLog.entries(Array(Self.file.utf8))
        #expect(rest == Self.file.utf8.count)
        #expect(entries.count == 5)
        #expect(entries[1] == ContainerLog.Entry(time: "2026-12-05T10:00:01.200000000Z", stream: "stderr", partial: false, content: Array("an error".utf8)))
        #expect(entries[2].partial)
        let plain = entries.flatMap { ContainerLog.render($0, timestamps: false) }
        #expect(String(decoding: plain, as: UTF8.self) == "first line\nan error\npart one, part two\nlast line\n")
        #expect(String(decoding: ContainerLog.render(entries[0], timestamps: true), as: UTF8.self) == "2026-12-05T10:00:00.100000000Z first line\n")
        // Not an entry: a line without a stream, and an unfinished last line left for later.
        #expect(ContainerLog.parse(Array("garbage".utf8)) == nil)
        #expect(ContainerLog.parse(Array("2026-12-05T10:00:00Z stdin F x".utf8)) == nil)
        #expect(ContainerLog.entries(Array("2026-12-05T10:00:00Z stdout F done\n2026-12-05T10:00:00Z std".utf8)).rest == 35)
    }

    @Test func tailCountsLinesNotEntries() {
        let entries = ContainerLog.entries(Array(Self.file.utf8)).entries
        #expect(ContainerLog.tail(entries, lines: 1).map { String(decoding: $0.content, as: UTF8.self) } == ["last line"])
        // The line made of a partial and a full entry counts once, and comes whole.
        #expect(ContainerLog.tail(entries, lines: 2).count == 3)
        #expect(ContainerLog.tail(entries, lines: 0).isEmpty)
        #expect(ContainerLog.tail(entries, lines: 99).count == 5)
    }

    @Test func optionsComeFromTheQueryAndBadNumbersAreRefused() throws {
        let now = Date(timeIntervalSince1970: 1_000_000)
        let o = try ContainerLogOptions(query: ["follow": "true", "timestamps": "1", "tailLines": "3", "limitBytes": "10", "sinceSeconds": "60"], now: now)
        #expect(o == ContainerLogOptions(follow: true, timestamps: true, tailLines: 3, limitBytes: 10, since: now.addingTimeInterval(-60)))
        #expect(throws: KubeletError.self) { try ContainerLogOptions(query: ["tailLines": "-1"]) }
        #expect(throws: KubeletError.self) { try ContainerLogOptions(query: ["limitBytes": "ten"]) }
        #expect(throws: KubeletError.self) { try ContainerLogOptions(query: ["sinceTime": "yesterday"]) }
        #expect(try ContainerLogOptions(query: ["sinceTime": "2026-12-05T10:00:02Z"]).since == ContainerLog.parseTime("2026-12-05T10:00:02.000Z"))
        #expect(ContainerLog.parseTime("2026-12-05T10:00:02.300000000Z")! > ContainerLog.parseTime("2026-12-05T10:00:02Z")!)
    }

    func collect(_ s: AsyncThrowingStream<Data, any Error>) async throws -> String {
        var out = Data()
        for try await d in s { out += d }
        return String(decoding: out, as: UTF8.self)
    }

    @Test func aFileIsReadWithTailSinceAndALimit() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-log-\(UUID().uuidString).log").path
        try Self.file.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let all = try await collect(ContainerLog.read(path: path, options: .init()) { false })
        #expect(all == "first line\nan error\npart one, part two\nlast line\n")
        let tail = try await collect(ContainerLog.read(path: path, options: .init(timestamps: true, tailLines: 1)) { false })
        #expect(tail == "2026-12-05T10:00:03.500000000Z last line\n")
        let since = try await collect(ContainerLog.read(path: path, options: .init(since: ContainerLog.parseTime("2026-12-05T10:00:02.350Z"))) { false })
        #expect(since == "part two\nlast line\n")
        let limited = try await collect(ContainerLog.read(path: path, options: .init(limitBytes: 13)) { false })
        #expect(limited == "first line\nan")
        await #expect(throws: KubeletError.self) { try await collect(ContainerLog.read(path: path + ".missing", options: .init()) { false }) }
    }

    /// Followed, what is appended comes through, and the stream ends once the container has
    /// stopped and nothing more is written.
    @Test func followingEndsWhenTheContainerStops() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-log-\(UUID().uuidString).log").path
        try "2026-12-05T10:00:00Z stdout F one\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let running = Running()
        let stream = ContainerLog.read(path: path, options: .init(follow: true)) { running.value }
        let reader = Task { try await collect(stream) }
        try await Task.sleep(for: .milliseconds(300))
        let h = try #require(FileHandle(forWritingAtPath: path))
        h.seekToEndOfFile()
        h.write(Data("2026-12-05T10:00:01Z stdout P tw".utf8))
        try await Task.sleep(for: .milliseconds(300))
        h.write(Data("o\n2026-12-05T10:00:01Z stdout F !\n".utf8))
        try h.close()
        try await Task.sleep(for: .milliseconds(300))
        running.value = false
        let out = try await reader.value
        #expect(out == "one\ntwo!\n")
    }

    final class Running: @unchecked Sendable {
        private let lock = NSLock()
        private var v = true
        var value: Bool {
            get { lock.withLock { v } }
            set { lock.withLock { v = newValue } }
        }
    }
}

/// The remote command protocol's pieces: subprotocols, queries as Go encodes them, the end Status.
@Suite("remote command")
struct RemoteCommandTests {
    @Test func theBestServedSubprotocolIsChosen() {
        #expect(RemoteCommand.negotiate("v5.channel.k8s.io, v4.channel.k8s.io,v3.channel.k8s.io") == "v5.channel.k8s.io")
        #expect(RemoteCommand.negotiate("v4.channel.k8s.io, channel.k8s.io") == "v4.channel.k8s.io")
        #expect(RemoteCommand.negotiate("channel.k8s.io") == nil)
        #expect(RemoteCommand.negotiate(nil) == nil)
    }

    @Test func commandsKeepTheirOrderAndDecoding() {
        let q = RemoteCommand.query("command=sh&command=-c&command=echo+a%26b+%2Ftmp&container=web&stdout=true&stderr=1&tty=false")
        let o = RemoteCommand.ExecOptions(query: q)
        #expect(o.command == ["sh", "-c", "echo a&b /tmp"])
        #expect(o.container == "web" && o.stdout && o.stderr && !o.stdin && !o.tty)
    }

    @Test func theEndIsAStatusKubectlReadsTheExitCodeFrom() {
        #expect(RemoteCommand.exitStatus(0, command: ["true"]) == ["metadata": [:], "status": "Success"])
        let failed = RemoteCommand.exitStatus(3, command: ["sh", "-c", "exit 3"])
        #expect(failed["reason"] == "NonZeroExitCode")
        #expect(failed[path: ["details", "causes"]] == [["reason": "ExitCode", "message": "3"]])
        #expect(RemoteCommand.frame(RemoteCommand.stdout, Array("hi".utf8)) == [1, 104, 105])
    }
}

/// The kubelet's API over HTTPS with its self-signed certificate, in front of a kubelet on the
/// fake runtime.
@Suite("the kubelet's API", .serialized)
struct KubeletServerTests {
    @Test func aSelfSignedCertificateIsMadeOnceAndKept() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-pki-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let files = try ServingCertificate.files(certFile: "", keyFile: "", certDir: dir, hostname: "node-a", addresses: ["192.0.2.10"])
        #expect(files == (dir + "/kubelet.crt", dir + "/kubelet.key"))
        let first = try String(contentsOfFile: files.cert, encoding: .utf8)
        let again = try ServingCertificate.files(certFile: "", keyFile: "", certDir: dir, hostname: "node-a", addresses: ["192.0.2.10"])
        #expect(try String(contentsOfFile: again.cert, encoding: .utf8) == first)
        let mode = try FileManager.default.attributesOfItem(atPath: files.key)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let cert = try NIOSSLCertificate.fromPEMFile(files.cert)
        #expect(cert.count == 1)
        _ = try ServingCertificate.tlsConfiguration(cert: files.cert, key: files.key)
        #expect(throws: ServingCertificate.Failure.self) {
            try ServingCertificate.files(certFile: "/x.crt", keyFile: "", certDir: dir, hostname: "n", addresses: [])
        }
    }

    @Test func healthzPodsLogsAndExecWithoutAnUpgrade() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        let server = KubeletServer(kubelet: h.kubelet, address: "127.0.0.1", port: 0,
                                   tls: try ServingCertificate.tlsConfiguration(
                                       cert: try ServingCertificate.files(certFile: "", keyFile: "", certDir: h.dir + "/pki", hostname: "node-a", addresses: []).cert,
                                       key: h.dir + "/pki/kubelet.key"))
        let (ports, announce) = AsyncStream.makeStream(of: Int.self)
        let serving = Task { try await server.run { announce.yield($0) } }
        defer { serving.cancel() }
        var port = 0
        for await p in ports { port = p; break }
        let client = HTTPJSONClient(server: "https://127.0.0.1:\(port)", host: "127.0.0.1", port: port, tls: .init(insecureSkipVerify: true), peer: "the kubelet")

        #expect(try await client.rawRequest("GET", "/healthz") == (200, Data("ok\n".utf8)))
        // HTTPS probes, against this HTTPS server: its certificate is not checked, as upstream's.
        let probeOK = await Probe.httpsGet(host: "127.0.0.1", port: port, path: "/healthz", headers: [("X-Probe", "1")], timeout: 20)
        #expect(probeOK.ok, "\(probeOK.message)")
        let probe404 = await Probe.httpsGet(host: "127.0.0.1", port: port, path: "/nothing", headers: [], timeout: 20)
        #expect(!probe404.ok && probe404.message == "HTTP probe failed with statuscode: 404")
        // A listener that never answers: the probe fails at its timeout.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(silent) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, len) } }
        listen(silent, 4)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(silent, $0, &len) } }
        let start = ContinuousClock.now
        let timedOut = await Probe.httpsGet(host: "127.0.0.1", port: Int(UInt16(bigEndian: addr.sin_port)), path: "/", headers: [], timeout: 1)
        #expect(!timedOut.ok && timedOut.message.hasSuffix("context deadline exceeded (Client.Timeout exceeded while awaiting headers)"), "\(timedOut.message)")
        #expect(ContinuousClock.now - start < .seconds(10))
        try await h.create("web", containers: [["name": "main", "image": "switchyard/busybox:latest"]])
        try await h.eventually("the pod runs") { try await h.pod("web")[path: ["status", "phase"]] == "Running" }
        let pods = try await client.request("GET", "/pods")
        #expect(pods.status == 200 && pods.body["kind"] == "PodList" && pods.body["items"]?.array?.map(\.name) == ["web"])
        // /metrics: the pod's start and the runtime's calls (counted in KubeletTests).
        let metrics = String(decoding: try await client.rawRequest("GET", "/metrics").body, as: UTF8.self)
        #expect(metrics.contains("# TYPE kubelet_pod_start_duration_seconds histogram\n") && metrics.contains("kubelet_pod_start_duration_seconds_count 1\n"), "\(metrics)")
        #expect(metrics.contains(#"kubelet_runtime_operations_total{operation_type="run_podsandbox"} 1"#), "\(metrics)")

        // The runtime's log file, where containerd would write it.
        let status = try await h.kubelet.containerInstance(namespace: "default", pod: "web", container: "main")
        try FileManager.default.createDirectory(atPath: (status.logPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "2026-12-05T10:00:00.5Z stdout F hello\n2026-12-05T10:00:01.5Z stderr F world\n".write(toFile: status.logPath, atomically: true, encoding: .utf8)
        let logs = try await client.rawRequest("GET", "/containerLogs/default/web/main", query: ["tailLines": "1", "timestamps": "true"])
        #expect(logs.status == 200 && String(decoding: logs.body, as: UTF8.self) == "2026-12-05T10:00:01.5Z world\n")
        let streamed = try await client.byteStream("/containerLogs/default/web/main")
        var text = ""
        for try await d in streamed { text += String(decoding: d, as: UTF8.self) }
        #expect(text == "hello\nworld\n")

        let noContainer = try await client.rawRequest("GET", "/containerLogs/default/web/nope")
        #expect(noContainer.status == 404 && String(decoding: noContainer.body, as: UTF8.self).contains("container \"nope\" not found in pod \"default/web\""))
        let previous = try await client.rawRequest("GET", "/containerLogs/default/web/main", query: ["previous": "true"])
        #expect(previous.status == 400 && String(decoding: previous.body, as: UTF8.self).contains("previous terminated container \"main\" in pod \"web\" not found"))
        let badTail = try await client.rawRequest("GET", "/containerLogs/default/web/main", query: ["tailLines": "x"])
        #expect(badTail.status == 400)
        await #expect(throws: ClientError.self) { _ = try await client.byteStream("/containerLogs/default/nothere/main") }
        let exec = try await client.rawRequest("POST", "/exec/default/web/main", query: ["command": "true"])
        #expect(exec.status == 400 && String(decoding: exec.body, as: UTF8.self).contains("Upgrade request required"))
        #expect(try await client.rawRequest("GET", "/nothing").status == 404)
        #expect(try await h.kubelet.exec(namespace: "default", pod: "web", container: "main", command: ["true"]).exitCode == 0)
        await #expect(throws: KubeletAPIError.self) { try await h.kubelet.exec(namespace: "default", pod: "web", container: "main", command: []) }
    }

    /// Records what it is asked; allows only `allowed` users, and `nodes/pods` only for `podReaders`.
    final class RecordingAuthorizer: Authorizer, @unchecked Sendable {
        let asked = Mutex<[RequestAttributes]>([])
        let allowed: Set<String>, podReaders: Set<String>
        init(allowed: Set<String>, podReaders: Set<String> = []) { self.allowed = allowed; self.podReaders = podReaders }
        func authorize(_ a: RequestAttributes) async -> Decision {
            asked.withLock { $0.append(a) }
            if allowed.contains(a.user.name) || (a.subresource == "pods" && podReaders.contains(a.user.name)) { return .allow("") }
            return .noOpinion("")
        }
    }

    @Test func clientCertificatesTokensAndAuthorization() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        let ca = try ClusterPKI.loadOrCreate(in: h.dir + "/ca")
        let other = try ClusterPKI.loadOrCreate(in: h.dir + "/other-ca")
        let authorizer = RecordingAuthorizer(allowed: ["kube-apiserver-kubelet-client"], podReaders: ["carol"])
        let access = KubeletAccess(nodeName: "node-a", anonymous: false, x509: true, authorizer: authorizer)
        let serving = try ServingCertificate.files(certFile: "", keyFile: "", certDir: h.dir + "/pki", hostname: "node-a", addresses: [])
        let server = KubeletServer(kubelet: h.kubelet, address: "127.0.0.1", port: 0,
                                   tls: try ServingCertificate.tlsConfiguration(cert: serving.cert, key: serving.key, clientCAFile: ca.caCertFile), access: access)
        let (ports, announce) = AsyncStream.makeStream(of: Int.self)
        let running = Task { try await server.run { announce.yield($0) } }
        defer { running.cancel() }
        var port = 0
        for await p in ports { port = p; break }
        func client(_ pair: (cert: String, key: String)?, token: String? = nil) -> HTTPJSONClient {
            HTTPJSONClient(server: "https://127.0.0.1:\(port)", host: "127.0.0.1", port: port,
                           tls: .init(insecureSkipVerify: true, clientCertificate: pair.map { Array($0.cert.utf8) }, clientKey: pair.map { Array($0.key.utf8) }),
                           peer: "the kubelet", bearerToken: { token })
        }
        func text(_ r: (status: Int, body: Data)) -> String { "\(r.status) \(String(decoding: r.body, as: UTF8.self))" }

        // No credentials, anonymous off: 401, and nothing was authorised.
        #expect(text(try await client(nil).rawRequest("GET", "/pods")) == "401 Unauthorized\n")
        // A token with nothing to review it counts for nothing: 401 as well, anonymous being off.
        #expect(text(try await client(nil, token: "abc.def").rawRequest("GET", "/healthz")) == "401 Unauthorized\n")
        #expect(authorizer.asked.withLock { $0.isEmpty })
        // A certificate of the client CA: its CN is the user. Refused with upstream's words; /pods
        // asked as nodes/pods first, then nodes/proxy.
        let alice = try ca.clientCertificate(name: "alice", commonName: "alice", organizations: ["team"])
        #expect(text(try await client(alice).rawRequest("GET", "/pods")) == "403 Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)\n")
        let asked = authorizer.asked.withLock { $0 }
        #expect(asked.map(\.subresource) == ["pods", "proxy"] && asked.allSatisfy {
            $0.user.name == "alice" && $0.user.groups == ["team", "system:authenticated"] && $0.resource == "nodes" && $0.name == "node-a" && $0.verb == "get"
        }, "\(asked)")
        // nodes/pods alone is enough for /pods, not for logs.
        let carol = try ca.clientCertificate(name: "carol", commonName: "carol")
        #expect(try await client(carol).rawRequest("GET", "/pods").status == 200)
        #expect(text(try await client(carol).rawRequest("GET", "/containerLogs/default/web/main"))
                == "403 Forbidden (user=carol, verb=get, resource=nodes, subresource=proxy)\n")
        // The API server's kubelet client is allowed everything.
        let apiserver = try ca.clientCertificate(name: "apiserver-kubelet-client", commonName: "kube-apiserver-kubelet-client", organizations: ["system:masters"])
        #expect(text(try await client(apiserver).rawRequest("GET", "/healthz")) == "200 ok\n")
        let exec = try await client(apiserver).rawRequest("POST", "/exec/default/web/main", query: ["command": "true"])
        #expect(exec.status == 400, "authorised, then refused for not upgrading: \(text(exec))")
        // A certificate of another CA does not get through the handshake.
        let stranger = try other.clientCertificate(name: "apiserver-kubelet-client", commonName: "kube-apiserver-kubelet-client")
        await #expect(throws: (any Error).self) { _ = try await client(stranger).rawRequest("GET", "/healthz") }
    }

    @Test func anonymousAndTokensWithoutAWebhook() async {
        let open = KubeletAccess(nodeName: "n", anonymous: true)
        #expect(await open.authenticate(certificate: nil, authorization: "Bearer abc") == .success(.anonymous), "no token webhook: the token is not read")
        #expect(await open.authenticate(certificate: nil, authorization: nil) == .success(.anonymous))
        #expect(await open.authenticate(certificate: [1, 2, 3], authorization: nil) == .success(.anonymous), "not a certificate: no one")
        let closed = KubeletAccess(nodeName: "n", anonymous: false)
        #expect(await closed.authenticate(certificate: nil, authorization: "Bearer abc") == .failure(KubeletAccess.Refusal(status: 401, message: "Unauthorized")))
        #expect(await closed.authorize(.anonymous, method: "GET", path: "/pods") == nil, "AlwaysAllow")
    }

    @Test func whatEachPathAsks() {
        let u = UserInfo(name: "u")
        func asked(_ method: String, _ path: String) -> [String] {
            KubeletAccess.attributes(u, method: method, path: path, node: "n").map { "\($0.verb) nodes/\($0.subresource)" }
        }
        #expect(asked("GET", "/stats/summary") == ["get nodes/stats"])
        #expect(asked("GET", "/metrics/cadvisor") == ["get nodes/metrics"])
        #expect(asked("GET", "/metrics") == ["get nodes/metrics"])
        #expect(asked("GET", "/logs/syslog") == ["get nodes/log"])
        #expect(asked("GET", "/logsx") == ["get nodes/proxy"])
        #expect(asked("POST", "/exec/ns/p/c") == ["create nodes/proxy"])
        #expect(asked("GET", "/containerLogs/ns/p/c") == ["get nodes/proxy"])
        #expect(asked("GET", "/healthz") == ["get nodes/healthz", "get nodes/proxy"])
        #expect(asked("GET", "/pods/") == ["get nodes/pods", "get nodes/proxy"])
        #expect(asked("DELETE", "/checkpoint/ns/p/c") == ["delete nodes/checkpoint"])
        #expect(KubeletAccess.attributes(u, method: "GET", path: "/pods", node: "n").allSatisfy { $0.apiVersion == "v1" && $0.name == "n" && $0.path == "/pods" })
    }
}

/// `pods/log` and `pods/exec` refused by the API server before any kubelet, with upstream's words.
@Suite("the API server's pods/log and pods/exec")
struct PodStreamRoutingTests {
    @Test func whatCannotBeRoutedIsRefusedAsUpstreamRefusesIt() async throws {
        let (handler, api) = try await HandlerTransport.make()
        _ = try await api.create("/api/v1/namespaces/default/pods", [
            "apiVersion": "v1", "kind": "Pod", "metadata": ["name": "two"],
            "spec": ["containers": [["name": "a", "image": "x"], ["name": "b", "image": "x"]], "initContainers": [["name": "setup", "image": "x"]]]])
        func get(_ sub: String, _ query: [String: String], pod: String = "two", method: String = "GET") async -> (Int, String) {
            let r = await handler.handle(APIRequest(method: method, path: "/api/v1/namespaces/default/pods/\(pod)/\(sub)", query: query))
            return (r.code, r.json?["message"]?.string ?? "")
        }
        #expect(await get("log", [:]) == (400, "a container name must be specified for pod two, choose one of: [a b] or one of the init containers: [setup]"))
        #expect(await get("log", ["container": "c"]) == (400, "container c is not valid for pod two"))
        #expect(await get("log", ["container": "setup"]) == (400, "pod two does not have a host assigned"))
        #expect(await get("log", ["container": "a", "tailLines": "-2"]).0 == 400)
        #expect(await get("log", [:], pod: "none") == (404, "pods \"none\" not found"))
        #expect(await get("exec", ["container": "a", "command": "true"], method: "POST") == (400, "pod two does not have a host assigned"))
        // Discovery names both, as upstream's.
        let resources = await handler.handle(APIRequest(method: "GET", path: "/api/v1")).json?["resources"]?.array ?? []
        #expect(resources.first { $0["name"] == "pods/log" }?["verbs"] == ["get"])
        #expect(resources.first { $0["name"] == "pods/exec" }?["kind"] == "PodExecOptions")
    }
}
