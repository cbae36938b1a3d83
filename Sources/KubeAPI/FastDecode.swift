/// Decoding the kinds a proxy reads in bulk (Service, EndpointSlice) straight from a parsed
/// `JSONValue`, without Codable: each type reads its fields by name. Codable's generic
/// containers cost most of a manifest load (10,000 Services with 10 endpoints each: about 1 s of
/// a 1.7 s `render`); this reads the same fields in a fraction of that.
///
/// It accepts exactly what the Codable path accepts or gives up: a field of the wrong type, a
/// missing required field or a number that is not an integer fails the whole object with
/// `nil`, and the caller decodes that one object with Codable, whose error names the field.
/// Unknown fields are ignored and `null` reads as absent, as with Codable's `decodeIfPresent`.
public protocol FastDecodable {
    init?(fast json: JSONValue)
}

/// A mismatch: the fast path stops and the Codable path explains.
struct FastMismatch: Error {}

extension JSONValue {
    /// This value as an object's fields, or a mismatch.
    @inline(__always)
    func fields() throws(FastMismatch) -> [String: JSONValue] {
        guard case .object(let o) = self else { throw FastMismatch() }
        return o
    }
}

extension Dictionary where Key == String, Value == JSONValue {
    @inline(__always)
    func string(_ key: String) throws(FastMismatch) -> String? {
        switch self[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw FastMismatch()
        }
    }

    @inline(__always)
    func requiredString(_ key: String) throws(FastMismatch) -> String {
        guard let s = try string(key) else { throw FastMismatch() }
        return s
    }

    @inline(__always)
    func int(_ key: String) throws(FastMismatch) -> Int? {
        switch self[key] {
        case nil, .null?: return nil
        case .int(let i)?: guard let v = Int(exactly: i) else { throw FastMismatch() }; return v
        default: throw FastMismatch()
        }
    }

    @inline(__always)
    func int64(_ key: String) throws(FastMismatch) -> Int64? {
        switch self[key] {
        case nil, .null?: return nil
        case .int(let i)?: return i
        default: throw FastMismatch()
        }
    }

    @inline(__always)
    func bool(_ key: String) throws(FastMismatch) -> Bool? {
        switch self[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        default: throw FastMismatch()
        }
    }

    @inline(__always)
    func object(_ key: String) throws(FastMismatch) -> [String: JSONValue]? {
        switch self[key] {
        case nil, .null?: return nil
        case .object(let o)?: return o
        default: throw FastMismatch()
        }
    }

    @inline(__always)
    func array(_ key: String) throws(FastMismatch) -> [JSONValue]? {
        switch self[key] {
        case nil, .null?: return nil
        case .array(let a)?: return a
        default: throw FastMismatch()
        }
    }

    func strings(_ key: String) throws(FastMismatch) -> [String]? {
        guard let a = try array(key) else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a {
            guard case .string(let s) = v else { throw FastMismatch() }
            out.append(s)
        }
        return out
    }

    func stringMap(_ key: String) throws(FastMismatch) -> [String: String]? {
        guard let o = try object(key) else { return nil }
        var out: [String: String] = [:]
        out.reserveCapacity(o.count)
        for (k, v) in o {
            guard case .string(let s) = v else { throw FastMismatch() }
            out[k] = s
        }
        return out
    }

    func list<T>(_ key: String, _ each: ([String: JSONValue]) throws(FastMismatch) -> T) throws(FastMismatch) -> [T]? {
        guard let a = try array(key) else { return nil }
        var out: [T] = []
        out.reserveCapacity(a.count)
        for v in a { out.append(try each(try v.fields())) }
        return out
    }
}

extension ObjectMeta {
    init(fast f: [String: JSONValue]) throws(FastMismatch) {
        self.init(name: try f.string("name"), namespace: try f.string("namespace"),
                  labels: try f.stringMap("labels"), annotations: try f.stringMap("annotations"))
        generateName = try f.string("generateName")
        uid = try f.string("uid")
        resourceVersion = try f.string("resourceVersion")
        generation = try f.int64("generation")
        creationTimestamp = try f.string("creationTimestamp")
        deletionTimestamp = try f.string("deletionTimestamp")
        ownerReferences = try f.list("ownerReferences") { o throws(FastMismatch) in
            OwnerReference(apiVersion: try o.requiredString("apiVersion"), kind: try o.requiredString("kind"),
                           name: try o.requiredString("name"), uid: try o.requiredString("uid"),
                           controller: try o.bool("controller"), blockOwnerDeletion: try o.bool("blockOwnerDeletion"))
        }
    }
}

extension ObjectReference {
    init(fast o: [String: JSONValue]) throws(FastMismatch) {
        self.init(kind: try o.string("kind"), namespace: try o.string("namespace"), name: try o.string("name"))
        uid = try o.string("uid")
    }
}

extension IntOrString {
    init?(fast v: JSONValue?) throws(FastMismatch) {
        switch v {
        case nil, .null?: return nil
        case .int(let i)?: guard let n = Int(exactly: i) else { throw FastMismatch() }; self = .int(n)
        case .string(let s)?: self = .string(s)
        default: throw FastMismatch()
        }
    }
}

extension Service: FastDecodable {
    public init?(fast json: JSONValue) {
        do {
            let f = try json.fields()
            guard let m = try f.object("metadata"), let s = try f.object("spec") else { return nil }
            var spec = ServiceSpec(type: try s.string("type"), clusterIP: try s.string("clusterIP"),
                                   ports: try s.list("ports") { p throws(FastMismatch) in
                                       guard let port = try p.int("port") else { throw FastMismatch() }
                                       var sp = ServicePort(name: try p.string("name"), protocol: try p.string("protocol"), port: port,
                                                            targetPort: try IntOrString(fast: p["targetPort"]), nodePort: try p.int("nodePort"))
                                       sp.appProtocol = try p.string("appProtocol")
                                       return sp
                                   },
                                   selector: try s.stringMap("selector"))
            spec.clusterIPs = try s.strings("clusterIPs")
            spec.ipFamilies = try s.strings("ipFamilies")
            spec.ipFamilyPolicy = try s.string("ipFamilyPolicy")
            spec.externalIPs = try s.strings("externalIPs")
            spec.externalName = try s.string("externalName")
            spec.loadBalancerIP = try s.string("loadBalancerIP")
            spec.loadBalancerSourceRanges = try s.strings("loadBalancerSourceRanges")
            spec.loadBalancerClass = try s.string("loadBalancerClass")
            spec.allocateLoadBalancerNodePorts = try s.bool("allocateLoadBalancerNodePorts")
            spec.sessionAffinity = try s.string("sessionAffinity")
            if let c = try s.object("sessionAffinityConfig") {
                spec.sessionAffinityConfig = SessionAffinityConfig(clientIP: try c.object("clientIP").map { ip throws(FastMismatch) in
                    ClientIPConfig(timeoutSeconds: try ip.int("timeoutSeconds"))
                })
            }
            spec.externalTrafficPolicy = try s.string("externalTrafficPolicy")
            spec.internalTrafficPolicy = try s.string("internalTrafficPolicy")
            spec.healthCheckNodePort = try s.int("healthCheckNodePort")
            spec.publishNotReadyAddresses = try s.bool("publishNotReadyAddresses")
            spec.trafficDistribution = try s.string("trafficDistribution")
            var status: ServiceStatus?
            if let st = try f.object("status") {
                var out = ServiceStatus()
                if let lb = try st.object("loadBalancer") {
                    out.loadBalancer = LoadBalancerStatus(ingress: try lb.list("ingress") { i throws(FastMismatch) in
                        LoadBalancerIngress(ip: try i.string("ip"), hostname: try i.string("hostname"), ipMode: try i.string("ipMode"))
                    })
                }
                // Conditions are rare in manifests and read by nothing here: Codable decodes them.
                if st["conditions"] != nil && st["conditions"] != .null { return nil }
                status = out
            }
            self.init(metadata: try ObjectMeta(fast: m), spec: spec, status: status)
            apiVersion = try f.string("apiVersion")
            kind = try f.string("kind")
        } catch {
            return nil
        }
    }
}

extension EndpointSlice: FastDecodable {
    public init?(fast json: JSONValue) {
        do {
            let f = try json.fields()
            guard let m = try f.object("metadata"), let addressType = try f.string("addressType") else { return nil }
            let endpoints = try f.list("endpoints") { e throws(FastMismatch) in
                guard let addresses = try e.strings("addresses") else { throw FastMismatch() }
                var hints: EndpointHints?
                if let h = try e.object("hints") {
                    hints = EndpointHints(
                        forZones: try h.list("forZones") { z throws(FastMismatch) in ForZone(name: try z.requiredString("name")) },
                        forNodes: try h.list("forNodes") { n throws(FastMismatch) in ForNode(name: try n.requiredString("name")) })
                }
                var ep = Endpoint(addresses: addresses,
                                  conditions: try e.object("conditions").map { c throws(FastMismatch) in
                                      EndpointConditions(ready: try c.bool("ready"), serving: try c.bool("serving"),
                                                         terminating: try c.bool("terminating"))
                                  },
                                  nodeName: try e.string("nodeName"), zone: try e.string("zone"), hints: hints,
                                  targetRef: try e.object("targetRef").map { r throws(FastMismatch) in try ObjectReference(fast: r) })
                ep.hostname = try e.string("hostname")
                return ep
            }
            let ports = try f.list("ports") { p throws(FastMismatch) in
                var ep = EndpointPort(name: try p.string("name"), protocol: try p.string("protocol"), port: try p.int("port"))
                ep.appProtocol = try p.string("appProtocol")
                return ep
            }
            self.init(metadata: try ObjectMeta(fast: m), addressType: addressType, endpoints: endpoints, ports: ports)
            apiVersion = try f.string("apiVersion")
            kind = try f.string("kind")
        } catch {
            return nil
        }
    }
}

import Yams

/// A YAML node as a `JSONValue`, resolving plain scalars as Yams' default resolver would (YAML
/// 1.1's `yes`/`no` booleans included) but without its regular expressions, which cost half of
/// a large YAML load: nil for anything it does not decide with certainty (an octal, hex or
/// sexagesimal number, a float, a timestamp, a merge key, an alias, an explicit tag), and the
/// caller then decodes that object with Yams' own decoder.
enum YAMLNodeJSON {
    static func value(_ n: Yams.Node) -> JSONValue? {
        switch n {
        case .scalar(let s):
            return scalar(s)
        case .mapping(let m):
            var o: [String: JSONValue] = [:]
            o.reserveCapacity(m.count)
            for (k, v) in m {
                guard case .scalar(let key) = k, key.string != "<<", let value = value(v) else { return nil }
                o[key.string] = value
            }
            return .object(o)
        case .sequence(let s):
            var a: [JSONValue] = []
            a.reserveCapacity(s.count)
            for v in s {
                guard let value = value(v) else { return nil }
                a.append(value)
            }
            return .array(a)
        case .alias:
            return nil
        }
    }

    static func scalar(_ s: Yams.Node.Scalar) -> JSONValue? {
        if s.tag.rawValue == Tag.Name.str.rawValue { return .string(s.string) }   // quoted
        guard s.tag.rawValue.isEmpty, s.style == Yams.Node.Scalar.Style.plain || s.style == Yams.Node.Scalar.Style.any else {
            return s.tag.rawValue.isEmpty ? .string(s.string) : nil   // literal and folded blocks are strings
        }
        let text = s.string
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON": return .bool(true)
        case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF": return .bool(false)
        case "<<", "=": return nil
        default: break
        }
        var body = Substring(text)
        if let f = body.utf8.first, f == UInt8(ascii: "-") || f == UInt8(ascii: "+") { body = body.dropFirst() }
        guard let first = body.utf8.first else { return .string(text) }
        if first == UInt8(ascii: ".") { return nil }   // .5, .inf, .nan
        guard first >= 0x30 && first <= 0x39 else { return .string(text) }
        let digits = body.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        if digits && (body.utf8.count == 1 || first != UInt8(ascii: "0")) {
            return Int64(text).map(JSONValue.int)   // too large: nil, and Yams decides
        }
        // Starts with a digit: an IP address or a name is a string; anything a number pattern
        // might take (octal, hex, binary, underscores, sexagesimal, floats, timestamps) is left to Yams.
        let numberish = body.utf8.allSatisfy(isNumberChar)
        if body.utf8.contains(UInt8(ascii: ":")) || body.utf8.contains(UInt8(ascii: "-")) || body.utf8.contains(UInt8(ascii: " ")) {
            return nil   // sexagesimal numbers, timestamps
        }
        let dots = body.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: ".") ? 1 : 0) }
        if numberish && dots <= 1 { return nil }
        return .string(text)
    }

    /// A character a YAML 1.1 number of any form may hold (digits, signs, `_ . : e`, hex digits, `x o b`).
    static func isNumberChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "+"), UInt8(ascii: "-"),
             UInt8(ascii: "x"), UInt8(ascii: "o"), UInt8(ascii: "b"):
            return true
        default:
            return false
        }
    }
}
