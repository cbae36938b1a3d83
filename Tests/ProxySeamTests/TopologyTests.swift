import KubeAPI
import Testing
@testable import ProxySeam

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

    /// Several slices of one service merge as upstream's cache merges them: one endpoint per
    /// address and port, the ready copy preferred, sorted as strings; a node rename moves `isLocal`.
    @Test func slicesMergeAndNodeRenamesRelocalize() {
        var t = ChangeTracker(node: NodeInfo(name: "n1"))
        t.update(service: Service(metadata: ObjectMeta(name: "a", namespace: "ns"),
                                  spec: ServiceSpec(clusterIP: "10.96.0.1", ports: [ServicePort(name: "p", port: 80)])))
        func slice(_ name: String, _ eps: [Endpoint]) -> EndpointSlice {
            EndpointSlice(metadata: ObjectMeta(name: name, namespace: "ns", labels: [EndpointSlice.serviceNameLabel: "a"]),
                          endpoints: eps, ports: [EndpointPort(name: "p", port: 8080)])
        }
        let notReady = EndpointConditions(ready: false)
        t.update(slice: slice("a-1", [Endpoint(addresses: ["10.0.0.3"], nodeName: "n2"),
                                      Endpoint(addresses: ["10.0.0.2"], conditions: notReady, nodeName: "n1")]))
        t.update(slice: slice("a-2", [Endpoint(addresses: ["10.0.0.3"], conditions: notReady, nodeName: "n2"),
                                      Endpoint(addresses: ["10.0.0.2"], nodeName: "n1"),
                                      Endpoint(addresses: ["10.0.0.10"], nodeName: "n2")]))
        var (snap, _) = t.snapshot()
        let key = ServicePortName(service: NamespacedName(namespace: "ns", name: "a"), port: "p", proto: .tcp)
        var eps = snap.endpoints[key] ?? []
        #expect(eps.map(\.endpoint) == ["10.0.0.10:8080", "10.0.0.2:8080", "10.0.0.3:8080"])
        #expect(eps.allSatisfy { $0.ready }, "a ready copy wins over a not-ready one, whichever slice has it")
        #expect(eps.filter(\.isLocal).map(\.ip) == ["10.0.0.2"])
        t.update(node: NodeInfo(name: "n2"))
        (snap, _) = t.snapshot()
        eps = snap.endpoints[key] ?? []
        #expect(eps.filter(\.isLocal).map(\.ip) == ["10.0.0.10", "10.0.0.3"])
        // Down to one slice: its endpoints alone.
        t.delete(slice: NamespacedName(namespace: "ns", name: "a-2"))
        (snap, _) = t.snapshot()
        eps = snap.endpoints[key] ?? []
        #expect(eps.map(\.endpoint) == ["10.0.0.2:8080", "10.0.0.3:8080"])
        #expect(eps.map(\.ready) == [false, true])
        #expect(eps.map(\.isLocal) == [false, true])
    }

    @Test func changesThatDoNotReachTheRulesAreNotSyncs() {
        var t = ChangeTracker(node: NodeInfo(name: "n1"))
        var s = Service(metadata: ObjectMeta(name: "a", namespace: "ns"),
                        spec: ServiceSpec(clusterIP: "10.96.0.1", ports: [ServicePort(port: 80)]))
        var slice = EndpointSlice(metadata: ObjectMeta(name: "a-1", namespace: "ns", labels: [EndpointSlice.serviceNameLabel: "a"]),
                                  endpoints: [Endpoint(addresses: ["10.0.0.2"], nodeName: "n1")], ports: [EndpointPort(port: 8080)])
        t.update(service: s)
        t.update(slice: slice)
        _ = t.snapshot()
        // A label, an annotation, a new resourceVersion: nothing the proxy uses.
        s.metadata.labels = ["team": "x"]
        s.metadata.resourceVersion = "42"
        slice.metadata.annotations = ["note": "y"]
        slice.endpoints![0].hostname = "pod-a"
        t.update(service: s)
        t.update(slice: slice)
        #expect(!t.hasPendingChanges)
        var (_, changed) = t.snapshot()
        #expect(changed == [])
        // A port number and an endpoint's readiness do.
        s.spec.ports![0].port = 81
        t.update(service: s)
        (_, changed) = t.snapshot()
        #expect(changed == [NamespacedName(namespace: "ns", name: "a")])
        slice.endpoints![0].conditions = EndpointConditions(ready: false)
        t.update(slice: slice)
        let (snap, changed2) = t.snapshot()
        #expect(changed2 == [NamespacedName(namespace: "ns", name: "a")])
        #expect(snap.endpoints.values.first?.first?.ready == false)
        #expect(snap.servicePorts.values.first?.port == 81)
    }

    @Test func headlessAndExternalNameAreSkipped() {
        let headless = Service(metadata: ObjectMeta(name: "h", namespace: "ns"), spec: ServiceSpec(clusterIP: "None", ports: [ServicePort(port: 80)]))
        let ext = Service(metadata: ObjectMeta(name: "e", namespace: "ns"), spec: ServiceSpec(type: "ExternalName", ports: [ServicePort(port: 80)]))
        #expect(ChangeTracker.servicePorts(of: headless, family: .ipv4).isEmpty)
        #expect(ChangeTracker.servicePorts(of: ext, family: .ipv4).isEmpty)
    }
}
