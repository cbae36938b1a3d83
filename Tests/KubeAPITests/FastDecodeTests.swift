import Foundation
@testable import KubeAPI
import Testing
import Yams

/// The fast decoders (bytes → Service/EndpointSlice, JSON value → the same, YAML node → JSON
/// value) must give exactly what Codable gives, or give up so that Codable decides.
@Suite struct FastDecodeTests {
    static let services: [String] = [
        #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"ns","labels":{"x":"y"},"annotations":{"k":"v"},"uid":"u1","resourceVersion":"7","generation":2,"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"type":"LoadBalancer","clusterIP":"10.96.0.1","clusterIPs":["10.96.0.1"],"ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","ports":[{"name":"http","protocol":"TCP","appProtocol":"h2c","port":80,"targetPort":"web","nodePort":30080},{"port":53,"protocol":"UDP","targetPort":5353}],"selector":{"app":"a"},"externalIPs":["198.51.100.7"],"loadBalancerSourceRanges":["203.0.113.0/24"],"loadBalancerClass":"c","allocateLoadBalancerNodePorts":true,"sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":600}},"externalTrafficPolicy":"Local","internalTrafficPolicy":"Cluster","healthCheckNodePort":32000,"publishNotReadyAddresses":false,"trafficDistribution":"PreferClose","unknownField":{"deep":[1,2,{"x":null}]}},"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10","ipMode":"VIP"},{"hostname":"lb.example"}]}}}"#,
        #"{"kind":"Service","metadata":{"name":"b"},"spec":{"ports":[{"port":80}],"selector":null,"clusterIP":null}}"#,
        #"{"kind":"Service","metadata":{"name":"c","namespace":"n"},"spec":{"type":"ExternalName","externalName":"x.example"}, "status": {}}"#,
        #"{"kind":"Service","metadata":{"name":"d","labels":{"é":"\u00e9\n"}},"spec":{"ports":[{"port":8080,"targetPort":0}]}}"#,
    ]

    static let slices: [String] = [
        #"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"s","namespace":"n","labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP","appProtocol":"http"}],"endpoints":[{"addresses":["10.244.1.2"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"node-a","zone":"z1","hostname":"h","targetRef":{"kind":"Pod","name":"p","namespace":"n","uid":"u"},"hints":{"forZones":[{"name":"z1"}],"forNodes":[{"name":"node-a"}]}},{"addresses":["10.244.2.3"]}]}"#,
        #"{"kind":"EndpointSlice","metadata":{"name":"t"},"addressType":"IPv6","endpoints":null,"ports":[{}]}"#,
    ]

    /// Inputs the Codable path refuses: the fast paths give up on each, so the error is Codable's.
    static let refused: [String] = [
        #"{"kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":"80"}]}}"#,
        #"{"kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"name":"x"}]}}"#,
        #"{"kind":"Service","metadata":{"name":"a","labels":{"x":1}},"spec":{}}"#,
        #"{"kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":10}}"#,
        #"{"kind":"EndpointSlice","metadata":{"name":"s"},"endpoints":[]}"#,
        #"{"kind":"EndpointSlice","metadata":{"name":"s"},"addressType":"IPv4","endpoints":[{"conditions":{}}]}"#,
        #"{"kind":"EndpointSlice","metadata":{"name":"s"},"addressType":"IPv4","endpoints":[{"addresses":["a"],"conditions":{"ready":"yes"}}]}"#,
    ]

    func codable<T: Decodable>(_ type: T.Type, _ json: String) -> T? { try? JSONDecoder().decode(type, from: Data(json.utf8)) }

    func pull<T>(_ json: String, _ read: (inout PullReader) throws(FastMismatch) -> T) -> T? {
        Array(json.utf8).withUnsafeBufferPointer { b in
            var r = PullReader(b)
            return try? read(&r)
        }
    }

    @Test func everyPathGivesWhatCodableGives() throws {
        for json in Self.services {
            let expected = try #require(codable(Service.self, json), "Codable decodes \(json)")
            #expect(pull(json) { (r: inout PullReader) throws(FastMismatch) in try r.service() } == expected, "bytes: \(json)")
            #expect(Service(fast: try JSONParser.parse(Data(json.utf8))) == expected, "value: \(json)")
        }
        for json in Self.slices {
            let expected = try #require(codable(EndpointSlice.self, json), "Codable decodes \(json)")
            #expect(pull(json) { (r: inout PullReader) throws(FastMismatch) in try r.endpointSlice() } == expected, "bytes: \(json)")
            #expect(EndpointSlice(fast: try JSONParser.parse(Data(json.utf8))) == expected, "value: \(json)")
        }
    }

    @Test func whatCodableRefusesTheFastPathsRefuse() throws {
        for json in Self.refused {
            let isService = json.contains("\"Service\"")
            #expect((isService ? codable(Service.self, json) as Any? : codable(EndpointSlice.self, json) as Any?) == nil, "Codable refuses \(json)")
            let bytes: Any? = isService ? pull(json) { (r: inout PullReader) throws(FastMismatch) in try r.service() }
                                        : pull(json) { (r: inout PullReader) throws(FastMismatch) in try r.endpointSlice() }
            #expect(bytes == nil, "bytes: \(json)")
            let value = try JSONParser.parse(Data(json.utf8))
            #expect((isService ? Service(fast: value) as Any? : EndpointSlice(fast: value) as Any?) == nil, "value: \(json)")
        }
    }

    /// Through the loader, a list of every case files the same objects and the same errors as a
    /// loader that decodes each object with Codable alone.
    @Test func theLoaderFilesTheSameObjectsAndErrors() throws {
        let items = (Self.services + Self.slices + Self.refused).joined(separator: ",")
        let list = #"{"apiVersion":"v1","kind":"List","items":["# + items + "]}"
        let fast = try ManifestLoader.parse(list, source: "l.json")
        var slow = ManifestSet()
        let loc = ManifestLocation(source: "l.json", document: 1)
        for (j, json) in (Self.services + Self.slices + Self.refused).enumerated() {
            var l = loc
            l.item = j + 1
            let v = try JSONParser.parse(Data(json.utf8))
            ManifestLoader.decode(kind: v["kind"]?.string ?? "", name: ManifestIssue.objectName(namespace: v["metadata"]?["namespace"]?.string, name: v["metadata"]?["name"]?.string),
                                  at: l, into: &slow) { type in try JSONDecoder().decode(type, from: Data(json.utf8)) }
        }
        #expect(fast.services == slow.services)
        #expect(fast.endpointSlices == slow.endpointSlices)
        #expect(fast.issues.map(\.description) == slow.issues.map(\.description))
        // Every refused object is reported, besides the objects that decode but do not validate.
        #expect(fast.issues.count >= Self.refused.count)
    }

    /// YAML: plain scalars resolved without regular expressions match Yams' resolver; what the
    /// fast resolver does not decide goes to Yams and still decodes the same.
    @Test func yamlScalarsResolveAsYamsDoes() throws {
        let yaml = """
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: "default"
              labels: {a: "yes", b: '1', c: x}
            spec:
              clusterIP: 10.96.0.10
              externalIPs: [2001:db8::1, 198.51.100.7]
              ports:
              - {name: http, port: 80, targetPort: 8080, protocol: TCP}
              - {name: octal, port: 0755, targetPort: web}
              - {name: under, port: 1_000, targetPort: 0x1F}
              selector: {app: web}
              publishNotReadyAddresses: yes
              sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
              healthCheckNodePort: ~
            """
        let node = try #require(try Yams.compose(yaml: yaml))
        let expected = try YAMLDecoder().decode(Service.self, from: node)
        let set = try ManifestLoader.parse(yaml, source: "s.yaml")
        #expect(set.issues.isEmpty, "\(set.issues)")
        var e = expected
        e.metadata.namespace = e.metadata.namespace ?? "default"
        #expect(set.services == [e])
        // The scalars the fast resolver decides itself, and those it leaves to Yams.
        for (text, want) in [("80", JSONValue.int(80)), ("0", .int(0)), ("-3", .int(-3)), ("yes", .bool(true)), ("Off", .bool(false)),
                             ("~", .null), ("10.96.0.10", .string("10.96.0.10")), ("web", .string("web")), ("node-a", .string("node-a")),
                             ("1.2.3", .string("1.2.3"))] {
            #expect(YAMLNodeJSON.scalar(Yams.Node.Scalar(text)) == want, "\(text)")
        }
        for text in ["0755", "0x1F", "1_000", "1.5", "1e3", ".inf", "12:30", "2026-01-01", "<<"] {
            #expect(YAMLNodeJSON.scalar(Yams.Node.Scalar(text)) == nil, "\(text) is left to Yams")
        }
    }
}
