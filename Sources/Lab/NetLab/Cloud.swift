import CHost
import Foundation
import KubeAPI
import NetnsKit

/// The lab cloud (containerd runtime): `switchyard-netlab cloud` in the router's namespace
/// serves the provider API (instances = the nodes, routes on the router, nftables balancers),
/// and `switchyard cloud-controller-manager --cloud-provider netlab` in the control plane's
/// drives it: it initialises the nodes (registered with the uninitialized taint), routes each
/// node's pod range through the router, and gives LoadBalancer Services an address of the pool.
extension Cluster {
    public static let uninitializedTaint: JSONValue = ["key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"]
    var cloudDir: String { "\(dir)/cloud" }

    /// What the cloud knows of its machines: the nodes, in two zones.
    func cloudConfiguration() -> JSONValue {
        ["lab": .string(state.name), "pool": .string(LabCloudNet.pool),
         "instances": .array(state.nodes.enumerated().map { i, n in
             ["name": .string(n.name), "netns": .string(n.netns), "address": .string(n.address),
              "zone": .string(i % 2 == 0 ? "netlab-a" : "netlab-b"), "region": "netlab", "instanceType": "netlab.standard"]
         })]
    }

    func startCloud(timeout: Double = 30) async throws {
        guard let router = state.router else { return }
        try FileManager.default.createDirectory(atPath: cloudDir, withIntermediateDirectories: true)
        try cloudConfiguration().serialized().write(to: URL(fileURLWithPath: "\(cloudDir)/config.json"))
        try (["endpoint": .string(LabCloudNet.endpoint)] as JSONValue).serialized().write(to: URL(fileURLWithPath: "\(cloudDir)/provider.json"))
        try spawn(router, ["\(state.binDir)/switchyard-netlab", "cloud", "--dir", cloudDir, "--listen", "\(LabCloudNet.routerAddress):\(LabCloudNet.apiPort)"], log: "cloud")
        let deadline = Date().addingTimeInterval(timeout)
        while cloudGet("/v1/instances") == nil {
            guard Date() < deadline else { throw NetLabError("the lab cloud did not start; see \(dir)/logs/cloud.log") }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await startAPIBalancer()
        // The cloud controller manager's rights, as a provider's manifests grant them.
        try await grant("system:cloud-controller-manager", role: "system:cloud-controller-manager", rules: [["apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "update"]],
                      ["apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]],
                      ["apiGroups": [""], "resources": ["nodes"], "verbs": ["*"]],
                      ["apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch", "update"]],
                      ["apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "patch", "update"]],
                      ["apiGroups": [""], "resources": ["services/status"], "verbs": ["patch", "update"]],
                      ["apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]]])
        let kubeconfig = try componentKubeconfig("cloud-controller-manager", commonName: "system:cloud-controller-manager")
        try spawn(state.controlPlane, ["\(state.binDir)/switchyard", "cloud-controller-manager", "--cloud-provider", "netlab",
                                       "--cloud-config", "\(cloudDir)/provider.json", "--kubeconfig", kubeconfig, "--leader-elect=false",
                                       "--node-monitor-period", "2s", "--route-reconciliation-period", "5s"], log: "cloud-controller-manager", keep: true)
        progress("cloud: its API on \(LabCloudNet.endpoint) in \(router); switchyard cloud-controller-manager --cloud-provider netlab in \(state.controlPlane)")
    }

    /// A ClusterRole of `rules` and its binding to `user` (kept if they exist), as a component's
    /// manifests grant its rights.
    func grant(_ user: String, role: String, rules: JSONValue) async throws {
        try await must("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": ["name": .string(role)], "rules": rules,
        ], okIf: [409])
        try await must("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": ["name": .string(role)],
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(role)],
            "subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": .string(user)]],
        ], okIf: [409])
    }

    /// A GET of the cloud's API from the control plane's namespace; nil when it does not answer 200.
    public func cloudGet(_ path: String) -> JSONValue? {
        guard state.router != nil else { return nil }
        let ns = state.controlPlane
        guard let fd = try? inNamespace(ns, { () throws -> Int32 in
            guard let fd = TCP.connect(LabCloudNet.routerAddress, LabCloudNet.apiPort, timeout: 2) else { throw NetLabError("no cloud") }
            return fd
        }) else { return nil }
        defer { close(fd) }
        guard TCP.send(fd, Array("GET \(path) HTTP/1.0\r\nHost: cloud\r\n\r\n".utf8)) else { return nil }
        let answer = TCP.receiveAll(fd)
        guard let text = String(bytes: answer, encoding: .utf8), text.hasPrefix("HTTP/1.1 200") || text.hasPrefix("HTTP/1.0 200"),
              let split = text.range(of: "\r\n\r\n") else { return nil }
        return try? JSONValue.parse(Data(text[split.upperBound...].utf8))
    }

    /// `netlab status`'s lines about the cloud: its balancers (targets and their health) and routes.
    func cloudStatus() -> String {
        guard let router = state.router else { return "" }
        guard let balancers = cloudGet("/v1/loadbalancers")?["items"]?.array, let routes = cloudGet("/v1/routes")?["items"]?.array else {
            return "cloud: its API (\(LabCloudNet.endpoint) in \(router)) does not answer; see \(dir)/logs/cloud.log\n"
        }
        var out = "cloud: API \(LabCloudNet.endpoint) in \(router); \(balancers.count) load balancer(s), \(routes.count) route(s)\n"
        for b in balancers {
            let ports = (b["ports"]?.array ?? []).map { "\($0["port"]?.int ?? 0)/\($0["protocol"]?.string ?? "")→\($0["nodePort"]?.int ?? 0)" }
            let targets = (b["backends"]?.array ?? b["targets"]?.array ?? []).map {
                "\($0["address"]?.string ?? $0["instance"]?.string ?? "")\($0["healthy"]?.bool == true ? "" : " (unhealthy)")"
            }
            let hc = (b["healthCheckNodePort"]?.int ?? 0) > 0 ? ", health check :\(b["healthCheckNodePort"]?.int ?? 0)/healthz" : ""
            out += "  balancer \(b["ip"]?.string ?? "") for \(b["service"]?.string ?? ""): \(ports.joined(separator: ", ")) to \(targets.joined(separator: ", "))\(hc)\n"
        }
        for r in routes {
            out += "  route \(r["destinationCIDR"]?.string ?? "") via \(r["targetInstance"]?.string ?? "")\(r["blackhole"]?.bool == true ? " (blackhole: the instance is gone)" : "")\n"
        }
        return out
    }

    /// The LoadBalancer address a Service got, once it has one.
    public func loadBalancerIP(_ service: String, timeout: Double = 10) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let svc = try await must("GET", "/api/v1/namespaces/default/services/\(service)", nil)
            if let ip = svc[path: ["status", "loadBalancer", "ingress"]]?.array?.first?["ip"]?.string { return ip }
            guard Date() < deadline else {
                throw NetLabError("service \(service) has no load balancer address after \(Int(timeout)) s; see \(dir)/logs/cloud-controller-manager.log and cloud.log")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

extension Cluster {
    /// An HTTP GET from the outside client: the echo server's answer (`POD CLIENT:PORT`), or nil.
    public func clientGet(_ ip: String, _ port: Int = 80, timeout: Double = 1) -> String? {
        Measure.httpGet(state.client, ip, port, timeout: timeout)
    }
}

extension Cluster {
    /// Figures of the lab cloud: for `count` Services each, the time from the Service's create
    /// to the client's first answer through it, as a LoadBalancer (at the balancer's address:
    /// the cloud controller manager, the cloud and the proxies in the path) and, the baseline in
    /// the same run, as a NodePort on the first node (the proxies alone). Milliseconds, sorted.
    public func loadBalancerLatency(count: Int) async throws -> (loadBalancer: [Double], nodePort: [Double]) {
        guard state.router != nil else { throw NetLabError("lab \(state.name) has no cloud: `netlab up` with the containerd runtime makes one") }
        var lb: [Double] = [], np: [Double] = []
        for i in 0..<count {
            for type in ["LoadBalancer", "NodePort"] {
                let name = "lat-\(type.lowercased())-\(i)"
                let start = Date()
                let svc = try await must("POST", "/api/v1/namespaces/default/services", [
                    "apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(name)],
                    "spec": ["type": .string(type), "selector": ["app": "echo"], "ports": [["port": 80, "targetPort": 8080]]]])
                let (ip, port): (String, Int)
                if type == "LoadBalancer" {
                    ip = try await loadBalancerIP(name, timeout: 30)
                    port = 80
                } else {
                    ip = state.nodes[0].address
                    port = Int(svc[path: ["spec", "ports"]]?.array?.first?["nodePort"]?.int ?? 0)
                }
                let deadline = start.addingTimeInterval(30)
                while clientGet(ip, port, timeout: 0.2) == nil {
                    guard Date() < deadline else { throw NetLabError("\(type) \(name) at \(ip):\(port) did not answer within 30 s") }
                    try await Task.sleep(for: .milliseconds(5))
                }
                let ms = Date().timeIntervalSince(start) * 1000
                if type == "LoadBalancer" { lb.append(ms) } else { np.append(ms) }
                try await must("DELETE", "/api/v1/namespaces/default/services/\(name)", nil)
                while try await api.request("GET", "/api/v1/namespaces/default/services/\(name)").status != 404 {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
        }
        return (lb.sorted(), np.sorted())
    }
}
