import KubeAPI
import NetnsKit
import Testing
import ProxySeam

/// A node namespace running one proxy mode in-process, with two pods ("a" at 10.244.1.2, "b" at
/// 10.244.1.3) serving TCP 8080 and UDP 5353, and a client outside: the iptables, nftables and
/// userspace labs.
protocol ModeLab: AnyObject {
    var lab: Lab { get }
    var tracker: ChangeTracker { get set }
    func sync() async throws -> SyncOutcome
}

/// The iptables mode's namespace scenarios, which every mode's tests run the same way.
enum Scenarios {
    /// `web` (TCP 80 and UDP 53, NodePorts 30080 and 30053) over both pods; synced.
    static func web(_ t: some ModeLab) async throws -> SyncOutcome {
        t.tracker.update(service: service("web", ip: "10.96.0.10", type: "NodePort", ports: webPorts))
        t.tracker.update(slice: slice("web", ["10.244.1.2", "10.244.1.3"], ports: webSlicePorts))
        return try await t.sync()
    }

    /// The pods that answer `ask`, asked until both did or 40 times.
    static func answers(_ ask: () -> String?) -> Set<String> {
        var seen = Set<String>()
        for _ in 0..<40 where seen.count < 2 {
            if let r = ask() { seen.insert(r) }
        }
        return seen
    }

    /// `web`'s ClusterIP reaches both pods from the client, over TCP and over UDP.
    static func clusterIPReachesBothPods(_ t: some ModeLab) {
        #expect(answers { t.lab.tcp("10.96.0.10", 80) } == ["a", "b"], "TCP through the ClusterIP should reach both backends")
        #expect(answers { t.lab.udp("10.96.0.10", 53) } == ["a", "b"], "UDP through the ClusterIP should reach both backends")
    }

    /// A ClientIP-affinity Service over both pods: every connection from the client reaches one.
    static func affinityPinsClient(_ t: some ModeLab) async throws {
        t.tracker.update(service: service("sticky", ip: "10.96.0.20", ports: [ServicePort(port: 80, targetPort: .int(8080))], affinity: true))
        t.tracker.update(slice: slice("sticky", ["10.244.1.2", "10.244.1.3"], ports: [EndpointPort(protocol: "TCP", port: 8080)]))
        _ = try await t.sync()
        var seen = Set<String>()
        for _ in 0..<12 {
            if let r = t.lab.tcp("10.96.0.20", 80) { seen.insert(r) }
        }
        #expect(seen.count == 1, "ClientIP affinity should pin the client, got \(seen)")
    }
}
