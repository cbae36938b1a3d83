import APISchema
import Foundation
import KubeAPI
import Testing

@Suite("the built-in schemas, compiled")
struct SchemaSetTests {
    let set = SchemaSet.builtin
    let deployment = GroupVersionKind(group: "apps", version: "v1", kind: "Deployment")

    /// The node of a field path below a kind (properties, map values and list items).
    func node(_ gvk: GroupVersionKind, _ path: [String]) -> SchemaSet.Node? {
        guard var i = set.node(for: gvk) else { return nil }
        for p in path {
            let n = set[i]
            if p == "[]" { guard let items = n.items else { return nil }; i = items; continue }
            guard let next = n.properties[p] ?? n.additional else { return nil }
            i = next
        }
        return set[i]
    }

    @Test func everyServedKindHasASchema() {
        for (g, v, k) in [("", "v1", "Pod"), ("", "v1", "Service"), ("", "v1", "Namespace"), ("", "v1", "Node"), ("", "v1", "Endpoints"),
                          ("", "v1", "Event"), ("", "v1", "ConfigMap"), ("", "v1", "Secret"), ("", "v1", "ServiceAccount"), ("", "v1", "Binding"),
                          ("apps", "v1", "Deployment"), ("apps", "v1", "ReplicaSet"), ("autoscaling", "v1", "Scale"),
                          ("discovery.k8s.io", "v1", "EndpointSlice"), ("batch", "v1", "Job")] {
            #expect(set.node(for: GroupVersionKind(group: g, version: v, kind: k)) != nil, "\(k)")
        }
        #expect(set.kindNames[deployment] == "io.k8s.api.apps.v1.Deployment")
    }

    /// List and map types as structured-merge-diff reads them: declared ones, and those the
    /// strategic-merge-patch extensions imply for the built-in kinds.
    @Test func listAndMapTypes() {
        let pod = GroupVersionKind(group: "", version: "v1", kind: "Pod")
        #expect(node(pod, ["spec", "containers"])?.listType == .map(keys: ["name"]))
        #expect(node(pod, ["spec", "containers", "[]", "ports"])?.listType == .map(keys: ["containerPort", "protocol"]))
        #expect(node(pod, ["spec", "containers", "[]", "args"])?.listType == .atomic)
        #expect(node(pod, ["spec", "tolerations"])?.listType == .atomic)
        #expect(node(pod, ["metadata", "finalizers"])?.listType == .set)
        #expect(node(pod, ["metadata", "labels"])?.shape == .map)
        #expect(node(deployment, ["spec", "selector"])?.atomicMap == true)
        #expect(node(deployment, ["spec", "replicas"])?.type == "integer")
        let svc = GroupVersionKind(group: "", version: "v1", kind: "Service")
        #expect(node(svc, ["spec", "ports"])?.listType == .map(keys: ["port", "protocol"]))
        #expect(node(svc, ["spec", "ports", "[]", "targetPort"])?.shape == .scalar)
        #expect(node(pod, ["metadata", "managedFields", "[]", "fieldsV1"])?.shape == .any)
    }

    @Test func unknownFieldsArePrunedAndNamed() throws {
        var o = try JSONValue.parse(Data("""
            {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"any":"label"},"colour":"red"},
             "spec":{"replicaz":3,"selector":{"matchLabels":{"app":"web"}},
                     "template":{"metadata":{"labels":{"app":"web"}},
                                 "spec":{"containers":[{"name":"a","image":"nginx"},{"name":"b","imagex":"nginx","ports":[{"containerPort":80,"hostPortz":1}]}]}}},
             "status":{}}
            """.utf8))
        let unknown = set.prune(&o, at: set.node(for: deployment)!)
        #expect(Set(unknown) == ["metadata.colour", "spec.replicaz", "spec.template.spec.containers[1].imagex",
                                 "spec.template.spec.containers[1].ports[0].hostPortz"])
        #expect(o[path: ["spec", "replicaz"]] == nil)
        #expect(o[path: ["metadata", "colour"]] == nil)
        #expect(o[path: ["metadata", "labels", "any"]] == "label")
        let containers = o[path: ["spec", "template", "spec", "containers"]]?.array ?? []
        #expect(containers.count == 2 && containers[1]["imagex"] == nil && containers[1]["name"] == "b")
        #expect(containers[1]["ports"]?.array?.first == ["containerPort": 80])
        // Nothing unknown: nothing changes.
        let before = o
        #expect(set.prune(&o, at: set.node(for: deployment)!).isEmpty)
        #expect(o == before)
    }

    @Test func freeFormFieldsKeepEverything() throws {
        var o: JSONValue = ["metadata": ["name": "p", "managedFields": [["manager": "kubectl", "fieldsV1": ["f:spec": ["f:anything": [:]]]]]]]
        #expect(set.prune(&o, at: set.node(for: GroupVersionKind(group: "", version: "v1", kind: "Pod"))!).isEmpty)
        #expect(o[path: ["metadata", "managedFields"]]?.array?.first?["fieldsV1"] == ["f:spec": ["f:anything": [:]]])
    }

    @Test func duplicateKeysAreFound() throws {
        var dups: [String] = []
        let v = try JSONValue.parse(Data(#"{"metadata":{"name":"a","name":"b"},"spec":{"containers":[{"name":"x"},{"image":"i","image":"j"}]}}"#.utf8),
                                    duplicates: &dups)
        #expect(dups == ["metadata.name", "spec.containers[1].image"])
        #expect(v[path: ["metadata", "name"]] == "b")
    }

    @Test func fieldValidationDirectives() {
        #expect(FieldValidation(query: nil) == .warn)
        #expect(FieldValidation(query: "") == .warn)
        #expect(FieldValidation(query: "Strict") == .strict)
        #expect(FieldValidation(query: "Ignore") == .ignore)
        #expect(FieldValidation(query: "strict") == nil)
    }

    @Test func closureFollowsReferences() {
        let c = set.closure(of: ["io.k8s.api.apps.v1.Deployment"])
        #expect(c.contains("io.k8s.api.core.v1.PodSpec"))
        #expect(c.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"))
        #expect(!c.contains("io.k8s.api.core.v1.Service"))
    }
}
