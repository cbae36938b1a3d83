import CRI
import ControllerKit
import Foundation
import KubeAPI

/// What a container needs from outside its spec: environment variables from the pod itself
/// (`fieldRef`), ConfigMaps, Secrets and the namespace's Services, with `$(VAR)` references
/// expanded; the pod's volumes made on the node and mounted where the container asks.
struct Resolver {
    let api: API
    let rootDir: String
    let nodeIP: String

    struct ConfigError: Error, CustomStringConvertible { var description: String }

    func podDir(_ pod: JSONValue) -> String { "\(rootDir)/pods/\(pod.uid)" }

    /// `VAR=value` pairs, as upstream's makeEnvironmentVariables orders them: the Services', then
    /// envFrom's, then env's (a later one replaces an earlier of the same name).
    func environment(_ pod: JSONValue, _ container: JSONValue, podIP: String) async throws -> [(String, String)] {
        var vars: [(String, String)] = []
        func set(_ k: String, _ v: String) {
            if let i = vars.firstIndex(where: { $0.0 == k }) { vars[i].1 = v } else { vars.append((k, v)) }
        }
        for (k, v) in try await serviceVariables(pod) { set(k, v) }
        for from in container["envFrom"]?.array ?? [] {
            let prefix = from["prefix"]?.string ?? ""
            if let ref = from["configMapRef"], let data = try await object("configmaps", pod.namespace, ref)?["data"]?.object {
                for (k, v) in data.sorted(by: { $0.key < $1.key }) { set(prefix + k, v.string ?? "") }
            }
            if let ref = from["secretRef"], let data = try await object("secrets", pod.namespace, ref)?["data"]?.object {
                for (k, v) in data.sorted(by: { $0.key < $1.key }) { set(prefix + k, Self.decode64(v.string ?? "")) }
            }
        }
        for e in container["env"]?.array ?? [] {
            guard let name = e["name"]?.string else { continue }
            if let from = e["valueFrom"] {
                if let v = try await value(from, pod, container, podIP: podIP) { set(name, v) }
            } else {
                set(name, Self.expand(e["value"]?.string ?? "", vars))
            }
        }
        return vars
    }

    func object(_ resource: String, _ namespace: String, _ ref: JSONValue) async throws -> JSONValue? {
        let name = ref["name"]?.string ?? ""
        do {
            return try await api.get(API.path("v1", resource, namespace: namespace, name: name))
        } catch let e as APIStatusError where e.isNotFound {
            if ref["optional"]?.bool == true { return nil }
            throw ConfigError(description: "\(resource == "secrets" ? "secret" : "configmap") \"\(name)\" not found")
        }
    }

    func value(_ from: JSONValue, _ pod: JSONValue, _ container: JSONValue, podIP: String) async throws -> String? {
        if let path = from[path: ["fieldRef", "fieldPath"]]?.string {
            switch path {
            case "metadata.name": return pod.name
            case "metadata.namespace": return pod.namespace
            case "metadata.uid": return pod.uid
            case "spec.nodeName": return pod[path: ["spec", "nodeName"]]?.string ?? ""
            case "spec.serviceAccountName": return pod[path: ["spec", "serviceAccountName"]]?.string ?? "default"
            case "status.podIP": return podIP
            case "status.podIPs": return podIP
            case "status.hostIP", "status.hostIPs": return nodeIP
            default:
                for (prefix, field) in [("metadata.labels['", "labels"), ("metadata.annotations['", "annotations")] where path.hasPrefix(prefix) && path.hasSuffix("']") {
                    let key = String(path.dropFirst(prefix.count).dropLast(2))
                    return pod[path: ["metadata", field, key]]?.string ?? ""
                }
                throw ConfigError(description: "unsupported fieldPath: \(path)")
            }
        }
        if let ref = from["configMapKeyRef"] {
            guard let cm = try await object("configmaps", pod.namespace, ref) else { return nil }
            let key = ref["key"]?.string ?? ""
            guard let v = cm[path: ["data", key]]?.string else {
                if ref["optional"]?.bool == true { return nil }
                throw ConfigError(description: "couldn't find key \(key) in ConfigMap \(pod.namespace)/\(ref["name"]?.string ?? "")")
            }
            return v
        }
        if let ref = from["secretKeyRef"] {
            guard let s = try await object("secrets", pod.namespace, ref) else { return nil }
            let key = ref["key"]?.string ?? ""
            guard let v = s[path: ["data", key]]?.string else {
                if ref["optional"]?.bool == true { return nil }
                throw ConfigError(description: "couldn't find key \(key) in Secret \(pod.namespace)/\(ref["name"]?.string ?? "")")
            }
            return Self.decode64(v)
        }
        if let ref = from["resourceFieldRef"] {
            let resource = ref["resource"]?.string ?? ""
            let parts = resource.split(separator: ".", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ConfigError(description: "unsupported resource: \(resource)") }
            let q = container[path: ["resources", parts[0], parts[1]]]
            let divisor = Quantity.parse(ref["divisor"]) ?? 1
            guard let v = Quantity.parse(q) else { return "0" }
            return String(Int64((v / divisor).rounded(.up)))
        }
        return nil
    }

    static func decode64(_ s: String) -> String {
        Data(base64Encoded: s).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// `$(VAR)` replaced by an earlier variable's value, `$$(VAR)` kept as `$(VAR)`; a reference
    /// to an unknown variable stays as written (upstream's expansion).
    static func expand(_ s: String, _ vars: [(String, String)]) -> String {
        guard s.contains("$") else { return s }
        let chars = Array(s)
        var out = "", i = 0
        while i < chars.count {
            if chars[i] == "$", i + 1 < chars.count {
                if chars[i + 1] == "$" { out.append("$"); i += 2; continue }
                if chars[i + 1] == "(", let close = chars[(i + 2)...].firstIndex(of: ")") {
                    let name = String(chars[(i + 2)..<close])
                    if let v = vars.last(where: { $0.0 == name })?.1 { out += v } else { out += "$(\(name))" }
                    i = close + 1
                    continue
                }
            }
            out.append(chars[i])
            i += 1
        }
        return out
    }

    /// The Services' variables (upstream's FromServices): the namespace's Services when
    /// `enableServiceLinks` (default true) and `kubernetes` of `default` always.
    func serviceVariables(_ pod: JSONValue) async throws -> [(String, String)] {
        var services: [JSONValue] = []
        if pod[path: ["spec", "enableServiceLinks"]]?.bool ?? true {
            services += (try await api.list(API.path("v1", "services", namespace: pod.namespace)))["items"]?.array ?? []
        }
        if pod.namespace != "default", let k = try? await api.get(API.path("v1", "services", namespace: "default", name: "kubernetes")) {
            services.append(k)
        }
        var vars: [(String, String)] = []
        for s in services.sorted(by: { $0.name < $1.name }) {
            guard let ip = s[path: ["spec", "clusterIP"]]?.string, !ip.isEmpty, ip != "None" else { continue }
            let ports = s[path: ["spec", "ports"]]?.array ?? []
            guard let first = ports.first else { continue }
            let name = s.name.uppercased().replacingOccurrences(of: "-", with: "_")
            vars.append(("\(name)_SERVICE_HOST", ip))
            vars.append(("\(name)_SERVICE_PORT", String(first["port"]?.int ?? 0)))
            for p in ports {
                if let pn = p["name"]?.string, !pn.isEmpty {
                    vars.append(("\(name)_SERVICE_PORT_\(pn.uppercased().replacingOccurrences(of: "-", with: "_"))", String(p["port"]?.int ?? 0)))
                }
            }
            let proto = (first["protocol"]?.string ?? "TCP").lowercased()
            vars.append(("\(name)_PORT", "\(proto)://\(ip):\(first["port"]?.int ?? 0)"))
            for p in ports {
                let port = p["port"]?.int ?? 0, pr = p["protocol"]?.string ?? "TCP"
                let prefix = "\(name)_PORT_\(port)_\(pr.uppercased())"
                vars.append((prefix, "\(pr.lowercased())://\(ip):\(port)"))
                vars.append((prefix + "_PROTO", pr.lowercased()))
                vars.append((prefix + "_PORT", String(port)))
                vars.append((prefix + "_ADDR", ip))
            }
        }
        return vars
    }

    /// The pod's volumes on the node (made once; ConfigMaps and Secrets written again each time),
    /// and the container's mounts of them.
    func mounts(_ pod: JSONValue, _ container: JSONValue) async throws -> [Runtime_V1_Mount] {
        let fm = FileManager.default
        var paths: [String: (String, Bool)] = [:]
        for v in pod[path: ["spec", "volumes"]]?.array ?? [] {
            guard let name = v["name"]?.string else { continue }
            if let host = v[path: ["hostPath", "path"]]?.string {
                let type = v[path: ["hostPath", "type"]]?.string ?? ""
                if type == "DirectoryOrCreate" { try fm.createDirectory(atPath: host, withIntermediateDirectories: true) }
                if type == "FileOrCreate" && !fm.fileExists(atPath: host) { _ = fm.createFile(atPath: host, contents: nil) }
                paths[name] = (host, false)
            } else if v["emptyDir"] != nil {
                let dir = "\(podDir(pod))/volumes/kubernetes.io~empty-dir/\(name)"
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                paths[name] = (dir, false)
            } else if let cm = v["configMap"] {
                let dir = "\(podDir(pod))/volumes/kubernetes.io~configmap/\(name)"
                let data = try await object("configmaps", pod.namespace, cm)?["data"]?.object ?? [:]
                try write(data.mapValues { Data(($0.string ?? "").utf8) }, items: cm["items"]?.array, to: dir)
                paths[name] = (dir, true)
            } else if let projected = v["projected"] {
                let dir = "\(podDir(pod))/volumes/kubernetes.io~projected/\(name)"
                try await writeProjected(pod, projected, to: dir)
                paths[name] = (dir, true)
            } else if let secret = v["secret"] {
                let dir = "\(podDir(pod))/volumes/kubernetes.io~secret/\(name)"
                let ref: JSONValue = ["name": secret["secretName"] ?? "", "optional": secret["optional"] ?? false]
                let data = try await object("secrets", pod.namespace, ref)?["data"]?.object ?? [:]
                try write(data.mapValues { Data(base64Encoded: $0.string ?? "") ?? Data() }, items: secret["items"]?.array, to: dir)
                paths[name] = (dir, true)
            }
        }
        return (container["volumeMounts"]?.array ?? []).compactMap { m -> Runtime_V1_Mount? in
            guard let name = m["name"]?.string, let (host, readOnly) = paths[name], let path = m["mountPath"]?.string else { return nil }
            var source = host
            if let sub = m["subPath"]?.string, !sub.isEmpty { source += "/" + sub }
            return .with {
                $0.containerPath = path
                $0.hostPath = source
                $0.readonly = readOnly || m["readOnly"]?.bool == true
            }
        }
    }

    /// A projected volume's sources in one directory: service account tokens (asked for through
    /// TokenRequest, bound to the pod, written again once 80 % of their life has passed),
    /// ConfigMaps, Secrets and the downward API.
    func writeProjected(_ pod: JSONValue, _ projected: JSONValue, to dir: String) async throws {
        for source in projected["sources"]?.array ?? [] {
            if let t = source["serviceAccountToken"] {
                try await writeToken(pod, t, to: dir)
            } else if let cm = source["configMap"] {
                guard let o = try await object("configmaps", pod.namespace, cm) else { continue }
                try write((o["data"]?.object ?? [:]).mapValues { Data(($0.string ?? "").utf8) }, items: cm["items"]?.array, to: dir)
            } else if let secret = source["secret"] {
                guard let o = try await object("secrets", pod.namespace, secret) else { continue }
                try write((o["data"]?.object ?? [:]).mapValues { Data(base64Encoded: $0.string ?? "") ?? Data() }, items: secret["items"]?.array, to: dir)
            } else if let downward = source["downwardAPI"] {
                var data: [String: Data] = [:], items: [JSONValue] = []
                for item in downward["items"]?.array ?? [] {
                    guard let path = item["path"]?.string, let v = try await value(item, pod, [:], podIP: "") else { continue }
                    data[path] = Data(v.utf8)
                    items.append(["key": .string(path), "path": .string(path)])
                }
                try write(data, items: items, to: dir)
            }
        }
    }

    /// The token of a `serviceAccountToken` source, unless the one written is fresh enough.
    func writeToken(_ pod: JSONValue, _ source: JSONValue, to dir: String) async throws {
        let path = source["path"]?.string ?? "token"
        let seconds = source["expirationSeconds"]?.int ?? 3600
        let file = dir + "/" + path
        if let written = try? FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date,
           Date().timeIntervalSince(written) < 0.8 * Double(seconds) { return }
        let account = pod[path: ["spec", "serviceAccountName"]]?.string ?? "default"
        var spec: [String: JSONValue] = ["expirationSeconds": .int(seconds),
                                         "boundObjectRef": ["kind": "Pod", "apiVersion": "v1", "name": .string(pod.name), "uid": .string(pod.uid)]]
        if let audience = source["audience"]?.string, !audience.isEmpty { spec["audiences"] = [.string(audience)] }
        let answer = try await api.create(API.path("v1", "serviceaccounts", namespace: pod.namespace, name: account, subresource: "token"),
                                          ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": .object(spec)])
        guard let token = answer[path: ["status", "token"]]?.string else { throw ConfigError(description: "no token for service account \(pod.namespace)/\(account)") }
        try write([path: Data(token.utf8)], items: nil, to: dir)
    }

    /// Writes again the tokens of the pod's projected volumes that are due (the pod worker asks
    /// at each sync).
    func refreshTokens(_ pod: JSONValue) async throws {
        for v in pod[path: ["spec", "volumes"]]?.array ?? [] {
            guard let name = v["name"]?.string, let sources = v[path: ["projected", "sources"]]?.array else { continue }
            let dir = "\(podDir(pod))/volumes/kubernetes.io~projected/\(name)"
            guard FileManager.default.fileExists(atPath: dir) else { continue }
            for s in sources { if let t = s["serviceAccountToken"] { try await writeToken(pod, t, to: dir) } }
        }
    }

    func write(_ data: [String: Data], items: [JSONValue]?, to dir: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var files: [(String, Data)] = []
        if let items {
            for i in items { if let k = i["key"]?.string, let p = i["path"]?.string, let d = data[k] { files.append((p, d)) } }
        } else {
            files = data.map { ($0.key, $0.value) }
        }
        for (path, d) in files {
            let url = URL(fileURLWithPath: dir).appendingPathComponent(path)
            try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try d.write(to: url, options: .atomic)
        }
    }
}
