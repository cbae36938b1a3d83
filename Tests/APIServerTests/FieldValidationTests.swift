import Foundation
@testable import APIServer
import KubeAPI
import Testing

/// `?fieldValidation=`, as kube-apiserver answers it.
@Suite("field validation")
struct FieldValidationTests {
    static let configMap = #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","colour":"red"},"data":{"a":"1"},"dataz":{"b":"2"}}"#

    func create(_ h: APIHandler, _ text: String, _ directive: String?) async -> APIResponse {
        await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/configmaps",
                                  query: directive.map { ["fieldValidation": $0] } ?? [:], body: Data(text.utf8)))
    }

    @Test func strictRefusesWithEveryUnknownField() async throws {
        let h = try await makeHandler()
        let r = await create(h, Self.configMap, "Strict")
        #expect(r.code == 400)
        #expect(r.json?["reason"] == "BadRequest")
        #expect(r.json?["message"]?.string == #"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "dataz", unknown field "metadata.colour""#)
        #expect(await h.get("/api/v1/namespaces/default/configmaps/c").code == 404)
    }

    /// Warn (also the default): stored without the unknown fields, one warning per field.
    @Test(arguments: ["Warn", nil])
    func warnDropsAndWarns(_ directive: String?) async throws {
        let h = try await makeHandler()
        let r = await create(h, Self.configMap, directive)
        #expect(r.code == 201)
        #expect(r.warnings == [#"unknown field "dataz""#, #"unknown field "metadata.colour""#])
        let stored = await h.get("/api/v1/namespaces/default/configmaps/c").json
        #expect(stored?["dataz"] == nil && stored?[path: ["metadata", "colour"]] == nil)
        #expect(stored?["data"] == ["a": "1"])
    }

    @Test func ignoreDropsSilently() async throws {
        let h = try await makeHandler()
        let r = await create(h, Self.configMap, "Ignore")
        #expect(r.code == 201 && r.warnings.isEmpty)
        #expect(await h.get("/api/v1/namespaces/default/configmaps/c").json?["dataz"] == nil)
    }

    @Test func duplicateFields() async throws {
        let h = try await makeHandler()
        let dup = #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","name":"d"},"data":{"a":"1"}}"#
        let strict = await create(h, dup, "Strict")
        #expect(strict.code == 400)
        #expect(strict.json?["message"]?.string?.hasSuffix(#"strict decoding error: duplicate field "metadata.name""#) == true)
        let warn = await create(h, dup, "Warn")
        #expect(warn.code == 201 && warn.warnings == [#"duplicate field "metadata.name""#])
        #expect(warn.json?[path: ["metadata", "name"]] == "d")
    }

    @Test func anUnknownDirectiveIsRefused() async throws {
        let h = try await makeHandler()
        let r = await create(h, Self.configMap, "strict")
        #expect(r.code == 400)
        #expect(r.json?["message"]?.string?.contains(#"Unsupported value: "strict""#) == true)
    }

    /// Updates and patches are checked too: the object a patch produces, and a Scale through `/scale`.
    @Test func updatesAndPatches() async throws {
        let h = try await makeHandler()
        #expect(await create(h, #"{"metadata":{"name":"c"},"data":{"a":"1"}}"#, nil).code == 201)
        let path = "/api/v1/namespaces/default/configmaps/c"
        let patch = await h.handle(APIRequest(method: "PATCH", path: path, query: ["fieldValidation": "Strict"],
                                              contentType: "application/merge-patch+json", body: Data(#"{"datax":{"b":"2"}}"#.utf8)))
        #expect(patch.code == 400)
        #expect(patch.json?["message"]?.string?.hasSuffix(#"unknown field "datax""#) == true)
        let warned = await h.handle(APIRequest(method: "PATCH", path: path, contentType: "application/merge-patch+json",
                                               body: Data(#"{"datax":{"b":"2"},"data":{"b":"2"}}"#.utf8)))
        #expect(warned.code == 200 && warned.warnings == [#"unknown field "datax""#])
        #expect(warned.json?["data"] == ["a": "1", "b": "2"])
        var current = await h.get(path).json!
        current["binaryDataz"] = ["x": "eA=="]
        let put = await h.handle(APIRequest(method: "PUT", path: path, query: ["fieldValidation": "Strict"], body: current.serialized()))
        #expect(put.code == 400)

        let deploy: JSONValue = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "d"],
                                 "spec": ["selector": ["matchLabels": ["app": "d"]],
                                          "template": ["metadata": ["labels": ["app": "d"]], "spec": ["containers": [["name": "c", "image": "i"]]]]]]
        #expect(await h.post("/apis/apps/v1/namespaces/default/deployments", deploy).code == 201)
        let scale = await h.handle(APIRequest(method: "PATCH", path: "/apis/apps/v1/namespaces/default/deployments/d/scale",
                                              query: ["fieldValidation": "Strict"], contentType: "application/merge-patch+json",
                                              body: Data(#"{"spec":{"replicas":3,"replicaz":4}}"#.utf8)))
        #expect(scale.code == 400)
        #expect(scale.json?["message"]?.string == #"Scale in version "v1" cannot be handled as a Scale: strict decoding error: unknown field "spec.replicaz""#)
    }
}
