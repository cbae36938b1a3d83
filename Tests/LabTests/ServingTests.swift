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

    /// A dual-stack server (`--service-cluster-ip-range` of both families) as kubectl 1.27 and
    /// 1.33 see it: Services of each policy get their families and addresses, a downgrade by
    /// `kubectl patch` drops the IPv6 address, and bad ranges are refused at the start.
    @Test func dualStackServicesThroughKubectl() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let dir = try tempDir("dual-server")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (range, says) in [("10.96.0.0/16,10.97.0.0/16", "must be of different IP family"),
                              ("10.96.0.0/16,fd00:10:96::/64", "is too large; for 128-bit addresses, the mask must be >= 108"),
                              ("10.96.0.0/16,fd00::/112,fd01::/112", "must not contain more than two entries")] {
            let r = try Sh.run(["ip", "netns", "exec", ns.name, bin, "server", "--data-dir", dir.path, "--port", "0", "--service-cluster-ip-range", range], timeout: 20)
            #expect(r.status == 64 && r.err.contains(says), "\(range): \(r.err)")
        }
        let p = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/112"])
        defer { _ = p.stop() }
        #expect(p.wait(for: "caches synced", seconds: 30), "\(p.output)")
        let kubeconfig = dir.appendingPathComponent("kubeconfig").path
        let manifest = dir.appendingPathComponent("services.yaml").path
        try """
            apiVersion: v1
            kind: Service
            metadata: {name: single}
            spec: {selector: {app: a}, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: prefer}
            spec: {ipFamilyPolicy: PreferDualStack, selector: {app: a}, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: six-first}
            spec: {ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv6, IPv4], selector: {app: a}, ports: [{port: 80}]}

            """.write(toFile: manifest, atomically: true, encoding: .utf8)
        for version in ["1.27", "1.33"] {
            guard let k = kubectlOrRecord(version) else { continue }
            let kubectl = ["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig]
            let applied = try Sh.run(kubectl + ["apply", "-f", manifest])
            #expect(applied.status == 0, "kubectl \(version) apply: \(applied.err)")
            let got = try Sh.run(kubectl + ["get", "svc", "single", "prefer", "six-first", "-o",
                                            "jsonpath={range .items[*]}{.metadata.name} {.spec.ipFamilyPolicy} {.spec.ipFamilies} {.spec.clusterIPs}{\"\\n\"}{end}"])
            let lines = got.out.split(separator: "\n").map(String.init)
            #expect(lines.count == 3, "\(got.out) \(got.err)")
            func fields(_ name: String) -> [String] { lines.first { $0.hasPrefix(name + " ") }?.split(separator: " ").map(String.init) ?? [] }
            #expect(fields("single").dropFirst().prefix(2) == ["SingleStack", #"["IPv4"]"#], "\(got.out)")
            #expect(fields("prefer").dropFirst().prefix(2) == ["PreferDualStack", #"["IPv4","IPv6"]"#], "\(got.out)")
            #expect(fields("six-first").dropFirst().prefix(2) == ["RequireDualStack", #"["IPv6","IPv4"]"#], "\(got.out)")
            // Each address of its family, in its range.
            for name in ["single", "prefer", "six-first"] {
                let ips = try JSONValue.parse(Data((fields(name).last ?? "[]").utf8)).array?.compactMap(\.string) ?? []
                let families = try JSONValue.parse(Data((fields(name).dropFirst(2).first ?? "[]").utf8)).array?.compactMap(\.string) ?? []
                #expect(ips.count == families.count && zip(ips, families).allSatisfy { ip, f in
                    f == "IPv4" ? CIDR("10.96.0.0/16")!.contains(IPAddress(ip)!) : CIDR("fd00:10:96::/112")!.contains(IPAddress(ip)!)
                }, "\(name): \(ips) \(families)")
            }
            // The downgrade: SingleStack alone trims the lists.
            let down = try Sh.run(kubectl + ["patch", "svc", "six-first", "-p", #"{"spec":{"ipFamilyPolicy":"SingleStack"}}"#])
            #expect(down.status == 0, "\(down.err)")
            let after = try Sh.run(kubectl + ["get", "svc", "six-first", "-o", "jsonpath={.spec.ipFamilies} {.spec.clusterIPs}"])
            #expect(after.out.hasPrefix(#"["IPv6"] [""#) && !after.out.contains("."), "\(after.out)")
            // Reducing the addresses without SingleStack is refused in upstream's words.
            let first = try Sh.run(kubectl + ["get", "svc", "prefer", "-o", "jsonpath={.spec.clusterIP}"]).out
            let refused = try Sh.run(kubectl + ["patch", "svc", "prefer", "-p", #"{"spec":{"clusterIPs":[""# + first + #""]}}"#])
            #expect(refused.status != 0 && refused.err.contains("must be 'SingleStack' to release the secondary cluster IP"), "\(refused.err)")
            _ = try Sh.run(kubectl + ["delete", "-f", manifest])
            // The server's ranges as the `kubernetes` ServiceCIDR, Ready, as kubectl shows it.
            let cidrs = try Sh.run(kubectl + ["get", "servicecidrs"])
            #expect(cidrs.status == 0 && cidrs.out.contains("kubernetes") && cidrs.out.contains("10.96.0.0/16,fd00:10:96::/112")
                    && cidrs.out.hasPrefix("NAME"), "kubectl \(version) get servicecidrs: \(cidrs.out) \(cidrs.err)")
            let ready = try Sh.run(kubectl + ["get", "servicecidr", "kubernetes", "-o", "jsonpath={.status.conditions[0].type}={.status.conditions[0].status}"])
            #expect(ready.out == "Ready=True", "\(ready.out) \(ready.err)")
        }
    }
}
