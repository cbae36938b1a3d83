import Foundation
@testable import APIServer
@testable import KubeClient
import Testing

@Suite struct AuthConfigTests {
    @Test func tokenFileAsKubeAPIServerReadsIt() throws {
        let f = try TokenFile(contents: "# comment\nabc,alice,1,\"dev,ops\"\n\nxyz,bob,2\n")
        #expect(f.entries.map(\.token) == ["abc", "xyz"])
        #expect(f.user(authorization: "Bearer abc") == TokenFile.User(name: "alice", uid: "1", groups: ["dev", "ops"]))
        #expect(f.user(authorization: "bearer xyz")?.name == "bob")
        #expect(f.user(authorization: "Bearer nope") == nil)
        #expect(f.user(authorization: "Bearer ab") == nil && f.user(authorization: "Bearer abcd") == nil, "a prefix or a longer token is not the token")
        #expect(f.user(authorization: "Basic abc") == nil)
        #expect(f.user(authorization: nil) == nil)
        for bad in ["", "# only a comment\n", "abc,alice\n", ",alice,1\n"] {
            #expect(throws: TokenFile.Failure.self, "\(bad.debugDescription)") { try TokenFile(contents: bad) }
        }
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
