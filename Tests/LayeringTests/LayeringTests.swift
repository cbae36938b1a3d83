import Foundation
import Testing

/// The package's targets as `swift package dump-package` describes them: name, path, the
/// project targets each depends on, and the packages of the products it uses.
struct PackageGraph {
    struct Target {
        var name: String
        var path: String
        var type: String
        var targets: [String]
        var packages: [String]
    }

    let targets: [String: Target]
    let root: URL

    static let shared: PackageGraph = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // A scratch path of its own: the package's .build is locked by the `swift test` running this.
        let scratch = NSTemporaryDirectory() + "switchyard-dump-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        p.arguments = ["swift", "package", "--scratch-path", scratch, "dump-package"]
        p.currentDirectoryURL = root
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try! p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let json = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        var targets: [String: Target] = [:]
        for t in json["targets"] as! [[String: Any]] {
            var names: [String] = [], packages: [String] = []
            for d in t["dependencies"] as! [[String: Any]] {
                if let n = (d["byName"] ?? d["target"]) as? [Any], let name = n.first as? String { names.append(name) }
                if let p = d["product"] as? [Any], p.count > 1, let pkg = p[1] as? String { packages.append(pkg) }
            }
            let name = t["name"] as! String
            let type = t["type"] as! String
            let path = t["path"] as? String ?? (type == "test" ? "Tests/\(name)" : "Sources/\(name)")
            targets[name] = Target(name: name, path: path, type: type, targets: names, packages: packages)
        }
        return PackageGraph(targets: targets, root: root)
    }()

    /// Every project target `name` depends on, directly or not.
    func closure(_ name: String) -> Set<String> {
        var seen = Set<String>(), stack = targets[name]?.targets ?? []
        while let n = stack.popLast() {
            guard seen.insert(n).inserted else { continue }
            stack += targets[n]?.targets ?? []
        }
        return seen
    }

    /// The packages whose products `name` uses, directly or through its project targets.
    func packages(_ name: String) -> Set<String> {
        ([name] + closure(name)).reduce(into: Set<String>()) { $0.formUnion(targets[$1]?.packages ?? []) }
    }

    /// The Swift files under a target's folder that import `module`.
    func importers(of module: String) -> [String] {
        let fm = FileManager.default
        var out: [String] = []
        let sources = root.appendingPathComponent("Sources")
        guard let e = fm.enumerator(at: sources, includingPropertiesForKeys: nil) else { return [] }
        for case let url as URL in e where url.pathExtension == "swift" {
            guard let text = try? String(contentsOf: url, encoding: .utf8) else { continue }
            if text.split(separator: "\n").contains(where: { $0 == "import \(module)" || $0.hasSuffix(" import \(module)") }) {
                out.append(String(url.path.dropFirst(root.path.count + 1)))
            }
        }
        return out
    }
}

/// The dependency rules of docs/design.md's module map, checked on the package itself.
@Suite("the layers: which module may depend on which")
struct LayeringTests {
    let graph = PackageGraph.shared
    static let modes = ["ProxyIPTables", "ProxyNFTables", "ProxyIPVS", "ProxyUserspace"]

    @Test func noModeDependsOnAnotherMode() {
        for mode in Self.modes {
            let others = graph.closure(mode).intersection(Self.modes)
            #expect(others.isEmpty, "\(mode) depends on \(others.sorted())")
        }
    }

    @Test func modesLinkNeitherTheRuntimeNorTheAPIClientNorNIO() {
        for mode in Self.modes {
            let bad = graph.closure(mode).intersection(["ProxyRuntime", "KubeClient", "KubeStore", "APIServer", "NetLab", "NetnsKit"])
            #expect(bad.isEmpty, "\(mode) depends on \(bad.sorted())")
            #expect(!graph.packages(mode).contains("swift-nio"), "\(mode) links swift-nio")
        }
    }

    @Test func theSeamDependsOnTheObjectModelOnly() {
        #expect(graph.targets["ProxySeam"]?.targets == ["KubeAPI"])
        #expect(graph.closure("ProxySeam").isSubset(of: ["KubeAPI", "JSONSyntax"]), "\(graph.closure("ProxySeam").sorted())")
        #expect(graph.packages("ProxySeam").isDisjoint(with: ["swift-nio", "swift-nio-ssl", "hummingbird"]))
    }

    @Test func onlyTheUserspaceModeUsesItsCShim() {
        let dependents = graph.targets.values.filter { $0.type != "test" && $0.targets.contains("CUserspace") }.map(\.name)
        #expect(dependents == ["ProxyUserspace"], "\(dependents)")
        let path = graph.targets["ProxyUserspace"]!.path
        let importers = graph.importers(of: "CUserspace").filter { !$0.hasPrefix(path + "/") }
        #expect(importers.isEmpty, "\(importers)")
    }

    @Test func theStoreReachesEtcdWithoutTheKubernetesClient() {
        #expect(!graph.closure("KubeStore").contains("KubeClient"), "\(graph.closure("KubeStore").sorted())")
        // etcd's client knows etcd's API and its transports, not the store that uses it.
        #expect(graph.closure("EtcdClient").isDisjoint(with: ["KubeStore", "KubeClient", "APIServer"]), "\(graph.closure("EtcdClient").sorted())")
        #expect(graph.closure("KubeStore").contains("EtcdClient"))
    }

    @Test func theSchemasAndTheFieldManagerKnowObjectsOnly() {
        #expect(graph.closure("APISchema").isSubset(of: ["KubeAPI", "JSONSyntax"]), "\(graph.closure("APISchema").sorted())")
        #expect(graph.closure("FieldManager").isSubset(of: ["APISchema", "KubeAPI", "JSONSyntax"]), "\(graph.closure("FieldManager").sorted())")
        #expect(graph.packages("FieldManager").isDisjoint(with: ["swift-nio", "hummingbird", "GRDB.swift"]))
    }

    /// The scheduler and the controllers are clients of the API server: they reach the cluster
    /// through the API (over HTTP, or the handler in memory in tests), never the server's code or
    /// its store; and neither knows the other.
    @Test func theControlPlaneReachesTheClusterThroughTheAPIOnly() {
        for t in ["ControllerKit", "Scheduler", "Controllers", "FakeNodes", "Kubelet"] {
            #expect(graph.closure(t).isDisjoint(with: ["APIServer", "KubeStore", "APISchema", "FieldManager"]), "\(t): \(graph.closure(t).sorted())")
        }
        #expect(!graph.closure("Scheduler").contains("Controllers"))
        #expect(!graph.closure("Controllers").contains("Scheduler"))
        #expect(graph.closure("ControllerKit").isSubset(of: ["KubeAPI", "KubeClient", "HTTPJSON", "JSONSyntax"]), "\(graph.closure("ControllerKit").sorted())")
    }

    /// The node's parts know only what they speak: the CRI module gRPC and its generated
    /// messages (and the PING answerer grpc-go servers need), the image module HTTP and files; the lab's services sit above both, and the
    /// kubelet reaches its runtime through the CRI module only (no lab, no image building).
    @Test func theNodesRuntimeAndImagesStandAlone() {
        #expect(graph.targets["CRI"]?.targets == ["GRPCPings"], "\(graph.targets["CRI"]?.targets ?? [])")
        #expect(graph.closure("GRPCPings").isEmpty, "\(graph.closure("GRPCPings").sorted())")
        #expect(graph.closure("Images").isSubset(of: ["HTTPJSON", "KubeAPI", "JSONSyntax", "HostOS", "CHost"]), "\(graph.closure("Images").sorted())")
        for t in ["CRI", "Images"] {
            #expect(graph.closure(t).isDisjoint(with: ["APIServer", "KubeStore", "KubeClient", "ControllerKit", "NetLab", "LabServices"]), "\(t): \(graph.closure(t).sorted())")
        }
        #expect(graph.closure("Kubelet").isDisjoint(with: ["Images", "LabServices", "NetLab", "NetnsKit", "CNI"]), "\(graph.closure("Kubelet").sorted())")
    }

    /// The API server and the kubelet meet over HTTP only (logs, exec): neither links the other;
    /// the kubelet's API serves the kubelet and nothing of the control plane's code.
    @Test func theAPIServerAndTheKubeletMeetOverHTTPOnly() {
        #expect(graph.closure("APIServer").isDisjoint(with: ["Kubelet", "KubeletServer", "CRI", "ControllerKit"]), "\(graph.closure("APIServer").sorted())")
        #expect(graph.closure("KubeletServer").isDisjoint(with: ["APIServer", "KubeStore", "APISchema", "FieldManager", "LabServices", "NetLab"]),
                "\(graph.closure("KubeletServer").sorted())")
        #expect(graph.targets["UpgradableHTTP"]?.targets == [], "\(graph.targets["UpgradableHTTP"]?.targets ?? [])")
    }

    /// The edge's parts are clients of the API: the nginx renderer reads objects and nothing
    /// else; the ingress controller reaches the cluster through the API only.
    @Test func theEdgeIsAClientOfTheAPI() {
        #expect(graph.closure("IngressNginx").isSubset(of: ["KubeAPI", "JSONSyntax"]), "\(graph.closure("IngressNginx").sorted())")
        #expect(graph.closure("IngressController").isDisjoint(with: ["APIServer", "KubeStore", "NetLab", "LabServices", "Kubelet", "ProxyModes"]),
                "\(graph.closure("IngressController").sorted())")
        // The provider interface knows objects only; the cloud controllers reach the cluster
        // through the API and the cloud through the interface.
        #expect(graph.closure("CloudProvider").isSubset(of: ["KubeAPI", "JSONSyntax"]), "\(graph.closure("CloudProvider").sorted())")
        #expect(graph.closure("CloudControllers").isDisjoint(with: ["APIServer", "KubeStore", "NetLab", "LabServices", "Kubelet", "IngressController"]),
                "\(graph.closure("CloudControllers").sorted())")
        // The netlab provider meets the lab cloud over its HTTP API only; the lab cloud knows
        // no Kubernetes client or controller: it is the cloud, not the cluster.
        #expect(graph.closure("NetlabCloudProvider").isDisjoint(with: ["LabCloud", "NetLab", "NetnsKit", "ControllerKit", "KubeClient"]),
                "\(graph.closure("NetlabCloudProvider").sorted())")
        #expect(graph.closure("LabCloud").isDisjoint(with: ["KubeClient", "ControllerKit", "CloudProvider", "CloudControllers", "NetLab"]),
                "\(graph.closure("LabCloud").sorted())")
    }

    /// The folders show the layers: every target lives in its layer's folder.
    @Test func everyTargetIsInALayerFolder() {
        let layers = ["Sources/Host/", "Sources/Kernel/", "Sources/API/", "Sources/ControlPlane/", "Sources/Proxy/", "Sources/Node/", "Sources/Edge/",
                      "Sources/Lab/", "Sources/Commands/"]
        for t in graph.targets.values where t.type != "test" && t.type != "plugin" {
            #expect(layers.contains { t.path.hasPrefix($0) }, "\(t.name) is at \(t.path)")
        }
    }
}
