import Foundation
@testable import APIServer
import KubeAPI
import Testing

/// Server-side apply through the handler: creation, conflicts answered 409 as kube-apiserver
/// answers them, force, managed fields of ordinary writes, dry runs, the status subresource.
@Suite("server-side apply through the API")
struct ServerSideApplyTests {
    static let path = "/apis/apps/v1/namespaces/default/deployments/web"

    static func config(replicas: Int, image: String = "nginx") -> String {
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: \(replicas)
          selector:
            matchLabels: {app: web}
          template:
            metadata:
              labels: {app: web}
            spec:
              containers:
              - name: nginx
                image: \(image)
        """
    }

    func apply(_ h: APIHandler, _ text: String, manager: String?, force: Bool = false, query: [String: String] = [:], path: String = Self.path) async -> APIResponse {
        var q = query
        if let manager { q["fieldManager"] = manager }
        if force { q["force"] = "true" }
        return await h.handle(APIRequest(method: "PATCH", path: path, query: q, contentType: "application/apply-patch+yaml", body: Data(text.utf8)))
    }

    func managers(_ o: JSONValue?) -> [String] {
        (o?[path: ["metadata", "managedFields"]]?.array ?? []).map { "\($0["manager"]?.string ?? "")/\($0["operation"]?.string ?? "")" }
    }

    @Test func applyCreatesThenConflictsThenForces() async throws {
        let h = try await makeHandler()
        let created = await apply(h, Self.config(replicas: 2), manager: "a")
        #expect(created.code == 201, "\(created.json?.text() ?? "")")
        #expect(managers(created.json) == ["a/Apply"])
        #expect(created.json?[path: ["spec", "strategy", "type"]] == "RollingUpdate", "defaults apply to an applied object")
        // The same configuration again changes nothing.
        let again = await apply(h, Self.config(replicas: 2), manager: "a")
        #expect(again.code == 200 && again.json?[path: ["metadata", "resourceVersion"]] == created.json?[path: ["metadata", "resourceVersion"]])

        let conflict = await apply(h, Self.config(replicas: 3), manager: "b")
        #expect(conflict.code == 409)
        #expect(conflict.json?["reason"] == "Conflict")
        #expect(conflict.json?["message"] == #"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#)
        #expect(conflict.json?[path: ["details", "causes"]] == [["reason": "FieldManagerConflict", "message": #"conflict with "a""#, "field": ".spec.replicas"]])
        #expect(await h.get(Self.path).json?[path: ["spec", "replicas"]] == 2)

        let forced = await apply(h, Self.config(replicas: 3), manager: "b", force: true)
        #expect(forced.code == 200)
        #expect(forced.json?[path: ["spec", "replicas"]] == 3)
        #expect(managers(forced.json) == ["a/Apply", "b/Apply"])
        #expect(forced.json?[path: ["metadata", "generation"]] == 2)
    }

    @Test func ordinaryWritesAreTrackedAsUpdates() async throws {
        let h = try await makeHandler()
        let deploy = try YAMLToJSON.convert(Self.config(replicas: 1))
        let created = await h.handle(APIRequest(method: "POST", path: "/apis/apps/v1/namespaces/default/deployments", body: deploy.serialized(),
                                                userAgent: "kubectl/v1.33.0 (linux/amd64) kubernetes/abc"))
        #expect(created.code == 201)
        #expect(managers(created.json) == ["kubectl/Update"])
        let fields = created.json?[path: ["metadata", "managedFields"]]?.array?.first?["fieldsV1"]
        // Defaults count as the creator's, as upstream decodes (and defaults) before tracking.
        #expect(fields?[path: ["f:spec", "f:progressDeadlineSeconds"]] == .object([:]))
        #expect(fields?[path: ["f:spec", "f:strategy", "f:rollingUpdate", "."]] == .object([:]))
        let scaled = await h.handle(APIRequest(method: "PATCH", path: Self.path, query: ["fieldManager": "kubectl-scale"],
                                               contentType: "application/merge-patch+json", body: Data(#"{"spec":{"replicas":4}}"#.utf8)))
        #expect(managers(scaled.json) == ["kubectl/Update", "kubectl-scale/Update"])
        let conflict = await apply(h, Self.config(replicas: 2), manager: "a")
        #expect(conflict.code == 409)
        let message = conflict.json?["message"]?.string ?? ""
        #expect(message.contains(#"conflict with "kubectl-scale" using apps/v1"#))
        // A status write by another manager is tracked with its subresource.
        let status = await h.handle(APIRequest(method: "PATCH", path: Self.path + "/status", query: ["fieldManager": "controller"],
                                               contentType: "application/merge-patch+json", body: Data(#"{"status":{"replicas":4}}"#.utf8)))
        #expect(status.code == 200)
        let entry = status.json?[path: ["metadata", "managedFields"]]?.array?.first { $0["manager"] == "controller" }
        #expect(entry?["subresource"] == "status" && entry?[path: ["fieldsV1", "f:status", "f:replicas"]] == .object([:]))
    }

    @Test func badAppliesAreRefused() async throws {
        let h = try await makeHandler()
        let wrongVersion = await apply(h, Self.config(replicas: 1).replacingOccurrences(of: "apps/v1", with: "apps/v1beta1"), manager: "a")
        #expect(wrongVersion.code == 400)
        #expect(wrongVersion.json?["message"] == "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1")
        let noKind = await apply(h, "apiVersion: apps/v1\nmetadata: {name: web}\n", manager: "a")
        #expect(noKind.code == 400)
        let otherName = await apply(h, Self.config(replicas: 1).replacingOccurrences(of: "name: web", with: "name: other"), manager: "a")
        #expect(otherName.code == 400)
        let strict = await apply(h, Self.config(replicas: 1) + "\n  replicaz: 3", manager: "a", query: ["fieldValidation": "Strict"])
        #expect(strict.code == 400)
        // Whatever fieldValidation says: a field the schema does not declare cannot be owned.
        let unknown = await apply(h, Self.config(replicas: 1) + "\n  replicaz: 3", manager: "a", query: ["fieldValidation": "Ignore"])
        #expect(unknown.code == 400)
        #expect(unknown.json?["message"] == "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.replicaz: field not declared in schema")
        let managed = await apply(h, Self.config(replicas: 1).replacingOccurrences(of: "  name: web", with: "  name: web\n  managedFields: [{manager: x}]"), manager: "a")
        #expect(managed.code == 400 && managed.json?["message"] == "metadata.managedFields must be nil")
        let forcedPatch = await h.handle(APIRequest(method: "PATCH", path: Self.path, query: ["force": "true"],
                                                    contentType: "application/merge-patch+json", body: Data("{}".utf8)))
        #expect(forcedPatch.code == 422)
        #expect(await h.get(Self.path).code == 404, "nothing was created")
    }

    /// An apply through /status owns what it set there; a configuration listing one container
    /// twice is refused, as structured-merge-diff refuses it.
    @Test func statusAppliesAndDuplicateKeys() async throws {
        let h = try await makeHandler()
        #expect(await apply(h, Self.config(replicas: 1), manager: "a").code == 201)
        let status = await apply(h, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nstatus: {replicas: 1, readyReplicas: 1}\n",
                                 manager: "controller", path: Self.path + "/status")
        #expect(status.code == 200, "\(status.json?.text() ?? "")")
        let entry = status.json?[path: ["metadata", "managedFields"]]?.array?.first { $0["manager"] == "controller" }
        #expect(entry?["operation"] == "Apply" && entry?["subresource"] == "status")
        #expect(entry?[path: ["fieldsV1", "f:status", "f:readyReplicas"]] == .object([:]))
        let conflict = await apply(h, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nstatus: {readyReplicas: 0}\n",
                                   manager: "other", path: Self.path + "/status")
        #expect(conflict.code == 409)
        let twice = Self.config(replicas: 1).replacingOccurrences(of: "      - name: nginx\n        image: nginx",
                                                                  with: "      - name: nginx\n        image: nginx\n      - name: nginx\n        image: other")
        #expect(twice.contains("image: other"))
        let dup = await apply(h, twice, manager: "a")
        #expect(dup.code == 400)
        #expect(dup.json?["message"]?.string?.contains(#".spec.template.spec.containers: duplicate entries for key [name="nginx"]"#) == true, "\(dup.json?.text() ?? "")")
    }

    @Test func dryRunAppliesStoreNothing() async throws {
        let h = try await makeHandler()
        let dry = await apply(h, Self.config(replicas: 2), manager: "a", query: ["dryRun": "All"])
        #expect(dry.code == 201 && dry.json?[path: ["spec", "replicas"]] == 2)
        #expect(await h.get(Self.path).code == 404)
        #expect(await apply(h, Self.config(replicas: 2), manager: "a").code == 201)
        let dryChange = await apply(h, Self.config(replicas: 5), manager: "a", query: ["dryRun": "All"])
        #expect(dryChange.code == 200 && dryChange.json?[path: ["spec", "replicas"]] == 5)
        #expect(await h.get(Self.path).json?[path: ["spec", "replicas"]] == 2)
    }
}
