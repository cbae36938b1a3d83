import Foundation
import KubeAPI
import NetnsKit
import Testing

/// `switchyard server` as a user starts it: HTTPS on 6443 by default with the cluster CA it makes
/// in its data directory and an admin kubeconfig that kubectl 1.27 and 1.33 and the official
/// Python client use as they are; plain HTTP only on loopback, only when --port asks for it.
@Suite("serving and PKI", .serialized)
struct ServingTests {
    @Test func httpsByDefaultWithAnAdminKubeconfig() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let dir = try tempDir("pki-server")
        defer { try? FileManager.default.removeItem(at: dir) }
        var p = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path])
        #expect(p.wait(for: "caches synced", seconds: 30), "\(p.output)")
        let kubeconfig = dir.appendingPathComponent("kubeconfig").path
        let written = try String(contentsOfFile: kubeconfig, encoding: .utf8)
        #expect(written.contains("server: https://127.0.0.1:6443") && written.contains("client-certificate-data:")
                && written.contains("certificate-authority-data:") && written.contains("name: kubernetes-admin"), "\(written)")
        let ca = try String(contentsOf: dir.appendingPathComponent("pki/ca.crt"), encoding: .utf8)
        for version in ["1.27", "1.33"] {
            guard let k = kubectlOrRecord(version) else { continue }
            let who = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "auth", "whoami", "-o", "json"])
            #expect(who.status == 0, "kubectl \(version) auth whoami: \(who.err)")
            let info = try JSONValue.parse(Data(who.out.utf8))
            #expect(info[path: ["status", "userInfo", "username"]] == "kubernetes-admin", "\(who.out)")
            let groups = (info[path: ["status", "userInfo", "groups"]]?.array ?? []).compactMap(\.string)
            #expect(groups.contains("system:masters"), "\(who.out)")
            // The embedded controllers, with their own certificates, publish the CA to every
            // namespace (soon after the start: on a loaded machine, not at once).
            var published = (status: Int32(0), out: "", err: "")
            for _ in 0..<150 where published.out != ca {
                published = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "get", "configmap", "kube-root-ca.crt",
                                        "-o", "jsonpath={.data.ca\\.crt}"])
                if published.out != ca { usleep(200_000) }
            }
            #expect(published.out == ca, "kubectl \(version): \(published.err)")
        }
        // The official Python client, with the same kubeconfig.
        let python = try Sh.run(["ip", "netns", "exec", ns.name, "python3", "-c", """
            from kubernetes import client, config
            config.load_kube_config(config_file='\(kubeconfig)')
            print(sorted(n.metadata.name for n in client.CoreV1Api().list_namespace().items))
            """], timeout: 60)
        #expect(python.status == 0 && python.out.contains("'kube-system'"), "python client: \(python.out) \(python.err)")
        // Without credentials: 401 (AlwaysAllow turns anonymous requests off, as upstream).
        let curl = ["ip", "netns", "exec", ns.name, "curl", "-s", "--cacert", dir.appendingPathComponent("pki/ca.crt").path]
        #expect(try Sh.run(curl + ["-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:6443/api/v1/namespaces"]).out == "401")
        // Plain HTTP is not served.
        #expect(try Sh.run(curl + ["-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:6443/api"]).out != "200")
        // A restart keeps the CA and the certificates.
        let certs = try ["ca.crt", "apiserver.crt", "admin.crt"].map { try String(contentsOf: dir.appendingPathComponent("pki/\($0)"), encoding: .utf8) }
        let took = p.stop()
        #expect(took != nil && took! < 5, "SIGTERM took \(took.map { "\($0) s" } ?? "forever"):\n\(p.output)")
        p = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--authorization-mode", "Node,RBAC"])
        #expect(p.wait(for: "caches synced", seconds: 30), "\(p.output)")
        #expect(try ["ca.crt", "apiserver.crt", "admin.crt"].map { try String(contentsOf: dir.appendingPathComponent("pki/\($0)"), encoding: .utf8) } == certs)
        // Under RBAC the embedded controllers act as system:kube-controller-manager and still
        // turn a Deployment into a ReplicaSet; anonymous gets only the public paths.
        let k = "/usr/lib/google-cloud-sdk/bin/kubectl"
        _ = try Sh.must(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "create", "deployment", "web", "--image=nginx"])
        var sets = ""
        for _ in 0..<100 where !sets.contains("web-") {
            sets = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "get", "rs", "-o", "name"]).out
            usleep(100_000)
        }
        #expect(sets.contains("replicaset.apps/web-"), "\(p.output)")
        #expect(try Sh.run(curl + ["-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:6443/api/v1/namespaces"]).out == "403")
        // The OIDC discovery documents: for service accounts and whom RBAC lets (not anonymous, as upstream).
        #expect(try Sh.run(curl + ["-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:6443/.well-known/openid-configuration"]).out == "403")
        let discovery = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "get", "--raw", "/.well-known/openid-configuration"])
        #expect(discovery.out.contains("\"jwks_uri\""), "\(discovery.err)")
        let jwks = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "get", "--raw", "/openid/v1/jwks"])
        #expect(jwks.out.contains("\"keys\""), "\(jwks.err)")
        _ = p.stop()
    }

    @Test func theInsecurePortIsLoopbackOnly() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let dir = try tempDir("insecure-server")
        defer { try? FileManager.default.removeItem(at: dir) }
        // Elsewhere than loopback: refused, with what to do instead.
        let refused = try Sh.run(["ip", "netns", "exec", ns.name, bin, "server", "--data-dir", dir.path, "--bind-address", "0.0.0.0", "--port", "0"], timeout: 20)
        #expect(refused.status == 64 && refused.err.contains("--port serves plain HTTP on 127.0.0.1 only") && refused.err.contains("--secure-port"), "\(refused.err)")
        let certs = try Sh.run(["ip", "netns", "exec", ns.name, bin, "server", "--data-dir", dir.path, "--port", "0", "--client-ca-file", "/etc/hostname"], timeout: 20)
        #expect(certs.status == 64 && certs.err.contains("give --secure-port"), "\(certs.err)")
        // Only --port: plain HTTP on loopback, no CA made, a kubeconfig without credentials.
        let p = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--port", "0"])
        #expect(p.wait(for: "serving the Kubernetes API", seconds: 30), "\(p.output)")
        let written = try String(contentsOf: dir.appendingPathComponent("kubeconfig"), encoding: .utf8)
        #expect(written.contains("server: http://127.0.0.1:") && !written.contains("client-certificate"), "\(written)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("pki").path))
        _ = p.stop()
        // Both: the kubeconfig names the secure port; the insecure one answers on loopback.
        let both = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--secure-port", "0", "--port", "18080"])
        #expect(both.wait(for: "serving plain HTTP (the insecure port) at http://127.0.0.1:18080", seconds: 30), "\(both.output)")
        #expect(both.wait(for: "serving the Kubernetes API at https://127.0.0.1:", seconds: 30), "\(both.output)")
        let plain = try Sh.run(["ip", "netns", "exec", ns.name, "curl", "-s", "http://127.0.0.1:18080/api/v1/namespaces/kube-system"])
        #expect(plain.out.contains("\"name\":\"kube-system\""), "\(plain.out)")
        _ = both.stop()
    }
}
