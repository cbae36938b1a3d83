import Foundation
@testable import APIServer
import HTTPTypes
import HummingbirdCore
@testable import KubeClient
import NIOCore
import Testing

@Suite struct AuthConfigTests {
    @Test func tokenFileAsKubeAPIServerReadsIt() throws {
        // CRLF line ends, quoted groups, an empty token (skipped), a repeated token (the last counts).
        let f = try TokenFile(contents: "abc,alice,1,\"dev,ops\"\r\n,nobody,0\r\nxyz,bob,2\r\n\r\nxyz,carol,3\r\n")
        #expect(f.entries.map(\.token) == ["abc", "xyz"])
        #expect(f.user(authorization: "Bearer abc") == TokenFile.User(name: "alice", uid: "1", groups: ["dev", "ops"]))
        #expect(f.user(authorization: "bearer xyz")?.name == "carol")
        #expect(f.user(authorization: "Bearer nope") == nil)
        #expect(f.user(authorization: "Bearer ab") == nil && f.user(authorization: "Bearer abcd") == nil, "a prefix or a longer token is not the token")
        #expect(f.user(authorization: "Basic abc") == nil)
        #expect(f.user(authorization: nil) == nil)
        for bad in ["", "\n", "abc,alice\n", "# a comment is a record, as in Go's CSV\nabc,alice,1\n", ",nobody,0\n"] {
            #expect(throws: TokenFile.Failure.self, "\(bad.debugDescription)") { try TokenFile(contents: bad) }
        }
    }

    static func request(_ path: String, authorization: String? = nil) -> Request {
        var fields = HTTPFields()
        if let authorization { fields[.authorization] = authorization }
        return Request(head: HTTPRequest(method: .get, scheme: "http", authority: "x", path: path, headerFields: fields),
                       body: RequestBody(buffer: ByteBuffer()))
    }

    @Test func tokensAreRequiredExceptOnPublicPaths() async throws {
        let handler = try await makeHandler()
        let tokens = try TokenFile(contents: "s3cret,admin,1\n")
        let denied = await APIServer.respond(handler, Self.request("/api/v1/namespaces"), tokens: tokens)
        #expect(denied.status.code == 401)
        let wrong = await APIServer.respond(handler, Self.request("/api/v1/namespaces", authorization: "Bearer nope"), tokens: tokens)
        #expect(wrong.status.code == 401)
        #expect(await APIServer.respond(handler, Self.request("/api/v1/namespaces", authorization: "Bearer s3cret"), tokens: tokens).status.code == 200)
        #expect(await APIServer.respond(handler, Self.request("/version"), tokens: tokens).status.code == 200)
        #expect(await APIServer.respond(handler, Self.request("/api/v1/namespaces"), tokens: nil).status.code == 200, "no token file: open")
    }

    @Test func kubeconfigIsWrittenForItsOwnerOnly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-kc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("kubeconfig").path
        // A stale temporary file, world-readable, and a symlink where the file goes next time.
        try "old".write(toFile: path + ".tmp", atomically: false, encoding: .utf8)
        chmod(path + ".tmp", 0o644)
        let text = APIServer.kubeconfig(server: "https://127.0.0.1:6443", certificateAuthority: Array("PEM".utf8), token: "a: b")
        try APIServer.writeKubeconfig(text, to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == text)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        let k = try Kubeconfig.parse(text)
        #expect(k.token == "a: b", "the token is quoted for YAML")
        #expect(k.tls?.certificateAuthority == Array("PEM".utf8))
        try FileManager.default.createSymbolicLink(atPath: path + ".tmp", withDestinationPath: dir.appendingPathComponent("elsewhere").path)
        try APIServer.writeKubeconfig(text, to: path)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("elsewhere").path), "the symlink is not followed")
    }

    @Test func theKubeconfigTrustsTheCertificatesAndNeverTheKey() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-pem-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let both = dir.appendingPathComponent("both.pem").path
        let r = Process()
        r.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        r.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", both,
                       "-out", dir.appendingPathComponent("cert.pem").path, "-days", "1", "-subj", "/CN=t"]
        r.standardError = FileHandle.nullDevice
        try r.run()
        r.waitUntilExit()
        try #require(r.terminationStatus == 0)
        // The key and the certificate in one file, as some users keep them.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: both))
        handle.seekToEndOfFile()
        handle.write(try Data(contentsOf: dir.appendingPathComponent("cert.pem")))
        try handle.close()
        let pem = String(decoding: try APIServer.certificatesPEM(file: both), as: UTF8.self)
        #expect(pem.hasPrefix("-----BEGIN CERTIFICATE-----\n") && pem.components(separatedBy: "BEGIN CERTIFICATE").count == 2)
        #expect(!pem.contains("PRIVATE KEY"))
        _ = try APIServer.tlsConfiguration(certificateFile: both, keyFile: both)
    }

    @Test func kubeconfigTLSAndCredentials() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-kubeconfig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "-----BEGIN CERTIFICATE-----\n".write(to: dir.appendingPathComponent("ca.crt"), atomically: true, encoding: .utf8)
        try " t0ken \n".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        let text = """
            apiVersion: v1
            kind: Config
            current-context: c
            contexts: [{name: c, context: {cluster: k, user: u, namespace: apps}}]
            clusters: [{name: k, cluster: {server: "https://kube.example:6443", certificate-authority: ca.crt, tls-server-name: api.internal}}]
            users: [{name: u, user: {tokenFile: token, client-certificate-data: \(Data("cert".utf8).base64EncodedString()), client-key-data: \(Data("key".utf8).base64EncodedString())}}]
            """
        try text.write(to: dir.appendingPathComponent("config"), atomically: true, encoding: .utf8)
        let k = try Kubeconfig.load(path: dir.appendingPathComponent("config").path)
        #expect(k.host == "kube.example" && k.port == 6443 && k.namespace == "apps")
        #expect(k.token == "t0ken", "tokenFile, relative to the kubeconfig, trimmed")
        try "rotated\n".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        #expect(k.currentToken == "rotated", "the token file is read again, as client-go does")
        #expect(k.tls?.certificateAuthority == Array("-----BEGIN CERTIFICATE-----\n".utf8))
        #expect(k.tls?.serverName == "api.internal" && k.tls?.insecureSkipVerify == false)
        #expect(k.tls?.clientCertificate == Array("cert".utf8) && k.tls?.clientKey == Array("key".utf8))
        #expect(try Kubeconfig.parse(text.replacingOccurrences(of: "https://kube.example:6443", with: "https://kube.example"),
                                     directory: dir.path).port == 443)

        // A plugin it cannot run, a missing file, a scheme it does not speak: clear errors.
        let exec = text.replacingOccurrences(of: "{tokenFile: token, client-certificate-data", with: "{exec: {command: gke-gcloud-auth-plugin}, x-data")
        #expect(throws: Kubeconfig.LoadError.self) { try Kubeconfig.parse(exec, directory: dir.path) }
        #expect(throws: Kubeconfig.LoadError.self) { try Kubeconfig.parse(text, directory: "/nonexistent") }
        #expect(throws: Kubeconfig.LoadError.self) { try Kubeconfig.parse(text.replacingOccurrences(of: "https://", with: "ftp://"), directory: dir.path) }
        // A bad certificate: the client says so on its first request, not at construction.
        let client = KubeClient(config: try Kubeconfig.parse(text, directory: dir.path))
        #expect(throws: (any Error).self) { _ = try client.tls?.get() }
    }
}
