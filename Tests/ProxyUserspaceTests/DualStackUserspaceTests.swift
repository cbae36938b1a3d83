import Foundation
import IPTablesKit
import KubeAPI
import NetnsKit
import ProxySeam
@testable import ProxyUserspace
import Testing

/// The userspace mode on IPv6: addresses of both families in the data path, the IPv6 proxier's
/// listeners and portal rules, and IPv6 traffic carried through a listener on ::1.
@Suite("userspace mode: IPv6 and dual-stack")
struct DualStackUserspaceTests {
    @Test func addressesOfBothFamiliesReadAndPrintAsTheKernelDoes() {
        for text in ["10.0.0.1", "0.0.0.0", "255.255.255.255", "fd00:10:96::10", "::1", "::", "2001:db8:0:1:1:1:1:1", "fe80::1"] {
            #expect(HostAddress(text)?.description == text, "\(text)")
        }
        #expect(HostAddress("fd00:10:96:0:0:0:0:10")?.description == "fd00:10:96::10", "RFC 5952's form, as inet_ntop writes it")
        for bad in ["", "10.0.0", "10.0.0.256", "fd00::10::1", "host", "10.0.0.1/32"] { #expect(HostAddress(bad) == nil, "\(bad)") }
        #expect(HostAddress("10.0.0.1")!.isIPv6 == false && HostAddress("::ffff:10.0.0.1")!.isIPv6 == true)
        #expect(SocketEndpoint("fd00::2", port: 8080)?.description == "[fd00::2]:8080")
        #expect(SocketEndpoint("10.0.0.2", port: 8080)?.description == "10.0.0.2:8080")
        #expect(SocketEndpoint("10.0.0.2", port: 70000) == nil)
        // The socket calls' form and back.
        for text in ["10.1.2.3", "fd00:10:244:1::2", "::1"] { #expect(HostAddress(HostAddress(text)!.c) == HostAddress(text)!) }
        #expect(HostAddress("10.0.0.1")! < HostAddress("10.0.0.2")! && HostAddress("255.0.0.0")! < HostAddress("::1")!)
    }

    /// The IPv6 proxier plans the Service's IPv6 half only: its IPv6 ClusterIP and endpoints, and
    /// portal rules for ip6tables (/128 addresses, host portals to `[node]:port`, `::1` kept out of
    /// the host's NodePort rule); the IPv4 proxier's plan of the same Service has no IPv6 in it.
    @Test func theIPv6ProxierPlansTheIPv6Half() throws {
        let web = svcPort("web", port: "http")
        var snap = ProxySnapshot(node: NodeInfo(name: "n1", ips: [IPAddress("192.168.1.5")!, IPAddress("fd00:77::5")!]))
        snap.servicePorts[web] = info(web, ip: "fd00:10:96::10", port: 80, nodePort: 30080)
        snap.endpoints[web] = [EndpointInfo(ip: "fd00:10:244:1::2", port: 8080), EndpointInfo(ip: "10.244.1.2", port: 8080)]
        var o = UserspaceOptions(localhostNodePorts: false, portRange: 40000...40010)
        o.common.family = .ipv6
        let plans = UserspacePlan.listeners(for: snap, options: o)
        let key = ListenerKey(name: web, external: false)
        #expect(plans[key]?.endpoints == [SocketEndpoint("fd00:10:244:1::2", port: 8080)!], "an endpoint of the other family is not this proxier's")
        #expect(UserspacePlan.hostIP(snap, options: o) == IPAddress("fd00:77::5"))
        let text = UserspaceRenderer(options: o).render(snap)
        #expect(text.contains("#   default/web:http TCP :40000 -> [fd00:10:244:1::2]:8080\n"), "\(text)")
        let fake = FakeIPTables()
        try fake.restore(text)
        let container = fake.tables["nat"]?[PortalChains.containerPortals] ?? []
        #expect(container.contains { $0.contains("-d fd00:10:96::10/128") && $0.hasSuffix("-j REDIRECT --to-ports 40000") }, "\(container)")
        let host = fake.tables["nat"]?[PortalChains.hostPortals] ?? []
        #expect(host.contains { $0.hasSuffix("-j DNAT --to-destination [fd00:77::5]:40000") }, "\(host)")
        let nodePorts = fake.tables["nat"]?[PortalChains.hostNodePorts] ?? []
        #expect(nodePorts.contains { $0.contains("! -d ::1/128") } && !text.contains("127.0.0.0/8"), "\(nodePorts)")
        var v4 = UserspaceOptions(portRange: 40000...40010)
        v4.common.family = .ipv4
        #expect(UserspacePlan.listeners(for: snap, options: v4).isEmpty, "an IPv6 ClusterIP has no IPv4 listener")
    }

    /// A listener on ::1 carries TCP and UDP to an IPv6 endpoint, each connection dialled over
    /// IPv6; a UDP reply leaves from the address the client sent to.
    @Test func anIPv6ListenerCarriesTCPAndUDP() async throws {
        guard ProxyMode.kernelHasIPv6 else { return }
        var opts = DataPlaneOptions()
        opts.loops = 1
        opts.listenAddress = HostAddress("::1")!
        let dp = try DataPlane(options: opts)
        defer { dp.shutdownNow() }
        // An endpoint on [::1]: a line back for TCP, the datagram back for UDP.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-c", """
            import socket, threading
            t = socket.socket(socket.AF_INET6); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('::1', 0)); t.listen(8)
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(('::1', t.getsockname()[1]))
            def tcp():
                while True:
                    c, peer = t.accept(); c.sendall(('endpoint saw ' + peer[0] + '\\n').encode()); c.close()
            def udp():
                while True:
                    d, peer = u.recvfrom(100); u.sendto(b'echo ' + d, peer)
            threading.Thread(target=tcp, daemon=True).start(); threading.Thread(target=udp, daemon=True).start()
            print('port', t.getsockname()[1], flush=True)
            threading.Event().wait()
            """]
        let out = Pipe()
        server.standardOutput = out
        try server.run()
        // SIGKILL: the test process's threads block SIGTERM, and the child inherits that.
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        var first = ""
        while !first.contains("\n") {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            first += String(decoding: d, as: UTF8.self)
        }
        let port = try #require(first.split(separator: "\n").first { $0.hasPrefix("port ") }.flatMap { Int($0.dropFirst(5)) },
                                "the endpoint printed \"\(first)\"; running: \(server.isRunning)")
        let balancer = Balancer()
        balancer.update(endpoints: [SocketEndpoint("::1", port: port)!], affinityTimeout: nil)
        let stats = PortStats(servicePort: "default/web:http", proto: "TCP", registry: nil)
        let tcp = try await dp.open(.tcp, port: 0, balancer: balancer, stats: stats)
        let udp = try await dp.open(.udp, port: 0, balancer: balancer, stats: stats)
        let client = try Sh.run(["python3", "-c", """
            import socket
            s = socket.create_connection(('::1', \(tcp.port)), timeout=3); print(s.recv(100).decode().strip())
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.settimeout(3); u.sendto(b'hi', ('::1', \(udp.port)))
            d, peer = u.recvfrom(100); print(d.decode(), peer[0], peer[1])
            """], timeout: 15)
        #expect(client.status == 0, "\(client.err)")
        #expect(client.out == "endpoint saw ::1\necho hi ::1 \(udp.port)\n", "\(client.out)")
    }
}
