import Foundation
import HostOS
import KubeAPI
import NetnsKit
import Testing

/// RBAC as kubectl users meet it: `switchyard server --authorization-mode RBAC` over HTTPS with a token file
/// (an admin in system:masters, alice and bob), real kubectl's `auth can-i` (also `--list` and
/// `--as`), `auth whoami`, and its refusal as upstream prints it.
@Suite("RBAC with kubectl", .enabled(if: isRoot && kubectl("1.33") != nil, "needs root and kubectl 1.33"))
struct RBACKubectlTests {
    @Test func canIMatchesTheBindings() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-rbac-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokens = dir.appendingPathComponent("tokens.csv").path
        try "admin-token,admin,1,\"system:masters\"\nalice-token,alice,2\nbob-token,bob,3,\"devs\"\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        // HTTPS: kubectl sends credentials over TLS only.
        let serving = try TLSServerTests.certificate(dir, "serving")
        let server = try LabServer(lab: lab, arguments: ["--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                                                         "--token-auth-file", tokens, "--authorization-mode", "RBAC"])
        func run(_ args: [String], token: String? = nil) throws -> (status: Int32, out: String, err: String) {
            try server.kubectl(k, (token.map { ["--token", $0] } ?? []) + args)
        }
        func must(_ args: [String]) throws {
            let r = try run(args)
            #expect(r.status == 0, "kubectl \(args.joined(separator: " ")): \(r.err)")
        }
        try must(["create", "namespace", "team"])
        try must(["-n", "team", "create", "rolebinding", "alice-view", "--clusterrole", "view", "--user", "alice"])
        try must(["-n", "team", "create", "rolebinding", "devs-edit", "--clusterrole", "edit", "--group", "devs"])

        // (user, verb, resource, namespace) → can-i's answer, as the bindings above say.
        let matrix: [(String, String, String, String, Bool)] = [
            ("alice", "list", "pods", "team", true),
            ("alice", "get", "deployments.apps", "team", true),
            ("alice", "create", "pods", "team", false),
            ("alice", "get", "secrets", "team", false),
            ("alice", "list", "pods", "default", false),
            ("bob", "create", "pods", "team", true),
            ("bob", "delete", "deployments.apps", "team", true),
            ("bob", "get", "secrets", "team", true),
            ("bob", "create", "rolebindings.rbac.authorization.k8s.io", "team", false),
            ("bob", "list", "nodes", "", false),
            ("admin", "delete", "nodes", "", true),
        ]
        for (user, verb, resource, ns, expected) in matrix {
            let r = try run(["auth", "can-i", verb, resource] + (ns.isEmpty ? [] : ["-n", ns]), token: "\(user)-token")
            #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == (expected ? "yes" : "no") && r.status == (expected ? 0 : 1),
                    "\(user) can-i \(verb) \(resource) -n \(ns): \(r)")
            // The same, asked by the admin on the user's behalf (impersonation).
            // Impersonation gives the name only: the groups the token file gives are passed too.
            let groups = ["bob": ["--as-group", "devs"], "admin": ["--as-group", "system:masters"]][user] ?? []
            let asUser = try run(["auth", "can-i", verb, resource, "--as", user] + groups + (ns.isEmpty ? [] : ["-n", ns]))
            #expect(asUser.out.trimmingCharacters(in: .whitespacesAndNewlines) == (expected ? "yes" : "no"), "--as \(user): \(asUser)")
        }
        // Refused as upstream words it; unknown tokens are 401s.
        let refused = try run(["get", "pods", "-n", "default"], token: "alice-token")
        #expect(refused.status != 0)
        #expect(refused.err.contains(#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#), "\(refused.err)")
        let unknown = try run(["get", "pods"], token: "nope")
        #expect(unknown.err.contains("Unauthorized"), "\(unknown.err)")
        // Who am I, and what may I do.
        let whoami = try run(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"], token: "bob-token")
        #expect(whoami.out == #"bob ["devs","system:authenticated"]"#, "\(whoami)")
        let list = try run(["auth", "can-i", "--list", "-n", "team"], token: "alice-token")
        #expect(list.status == 0 && list.out.split(separator: "\n").contains { $0.hasPrefix("pods ") && $0.contains("[get list watch]") }, "\(list.out)")
        // Escalation: bob (edit in team) may write RoleBindings there, but grant only what he holds.
        try must(["-n", "team", "create", "role", "binder", "--verb", "create,get", "--resource", "rolebindings.rbac.authorization.k8s.io"])
        try must(["-n", "team", "create", "rolebinding", "bob-binder", "--role", "binder", "--user", "bob"])
        let escalate = try run(["-n", "team", "create", "rolebinding", "bob-admin", "--clusterrole", "admin", "--user", "bob"], token: "bob-token")
        #expect(escalate.status != 0 && escalate.err.contains(#"user "bob" (groups=["devs" "system:authenticated"]) is attempting to grant RBAC permissions not currently held"#),
                "\(escalate)")
        let granted = try run(["-n", "team", "create", "rolebinding", "carol-view", "--clusterrole", "view", "--user", "carol"], token: "bob-token")
        #expect(granted.status == 0, "edit covers view: \(granted)")
        // A service account's token from `kubectl create token`, and who it is.
        try must(["-n", "team", "create", "serviceaccount", "runner"])
        let created = try run(["-n", "team", "create", "token", "runner", "--duration", "10m"])
        let saToken = created.out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(created.status == 0 && saToken.split(separator: ".").count == 3, "\(created)")
        let saWho = try run(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], token: saToken)
        #expect(saWho.out == "system:serviceaccount:team:runner", "\(saWho)")
        let saCan = try run(["auth", "can-i", "list", "pods", "-n", "team"], token: saToken)
        #expect(saCan.out.trimmingCharacters(in: .whitespacesAndNewlines) == "no", "no binding names it: \(saCan)")
    }

    /// `--authorization-mode Webhook,RBAC`: a real HTTPS webhook (Python's ssl server) answers
    /// the SubjectAccessReviews; kubectl sees its decisions and its reasons.
    @Test func aWebhookDecidesBeforeRBAC() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-webhook-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokens = dir.appendingPathComponent("tokens.csv").path
        try "admin-token,admin,1,\"system:masters\"\nalice-token,alice,2\nmallory-token,mallory,3\nbob-token,bob,4\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        let serving = try TLSServerTests.certificate(dir, "serving")
        let hook = try TLSServerTests.certificate(dir, "webhook")
        // alice may read pods, mallory is denied everything, anyone else: no opinion. Each review is logged.
        let script = dir.appendingPathComponent("webhook.py").path
        let log = dir.appendingPathComponent("reviews.jsonl").path
        let port = Int.random(in: 30000...39999)
        try """
            import http.server, json, ssl
            class H(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    review = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                    with open('\(log)', 'a') as f: f.write(json.dumps(review) + '\\n')
                    spec = review['spec']; ra = spec.get('resourceAttributes', {})
                    if spec['user'] == 'alice' and ra.get('resource') == 'pods' and ra.get('verb') in ('get', 'list'):
                        status = {'allowed': True, 'reason': 'alice reads pods'}
                    elif spec['user'] == 'mallory':
                        status = {'allowed': False, 'denied': True, 'reason': 'mallory is banned by the webhook'}
                    else:
                        status = {'allowed': False}
                    review['status'] = status
                    body = json.dumps(review).encode()
                    self.send_response(200); self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
                def log_message(self, *a): pass
            s = http.server.HTTPServer(('127.0.0.1', \(port)), H)
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('\(hook.cert)', '\(hook.key)')
            s.socket = c.wrap_socket(s.socket, server_side=True)
            s.serve_forever()
            """.write(toFile: script, atomically: true, encoding: .utf8)
        try lab.spawn(lab.node, ["python3", script])
        try Netns.waitForListeners(lab.node, [("-ltnH", port)])
        let config = dir.appendingPathComponent("webhook.kubeconfig").path
        try """
            apiVersion: v1
            kind: Config
            clusters:
            - name: webhook
              cluster: {server: "https://127.0.0.1:\(port)/authorize", certificate-authority: "\(hook.cert)"}
            users:
            - name: apiserver
              user: {}
            contexts:
            - name: webhook
              context: {cluster: webhook, user: apiserver}
            current-context: webhook
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try LabServer(lab: lab, arguments: ["--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                                                         "--token-auth-file", tokens, "--authorization-mode", "Webhook,RBAC",
                                                         "--authorization-webhook-config-file", config, "--authorization-webhook-version", "v1"])
        func run(_ args: [String], token: String) throws -> (status: Int32, out: String, err: String) {
            try server.kubectl(k, ["--token", token] + args)
        }
        func answer(_ r: (status: Int32, out: String, err: String)) -> String { r.out.trimmingCharacters(in: .whitespacesAndNewlines) }
        var ready = false
        for _ in 0..<100 where !ready {
            ready = try run(["get", "--raw", "/readyz"], token: "admin-token").status == 0
            if !ready { usleep(100_000) }
        }
        #expect(ready, "the server did not come up")
        #expect(try run(["get", "pods", "-n", "default"], token: "alice-token").status == 0, "the webhook allows alice")
        #expect(answer(try run(["auth", "can-i", "list", "pods", "-n", "default"], token: "alice-token")) == "yes")
        #expect(answer(try run(["auth", "can-i", "create", "pods", "-n", "default"], token: "alice-token")) == "no")
        let refused = try run(["get", "pods", "-n", "default"], token: "mallory-token")
        #expect(refused.status != 0 && refused.err.contains("mallory is banned by the webhook"), "\(refused)")
        // No opinion from the webhook: RBAC decides (system:basic-user lets bob review himself, nothing more).
        #expect(answer(try run(["auth", "can-i", "list", "pods", "-n", "default"], token: "bob-token")) == "no")
        let reviews = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
        let alice = reviews.first { $0[path: ["spec", "user"]] == "alice" }
        #expect(alice?["apiVersion"] == "authorization.k8s.io/v1")
        #expect(alice?[path: ["spec", "groups"]] == ["system:authenticated"], "\(alice ?? .null)")
        // The admin (system:masters) never reaches the webhook.
        #expect(!reviews.contains { $0[path: ["spec", "user"]] == "admin" })
    }
}

/// Client certificates (`--client-ca-file`): the subject's CN is the user, its O's the groups;
/// a certificate from another CA does not get in.
@Suite("client certificates with kubectl", .enabled(if: isRoot && kubectl("1.33") != nil, "needs root and kubectl 1.33"))
struct ClientCertificateTests {
    static func issue(_ dir: URL, ca: String, _ name: String, subject: String) throws -> (cert: String, key: String) {
        let cert = dir.appendingPathComponent("\(name).crt").path, key = dir.appendingPathComponent("\(name).key").path
        let csr = dir.appendingPathComponent("\(name).csr").path
        try Sh.must(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr, "-subj", subject])
        try Sh.must(["openssl", "x509", "-req", "-in", csr, "-CA", "\(ca).crt", "-CAkey", "\(ca).key", "-CAcreateserial", "-out", cert, "-days", "2",
                     "-extfile", "/dev/stdin"], input: "extendedKeyUsage=clientAuth\n")
        return (cert, key)
    }

    static func authority(_ dir: URL, _ name: String) throws -> String {
        let base = dir.appendingPathComponent(name).path
        try Sh.must(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", base + ".key", "-out", base + ".crt", "-days", "2", "-subj", "/CN=\(name)"])
        return base
    }

    @Test func theCertificateNamesTheUserAndItsGroups() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-x509-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let serving = try TLSServerTests.certificate(dir, "serving")
        let ca = try Self.authority(dir, "client-ca"), other = try Self.authority(dir, "other-ca")
        let admin = try Self.issue(dir, ca: ca, "admin", subject: "/O=system:masters/CN=kubernetes-admin")
        let carol = try Self.issue(dir, ca: ca, "carol", subject: "/O=team-admins/O=devs/CN=carol")
        let mallory = try Self.issue(dir, ca: other, "mallory", subject: "/O=system:masters/CN=mallory")
        let server = try LabServer(lab: lab, arguments: ["--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                                                         "--client-ca-file", ca + ".crt", "--authorization-mode", "RBAC"])
        // The kubeconfig written carries the cluster CA's admin certificate: kubectl refuses a
        // second one from its flags, so these run with a copy without it.
        let written = try String(contentsOfFile: server.kubeconfig, encoding: .utf8)
        let bare = dir.appendingPathComponent("bare.kubeconfig").path
        let kept = written.split(separator: "\n").filter { !$0.contains("client-certificate-data:") && !$0.contains("client-key-data:") }
        #expect(kept.last == "  user:", "\(written)")
        try (kept.joined(separator: "\n") + " {}\n").write(toFile: bare, atomically: true, encoding: .utf8)
        func run(_ who: (cert: String, key: String), _ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try Sh.run(["ip", "netns", "exec", lab.node, k, "--kubeconfig", bare, "--client-certificate", who.cert, "--client-key", who.key] + args)
        }
        var r = try run(admin, ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
        #expect(r.out == #"kubernetes-admin ["system:masters","system:authenticated"]"#, "\(r)")
        r = try run(admin, ["create", "namespace", "team"])
        #expect(r.status == 0, "\(r)")
        r = try run(carol, ["auth", "can-i", "list", "pods", "-n", "team"])
        #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "no")
        r = try run(admin, ["-n", "team", "create", "rolebinding", "team-admins", "--clusterrole", "admin", "--group", "team-admins"])
        #expect(r.status == 0, "\(r)")
        r = try run(carol, ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
        #expect(r.out == #"carol ["team-admins","devs","system:authenticated"]"#, "\(r)")
        r = try run(carol, ["auth", "can-i", "list", "pods", "-n", "team"])
        #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "yes", "\(r)")
        // Another CA's certificate does not get in, whatever it says.
        r = try run(mallory, ["get", "namespaces"])
        #expect(r.status != 0, "\(r)")
        // Without a certificate: anonymous, refused by RBAC (kubectl would ask for a password).
        let anonymous = try Sh.run(["ip", "netns", "exec", lab.node, "curl", "-sk", "https://127.0.0.1:\(server.port)/api/v1/namespaces"])
        #expect(anonymous.out.contains(#"namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\""#), "\(anonymous)")
    }
}
