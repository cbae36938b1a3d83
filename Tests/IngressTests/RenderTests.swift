import Foundation
import HostOS
import IngressNginx
import KubeAPI
import Testing

/// The nginx.conf renderer against golden files (`Golden/NAME.yaml` in, `Golden/NAME.conf` out;
/// `UPDATE_GOLDEN=1 swift test --filter IngressTests` rewrites them), each checked by the real
/// nginx (`nginx -t`), and its rules one by one.
@Suite("nginx.conf from Ingresses")
struct RenderTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")

    static func options(_ name: String) -> NginxOptions {
        var o = NginxOptions()
        o.workerProcesses = "1"
        if name == "tls" {
            o.httpsPort = 8443
            o.defaultSSLCertificate = "ingress-nginx/default-cert"
        }
        return o
    }

    static func sources(_ name: String) throws -> IngressSources {
        IngressSources(objects: try ManifestLoader.objects(paths: [golden.appendingPathComponent(name + ".yaml").path]))
    }

    /// nil when nginx accepts the configuration (rendered for a run directory of its own, with
    /// the files it names), else what nginx says.
    static func nginxTest(_ s: IngressSources, _ options: NginxOptions) throws -> String? {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-ingress-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/ssl", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = options
        o.runDirectory = dir
        let r = NginxRenderer.render(s, options: o)
        for (f, text) in r.files { try text.write(toFile: dir + "/" + f, atomically: true, encoding: .utf8) }
        try r.config.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
        let result = try CommandRunner().run(["nginx", "-t", "-q", "-c", dir + "/nginx.conf", "-p", dir + "/", "-e", dir + "/error.log"], check: false)
        return result.status == 0 ? nil : result.stderr
    }

    @Test(arguments: ["hosts-and-paths", "tls"])
    func matchesTheGoldenFileAndNginxAcceptsIt(_ name: String) throws {
        let s = try Self.sources(name)
        let r = NginxRenderer.render(s, options: Self.options(name))
        let file = Self.golden.appendingPathComponent(name + ".conf")
        if ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] != nil {
            try r.config.write(to: file, atomically: true, encoding: .utf8)
        }
        let want = try String(contentsOf: file, encoding: .utf8)
        #expect(r.config == want, "differs from Golden/\(name).conf (UPDATE_GOLDEN=1 rewrites it)")
        let problem = try Self.nginxTest(s, Self.options(name))
        #expect(problem == nil, "\(problem ?? "")")
    }

    @Test func whatCannotBeServedIsSaidAndLeftOut() throws {
        let r = NginxRenderer.render(try Self.sources("hosts-and-paths"), options: Self.options("hosts-and-paths"))
        #expect(r.ingresses == ["shop/shop", "shop/shop-v2", "shop/legacy"], "the oldest first; not theirs, not traefik's")
        #expect(r.warnings.contains("shop/shop: Prefix /gone: service \"shop/missing\" does not exist"), "\(r.warnings)")
        #expect(r.warnings.contains("shop/shop-v2: Prefix /api: host shop.example.com already serves \"/api/\" for shop/shop: Prefix /api/"), "\(r.warnings)")
        #expect(r.warnings.count == 2, "\(r.warnings)")
        let tls = NginxRenderer.render(try Self.sources("tls"), options: Self.options("tls"))
        #expect(tls.warnings == ["web/broken: secret \"web/nowhere\" does not exist",
                                 "web/broken: secret \"web/not-a-cert\" holds no PEM certificate and key (tls.crt, tls.key)"])
        let names = tls.files.keys.sorted()
        #expect(names.count == 2 && names[0].hasPrefix("ssl/ingress-nginx-default-cert-") && names[1].hasPrefix("ssl/web-secure-tls-"), "\(names)")
        // A Secret whose certificate changes is another file: the one a running nginx reads is
        // never overwritten.
        var changed = try Self.sources("tls")
        for i in changed.secrets.indices where changed.secrets[i][path: ["metadata", "name"]]?.string == "secure-tls" {
            let key = changed.secrets[i][path: ["data", "tls.key"]]!.string!
            let pem = String(decoding: Data(base64Encoded: key)!, as: UTF8.self) + "\n"
            changed.secrets[i][path: ["data", "tls.key"]] = .string(Data(pem.utf8).base64EncodedString())
        }
        let after = NginxRenderer.render(changed, options: Self.options("tls")).files.keys.sorted()
        #expect(after[0] == names[0] && after[1] != names[1] && after[1].hasPrefix("ssl/web-secure-tls-"), "\(after)")
    }

    static func ingress(_ name: String, host: String = "a.example.com", path: String = "/", type: String = "Prefix",
                        className: String? = "nginx", annotations: [String: String] = [:]) -> JSONValue {
        var o: JSONValue = ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                            "metadata": ["name": .string(name), "namespace": "default", "creationTimestamp": "2026-12-01T00:00:00Z"],
                            "spec": ["rules": [["host": .string(host), "http": ["paths": [["path": .string(path), "pathType": .string(type),
                                                                                          "backend": ["service": ["name": "web", "port": ["number": 80]]]]]]]]]]
        if let className { o[path: ["spec", "ingressClassName"]] = .string(className) }
        if !annotations.isEmpty { o[path: ["metadata", "annotations"]] = .object(annotations.mapValues { .string($0) }) }
        return o
    }

    static let ourClass: JSONValue = ["metadata": ["name": "nginx"], "spec": ["controller": "k8s.io/ingress-nginx"]]
    static let defaultClass: JSONValue = ["metadata": ["name": "nginx", "annotations": ["ingressclass.kubernetes.io/is-default-class": "true"]],
                                          "spec": ["controller": "k8s.io/ingress-nginx"]]

    @Test func whichIngressesAreOurs() {
        let o = NginxOptions()
        #expect(NginxRenderer.isOurs(Self.ingress("a"), classes: [Self.ourClass], options: o))
        #expect(!NginxRenderer.isOurs(Self.ingress("a"), classes: [], options: o), "the class must exist and be ours")
        #expect(!NginxRenderer.isOurs(Self.ingress("a", className: "other"), classes: [Self.ourClass], options: o))
        #expect(NginxRenderer.isOurs(Self.ingress("a", className: nil, annotations: ["kubernetes.io/ingress.class": "nginx"]), classes: [], options: o))
        #expect(!NginxRenderer.isOurs(Self.ingress("a", className: nil, annotations: ["kubernetes.io/ingress.class": "haproxy"]), classes: [Self.defaultClass], options: o))
        #expect(!NginxRenderer.isOurs(Self.ingress("a", className: nil), classes: [Self.ourClass], options: o), "no class, ours not the default")
        #expect(NginxRenderer.isOurs(Self.ingress("a", className: nil), classes: [Self.defaultClass], options: o))
        var without = o
        without.watchWithoutClass = true
        #expect(NginxRenderer.isOurs(Self.ingress("a", className: nil), classes: [], options: without))
    }

    @Test func hostileHostsAndPathsNeverReachTheFile() throws {
        let service: JSONValue = ["apiVersion": "v1", "kind": "Service", "metadata": ["name": "web", "namespace": "default"], "spec": ["ports": [["port": 80]]]]
        for (host, path) in [("a.example.com", "/x;} server { listen 1;"), ("a.example.com", "/$host"), ("a.example.com", "/a b"),
                             ("evil.com; include /etc/passwd", "/"), ("a.example.com", "/x\"y"), ("A.EXAMPLE.COM", "/")] {
            let s = IngressSources(ingresses: [Self.ingress("x", host: host, path: path, type: "ImplementationSpecific")], ingressClasses: [Self.ourClass],
                                   services: [service])
            let r = NginxRenderer.render(s, options: NginxOptions())
            #expect(r.warnings.count == 1, "\(host) \(path): \(r.warnings)")
            #expect(!r.config.contains(path == "/" ? host : path), "\(host) \(path)")
            #expect(try Self.nginxTest(s, NginxOptions()) == nil)
        }
    }

    /// A host's certificate may come from another Ingress than its paths; every path of a host
    /// with a certificate redirects plain HTTP, whichever Ingress wrote it first.
    @Test func aCertificateFromAnotherIngressCoversTheHostsPaths() throws {
        var s = try Self.sources("tls")
        s.ingresses = s.ingresses.filter { $0[path: ["metadata", "name"]]?.string == "secure" }
        var paths = Self.ingress("paths-only", host: "site.example.com")
        paths[path: ["metadata", "namespace"]] = "web"
        paths[path: ["metadata", "creationTimestamp"]] = "2026-11-01T00:00:00Z"
        let tlsOnly: JSONValue = ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                  "metadata": ["name": "tls-only", "namespace": "web", "creationTimestamp": "2026-12-05T00:00:00Z"],
                                  "spec": ["ingressClassName": "nginx", "tls": [["hosts": ["site.example.com"], "secretName": "secure-tls"]],
                                           "defaultBackend": ["service": ["name": "site", "port": ["number": 80]]]]]
        s.ingresses += [paths, tlsOnly]
        let r = NginxRenderer.render(s, options: Self.options("tls"))
        let server = try #require(r.config.components(separatedBy: "server_name site.example.com;").dropFirst().first?.components(separatedBy: "\n    }\n").first)
        #expect(server.contains("listen 8443 ssl;") && server.contains("/ssl/web-secure-tls-"), "\(server)")
        #expect(server.contains("return 308 https://$host:8443$request_uri;"), "the older Ingress's path redirects too: \(server)")
        #expect(try Self.nginxTest(s, Self.options("tls")) == nil)
    }

    @Test func servicesWhoseUpstreamNamesMeetAreToldApart() {
        func svc(_ ns: String, _ name: String, _ ip: String) -> [JSONValue] {
            [["apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(name), "namespace": .string(ns)], "spec": ["ports": [["port": 80]]]],
             ["metadata": ["name": .string(name + "-1"), "namespace": .string(ns), "labels": ["kubernetes.io/service-name": .string(name)]],
              "addressType": "IPv4", "ports": [["port": 8080]], "endpoints": [["addresses": [.string(ip)]]]]]
        }
        var one = Self.ingress("one", host: "one.example.com"), two = Self.ingress("two", host: "two.example.com")
        one[path: ["metadata", "namespace"]] = "a-b"
        one[path: ["spec", "rules"]] = [["host": "one.example.com", "http": ["paths": [["path": "/", "pathType": "Prefix",
                                                                                      "backend": ["service": ["name": "c", "port": ["number": 80]]]]]]]]
        two[path: ["metadata", "namespace"]] = "a"
        two[path: ["spec", "rules"]] = [["host": "two.example.com", "http": ["paths": [["path": "/", "pathType": "Prefix",
                                                                                      "backend": ["service": ["name": "b-c", "port": ["number": 80]]]]]]]]
        let x = svc("a-b", "c", "10.0.0.1"), y = svc("a", "b-c", "10.0.0.2")
        let r = NginxRenderer.render(IngressSources(ingresses: [one, two], ingressClasses: [Self.ourClass], services: [x[0], y[0]],
                                                    endpointSlices: [x[1], y[1]]), options: NginxOptions())
        #expect(r.config.contains("upstream a-b-c-80 {\n        server 10.0.0.1:8080") && r.config.contains("upstream a-b-c-80- {\n        server 10.0.0.2:8080"),
                "\(r.config)")
    }

    @Test func aPrefixMatchesByPathElementWithOrWithoutItsTrailingSlash() {
        let service: JSONValue = ["apiVersion": "v1", "kind": "Service", "metadata": ["name": "web", "namespace": "default"], "spec": ["ports": [["port": 80]]]]
        let a = NginxRenderer.render(IngressSources(ingresses: [Self.ingress("a", path: "/foo/")], ingressClasses: [Self.ourClass], services: [service]),
                                     options: NginxOptions())
        let b = NginxRenderer.render(IngressSources(ingresses: [Self.ingress("a", path: "/foo")], ingressClasses: [Self.ourClass], services: [service]),
                                     options: NginxOptions())
        #expect(a.config.replacingOccurrences(of: "Prefix /foo/", with: "Prefix /foo") == b.config)
        #expect(b.config.contains("location = \"/foo\" {") && b.config.contains("location \"/foo/\" {"))
        #expect(!b.config.contains("location \"/foo\" {"), "not nginx's own prefix match, which would take /foobar")
    }
}
