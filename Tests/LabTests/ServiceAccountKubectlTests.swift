import Foundation
import HostOS
import KubeAPI
import NetnsKit
import Testing

/// The ServiceAccount admission plugin as kubectl users meet it on `switchyard server` (its
/// controller manager making each namespace's `default` account): a pod runs as `default` with
/// the account's credentials projected at /var/run/secrets/kubernetes.io/serviceaccount, an
/// account that does not exist is refused in upstream's words, `automountServiceAccountToken:
/// false` leaves the pod alone.
@Suite("ServiceAccount admission with kubectl", .enabled(if: isRoot && kubectl("1.33") != nil, "needs root and kubectl 1.33"))
struct ServiceAccountKubectlTests {
    static func pod(_ name: String, account: String? = nil, automount: Bool? = nil) -> String {
        var spec = "  containers:\n  - name: c\n    image: busybox\n"
        if let account { spec = "  serviceAccountName: \(account)\n" + spec }
        if let automount { spec = "  automountServiceAccountToken: \(automount)\n" + spec }
        return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \(name)\n  namespace: team\nspec:\n" + spec
    }

    @Test func podsGetTheirAccountsCredentials() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        // A namespace and a pod in it at once: the account is waited for, not missed.
        #expect(try server.kubectl(k, ["create", "namespace", "team"]).status == 0)
        let created = try server.kubectl(k, ["create", "-f", "-"], input: Self.pod("first"))
        #expect(created.status == 0, "\(created)")
        let spec = try server.kubectl(k, ["-n", "team", "get", "pod", "first", "-o", "json"])
        let pod = try JSONValue.parse(Data(spec.out.utf8))
        #expect(pod[path: ["spec", "serviceAccountName"]] == "default")
        let volume = try #require(pod[path: ["spec", "volumes"]]?.array?.first)
        let volumeName = volume["name"]?.string ?? ""
        #expect(volumeName.hasPrefix("kube-api-access-"), "\(volume)")
        let sources = volume[path: ["projected", "sources"]]?.array ?? []
        #expect(sources.count == 3)
        #expect(sources.first?[path: ["serviceAccountToken", "expirationSeconds"]] == 3607 && sources.first?[path: ["serviceAccountToken", "path"]] == "token")
        #expect(sources.dropFirst().first?[path: ["configMap", "name"]] == "kube-root-ca.crt")
        let mount = pod[path: ["spec", "containers"]]?.array?.first?["volumeMounts"]?.array?.first
        #expect(mount?["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" && mount?["readOnly"] == true && mount?["name"] == volume["name"])
        // An account that is not there.
        let refused = try server.kubectl(k, ["create", "-f", "-"], input: Self.pod("second", account: "builder"))
        #expect(refused.status != 0 && refused.err.contains(#"pods "second" is forbidden: error looking up service account team/builder: serviceaccount "builder" not found"#),
                "\(refused)")
        #expect(try server.kubectl(k, ["-n", "team", "create", "serviceaccount", "builder"]).status == 0)
        #expect(try server.kubectl(k, ["create", "-f", "-"], input: Self.pod("second", account: "builder")).status == 0)
        // No token when the pod says so.
        #expect(try server.kubectl(k, ["create", "-f", "-"], input: Self.pod("third", automount: false)).status == 0)
        let third = try server.kubectl(k, ["-n", "team", "get", "pod", "third", "-o", "jsonpath={.spec.volumes}"])
        #expect(third.out.isEmpty, "\(third)")

        // A legacy, Secret-based token: filled in as the Secret is made, good while it holds it.
        let secret = """
            apiVersion: v1
            kind: Secret
            type: kubernetes.io/service-account-token
            metadata:
              name: builder-token
              namespace: team
              annotations:
                kubernetes.io/service-account.name: builder
            """
        #expect(try server.kubectl(k, ["create", "-f", "-"], input: secret).status == 0)
        let filled = try server.kubectl(k, ["-n", "team", "get", "secret", "builder-token", "-o", "json"])
        let stored = try JSONValue.parse(Data(filled.out.utf8))
        let token = String(decoding: Data(base64Encoded: stored[path: ["data", "token"]]?.string ?? "") ?? Data(), as: UTF8.self)
        #expect(token.split(separator: ".").count == 3, "\(filled.out)")
        #expect(stored[path: ["data", "namespace"]]?.string == Data("team".utf8).base64EncodedString())
        #expect(stored[path: ["metadata", "annotations", "kubernetes.io/service-account.uid"]]?.string?.isEmpty == false)
        func review() throws -> String {
            let body = #"{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "\#(token)"}}"#
            return try server.kubectl(k, ["create", "-f", "-", "-o", "jsonpath={.status.authenticated} {.status.user.username} {.status.error}"], input: body).out
        }
        #expect(try review() == "true system:serviceaccount:team:builder ", "the Secret's token")
        #expect(try server.kubectl(k, ["-n", "team", "delete", "secret", "builder-token"]).status == 0)
        // (the authenticator's 10 s cache, as upstream's, may still answer for a moment)
        var after = ""
        for _ in 0..<30 where !after.hasPrefix("false") {
            after = try review()
            if !after.hasPrefix("false") { usleep(500_000) }
        }
        #expect(after.contains("Token has been invalidated"), "its Secret gone: \(after)")
        // An account that is not there gets no token Secret.
        let orphan = secret.replacingOccurrences(of: "builder-token", with: "ghost-token").replacingOccurrences(of: "service-account.name: builder", with: "service-account.name: ghost")
        let refusedSecret = try server.kubectl(k, ["create", "-f", "-"], input: orphan)
        #expect(refusedSecret.status != 0 && refusedSecret.err.contains(#"serviceaccount "ghost" not found"#), "\(refusedSecret)")
    }
}
