import APIServer
import ControllerKit
import Foundation
import KubeAPI
import Testing

/// networking.k8s.io/v1 Ingress and IngressClass as the API server serves them: validated with
/// upstream's messages, the default class filled in, kubectl's columns.
@Suite("Ingress and IngressClass in the API")
struct IngressAPITests {
    static let ingresses = API.path("networking.k8s.io/v1", "ingresses", namespace: "default")
    static let classes = API.path("networking.k8s.io/v1", "ingressclasses")

    static func ingress(_ name: String, paths: [JSONValue], host: String? = "a.example.com") -> JSONValue {
        var rule: JSONValue = ["http": ["paths": .array(paths)]]
        if let host { rule["host"] = .string(host) }
        return ["apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": .string(name)], "spec": ["rules": [rule]]]
    }

    static func path(_ p: String, _ type: String?, backend: JSONValue = ["service": ["name": "web", "port": ["number": 80]]]) -> JSONValue {
        var o: JSONValue = ["path": .string(p), "backend": backend]
        if let type { o["pathType"] = .string(type) }
        return o
    }

    /// The message of a refused create.
    static func refusal(_ api: API, _ path: String, _ o: JSONValue) async -> String? {
        do {
            _ = try await api.create(path, o)
            return nil
        } catch let e as APIStatusError {
            #expect(e.code == 422, "\(e)")
            return e.message
        } catch {
            return "\(error)"
        }
    }

    @Test func invalidIngressesAreRefusedWithUpstreamsWords() async throws {
        let (_, api) = try await HandlerTransport.make()
        let cases: [(JSONValue, String)] = [
            (Self.ingress("a", paths: [Self.path("/", nil)]),
             "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"),
            (Self.ingress("b", paths: [Self.path("/", "Regex")]),
             "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""),
            (Self.ingress("c", paths: [Self.path("api", "Prefix")]),
             "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path"),
            (Self.ingress("d", paths: [Self.path("/a//b", "Exact")]),
             "spec.rules[0].http.paths[0].path: Invalid value: \"/a//b\": must not contain '//'"),
            (Self.ingress("e", paths: [Self.path("/", "Prefix")], host: "10.0.0.1"),
             "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address"),
            (Self.ingress("f", paths: [Self.path("/", "Prefix", backend: ["service": ["name": "web"]])]),
             "spec.rules[0].http.paths[0].backend.service.port: Required value: port name or number is required"),
            (Self.ingress("g", paths: [Self.path("/", "Prefix", backend: ["service": ["name": "web", "port": ["number": 80]],
                                                                         "resource": ["kind": "Bucket", "name": "b"]])]),
             "spec.rules[0].http.paths[0].backend: Invalid value: \"\": cannot set both resource and service backends"),
            (Self.ingress("h", paths: [Self.path("/", "Prefix", backend: ["service": ["name": "web", "port": ["number": 70000]]])]),
             "spec.rules[0].http.paths[0].backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive"),
            (["apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": "i"], "spec": [:]],
             "spec: Invalid value: {}: either `defaultBackend` or `rules` must be specified"),
        ]
        for (o, want) in cases {
            let got = await Self.refusal(api, Self.ingresses, o)
            #expect(got?.contains(want) == true, "\(o[path: ["metadata", "name"]]?.string ?? ""): \(got ?? "accepted")")
        }
        // A wildcard host and every path type are fine.
        _ = try await api.create(Self.ingresses, Self.ingress("ok", paths: [Self.path("/", "Prefix"), Self.path("/x", "Exact"), Self.path("/y", "ImplementationSpecific")],
                                                              host: "*.example.com"))
    }

    @Test func anIngressWithoutAClassGetsTheNewestDefault() async throws {
        let (_, api) = try await HandlerTransport.make()
        func ingressClass(_ name: String, isDefault: Bool) -> JSONValue {
            ["apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": ["name": .string(name), "annotations": ["ingressclass.kubernetes.io/is-default-class": .string(isDefault ? "true" : "false")]],
             "spec": ["controller": "k8s.io/ingress-nginx"]]
        }
        let none = try await api.create(Self.ingresses, Self.ingress("before", paths: [Self.path("/", "Prefix")]))
        #expect(none[path: ["spec", "ingressClassName"]] == nil, "no default class yet")
        _ = try await api.create(Self.classes, ingressClass("old", isDefault: true))
        _ = try await api.create(Self.classes, ingressClass("plain", isDefault: false))
        try await Task.sleep(for: .milliseconds(1100))   // creation times are in seconds
        _ = try await api.create(Self.classes, ingressClass("new", isDefault: true))
        let got = try await api.create(Self.ingresses, Self.ingress("after", paths: [Self.path("/", "Prefix")]))
        #expect(got[path: ["spec", "ingressClassName"]]?.string == "new")
        var legacy = Self.ingress("legacy", paths: [Self.path("/", "Prefix")])
        legacy[path: ["metadata", "annotations"]] = ["kubernetes.io/ingress.class": "nginx"]
        #expect(try await api.create(Self.ingresses, legacy)[path: ["spec", "ingressClassName"]] == nil, "the annotation names a class")

        // An IngressClass's controller is fixed.
        var c = try await api.get(API.path("networking.k8s.io/v1", "ingressclasses", name: "plain"))
        c[path: ["spec", "controller"]] = "example.com/other"
        do {
            _ = try await api.update(API.path("networking.k8s.io/v1", "ingressclasses", name: "plain"), c)
            Issue.record("the controller changed")
        } catch let e as APIStatusError {
            #expect(e.code == 422 && e.message.contains("spec.controller: Invalid value: \"example.com/other\": field is immutable"), "\(e)")
        }
        let bad = await Self.refusal(api, Self.classes, ["apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": ["name": "x"],
                                                         "spec": ["controller": "no-domain"]])
        #expect(bad?.contains("spec.controller: Invalid value: \"no-domain\": must be a domain-prefixed path (such as \"acme.io/foo\")") == true, "\(bad ?? "")")
    }

    @Test func kubectlsColumns() async throws {
        let (h, api) = try await HandlerTransport.make()
        var o = Self.ingress("web", paths: [Self.path("/", "Prefix")])
        o[path: ["spec", "ingressClassName"]] = "nginx"
        o[path: ["spec", "tls"]] = [["hosts": ["a.example.com"], "secretName": "t"]]
        _ = try await api.create(Self.ingresses, o)
        var status = try await api.get(Self.ingresses + "/web")
        status[path: ["status", "loadBalancer", "ingress"]] = [["ip": "192.0.2.1"]]
        _ = try await api.update(Self.ingresses + "/web/status", status)
        let r = await h.handle(APIRequest(method: "GET", path: Self.ingresses, query: [:], accept: "application/json;as=Table;v=v1;g=meta.k8s.io"))
        let table = try #require(r.json)
        #expect(table["columnDefinitions"]?.array?.compactMap { $0["name"]?.string } == ["Name", "Class", "Hosts", "Address", "Ports", "Age"])
        let cells = table["rows"]?.array?.first?["cells"]?.array ?? []
        #expect(Array(cells.prefix(5)) == ["web", "nginx", "a.example.com", "192.0.2.1", "80, 443"], "\(cells)")
    }
}
