import Foundation
import Testing
import KubeAPI
import APIServer
import ControllerKit
@testable import Controllers

/// The controllers on a dual-stack cluster: node IPAM hands each Node a range of each family,
/// and the EndpointSlice controller writes a set of slices per address type of the Service.
@Suite("dual-stack controllers", .serialized)
struct DualStackControllerTests {
    @Test func nodeCIDRSetsNumberTheirRanges() throws {
        let v4 = try #require(NodeCIDRSet(cluster: CIDR("10.244.0.0/16")!, mask: 24))
        #expect(v4.count == 256 && v4.range(0) == "10.244.0.0/24" && v4.range(3) == "10.244.3.0/24" && v4.range(255) == "10.244.255.0/24")
        #expect(v4.index("10.244.3.0/24") == 3 && v4.index("10.245.3.0/24") == nil && v4.index("10.244.3.0/25") == nil && v4.index("10.244.3.1/24") == nil)
        let v6 = try #require(NodeCIDRSet(cluster: CIDR("fd00:10:244::/56")!, mask: 64))
        #expect(v6.count == 256 && v6.range(0) == "fd00:10:244::/64" && v6.range(1) == "fd00:10:244:1::/64" && v6.range(255) == "fd00:10:244:ff::/64")
        #expect(v6.index("fd00:10:244:ff::/64") == 255 && v6.index("fd00:10:245::/64") == nil && v6.index("10.244.0.0/24") == nil)
        for i: UInt32 in [0, 1, 77, 255] { #expect(v6.index(v6.range(i)) == i && v4.index(v4.range(i)) == i) }
        // The mask: not shorter than the cluster's, at most 16 more, room for addresses.
        #expect(NodeCIDRSet(cluster: CIDR("10.244.0.0/16")!, mask: 15) == nil)
        #expect(NodeCIDRSet(cluster: CIDR("fd00:10:244::/48")!, mask: 65) == nil)
        #expect(NodeCIDRSet(cluster: CIDR("10.244.0.0/24")!, mask: 31) == nil)
        var o = ControllerManager.Options()
        o.clusterCIDR = "10.244.0.0/16,10.245.0.0/16"
        #expect(throws: NodeCIDRError.self) { try o.nodeCIDRSetsChecked() }
        o.clusterCIDR = "10.244.0.0/16,fd00:10:244::/56,fd00:10:245::/56"
        #expect(throws: NodeCIDRError.self) { try o.nodeCIDRSetsChecked() }
        o.clusterCIDR = "fd00:10:244::/56,10.244.0.0/16"
        #expect(try o.nodeCIDRSetsChecked().map(\.mask) == [64, 24])
    }

    @Test func nodeIPAMGivesEachNodeARangeOfEachFamily() async throws {
        let (_, api) = try await HandlerTransport.make()
        var options = ControllerManager.Options()
        options.controllers = ["nodeipam"]
        options.allocateNodeCIDRs = true
        options.clusterCIDR = "10.244.0.0/16,fd00:10:244::/56"
        let manager = try ControllerManager(api: api, options: options)
        let task = Task { await manager.run() }
        defer { task.cancel() }
        for n in ["a", "b"] { _ = try await api.create("/api/v1/nodes", ["metadata": ["name": .string("node-\(n)")]]) }
        func cidrs(_ n: String) async throws -> [String] {
            (try await api.get("/api/v1/nodes/node-\(n)")[path: ["spec", "podCIDRs"]]?.array ?? []).compactMap(\.string)
        }
        #expect(try await api.eventually(10) { let a = try await cidrs("a"), b = try await cidrs("b"); return a.count == 2 && b.count == 2 })
        let a = try await cidrs("a"), b = try await cidrs("b")
        #expect(Set([a, b]) == [["10.244.0.0/24", "fd00:10:244::/64"], ["10.244.1.0/24", "fd00:10:244:1::/64"]], "\(a) \(b)")
        #expect(try await api.get("/api/v1/nodes/node-a")[path: ["spec", "podCIDR"]]?.string == a[0])
        // A deleted node's ranges go to the next one, both families together.
        try await api.delete("/api/v1/nodes/node-a")
        try await Task.sleep(for: .milliseconds(300))
        _ = try await api.create("/api/v1/nodes", ["metadata": ["name": "node-c"]])
        #expect(try await api.eventually(10) { try await cidrs("c") == a })
    }

    static func pod(_ name: String, ips: [String]) -> (JSONValue, JSONValue) {
        (["metadata": ["name": .string(name), "labels": ["app": "web"]],
          "spec": ["nodeName": "node-a", "containers": [["name": "c", "image": "x"]]]],
         ["status": ["phase": "Running", "podIP": .string(ips[0]), "podIPs": .array(ips.map { ["ip": .string($0)] }),
                     "conditions": [["type": "Ready", "status": "True"]]]])
    }

    @Test func slicesPerAddressType() async throws {
        let (_, api) = try await HandlerTransport.make(serviceRanges: ["10.96.0.0/24", "fd00:10:96::/112"])
        _ = try await api.create("/api/v1/namespaces/default/services", [
            "metadata": ["name": "web"],
            "spec": ["ipFamilyPolicy": "RequireDualStack", "selector": ["app": "web"], "ports": [["port": 80, "targetPort": 8080]]]])
        for (name, ips) in [("p1", ["10.244.0.2", "fd00:10:244::2"]), ("p2", ["10.244.0.3", "fd00:10:244::3"]), ("p3", ["10.244.0.4"])] {
            let (p, status) = Self.pod(name, ips: ips)
            _ = try await api.create("/api/v1/namespaces/default/pods", p)
            _ = try await api.mergePatch("/api/v1/namespaces/default/pods/\(name)/status", status)
        }
        var options = ControllerManager.Options()
        options.controllers = ["endpointslice"]
        let manager = try ControllerManager(api: api, options: options)
        let task = Task { await manager.run() }
        defer { task.cancel() }
        let slicePath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        func byType() async throws -> [String: [String]] {
            var out: [String: [String]] = [:]
            for s in try await api.list(slicePath)["items"]?.array ?? [] {
                let addrs = (s["endpoints"]?.array ?? []).compactMap { $0["addresses"]?.array?.first?.string }
                out[s["addressType"]?.string ?? "", default: []] += addrs.sorted()
            }
            return out
        }
        let want = ["IPv4": ["10.244.0.2", "10.244.0.3", "10.244.0.4"], "IPv6": ["fd00:10:244::2", "fd00:10:244::3"]]
        let settled = try await api.eventually(10) { try await byType() == want }
        let seen = try await byType()
        #expect(settled, "\(seen)")
        // Downgraded to SingleStack: the IPv6 slice goes, the IPv4 one stays as it was.
        let v4Slice = try await api.list(slicePath)["items"]?.array?.first { $0["addressType"] == "IPv4" }
        _ = try await api.mergePatch("/api/v1/namespaces/default/services/web", ["spec": ["ipFamilyPolicy": "SingleStack"]])
        #expect(try await api.eventually(10) { try await byType() == ["IPv4": want["IPv4"]!] })
        let after = try await api.list(slicePath)["items"]?.array?.first { $0["addressType"] == "IPv4" }
        #expect(after?[path: ["metadata", "name"]] == v4Slice?[path: ["metadata", "name"]])
        #expect(after?[path: ["metadata", "resourceVersion"]] == v4Slice?[path: ["metadata", "resourceVersion"]])
        // A headless Service without families (an old object) gets a slice of each type.
        #expect(EndpointSliceController.addressTypes(["spec": ["clusterIP": "None"]]) == ["IPv4", "IPv6"])
        #expect(EndpointSliceController.addressTypes(["spec": ["clusterIP": "fd00::5"]]) == ["IPv6"])
        #expect(EndpointSliceController.address(of: ["status": ["podIP": "10.0.0.1"]], type: "IPv6") == nil)
    }
}
