import CRI
import Foundation
import KubeAPI
@testable import Kubelet
import Testing

/// Static pods from manifest files, and their mirror pods in the API.
@Suite("static pods", .serialized)
struct StaticPodTests {
    static let manifest = """
    apiVersion: v1
    kind: Pod
    metadata:
      name: static-web
      labels: {app: static}
    spec:
      containers:
      - name: web
        image: switchyard/busybox:latest

    """

    @Test func aManifestBecomesAPodNamedForItsNodeWithAStableHash() throws {
        let doc = try YAMLToJSON.convert(Self.manifest)
        let p = try StaticPods.pod(from: doc, file: "/m/web.yaml", nodeName: "node-a", now: "2026-12-05T00:00:00Z")
        #expect(p.name == "static-web-node-a" && p.namespace == "default")
        #expect(p.uid.count == 32 && p[path: ["metadata", "annotations", StaticPods.hashAnnotation]]?.string == p.uid)
        #expect(p[path: ["metadata", "annotations", StaticPods.sourceAnnotation]] == "file")
        #expect(p[path: ["spec", "nodeName"]] == "node-a")
        #expect(p[path: ["spec", "tolerations"]] == [["operator": "Exists", "effect": "NoExecute"]])
        // The same manifest, node and file: the same pod (a restarted kubelet finds it again).
        #expect(try StaticPods.pod(from: doc, file: "/m/web.yaml", nodeName: "node-a", now: "later").uid == p.uid)
        #expect(try StaticPods.pod(from: doc, file: "/m/web.yaml", nodeName: "node-b").uid != p.uid)
        #expect(try StaticPods.pod(from: doc, file: "/m/other.yaml", nodeName: "node-a").uid != p.uid)
        var changed = doc
        changed[path: ["spec", "containers"]] = [["name": "web", "image": "switchyard/busybox:1"]]
        #expect(try StaticPods.pod(from: changed, file: "/m/web.yaml", nodeName: "node-a").uid != p.uid)

        let m = StaticPods.mirror(of: p, node: "node-a", nodeUID: "n-1")
        #expect(StaticPods.isMirror(m) && StaticPods.staticUID(ofMirror: m) == p.uid)
        #expect(m[path: ["metadata", "uid"]] == nil && m["status"] == nil)
        #expect(m[path: ["metadata", "ownerReferences"]] == [["apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "n-1", "controller": true]])

        #expect(throws: KubeletError.self) { try StaticPods.pod(from: ["apiVersion": "v1", "kind": "Service", "metadata": ["name": "x"]], file: "f", nodeName: "n") }
        #expect(throws: KubeletError.self) { try StaticPods.pod(from: ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": "x"], "spec": ["containers": [["name": "c"]]]], file: "f", nodeName: "n") }
    }

    @Test func theKubeletRunsItKeepsItsMirrorAndFollowsTheFile() async throws {
        let manifests = FileManager.default.temporaryDirectory.appendingPathComponent("sy-manifests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: manifests, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: manifests) }
        try Self.manifest.write(toFile: manifests + "/web.yaml", atomically: true, encoding: .utf8)
        try "not: [a pod".write(toFile: manifests + "/broken.yaml", atomically: true, encoding: .utf8)
        try "ignored".write(toFile: manifests + "/.hidden", atomically: true, encoding: .utf8)
        let h = try await KubeletHarness.start { c in
            c.staticPodPath = manifests
            c.fileCheckFrequency = .milliseconds(200)
        }
        defer { h.cleanUp() }
        func mirror() async throws -> JSONValue? { try? await h.pod("static-web-node-a") }

        // The mirror appears, owned by the node, and carries the status of what runs.
        try await h.eventually("the mirror pod runs") { try await mirror()?[path: ["status", "phase"]] == "Running" }
        let first = try #require(try await mirror())
        let hash = try #require(first[path: ["metadata", "annotations", StaticPods.mirrorAnnotation]]?.string)
        #expect(first[path: ["metadata", "annotations", StaticPods.hashAnnotation]]?.string == hash)
        #expect(first[path: ["metadata", "ownerReferences"]]?.array?.first?["kind"] == "Node")
        let sandboxes = try await h.runtime.listPodSandbox(nil)
        #expect(sandboxes.count == 1 && sandboxes.first?.labels[Specs.podUIDLabel] == hash)

        // Deleted through the API, the mirror comes back; what runs is not touched.
        let created = h.runtime.calls.filter { $0 == "RunPodSandbox" }.count
        _ = try await h.api.delete("/api/v1/namespaces/default/pods/static-web-node-a")
        try await h.eventually("a new mirror") {
            guard let m = try await mirror() else { return false }
            return m.uid != first.uid && !m.isDeleting && m[path: ["status", "phase"]] == "Running"
        }
        #expect(h.runtime.calls.filter { $0 == "RunPodSandbox" }.count == created)

        // A changed manifest is another pod: the old one stops, the new one runs under a new hash.
        try Self.manifest.replacingOccurrences(of: "labels: {app: static}", with: "labels: {app: static, v: \"2\"}")
            .write(toFile: manifests + "/web.yaml", atomically: true, encoding: .utf8)
        try await h.eventually("the changed pod runs") {
            guard let m = try await mirror() else { return false }
            let running = try await h.runtime.listPodSandbox(nil).map { $0.labels[Specs.podUIDLabel] }
            return m[path: ["metadata", "labels", "v"]] == "2" && m[path: ["status", "phase"]] == "Running"
                && running == [m[path: ["metadata", "annotations", StaticPods.mirrorAnnotation]]?.string]
        }

        // The manifest removed: the pod stops and its mirror goes.
        try FileManager.default.removeItem(atPath: manifests + "/web.yaml")
        try await h.eventually("the pod and its mirror are gone") {
            let gone = try await mirror() == nil
            let left = try await h.runtime.listPodSandbox(nil)
            return gone && left.isEmpty
        }
    }
}
