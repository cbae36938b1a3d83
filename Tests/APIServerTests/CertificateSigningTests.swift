import APIAccess
@testable import APIServer
import ClusterPKI
import Foundation
import KubeAPI
import Testing

/// CertificateSigningRequests in the handler (who asked, the spec kept, what `/approval` and
/// `/status` may change, in upstream's words) and the PKI beneath them: requests made and read,
/// certificates signed for them, the bootstrap token's detached JWS.
@Suite("certificate signing requests")
struct CertificateSigningTests {
    static let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

    static func csr(_ name: String, signer: String = "example.com/signer", username: String? = nil) throws -> JSONValue {
        let (pem, _) = try CertificateRequest.make(commonName: "carol", organizations: ["team"])
        var spec: [String: JSONValue] = ["request": .string(Data(pem.utf8).base64EncodedString()), "signerName": .string(signer), "usages": ["client auth"]]
        if let username { spec["username"] = .string(username) }
        return ["apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": ["name": .string(name)], "spec": .object(spec)]
    }

    static func put(_ h: APIHandler, _ path: String, _ o: JSONValue) async -> APIResponse {
        await h.handle(APIRequest(method: "PUT", path: path, body: o.serialized()))
    }

    @Test func theServerSaysWhoAskedAndKeepsTheSpec() async throws {
        let h = try await makeHandler()
        let carol = UserInfo(name: "carol", uid: "u-1", groups: ["team", "system:authenticated"])
        var req = APIRequest(method: "POST", path: Self.path, body: try Self.csr("one", username: "admin").serialized())
        req.user = carol
        let created = await h.handle(req)
        #expect(created.code == 201, "\(created.json?.text() ?? "")")
        var o = try #require(created.json)
        #expect(o[path: ["spec", "username"]] == "carol" && o[path: ["spec", "uid"]] == "u-1" && o[path: ["spec", "groups"]] == ["team", "system:authenticated"])
        // An update of the object itself changes neither the spec nor the status.
        o[path: ["spec", "signerName"]] = "example.com/other"
        o[path: ["status", "conditions"]] = [["type": "Approved", "status": "True"]]
        o[path: ["metadata", "labels"]] = ["seen": "yes"]
        let updated = await Self.put(h, Self.path + "/one", o)
        #expect(updated.code == 200)
        #expect(updated.json?[path: ["spec", "signerName"]] == "example.com/signer" && updated.json?["status"]?[path: ["conditions"]] == nil)
        #expect(updated.json?[path: ["metadata", "labels", "seen"]] == "yes")
        // Approved through /approval, with its times.
        var approve = try #require(updated.json)
        approve[path: ["status", "conditions"]] = [["type": "Approved", "status": "True", "reason": "Test"]]
        let approved = await Self.put(h, Self.path + "/one/approval", approve)
        #expect(approved.code == 200, "\(approved.json?.text() ?? "")")
        let condition = approved.json?[path: ["status", "conditions"]]?.array?.first
        #expect(condition?["type"] == "Approved" && condition?["lastUpdateTime"]?.string != nil && condition?["lastTransitionTime"]?.string != nil)
        // Denied beside Approved: refused.
        var both = try #require(approved.json)
        both[path: ["status", "conditions"]] = .array((both[path: ["status", "conditions"]]?.array ?? []) + [["type": "Denied", "status": "True"]])
        let mutual = await Self.put(h, Self.path + "/one/approval", both)
        #expect(mutual.code == 422 && (mutual.json?["message"]?.string ?? "").contains(#"status.conditions[1].type: Invalid value: "Denied": Approved and Denied conditions are mutually exclusive"#),
                "\(mutual.json?.text() ?? "")")
        // Through /approval the certificate does not change; through /status the Approved condition cannot go.
        var sneaky = try #require(approved.json)
        sneaky[path: ["status", "certificate"]] = "Zm9v"
        let ignored = await Self.put(h, Self.path + "/one/approval", sneaky)
        #expect(ignored.code == 200 && ignored.json?[path: ["status", "certificate"]] == nil)
        let ca = try ClusterPKI.loadOrCreate(in: FileManager.default.temporaryDirectory.appendingPathComponent("sy-csr-\(UUID().uuidString.prefix(8))").path)
        defer { try? FileManager.default.removeItem(atPath: ca.dir) }
        let request = String(decoding: Data(base64Encoded: o[path: ["spec", "request"]]!.string!)!, as: UTF8.self)
        let cert = try ca.sign(request: request, usages: ["client auth"], duration: 3600)
        var issue = try #require(ignored.json)
        issue[path: ["status", "certificate"]] = .string(Data(cert.utf8).base64EncodedString())
        issue[path: ["status", "conditions"]] = []
        let issued = await Self.put(h, Self.path + "/one/status", issue)
        #expect(issued.code == 200, "\(issued.json?.text() ?? "")")
        #expect(issued.json?[path: ["status", "conditions"]]?.array?.first?["type"] == "Approved", "a status write keeps the approval")
        #expect(issued.json?[path: ["status", "certificate"]]?.string == Data(cert.utf8).base64EncodedString())
        // Not a PEM certificate, or a second one: refused.
        var other = try #require(issued.json)
        other[path: ["status", "certificate"]] = .string(Data(try ca.sign(request: request, usages: ["client auth"], duration: 60).utf8).base64EncodedString())
        let modified = await Self.put(h, Self.path + "/one/status", other)
        #expect(modified.code == 422 && (modified.json?["message"]?.string ?? "").contains("status.certificate: Forbidden: updates may not modify existing certificate content"),
                "\(modified.json?.text() ?? "")")
        var removed = try #require(issued.json)
        removed[path: ["status", "conditions"]] = []
        let gone = await Self.put(h, Self.path + "/one/approval", removed)
        #expect(gone.code == 422 && (gone.json?["message"]?.string ?? "").contains(#"status.conditions: Forbidden: updates may not remove a condition of type "Approved""#),
                "\(gone.json?.text() ?? "")")
        // The legacy signer is not for this version.
        let legacy = await h.post(Self.path, try Self.csr("legacy", signer: "kubernetes.io/legacy-unknown"))
        #expect(legacy.code == 422 && (legacy.json?["message"]?.string ?? "").contains("the legacy signerName is not allowed via this API version"))
        // The table kubectl prints.
        let table = await h.get(Self.path, accept: "application/json;as=Table;v=v1;g=meta.k8s.io")
        let columns = table.json?["columnDefinitions"]?.array?.compactMap { $0["name"]?.string }
        #expect(columns == ["Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"])
        #expect(table.json?["rows"]?.array?.first?["cells"]?.array?[5] == "Approved,Issued" && table.json?["rows"]?.array?.first?["cells"]?.array?[4] == "<none>")
    }

    @Test func requestsAreReadAndSignedAsAsked() throws {
        let (pem, key) = try CertificateRequest.make(commonName: "system:node:n1", organizations: ["system:nodes"], dnsNames: ["n1.lab"], ipAddresses: ["10.0.0.7", "fd00::7"])
        let r = try CertificateRequest(pem: pem)
        #expect(r.commonName == "system:node:n1" && r.organizations == ["system:nodes"] && r.dnsNames == ["n1.lab"] && r.ipAddresses == ["10.0.0.7", "fd00::7"])
        #expect(key.contains("PRIVATE KEY"))
        #expect(throws: CertificateRequest.Failure.self) { try CertificateRequest(pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n") }
        // A request whose signature does not verify (its signature's last byte changed).
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-sign-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try ClusterPKI.loadOrCreate(in: dir)
        let now = Date()
        let cert = try ca.sign(request: pem, usages: ["digital signature", "client auth"], duration: 600, now: now)
        let v = try #require(ClusterPKI.validity(cert + key))
        #expect(abs(v.notBefore.timeIntervalSince(now) + 300) < 2 && abs(v.notAfter.timeIntervalSince(now) - 600) < 2)
        #expect(ClusterPKI.isCertificateBundle(cert) && !ClusterPKI.isCertificateBundle(pem))
        // The signer from files signs the same.
        let again = try ClusterPKI.signer(certFile: ca.caCertFile, keyFile: ca.caKeyFile)
        #expect(again.caPEM == ca.caPEM)
        #expect(throws: ClusterPKI.Failure.self) { try ClusterPKI.signer(certFile: ca.caCertFile, keyFile: ca.caCertFile) }
    }

    @Test func bootstrapTokenSignaturesVerifyOnlyWithTheirToken() {
        let content = "apiVersion: v1\nkind: Config\n"
        let jws = BootstrapTokenJWS.sign(content, tokenID: "abcdef", tokenSecret: "0123456789abcdef")
        #expect(jws.contains(".."), "detached: no payload")
        #expect(BootstrapTokenJWS.verify(jws, content: content, tokenID: "abcdef", tokenSecret: "0123456789abcdef"))
        #expect(!BootstrapTokenJWS.verify(jws, content: content + " ", tokenID: "abcdef", tokenSecret: "0123456789abcdef"))
        #expect(!BootstrapTokenJWS.verify(jws, content: content, tokenID: "abcdef", tokenSecret: "0123456789abcdeg"))
        #expect(!BootstrapTokenJWS.verify(jws, content: content, tokenID: "zzzzzz", tokenSecret: "0123456789abcdef"))
        // alg none, and a header that is not JSON: refused.
        let none = "eyJhbGciOiJub25lIiwia2lkIjoiYWJjZGVmIn0.." + jws.split(separator: ".").last!
        #expect(!BootstrapTokenJWS.verify(none, content: content, tokenID: "abcdef", tokenSecret: "0123456789abcdef"))
        #expect(!BootstrapTokenJWS.verify("garbage", content: content, tokenID: "abcdef", tokenSecret: "0123456789abcdef"))
    }
}
