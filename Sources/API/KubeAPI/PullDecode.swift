import JSONSyntax

/// Service and EndpointSlice decoded straight from a manifest's bytes, field by field as the
/// reader meets them: no `JSONValue` tree (whose dictionaries, one per object, cost a hash seed
/// and a table each) and no Codable. Same contract as `FastDecodable`: whatever the Codable path
/// would refuse, and anything unusual, makes it give up with `FastMismatch`, and the caller
/// decodes that object the slow way for the error.
struct PullReader {
    var s: JSONSyntax.Scanner

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        s = JSONSyntax.Scanner(bytes: bytes, strictUTF8: true)
    }

    @inline(__always)
    mutating func expect(_ c: UInt8) throws(FastMismatch) {
        s.skipSpace()
        guard s.next == c else { throw FastMismatch() }
        s.at += 1
    }

    /// `null` (consumed): true.
    @inline(__always)
    mutating func null() throws(FastMismatch) -> Bool {
        s.skipSpace()
        guard s.next == UInt8(ascii: "n") else { return false }
        do { try s.literal("null") } catch { throw FastMismatch() }
        return true
    }

    /// An object's members: `body` gets each key and must read (or `skip`) its value. nil for `null`.
    mutating func object(_ body: (inout PullReader, String) throws(FastMismatch) -> Void) throws(FastMismatch) -> Bool {
        if try null() { return false }
        try expect(UInt8(ascii: "{"))
        s.skipSpace()
        if s.next == UInt8(ascii: "}") { s.at += 1; return true }
        while true {
            s.skipSpace()
            guard s.next == UInt8(ascii: "\"") else { throw FastMismatch() }
            let key: String
            do { key = try s.string() } catch { throw FastMismatch() }
            try expect(UInt8(ascii: ":"))
            try body(&self, key)
            s.skipSpace()
            switch s.next {
            case UInt8(ascii: ",")?: s.at += 1
            case UInt8(ascii: "}")?: s.at += 1; return true
            default: throw FastMismatch()
            }
        }
    }

    /// An array's elements: `body` reads each. nil for `null`.
    mutating func array<T>(_ body: (inout PullReader) throws(FastMismatch) -> T) throws(FastMismatch) -> [T]? {
        if try null() { return nil }
        try expect(UInt8(ascii: "["))
        var out: [T] = []
        s.skipSpace()
        if s.next == UInt8(ascii: "]") { s.at += 1; return out }
        while true {
            out.append(try body(&self))
            s.skipSpace()
            switch s.next {
            case UInt8(ascii: ",")?: s.at += 1
            case UInt8(ascii: "]")?: s.at += 1; return out
            default: throw FastMismatch()
            }
        }
    }

    mutating func string() throws(FastMismatch) -> String? {
        if try null() { return nil }
        guard s.next == UInt8(ascii: "\"") else { throw FastMismatch() }
        do { return try s.string() } catch { throw FastMismatch() }
    }

    mutating func requiredString() throws(FastMismatch) -> String {
        guard let v = try string() else { throw FastMismatch() }
        return v
    }

    /// An integer written as one (Codable's path decides about `80.0` and the like).
    mutating func int() throws(FastMismatch) -> Int? {
        if try null() { return nil }
        guard let c = s.next, c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39) else { throw FastMismatch() }
        let n: JSONSyntax.Number
        do { n = try s.number() } catch { throw FastMismatch() }
        guard case .int(let i) = n, let v = Int(exactly: i) else { throw FastMismatch() }
        return v
    }

    mutating func bool() throws(FastMismatch) -> Bool? {
        if try null() { return nil }
        do {
            switch s.next {
            case UInt8(ascii: "t")?: try s.literal("true"); return true
            case UInt8(ascii: "f")?: try s.literal("false"); return false
            default: throw FastMismatch()
            }
        } catch { throw FastMismatch() }
    }

    mutating func strings() throws(FastMismatch) -> [String]? {
        try array { r throws(FastMismatch) in try r.requiredString() }
    }

    mutating func stringMap() throws(FastMismatch) -> [String: String]? {
        var out: [String: String] = [:]
        let present = try object { r, k throws(FastMismatch) in out[k] = try r.requiredString() }
        return present ? out : nil
    }

    mutating func intOrString() throws(FastMismatch) -> IntOrString? {
        if try null() { return nil }
        if s.next == UInt8(ascii: "\"") { return .string(try requiredString()) }
        guard let i = try int() else { throw FastMismatch() }
        return .int(i)
    }

    /// Any value, checked only as far as its structure (the Codable path never sees it either:
    /// an unknown field is ignored there too, after the JSON reader checked it).
    mutating func skip() throws(FastMismatch) {
        s.skipSpace()
        switch s.next {
        case UInt8(ascii: "{")?: _ = try object { r, _ throws(FastMismatch) in try r.skip() }
        case UInt8(ascii: "[")?: _ = try array { r throws(FastMismatch) in try r.skip() }
        case UInt8(ascii: "\"")?:
            // To the closing quote, past escapes, without making the string.
            s.at += 1
            while let c = s.next {
                s.at += c == UInt8(ascii: "\\") ? 2 : 1
                if c == UInt8(ascii: "\"") { return }
            }
            throw FastMismatch()
        case UInt8(ascii: "t")?, UInt8(ascii: "f")?: _ = try bool()
        case UInt8(ascii: "n")?: _ = try null()
        default:
            do { _ = try s.number() } catch { throw FastMismatch() }
        }
    }

    /// The whole input is one value and nothing after it.
    mutating func end() throws(FastMismatch) {
        s.skipSpace()
        guard s.atEnd else { throw FastMismatch() }
    }

    /// `read` over a parsed value's JSON text: the value paths (an API watch, YAML) share the
    /// byte reader's field-by-field decoding rather than keeping a second copy of it.
    static func decode<T>(_ json: JSONValue, _ read: (inout PullReader) throws(FastMismatch) -> T) -> T? {
        Array(json.text().utf8).withUnsafeBufferPointer { b in
            var r = PullReader(b)
            return try? read(&r)
        }
    }

    /// The `kind` of the object in `bytes`, read without decoding the rest: the members before it
    /// are skipped, those after it not read (nil: none, or not an object).
    static func kind(of bytes: UnsafeBufferPointer<UInt8>) -> String? {
        var r = PullReader(bytes)
        do {
            try r.expect(UInt8(ascii: "{"))
            while true {
                r.s.skipSpace()
                guard r.s.next == UInt8(ascii: "\"") else { return nil }
                let key = try r.requiredString()
                try r.expect(UInt8(ascii: ":"))
                if key == "kind" { return try r.string() }
                try r.skip()
                r.s.skipSpace()
                guard r.s.next == UInt8(ascii: ",") else { return nil }
                r.s.at += 1
            }
        } catch { return nil }
    }

    // MARK: the kinds

    mutating func meta() throws(FastMismatch) -> ObjectMeta {
        var m = ObjectMeta()
        let present = try object { r, k throws(FastMismatch) in
            switch k {
            case "name": m.name = try r.string()
            case "namespace": m.namespace = try r.string()
            case "labels": m.labels = try r.stringMap()
            case "annotations": m.annotations = try r.stringMap()
            case "generateName": m.generateName = try r.string()
            case "uid": m.uid = try r.string()
            case "resourceVersion": m.resourceVersion = try r.string()
            case "generation": m.generation = try r.int().map(Int64.init)
            case "creationTimestamp": m.creationTimestamp = try r.string()
            case "deletionTimestamp": m.deletionTimestamp = try r.string()
            case "ownerReferences":
                m.ownerReferences = try r.array { r throws(FastMismatch) in
                    var apiVersion: String?, kind: String?, name: String?, uid: String?, controller: Bool?, block: Bool?
                    guard try r.object({ r, k throws(FastMismatch) in
                        switch k {
                        case "apiVersion": apiVersion = try r.string()
                        case "kind": kind = try r.string()
                        case "name": name = try r.string()
                        case "uid": uid = try r.string()
                        case "controller": controller = try r.bool()
                        case "blockOwnerDeletion": block = try r.bool()
                        default: try r.skip()
                        }
                    }), let apiVersion, let kind, let name, let uid else { throw FastMismatch() }
                    return OwnerReference(apiVersion: apiVersion, kind: kind, name: name, uid: uid, controller: controller, blockOwnerDeletion: block)
                }
            default: try r.skip()
            }
        }
        guard present else { throw FastMismatch() }
        return m
    }

    mutating func service() throws(FastMismatch) -> Service {
        var meta: ObjectMeta?, spec: ServiceSpec?, status: ServiceStatus?
        var apiVersion: String?, kind: String?
        _ = try object { r, k throws(FastMismatch) in
            switch k {
            case "apiVersion": apiVersion = try r.string()
            case "kind": kind = try r.string()
            case "metadata": meta = try r.meta()
            case "spec": spec = try r.serviceSpec()
            case "status": status = try r.serviceStatus()
            default: try r.skip()
            }
        }
        try end()
        guard let meta, let spec else { throw FastMismatch() }
        var svc = Service(metadata: meta, spec: spec, status: status)
        svc.apiVersion = apiVersion
        svc.kind = kind
        return svc
    }

    mutating func serviceSpec() throws(FastMismatch) -> ServiceSpec? {
        var spec = ServiceSpec()
        let present = try object { r, k throws(FastMismatch) in
            switch k {
            case "type": spec.type = try r.string()
            case "clusterIP": spec.clusterIP = try r.string()
            case "clusterIPs": spec.clusterIPs = try r.strings()
            case "ipFamilies": spec.ipFamilies = try r.strings()
            case "ipFamilyPolicy": spec.ipFamilyPolicy = try r.string()
            case "ports": spec.ports = try r.array { r throws(FastMismatch) in try r.servicePort() }
            case "selector": spec.selector = try r.stringMap()
            case "externalIPs": spec.externalIPs = try r.strings()
            case "externalName": spec.externalName = try r.string()
            case "loadBalancerIP": spec.loadBalancerIP = try r.string()
            case "loadBalancerSourceRanges": spec.loadBalancerSourceRanges = try r.strings()
            case "loadBalancerClass": spec.loadBalancerClass = try r.string()
            case "allocateLoadBalancerNodePorts": spec.allocateLoadBalancerNodePorts = try r.bool()
            case "sessionAffinity": spec.sessionAffinity = try r.string()
            case "sessionAffinityConfig":
                var config = SessionAffinityConfig()
                if try r.object({ r, k throws(FastMismatch) in
                    guard k == "clientIP" else { try r.skip(); return }
                    var ip = ClientIPConfig()
                    if try r.object({ r, k throws(FastMismatch) in
                        if k == "timeoutSeconds" { ip.timeoutSeconds = try r.int() } else { try r.skip() }
                    }) { config.clientIP = ip }
                }) { spec.sessionAffinityConfig = config }
            case "externalTrafficPolicy": spec.externalTrafficPolicy = try r.string()
            case "internalTrafficPolicy": spec.internalTrafficPolicy = try r.string()
            case "healthCheckNodePort": spec.healthCheckNodePort = try r.int()
            case "publishNotReadyAddresses": spec.publishNotReadyAddresses = try r.bool()
            case "trafficDistribution": spec.trafficDistribution = try r.string()
            default: try r.skip()
            }
        }
        return present ? spec : nil
    }

    mutating func servicePort() throws(FastMismatch) -> ServicePort {
        var name: String?, proto: String?, app: String?, port: Int?, target: IntOrString?, nodePort: Int?
        guard try object({ r, k throws(FastMismatch) in
            switch k {
            case "name": name = try r.string()
            case "protocol": proto = try r.string()
            case "appProtocol": app = try r.string()
            case "port": port = try r.int()
            case "targetPort": target = try r.intOrString()
            case "nodePort": nodePort = try r.int()
            default: try r.skip()
            }
        }), let port else { throw FastMismatch() }
        var p = ServicePort(name: name, protocol: proto, port: port, targetPort: target, nodePort: nodePort)
        p.appProtocol = app
        return p
    }

    mutating func serviceStatus() throws(FastMismatch) -> ServiceStatus? {
        var status = ServiceStatus()
        let present = try object { r, k throws(FastMismatch) in
            switch k {
            case "loadBalancer":
                var lb = LoadBalancerStatus()
                if try r.object({ r, k throws(FastMismatch) in
                    guard k == "ingress" else { try r.skip(); return }
                    lb.ingress = try r.array { r throws(FastMismatch) in
                        var i = LoadBalancerIngress()
                        guard try r.object({ r, k throws(FastMismatch) in
                            switch k {
                            case "ip": i.ip = try r.string()
                            case "hostname": i.hostname = try r.string()
                            case "ipMode": i.ipMode = try r.string()
                            default: try r.skip()
                            }
                        }) else { throw FastMismatch() }
                        return i
                    }
                }) { status.loadBalancer = lb }
            case "conditions":
                if try !r.null() { throw FastMismatch() }   // read by nothing here: the Codable path
            default: try r.skip()
            }
        }
        return present ? status : nil
    }

    mutating func endpointSlice() throws(FastMismatch) -> EndpointSlice {
        var meta: ObjectMeta?, addressType: String?, endpoints: [Endpoint]?, ports: [EndpointPort]?
        var apiVersion: String?, kind: String?
        _ = try object { r, k throws(FastMismatch) in
            switch k {
            case "apiVersion": apiVersion = try r.string()
            case "kind": kind = try r.string()
            case "metadata": meta = try r.meta()
            case "addressType": addressType = try r.string()
            case "endpoints": endpoints = try r.array { r throws(FastMismatch) in try r.endpoint() }
            case "ports":
                ports = try r.array { r throws(FastMismatch) in
                    var p = EndpointPort()
                    guard try r.object({ r, k throws(FastMismatch) in
                        switch k {
                        case "name": p.name = try r.string()
                        case "protocol": p.protocol = try r.string()
                        case "port": p.port = try r.int()
                        case "appProtocol": p.appProtocol = try r.string()
                        default: try r.skip()
                        }
                    }) else { throw FastMismatch() }
                    return p
                }
            default: try r.skip()
            }
        }
        try end()
        guard let meta, let addressType else { throw FastMismatch() }
        var slice = EndpointSlice(metadata: meta, addressType: addressType, endpoints: endpoints, ports: ports)
        slice.apiVersion = apiVersion
        slice.kind = kind
        return slice
    }

    mutating func endpoint() throws(FastMismatch) -> Endpoint {
        var addresses: [String]?
        var e = Endpoint(addresses: [])
        guard try object({ r, k throws(FastMismatch) in
            switch k {
            case "addresses": addresses = try r.strings()
            case "conditions":
                var c = EndpointConditions()
                if try r.object({ r, k throws(FastMismatch) in
                    switch k {
                    case "ready": c.ready = try r.bool()
                    case "serving": c.serving = try r.bool()
                    case "terminating": c.terminating = try r.bool()
                    default: try r.skip()
                    }
                }) { e.conditions = c }
            case "hostname": e.hostname = try r.string()
            case "nodeName": e.nodeName = try r.string()
            case "zone": e.zone = try r.string()
            case "targetRef":
                var ref = ObjectReference()
                if try r.object({ r, k throws(FastMismatch) in
                    switch k {
                    case "kind": ref.kind = try r.string()
                    case "namespace": ref.namespace = try r.string()
                    case "name": ref.name = try r.string()
                    case "uid": ref.uid = try r.string()
                    default: try r.skip()
                    }
                }) { e.targetRef = ref }
            case "hints":
                var h = EndpointHints()
                if try r.object({ r, k throws(FastMismatch) in
                    switch k {
                    case "forZones": h.forZones = try r.array { r throws(FastMismatch) in ForZone(name: try r.named()) }
                    case "forNodes": h.forNodes = try r.array { r throws(FastMismatch) in ForNode(name: try r.named()) }
                    default: try r.skip()
                    }
                }) { e.hints = h }
            default: try r.skip()
            }
        }), let addresses else { throw FastMismatch() }
        e.addresses = addresses
        return e
    }

    /// `{"name": …}`, the name required.
    mutating func named() throws(FastMismatch) -> String {
        var name: String?
        guard try object({ r, k throws(FastMismatch) in
            if k == "name" { name = try r.string() } else { try r.skip() }
        }), let name else { throw FastMismatch() }
        return name
    }
}

extension Service: FastDecodable {
    public init?(fast json: JSONValue) {
        guard let s = PullReader.decode(json, { (r: inout PullReader) throws(FastMismatch) in try r.service() }) else { return nil }
        self = s
    }
}

extension EndpointSlice: FastDecodable {
    public init?(fast json: JSONValue) {
        guard let s = PullReader.decode(json, { (r: inout PullReader) throws(FastMismatch) in try r.endpointSlice() }) else { return nil }
        self = s
    }
}
