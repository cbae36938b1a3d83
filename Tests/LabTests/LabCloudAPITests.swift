import CloudProvider
import Foundation
import KubeAPI
@testable import LabCloud
@testable import NetlabCloudProvider
import Synchronization
import Testing

/// The lab cloud's API and what it asks the kernel for, with the commands recorded instead of
/// run (the kernel's part is LabCloudTests'): addresses from the pool, refusals, the nftables
/// table, routes, fail-open health, what the netlab provider sends for a Service.
@Suite("the lab cloud's API")
struct LabCloudAPITests {
    final class Recorder: Sendable {
        let calls = Mutex<[(args: [String], input: String?)]>([])
        var last: [String] { calls.withLock { $0.last?.args ?? [] } }
        var lastInput: String { calls.withLock { $0.last(where: { $0.args.first == "nft" })?.input ?? "" } }
    }

    func cloud(_ recorder: Recorder) throws -> LabCloud {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-cloud-\(UUID().uuidString.prefix(8))").path
        // Instances whose namespaces do not exist: machines that are gone.
        try LabCloud.write(.init(lab: "t", instances: [.init(name: "node-1", netns: "sy-none-\(UUID().uuidString.prefix(6))", address: "10.250.0.11", zone: "a")],
                                 pool: "10.252.0"), dir: dir)
        return try LabCloud(dir: dir) { args, input in
            recorder.calls.withLock { $0.append((args, input)) }
            return (0, "", "")
        }
    }

    static func balancer(_ ip: String = "", nodePort: Int64 = 30080) -> JSONValue {
        ["service": "default/web", "requestedIP": .string(ip), "targets": ["node-1"],
         "ports": [["name": "http", "protocol": "TCP", "port": 80, "nodePort": .int(nodePort)]]]
    }

    @Test func balancersGetPoolAddressesAndBadRequestsAreRefused() throws {
        let r = Recorder()
        let c = try cloud(r)
        let a = c.handle("PUT", "/v1/loadbalancers/a", Self.balancer())
        #expect(a.status == 200 && a.body["ip"] == "10.252.0.1")
        #expect(c.handle("PUT", "/v1/loadbalancers/b", Self.balancer()).body["ip"] == "10.252.0.2")
        // Updated in place: the address stays.
        #expect(c.handle("PUT", "/v1/loadbalancers/a", Self.balancer(nodePort: 30081)).body["ip"] == "10.252.0.1")
        #expect(c.handle("PUT", "/v1/loadbalancers/c", Self.balancer("10.252.0.2")).status == 409)
        #expect(c.handle("PUT", "/v1/loadbalancers/c", Self.balancer("10.9.9.9")).status == 400)
        #expect(c.handle("PUT", "/v1/loadbalancers/c", Self.balancer(nodePort: 0)).body["error"]?.string?.contains("allocateLoadBalancerNodePorts") == true)
        #expect(c.handle("PUT", "/v1/loadbalancers/c", Self.balancer("10.252.0.7")).body["ip"] == "10.252.0.7")
        // A target whose machine is gone gets nothing: the port is refused.
        #expect(r.lastInput.contains("ip daddr 10.252.0.1 tcp dport 80 reject with tcp reset"), "\(r.lastInput)")
        #expect(r.lastInput.hasPrefix("table ip netlab-cloud {}\ndelete table ip netlab-cloud\n"))
        #expect(c.handle("DELETE", "/v1/loadbalancers/b", nil).status == 200)
        #expect(c.handle("GET", "/v1/loadbalancers/b", nil).status == 404)
        #expect(c.handle("PUT", "/v1/loadbalancers/d", Self.balancer()).body["ip"] == "10.252.0.2", "a released address is given again")
        #expect(c.handle("GET", "/v1/instances/node-1", nil).status == 404)
        #expect(c.handle("PUT", "/v1/routes/r1", ["targetInstance": "node-1", "destinationCIDR": "10.244.1.0/24"]).status == 404)
        #expect(c.handle("PUT", "/v1/routes/r1", ["targetInstance": "node-1", "destinationCIDR": "banana"]).status == 400)
        #expect(c.handle("POST", "/v1/loadbalancers", nil).status == 405)
    }

    @Test func healthFailsOpenAndRulesSpreadOverHealthyTargets() {
        let b = LabCloud.Balancer(name: "a", service: "s", ip: "10.252.0.1", ports: [], targets: ["n1", "n2", "n3"], healthCheckNodePort: 0)
        #expect(LabCloud.healthy(b, nil) == ["n1", "n2", "n3"])
        #expect(LabCloud.healthy(b, ["n2": 2]) == ["n1", "n3"])
        #expect(LabCloud.healthy(b, ["n2": 1]) == ["n1", "n2", "n3"], "one failed check is not enough")
        #expect(LabCloud.healthy(b, ["n1": 3, "n2": 2, "n3": 5]) == ["n1", "n2", "n3"], "none healthy: all get traffic")
    }

    /// A balancer in front of addresses (a control plane's API servers): the same port on each
    /// healthy backend, the source masqueraded (backends and clients share the underlay), and
    /// backends that are not IPv4 addresses refused.
    @Test func balancersInFrontOfAddressesMasqueradeAndFollowHealth() throws {
        let r = Recorder()
        let c = try cloud(r)
        let body: JSONValue = ["service": "kube-apiserver", "requestedIP": "10.252.0.250", "ports": [["name": "https", "protocol": "TCP", "port": 6443]],
                               "backends": ["10.250.0.4", "10.250.0.1", "10.250.0.3"]]
        let made = c.handle("PUT", "/v1/loadbalancers/kube-apiserver", body)
        #expect(made.status == 200 && made.body["ip"] == "10.252.0.250")
        #expect(made.body["backends"]?.array?.compactMap { $0["address"]?.string } == ["10.250.0.1", "10.250.0.3", "10.250.0.4"])
        #expect(r.lastInput.contains("ip daddr 10.252.0.250 tcp dport 6443 dnat ip to numgen random mod 3 map { 0 : 10.250.0.1 . 6443, 1 : 10.250.0.3 . 6443, 2 : 10.250.0.4 . 6443 }"), "\(r.lastInput)")
        #expect(r.lastInput.contains("type nat hook postrouting priority srcnat; policy accept;\n\t\tct original ip daddr 10.252.0.250 masquerade"), "\(r.lastInput)")
        // A backend failing its checks leaves the map; the rest keep the traffic.
        let b = try #require(c.runtime.withLock { $0.state.balancers.first })
        #expect(LabCloud.healthy(b, ["10.250.0.1": 2]) == ["10.250.0.3", "10.250.0.4"])
        var bad = body
        bad["backends"] = ["10.250.0.1", "node-1"]
        #expect(c.handle("PUT", "/v1/loadbalancers/x", bad).status == 400)
        // Balancers of NodePorts alone have no postrouting chain.
        _ = c.handle("DELETE", "/v1/loadbalancers/kube-apiserver", nil)
        _ = c.handle("PUT", "/v1/loadbalancers/a", Self.balancer())
        #expect(!r.lastInput.contains("postrouting"), "\(r.lastInput)")
    }

    @Test func theProviderAsksForTheServicesNodePortsAndHealthCheck() {
        let svc: JSONValue = ["metadata": ["name": "web", "namespace": "default", "annotations": .object([NetlabCloud.requestedIPAnnotation: "10.252.0.9"])],
                              "spec": ["type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                                       "ports": [["name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"]]]]
        let req = NetlabCloud.request(svc, nodes: [["metadata": ["name": "node-1"]]])
        #expect(req["requestedIP"] == "10.252.0.9" && req["healthCheckNodePort"] == 32000 && req["targets"] == ["node-1"])
        #expect(req["ports"] == [["name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080]])
        var cluster = svc
        cluster[path: ["spec", "externalTrafficPolicy"]] = "Cluster"
        cluster[path: ["spec", "loadBalancerIP"]] = "10.252.0.3"
        let c = NetlabCloud.request(cluster, nodes: [])
        #expect(c["healthCheckNodePort"] == 0 && c["requestedIP"] == "10.252.0.3", "spec.loadBalancerIP first")
    }
}
