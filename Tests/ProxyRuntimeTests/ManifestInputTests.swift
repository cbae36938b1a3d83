import KubeAPI
import ProxyRuntime
import Testing

@Suite struct ManifestInputTests {
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
