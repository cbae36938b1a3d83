import Foundation
@testable import APIServer
import KubeAPI
import KubeStore
import Testing

/// Two API servers' handlers on one store, as several kube-apiservers on one etcd: each has its
/// own allocator, and the claims in the store keep them from handing out one address or port twice.
@Suite("Allocation claims")
struct AllocationClaimsTests {
    func pair(claims: Bool) async throws -> (APIHandler, APIHandler, any Store) {
        let store = try SQLiteStore(path: ":memory:")
        func handler() -> APIHandler {
            APIHandler(store: store, admission: Admission(allocator: Allocator(serviceRange: CIDR("10.96.0.0/27")!, nodePorts: 30000...30040,
                                                                                claims: claims ? StoreClaims(store: store) : nil)))
        }
        let a = handler(), b = handler()
        let r = await a.post("/api/v1/namespaces", ["metadata": ["name": "default"]])
        #expect(r.code == 201)
        return (a, b, store)
    }

    @Test func withoutClaimsTwoServersHandOutTheSameAddress() async throws {
        let (a, b, _) = try await pair(claims: false)
        let x = await a.post("/api/v1/namespaces/default/services", svc("x")).json?[path: ["spec", "clusterIP"]]?.string
        let y = await b.post("/api/v1/namespaces/default/services", svc("y")).json?[path: ["spec", "clusterIP"]]?.string
        // What the claims are for: each server's memory alone gives both the first free address.
        #expect(x != nil && x == y)
    }

    /// A server starting on a store whose Services were written without claims claims what they
    /// hold, once; a second start finds the claims made.
    @Test func servicesStoredBeforeClaimsAreClaimedAtStart() async throws {
        let (a, _, store) = try await pair(claims: false)
        let old = await a.post("/api/v1/namespaces/default/services", svc("old", type: "NodePort")).json
        let ip = try #require(old?[path: ["spec", "clusterIP"]]?.string)
        let port = try #require(old?[path: ["spec", "ports"]]?.array?.first?["nodePort"]?.int)
        #expect(try await store.get("/registry/ipaddresses/\(ip)") == nil)
        for _ in 0..<2 {
            let admission = Admission(allocator: Allocator(serviceRange: CIDR("10.96.0.0/27")!, nodePorts: 30000...30040, claims: StoreClaims(store: store)))
            try await admission.load(from: store)
        }
        #expect(try await store.get("/registry/ipaddresses/\(ip)") != nil)
        #expect(try await store.get("/registry/servicenodeports/\(port)") != nil)
        #expect(try await store.count(prefix: "/registry/ipaddresses/") == 1)
    }

    @Test func serversSharingAStoreNeverHandOutAnAddressOrPortTwice() async throws {
        let (a, b, store) = try await pair(claims: true)
        // Both at once, alternating, as a balancer spreads one client's writes.
        let created = await withTaskGroup(of: JSONValue?.self) { g in
            for i in 0..<24 {
                let h = i % 2 == 0 ? a : b
                g.addTask { await h.post("/api/v1/namespaces/default/services", svc("s\(i)", type: "NodePort")).json }
            }
            var out: [JSONValue] = []
            for await o in g { if let o { out.append(o) } }
            return out
        }
        let ips = created.compactMap { $0[path: ["spec", "clusterIP"]]?.string }
        let ports = created.compactMap { $0[path: ["spec", "ports"]]?.array?.first?["nodePort"]?.int }
        #expect(ips.count == 24 && Set(ips).count == 24)
        #expect(ports.count == 24 && Set(ports).count == 24)
        #expect(try await store.count(prefix: "/registry/ipaddresses/") == 24)
        #expect(try await store.count(prefix: "/registry/servicenodeports/") == 24)

        // An address one server handed out is refused by the other, as kube-apiserver words it.
        let taken = ips[0]
        var asked = svc("dup")
        asked[path: ["spec", "clusterIP"]] = .string(taken)
        let refused = await b.post("/api/v1/namespaces/default/services", asked)
        #expect(refused.code == 422)
        #expect(refused.json?["message"]?.string?.contains("provided IP is already allocated") == true)

        // Deleted through one server, the address is free for the other, which still thought it taken.
        let holder = created.first { $0[path: ["spec", "clusterIP"]]?.string == taken }!["metadata"]!["name"]!.string!
        let gone = await a.handle(APIRequest(method: "DELETE", path: "/api/v1/namespaces/default/services/\(holder)"))
        #expect(gone.code == 200)
        #expect(try await store.get("/registry/ipaddresses/\(taken)") == nil)
        let again = await b.post("/api/v1/namespaces/default/services", asked)
        #expect(again.code == 201)
        #expect(again.json?[path: ["spec", "clusterIP"]]?.string == taken)
    }
}
