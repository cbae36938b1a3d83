import ControllerKit
import Crypto
import Foundation
import KubeAPI

/// Static pods: pods the kubelet runs from manifest files (`--pod-manifest-path`, `staticPodPath`)
/// rather than from the API, as upstream: each named `<name>-<node>`, in `default` unless it
/// says, bound to this node, its UID the hash of the manifest, the node and the file (so a
/// restarted kubelet finds its containers again, and a changed manifest is a new pod). The API
/// sees each through its mirror pod, which the kubelet creates, keeps and writes the status of.
public enum StaticPods {
    public static let sourceAnnotation = "kubernetes.io/config.source"
    public static let hashAnnotation = "kubernetes.io/config.hash"
    public static let seenAnnotation = "kubernetes.io/config.seen"
    public static let mirrorAnnotation = "kubernetes.io/config.mirror"

    /// Whether an API pod is the mirror of a static pod.
    public static func isMirror(_ pod: JSONValue) -> Bool { pod[path: ["metadata", "annotations", mirrorAnnotation]]?.string != nil }

    /// The static pod a mirror stands for (its hash, which is the static pod's UID).
    public static func staticUID(ofMirror pod: JSONValue) -> String? { pod[path: ["metadata", "annotations", mirrorAnnotation]]?.string }

    /// The static pods of the directory's manifests (files whose names do not start with a dot,
    /// YAML or JSON, one Pod each), and what was wrong with the others.
    public static func read(directory: String, nodeName: String, now: String = Time.now()) -> (pods: [JSONValue], errors: [String]) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else {
            return ([], fm.fileExists(atPath: directory) ? ["\(directory): cannot be read"] : [])
        }
        var pods: [JSONValue] = [], errors: [String] = []
        for name in names.sorted() where !name.hasPrefix(".") {
            let path = directory + "/" + name
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { continue }
            do {
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw KubeletError("cannot be read") }
                pods.append(try pod(from: try YAMLToJSON.convert(text), file: path, nodeName: nodeName, now: now))
            } catch {
                errors.append("\(path): \(error)")
            }
        }
        return (pods, errors)
    }

    /// A manifest's pod as the kubelet runs it.
    public static func pod(from doc: JSONValue, file: String, nodeName: String, now: String = Time.now()) throws -> JSONValue {
        guard doc["kind"]?.string == "Pod", doc["apiVersion"]?.string == "v1" else {
            throw KubeletError("not a v1 Pod (kind \(doc["kind"]?.string ?? "none"), apiVersion \(doc["apiVersion"]?.string ?? "none"))")
        }
        guard let name = doc[path: ["metadata", "name"]]?.string, !name.isEmpty else { throw KubeletError("metadata.name: Required value") }
        guard let containers = doc[path: ["spec", "containers"]]?.array, !containers.isEmpty,
              containers.allSatisfy({ !($0["name"]?.string ?? "").isEmpty && !($0["image"]?.string ?? "").isEmpty }) else {
            throw KubeletError("spec.containers: every container needs a name and an image")
        }
        var pod = doc
        var hasher = Insecure.MD5()
        hasher.update(data: doc.serialized())
        hasher.update(data: Data("host:\(nodeName)".utf8))
        hasher.update(data: Data("file:\(file)".utf8))
        let uid = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let fullName = "\(name)-\(nodeName)"
        pod[path: ["metadata", "name"]] = .string(fullName)
        if (pod[path: ["metadata", "namespace"]]?.string ?? "").isEmpty { pod[path: ["metadata", "namespace"]] = "default" }
        pod[path: ["metadata", "uid"]] = .string(uid)
        var annotations = pod[path: ["metadata", "annotations"]]?.object ?? [:]
        annotations[hashAnnotation] = .string(uid)
        annotations[seenAnnotation] = .string(now)
        annotations[sourceAnnotation] = "file"
        pod[path: ["metadata", "annotations"]] = .object(annotations)
        pod[path: ["spec", "nodeName"]] = .string(nodeName)
        // A static pod tolerates every NoExecute taint: nothing evicts it from its own node.
        var tolerations = pod[path: ["spec", "tolerations"]]?.array ?? []
        let all: JSONValue = ["operator": "Exists", "effect": "NoExecute"]
        if !tolerations.contains(all) { tolerations.append(all) }
        pod[path: ["spec", "tolerations"]] = .array(tolerations)
        if pod[path: ["spec", "restartPolicy"]] == nil { pod[path: ["spec", "restartPolicy"]] = "Always" }
        pod["status"] = ["phase": "Pending"]
        return pod
    }

    /// The mirror pod the API gets for a static pod: the same pod, named and placed the same,
    /// annotated with its hash and owned by the node (so it goes when the Node goes).
    public static func mirror(of pod: JSONValue, node: String, nodeUID: String) -> JSONValue {
        var m = pod
        m["status"] = nil
        m[path: ["metadata", "uid"]] = nil
        m[path: ["metadata", "resourceVersion"]] = nil
        let uid = pod.uid
        var annotations = m[path: ["metadata", "annotations"]]?.object ?? [:]
        annotations[mirrorAnnotation] = .string(uid)
        m[path: ["metadata", "annotations"]] = .object(annotations)
        if !nodeUID.isEmpty {
            m[path: ["metadata", "ownerReferences"]] = [["apiVersion": "v1", "kind": "Node", "name": .string(node), "uid": .string(nodeUID), "controller": true]]
        }
        return m
    }
}
