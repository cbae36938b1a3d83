import Foundation
@testable import APIServer
import KubeAPI
import Testing

@Suite("OpenAPI documents and aggregated discovery")
struct OpenAPITests {
    func refs(_ v: JSONValue, into out: inout Set<String>) {
        switch v {
        case .object(let o):
            if let r = o["$ref"]?.string { out.insert(r) }
            for x in o.values { refs(x, into: &out) }
        case .array(let a): for x in a { refs(x, into: &out) }
        default: break
        }
    }

    func document(_ r: APIResponse) throws -> JSONValue {
        guard case .bytes(let d, let type) = r.body else { Issue.record("not bytes"); return .null }
        #expect(type == "application/json")
        return try JSONValue.parse(d)
    }

    /// Each group-version's v3 document: the kinds with their GVK, every reference resolvable
    /// inside it, and PATCH operations that take `fieldValidation` (what kubectl looks for
    /// before leaving validation to the server).
    @Test func v3DocumentsAreSelfContained() async throws {
        let h = try await makeHandler()
        let index = await h.get("/openapi/v3").json?["paths"]?.object ?? [:]
        #expect(Set(index.keys) == ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/coordination.k8s.io/v1", "apis/discovery.k8s.io/v1", "apis/events.k8s.io/v1",
                                    "apis/policy/v1", "apis/scheduling.k8s.io/v1", "apis/apiextensions.k8s.io/v1",
                                    "apis/rbac.authorization.k8s.io/v1", "apis/authorization.k8s.io/v1", "apis/authentication.k8s.io/v1",
                                    "apis/authentication.k8s.io/v1beta1", "apis/authentication.k8s.io/v1alpha1", "apis/admissionregistration.k8s.io/v1",
                                    "apis/certificates.k8s.io/v1", "apis/networking.k8s.io/v1"])
        for (gv, entry) in index {
            let url = entry["serverRelativeURL"]?.string ?? ""
            #expect(url.hasPrefix("/openapi/v3/\(gv)?hash="))
            let doc = try document(await h.get("/openapi/v3/\(gv)", accept: "application/json"))
            let schemas = doc[path: ["components", "schemas"]]?.object ?? [:]
            var all = Set<String>()
            refs(doc, into: &all)
            for r in all {
                #expect(r.hasPrefix("#/components/schemas/") && schemas[String(r.dropFirst(21))] != nil, "\(gv): \(r)")
            }
            #expect(!schemas.isEmpty)
        }
        let apps = try document(await h.get("/openapi/v3/apis/apps/v1"))
        #expect(apps[path: ["components", "schemas", "io.k8s.api.apps.v1.Deployment", "x-kubernetes-group-version-kind"]]?.array?.first
                == ["group": "apps", "version": "v1", "kind": "Deployment"])
        let patch = apps[path: ["paths", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "patch"]]
        #expect(patch?["x-kubernetes-group-version-kind"] == ["group": "apps", "version": "v1", "kind": "Deployment"])
        #expect(patch?["parameters"]?.array?.contains { $0["name"] == "fieldValidation" && $0["in"] == "query" } == true)
        let scale = apps[path: ["paths", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "patch", "x-kubernetes-group-version-kind"]]
        #expect(scale == ["group": "autoscaling", "version": "v1", "kind": "Scale"])
        // The core document has no apps kinds; it has Namespace's PATCH (kubectl checks custom resources against it).
        let core = try document(await h.get("/openapi/v3/api/v1"))
        #expect(core[path: ["components", "schemas", "io.k8s.api.apps.v1.Deployment"]] == nil)
        #expect(core[path: ["paths", "/api/v1/namespaces/{name}", "patch", "parameters"]]?.array?.contains { $0["name"] == "fieldValidation" } == true)
        #expect(await h.get("/openapi/v3/apis/storage.k8s.io/v1").code == 404)
        #expect(await h.get("/openapi/v3/api/v1", accept: "application/com.github.proto-openapi.spec.v3@v1.0+protobuf").code == 406)
    }

    @Test func v2DocumentUsesDefinitions() async throws {
        let h = try await makeHandler()
        let doc = try document(await h.get("/openapi/v2", accept: "application/json"))
        let defs = doc["definitions"]?.object ?? [:]
        var all = Set<String>()
        refs(doc, into: &all)
        for r in all { #expect(r.hasPrefix("#/definitions/") && defs[String(r.dropFirst(14))] != nil, "\(r)") }
        #expect(defs["io.k8s.api.core.v1.Service"] != nil && defs["io.k8s.api.apps.v1.ReplicaSet"] != nil)
        // upstream's v3 `allOf` wrapper is a plain reference in v2, quantities and int-or-string are strings.
        let spec = defs["io.k8s.api.apps.v1.Deployment"]?[path: ["properties", "spec"]]
        #expect(spec?["$ref"] == "#/definitions/io.k8s.api.apps.v1.DeploymentSpec" && spec?["allOf"] == nil)
        #expect(defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]?["type"] == "string")
        #expect(defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]?["type"] == "string")
        let protobuf = await h.get("/openapi/v2", accept: "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
        guard case .bytes(let pb, let type) = protobuf.body else { Issue.record("not bytes"); return }
        #expect(type == OpenAPI.protobufType)
        // gnostic's Document: swagger (field 1) "2.0" first; the definitions' names and
        // descriptions inside (kubectl explain --output plaintext-openapiv2 reads them).
        #expect(Array(pb.prefix(5)) == [0x0a, 0x03, 0x32, 0x2e, 0x30])
        let text = String(decoding: pb, as: UTF8.self)
        #expect(text.contains("io.k8s.api.apps.v1.DeploymentStrategy") && text.contains("The deployment strategy to use to replace existing pods with new ones."))
        #expect(pb.count > 100_000)
    }

    @Test func aggregatedDiscovery() async throws {
        let h = try await makeHandler()
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        let apis = await h.get("/apis", accept: accept)
        guard case .bytes(let d, let type) = apis.body else { Issue.record("not bytes"); return }
        #expect(type == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
        let list = try JSONValue.parse(d)
        #expect(list["kind"] == "APIGroupDiscoveryList" && list["apiVersion"] == "apidiscovery.k8s.io/v2")
        let apps = list["items"]?.array?.first { $0[path: ["metadata", "name"]] == "apps" }
        let deploy = apps?["versions"]?.array?.first?["resources"]?.array?.first { $0["resource"] == "deployments" }
        #expect(deploy?["scope"] == "Namespaced" && deploy?["shortNames"] == ["deploy"])
        #expect(deploy?["subresources"]?.array?.contains { $0["subresource"] == "scale" && $0[path: ["responseKind", "kind"]] == "Scale" } == true)
        // kubectl 1.27 asks for v2beta1 only; the core group has no name.
        let core = await h.get("/api", accept: "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
        guard case .bytes(let c, let ctype) = core.body else { Issue.record("not bytes"); return }
        #expect(ctype.contains("v=v2beta1"))
        let items = try JSONValue.parse(c)["items"]?.array ?? []
        #expect(items.count == 1 && items[0][path: ["metadata", "name"]] == nil)
        #expect(items[0]["versions"]?.array?.first?["resources"]?.array?.contains { $0["resource"] == "pods" && $0["scope"] == "Namespaced" } == true)
        // Plain JSON first, or nothing asked: the unaggregated lists.
        #expect(await h.get("/apis", accept: "application/json").json?["kind"] == "APIGroupList")
        #expect(await h.get("/api").json?["kind"] == "APIVersions")
    }
}
