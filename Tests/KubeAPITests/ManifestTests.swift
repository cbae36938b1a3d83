import Foundation
@testable import KubeAPI
import Testing

@Suite struct ManifestTests {
    @Test func multiDocumentYAMLWithListsAndOtherKinds() throws {
        let yaml = """
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec:
          ports: [{port: 80, targetPort: http}]
          unknownField: ignored
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: d}
        ---
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: b, namespace: x}
          spec: {ports: [{port: 53, protocol: UDP}]}
        - apiVersion: discovery.k8s.io/v1
          kind: EndpointSlice
          metadata: {name: b-1, namespace: x, labels: {kubernetes.io/service-name: b}}
          addressType: IPv4
          endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
          ports: [{port: 53, protocol: UDP}]
        ---
        """
        let set = try ManifestLoader.parse(yaml, source: "app.yaml")
        #expect(set.issues.isEmpty, "\(set.issues)")
        #expect(set.services.map(\.namespacedName.description) == ["default/a", "x/b"])
        #expect(set.services[0].spec.ports?[0].targetPort == .string("http"))
        #expect(set.endpointSlices.first?.serviceName == "b")
        #expect(set.skippedKinds == ["Deployment": 1])
    }

    @Test func jsonListLoads() throws {
        let json = """
        {"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"v1","kind":"Service","metadata":{"name":"j"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":443,"targetPort":6443}]}}
        ]}
        """
        let set = try ManifestLoader.parse(json, source: "x.json")
        #expect(set.services.first?.spec.ports?.first?.targetPort == .int(6443))
    }

    /// A list is decoded item by item; the result, and what is reported, match decoding it whole.
    @Test func jsonListsItemByItemMatchWholeDecoding() throws {
        let svc = #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","annotations":{"a":"}]\\\"{["}},"spec":{"ports":[{"port":80}]}}"#
        let bad = #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"bad"},"spec":{"ports":[{"port":0}]}}"#
        let slice = #"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"s-1","labels":{"kubernetes.io/service-name":"s"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}],"ports":[{"port":8080}]}"#
        let list = "{\"apiVersion\": \"v1\", \"metadata\": {}, \"kind\": \"List\",\n \"items\": [ \(svc), \(bad),\n\(slice) ], \"extra\": [1, true, null, -2.5e3]}\n"
        let split = try #require(JSONListSplitter.split(Data(list.utf8)))
        #expect(split.items.count == 3 && !split.topLevelArray)
        let set = try ManifestLoader.parse(data: Data(list.utf8), source: "l.json")
        #expect(set.services.map(\.metadata.name) == ["s"])
        #expect(set.services.first?.metadata.annotations?["a"] == "}]\\\"{[")
        #expect(set.endpointSlices.map(\.serviceName) == ["s"])
        #expect(set.issues.map(\.location.description) == ["l.json: document 1, item 2"])
        // A top-level array: each element is a document.
        let array = "[\(svc),\(slice)]"
        #expect(JSONListSplitter.split(Data(array.utf8))?.topLevelArray == true)
        let set2 = try ManifestLoader.parse(data: Data(array.utf8), source: "a.json")
        #expect(set2.services.count == 1 && set2.endpointSlices.count == 1)
        // Not a list, or not well formed: decoded whole, and a syntax error is still one.
        #expect(JSONListSplitter.split(Data(svc.utf8)) == nil)
        #expect(JSONListSplitter.split(Data("{\"kind\":\"List\",\"items\":[\(svc)],\"x\":tru}".utf8)) == nil)
        #expect(throws: ManifestError.self) { try ManifestLoader.parse(data: Data("{\"kind\":\"List\",\"items\":[\(svc)],\"x\":tru}".utf8), source: "b.json") }
        #expect(throws: ManifestError.self) { try ManifestLoader.parse(data: Data("[\(svc), 3]".utf8), source: "c.json") }
    }

    @Test(arguments: [
        ("spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}", "spec.clusterIP"),
        ("spec: {ports: [{port: 0}]}", "spec.ports[0].port"),
        ("spec: {ports: [{port: 70000}]}", "spec.ports[0].port"),
        ("spec: {ports: [{port: 80, protocol: ICMP}]}", "spec.ports[0].protocol"),
        ("spec: {ports: [{port: 80}], externalIPs: [not-an-ip]}", "spec.externalIPs[0]"),
        ("spec: {ports: [{port: 80}], loadBalancerSourceRanges: [10.0.0.0/33]}", "spec.loadBalancerSourceRanges[0]"),
        ("spec: {ports: [{port: 80}, {port: 81}]}", "spec.ports[0].name"),
        ("spec: {ports: [{port: eighty}]}", "spec.ports[0].port"),
    ])
    func invalidServicesAreReportedWithDocumentAndField(spec: String, field: String) throws {
        let yaml = """
        apiVersion: v1
        kind: Service
        metadata: {name: good}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: bad}
        \(spec)
        """
        let set = try ManifestLoader.parse(yaml, source: "m.yaml")
        #expect(set.services.map { $0.metadata.name } == ["good"])
        #expect(set.issues.count == 1)
        let issue = try #require(set.issues.first)
        #expect(issue.location.document == 2)
        #expect(issue.errors.contains { $0.field == field }, "\(issue)")
        #expect(issue.description.hasPrefix("m.yaml: document 2 (Service"))
    }

    @Test func missingNameIsReported() throws {
        let set = try ManifestLoader.parse("apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {ports: [{port: 1}]}\n", source: "s")
        #expect(set.issues.first?.errors.first?.field == "metadata.name")
    }

    @Test func badEndpointSliceAddress() throws {
        let y = """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: s, labels: {kubernetes.io/service-name: a}}
        addressType: IPv4
        endpoints: [{addresses: ["fd00::1"]}]
        ports: [{port: 80}]
        """
        let set = try ManifestLoader.parse(y, source: "s")
        #expect(set.endpointSlices.isEmpty)
        #expect(set.issues.first?.errors.first?.field == "endpoints[0].addresses[0]")
    }

    @Test func syntaxErrorsThrow() {
        #expect(throws: ManifestError.self) { try ManifestLoader.parse("a: [unclosed", source: "bad.yaml") }
        #expect(throws: ManifestError.self) { try ManifestLoader.parse("{\"kind\": ", source: "bad.json") }
    }

    @Test func addressesParseStrictly() {
        #expect(IPAddress("10.0.0.1")?.description == "10.0.0.1")
        #expect(IPAddress("010.0.0.1") == nil)
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("fd00::1")?.family == .ipv6)
        #expect(CIDR("10.1.2.3/8")?.network.description == "10.0.0.0/8")
        #expect(CIDR("10.96.0.0/12")!.contains(IPAddress("10.111.255.1")!))
        #expect(!CIDR("10.96.0.0/12")!.contains(IPAddress("10.112.0.1")!))
    }

    @Test func goDurations() {
        #expect(KubeProxyConfiguration.parseDuration("30s") == 30)
        #expect(KubeProxyConfiguration.parseDuration("1m0s") == 60)
        #expect(KubeProxyConfiguration.parseDuration("500ms") == 0.5)
        #expect(KubeProxyConfiguration.parseDuration("x") == nil)
    }
}
