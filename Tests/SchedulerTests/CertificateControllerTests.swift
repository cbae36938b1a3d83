import ClusterPKI
@testable import Controllers
import Foundation
import KubeAPI
import Testing

/// The certificate controllers' decisions, apart from the API: what a kubelet client request must
/// look like (upstream's checks, in their order and words), how long a certificate is signed
/// for, when the cleaner removes a request, what a bootstrap token Secret holds.
@Suite("certificate controllers")
struct CertificateControllerTests {
    static func request(_ cn: String, _ orgs: [String], dns: [String] = [], ips: [String] = []) throws -> CertificateRequest {
        try CertificateRequest(pem: CertificateRequest.make(commonName: cn, organizations: orgs, dnsNames: dns, ipAddresses: ips).request)
    }

    @Test func kubeletClientRequestsAreCheckedAsUpstream() throws {
        let usages: Set<String> = ["digital signature", "client auth"]
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("system:node:a", ["system:nodes"]), usages: usages) == nil)
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("system:node:a", ["system:nodes"]), usages: usages.union(["key encipherment"])) == nil)
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("system:node:a", ["system:masters"]), usages: usages) == "subject organization is not system:nodes")
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("system:node:a", ["system:nodes"], dns: ["a"]), usages: usages) == "DNS subjectAltNames are not allowed")
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("system:node:a", ["system:nodes"], ips: ["10.0.0.1"]), usages: usages) == "IP subjectAltNames are not allowed")
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("alice", ["system:nodes"]), usages: usages) == "subject common name does not begin with system:node:")
        #expect(CertificateRequests.kubeletClientProblem(try Self.request("system:node:a", ["system:nodes"]), usages: ["client auth"])
                == "usages did not match [client auth digital signature key encipherment]")
        // The client signer: client usages only, client auth among them.
        let alice = try Self.request("alice", ["devs"])
        #expect(CertificateRequests.signerProblem("kubernetes.io/kube-apiserver-client", alice, usages: ["client auth"]) == nil)
        #expect(CertificateRequests.signerProblem("kubernetes.io/kube-apiserver-client", alice, usages: ["client auth", "server auth"]) == "invalid usage for client certificate: server auth")
        #expect(CertificateRequests.signerProblem("kubernetes.io/kube-apiserver-client", alice, usages: ["digital signature"]) == "missing required usage for client certificate: client auth")
        #expect(CertificateRequests.signerProblem("kubernetes.io/kubelet-serving", try Self.request("system:node:a", ["system:nodes"]), usages: ["digital signature", "server auth"])
                == "DNS or IP subjectAltName is required")
    }

    @Test func durationsAndCleaning() throws {
        let year: TimeInterval = 365 * 86400
        #expect(CertificateRequests.duration(["spec": [:]], max: year) == year)
        #expect(CertificateRequests.duration(["spec": ["expirationSeconds": 60]], max: year) == 600)
        #expect(CertificateRequests.duration(["spec": ["expirationSeconds": 7200]], max: year) == 7200)
        #expect(CertificateRequests.duration(["spec": ["expirationSeconds": 7200]], max: 40) == 40)
        let now = Date()
        func at(_ ago: TimeInterval) -> JSONValue { .string(RFC3339.format(now.timeIntervalSince1970 - ago)) }
        let pending: JSONValue = ["metadata": ["creationTimestamp": at(25 * 3600)]]
        #expect(CSRCleanerController.expired(pending, now: now))
        #expect(!CSRCleanerController.expired(["metadata": ["creationTimestamp": at(3600)]], now: now))
        let denied: JSONValue = ["metadata": ["creationTimestamp": at(7200)], "status": ["conditions": [["type": "Denied", "status": "True", "lastUpdateTime": at(3700)]]]]
        #expect(CSRCleanerController.expired(denied, now: now))
        let approved: JSONValue = ["metadata": ["creationTimestamp": at(7200)], "status": ["conditions": [["type": "Approved", "status": "True", "lastUpdateTime": at(3700)]]]]
        #expect(!CSRCleanerController.expired(approved, now: now), "approved but not issued: kept")
    }

    @Test func bootstrapTokenSecrets() {
        func b64(_ s: String) -> JSONValue { .string(Data(s.utf8).base64EncodedString()) }
        let secret: JSONValue = ["type": "bootstrap.kubernetes.io/token", "metadata": ["name": "bootstrap-token-abcdef", "namespace": "kube-system"],
                                 "data": ["token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"), "usage-bootstrap-signing": b64("true"),
                                          "expiration": b64("2020-01-01T00:00:00Z")]]
        let t = BootstrapToken(secret: secret)
        #expect(t?.id == "abcdef" && t?.secret == "0123456789abcdef" && t?.signing == true && t?.expired() == true)
        var misnamed = secret
        misnamed[path: ["metadata", "name"]] = "bootstrap-token-zzzzzz"
        #expect(BootstrapToken(secret: misnamed) == nil, "the name must carry the ID")
        var other = secret
        other["type"] = "Opaque"
        #expect(BootstrapToken(secret: other) == nil)
    }
}
