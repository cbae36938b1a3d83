import Foundation
@testable import APIServer
import KubeAPI
import KubeStore
import Testing

/// A handler on an in-memory store with the usual namespaces.
func makeHandler(range: String = "10.96.0.0/24", ports: ClosedRange<Int> = 30000...30010) async throws -> APIHandler {
    let h = APIHandler(store: try SQLiteStore(path: ":memory:"),
                       admission: Admission(allocator: Allocator(serviceRange: CIDR(range)!, nodePorts: ports)))
    for ns in ["default", "other"] {
        let r = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": .string(ns)]])))
        #expect(r.code == 201)
    }
    return h
}

func body(_ j: JSONValue) -> Data { j.serialized() }

func svc(_ name: String, type: String = "ClusterIP", ports: [JSONValue] = [["port": 80]], extra: [String: JSONValue] = [:]) -> JSONValue {
    var spec: [String: JSONValue] = ["type": .string(type), "ports": .array(ports), "selector": ["app": .string(name)]]
    for (k, v) in extra { spec[k] = v }
    return ["apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(name), "labels": ["app": .string(name)]], "spec": .object(spec)]
}

extension APIHandler {
    func post(_ path: String, _ j: JSONValue) async -> APIResponse { await handle(APIRequest(method: "POST", path: path, body: body(j))) }
    func get(_ path: String, _ query: [String: String] = [:], accept: String? = nil) async -> APIResponse {
        await handle(APIRequest(method: "GET", path: path, query: query, accept: accept))
    }
}

@Suite("API handler")
struct HandlerTests {
    @Test func discoveryListsEveryServedResource() async throws {
        let h = try await makeHandler()
        let core = await h.get("/api/v1").json
        let names = Set(core?["resources"]?.array?.compactMap { $0["name"]?.string } ?? [])
        #expect(names.isSuperset(of: ["namespaces", "services", "services/status", "pods", "pods/binding", "pods/eviction", "endpoints", "limitranges", "resourcequotas", "configmaps", "secrets", "nodes", "events", "serviceaccounts"]))
        let apps = await h.get("/apis/apps/v1").json
        #expect(apps?["resources"]?.array?.contains { $0["name"] == "deployments/scale" && $0["group"] == "autoscaling" } == true)
        let groups = await h.get("/apis").json?["groups"]?.array?.compactMap { $0["name"]?.string }
        #expect(Set(groups ?? []) == ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "policy", "scheduling.k8s.io", "apiextensions.k8s.io",
                                       "rbac.authorization.k8s.io", "authorization.k8s.io", "authentication.k8s.io", "admissionregistration.k8s.io",
                                       "certificates.k8s.io", "networking.k8s.io"])
        #expect(await h.get("/api/v2").code == 404)
        #expect(await h.get("/version").json?["gitVersion"]?.string?.hasPrefix("v1.") == true)
    }

    /// `?dryRun=All` (`kubectl --dry-run=server`): the answer is what would be stored, nothing
    /// is written, and no address or port stays taken.
    @Test func dryRunWritesNothingAndHoldsNothing() async throws {
        let h = try await makeHandler(range: "10.96.0.0/29", ports: 30000...30000)
        let path = "/api/v1/namespaces/default/services"
        let dry = await h.handle(APIRequest(method: "POST", path: path, query: ["dryRun": "All"], body: body(svc("a", type: "NodePort"))))
        #expect(dry.code == 201)
        #expect(dry.json?[path: ["spec", "clusterIP"]]?.string == "10.96.0.2")
        #expect(dry.json?[path: ["spec", "ports"]]?.array?.first?["nodePort"]?.int == 30000)
        #expect(await h.get(path + "/a").code == 404)
        // More dry runs than the range has addresses (five): none keeps one.
        for i in 0..<8 {
            #expect(await h.handle(APIRequest(method: "POST", path: path, query: ["dryRun": "All"], body: body(svc("d\(i)")))).code == 201)
        }
        // The only port is still free for a real create, and so are the five addresses.
        let real = await h.post(path, svc("a", type: "NodePort"))
        #expect(real.code == 201 && real.json?[path: ["spec", "ports"]]?.array?.first?["nodePort"]?.int == 30000)
        for i in 0..<4 { #expect(await h.post(path, svc("r\(i)")).code == 201) }
        for i in 0..<4 { #expect(await h.handle(APIRequest(method: "DELETE", path: path + "/r\(i)")).code == 200) }
        #expect(await h.handle(APIRequest(method: "POST", path: path, query: ["dryRun": "All"], body: body(svc("a")))).code == 409)
        // A dry-run patch to ClusterIP answers without the node port but keeps it held and stored.
        let p = await h.handle(APIRequest(method: "PATCH", path: path + "/a", query: ["dryRun": "All"],
                                          contentType: "application/merge-patch+json", body: body(["spec": ["type": "ClusterIP"]])))
        #expect(p.code == 200 && p.json?[path: ["spec", "type"]]?.string == "ClusterIP")
        #expect(await h.get(path + "/a").json?[path: ["spec", "type"]]?.string == "NodePort")
        #expect(await h.post(path, svc("b", type: "NodePort")).code != 201, "the stored Service still holds the only node port")
        // A dry-run delete leaves the object.
        #expect(await h.handle(APIRequest(method: "DELETE", path: path + "/a", query: ["dryRun": "All"])).code == 200)
        #expect(await h.get(path + "/a").code == 200)
        // kubectl puts a deletion's dry run in the DeleteOptions body.
        let opts: JSONValue = ["kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]]
        #expect(await h.handle(APIRequest(method: "DELETE", path: path + "/a", body: body(opts))).code == 200)
        #expect(await h.get(path + "/a").code == 200)
        #expect(await h.handle(APIRequest(method: "POST", path: path, query: ["dryRun": "Some"], body: body(svc("c")))).code == 400)
    }

    @Test func createAllocatesAndDeleteReleasesClusterIPsAndNodePorts() async throws {
        let h = try await makeHandler(range: "10.96.0.0/29", ports: 30000...30001)
        let a = await h.post("/api/v1/namespaces/default/services", svc("a", type: "NodePort"))
        #expect(a.code == 201)
        let ip = a.json?[path: ["spec", "clusterIP"]]?.string
        #expect(ip == "10.96.0.2" && a.json?[path: ["spec", "clusterIPs"]] == ["10.96.0.2"])
        #expect(a.json?[path: ["spec", "ports"]]?.array?.first?["nodePort"]?.int == 30000)
        #expect(a.json?[path: ["spec", "ports"]]?.array?.first?["targetPort"]?.int == 80, "targetPort defaults to port")
        // Asking for a taken address or port is refused with the field.
        let clash = await h.post("/api/v1/namespaces/default/services", svc("b", extra: ["clusterIP": "10.96.0.2"]))
        #expect(clash.code == 422 && clash.json?[path: ["details", "causes"]]?.array?.first?["field"] == "spec.clusterIPs")
        let portClash = await h.post("/api/v1/namespaces/default/services", svc("c", type: "NodePort", ports: [["port": 80, "nodePort": 30000]]))
        #expect(portClash.code == 422)
        // The range holds 10.96.0.2-.6: fill it, see the next refused, free one, get it back.
        var made: [String] = []
        for i in 0..<4 {
            let r = await h.post("/api/v1/namespaces/default/services", svc("f\(i)"))
            #expect(r.code == 201)
            made.append(r.json?[path: ["spec", "clusterIP"]]?.string ?? "")
        }
        #expect(Set(made + [ip!]).count == 5, "never the same address twice")
        #expect(await h.post("/api/v1/namespaces/default/services", svc("full")).code == 500)
        #expect(await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/services/a")).code == 200)
        let again = await h.post("/api/v1/namespaces/default/services", svc("again", type: "NodePort"))
        #expect(again.json?[path: ["spec", "clusterIP"]]?.string == ip, "the freed address is handed out again")
        // A refused create (invalid) allocates nothing.
        let bad = await h.post("/api/v1/namespaces/default/services", svc("bad", ports: [["port": 70000]]))
        #expect(bad.code == 422 && bad.json?["reason"] == "Invalid")
    }

    @Test func updatesNeedTheCurrentResourceVersionAndKeepTheClusterIP() async throws {
        let h = try await makeHandler()
        let created = await h.post("/api/v1/namespaces/default/services", svc("web")).json!
        let rv = created[path: ["metadata", "resourceVersion"]]!.string!
        var changed = created
        changed[path: ["spec", "ports"]] = [["port": 8080]]
        changed[path: ["spec", "clusterIP"]] = nil
        changed[path: ["spec", "clusterIPs"]] = nil
        let put = await h.handle(APIRequest(method: "PUT", path: "/api/v1/namespaces/default/services/web", body: body(changed)))
        #expect(put.code == 200 && put.json?[path: ["spec", "clusterIP"]] == created[path: ["spec", "clusterIP"]])
        #expect(put.json?[path: ["metadata", "uid"]] == created[path: ["metadata", "uid"]])
        // The same update again, from the old resourceVersion: 409 Conflict.
        changed[path: ["metadata", "resourceVersion"]] = .string(rv)
        let stale = await h.handle(APIRequest(method: "PUT", path: "/api/v1/namespaces/default/services/web", body: body(changed)))
        #expect(stale.code == 409 && stale.json?["reason"] == "Conflict")
        // The ClusterIP may not change.
        var moved = put.json!
        moved[path: ["spec", "clusterIP"]] = "10.96.0.99"
        let refused = await h.handle(APIRequest(method: "PUT", path: "/api/v1/namespaces/default/services/web", body: body(moved)))
        #expect(refused.code == 422)
    }

    /// An update that loses a race with another writer keeps no port it took for itself and
    /// gives up none the stored Service still holds.
    @Test func aLostUpdateKeepsTheAllocationsAsStored() async throws {
        let h = try await makeHandler(ports: 30000...30001)
        let path = "/api/v1/namespaces/default/services"
        #expect(await h.post(path, svc("a", type: "NodePort")).code == 201)
        let r = Resources.find(group: "", version: "v1", resource: "services")!
        let t = APIHandler.Target(resource: r, namespace: "default", name: "a", subresource: nil)
        let stale = try await h.store.get(r.key(namespace: "default", name: "a"))!
        // Another writer changes the Service first.
        _ = await h.handle(APIRequest(method: "PATCH", path: path + "/a", contentType: "application/merge-patch+json",
                                      body: body(["metadata": ["labels": ["x": "y"]]])))
        // The stale update turns it into a ClusterIP Service (giving its node port back) and loses.
        var asked = try JSONValue.parse(stale.value)
        asked[path: ["spec", "type"]] = "ClusterIP"
        asked[path: ["spec", "ports"]] = [["port": 80]]
        await #expect(throws: APIError.self) {
            _ = try await h.write(r, t, name: "a", new: asked, current: stale, subresource: nil, tracking: .update("test"))
        }
        // The stored Service still holds 30000: the next NodePort Service gets 30001, and the one after none.
        let b = await h.post(path, svc("b", type: "NodePort"))
        #expect(b.json?[path: ["spec", "ports"]]?.array?.first?["nodePort"] == 30001)
        #expect(await h.post(path, svc("c", type: "NodePort")).code >= 400)
    }

    @Test func patchesOfEachKind() async throws {
        let h = try await makeHandler()
        _ = await h.post("/api/v1/namespaces/default/configmaps", ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "c"], "data": ["a": "1", "b": "2"]])
        func patch(_ type: String, _ j: JSONValue, _ path: String = "/api/v1/namespaces/default/configmaps/c") async -> APIResponse {
            await h.handle(APIRequest(method: "PATCH", path: path, contentType: type, body: body(j)))
        }
        let merge = await patch("application/merge-patch+json", ["data": ["a": nil, "c": "3"]])
        #expect(merge.json?["data"] == ["b": "2", "c": "3"])
        let json = await patch("application/json-patch+json", [["op": "add", "path": "/data/d", "value": "4"], ["op": "remove", "path": "/data/b"]])
        #expect(json.json?["data"] == ["c": "3", "d": "4"])
        let badOp = await patch("application/json-patch+json", [["op": "remove", "path": "/data/zzz"]])
        #expect(badOp.code == 422)
        // Strategic merge: containers merge by name, $patch: delete removes one.
        let dep: JSONValue = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "d"],
                              "spec": ["selector": ["matchLabels": ["app": "d"]],
                                       "template": ["metadata": ["labels": ["app": "d"]],
                                                    "spec": ["containers": [["name": "a", "image": "x:1"], ["name": "b", "image": "y:1"]]]]]]
        #expect(await h.post("/apis/apps/v1/namespaces/default/deployments", dep).code == 201)
        let smp = await patch("application/strategic-merge-patch+json",
                              ["spec": ["template": ["spec": ["containers": [["name": "a", "image": "x:2"], ["name": "b", "$patch": "delete"]],
                                                              "$setElementOrder/containers": [["name": "a"]]]]]],
                              "/apis/apps/v1/namespaces/default/deployments/d")
        // The patched list (b deleted, a's image changed), with upstream's container defaults.
        let containers = smp.json?[path: ["spec", "template", "spec", "containers"]]?.array ?? []
        #expect(containers.map { [$0["name"], $0["image"]] } == [["a", "x:2"]])
        #expect(containers.first?["imagePullPolicy"] == "IfNotPresent" && containers.first?["terminationMessagePolicy"] == "File")
        #expect(smp.json?[path: ["metadata", "generation"]] == 2, "a spec change bumps the generation")
        // An apply without a field manager is refused as upstream refuses it.
        let noManager = await patch("application/apply-patch+yaml", ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "c"]])
        #expect(noManager.code == 422)
        #expect(noManager.json?["message"] == #"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#)
        #expect(await patch("text/plain", [:]).code == 415)
    }

    @Test func scaleSubresource() async throws {
        let h = try await makeHandler()
        let dep: JSONValue = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "d"],
                              "spec": ["selector": ["matchLabels": ["app": "d"]],
                                       "template": ["metadata": ["labels": ["app": "d"]], "spec": ["containers": [["name": "a", "image": "x"]]]]]]
        _ = await h.post("/apis/apps/v1/namespaces/default/deployments", dep)
        let s = await h.get("/apis/apps/v1/namespaces/default/deployments/d/scale").json
        #expect(s?["kind"] == "Scale" && s?[path: ["spec", "replicas"]] == 1 && s?[path: ["status", "selector"]] == "app=d")
        let r = await h.handle(APIRequest(method: "PATCH", path: "/apis/apps/v1/namespaces/default/deployments/d/scale",
                                          contentType: "application/merge-patch+json", body: body(["spec": ["replicas": 3]])))
        #expect(r.json?[path: ["spec", "replicas"]] == 3)
        #expect(await h.get("/apis/apps/v1/namespaces/default/deployments/d").json?[path: ["spec", "replicas"]] == 3)
    }

    @Test func listsWithSelectorsPagesAndTables() async throws {
        let h = try await makeHandler()
        for i in 0..<5 {
            var o = svc("s\(i)")
            o[path: ["metadata", "labels", "tier"]] = .string(i % 2 == 0 ? "front" : "back")
            #expect(await h.post("/api/v1/namespaces/\(i < 4 ? "default" : "other")/services", o).code == 201)
        }
        let front = await h.get("/api/v1/namespaces/default/services", ["labelSelector": "tier=front"]).json
        #expect(front?["items"]?.array?.compactMap { $0[path: ["metadata", "name"]]?.string } == ["s0", "s2"])
        let notIn = await h.get("/api/v1/services", ["labelSelector": "tier notin (front)"]).json
        #expect(notIn?["items"]?.array?.count == 2)
        let byName = await h.get("/api/v1/services", ["fieldSelector": "metadata.namespace=other"]).json
        #expect(byName?["items"]?.array?.count == 1)
        #expect(await h.get("/api/v1/services", ["labelSelector": "a in (b"]).code == 400)
        // Pages of two, all read at one revision.
        var names: [String] = []
        var cont: String?
        repeat {
            var q = ["limit": "2"]
            if let cont { q["continue"] = cont }
            let page = await h.get("/api/v1/services", q).json
            names += page?["items"]?.array?.compactMap { $0[path: ["metadata", "name"]]?.string } ?? []
            cont = page?[path: ["metadata", "continue"]]?.string
        } while cont != nil
        #expect(names == ["s0", "s1", "s2", "s3", "s4"])
        let table = await h.get("/api/v1/namespaces/default/services", accept: "application/json;as=Table;v=v1;g=meta.k8s.io").json
        #expect(table?["kind"] == "Table")
        #expect(table?["columnDefinitions"]?.array?.compactMap { $0["name"]?.string } == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"])
        #expect(table?["rows"]?.array?.first?["cells"]?.array?.prefix(2) == ["s0", "ClusterIP"])
        #expect(table?["rows"]?.array?.first?[path: ["object", "kind"]] == "PartialObjectMetadata")
    }

    @Test func watchStreamsChangesFromAResourceVersion() async throws {
        let h = try await makeHandler()
        let first = await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "a", "labels": ["w": "yes"]]]).json!
        let rv = first[path: ["metadata", "resourceVersion"]]!.string!
        let r = await h.get("/api/v1/namespaces/default/configmaps", ["watch": "1", "resourceVersion": rv, "labelSelector": "w=yes"])
        guard case .stream(let s) = r.body else { Issue.record("not a stream"); return }
        _ = await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "b", "labels": ["w": "yes"]]])
        _ = await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "hidden"]])
        _ = await h.handle(APIRequest(method: "PATCH", path: "/api/v1/namespaces/default/configmaps/a",
                                      contentType: "application/merge-patch+json", body: body(["metadata": ["labels": ["w": "no"]]])))
        _ = await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/configmaps/b"))
        var events: [(String, String)] = []
        for try await line in s {
            let e = try JSONValue.parse(line)
            events.append((e["type"]!.string!, e[path: ["object", "metadata", "name"]]!.string!))
            if events.count == 3 { break }
        }
        // b added; a leaves the selection (DELETED); b deleted. "hidden" never matches.
        #expect(events.map { "\($0.0) \($0.1)" } == ["ADDED b", "DELETED a", "DELETED b"])
        // A compacted revision: an ERROR event with 410 Expired.
        try await h.store.compact(through: try await h.store.currentRevision())
        let old = await h.get("/api/v1/namespaces/default/configmaps", ["watch": "true", "resourceVersion": "1"])
        guard case .stream(let s2) = old.body else { Issue.record("not a stream"); return }
        for try await line in s2 {
            let e = try JSONValue.parse(line)
            #expect(e["type"] == "ERROR" && e[path: ["object", "code"]] == 410 && e[path: ["object", "reason"]] == "Expired")
            break
        }
    }

    @Test func badInputIsA4xxNeverA5xx() async throws {
        let h = try await makeHandler()
        let paths = ["/api/v1/namespaces/default/services", "/api/v1/namespaces/default/configmaps", "/apis/apps/v1/namespaces/default/deployments",
                     "/api/v1/namespaces", "/api/v1/namespaces/default/pods", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"]
        let seeds: [JSONValue] = [svc("web"), ["metadata": ["name": "x"], "data": ["a": "b"]],
                                  ["metadata": ["name": "d"], "spec": ["selector": ["matchLabels": ["a": "b"]], "template": ["metadata": ["labels": ["a": "b"]]]]]]
        var rng = SystemRandomNumberGenerator()
        var fiveHundreds: [String] = []
        for i in 0..<3000 {
            var bytes = Array(seeds[i % seeds.count].serialized())
            // Mutate: flip, drop or duplicate a few bytes, or cut the body short.
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                guard !bytes.isEmpty else { break }
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(bytes[at], at: at)
                default: bytes = Array(bytes.prefix(at))
                }
            }
            let path = paths[i % paths.count]
            let method = ["POST", "PUT", "PATCH"][i % 3]
            let target = method == "POST" ? path : path + "/x"
            let r = await h.handle(APIRequest(method: method, path: target, contentType: method == "PATCH" ? "application/merge-patch+json" : "application/json",
                                              body: Data(bytes)))
            if r.code >= 500 { fiveHundreds.append("\(method) \(target) \(String(decoding: bytes, as: UTF8.self)) -> \(r.json?.text() ?? "")") }
        }
        #expect(fiveHundreds.isEmpty, "\(fiveHundreds.prefix(5))")
        // And the classics.
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/services", body: Data("{".utf8))).code == 400)
        #expect(await h.post("/api/v1/namespaces/default/services", ["kind": "Pod", "metadata": ["name": "p"]]).code == 400)
        #expect(await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "Not_Valid"]]).code == 422)
        // A Service's name is a DNS-1035 label: no leading digit (a ConfigMap's may have one).
        let digit = await h.post("/api/v1/namespaces/default/services", svc("1web"))
        #expect(digit.code == 422 && digit.json?[path: ["details", "causes"]]?.array?.first?["field"] == "metadata.name")
        #expect(await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "1cm"]]).code == 201)
        #expect(await h.post("/api/v1/namespaces/nope/configmaps", ["metadata": ["name": "x"]]).code == 404)
        #expect(await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/configmaps",
                                          body: Data(repeating: 0x20, count: APIHandler.maxBodySize + 1))).code == 413)
        #expect(await h.get("/api/v1/namespaces/default/configmaps", ["watch": "1", "resourceVersion": "abc"]).code == 400)
        #expect(await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/configmaps/none")).code == 404)
    }

    /// The server's part of deleting a namespace (the namespace controller does the rest):
    /// Terminating at once, nothing new in it, a second delete refused while its spec holds a
    /// finalizer, spec.finalizers changed only through /finalize, which lets it go when empty.
    @Test func deletingANamespaceTerminatesItUntilFinalized() async throws {
        let h = try await makeHandler()
        _ = await h.post("/api/v1/namespaces/other/configmaps", ["metadata": ["name": "c"]])
        let d = await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/other"))
        #expect(d.code == 200 && d.json?[path: ["status", "phase"]] == "Terminating" && d.json?[path: ["metadata", "deletionTimestamp"]] != nil)
        let late = await h.post("/api/v1/namespaces/other/configmaps", ["metadata": ["name": "late"]])
        #expect(late.code == 403)
        let again = await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/other"))
        #expect(again.code == 409 && again.json?["message"]?.string?.contains("The system is ensuring all content is removed") == true)
        // A plain update leaves spec.finalizers alone.
        var ns = await h.get("/api/v1/namespaces/other").json ?? [:]
        ns[path: ["spec", "finalizers"]] = []
        #expect(await h.handle(APIRequest(method: "PUT", path: "/api/v1/namespaces/other", body: body(ns))).json?[path: ["spec", "finalizers"]] == ["kubernetes"])
        ns = await h.get("/api/v1/namespaces/other").json ?? [:]
        ns[path: ["spec", "finalizers"]] = []
        let fin = await h.handle(APIRequest(method: "PUT", path: "/api/v1/namespaces/other/finalize", body: body(ns)))
        #expect(fin.code == 200)
        #expect(await h.get("/api/v1/namespaces/other").code == 404)
    }

    /// A controller's write between the server's read and its delete (a Deployment's status
    /// update racing `kubectl delete`) is retried: the delete succeeds. With a resourceVersion
    /// precondition it is the caller's conflict: 409.
    @Test func aWriteRacingADeleteIsRetriedUnlessPreconditioned() async throws {
        let store = RacingStore(try SQLiteStore(path: ":memory:"))
        let h = APIHandler(store: store)
        #expect(await h.post("/api/v1/namespaces", ["metadata": ["name": "default"]]).code == 201)
        #expect(await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "c"]]).code == 201)
        await store.raceNextDelete()
        let d = await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/configmaps/c"))
        #expect(d.code == 200, "\(d.json ?? [:])")
        #expect(await store.raced == 1)
        #expect(await h.get("/api/v1/namespaces/default/configmaps/c").code == 404)

        let made = await h.post("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "p"]])
        let rv = made.json?[path: ["metadata", "resourceVersion"]]?.string ?? ""
        await store.raceNextDelete()
        let p = await h.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/configmaps/p",
                                          body: body(["kind": "DeleteOptions", "apiVersion": "v1", "preconditions": ["resourceVersion": .string(rv)]])))
        #expect(p.code == 409 && p.json?["reason"] == "Conflict", "\(p.json ?? [:])")
        #expect(await h.get("/api/v1/namespaces/default/configmaps/p").code == 200)
    }
}

/// A store whose next delete finds the key rewritten since it was read: it writes the key once
/// more (as a controller would) and then asks for the delete at the revision the caller read.
actor RacingStore: Store {
    let base: SQLiteStore
    var armed = false
    private(set) var raced = 0
    init(_ base: SQLiteStore) { self.base = base }
    func raceNextDelete() { armed = true }

    func currentRevision() async throws -> Int64 { try await base.currentRevision() }
    func get(_ key: String) async throws -> KeyValue? { try await base.get(key) }
    func create(_ key: String, value: Data) async throws -> KeyValue { try await base.create(key, value: value) }
    func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue { try await base.update(key, value: value, expected: expected) }
    func delete(_ key: String, expected: Int64?) async throws -> KeyValue {
        if armed, let cur = try await base.get(key) {
            armed = false
            raced += 1
            try await base.update(key, value: cur.value, expected: cur.modRevision)
        }
        return try await base.delete(key, expected: expected)
    }
    func list(prefix: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage {
        try await base.list(prefix: prefix, after: after, limit: limit, revision: revision)
    }
    func count(prefix: String, after: String?, revision: Int64?) async throws -> Int { try await base.count(prefix: prefix, after: after, revision: revision) }
    func watch(prefix: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        try await base.watch(prefix: prefix, after: revision)
    }
    func compact(through revision: Int64) async throws { try await base.compact(through: revision) }
}

/// The protobuf reader against bytes written by hand after upstream's generated marshallers:
/// envelope, nested messages, maps, IntOrString, Go's zero fields; and what it refuses.
private func varint(_ v: UInt64) -> [UInt8] {
    var v = v, out: [UInt8] = []
    repeat { var b = UInt8(v & 0x7f); v >>= 7; if v != 0 { b |= 0x80 }; out.append(b) } while v != 0
    return out
}
private func field(_ n: Int, _ bytes: [UInt8]) -> [UInt8] { varint(UInt64(n << 3 | 2)) + varint(UInt64(bytes.count)) + bytes }
private func field(_ n: Int, _ s: String) -> [UInt8] { field(n, Array(s.utf8)) }
private func int(_ n: Int, _ v: Int64) -> [UInt8] { varint(UInt64(n << 3)) + varint(UInt64(bitPattern: v)) }
private func envelope(_ apiVersion: String, _ kind: String, _ raw: [UInt8]) -> Data {
    Data([0x6b, 0x38, 0x73, 0x00] + field(1, field(1, apiVersion) + field(2, kind)) + field(2, raw) + field(3, "") + field(4, ""))
}

@Suite struct ProtobufTests {
    @Test func serviceDecodes() throws {
        // ObjectMeta as Go writes it: empty strings, a zero generation, a zero creationTimestamp.
        let meta = field(1, "web") + field(2, "") + field(3, "") + int(7, 0) + field(8, int(1, -62_135_596_800) + int(2, 0))
            + field(11, field(1, "app") + field(2, "web"))
        let port = field(1, "http") + field(2, "TCP") + int(3, 80) + field(4, int(1, 1) + int(2, 0) + field(3, "web")) + int(5, 0)
        let spec = field(1, port) + field(2, field(1, "app") + field(2, "web")) + field(4, "ClusterIP")
        let o = try KubeProtobuf.decode(envelope("v1", "Service", field(1, meta) + field(2, spec) + field(3, [])))
        #expect(o["kind"]?.string == "Service" && o["apiVersion"]?.string == "v1")
        #expect(o[path: ["metadata", "name"]]?.string == "web")
        #expect(o[path: ["metadata", "namespace"]] == nil, "an empty string is left out, as JSON's omitempty leaves it")
        #expect(o[path: ["metadata", "creationTimestamp"]] == nil)
        #expect(o[path: ["metadata", "labels", "app"]]?.string == "web")
        #expect(o[path: ["spec", "ports"]]?.array?.first?["targetPort"]?.string == "web")
        #expect(o[path: ["spec", "ports"]]?.array?.first?["port"]?.int == 80)
        #expect(o[path: ["spec", "selector", "app"]]?.string == "web")
        #expect(o["status"] == JSONValue.object([:]))
    }

    /// Thousands of corrupted bodies: each is refused or read, never a crash or a hang.
    @Test func corruptedBodiesAreRefusedNotFatal() {
        let meta = field(1, "web") + field(11, field(1, "app") + field(2, "web"))
        let good = [UInt8](envelope("v1", "Service", field(1, meta) + field(2, field(1, field(1, "p") + int(3, 80)))))
        var rng = SystemRandomNumberGenerator()
        var refused = 0
        for _ in 0..<3000 {
            var b = good
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 4..<b.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: b[i] = UInt8.random(in: 0...255, using: &rng)
                case 1: b.remove(at: i)
                default: b.insert(UInt8.random(in: 0...255, using: &rng), at: i)
                }
                if b.count <= 5 { break }
            }
            do { _ = try KubeProtobuf.decode(Data(b)) } catch is KubeProtobuf.Failure { refused += 1 } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect(refused > 0)
    }

    @Test func zeroReplicasAreKeptAndUnknownFieldsRefused() throws {
        let spec = int(1, 0) + int(5, 0)   // replicas 0 (a pointer in Go), minReadySeconds 0
        let d = try KubeProtobuf.decode(envelope("apps/v1", "Deployment", field(1, field(1, "d")) + field(2, spec)))
        #expect(d[path: ["spec", "replicas"]]?.int == 0)
        #expect(d[path: ["spec", "minReadySeconds"]] == nil)
        #expect(throws: KubeProtobuf.Failure.self) {
            try KubeProtobuf.decode(envelope("v1", "ConfigMap", field(1, field(1, "c")) + field(99, "x")))
        }
        #expect(throws: KubeProtobuf.Failure.self) { try KubeProtobuf.decode(envelope("batch/v1", "Job", [])) }
        #expect(throws: KubeProtobuf.Failure.self) { try KubeProtobuf.decode(Data("{}".utf8)) }
        // Truncated: a length past the end.
        #expect(throws: KubeProtobuf.Failure.self) {
            try KubeProtobuf.decode(Data([0x6b, 0x38, 0x73, 0x00, 0x0a, 0x40, 0x01]))
        }
    }
}
