import KubeAPI
@testable import ProxyCore
import Testing

func info(_ etpLocal: Bool = false, itpLocal: Bool = false, nodePort: Int = 0) -> ServicePortInfo {
    ServicePortInfo(name: ServicePortName(service: NamespacedName(namespace: "ns", name: "s"), port: "", proto: .tcp),
                    clusterIP: IPAddress("10.96.0.1")!, port: 80, targetPort: nil, nodePort: nodePort, externalIPs: [],
                    loadBalancerVIPs: [], loadBalancerSourceRanges: [], sessionAffinityClientIP: false, stickyMaxAgeSeconds: 10800,
                    externalPolicyLocal: etpLocal, internalPolicyLocal: itpLocal, healthCheckNodePort: 0, trafficDistribution: nil)
}

@Suite struct TopologyTests {
    let node = NodeInfo(name: "n1", labels: [Node.zoneLabel: "z1"])

    @Test func readyEndpointsOnly() {
        let eps = [EndpointInfo(ip: "10.0.0.1", port: 80), EndpointInfo(ip: "10.0.0.2", port: 80, ready: false, serving: false)]
        let c = Topology.categorize(eps, for: info(), node: node)
        #expect(c.cluster.map(\.ip) == ["10.0.0.1"])
        #expect(c.hasAny)
    }

    @Test func servingTerminatingFallback() {
        let eps = [EndpointInfo(ip: "10.0.0.1", port: 80, ready: false, serving: true, terminating: true),
                   EndpointInfo(ip: "10.0.0.2", port: 80, ready: false, serving: false, terminating: true)]
        let c = Topology.categorize(eps, for: info(), node: node)
        #expect(c.cluster.map(\.ip) == ["10.0.0.1"])
    }

    @Test func internalLocalUsesOnlyLocalEndpoints() {
        let eps = [EndpointInfo(ip: "10.0.0.1", port: 80, isLocal: true), EndpointInfo(ip: "10.0.0.2", port: 80)]
        let c = Topology.categorize(eps, for: info(itpLocal: true), node: node)
        #expect(c.cluster.isEmpty)
        #expect(c.local.map(\.ip) == ["10.0.0.1"])
        #expect(c.allReachable.map(\.ip) == ["10.0.0.1"])
    }

    @Test func externalLocalKeepsClusterForInternal() {
        let eps = [EndpointInfo(ip: "10.0.0.1", port: 80, isLocal: true), EndpointInfo(ip: "10.0.0.2", port: 80)]
        let c = Topology.categorize(eps, for: info(true, nodePort: 30000), node: node)
        #expect(c.cluster.count == 2)
        #expect(c.local.map(\.ip) == ["10.0.0.1"])
        #expect(c.allReachable.count == 2)
    }

    @Test func zoneHintsFilterWhenAllHaveThem() {
        let a = EndpointInfo(ip: "10.0.0.1", port: 80, zoneHints: ["z1"])
        let b = EndpointInfo(ip: "10.0.0.2", port: 80, zoneHints: ["z2"])
        #expect(Topology.categorize([a, b], for: info(), node: node).cluster.map(\.ip) == ["10.0.0.1"])
        // One endpoint without hints: hints are ignored.
        let c = EndpointInfo(ip: "10.0.0.3", port: 80)
        #expect(Topology.categorize([a, b, c], for: info(), node: node).cluster.count == 3)
        // No endpoint for our zone: hints are ignored.
        #expect(Topology.categorize([b], for: info(), node: node).cluster.count == 1)
    }

    @Test func nodeHintsWinOverZoneHints() {
        let a = EndpointInfo(ip: "10.0.0.1", port: 80, zoneHints: ["z1"], nodeHints: ["n1"])
        let b = EndpointInfo(ip: "10.0.0.2", port: 80, zoneHints: ["z1"], nodeHints: ["n2"])
        #expect(Topology.categorize([a, b], for: info(), node: node).cluster.map(\.ip) == ["10.0.0.1"])
    }
}

@Suite struct ChangeTrackerTests {
    @Test func snapshotsCarryOnlyChangedServices() {
        var t = ChangeTracker(node: NodeInfo(name: "n1"))
        let s = Service(metadata: ObjectMeta(name: "a", namespace: "ns"),
                        spec: ServiceSpec(clusterIP: "10.96.0.1", ports: [ServicePort(port: 80)]))
        t.update(service: s)
        var (snap, changed) = t.snapshot()
        #expect(changed == nil, "the first snapshot is a full one")
        #expect(snap.servicePorts.count == 1)
        t.update(service: s)  // no change
        (snap, changed) = t.snapshot()
        #expect(changed == [])
        let slice = EndpointSlice(metadata: ObjectMeta(name: "a-1", namespace: "ns", labels: [EndpointSlice.serviceNameLabel: "a"]),
                                  endpoints: [Endpoint(addresses: ["10.0.0.2"], nodeName: "n1"), Endpoint(addresses: ["10.0.0.10"])],
                                  ports: [EndpointPort(port: 8080)])
        t.update(slice: slice)
        (snap, changed) = t.snapshot()
        #expect(changed == [NamespacedName(namespace: "ns", name: "a")])
        let eps = snap.endpoints.values.first ?? []
        #expect(eps.map(\.endpoint) == ["10.0.0.10:8080", "10.0.0.2:8080"], "sorted as strings, as upstream does")
        #expect(eps.first { $0.ip == "10.0.0.2" }?.isLocal == true)
        t.delete(service: NamespacedName(namespace: "ns", name: "a"))
        (snap, _) = t.snapshot()
        #expect(snap.servicePorts.isEmpty)
    }

    @Test func headlessAndExternalNameAreSkipped() {
        let headless = Service(metadata: ObjectMeta(name: "h", namespace: "ns"), spec: ServiceSpec(clusterIP: "None", ports: [ServicePort(port: 80)]))
        let ext = Service(metadata: ObjectMeta(name: "e", namespace: "ns"), spec: ServiceSpec(type: "ExternalName", ports: [ServicePort(port: 80)]))
        #expect(ChangeTracker.servicePorts(of: headless, family: .ipv4).isEmpty)
        #expect(ChangeTracker.servicePorts(of: ext, family: .ipv4).isEmpty)
    }

    @Test func manifestAllocationIsStable() {
        var set = ManifestSet()
        set.services = [Service(metadata: ObjectMeta(name: "a", namespace: "x"), spec: ServiceSpec(type: "NodePort", ports: [ServicePort(port: 80)]))]
        let one = ManifestInput.prepare(set)
        set.services.append(Service(metadata: ObjectMeta(name: "b", namespace: "x"), spec: ServiceSpec(ports: [ServicePort(port: 80)])))
        let two = ManifestInput.prepare(set)
        #expect(one[0].spec.clusterIP == two[0].spec.clusterIP)
        #expect(one[0].spec.ports?[0].nodePort == two[0].spec.ports?[0].nodePort)
        #expect(ManifestInput.defaultServiceCIDR.contains(IPAddress(one[0].spec.clusterIP!)!))
        #expect((30000...32767).contains(one[0].spec.ports![0].nodePort!))
    }
}
