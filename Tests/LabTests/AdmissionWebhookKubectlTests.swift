import Foundation
import HostOS
import KubeAPI
import NetnsKit
import Testing

/// Admission webhooks as kubectl users meet them: configurations applied with kubectl, a webhook
/// served over HTTPS by Python's ssl server (its CA in `caBundle`) that refuses one ConfigMap and
/// patches the others, kubectl printing the refusal and the webhook's warning.
@Suite("admission webhooks with kubectl", .enabled(if: isRoot && kubectl("1.33") != nil, "needs root and kubectl 1.33"))
struct AdmissionWebhookKubectlTests {
    @Test func aValidatingWebhookRefusesAndAMutatingOnePatches() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-admission-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let hook = try TLSServerTests.certificate(dir, "webhook")
        let port = Int.random(in: 30000...39999)
        let script = dir.appendingPathComponent("webhook.py").path
        try """
            import base64, http.server, json, ssl
            class H(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    review = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                    req = review['request']
                    resp = {'uid': req['uid'], 'allowed': True}
                    if self.path.startswith('/validate') and req['name'] == 'forbidden':
                        resp = {'uid': req['uid'], 'allowed': False, 'status': {'code': 403, 'message': 'no ConfigMap may be called forbidden'}}
                    if self.path.startswith('/mutate'):
                        patch = [{'op': 'add', 'path': '/data/patched-by', 'value': 'the webhook'}]
                        resp['patchType'] = 'JSONPatch'
                        resp['patch'] = base64.b64encode(json.dumps(patch).encode()).decode()
                        resp['warnings'] = ['patched by the lab webhook']
                    body = json.dumps({'apiVersion': 'admission.k8s.io/v1', 'kind': 'AdmissionReview', 'response': resp}).encode()
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
        let server = try LabServer(lab: lab)
        let ca = Data(try String(contentsOfFile: hook.cert, encoding: .utf8).utf8).base64EncodedString()
        let configs = """
            apiVersion: admissionregistration.k8s.io/v1
            kind: ValidatingWebhookConfiguration
            metadata: {name: names}
            webhooks:
            - name: names.lab.example.com
              sideEffects: None
              admissionReviewVersions: [v1]
              clientConfig: {url: "https://127.0.0.1:\(port)/validate", caBundle: \(ca)}
              rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
            ---
            apiVersion: admissionregistration.k8s.io/v1
            kind: MutatingWebhookConfiguration
            metadata: {name: patcher}
            webhooks:
            - name: patcher.lab.example.com
              sideEffects: None
              admissionReviewVersions: [v1]
              clientConfig: {url: "https://127.0.0.1:\(port)/mutate", caBundle: \(ca)}
              rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
              namespaceSelector: {matchLabels: {patched: "yes"}}
            """
        var ready = false
        for _ in 0..<100 where !ready {
            ready = try server.kubectl(k, ["get", "--raw", "/readyz"]).status == 0
            if !ready { usleep(100_000) }
        }
        let applied = try server.kubectl(k, ["apply", "-f", "-"], input: configs)
        #expect(applied.status == 0, "\(applied.err)")
        let refused = try server.kubectl(k, ["create", "configmap", "forbidden", "--from-literal=a=b"])
        #expect(refused.status != 0)
        #expect(refused.err.contains(#"admission webhook "names.lab.example.com" denied the request: no ConfigMap may be called forbidden"#), "\(refused.err)")
        // The mutating webhook only where the namespace is labelled.
        #expect(try server.kubectl(k, ["create", "namespace", "plain"]).status == 0)
        #expect(try server.kubectl(k, ["create", "namespace", "patched"]).status == 0)
        #expect(try server.kubectl(k, ["label", "namespace", "patched", "patched=yes"]).status == 0)
        let patched = try server.kubectl(k, ["-n", "patched", "create", "configmap", "settings", "--from-literal=a=b"])
        #expect(patched.status == 0 && patched.err.contains("Warning: patched by the lab webhook"), "\(patched)")
        #expect(try server.kubectl(k, ["-n", "patched", "get", "configmap", "settings", "-o", "jsonpath={.data.patched-by}"]).out == "the webhook")
        #expect(try server.kubectl(k, ["-n", "plain", "create", "configmap", "settings", "--from-literal=a=b"]).status == 0)
        #expect(try server.kubectl(k, ["-n", "plain", "get", "configmap", "settings", "-o", "jsonpath={.data.patched-by}"]).out == "")
        // The configurations as kubectl lists them.
        let listed = try server.kubectl(k, ["get", "mutatingwebhookconfigurations"])
        #expect(listed.out.contains("patcher") && listed.out.contains("WEBHOOKS"), "\(listed.out)")
    }
}
