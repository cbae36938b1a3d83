import Foundation
@testable import CNI
import Testing

func request(_ conf: String, command: String = "ADD", id: String = "c1", ifname: String = "eth0", args: [String: String] = [:]) throws -> CNIRequest {
    try CNIRequest(command: command, containerID: id, netns: nil, ifname: ifname, args: args, path: [], raw: Data(conf.utf8))
}

@Suite("CNI logic")
struct CNIUnitTests {
    @Test func rangeDefaultsAreTheReferencePlugins() throws {
        let r = try IPRange(subnet: "10.77.0.0/16", rangeStart: nil, rangeEnd: nil, gateway: nil)
        #expect(r.start == [10, 77, 0, 1] && r.end == [10, 77, 255, 254] && r.gateway == [10, 77, 0, 1])
        let six = try IPRange(subnet: "fd00::/120", rangeStart: nil, rangeEnd: nil, gateway: nil)
        #expect(six.end.last == 0xff, "IPv6 has no broadcast address")
        #expect(throws: CNIError.self) { try IPRange(subnet: "10.0.0.0/24", rangeStart: "10.0.1.5", rangeEnd: nil, gateway: nil) }
    }

    @Test func resultsConvertForOlderCallers() throws {
        let r = CNIResult(interfaces: [ResultInterface(name: "eth0", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/run/netns/x")],
                          ips: [ResultIP(address: "10.1.0.5/16", gateway: "10.1.0.1", interface: 0), ResultIP(address: "fd00::5/64")],
                          routes: [ResultRoute(dst: "0.0.0.0/0", mtu: 1400)])
        let old = r.json(version: "0.4.0")
        let ips = old["ips"] as! [[String: Any]]
        #expect(ips[0]["version"] as? String == "4" && ips[1]["version"] as? String == "6")
        #expect((old["routes"] as! [[String: Any]])[0]["mtu"] == nil, "route MTUs are a 1.x field")
        let new = r.json(version: "1.0.0")
        #expect((new["ips"] as! [[String: Any]])[0]["version"] == nil)
        #expect((new["routes"] as! [[String: Any]])[0]["mtu"] as? Int == 1400)
        #expect(try CNIResult(json: new) == r)
    }

    @Test func masqueradeChainNamesMatchTheReference() {
        // What the reference bridge plugin named the chain for network "testnet", container "abc123".
        #expect(BridgePlugin.chainName("testnet", "abc123") == "CNI-ac401170a6a418c7c78d298f")
    }

    @Test func hostLocalRoundRobinRequestedIPsAndRelease() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sycni-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let conf = """
            {"cniVersion":"1.0.0","name":"n","type":"host-local","ipam":{"type":"host-local","dataDir":"\(dir)",
             "ranges":[[{"subnet":"10.9.0.0/29"}],[{"subnet":"fd09::/125"}]],"routes":[{"dst":"0.0.0.0/0"}]}}
            """
        let p = HostLocalPlugin()
        let a = try p.add(request(conf, id: "a"))
        #expect(a.ips.map(\.address) == ["10.9.0.2/29", "fd09::2/125"])
        #expect(a.ips[0].gateway == "10.9.0.1")
        #expect(a.routes == [ResultRoute(dst: "0.0.0.0/0")])
        let b = try p.add(request(conf, id: "b"))
        #expect(b.ips.map(\.address) == ["10.9.0.3/29", "fd09::3/125"])
        try p.del(request(conf, command: "DEL", id: "a"))
        // Round-robin: a's address is not handed out again right away.
        let c = try p.add(request(conf, id: "c"))
        #expect(c.ips[0].address == "10.9.0.4/29")
        // A requested address, from CNI_ARGS.
        let d = try p.add(request(conf, id: "d", args: ["IP": "10.9.0.6"]))
        #expect(d.ips[0].address == "10.9.0.6/29")
        #expect(throws: CNIError.self) { try p.add(request(conf, id: "e", args: ["IP": "10.9.0.6"])) }
        // The store is laid out as the reference plugin's.
        let content = try String(contentsOfFile: "\(dir)/n/10.9.0.6", encoding: .utf8)
        #expect(content == "d\r\neth0")
        #expect(try String(contentsOfFile: "\(dir)/n/last_reserved_ip.0", encoding: .utf8) == "10.9.0.6")
        // Exhaustion: .1 is the gateway, .2-.6 are usable; f and g take the last two free
        // ones (wrapping after the last reserved), then h finds none, and keeps nothing.
        #expect(try p.add(request(conf, id: "f")).ips[0].address == "10.9.0.2/29")
        #expect(try p.add(request(conf, id: "g")).ips[0].address == "10.9.0.5/29")
        let before = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/n").sorted()
        #expect(throws: CNIError.self) { try p.add(request(conf, id: "h")) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/n").sorted() == before, "a failed ADD releases what it took")
        // GC keeps only valid attachments.
        let gcConf = conf.replacingOccurrences(of: "\"type\":\"host-local\",\"ipam\"",
                                               with: "\"type\":\"host-local\",\"cni.dev/valid-attachments\":[{\"containerID\":\"d\",\"ifname\":\"eth0\"}],\"ipam\"")
        try p.gc(request(gcConf, command: "GC"))
        let left = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/n").filter { $0 != "lock" && !$0.hasPrefix("last_reserved") }
        #expect(left.count == 2 && left.contains("10.9.0.6"), "only d's two addresses are left: \(left)")
        for f in left { #expect(try String(contentsOfFile: "\(dir)/n/\(f)", encoding: .utf8) == "d\r\neth0") }
    }

    @Test func jsonRoundTripsAndAgreesWithFoundation() throws {
        let text = #"{"a":[1,-2,3.5,1e3,true,false,null],"s":"x\"y\\z\n\u00e9\ud83d\ude00/","o":{},"e":[],"n":{"k":"v"}}"#
        let v = try JSON.parse(text) as! [String: Any]
        #expect((v["a"] as! [Any])[0] as? Int == 1 && (v["a"] as! [Any])[2] as? Double == 3.5 && (v["a"] as! [Any])[3] as? Double == 1000)
        #expect((v["a"] as! [Any])[4] as? Bool == true && (v["a"] as! [Any])[6] is JSON.Null)
        #expect(v["s"] as? String == "x\"y\\z\né😀/")
        // Our output reads back the same through Foundation, pretty or compact.
        for pretty in [true, false] {
            let out = JSON.serialize(v, pretty: pretty)
            let back = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
            #expect(back["s"] as? String == v["s"] as? String)
            #expect((back["n"] as? [String: String]) == ["k": "v"])
            #expect((back["a"] as? [Any])?.count == 7)
        }
        #expect(try JSON.parse(#""\ud800x""#) as? String == "\u{FFFD}x", "a lone surrogate becomes U+FFFD")
        #expect(try JSON.parse("0") as? Int == 0 && (try JSON.parse("-0.5e+1") as? Double) == -5)
        // As Go's encoding/json, which the reference plugins use: 1500.0 is no integer (an `mtu`
        // refuses it), invalid UTF-8 in a string reads as U+FFFD, and the output escapes what Go's does.
        #expect(try JSON.parse("1500.0") is Double && (try JSON.parse("1500")) is Int)
        #expect(try JSON.parse([0x22, 0x61, 0xff, 0x22]) as? String == "a\u{FFFD}")
        #expect(JSON.serialize(["k": "<a>&\u{2028}\u{01}"], pretty: false) == #"{"k":"\u003ca\u003e\u0026\u2028\u0001"}"#)
        for bad in [#"{"a":}"#, #"{"a":1"#, "[1,]", #""\x""#, "tru", "{} x", "-", "{\"a\":\"\u{01}\"}",
                    "012", "+1", ".5", "1.", "-.5", "1e", "1e400", #""\u+041""#] {
            #expect(throws: JSON.ParseError.self, "\(bad)") { try JSON.parse(bad) }
        }
    }

    @Test func concurrentAllocationsNeverShareAnAddress() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sycni-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let conf = """
            {"cniVersion":"1.0.0","name":"n","type":"host-local","ipam":{"type":"host-local","dataDir":"\(dir)","subnet":"10.10.0.0/24"}}
            """
        let results = Box<[String]>()
        results.value = []
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 40) { i in
            if let r = try? HostLocalPlugin().add(request(conf, id: "c\(i)")) {
                lock.withLock { results.value!.append(r.ips[0].address) }
            }
        }
        #expect(results.value!.count == 40)
        #expect(Set(results.value!).count == 40)
    }
}

final class Box<T>: @unchecked Sendable {
    var value: T?
}
