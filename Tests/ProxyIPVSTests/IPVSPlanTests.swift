import Foundation
import KubeAPI
import Netlink
import NetnsKit
@testable import ProxyIPVS
import Testing
import ProxySeam
import HostOS
import IPTablesKit

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

    @Test func aSharedAddressAndPortIsOneVirtualServer() {
        var t = ChangeTracker(node: NodeInfo(name: "node-a"))
        t.update(service: service("one", ip: "10.96.0.41", ports: [ServicePort(port: 80)], externalIPs: ["203.0.113.9", "203.0.113.9"]))
        t.update(service: service("two", ip: "10.96.0.42", ports: [ServicePort(port: 80)], externalIPs: ["203.0.113.9"]))
        let plan = IPVSPlan(t.snapshot().0, options: IPVSOptions())
        #expect(plan.servers.filter { IPNet.format($0.service.address) == "203.0.113.9" }.count == 1)
        #expect(plan.servers.count == 3)
    }

    @Test func nodePortAddressesAndNoEndpoints() {
        var o = IPVSOptions()
        o.nodePortIPs = [IPAddress("10.0.0.1")!, IPAddress("10.0.0.2")!]
        var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress("192.168.0.10")!]))
        t.update(service: service("empty", ip: "10.96.0.30", type: "NodePort", ports: [ServicePort(port: 80, nodePort: 30001)]))
        let plan = IPVSPlan(t.snapshot().0, options: o)
        // A service without endpoints still gets its virtual servers (connections are refused), none with real servers.
        #expect(plan.servers.map { IPNet.format($0.service.address) }.sorted() == ["10.0.0.1", "10.0.0.2", "10.96.0.30"])
        #expect(plan.servers.allSatisfy { $0.realServers.isEmpty })
    }
}

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

/// The IPVS mode's kernel sync in a namespace lab (in the qemu guest on this machine): traffic
/// through a ClusterIP and a NodePort, adoption by a restarted proxy, graceful termination.
@Suite("IPVS mode in network namespaces", .enabled(if: isRoot, "needs root"))
struct IPVSLabTests {
    @Test(.enabled(if: kernelHasIPVS, "no IPVS in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func clusterIPNodePortAdoptionAndGracefulTermination() async throws {
        let lab = try Lab()
        defer { lab.destroy() }
        try lab.addServingPods(tcpPort: 8080, udpPort: 5353)
        let holdA = try EchoServer(netns: lab.pods["a"]!, port: 9090, greeting: "a")
        defer { holdA.stop() }
        let holdB = try EchoServer(netns: lab.pods["b"]!, port: 9090, greeting: "b")
        defer { holdB.stop() }
        try lab.routeFromClient("10.96.0.0/12")
        var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(lab.nodeClientIP)!]))
        t.update(service: service("web", ip: "10.96.0.10", type: "NodePort",
                                  ports: [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080), nodePort: 30080),
                                          ServicePort(name: "dns", protocol: "UDP", port: 53, targetPort: .int(5353))]))
        t.update(slice: slice("web", [("10.244.1.2", "node-a"), ("10.244.1.3", "node-a")],
                              ports: [EndpointPort(name: "http", protocol: "TCP", port: 8080), EndpointPort(name: "dns", protocol: "UDP", port: 5353)]))
        t.update(service: service("hold", ip: "10.96.0.30", ports: [ServicePort(port: 90, targetPort: .int(9090))]))
        t.update(slice: slice("hold", [("10.244.1.2", "node-a")], ports: [EndpointPort(protocol: "TCP", port: 9090)]))
        let ipvs = try IPVS(in: .named(lab.node))
        let links = try RouteHandle(in: .named(lab.node))
        let ipt = SystemIPTables(runner: CommandRunner(netns: lab.node)), ipset = SystemIPSet(runner: CommandRunner(netns: lab.node))
        let proxier = IPVSProxier(ipvs: ipvs, links: links, ipt: ipt, ipset: ipset, options: IPVSOptions())
        _ = try await proxier.sync(SyncRequest(snapshot: t.snapshot().0, changedServices: nil))
        #expect(try Sh.must(["ip", "-n", lab.node, "addr", "show", "kube-ipvs0"]).contains("10.96.0.10/32"))

        var seen = Set<String>()
        for _ in 0..<30 where seen.count < 2 { if let r = lab.tcp("10.96.0.10", 80) { seen.insert(r) } }
        #expect(seen == ["a", "b"], "TCP through the ClusterIP reaches both pods")
        var udp = Set<String>()
        for _ in 0..<30 where udp.count < 2 { if let r = lab.udp("10.96.0.10", 53) { udp.insert(r) } }
        #expect(udp == ["a", "b"], "UDP through the ClusterIP reaches both pods")
        let np = lab.tcp(lab.nodeClientIP, 30080)
        #expect(np == "a" || np == "b", "the NodePort on the node's address")

        // A restarted proxy adopts what is there and writes nothing (IPVS, ipsets, iptables rules).
        let restarted = IPVSProxier(ipvs: ipvs, links: links, ipt: ipt, ipset: ipset, options: IPVSOptions())
        let again = try await restarted.sync(SyncRequest(snapshot: t.snapshot().0, changedServices: nil))
        #expect(again.objectsWritten == 0)

        // An open connection to a removed endpoint keeps working at weight 0; new ones go elsewhere.
        let fd = try inNamespace(lab.client) { () -> Int32 in
            guard let fd = TCP.connect("10.96.0.30", 90, timeout: 3) else { throw LabError("connect to 10.96.0.30:90") }
            return fd
        }
        defer { close(fd) }
        #expect(TCP.receive(fd, count: 1) == Array("a".utf8))
        t.update(slice: slice("hold", [("10.244.1.3", "node-a")], ports: [EndpointPort(protocol: "TCP", port: 9090)]))
        let change = try await restarted.sync(SyncRequest(snapshot: t.snapshot().0, changedServices: [NamespacedName(namespace: "default", name: "hold")]))
        // One real server added, one set to weight 0, and the hairpin set's entry of each endpoint swapped.
        #expect(!change.full && change.objectsWritten == 4, "\(change.objectsWritten) objects written")
        #expect(try ipset.save()["KUBE-LOOP-BACK"] == ["10.244.1.2,tcp:8080,10.244.1.2", "10.244.1.3,tcp:8080,10.244.1.3",
                                                      "10.244.1.2,udp:5353,10.244.1.2", "10.244.1.3,udp:5353,10.244.1.3",
                                                      "10.244.1.3,tcp:9090,10.244.1.3"])
        let listed = try Sh.must(["ip", "netns", "exec", lab.node, "ipvsadm", "-Ln", "-t", "10.96.0.30:90"])
        #expect(listed.contains("-> 10.244.1.2:9090              Masq    0      1"), "draining at weight 0 with its connection: \(listed)")
        #expect(restarted.draining.count == 1)
        #expect(TCP.send(fd, Array("ping".utf8)) && TCP.receive(fd, count: 4) == Array("ping".utf8), "the open connection still works")
        let fresh = try inNamespace(lab.client) { () -> [UInt8] in
            guard let f = TCP.connect("10.96.0.30", 90, timeout: 3) else { return [] }
            defer { close(f) }
            return TCP.receive(f, count: 1)
        }
        #expect(fresh == Array("b".utf8), "new connections go to the remaining endpoint")

        // Cleanup leaves no virtual server, no kube-ipvs0, no rule and no set.
        try await restarted.cleanup()
        #expect(try ipvs.services().isEmpty)
        #expect(try links.link(named: "kube-ipvs0") == nil)
        #expect(try ipset.save().isEmpty)
        #expect(!(try Sh.must(["ip", "netns", "exec", lab.node, "iptables-save"])).contains("KUBE-"))
    }

    /// The iptables mode's other scenarios against this mode: masquerading (from outside the
    /// pods, not from them; NodePorts; a pod reaching itself), load balancer source ranges, a
    /// service without endpoints, a port kube-ipvs0 does not serve, ClientIP affinity, and a
    /// scheduler change by a restarted proxy.
    @Test(.enabled(if: kernelHasIPVS, "no IPVS in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func masqueradeSourceRangesNoEndpointsAffinityAndScheduler() async throws {
        let lab = try Lab()
        defer { lab.destroy() }
        try lab.addServingPods(tcpPort: 8080)
        try lab.servePeerAddress(pod: "a", tcpPort: 7070)
        try lab.routeFromClient("10.96.0.0/12", "192.0.2.0/24")
        var t = ChangeTracker(node: NodeInfo(name: "node-a", ips: [IPAddress(lab.nodeClientIP)!]))
        let http = [EndpointPort(protocol: "TCP", port: 8080)]
        t.update(service: service("peer", ip: "10.96.0.50", type: "NodePort", ports: [ServicePort(port: 70, targetPort: .int(7070), nodePort: 30070)]))
        t.update(slice: slice("peer", [("10.244.1.2", "node-a")], ports: [EndpointPort(protocol: "TCP", port: 7070)]))
        t.update(service: service("self", ip: "10.96.0.51", ports: [ServicePort(port: 80, targetPort: .int(8080))]))
        t.update(slice: slice("self", [("10.244.1.2", "node-a")], ports: http))
        for (name, ip, lb, range) in [("open", "10.96.0.52", "192.0.2.10", lab.clientIP + "/32"), ("closed", "10.96.0.53", "192.0.2.11", "198.51.100.0/24")] {
            var s = service(name, ip: ip, type: "LoadBalancer", ports: [ServicePort(port: 80, targetPort: .int(8080), nodePort: name == "open" ? 30052 : 30053)], lb: [lb])
            s.spec.loadBalancerSourceRanges = [range]
            t.update(service: s)
            t.update(slice: slice(name, [("10.244.1.2", "node-a"), ("10.244.1.3", "node-a")], ports: http))
        }
        t.update(service: service("empty", ip: "10.96.0.54", ports: [ServicePort(port: 9000)]))
        t.update(service: service("sticky", ip: "10.96.0.55", ports: [ServicePort(port: 80, targetPort: .int(8080))], affinity: 300))
        t.update(slice: slice("sticky", [("10.244.1.2", "node-a"), ("10.244.1.3", "node-a")], ports: http))
        var o = IPVSOptions()
        o.localDetector = .cidrs([CIDR("10.244.0.0/16")!])
        let ipvs = try IPVS(in: .named(lab.node))
        let links = try RouteHandle(in: .named(lab.node))
        let ipt = SystemIPTables(runner: CommandRunner(netns: lab.node)), ipset = SystemIPSet(runner: CommandRunner(netns: lab.node))
        defer { _ = try? IPVSRules.remove(ipt: ipt, ipset: ipset) }
        _ = try await IPVSProxier(ipvs: ipvs, links: links, ipt: ipt, ipset: ipset, options: o)
            .sync(SyncRequest(snapshot: t.snapshot().0, changedServices: nil))

        // From outside the pod network: masqueraded to the node's bridge address; from a pod: not.
        #expect(lab.tcp("10.96.0.50", 70)?.hasPrefix(lab.bridgeIP) == true, "client to a ClusterIP is masqueraded")
        #expect(lab.tcp("10.96.0.50", 70, from: lab.pods["b"]!)?.hasPrefix("10.244.1.3") == true, "pod to a ClusterIP keeps its address")
        #expect(lab.tcp(lab.nodeClientIP, 30070)?.hasPrefix(lab.bridgeIP) == true, "NodePort traffic is masqueraded")
        // A pod reaching itself through its service: masqueraded by KUBE-LOOP-BACK, and its port in
        // hairpin mode, as kubelet and the bridge plugin's hairpinMode set it (the reply, de-NATed
        // on the bridge, leaves by the port it came in on).
        try Sh.must(["ip", "-n", lab.node, "link", "set", "vetha", "type", "bridge_slave", "hairpin", "on"])
        #expect(lab.tcp("10.96.0.51", 80, from: lab.pods["a"]!) == "a", "hairpin")
        // Load balancer source ranges: the client's address is allowed on one, not on the other.
        // (Under the guest's emulated CPU, with other tests beside it, a first connection can take
        // longer than a couple of seconds: a few tries, each with time of its own.)
        var allowed: String?
        for _ in 0..<3 where allowed == nil { allowed = lab.tcp("192.0.2.10", 80, timeout: 5) }
        #expect(allowed == "a" || allowed == "b", "source range that holds the client")
        #expect(lab.tcp("192.0.2.11", 80, timeout: 1) == nil, "source range that does not")
        // No endpoints: IPVS answers with a port unreachable, seen as "connection refused".
        let empty = try Sh.run(["ip", "netns", "exec", lab.client, "socat", "-T2", "-", "TCP:10.96.0.54:9000,connect-timeout=2"], input: "")
        #expect(empty.status != 0 && empty.err.contains("refused"), "no endpoints: \(empty.err)")
        // A port no service has on a kube-ipvs0 address: rejected by KUBE-IPVS-FILTER.
        let stray = try Sh.run(["ip", "netns", "exec", lab.client, "socat", "-T2", "-", "TCP:10.96.0.51:81,connect-timeout=2"], input: "")
        #expect(stray.status != 0 && stray.err.contains("refused"), "stray port: \(stray.err)")
        // ClientIP affinity: one client, one backend.
        var seen = Set<String>()
        for _ in 0..<12 { if let r = lab.tcp("10.96.0.55", 80) { seen.insert(r) } }
        #expect(seen.count == 1, "affinity pins the client: \(seen)")

        // A restart with another scheduler updates every virtual server and nothing else.
        let before = try ipvs.services()
        o.scheduler = "wlc"
        let again = try await IPVSProxier(ipvs: ipvs, links: links, ipt: ipt, ipset: ipset, options: o)
            .sync(SyncRequest(snapshot: t.snapshot().0, changedServices: nil))
        let after = try ipvs.services()
        #expect(after.count == before.count && after.allSatisfy { $0.scheduler == "wlc" })
        #expect(again.objectsWritten == before.count, "\(again.objectsWritten) written for \(before.count) virtual servers")
        #expect(try Sh.must(["ip", "netns", "exec", lab.node, "ipvsadm", "-Ln", "-t", "10.96.0.51:80"]).contains("10.96.0.51:80 wlc"))
        #expect(lab.tcp("10.96.0.51", 80) == "a", "traffic still flows after the change")
    }
}
