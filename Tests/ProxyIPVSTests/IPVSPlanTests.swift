import Foundation
import KubeAPI
import Netlink
import NetnsKit
import ProxyCore
@testable import ProxyIPVS
import Testing

func service(_ name: String, ip: String, type: String = "ClusterIP", ports: [ServicePort], affinity: Int? = nil,
             externalIPs: [String] = [], lb: [String] = [], etpLocal: Bool = false) -> Service {
    var s = Service(metadata: ObjectMeta(name: name, namespace: "default"), spec: ServiceSpec(type: type, clusterIP: ip, ports: ports))
    if let affinity {
        s.spec.sessionAffinity = "ClientIP"
        s.spec.sessionAffinityConfig = SessionAffinityConfig(clientIP: ClientIPConfig(timeoutSeconds: affinity))
    }
    s.spec.externalIPs = externalIPs.isEmpty ? nil : externalIPs
    if !lb.isEmpty { s.status = ServiceStatus(loadBalancer: LoadBalancerStatus(ingress: lb.map { LoadBalancerIngress(ip: $0) })) }
    if etpLocal { s.spec.externalTrafficPolicy = "Local" }
    return s
}

func slice(_ svc: String, _ eps: [(String, String)], ports: [EndpointPort]) -> EndpointSlice {
    EndpointSlice(metadata: ObjectMeta(name: "\(svc)-1", namespace: "default", labels: [EndpointSlice.serviceNameLabel: svc]),
                  endpoints: eps.map { Endpoint(addresses: [$0.0], conditions: EndpointConditions(ready: true), nodeName: $0.1) },
                  ports: ports)
}

/// A node with two services: web (TCP 80 and UDP 53, NodePort, an externalIP, a load balancer IP,
/// externalTrafficPolicy Local) and sticky (ClientIP affinity).
func sampleSnapshot() -> ProxySnapshot {
    var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!]))
    t.update(service: service("web", ip: "10.96.0.10", type: "LoadBalancer",
                              ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30080),
                                      ServicePort(name: "dns", protocol: "UDP", port: 53, targetPort: .int(5353), nodePort: 30053)],
                              externalIPs: ["203.0.113.5"], lb: ["198.51.100.7"], etpLocal: true))
    t.update(slice: slice("web", [("10.244.1.3", "node-a"), ("10.244.2.9", "node-b")],
                          ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080), EndpointPort(name: "dns", protocol: "UDP", port: 5353)]))
    t.update(service: service("sticky", ip: "10.96.0.20", ports: [ServicePort(port: 443, targetPort: .int(8443))], affinity: 600))
    t.update(slice: slice("sticky", [("10.244.1.4", "node-a")], ports: [EndpointPort(protocol: "TCP", port: 8443)]))
    return t.snapshot().0
}

@Suite("IPVS mode: plan and render")
struct IPVSPlanTests {
    @Test func virtualServersForEveryKindOfServiceAddress() {
        let plan = IPVSPlan(sampleSnapshot(), options: IPVSOptions())
        func reals(_ ip: String, _ port: UInt16, _ proto: UInt8 = IPVSService.tcp) -> [String]? {
            plan.servers.first { $0.service.address == IPNet.parseIP(ip)! && $0.service.port == port && $0.service.proto == proto }?
                .realServers.map { "\(IPNet.format($0.address)):\($0.port)" }.sorted()
        }
        // ClusterIP: every endpoint; external addresses under externalTrafficPolicy Local: this node's only.
        #expect(reals("10.96.0.10", 80) == ["10.244.1.3:8080", "10.244.2.9:8080"])
        #expect(reals("203.0.113.5", 80) == ["10.244.1.3:8080"])
        #expect(reals("198.51.100.7", 80) == ["10.244.1.3:8080"])
        #expect(reals("192.168.0.10", 30080) == ["10.244.1.3:8080"])
        #expect(reals("10.96.0.10", 53, IPVSService.udp) == ["10.244.1.3:5353", "10.244.2.9:5353"])
        #expect(reals("192.168.0.10", 30053, IPVSService.udp) == ["10.244.1.3:5353"])
        // ClientIP affinity is persistence with the Service's timeout.
        let sticky = plan.servers.first { $0.service.port == 443 }!.service
        #expect(sticky.flags & IPVSService.persistent != 0 && sticky.timeout == 600)
        #expect(plan.servers.count == 9)
        #expect(plan.boundAddresses == ["10.96.0.10", "10.96.0.20", "198.51.100.7", "203.0.113.5"])
    }

    @Test func rendersAsIpvsadmListsAndSaves() {
        var o = IPVSOptions()
        o.scheduler = "wlc"
        let plan = IPVSPlan(sampleSnapshot(), options: o)
        let list = IPVSRenderer.listing(plan)
        let lines = list.split(separator: "\n").map(String.init)
        #expect(lines[0] == "IP Virtual Server version 1.2.1 (size=4096)")
        // Sorted as ipvsadm sorts: TCP before UDP, then by its wrapping address difference and port
        // (so 192.168.0.10 comes before 10.96.0.10, as in ipvsadm's own output).
        #expect(lines[3] == "TCP  192.168.0.10:30080 wlc")
        #expect(lines[4] == "  -> 10.244.1.3:8080              Masq    1      0          0         ")
        #expect(list.firstRange(of: "TCP  203.0.113.5:80")!.lowerBound < list.firstRange(of: "TCP  10.96.0.10:80")!.lowerBound)
        #expect(list.contains("TCP  10.96.0.20:443 wlc persistent 600\n"))
        #expect(list.firstRange(of: "TCP  203.0.113.5:80")!.lowerBound < list.firstRange(of: "UDP  10.96.0.10:53")!.lowerBound)
        let save = IPVSRenderer.save(plan)
        #expect(save.contains("-A -t 10.96.0.20:443 -s wlc -p 600\n-a -t 10.96.0.20:443 -r 10.244.1.4:8443 -m -w 1\n"))
        #expect(save.contains("-A -u 192.168.0.10:30053 -s wlc\n-a -u 192.168.0.10:30053 -r 10.244.1.3:5353 -m -w 1\n"))
    }

    @Test func nodePortAddressesAndNoEndpoints() {
        var o = IPVSOptions()
        o.nodePortAddresses = [IPAddress("10.0.0.1")!, IPAddress("10.0.0.2")!]
        var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!]))
        t.update(service: service("empty", ip: "10.96.0.30", type: "NodePort", ports: [ServicePort(port: 80, nodePort: 30001)]))
        let plan = IPVSPlan(t.snapshot().0, options: o)
        // A service without endpoints still gets its virtual servers (connections are refused), none with real servers.
        #expect(plan.servers.map { IPNet.format($0.service.address) }.sorted() == ["10.0.0.1", "10.0.0.2", "10.96.0.30"])
        #expect(plan.servers.allSatisfy { $0.realServers.isEmpty })
    }
}

/// Whether the kernel has IPVS (loading the module if it can).
let kernelHasIPVS: Bool = {
    guard isRoot else { return false }
    _ = try? Sh.run(["modprobe", "ip_vs"])
    return (try? GenericNetlink.familyID("IPVS")) != nil
}()

@Suite("IPVS mode in a kernel with IPVS", .enabled(if: isRoot, "needs root"))
struct IPVSKernelTests {
    /// What `render` prints is what `ipvsadm` shows once the plan is programmed.
    @Test(.enabled(if: kernelHasIPVS, "no IPVS in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func ipvsadmShowsWhatRenderPrinted() throws {
        let ns = "syipvs\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        let plan = IPVSPlan(sampleSnapshot(), options: IPVSOptions())
        let ipvs = try IPVS(in: .named(ns))
        for s in plan.servers {
            try ipvs.addService(s.service)
            for r in s.realServers { try ipvs.addDestination(r, to: s.service) }
        }
        let shown = try Sh.must(["ip", "netns", "exec", ns, "ipvsadm", "-Ln"])
        #expect(shown == IPVSRenderer.listing(plan), "ipvsadm -Ln:\n\(shown)\nrendered:\n\(IPVSRenderer.listing(plan))")
        let saved = try Sh.must(["ip", "netns", "exec", ns, "ipvsadm-save", "-n"])
        #expect(saved == IPVSRenderer.save(plan), "ipvsadm-save -n:\n\(saved)\nrendered:\n\(IPVSRenderer.save(plan))")
        // And what the kernel lists reads back as the plan.
        let listed = try ipvs.services()
        #expect(Set(listed.map { "\($0.proto) \(IPNet.format($0.address)):\($0.port) \($0.scheduler) \($0.timeout)" })
                == Set(plan.servers.map { "\($0.service.proto) \(IPNet.format($0.service.address)):\($0.service.port) \($0.service.scheduler) \($0.service.timeout)" }))
    }
}
