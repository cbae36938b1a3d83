import Foundation
import HostOS
import KubeAPI
import NetnsKit
import Testing

/// CertificateSigningRequests as kubectl users meet them, on a server with its own cluster CA and
/// `--authorization-mode Node,RBAC`: a user's key and request made with openssl, `kubectl create`,
/// `get csr`, `certificate approve`, the certificate the signer issues used by kubectl; the
/// admission plugins' refusals and the validation's, in upstream's words.
@Suite("certificate signing requests with kubectl", .enabled(if: isRoot && kubectl("1.33") != nil, "needs root and kubectl 1.33"))
struct CertificateKubectlTests {
    static func request(_ dir: URL, _ name: String, subject: String) throws -> (csr: String, key: String) {
        let key = dir.appendingPathComponent("\(name).key").path, csr = dir.appendingPathComponent("\(name).csr").path
        let r = try Sh.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                            "-keyout", key, "-subj", subject, "-out", csr])
        #expect(r.status == 0, "openssl: \(r.err)")
        return (try String(contentsOfFile: csr, encoding: .utf8), key)
    }

    static func manifest(_ name: String, _ pem: String, signer: String = "kubernetes.io/kube-apiserver-client", usages: String = "[client auth]") -> String {
        """
        apiVersion: certificates.k8s.io/v1
        kind: CertificateSigningRequest
        metadata:
          name: \(name)
        spec:
          request: \(Data(pem.utf8).base64EncodedString())
          signerName: \(signer)
          expirationSeconds: 3600
          usages: \(usages)
        """
    }

    @Test func aUserAsksForACertificateAndUsesIt() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab, secure: true, arguments: ["--authorization-mode", "Node,RBAC"])
        let dir = server.dir
        func run(_ args: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
            try server.kubectl(k, args, input: input)
        }
        let alice = try Self.request(dir, "alice", subject: "/CN=alice/O=devs")
        let created = try run(["create", "-f", "-"], input: Self.manifest("alice", alice.csr))
        #expect(created.status == 0, "\(created)")
        let pending = try run(["get", "csr", "alice"])
        let header = pending.out.split(separator: "\n").first.map { $0.split(separator: " ").map(String.init) } ?? []
        #expect(header == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"], "\(pending.out)")
        #expect(pending.out.contains("kubernetes.io/kube-apiserver-client") && pending.out.contains("kubernetes-admin")
                && pending.out.contains("60m") && pending.out.contains("Pending"), "\(pending.out)")
        // The requester is the server's to say: what the client sent for it is replaced.
        let who = try run(["get", "csr", "alice", "-o", "jsonpath={.spec.username} {.spec.groups}"])
        #expect(who.out == #"kubernetes-admin ["system:masters","system:authenticated"]"#, "\(who)")

        let approved = try run(["certificate", "approve", "alice"])
        #expect(approved.status == 0, "\(approved)")
        var issued = ""
        for _ in 0..<100 where issued.isEmpty {
            issued = try run(["get", "csr", "alice", "-o", "jsonpath={.status.certificate}"]).out
            if issued.isEmpty { usleep(100_000) }
        }
        let listed = try run(["get", "csr", "alice"]).out
        #expect(listed.contains("Approved,Issued"), "\(listed)")
        let reason = try run(["get", "csr", "alice", "-o", "jsonpath={.status.conditions[0].reason}"]).out
        #expect(reason == "KubectlApprove")
        let certFile = dir.appendingPathComponent("alice.crt").path
        try Data(base64Encoded: issued)!.write(to: URL(fileURLWithPath: certFile))
        let text = try Sh.run(["openssl", "x509", "-in", certFile, "-noout", "-subject", "-ext", "extendedKeyUsage,keyUsage"]).out
        #expect(text.contains("CN = alice, O = devs") && text.contains("TLS Web Client Authentication"), "\(text)")
        // Issued for the hour asked: valid in 3500 s, no longer in 3700 s.
        #expect(try Sh.run(["openssl", "x509", "-in", certFile, "-noout", "-checkend", "3500"]).status == 0)
        #expect(try Sh.run(["openssl", "x509", "-in", certFile, "-noout", "-checkend", "3700"]).status != 0)

        // alice, with her new certificate: who she is, and that she may not approve requests.
        let ca = dir.appendingPathComponent("ca.crt").path
        try FileManager.default.copyItem(atPath: dir.appendingPathComponent("pki/ca.crt").path, toPath: ca)
        let url = "https://127.0.0.1:\(server.port)"
        func asAlice(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try Sh.run(["ip", "netns", "exec", lab.node, k, "--kubeconfig", "/dev/null", "--server", url, "--certificate-authority", ca,
                        "--client-certificate", certFile, "--client-key", alice.key] + args)
        }
        let whoami = try asAlice(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
        #expect(whoami.out == #"alice ["devs","system:authenticated"]"#, "\(whoami)")
        let bob = try Self.request(dir, "bob", subject: "/CN=bob")
        #expect(try run(["create", "-f", "-"], input: Self.manifest("bob", bob.csr)).status == 0)
        // May update the approval (RBAC) but not approve for the signer (CertificateApproval).
        #expect(try run(["create", "clusterrole", "csr-approval", "--verb", "get,list,update", "--resource", "certificatesigningrequests.certificates.k8s.io,certificatesigningrequests.certificates.k8s.io/approval"]).status == 0)
        #expect(try run(["create", "clusterrolebinding", "alice-csr", "--clusterrole", "csr-approval", "--user", "alice"]).status == 0)
        let refused = try asAlice(["certificate", "approve", "bob"])
        #expect(refused.status != 0 && refused.err.contains(#"certificatesigningrequests.certificates.k8s.io "bob" is forbidden: user not permitted to approve requests with signerName "kubernetes.io/kube-apiserver-client""#),
                "\(refused)")
        // With upstream's approver role bound, she may.
        #expect(try run(["create", "clusterrolebinding", "alice-approver", "--clusterrole", "system:certificates.k8s.io:kube-apiserver-client-approver", "--user", "alice"]).status == 0)
        let allowed = try asAlice(["certificate", "approve", "bob"])
        #expect(allowed.status == 0, "\(allowed)")

        // CertificateSubjectRestriction: no system:masters through the client signer.
        let masters = try Self.request(dir, "mallory", subject: "/CN=mallory/O=system:masters")
        let restricted = try run(["create", "-f", "-"], input: Self.manifest("mallory", masters.csr))
        #expect(restricted.status != 0 && restricted.err.contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"), "\(restricted)")
        // Validation: not a request; an unknown usage; a bad signer name.
        let garbage = try run(["create", "-f", "-"], input: Self.manifest("garbage", "not a request"))
        #expect(garbage.status != 0 && garbage.err.contains("PEM block type must be CERTIFICATE REQUEST"), "\(garbage)")
        let usage = try run(["create", "-f", "-"], input: Self.manifest("usage", bob.csr, usages: "[client auth, flying]"))
        #expect(usage.status != 0 && usage.err.contains(#"spec.usages[1]: Unsupported value: "flying""#), "\(usage)")
        let signer = try run(["create", "-f", "-"], input: Self.manifest("signer", bob.csr, signer: "nodomain"))
        #expect(signer.status != 0 && signer.err.contains("must be a fully qualified domain and path of the form 'example.com/signer-name'"), "\(signer)")
        // A kubelet client request that does not look like one fails at the signer.
        let odd = try run(["create", "-f", "-"], input: Self.manifest("odd", bob.csr, signer: "kubernetes.io/kube-apiserver-client-kubelet", usages: "[digital signature, client auth]"))
        #expect(odd.status == 0)
        #expect(try run(["certificate", "approve", "odd"]).status == 0)
        var failed = ""
        for _ in 0..<100 where !failed.contains("Failed") {
            failed = try run(["get", "csr", "odd", "-o", "jsonpath={.status.conditions[*].type} {.status.conditions[1].reason}: {.status.conditions[1].message}"]).out
            if !failed.contains("Failed") { usleep(100_000) }
        }
        #expect(failed == "Approved Failed SignerValidationFailure: subject organization is not system:nodes", "\(failed)")
    }
}
