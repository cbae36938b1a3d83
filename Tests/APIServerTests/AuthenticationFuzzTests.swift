import APIAccess
@testable import APIServer
import ClusterPKI
import Foundation
import KubeAPI
import KubeStore
import Testing

/// Hostile input on the authentication path: a few hundred forged, tampered, malformed, huge and
/// deeply nested credentials and broken client certificates, each answered 401 (never 500, never a
/// crash); the valid ones they were made from still authenticate. `switchyard-bench authfuzz` runs
/// thousands.
@Suite struct AuthenticationFuzzTests {
    @Test func hostileCredentialsAreEach401() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-fuzz-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pki = try ClusterPKI.loadOrCreate(in: dir)
        let pem = try pki.clientCertificate(name: "user", commonName: "carol", organizations: ["devs"]).cert
        let der = Array(try #require(Data(base64Encoded: pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined())))
        let tokens = ServiceAccountTokens.ephemeral()
        let handler = APIHandler(store: try SQLiteStore(path: ":memory:"), serviceAccountTokens: tokens)
        try await handler.bootstrap()
        let file = try TokenFile(contents: "s3cret,admin,1\n")
        let valid = try tokens.issue(namespace: "default", serviceAccount: "default", uid: "u", audiences: tokens.audiences, seconds: 3600).token
        // What the cases are made from works: the certificate names its user, the token file's token passes.
        #expect(UserInfo(clientCertificate: der)?.name == "carol")
        let good = await AuthenticationFuzz.run([AuthenticationFuzz.Case(what: "valid", authorization: "Bearer s3cret")], handler: handler, tokens: file)
        #expect(good.count == 1 && good[0].1 == 200)
        let cases = AuthenticationFuzz.cases(seed: 20261205, count: 360, token: valid, certificate: der)
        #expect(Set(cases.map { $0.what.split(separator: " ").first ?? "" }).count >= 10, "every kind of case is made")
        let wrong = await AuthenticationFuzz.run(cases, handler: handler, tokens: file)
        #expect(wrong.isEmpty, "\(wrong.prefix(5).map { "\($0.1) for \($0.0.what): \($0.0.authorization?.prefix(120) ?? "certificate")" })")
        // A certificate that is not DER names nobody.
        for c in cases where c.certificate != nil { #expect(UserInfo(clientCertificate: c.certificate!) == nil, "\(c.what)") }
    }
}
