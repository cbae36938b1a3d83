import Foundation
@testable import APIServer
import KubeAPI
import KubeStore
import Testing

/// Services on single- and dual-stack clusters: `ipFamilyPolicy`, `ipFamilies` and `clusterIPs`
/// defaulted, validated and allocated as kube-apiserver's service registry does, upgrades to and
/// downgrades from dual-stack, and the addresses of both families held and given back.
@Suite("dual-stack Services")
struct DualStackServiceTests {
    static let dual = ["10.96.0.0/24", "fd00:10:96::/112"]

    static func handler(_ ranges: [String], store: (any Store)? = nil) async throws -> APIHandler {
        let h = APIHandler(store: try store ?? SQLiteStore(path: ":memory:"),
                           admission: Admission(allocator: Allocator(serviceRanges: ranges.map { CIDR($0)! }, nodePorts: 30000...30010)))
        try await h.admission.load(from: h.store)
        let r = await h.post("/api/v1/namespaces", ["metadata": ["name": "default"]])
        #expect(r.code == 201 || r.code == 409)
        return h
    }

    static func create(_ h: APIHandler, _ name: String, _ spec: [String: JSONValue]) async -> APIResponse {
        var s: [String: JSONValue] = ["ports": [["port": 80]], "selector": ["app": "a"]]
        for (k, v) in spec { s[k] = v }
        return await h.post("/api/v1/namespaces/default/services", ["apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(name)], "spec": .object(s)])
    }

    static func patch(_ h: APIHandler, _ name: String, _ spec: JSONValue) async -> APIResponse {
        await h.handle(APIRequest(method: "PATCH", path: "/api/v1/namespaces/default/services/\(name)",
                                  contentType: "application/merge-patch+json", body: body(["spec": spec])))
    }

    struct Fields: Equatable, CustomStringConvertible {
        var policy: String?, families: [String], ips: [String], ip: String?
        init(_ o: JSONValue?) {
            policy = o?[path: ["spec", "ipFamilyPolicy"]]?.string
            families = o?[path: ["spec", "ipFamilies"]]?.array?.compactMap(\.string) ?? []
            ips = o?[path: ["spec", "clusterIPs"]]?.array?.compactMap(\.string) ?? []
            ip = o?[path: ["spec", "clusterIP"]]?.string
        }
        var description: String { "\(policy ?? "nil") \(families) \(ips) \(ip ?? "nil")" }
        /// Each address is of its family, in that family's range, and clusterIP is the first.
        func consistent(with ranges: [String]) -> Bool {
            guard ips.count == families.count, ip == ips.first else { return false }
            return zip(ips, families).allSatisfy { ip, f in
                guard let a = IPAddress(ip) else { return false }
                return (a.family == .ipv4) == (f == "IPv4") && ranges.contains { CIDR($0)!.contains(a) }
            }
        }
    }

    /// What each request gets on a cluster of IPv4 then IPv6 ranges, as upstream's table of
    /// TestCreateInitIPFields has it (policy, families, the number of addresses).
    @Test(arguments: [
        ("none given", [String: JSONValue](), "SingleStack", ["IPv4"]),
        ("PreferDualStack", ["ipFamilyPolicy": "PreferDualStack"], "PreferDualStack", ["IPv4", "IPv6"]),
        ("RequireDualStack", ["ipFamilyPolicy": "RequireDualStack"], "RequireDualStack", ["IPv4", "IPv6"]),
        ("RequireDualStack, IPv6 first", ["ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]], "RequireDualStack", ["IPv6", "IPv4"]),
        ("PreferDualStack, IPv6 named", ["ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6"]], "PreferDualStack", ["IPv6", "IPv4"]),
        ("IPv6 alone", ["ipFamilies": ["IPv6"]], "SingleStack", ["IPv6"]),
        ("an IPv6 clusterIP (an old client)", ["clusterIP": "fd00:10:96::77"], "SingleStack", ["IPv6"]),
        ("both addresses named", ["ipFamilyPolicy": "PreferDualStack", "clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77", "fd00:10:96::77"]],
         "PreferDualStack", ["IPv4", "IPv6"]),
    ] as [(String, [String: JSONValue], String, [String])])
    func createOnADualStackCluster(_ what: String, _ spec: [String: JSONValue], _ policy: String, _ families: [String]) async throws {
        let h = try await Self.handler(Self.dual)
        let r = await Self.create(h, "s", spec)
        #expect(r.code == 201, "\(what): \(r.json?.text() ?? "")")
        let f = Fields(r.json)
        #expect(f.policy == policy && f.families == families, "\(what): \(f)")
        #expect(f.consistent(with: Self.dual), "\(what): \(f)")
        if case .array(let named)? = spec["clusterIPs"] { #expect(f.ips == named.compactMap(\.string)) }
        if let named = spec["clusterIP"]?.string { #expect(f.ip == named) }
        // What is read back is what was answered.
        #expect(Fields(await h.get("/api/v1/namespaces/default/services/s").json) == f)
    }

    @Test func headlessServices() async throws {
        let h = try await Self.handler(Self.dual)
        // Headless and selectorless: RequireDualStack, both families, no address.
        let bare = await h.post("/api/v1/namespaces/default/services",
                                ["apiVersion": "v1", "kind": "Service", "metadata": ["name": "bare"], "spec": ["clusterIP": "None", "ports": [["port": 80]]]])
        #expect(Fields(bare.json) == Fields(["spec": ["ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"], "clusterIPs": ["None"], "clusterIP": "None"]]),
                "\(bare.json?.text() ?? "")")
        // With a selector: SingleStack of the primary family.
        let selecting = await Self.create(h, "sel", ["clusterIP": "None"])
        #expect(Fields(selecting.json) == Fields(["spec": ["ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "clusterIPs": ["None"], "clusterIP": "None"]]),
                "\(selecting.json?.text() ?? "")")
    }

    @Test func singleStackAndIPv6PrimaryClusters() async throws {
        let v4 = try await Self.handler(["10.96.0.0/24"])
        let prefer = await Self.create(v4, "prefer", ["ipFamilyPolicy": "PreferDualStack"])
        #expect(Fields(prefer.json).families == ["IPv4"] && Fields(prefer.json).policy == "PreferDualStack", "\(prefer.json?.text() ?? "")")
        let require = await Self.create(v4, "require", ["ipFamilyPolicy": "RequireDualStack"])
        #expect(require.code == 422)
        #expect(require.json?["message"]?.string == #"Service "require" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
                "\(require.json?.text() ?? "")")
        let six = await Self.create(v4, "six", ["ipFamilies": ["IPv6"]])
        #expect(six.json?["message"]?.string == #"Service "six" is invalid: spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#,
                "\(six.json?.text() ?? "")")
        // Nothing was taken for the refused ones: the /24 still hands out its first free address.
        let next = await Self.create(v4, "next", [:])
        #expect(Fields(next.json).ips == ["10.96.0.3"], "\(next.json?.text() ?? "")")

        let v6 = try await Self.handler(["fd00:10:96::/112", "10.96.0.0/24"])
        let plain = await Self.create(v6, "plain", [:])
        #expect(Fields(plain.json) == Fields(["spec": ["ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"], "clusterIPs": ["fd00:10:96::2"], "clusterIP": "fd00:10:96::2"]]),
                "\(plain.json?.text() ?? "")")
        let both = await Self.create(v6, "both", ["ipFamilyPolicy": "PreferDualStack"])
        #expect(Fields(both.json).families == ["IPv6", "IPv4"] && Fields(both.json).consistent(with: ["fd00:10:96::/112", "10.96.0.0/24"]))
    }

    /// Bad combinations get upstream's field errors, and nothing is allocated for them.
    @Test(arguments: [
        (["ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]],
         #"spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"#),
        (["ipFamilies": ["IPv5"]], #"spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6""#),
        (["ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv4"]], #"spec.ipFamilies[1]: Duplicate value: "IPv4""#),
        (["ipFamilyPolicy": "DualStack"], #"spec.ipFamilyPolicy: Unsupported value: "DualStack": supported values: "PreferDualStack", "RequireDualStack", "SingleStack""#),
        (["ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50", "10.96.0.51"]],
         #"spec.clusterIPs: Invalid value: []string{"10.96.0.50", "10.96.0.51"}: may specify no more than one IP for each IP family"#),
        (["ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.96.0.50", "clusterIPs": ["fd00:10:96::50", "10.96.0.50"]],
         #"spec.clusterIPs: Invalid value: []string{"fd00:10:96::50", "10.96.0.50"}: first value must match `clusterIP`"#),
        (["ipFamilies": ["IPv6"], "clusterIP": "10.96.0.50"], #"spec.clusterIPs[0]: Invalid value: "10.96.0.50": expected an IPv6 value as indicated by `ipFamilies[0]`"#),
        (["clusterIP": "None", "clusterIPs": ["None", "10.96.0.50"]],
         #"spec.clusterIPs: Invalid value: []string{"None", "10.96.0.50"}: 'None' must be the first and only value"#),
        (["ipFamilies": ["IPv6"], "clusterIP": "fd00:99::1"],
         #"spec.clusterIPs: Invalid value: []string{"fd00:99::1"}: failed to allocate IP fd00:99::1: the provided IP (fd00:99::1) is not in the valid range. The range of valid IPs is fd00:10:96::/112"#),
    ] as [([String: JSONValue], String)])
    func badFieldsGetUpstreamsErrors(_ spec: [String: JSONValue], _ message: String) async throws {
        let h = try await Self.handler(Self.dual)
        let r = await Self.create(h, "bad", spec)
        #expect(r.code == 422)
        #expect(r.json?["message"]?.string == #"Service "bad" is invalid: "# + message, "\(r.json?.text() ?? "")")
        // The addresses the refused request named are free.
        let ok = await Self.create(h, "ok", ["ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50", "fd00:10:96::50"]])
        #expect(ok.code == 201, "\(ok.json?.text() ?? "")")
    }

    @Test func upgradeAndDowngrade() async throws {
        let h = try await Self.handler(Self.dual)
        let created = Fields(await Self.create(h, "s", [:]).json)
        #expect(created.families == ["IPv4"])
        // Upgrade: the primary stays, a secondary is allocated.
        let up = await Self.patch(h, "s", ["ipFamilyPolicy": "RequireDualStack"])
        let upgraded = Fields(up.json)
        #expect(upgraded.families == ["IPv4", "IPv6"] && upgraded.ips.first == created.ips.first && upgraded.consistent(with: Self.dual), "\(up.json?.text() ?? "")")
        let secondary = upgraded.ips[1]
        // Dropping the secondary needs SingleStack.
        let reduced = await Self.patch(h, "s", ["clusterIPs": [.string(created.ips[0])]])
        #expect(reduced.json?["message"]?.string == #"Service "s" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be 'SingleStack' to release the secondary cluster IP"#,
                "\(reduced.json?.text() ?? "")")
        // The primary never changes.
        let moved = await Self.patch(h, "s", ["clusterIP": "10.96.0.99", "clusterIPs": ["10.96.0.99", .string(secondary)]])
        #expect(moved.json?["message"]?.string?.contains("spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.99\", \"\(secondary)\"}: may not change once set") == true,
                "\(moved.json?.text() ?? "")")
        let swapped = await Self.patch(h, "s", ["ipFamilies": ["IPv6", "IPv4"]])
        #expect(swapped.code == 422)
        // The address the refused change named was not kept.
        #expect(await Self.create(h, "takes99", ["clusterIP": "10.96.0.99"]).code == 201)
        // Downgrade: SingleStack alone trims both lists, and the secondary address is given back.
        let down = await Self.patch(h, "s", ["ipFamilyPolicy": "SingleStack"])
        #expect(Fields(down.json) == Fields(["spec": ["ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "clusterIPs": [.string(created.ips[0])], "clusterIP": .string(created.ips[0])]]),
                "\(down.json?.text() ?? "")")
        let reuse = await Self.create(h, "reuse", ["ipFamilies": ["IPv6"], "clusterIP": .string(secondary)])
        #expect(reuse.code == 201, "the downgraded Service's IPv6 address is free again: \(reuse.json?.text() ?? "")")
        // A PreferDualStack Service is left as it is by updates that do not touch its addresses.
        let prefer = Fields(await Self.create(h, "prefer", ["ipFamilyPolicy": "PreferDualStack"]).json)
        let relabelled = await h.handle(APIRequest(method: "PATCH", path: "/api/v1/namespaces/default/services/prefer",
                                                   contentType: "application/merge-patch+json", body: body(["metadata": ["labels": ["x": "y"]]])))
        #expect(Fields(relabelled.json) == prefer)
        // Becoming an ExternalName gives back both addresses.
        let ext = await Self.patch(h, "prefer", ["type": "ExternalName", "externalName": "example.com"])
        #expect(ext.code == 200 && Fields(ext.json).ips.isEmpty && Fields(ext.json).policy == nil, "\(ext.json?.text() ?? "")")
        let again = await Self.create(h, "again", ["ipFamilyPolicy": "RequireDualStack", "clusterIP": .string(prefer.ips[0]), "clusterIPs": .array(prefer.ips.map { .string($0) })])
        #expect(again.code == 201, "\(again.json?.text() ?? "")")
    }

    /// Deleting gives back both addresses; a restart rebuilds what both families hold from the store.
    @Test func deletionAndRestart() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-dual-\(UInt32.random(in: 0...UInt32.max)).db").path
        defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
        var h: APIHandler? = try await Self.handler(Self.dual, store: SQLiteStore(path: path))
        let held = Fields(await Self.create(h!, "held", ["ipFamilyPolicy": "RequireDualStack"]).json)
        let gone = Fields(await Self.create(h!, "gone", ["ipFamilyPolicy": "RequireDualStack"]).json)
        #expect(held.ips.count == 2 && gone.ips.count == 2)
        let del = await h!.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/services/gone"))
        #expect(del.code == 200)
        h = nil
        let restarted = try await Self.handler(Self.dual, store: SQLiteStore(path: path))
        let clash = await Self.create(restarted, "clash", ["ipFamilyPolicy": "RequireDualStack", "clusterIP": .string(held.ips[0]), "clusterIPs": .array(held.ips.map { .string($0) })])
        #expect(clash.json?["message"]?.string?.contains("provided IP is already allocated") == true, "\(clash.json?.text() ?? "")")
        let six = await Self.create(restarted, "six", ["ipFamilies": ["IPv6"], "clusterIP": .string(held.ips[1])])
        #expect(six.json?["message"]?.string?.contains("failed to allocate IP \(held.ips[1]): provided IP is already allocated") == true)
        let reuse = await Self.create(restarted, "reuse", ["ipFamilyPolicy": "RequireDualStack", "clusterIP": .string(gone.ips[0]), "clusterIPs": .array(gone.ips.map { .string($0) })])
        #expect(reuse.code == 201, "\(reuse.json?.text() ?? "")")
    }

    /// An IPv6 range hands out each address once, skipping the subnet's own and the first, then says it is full.
    @Test func anIPv6RangeFillsUp() async throws {
        let a = Allocator(serviceRanges: [CIDR("10.96.0.0/24")!, CIDR("fd00:10:96::/125")!])
        var got: [String] = []
        while let ip = try await a.allocateIP(family: .ipv6) { got.append(ip) }
        #expect(got == (2...7).map { "fd00:10:96::\($0)" })
        await a.release(ip: "fd00:10:96::4")
        #expect(try await a.allocateIP(family: .ipv6) == "fd00:10:96::4")
        #expect(try await a.take(ip: "fd00:10:96::1") == true)   // the kubernetes Service's, taken by name
        #expect(try await a.take(ip: "fd00:10:96::8") == false)  // outside the /125
        #expect(try await a.allocateIP(family: .ipv4) == "10.96.0.2")
        let single = Allocator(serviceRange: CIDR("10.96.0.0/24")!)
        #expect(try await single.allocateIP(family: .ipv6) == nil)
        // The bitmap's limit: a /64 still hands out addresses, from its first 2^20.
        let wide = Allocator(serviceRanges: [CIDR("fd00:10:96::/64")!])
        #expect(try await wide.allocateIP() == "fd00:10:96::2")
        #expect(try await wide.take(ip: "fd00:10:96::1:0:2") == false)   // beyond the first 2^20: not aliased to ::2
        #expect(try await wide.take(ip: "fd00:10:96::3") == true)
    }

    /// networking.k8s.io/v1 ServiceCIDRs: the `kubernetes` one kept as upstream's default-ServiceCIDR
    /// controller keeps it (created Ready with the server's ranges, upgraded single to dual, a
    /// differing one left with a warning), and others validated as `ValidateServiceCIDR` does.
    @Test func serviceCIDRs() async throws {
        let store = try SQLiteStore(path: ":memory:")
        let single = try await Self.handler(["10.96.0.0/24"], store: store)
        #expect(try await single.ensureDefaultServiceCIDR([CIDR("10.96.0.0/24")!]) == nil)
        let path = "/apis/networking.k8s.io/v1/servicecidrs"
        func cidrs(_ h: APIHandler) async -> (cidrs: [String], ready: Bool) {
            let o = await h.handle(APIRequest(method: "GET", path: "\(path)/kubernetes")).json
            let ready = (o?[path: ["status", "conditions"]]?.array ?? []).contains {
                $0["type"]?.string == "Ready" && $0["status"]?.string == "True" && $0["message"]?.string == "Kubernetes default Service CIDR is ready"
            }
            return ((o?[path: ["spec", "cidrs"]]?.array ?? []).compactMap(\.string), ready)
        }
        var got = await cidrs(single)
        #expect(got.cidrs == ["10.96.0.0/24"] && got.ready)
        // The same store under a dual-stack server: the IPv6 range joins.
        let dual = try await Self.handler(Self.dual, store: store)
        #expect(try await dual.ensureDefaultServiceCIDR(Self.dual.map { CIDR($0)! }) == nil)
        got = await cidrs(dual)
        #expect(got.cidrs == Self.dual && got.ready)
        // Another primary range: left as it is, with a warning.
        let warning = try await dual.ensureDefaultServiceCIDR([CIDR("10.100.0.0/24")!])
        #expect(warning?.contains("not this server's --service-cluster-ip-range 10.100.0.0/24") == true)
        #expect(await cidrs(dual).cidrs == Self.dual)

        func create(_ name: String, _ c: [String]) async -> APIResponse {
            await dual.post(path, ["apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": ["name": .string(name)],
                                   "spec": ["cidrs": .array(c.map(JSONValue.string))]])
        }
        func message(_ r: APIResponse) -> String { r.json?["message"]?.string ?? "" }
        #expect(await create("extra", ["10.97.0.0/24"]).code == 201)
        let none = await create("none", [])
        #expect(none.code == 422 && message(none).contains("spec.cidrs: Required value: at least one CIDR required"), "\(message(none))")
        let three = await create("three", ["10.1.0.0/24", "fd00::/64", "10.2.0.0/24"])
        #expect(three.code == 422 && message(three).contains("may only hold up to 2 values"), "\(message(three))")
        let same = await create("same", ["10.1.0.0/24", "10.2.0.0/24"])
        #expect(same.code == 422 && message(same).contains(
            #"spec.cidrs: Invalid value: networking.ServiceCIDRSpec{CIDRs:[]string{"10.1.0.0/24", "10.2.0.0/24"}}: may specify no more than one IP for each IP family"#),
                "\(message(same))")
        let bad = await create("bad", ["10.1.0.0/33"])
        #expect(bad.code == 422 && message(bad).contains(#"spec.cidrs[0]: Invalid value: "10.1.0.0/33": must be a valid CIDR value"#), "\(message(bad))")
        // Immutable, but for a second family joining the first.
        func put(_ c: [String]) async -> APIResponse {
            var o = await dual.handle(APIRequest(method: "GET", path: "\(path)/extra")).json!
            o[path: ["spec", "cidrs"]] = .array(c.map(JSONValue.string))
            return await dual.handle(APIRequest(method: "PUT", path: "\(path)/extra", body: o.serialized()))
        }
        let changed = await put(["10.98.0.0/24"])
        #expect(changed.code == 422 && message(changed).contains(#"spec.cidrs: Invalid value: []string{"10.98.0.0/24"}: field is immutable"#), "\(message(changed))")
        #expect(await put(["10.97.0.0/24", "fd00:10:97::/112"]).code == 200)
        // kubectl's table: name, the ranges, age.
        let table = await dual.handle(APIRequest(method: "GET", path: path, accept: "application/json;as=Table;v=v1;g=meta.k8s.io")).json
        let names = table?["columnDefinitions"]?.array?.compactMap { $0["name"]?.string }
        #expect(names == ["Name", "CIDRs", "Age"])
        let rows = table?["rows"]?.array?.compactMap { $0["cells"]?.array?.prefix(2).compactMap(\.string) } ?? []
        #expect(rows.contains(["kubernetes", "10.96.0.0/24,fd00:10:96::/112"]), "\(rows)")
    }
}
