import APISchema
import FieldManager
import Foundation
import KubeAPI
import Testing

/// Server-side apply against upstream's documented cases (the Kubernetes "Server-Side Apply"
/// page and structured-merge-diff's own tests): ownership, list-map merges, atomic lists, sets,
/// conflicts and force, removal of what a manager stops applying, and updates taking fields over.
@Suite("server-side apply")
struct ApplyTests {
    let fm = FieldManager(schemas: .builtin, kind: GroupVersionKind(group: "apps", version: "v1", kind: "Deployment"), hasStatus: true)!
    let now = "2026-12-05T05:00:00Z"

    func json(_ s: String) -> JSONValue { try! JSONValue.parse(Data(s.utf8)) }

    func deployment(replicas: Int? = nil, containers: String = #"[{"name":"nginx","image":"nginx"}]"#, labels: String = #"{"app":"web"}"#,
                    extraSpec: String = "") -> JSONValue {
        json("""
            {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":\(labels)},
             "spec":{\(replicas.map { "\"replicas\":\($0)," } ?? "")\(extraSpec)"selector":{"matchLabels":{"app":"web"}},
                     "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":\(containers)}}}}
            """)
    }

    func entries(_ o: JSONValue) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for e in o[path: ["metadata", "managedFields"]]?.array ?? [] {
            out["\(e["manager"]?.string ?? "")/\(e["operation"]?.string ?? "")"] = e["fieldsV1"]
        }
        return out
    }

    /// The Apply entry is exactly the configuration's fields: leaves, the atomic selector as one
    /// field, each container as a keyed item that is itself a member (`"."`).
    @Test func applyOwnsExactlyWhatItSets() throws {
        let o = try fm.apply(live: nil, config: deployment(replicas: 2), manager: "a", force: false, now: now)
        let expected = json(#"""
            {"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:selector":{},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},
             "f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{}}}}}}}
            """#)
        #expect(entries(o) == ["a/Apply": expected])
        let e = o[path: ["metadata", "managedFields"]]?.array?.first
        #expect(e?["apiVersion"] == "apps/v1" && e?["fieldsType"] == "FieldsV1" && e?["time"] == .string(now))
        #expect(o[path: ["spec", "replicas"]] == 2)
    }

    @Test func aSecondApplierConflictsUntilItForces() throws {
        let a = try fm.apply(live: nil, config: deployment(replicas: 2), manager: "a", force: false, now: now)
        #expect {
            try fm.apply(live: a, config: deployment(replicas: 3), manager: "b", force: false, now: now)
        } throws: { e in
            (e as? ApplyConflicts)?.message == #"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#
                && (e as? ApplyConflicts)?.causes.first?["field"] == ".spec.replicas"
        }
        let b = try fm.apply(live: a, config: deployment(replicas: 3), manager: "b", force: true, now: now)
        #expect(b[path: ["spec", "replicas"]] == 3)
        let owned = entries(b)
        #expect(owned["a/Apply"]?[path: ["f:spec", "f:replicas"]] == nil)
        #expect(owned["b/Apply"]?[path: ["f:spec", "f:replicas"]] == .object([:]))
        // Both still own what they set to the same values.
        #expect(owned["a/Apply"]?[path: ["f:spec", "f:selector"]] != nil && owned["b/Apply"]?[path: ["f:spec", "f:selector"]] != nil)
    }

    @Test func sameValuesAreSharedWithoutConflict() throws {
        let a = try fm.apply(live: nil, config: deployment(replicas: 2), manager: "a", force: false, now: now)
        let b = try fm.apply(live: a, config: deployment(replicas: 2), manager: "b", force: false, now: now)
        #expect(entries(b)["a/Apply"] == entries(b)["b/Apply"])
    }

    @Test func manyConflictsAreListedByManager() throws {
        let a = try fm.apply(live: nil, config: deployment(replicas: 2), manager: "a", force: false, now: now)
        #expect {
            try fm.apply(live: a, config: deployment(replicas: 3, containers: #"[{"name":"nginx","image":"nginx:2"}]"#), manager: "b", force: false, now: now)
        } throws: { e in
            (e as? ApplyConflicts)?.message == """
                Apply failed with 2 conflicts: conflicts with "a":
                - .spec.replicas
                - .spec.template.spec.containers[name="nginx"].image
                """
        }
    }

    /// Keyed lists merge item by item: each manager owns its own container.
    @Test func listMapItemsMerge() throws {
        let a = try fm.apply(live: nil, config: deployment(), manager: "a", force: false, now: now)
        let b = try fm.apply(live: a, config: deployment(containers: #"[{"name":"sidecar","image":"busybox"}]"#), manager: "b", force: false, now: now)
        let names = b[path: ["spec", "template", "spec", "containers"]]?.array?.compactMap { $0["name"]?.string }
        #expect(names == ["nginx", "sidecar"])
        #expect(entries(b)["b/Apply"]?[path: ["f:spec", "f:template", "f:spec", "f:containers"]]?.object?.keys.sorted() == [#"k:{"name":"sidecar"}"#])
        // a drops its container: it goes; b's stays.
        let c = try fm.apply(live: b, config: deployment(containers: "[]"), manager: "a", force: false, now: now)
        #expect(c[path: ["spec", "template", "spec", "containers"]]?.array?.compactMap { $0["name"]?.string } == ["sidecar"])
    }

    /// Atomic lists (a container's args) belong whole to one manager.
    @Test func atomicListsConflictWhole() throws {
        let a = try fm.apply(live: nil, config: deployment(containers: #"[{"name":"nginx","image":"nginx","args":["a"]}]"#), manager: "a", force: false, now: now)
        #expect {
            try fm.apply(live: a, config: deployment(containers: #"[{"name":"nginx","image":"nginx","args":["b"]}]"#), manager: "b", force: false, now: now)
        } throws: { e in
            (e as? ApplyConflicts)?.message == #"Apply failed with 1 conflict: conflict with "a": .spec.template.spec.containers[name="nginx"].args"#
        }
    }

    /// Sets (a list with `merge` and no key: finalizers) are unions.
    @Test func setsAreUnions() throws {
        var config = deployment()
        config[path: ["metadata", "finalizers"]] = ["example.com/a"]
        let a = try fm.apply(live: nil, config: config, manager: "a", force: false, now: now)
        config[path: ["metadata", "finalizers"]] = ["example.com/b"]
        let b = try fm.apply(live: a, config: config, manager: "b", force: false, now: now)
        #expect(b[path: ["metadata", "finalizers"]] == ["example.com/a", "example.com/b"])
        #expect(entries(b)["b/Apply"]?[path: ["f:metadata", "f:finalizers"]] == [#"v:"example.com/b""#: [:]])
    }

    /// What a manager stops applying is removed, unless another manager owns it.
    @Test func droppedFieldsAreRemovedUnlessSomeoneElseOwnsThem() throws {
        let a = try fm.apply(live: nil, config: deployment(labels: #"{"app":"web","tier":"x"}"#), manager: "a", force: false, now: now)
        let dropped = try fm.apply(live: a, config: deployment(), manager: "a", force: false, now: now)
        #expect(dropped[path: ["metadata", "labels"]] == ["app": "web"])
        let shared = try fm.apply(live: a, config: deployment(labels: #"{"app":"web","tier":"x"}"#), manager: "b", force: false, now: now)
        let kept = try fm.apply(live: shared, config: deployment(), manager: "a", force: false, now: now)
        #expect(kept[path: ["metadata", "labels", "tier"]] == "x")
    }

    /// An update (a scale, an edit) takes the fields it changes without a conflict; the applier
    /// then conflicts with that updater, named with its version.
    @Test func updatesTakeFieldsOver() throws {
        let a = try fm.apply(live: nil, config: deployment(replicas: 2), manager: "a", force: false, now: now)
        var scaled = a
        scaled[path: ["spec", "replicas"]] = 5
        fm.update(live: a, new: &scaled, manager: "kubectl-scale", now: now)
        let owned = entries(scaled)
        #expect(owned["kubectl-scale/Update"] == ["f:spec": ["f:replicas": [:]]])
        #expect(owned["a/Apply"]?[path: ["f:spec", "f:replicas"]] == nil)
        #expect {
            try fm.apply(live: scaled, config: deployment(replicas: 2), manager: "a", force: false, now: now)
        } throws: { e in
            (e as? ApplyConflicts)?.message == #"Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas"#
        }
        // An update that changes nothing changes no managed field (nor its time).
        var same = scaled
        fm.update(live: scaled, new: &same, manager: "kubectl-scale", now: "2030-01-01T00:00:00Z")
        #expect(same == scaled)
    }

    /// A create is an update from the zero object: struct fields that are not pointers were
    /// there already (no `"."`), new pointers and list items are members themselves.
    @Test func createOwnsWhatItSetsAsFromAGoZeroObject() {
        var o = deployment(replicas: 1, extraSpec: #""strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%"}},"#)
        fm.update(live: nil, new: &o, manager: "kubectl-create", now: now)
        let f = entries(o)["kubectl-create/Update"]
        #expect(f?[path: ["f:spec", "f:strategy", "."]] == nil)
        #expect(f?[path: ["f:spec", "f:strategy", "f:rollingUpdate", "."]] == .object([:]))
        #expect(f?[path: ["f:spec", "f:selector"]] == .object([:]))
        #expect(f?[path: ["f:spec", "f:template", "f:spec", "f:containers", "."]] == nil)
        #expect(f?[path: ["f:spec", "f:template", "f:spec", "f:containers", #"k:{"name":"nginx"}"#, "."]] == .object([:]))
        #expect(f?[path: ["f:metadata", "f:name"]] == nil, "metadata.name is never owned")
        // An object already stored without managed fields stays untracked by updates.
        var legacy = deployment(replicas: 3)
        fm.update(live: deployment(replicas: 1), new: &legacy, manager: "x", now: now)
        #expect(legacy[path: ["metadata", "managedFields"]] == nil)
    }

    /// An applier meets an object that predates tracking: what is there belongs to "before-first-apply".
    @Test func untrackedObjectsGetABeforeFirstApplyManager() throws {
        let o = try fm.apply(live: deployment(replicas: 1), config: deployment(replicas: 1), manager: "a", force: false, now: now)
        #expect(Set(entries(o).keys) == ["a/Apply", "before-first-apply/Update"])
    }

    @Test func managedFieldsMayNotBeApplied() {
        var config = deployment()
        config[path: ["metadata", "managedFields"]] = []
        #expect(throws: FieldManagerError.self) { try fm.apply(live: nil, config: config, manager: "a", force: false, now: now) }
    }

    /// `kubectl apply --server-side` after client-side apply: kubectl's fields from the
    /// last-applied annotation change hands without a conflict, and the annotation follows.
    @Test func kubectlTakesOverFromClientSideApply() throws {
        var live = deployment(replicas: 2)
        var annotated = live
        annotated[path: ["metadata", "managedFields"]] = nil
        live[path: ["metadata", "annotations", FieldManager.lastApplied]] = .string(annotated.text())
        fm.update(live: nil, new: &live, manager: "kubectl-client-side-apply", now: now)
        #expect {
            try fm.apply(live: live, config: deployment(replicas: 3), manager: "other", force: false, now: now)
        } throws: { e in (e as? ApplyConflicts)?.message.contains(#""kubectl-client-side-apply" using apps/v1"#) == true }
        let o = try fm.apply(live: live, config: deployment(replicas: 3), manager: "kubectl", force: false, now: now)
        #expect(o[path: ["spec", "replicas"]] == 3)
        let last = try JSONValue.parse(Data((o[path: ["metadata", "annotations", FieldManager.lastApplied]]?.string ?? "").utf8))
        #expect(last[path: ["spec", "replicas"]] == 3)
    }

    @Test func fieldsV1RoundTrips() throws {
        let f = json(#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{}}},"f:x":{"v:\"a\"":{},"i:3":{}}}}"#)
        let set = try FieldSet(fieldsV1: f)
        #expect(set.fieldsV1 == f)
        #expect(set.contains([.field("metadata"), .field("labels")]))
        #expect(set.paths.map(\.pathString).contains(#".spec.ports[port=80,protocol="TCP"].port"#))
        #expect(throws: FieldSet.DecodeError.self) { try FieldSet(fieldsV1: ["x:1": [:]]) }
    }
}
