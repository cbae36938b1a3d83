import Foundation
@testable import APIServer
import KubeAPI
import KubeStore
import Testing

/// CustomResourceDefinitions through the handler: established, discovered, served in every
/// version, defaulted, validated, pruned, printed, with status and scale, applied, and gone
/// with their definition.
@Suite("custom resources")
struct CustomResourceTests {
    /// Shaped like the published definitions of well-known projects: two served versions (one
    /// stored), status and scale subresources, printer columns, short names and a category.
    static let crd = """
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: crontabs.stable.example.com
        spec:
          group: stable.example.com
          scope: Namespaced
          names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct], categories: [all]}
          versions:
          - name: v1beta1
            served: true
            storage: false
            schema:
              openAPIV3Schema:
                type: object
                properties:
                  spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          - name: v1
            served: true
            storage: true
            subresources:
              status: {}
              scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
            additionalPrinterColumns:
            - {name: Spec, type: string, jsonPath: .spec.cronSpec, description: The cron spec}
            - {name: Replicas, type: integer, jsonPath: .spec.replicas}
            - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
            schema:
              openAPIV3Schema:
                type: object
                description: CronTab runs an image on a schedule.
                properties:
                  spec:
                    type: object
                    required: [cronSpec]
                    properties:
                      cronSpec: {type: string, pattern: '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$', description: When to run.}
                      image: {type: string}
                      replicas: {type: integer, minimum: 1, maximum: 10, default: 1}
                      policy: {type: string, enum: [Allow, Forbid], default: Allow}
                      ports:
                        type: array
                        x-kubernetes-list-type: map
                        x-kubernetes-list-map-keys: [name]
                        items:
                          type: object
                          required: [name]
                          properties: {name: {type: string}, port: {type: integer}}
                  status:
                    type: object
                    properties:
                      replicas: {type: integer}
                      selector: {type: string}
        """

    static let base = "/apis/stable.example.com/v1/namespaces/default/crontabs"

    func yaml(_ s: String) -> Data { try! YAMLToJSON.convert(s).serialized() }

    func install(_ h: APIHandler) async {
        let r = await h.handle(APIRequest(method: "POST", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: yaml(Self.crd)))
        #expect(r.code == 201, "\(r.json?.text() ?? "")")
    }

    func cron(_ name: String, _ spec: String) -> Data {
        yaml("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: \(name)}\nspec: \(spec)\n")
    }

    @Test func aDefinitionIsEstablishedAndDiscovered() async throws {
        let h = try await makeHandler()
        await install(h)
        let crd = await h.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com").json
        let conditions = crd?[path: ["status", "conditions"]]?.array ?? []
        #expect(conditions.contains { $0["type"] == "Established" && $0["status"] == "True" })
        #expect(crd?[path: ["status", "acceptedNames", "kind"]] == "CronTab" && crd?[path: ["status", "storedVersions"]] == ["v1"])
        #expect(crd?[path: ["spec", "names", "listKind"]] == "CronTabList")

        let group = await h.get("/apis/stable.example.com").json
        #expect(group?["versions"]?.array?.compactMap { $0["version"]?.string } == ["v1", "v1beta1"])
        #expect(group?[path: ["preferredVersion", "version"]] == "v1")
        let list = await h.get("/apis/stable.example.com/v1").json?["resources"]?.array ?? []
        #expect(Set(list.compactMap { $0["name"]?.string }) == ["crontabs", "crontabs/status", "crontabs/scale"])
        #expect(list.first { $0["name"] == "crontabs" }?["shortNames"] == ["ct"])
        let beta = await h.get("/apis/stable.example.com/v1beta1").json?["resources"]?.array ?? []
        #expect(beta.compactMap { $0["name"]?.string } == ["crontabs"])
        let index = await h.get("/openapi/v3").json?["paths"]?.object ?? [:]
        #expect(index["apis/stable.example.com/v1"] != nil)
        guard case .bytes(let d, _) = await h.get("/openapi/v3/apis/stable.example.com/v1").body else { Issue.record("no document"); return }
        let doc = try JSONValue.parse(d)
        #expect(doc[path: ["components", "schemas", "com.example.stable.v1.CronTab", "description"]] == "CronTab runs an image on a schedule.")
        #expect(doc[path: ["components", "schemas", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]] != nil)
    }

    @Test func objectsAreDefaultedValidatedAndPruned() async throws {
        let h = try await makeHandler()
        await install(h)
        let made = await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("a", #"{cronSpec: "* * * * */5", image: img, extra: x}"#)))
        #expect(made.code == 201, "\(made.json?.text() ?? "")")
        #expect(made.json?[path: ["spec", "replicas"]] == 1 && made.json?[path: ["spec", "policy"]] == "Allow")
        #expect(made.json?[path: ["spec", "extra"]] == nil && made.warnings == [#"unknown field "spec.extra""#])
        #expect(made.json?["apiVersion"] == "stable.example.com/v1" && made.json?[path: ["metadata", "generation"]] == 1)

        let bad = await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("b", #"{cronSpec: "nope", replicas: 0, policy: Maybe}"#)))
        #expect(bad.code == 422)
        let message = bad.json?["message"]?.string ?? ""
        #expect(message.hasPrefix(#"CronTab.stable.example.com "b" is invalid: ["#), "\(message)")
        #expect(message.contains(#"spec.cronSpec: Invalid value: "nope": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#), "\(message)")
        #expect(message.contains("spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"), "\(message)")
        #expect(message.contains(#"spec.policy: Unsupported value: "Maybe": supported values: "Allow", "Forbid""#), "\(message)")
        let wrongType = await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("c", #"{cronSpec: "* * * * *", replicas: "3"}"#)))
        #expect(wrongType.json?["message"]?.string?.contains(#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#) == true)
        let missing = await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("d", "{image: x}")))
        #expect(missing.json?["message"]?.string?.hasSuffix("spec.cronSpec: Required value") == true)
        let strict = await h.handle(APIRequest(method: "POST", path: Self.base, query: ["fieldValidation": "Strict"],
                                               body: cron("e", #"{cronSpec: "* * * * *", extra: 1}"#)))
        #expect(strict.code == 400)
        #expect(strict.json?["message"] == #"CronTab in version "v1" cannot be handled as a CronTab: strict decoding error: unknown field "spec.extra""#)
    }

    @Test func everyVersionServesTheStoredObjects() async throws {
        let h = try await makeHandler()
        await install(h)
        #expect(await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("a", #"{cronSpec: "* * * * *", replicas: 3}"#))).code == 201)
        let beta = await h.get("/apis/stable.example.com/v1beta1/namespaces/default/crontabs/a").json
        #expect(beta?["apiVersion"] == "stable.example.com/v1beta1" && beta?[path: ["spec", "replicas"]] == 3)
        let all = await h.get("/apis/stable.example.com/v1/crontabs").json
        #expect(all?["items"]?.array?.count == 1 && all?["kind"] == "CronTabList")
        let table = await h.get(Self.base, accept: "application/json;as=Table;v=v1;g=meta.k8s.io").json
        #expect(table?["columnDefinitions"]?.array?.compactMap { $0["name"]?.string } == ["Name", "Spec", "Replicas", "Age"])
        let cells = table?["rows"]?.array?.first?["cells"]?.array ?? []
        #expect(cells.count == 4 && cells[0] == "a" && cells[1] == "* * * * *" && cells[2] == 3)
        #expect(cells[3].string?.hasSuffix("s") == true, "age: \(cells)")
    }

    @Test func statusAndScaleSubresources() async throws {
        let h = try await makeHandler()
        await install(h)
        #expect(await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("a", #"{cronSpec: "* * * * *", replicas: 2}"#))).code == 201)
        let patchMain = await h.handle(APIRequest(method: "PATCH", path: Self.base + "/a", contentType: "application/merge-patch+json",
                                                  body: Data(#"{"status":{"replicas":9},"spec":{"image":"x"}}"#.utf8)))
        #expect(patchMain.json?["status"] == nil, "status changes only through /status")
        #expect(patchMain.json?[path: ["metadata", "generation"]] == 2)
        let status = await h.handle(APIRequest(method: "PATCH", path: Self.base + "/a/status", contentType: "application/merge-patch+json",
                                               body: Data(#"{"status":{"replicas":2,"selector":"app=a"},"spec":{"image":"y"}}"#.utf8)))
        #expect(status.json?[path: ["status", "replicas"]] == 2 && status.json?[path: ["spec", "image"]] == "x")
        #expect(status.json?[path: ["metadata", "generation"]] == 2, "a status change keeps the generation")
        let scale = await h.get(Self.base + "/a/scale").json
        #expect(scale?["kind"] == "Scale" && scale?[path: ["spec", "replicas"]] == 2 && scale?[path: ["status", "selector"]] == "app=a")
        let scaled = await h.handle(APIRequest(method: "PATCH", path: Self.base + "/a/scale", contentType: "application/merge-patch+json",
                                               body: Data(#"{"spec":{"replicas":5}}"#.utf8)))
        #expect(scaled.json?[path: ["spec", "replicas"]] == 5)
        #expect(await h.get(Self.base + "/a").json?[path: ["spec", "replicas"]] == 5)
    }

    @Test func customObjectsAreApplied() async throws {
        let h = try await makeHandler()
        await install(h)
        func apply(_ manager: String, _ spec: String) async -> APIResponse {
            await h.handle(APIRequest(method: "PATCH", path: Self.base + "/a", query: ["fieldManager": manager],
                                      contentType: "application/apply-patch+yaml",
                                      body: Data("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: a}\nspec: \(spec)\n".utf8)))
        }
        #expect(await apply("a", #"{cronSpec: "* * * * *", ports: [{name: http, port: 80}]}"#).code == 201)
        let b = await apply("b", "{ports: [{name: metrics, port: 9090}]}")
        #expect(b.code == 200)
        #expect(b.json?[path: ["spec", "ports"]]?.array?.compactMap { $0["name"]?.string } == ["http", "metrics"])
        let conflict = await apply("b", "{ports: [{name: http, port: 81}]}")
        #expect(conflict.code == 409)
        #expect(conflict.json?["message"] == #"Apply failed with 1 conflict: conflict with "a": .spec.ports[name="http"].port"#)
    }

    @Test func deletingTheDefinitionDeletesItsObjects() async throws {
        let store = try SQLiteStore(path: ":memory:")
        let h = APIHandler(store: store)
        _ = await h.post("/api/v1/namespaces", ["metadata": ["name": "default"]])
        await install(h)
        #expect(await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("a", #"{cronSpec: "* * * * *"}"#))).code == 201)
        // A server started over the same store serves the definition it finds there.
        let restarted = APIHandler(store: store)
        try await restarted.loadCustomResources()
        #expect(await restarted.get(Self.base + "/a").code == 200)

        let gone = await h.handle(APIRequest(method: "DELETE", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com"))
        #expect(gone.code == 200)
        #expect(await h.get(Self.base + "/a").code == 404)
        #expect(await h.get("/apis/stable.example.com/v1").code == 404)
        #expect(try await store.list(prefix: "/registry/stable.example.com/", after: nil, limit: 0, revision: nil).items.isEmpty)
        // Made again, the definition serves no leftovers.
        await install(h)
        #expect(await h.get(Self.base).json?["items"]?.array?.isEmpty == true)
    }

    /// Two servers over one store: what one defines (and deletes), the other serves (and stops serving).
    @Test func definitionsWrittenThroughAnotherServerAreFollowed() async throws {
        let store = try SQLiteStore(path: ":memory:")
        let a = APIHandler(store: store), b = APIHandler(store: store)
        _ = await a.post("/api/v1/namespaces", ["metadata": ["name": "default"]])
        let follower = Task { try await b.followCustomResources() }
        defer { follower.cancel() }
        await install(a)
        var served = false
        for _ in 0..<100 where !served {
            served = await b.get("/apis/stable.example.com/v1").code == 200
            if !served { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(served)
        #expect(await b.handle(APIRequest(method: "POST", path: Self.base, body: cron("x", #"{cronSpec: "* * * * *"}"#))).code == 201)
        #expect(await a.get(Self.base + "/x").json?[path: ["spec", "replicas"]] == 1)
        _ = await a.handle(APIRequest(method: "DELETE", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com"))
        var gone = false
        for _ in 0..<100 where !gone {
            gone = await b.get("/apis/stable.example.com/v1").code == 404
            if !gone { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(gone)
    }

    /// What the review of the first version found: each refused or kept as upstream does.
    @Test func edgesOfCustomObjectsAndDefinitions() async throws {
        let h = try await makeHandler()
        await install(h)
        // A name that is not a DNS subdomain, labels that are not strings.
        let badName = await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("Bad_Name", #"{cronSpec: "* * * * *"}"#)))
        #expect(badName.code == 422)
        #expect(badName.json?["message"]?.string?.contains("metadata.name: Invalid value: \"Bad_Name\"") == true)
        // A null takes the field's default instead of failing its type.
        let nulled = await h.handle(APIRequest(method: "POST", path: Self.base, body: cron("n", #"{cronSpec: "* * * * *", replicas: null}"#)))
        #expect(nulled.code == 201 && nulled.json?[path: ["spec", "replicas"]] == 1)
        // A second definition may not take the kind, nor a protected group without approval.
        var twin = try YAMLToJSON.convert(Self.crd)
        twin[path: ["metadata", "name"]] = "crontabz.stable.example.com"
        twin[path: ["spec", "names", "plural"]] = "crontabz"
        twin[path: ["spec", "names", "singular"]] = "crontabz"
        twin[path: ["spec", "names", "shortNames"]] = ["cz"]
        let t = await h.handle(APIRequest(method: "POST", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: twin.serialized()))
        #expect(t.code == 422 && t.json?["message"]?.string?.contains(#"spec.names.kind: Invalid value: "CronTab": is already in use by "crontabs.stable.example.com""#) == true)
        var builtin = try YAMLToJSON.convert(Self.crd)
        builtin[path: ["metadata", "name"]] = "endpointslices.discovery.k8s.io"
        builtin[path: ["spec", "group"]] = "discovery.k8s.io"
        builtin[path: ["spec", "names", "plural"]] = "endpointslices"
        let b = await h.handle(APIRequest(method: "POST", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: builtin.serialized()))
        #expect(b.code == 422 && b.json?["message"]?.string?.contains("api-approved.kubernetes.io") == true)
        #expect(b.json?["message"]?.string?.contains("is already in use by a built-in resource") == true)
        // A stale precondition leaves the definition and its objects alone.
        let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com"
        let stale = await h.handle(APIRequest(method: "DELETE", path: path, body: Data(#"{"preconditions":{"resourceVersion":"1"}}"#.utf8)))
        #expect(stale.code == 409)
        #expect(await h.get(Self.base + "/n").code == 200)
        // storedVersions are trimmed through /status (after a migration), never below the storage version.
        let trimmed = await h.handle(APIRequest(method: "PATCH", path: path + "/status", contentType: "application/merge-patch+json",
                                                body: Data(#"{"status":{"storedVersions":[]}}"#.utf8)))
        #expect(trimmed.code == 422)
        var two = await h.get(path).json!
        two[path: ["spec", "versions"]] = .array((two[path: ["spec", "versions"]]?.array ?? []).map { v in
            var v = v
            v["storage"] = .bool(v["name"] == "v1beta1")
            return v
        })
        #expect(await h.handle(APIRequest(method: "PUT", path: path, body: two.serialized())).json?[path: ["status", "storedVersions"]] == ["v1", "v1beta1"])
        let migrated = await h.handle(APIRequest(method: "PATCH", path: path + "/status", contentType: "application/merge-patch+json",
                                                 body: Data(#"{"status":{"storedVersions":["v1beta1"]}}"#.utf8)))
        #expect(migrated.code == 200 && migrated.json?[path: ["status", "storedVersions"]] == ["v1beta1"], "\(migrated.json?.text() ?? "")")
    }

    /// Changing a definition again and again does not grow the compiled schemas.
    @Test func redefiningKeepsTheSchemasTheirSize() async throws {
        let h = try await makeHandler()
        await install(h)
        let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com"
        let size = h.registry.schemas.nodes.count
        for i in 0..<5 {
            var crd = await h.get(path).json!
            crd[path: ["spec", "versions"]] = .array((crd[path: ["spec", "versions"]]?.array ?? []).map { v in
                var v = v
                if v["name"] == "v1" { v[path: ["schema", "openAPIV3Schema", "description"]] = .string("revision \(i)") }
                return v
            })
            #expect(await h.handle(APIRequest(method: "PUT", path: path, body: crd.serialized())).code == 200)
        }
        #expect(h.registry.schemas.nodes.count == size)
        guard case .bytes(let d, _) = await h.get("/openapi/v3/apis/stable.example.com/v1").body else { Issue.record("no document"); return }
        #expect(try JSONValue.parse(d)[path: ["components", "schemas", "com.example.stable.v1.CronTab", "description"]] == "revision 4")
    }

    @Test func badDefinitionsAreRefused() async throws {
        let h = try await makeHandler()
        let wrongName = Self.crd.replacingOccurrences(of: "name: crontabs.stable.example.com", with: "name: crontab.stable.example.com")
        let r = await h.handle(APIRequest(method: "POST", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: yaml(wrongName)))
        #expect(r.code == 422)
        #expect(r.json?["message"]?.string?.contains(#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#) == true)
        let twoStored = Self.crd.replacingOccurrences(of: "storage: false", with: "storage: true")
        #expect(await h.handle(APIRequest(method: "POST", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: yaml(twoStored))).code == 422)
        let untyped = Self.crd.replacingOccurrences(of: "image: {type: string}", with: "image: {description: x}")
        let u = await h.handle(APIRequest(method: "POST", path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: yaml(untyped)))
        #expect(u.json?["message"]?.string?.contains("spec.versions[1].schema.openAPIV3Schema.properties[spec].properties[image].type: Required value") == true)
        #expect(await h.get("/apis/stable.example.com/v1").code == 404)
    }

    /// A definition's scope stays, and a version objects were stored in stays listed.
    @Test func definitionsKeepTheirScopeAndStoredVersions() async throws {
        let h = try await makeHandler()
        await install(h)
        let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com"
        let scope = await h.handle(APIRequest(method: "PATCH", path: path, contentType: "application/merge-patch+json",
                                              body: Data(#"{"spec":{"scope":"Cluster"}}"#.utf8)))
        #expect(scope.code == 422)
        #expect(scope.json?["message"]?.string?.hasSuffix(#"spec.scope: Invalid value: "Cluster": field is immutable"#) == true)
        let current = await h.get(path).json!
        var swapped = current
        let betaOnly: [JSONValue] = (current[path: ["spec", "versions"]]?.array ?? []).filter { $0["name"] == "v1beta1" }.map { v in
            var v = v
            v["storage"] = true
            return v
        }
        swapped[path: ["spec", "versions"]] = .array(betaOnly)
        let r = await h.handle(APIRequest(method: "PUT", path: path, body: swapped.serialized()))
        #expect(r.code == 422)
        #expect(r.json?["message"]?.string?.contains(#"status.storedVersions[0]: Invalid value: "v1": must appear in spec.versions"#) == true)
        // A new version that is stored is added to storedVersions.
        var both = current
        both[path: ["spec", "versions"]] = .array((current[path: ["spec", "versions"]]?.array ?? []).map { v in
            var v = v
            v["storage"] = .bool(v["name"] == "v1beta1")
            return v
        })
        let ok = await h.handle(APIRequest(method: "PUT", path: path, body: both.serialized()))
        #expect(ok.code == 200, "\(ok.json?.text() ?? "")")
        #expect(ok.json?[path: ["status", "storedVersions"]] == ["v1", "v1beta1"])
    }
}
