import Foundation
import ProxyModes
import KubeAPI
import NetnsKit

/// `netlab render`: the lab's Services and EndpointSlices as the API server has them, rendered
/// by `switchyard render` in every mode, before and after a live change (one more echo pod),
/// with the diff between the two.
public struct Rendering: Sendable {
    /// Every registered mode's variants, each with its file and the arguments that render it
    /// (the userspace mode's listeners on a fixed port range, so the two renders compare).
    public static let modes: [(mode: String, file: String, args: [String])] = ProxyModes.all.flatMap { mode in
        mode.variants.map { v in
            (v.name, "\(v.name).\(mode.renderExtension)", v.arguments + (mode.name == "userspace" ? ["--proxy-port-range", "40000-40999"] : []))
        }
    }

    public var outDir: String
    public init(outDir: String) { self.outDir = outDir }

    /// The lab's objects (filler Services from `compare` left out) as a `kind: List` manifest.
    static func manifest(_ lab: Cluster) async throws -> String {
        var items: [JSONValue] = []
        let services = try await lab.must("GET", "/api/v1/services", nil)["items"]?.array ?? []
        var keep = Set<String>()
        for var s in services where s["metadata"]?["labels"]?["netlab-fill"] == nil {
            keep.insert("\(s["metadata"]?["namespace"]?.string ?? "")/\(s["metadata"]?["name"]?.string ?? "")")
            s = Self.with(s, kind: "Service", apiVersion: "v1")
            items.append(s)
        }
        for s in try await lab.must("GET", "/apis/discovery.k8s.io/v1/endpointslices", nil)["items"]?.array ?? [] {
            let owner = "\(s["metadata"]?["namespace"]?.string ?? "")/\(s["metadata"]?["labels"]?[EndpointSlice.serviceNameLabel]?.string ?? "")"
            guard keep.contains(owner) else { continue }
            items.append(Self.with(s, kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1"))
        }
        let list: JSONValue = ["apiVersion": "v1", "kind": "List", "items": .array(items)]
        return list.text() + "\n"
    }

    static func with(_ o: JSONValue, kind: String, apiVersion: String) -> JSONValue {
        guard var obj = o.object else { return o }
        obj["kind"] = .string(kind)
        obj["apiVersion"] = .string(apiVersion)
        return .object(obj)
    }

    /// `iptables.rules` → `DIR/render/iptables-before.rules`.
    func path(_ file: String, _ suffix: String) -> String {
        "\(outDir)/render/\(file.replacingOccurrences(of: ".", with: "\(suffix)."))"
    }

    func renderAll(_ lab: Cluster, manifest: String, suffix: String) throws -> [String] {
        let dir = "\(outDir)/render"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let input = "\(dir)/objects\(suffix).json"
        try manifest.write(toFile: input, atomically: true, encoding: .utf8)
        let node = lab.state.nodes[0]
        var written = [input]
        for (_, file, args) in Self.modes {
            let r = try Sh.run(["\(lab.state.binDir)/switchyard", "render"] + args + [
                "--hostname-override", node.name, "--cluster-cidr", Cluster.clusterCIDR,
                "--nodeport-addresses", "\(node.address)/32", "-f", input,
            ], timeout: 120)
            guard r.status == 0 else { throw NetLabError("switchyard render \(args.joined(separator: " ")): \(r.err)") }
            let out = path(file, suffix)
            try r.out.write(toFile: out, atomically: true, encoding: .utf8)
            written.append(out)
        }
        return written
    }

    /// Renders the current state, adds a pod to the echo Service, renders again, writes the
    /// diffs, and removes the pod. Returns the files written.
    public func run(_ lab: Cluster, progress: @escaping @Sendable (String) -> Void) async throws -> [String] {
        progress("render: the lab's Services and EndpointSlices, every mode")
        var written = try renderAll(lab, manifest: try await Self.manifest(lab), suffix: "-before")
        let node = lab.state.nodes[lab.state.nodes.count - 1]
        let name = "echo-extra"
        progress("render: a change: pod \(name) joins the echo Service on \(node.name)")
        try await lab.addPod(name: name, node: node.name, labels: ["app": "echo"])
        do {
            var after = ""
            for _ in 0..<100 {
                after = try await Self.manifest(lab)
                if let ip = lab.state.pods.first(where: { $0.name == name })?.ip, after.contains("\"\(ip)\"") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            written += try renderAll(lab, manifest: after, suffix: "-after")
        } catch {
            try? await lab.removePod(name)
            throw error
        }
        for (_, file, _) in Self.modes {
            let d = try Sh.run(["diff", "-u", path(file, "-before"), path(file, "-after")])
            let diff = "\(outDir)/render/\(file).diff"
            try d.out.write(toFile: diff, atomically: true, encoding: .utf8)
            written.append(diff)
            let changed = d.out.split(separator: "\n").filter { ($0.hasPrefix("+") || $0.hasPrefix("-")) && !$0.hasPrefix("+++") && !$0.hasPrefix("---") }.count
            progress("render: \(file): \(changed) lines change (\(diff))")
        }
        try await lab.removePod(name)
        return written
    }
}
