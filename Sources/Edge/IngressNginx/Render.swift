import Foundation
import KubeAPI

/// An nginx configuration and the files beside it.
public struct RenderedNginx: Sendable, Equatable {
    /// nginx.conf.
    public var config: String
    /// Files it names, relative to the run directory: the certificates, `ssl/NAMESPACE-NAME-HASH.pem`
    /// (named by their contents too, so a changed Secret never overwrites what a running nginx reads).
    public var files: [String: String]
    /// What could not be served as written (an Ingress naming a missing Secret, a path nginx
    /// cannot hold, two Ingresses claiming one host and path), one line each.
    public var warnings: [String]
    /// The Ingresses this controller serves (`namespace/name`), whose status it writes.
    public var ingresses: [String]
}

/// Renders nginx.conf from Ingresses, as ingress-nginx serves them:
/// - an Ingress is ours when its `spec.ingressClassName` names an IngressClass whose
///   `spec.controller` is our controller class, when its `kubernetes.io/ingress.class`
///   annotation is our class, or when it names no class and one of our IngressClasses is the
///   default (`ingressclass.kubernetes.io/is-default-class`), or `--watch-ingress-without-class`;
/// - one `server` per host (a rule without a host goes to the catch-all server `_`); a wildcard
///   host `*.example.com` matches one label, as the Ingress API says;
/// - paths: `Exact` is `location = /p`; `Prefix` matches by path element (`/p` serves `/p`,
///   `/p/` and `/p/q`, not `/pq`): `location = /p` and `location /p/`; `ImplementationSpecific`
///   is nginx's own prefix match (`location /p`); nginx's longest match then picks, and an exact
///   path wins over a prefix, as the API says;
/// - when two Ingresses claim the same host and path the older one wins (by creation time, then
///   namespace and name), as ingress-nginx merges them;
/// - a backend is an `upstream` of the Service port's ready endpoints (from its EndpointSlices);
///   a backend without any is answered 503, a path of a missing Service too;
/// - `spec.tls`: each host named gets the Secret's certificate (type kubernetes.io/tls) on the
///   HTTPS port, and plain HTTP requests to it are redirected there (308) unless the Ingress says
///   `nginx.ingress.kubernetes.io/ssl-redirect: "false"`; HTTPS to an unknown name is refused in
///   the handshake unless there is a `--default-ssl-certificate`;
/// - requests no rule matches go to the oldest Ingress's `spec.defaultBackend`, else to
///   `--default-backend-service`, else are answered 404.
public enum NginxRenderer {
    public static let sslRedirectAnnotation = "nginx.ingress.kubernetes.io/ssl-redirect"
    public static let legacyClassAnnotation = "kubernetes.io/ingress.class"
    public static let defaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"

    enum PathKind: Int, Comparable {
        case exact, prefix, implementationSpecific
        static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    }

    /// One nginx `location`.
    struct Location {
        var match: String       // "= /p", "/p/", "/"
        var upstream: String?   // nil: 503
        var source: String      // "ns/name: Prefix /p"
        /// Plain HTTP redirected to HTTPS when the host has a certificate (the Ingress's
        /// `ssl-redirect`, true unless it says "false").
        var redirect: Bool
        /// The `= /p` a Prefix path adds: an Exact path of the same name takes its place.
        var implicit = false
    }

    struct Server {
        var host: String
        var certificate: String?
        var locations: [String: Location] = [:]
    }

    /// Whether an Ingress is this controller's.
    public static func isOurs(_ ingress: JSONValue, classes: [JSONValue], options: NginxOptions) -> Bool {
        let ours = classes.filter { $0[path: ["spec", "controller"]]?.string == options.controllerClass }
        if let name = ingress[path: ["spec", "ingressClassName"]]?.string {
            return ours.contains { $0[path: ["metadata", "name"]]?.string == name }
        }
        if let legacy = ingress[path: ["metadata", "annotations", legacyClassAnnotation]]?.string {
            return legacy == options.ingressClass
        }
        return options.watchWithoutClass || ours.contains { $0[path: ["metadata", "annotations", defaultClassAnnotation]]?.string == "true" }
    }

    public static func render(_ s: IngressSources, options: NginxOptions) -> RenderedNginx {
        var r = Renderer(sources: s, options: options)
        return r.run()
    }

    /// A host as nginx's `server_name` takes it: exact, or a regular expression matching one
    /// label for `*.`; nil when it is not a DNS name (nothing else may reach the file).
    static func serverName(_ host: String) -> String? {
        let body = host.hasPrefix("*.") ? String(host.dropFirst(2)) : host
        guard !body.isEmpty, body.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e }) else {
            return nil
        }
        if host.hasPrefix("*.") { return "~^[^.]+\\." + body.replacingOccurrences(of: ".", with: "\\.") + "$" }
        return body
    }

    /// A path as nginx's configuration can hold it, quoted; nil when it has what would break
    /// out of the quotes or be read as a variable.
    static func quoted(_ path: String) -> String? {
        guard path.hasPrefix("/"), !path.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f || "\"\\{};#$'".unicodeScalars.contains($0) }) else {
            return nil
        }
        return "\"" + path + "\""
    }
}

struct Renderer {
    let sources: IngressSources
    let options: NginxOptions
    var warnings: [String] = []
    var files: [String: String] = [:]
    var certificates: [String: String] = [:]
    var upstreamOwners: [String: String] = [:]
    var upstreams: [String: [String]] = [:]
    var servers: [String: NginxRenderer.Server] = [:]
    var catchAll: (upstream: String?, source: String)?
    /// Services and slices by namespace/name, and slices by the Service they belong to.
    let services: [String: JSONValue]
    let slices: [String: [JSONValue]]
    let secrets: [String: JSONValue]

    init(sources: IngressSources, options: NginxOptions) {
        self.sources = sources
        self.options = options
        func key(_ o: JSONValue) -> String { (o[path: ["metadata", "namespace"]]?.string ?? "default") + "/" + (o[path: ["metadata", "name"]]?.string ?? "") }
        services = Dictionary(sources.services.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        secrets = Dictionary(sources.secrets.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        var bySvc: [String: [JSONValue]] = [:]
        for s in sources.endpointSlices {
            guard let svc = s[path: ["metadata", "labels", "kubernetes.io/service-name"]]?.string else { continue }
            bySvc[(s[path: ["metadata", "namespace"]]?.string ?? "default") + "/" + svc, default: []].append(s)
        }
        slices = bySvc
    }

    static func key(_ o: JSONValue) -> String {
        (o[path: ["metadata", "namespace"]]?.string ?? "default") + "/" + (o[path: ["metadata", "name"]]?.string ?? "")
    }

    /// The upstream of a Service port: its name, made once; nil when there is nothing to send to.
    mutating func upstream(namespace: String, service: String, port: JSONValue?, source: String) -> String? {
        guard let svc = services[namespace + "/" + service] else {
            warnings.append("\(source): service \"\(namespace)/\(service)\" does not exist")
            return nil
        }
        if svc[path: ["spec", "type"]]?.string == "ExternalName" {
            warnings.append("\(source): service \"\(namespace)/\(service)\" is of type ExternalName, which is not served; answered 503")
            return nil
        }
        let ports = svc[path: ["spec", "ports"]]?.array ?? []
        let want: JSONValue?
        if let n = port?["number"]?.int {
            want = ports.first { $0["port"]?.int == n }
        } else if let name = port?["name"]?.string {
            want = ports.first { $0["name"]?.string == name }
        } else {
            want = ports.count == 1 ? ports.first : ports.first { $0["port"]?.int == 80 }
        }
        guard let sp = want else {
            warnings.append("\(source): service \"\(namespace)/\(service)\" has no port \(port?["number"]?.int.map(String.init) ?? port?["name"]?.string ?? "80")")
            return nil
        }
        // ingress-nginx's name, NAMESPACE-SERVICE-PORT; two Services whose names meet there
        // (`a-b`/`c` and `a`/`b-c`) are told apart by a suffix.
        let owner = "\(namespace)/\(service)/\(sp["port"]?.int ?? 0)"
        var name = "\(namespace)-\(service)-\(sp["port"]?.int ?? 0)"
        while let other = upstreamOwners[name], other != owner { name += "-" }
        if upstreams[name] != nil { return name }
        upstreamOwners[name] = owner
        let portName = sp["name"]?.string ?? ""
        var targets = Set<String>()
        for slice in slices[namespace + "/" + service] ?? [] {
            guard let p = (slice["ports"]?.array ?? []).first(where: { ($0["name"]?.string ?? "") == portName && ($0["protocol"]?.string ?? "TCP") == "TCP" }),
                  let number = p["port"]?.int else { continue }
            let v6 = slice["addressType"]?.string == "IPv6"
            for e in slice["endpoints"]?.array ?? [] where e[path: ["conditions", "ready"]]?.bool ?? true {
                guard let a = e["addresses"]?.array?.first?.string, IPAddress(a) != nil else { continue }
                targets.insert(v6 ? "[\(a)]:\(number)" : "\(a):\(number)")
            }
        }
        guard !targets.isEmpty else { return nil }
        upstreams[name] = targets.sorted()
        return name
    }

    /// The certificate file of a TLS Secret, written once; nil (and a warning) when it is not one.
    mutating func certificate(namespace: String, secret: String, source: String) -> String? {
        if let file = certificates[namespace + "/" + secret] { return file }
        guard let s = secrets[namespace + "/" + secret] else {
            warnings.append("\(source): secret \"\(namespace)/\(secret)\" does not exist")
            return nil
        }
        func decoded(_ k: String) -> String? {
            s[path: ["data", k]]?.string.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
                ?? s[path: ["stringData", k]]?.string
        }
        guard let crt = decoded("tls.crt"), crt.contains("-----BEGIN CERTIFICATE-----"),
              let key = decoded("tls.key"), key.contains("PRIVATE KEY-----") else {
            warnings.append("\(source): secret \"\(namespace)/\(secret)\" holds no PEM certificate and key (tls.crt, tls.key)")
            return nil
        }
        let pem = (crt.hasSuffix("\n") ? crt : crt + "\n") + (key.hasSuffix("\n") ? key : key + "\n")
        // FNV-1a of the contents.
        var hash: UInt64 = 0xcbf29ce484222325
        for b in pem.utf8 { hash = (hash ^ UInt64(b)) &* 0x100000001b3 }
        let file = "ssl/\(namespace)-\(secret)-\(String(hash >> 32, radix: 16)).pem"
        files[file] = pem
        certificates[namespace + "/" + secret] = file
        return file
    }

    mutating func add(_ loc: NginxRenderer.Location, host: String) {
        if let had = servers[host]?.locations[loc.match], !had.implicit {
            warnings.append("\(loc.source): \(host == "_" ? "the default server" : "host \(host)") already serves \(loc.match) for \(had.source)")
            return
        }
        servers[host, default: NginxRenderer.Server(host: host)].locations[loc.match] = loc
    }

    mutating func run() -> RenderedNginx {
        let ours = sources.ingresses
            .filter { NginxRenderer.isOurs($0, classes: sources.ingressClasses, options: options) && $0[path: ["metadata", "deletionTimestamp"]] == nil }
            .sorted { a, b in
                let ta = a[path: ["metadata", "creationTimestamp"]]?.string ?? "", tb = b[path: ["metadata", "creationTimestamp"]]?.string ?? ""
                return ta != tb ? ta < tb : Self.key(a) < Self.key(b)
            }
        servers["_"] = NginxRenderer.Server(host: "_")
        // TLS first: each host's certificate, the oldest Ingress's, whichever Ingress has its
        // rules (a `tls` entry without hosts covers its own Ingress's hosts).
        var hostCertificates: [String: String] = [:]
        for ing in ours {
            let ns = ing[path: ["metadata", "namespace"]]?.string ?? "default", id = Self.key(ing)
            for t in ing[path: ["spec", "tls"]]?.array ?? [] {
                guard let secret = t["secretName"]?.string, let file = certificate(namespace: ns, secret: secret, source: id) else { continue }
                let hosts = t["hosts"]?.array?.compactMap(\.string) ?? (ing[path: ["spec", "rules"]]?.array ?? []).compactMap { $0["host"]?.string }
                for h in hosts where !h.isEmpty && hostCertificates[h] == nil { hostCertificates[h] = file }
            }
        }
        for ing in ours {
            let ns = ing[path: ["metadata", "namespace"]]?.string ?? "default", id = Self.key(ing)
            let redirect = ing[path: ["metadata", "annotations", NginxRenderer.sslRedirectAnnotation]]?.string != "false"
            let rules = ing[path: ["spec", "rules"]]?.array ?? []
            for rule in rules {
                let host = rule["host"]?.string ?? ""
                guard host.isEmpty || NginxRenderer.serverName(host) != nil else {
                    warnings.append("\(id): host \"\(host)\" is not a DNS name; its rule is left out")
                    continue
                }
                let h = host.isEmpty ? "_" : host
                if servers[h] == nil { servers[h] = NginxRenderer.Server(host: h) }
                if let cert = hostCertificates[host] { servers[h]?.certificate = cert }
                for p in rule[path: ["http", "paths"]]?.array ?? [] {
                    let path = p["path"]?.string ?? "/"
                    let type = p["pathType"]?.string ?? "ImplementationSpecific"
                    let source = "\(id): \(type) \(path)"
                    guard NginxRenderer.quoted(path) != nil else {
                        warnings.append("\(source): the path holds characters nginx's configuration cannot; left out")
                        continue
                    }
                    let up: String?
                    if let svc = p[path: ["backend", "service"]], let name = svc["name"]?.string {
                        up = upstream(namespace: ns, service: name, port: svc["port"], source: source)
                    } else {
                        warnings.append("\(source): only Service backends are served; answered 503")
                        up = nil
                    }
                    let tls = redirect
                    switch type {
                    case "Exact":
                        add(.init(match: "= " + NginxRenderer.quoted(path)!, upstream: up, source: source, redirect: tls), host: h)
                    case "Prefix":
                        // By path element; a trailing slash is ignored.
                        var base = path
                        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
                        if base == "/" {
                            add(.init(match: "\"/\"", upstream: up, source: source, redirect: tls), host: h)
                        } else {
                            // The exact form yields quietly to an Exact path of the same name.
                            let exact = "= " + NginxRenderer.quoted(base)!
                            if servers[h]?.locations[exact] == nil {
                                servers[h]?.locations[exact] = .init(match: exact, upstream: up, source: source, redirect: tls, implicit: true)
                            }
                            add(.init(match: NginxRenderer.quoted(base + "/")!, upstream: up, source: source, redirect: tls), host: h)
                        }
                    default:
                        add(.init(match: NginxRenderer.quoted(path)!, upstream: up, source: source, redirect: tls), host: h)
                    }
                }
            }
            if let backend = ing[path: ["spec", "defaultBackend", "service"]], let name = backend["name"]?.string, catchAll == nil {
                catchAll = (upstream(namespace: ns, service: name, port: backend["port"], source: "\(id): defaultBackend"), "\(id): defaultBackend")
            }
        }
        if catchAll == nil, let svc = options.defaultBackendService {
            let parts = svc.split(separator: "/", maxSplits: 1).map(String.init)
            if parts.count == 2 {
                catchAll = (upstream(namespace: parts[0], service: parts[1], port: nil, source: "--default-backend-service"), "--default-backend-service \(svc)")
            }
        }
        var defaultCert: String?
        if let d = options.defaultSSLCertificate {
            let parts = d.split(separator: "/", maxSplits: 1).map(String.init)
            if parts.count == 2 { defaultCert = certificate(namespace: parts[0], secret: parts[1], source: "--default-ssl-certificate") }
        }
        return RenderedNginx(config: text(defaultCert: defaultCert, count: ours.count), files: files, warnings: warnings, ingresses: ours.map(Self.key))
    }

    func listen(_ port: Int) -> String {
        guard let a = options.bindAddress else { return "\(port)" }
        return a.contains(":") ? "[\(a)]:\(port)" : "\(a):\(port)"
    }

    func text(defaultCert: String?, count: Int) -> String {
        let run = options.runDirectory
        var o = """
        # Written by switchyard ingress-controller from \(count) Ingress\(count == 1 ? "" : "es") (controller class \(options.controllerClass)).
        # Rewritten, and nginx reloaded, whenever what it is made of changes: do not edit.
        daemon off;
        worker_processes \(options.workerProcesses);
        pid \(run)/nginx.pid;
        error_log \(run)/error.log notice;

        events {
            worker_connections 16384;
        }

        http {
            default_type application/octet-stream;
            sendfile on;
            tcp_nodelay on;
            keepalive_timeout 75s;
            server_tokens off;
            server_names_hash_max_size 4096;
            server_names_hash_bucket_size 128;
            client_body_temp_path \(run)/client-body;
            proxy_temp_path \(run)/proxy;
            fastcgi_temp_path \(run)/fastcgi;
            uwsgi_temp_path \(run)/uwsgi;
            scgi_temp_path \(run)/scgi;
            access_log \(options.accessLog ? "\(run)/access.log" : "off");
            ssl_protocols TLSv1.2 TLSv1.3;
            ssl_session_cache shared:SSL:10m;

            map $http_upgrade $connection_upgrade {
                default upgrade;
                '' '';
            }
            map $http_host $best_http_host {
                default $http_host;
                '' $host;
            }
            proxy_http_version 1.1;
            proxy_connect_timeout 5s;
            proxy_set_header Host $best_http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $best_http_host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;

        """
        for (name, targets) in upstreams.sorted(by: { $0.key < $1.key }) {
            o += "\n    upstream \(name) {\n"
            for t in targets { o += "        server \(t) max_fails=0;\n" }
            o += "        keepalive 32;\n    }\n"
        }
        let redirectTo = options.httpsPort == 443 ? "https://$host$request_uri" : "https://$host:\(options.httpsPort)$request_uri"
        for server in servers.values.sorted(by: { ($0.host == "_" ? "" : $0.host) < ($1.host == "_" ? "" : $1.host) }) {
            let catchAllServer = server.host == "_"
            o += "\n    server {\n"
            o += "        server_name \(catchAllServer ? "_" : NginxRenderer.serverName(server.host)!);\n"
            o += "        listen \(listen(options.httpPort))\(catchAllServer ? " default_server" : "");\n"
            if catchAllServer {
                o += "        listen \(listen(options.httpsPort)) ssl default_server;\n"
                if let c = defaultCert {
                    o += "        ssl_certificate \(run)/\(c);\n        ssl_certificate_key \(run)/\(c);\n"
                } else {
                    o += "        ssl_reject_handshake on;\n"
                }
            } else if let c = server.certificate {
                o += "        listen \(listen(options.httpsPort)) ssl;\n"
                o += "        ssl_certificate \(run)/\(c);\n        ssl_certificate_key \(run)/\(c);\n"
            }
            var locations = server.locations
            if locations["\"/\""] == nil {
                locations["\"/\""] = .init(match: "\"/\"", upstream: catchAll?.upstream, source: catchAll?.source ?? "no rule matches",
                                           redirect: true)
            }
            // By path, the exact form first.
            func order(_ l: NginxRenderer.Location) -> (String, Int) {
                l.match.hasPrefix("= ") ? (String(l.match.dropFirst(2)), 0) : (l.match, 1)
            }
            for loc in locations.values.sorted(by: { order($0) < order($1) }) {
                o += "\n        # \(loc.source)\n"
                o += "        location \(loc.match) {\n"
                if loc.redirect && server.certificate != nil { o += "            if ($scheme = http) {\n                return 308 \(redirectTo);\n            }\n" }
                if let up = loc.upstream {
                    o += "            proxy_pass http://\(up);\n"
                } else {
                    o += "            return \(loc.source == "no rule matches" ? 404 : 503);\n"
                }
                o += "        }\n"
            }
            o += "    }\n"
        }
        o += "}\n"
        return o
    }
}
