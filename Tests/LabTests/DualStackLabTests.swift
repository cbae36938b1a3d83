import Foundation
import NetnsKit
import Testing

/// A dual-stack Service in every mode, in the kernel (the IPVS mode's in the qemu guest): `render` prints the IPv4
/// and IPv6 rulesets, `iptables-restore` and `ip6tables-restore` (or `nft -f`) load them in a node
/// namespace, and one pod
/// (an address of each family) answers on the ClusterIP of each family and on the NodePort at the
/// node's address of each family; a downgrade to single-stack leaves the IPv6 rules without
/// the Service and the IPv4 rules as they were.
@Suite("dual-stack in the kernel", .serialized, .enabled(if: isRoot, "needs root for network namespaces"))
struct DualStackLabTests {
    static func manifest(dual: Bool) -> String {
        let ips = dual ? #"[10.96.0.10, "fd00:10:96::10"]"# : "[10.96.0.10]"
        let families = dual ? "[IPv4, IPv6]" : "[IPv4]"
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default}
            spec:
              type: NodePort
              ipFamilyPolicy: \(dual ? "RequireDualStack" : "SingleStack")
              ipFamilies: \(families)
              clusterIP: 10.96.0.10
              clusterIPs: \(ips)
              ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: other, namespace: default}
            spec:
              ipFamilyPolicy: RequireDualStack
              ipFamilies: [IPv6, IPv4]
              clusterIP: "fd00:10:96::20"
              clusterIPs: ["fd00:10:96::20", 10.96.0.20]
              ports: [{name: http, port: 80, targetPort: 8080}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-v4, namespace: default, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            ports: [{name: http, port: 8080, protocol: TCP}]
            endpoints: [{addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-a}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
            addressType: IPv6
            ports: [{name: http, port: 8080, protocol: TCP}]
            endpoints: [{addresses: ["fd00:10:244:1::2"], conditions: {ready: true}, nodeName: node-a}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: other-v6, namespace: default, labels: {kubernetes.io/service-name: other}}
            addressType: IPv6
            ports: [{name: http, port: 8080, protocol: TCP}]
            endpoints: [{addresses: ["fd00:10:244:1::2"], conditions: {ready: true}, nodeName: node-a}]

            """
    }

    /// The render's two parts: what precedes the `# IPv6:` line, and what follows it.
    static func split(_ rendered: String) -> (v4: String, v6: String) {
        guard let r = rendered.range(of: "# IPv6:") else { return (rendered, "") }
        return (String(rendered[..<r.lowerBound]), String(rendered[r.lowerBound...]))
    }

    /// A node namespace with a pod behind a veth, an address of each family on both ends, routes
    /// for the service ranges out the pod's link and node addresses of both families; the pod's
    /// server answers with the address it was reached at. `body` gets the node, the pod's server and
    /// `ask`, which connects from the node.
    static func withLab(_ name: String, _ body: (_ node: String, _ ask: (String, Int) throws -> String) throws -> Void) throws {
        let id = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let node = "sy\(name)\(id)n", pod = "sy\(name)\(id)p"
        defer { for ns in [node, pod] { _ = try? Sh.run(["ip", "netns", "del", ns]) } }
        for ns in [node, pod] {
            try Sh.must(["ip", "netns", "add", ns])
            try Sh.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        }
        try Sh.must(["ip", "-n", node, "link", "add", "vethp", "type", "veth", "peer", "name", "eth0", "netns", pod])
        for (ns, dev, v4, v6) in [(node, "vethp", "10.244.1.1/24", "fd00:10:244:1::1/64"), (pod, "eth0", "10.244.1.2/24", "fd00:10:244:1::2/64")] {
            try Sh.must(["ip", "-n", ns, "addr", "add", v4, "dev", dev])
            try Sh.must(["ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"])
            try Sh.must(["ip", "-n", ns, "link", "set", dev, "up"])
        }
        try Sh.must(["ip", "-n", pod, "route", "add", "default", "via", "10.244.1.1"])
        try Sh.must(["ip", "-n", pod, "-6", "route", "add", "default", "via", "fd00:10:244:1::1"])
        // A node has a default route; here the service ranges go out the pod's link (the
        // node's own connections are translated before they leave).
        try Sh.must(["ip", "-n", node, "route", "add", "10.96.0.0/16", "dev", "vethp"])
        try Sh.must(["ip", "-n", node, "-6", "route", "add", "fd00:10:96::/112", "dev", "vethp"])
        // The node's own addresses, where NodePorts answer.
        try Sh.must(["ip", "-n", node, "addr", "add", "192.168.77.1/32", "dev", "lo"])
        try Sh.must(["ip", "-n", node, "-6", "addr", "add", "fd00:77::1/128", "dev", "lo"])
        for s in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] { try Sh.must(["ip", "netns", "exec", node, "sysctl", "-qw", s]) }
        // The pod answers with the address it was reached at.
        let server = try Started(netns: pod, ["python3", "-c", """
            import socket, threading
            def serve(fam, addr):
                s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, 8080)); s.listen(16)
                while True:
                    c, peer = s.accept(); c.sendall(('pod ' + c.getsockname()[0] + '\\n').encode()); c.close()
            for fam, addr in [(socket.AF_INET, '10.244.1.2'), (socket.AF_INET6, 'fd00:10:244:1::2')]:
                threading.Thread(target=serve, args=(fam, addr), daemon=True).start()
            print('listening', flush=True)
            threading.Event().wait()
            """])
        defer { _ = server.stop() }
        // (A minute: under the qemu guest's emulation beside the rest of the suite, Python alone takes a while to start.)
        #expect(server.wait(for: "listening", seconds: 60), "\(server.output)")
        func ask(_ host: String, _ port: Int) throws -> String {
            let r = try Sh.run(["ip", "netns", "exec", node, "python3", "-c",
                                "import socket;s=socket.create_connection(('\(host)',\(port)),timeout=3);print(s.recv(100).decode().strip())"], timeout: 15)
            return r.status == 0 ? r.out.trimmingCharacters(in: .whitespacesAndNewlines) : "failed: \(r.err.split(separator: "\n").last ?? "")"
        }
        try body(node, ask)
    }

    @Test(arguments: ["iptables", "nftables"])
    func aDualStackServiceAnswersOnBothFamilies(mode: String) throws {
        let bin = try switchyardBinary()
        let dir = try tempDir("dual-lab")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.withLab("ds") { node, ask in
            func render(dual: Bool) throws -> (v4: String, v6: String) {
                let file = dir.appendingPathComponent("m.yaml").path
                try Self.manifest(dual: dual).write(toFile: file, atomically: true, encoding: .utf8)
                let r = try Sh.run([bin, "render", "--proxy-mode", mode, "--hostname-override", "node-a",
                                    "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56", "-f", file])
                #expect(r.status == 0, "\(r.err)")
                return Self.split(r.out)
            }
            func load(_ rules: (v4: String, v6: String)) throws {
                for (i, text) in [rules.v4, rules.v6].enumerated() {
                    let f = dir.appendingPathComponent("part\(i)").path
                    try text.write(toFile: f, atomically: true, encoding: .utf8)
                    let load = mode == "nftables" ? "nft -f \(f)" : "\(i == 0 ? "iptables-restore" : "ip6tables-restore") --noflush < \(f)"
                    try Sh.must(["sh", "-c", "ip netns exec \(node) \(load)"])
                }
            }
            let dual = try render(dual: true)
            if mode == "nftables" {
                #expect(dual.v6.contains("add table ip6 kube-proxy") && dual.v6.contains("add element ip6 kube-proxy cluster-ips { fd00:10:96::20, fd00:10:96::10 }")
                        && dual.v6.contains("ip6 daddr != ::1") && !dual.v4.contains("fd00:") && !dual.v6.contains("127.0.0.0/8"), "\(dual.v6)")
            } else {
                #expect(dual.v6.contains("-d fd00:10:96::10") && !dual.v4.contains("fd00:") && !dual.v6.contains("127.0.0.0/8"), "\(dual.v6)")
            }
            try load(dual)
            #expect(try ask("10.96.0.10", 80) == "pod 10.244.1.2")
            #expect(try ask("fd00:10:96::10", 80) == "pod fd00:10:244:1::2")
            #expect(try ask("192.168.77.1", 30080) == "pod 10.244.1.2")
            #expect(try ask("fd00:77::1", 30080) == "pod fd00:10:244:1::2")
            // The IPv6-primary Service has only an IPv6 endpoint: its IPv4 address rejects.
            #expect(try ask("fd00:10:96::20", 80) == "pod fd00:10:244:1::2")
            #expect(try ask("10.96.0.20", 80).hasPrefix("failed"))

            // Downgraded: the IPv6 rules lose the Service; the IPv4 ones are the same lines.
            let single = try render(dual: false)
            #expect(single.v4 == dual.v4)
            #expect(!single.v6.contains("fd00:10:96::10") && single.v6.contains("fd00:10:96::20"), "\(single.v6)")
            try load(single)
            #expect(try ask("10.96.0.10", 80) == "pod 10.244.1.2")
            #expect(try ask("fd00:10:96::10", 80).hasPrefix("failed"))
            #expect(try ask("fd00:10:96::20", 80) == "pod fd00:10:244:1::2")
        }
    }

    /// `switchyard proxy` in the iptables, nftables and userspace modes runs a proxier per family on a node with
    /// IPv6 (as upstream's kube-proxy): a dual-stack Service answers on both ClusterIPs and NodePorts,
    /// each family's sync is in /metrics under its `ip_family`, a downgrade to single-stack takes the
    /// IPv6 rules away and leaves IPv4 answering, and `--cleanup` removes the IPv6 rules too.
    @Test(arguments: ["iptables", "nftables", "userspace"])
    func theProxyRunsAProxierPerFamily(mode: String) throws {
        try Self.proxierPerFamily(mode: mode)
    }

    /// The same in the IPVS mode (in the qemu guest on this machine): one IPVS table and one
    /// kube-ipvs0 for both proxiers, each family's sets (`KUBE-6-…` for IPv6) and rules.
    @Test(.enabled(if: kernelHasIPVS, "no IPVS in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func theIPVSProxyRunsAProxierPerFamily() throws {
        try Self.proxierPerFamily(mode: "ipvs")
    }

    static func proxierPerFamily(mode: String) throws {
        let bin = try switchyardBinary()
        let dir = try tempDir("dual-proxy")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml").path
        try Self.manifest(dual: true).write(toFile: file, atomically: true, encoding: .utf8)
        try Self.withLab("dp") { node, ask in
            let proxy = try Started(netns: node, [bin, "proxy", "--proxy-mode", mode, "--hostname-override", "node-a",
                                                  "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56", "--manifests", file,
                                                  "--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249"])
            defer { _ = proxy.stop() }
            #expect(proxy.wait(for: "ipFamilies=IPv4,IPv6", seconds: 20), "\(proxy.output)")
            func eventually(_ what: () throws -> Bool) rethrows -> Bool {
                for _ in 0..<40 {
                    if try what() { return true }
                    Thread.sleep(forTimeInterval: 0.5)
                }
                return false
            }
            #expect(try eventually { try ask("fd00:10:96::10", 80) == "pod fd00:10:244:1::2" }, "\(proxy.output)")
            #expect(try ask("10.96.0.10", 80) == "pod 10.244.1.2")
            #expect(try ask("192.168.77.1", 30080) == "pod 10.244.1.2")
            #expect(try ask("fd00:77::1", 30080) == "pod fd00:10:244:1::2")
            #expect(try ask("fd00:10:96::20", 80) == "pod fd00:10:244:1::2")
            let metrics = try Sh.must(["ip", "netns", "exec", node, "curl", "-s", "http://127.0.0.1:10249/metrics"])
            for family in ["IPv4", "IPv6"] {
                #expect(metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"\(family)\"}"), "\(metrics)")
            }
            // /healthz says how each family's proxier is doing, as upstream's does.
            let health = try Sh.must(["ip", "netns", "exec", node, "curl", "-s", "http://127.0.0.1:10256/healthz"])
            #expect(health.contains(#""healthy": true"#) && health.contains(#""status": {"IPv4": {"#) && health.contains(#", "IPv6": {"#), "\(health)")
            // Upstream's IPv6 rules: no localhost NodePorts, no route_localnet guard.
            if mode == "nftables" {
                let v6 = try Sh.must(["ip", "netns", "exec", node, "nft", "list", "table", "ip6", "kube-proxy"])
                #expect(v6.contains("fd00:10:96::10 . tcp . 80 : goto service-") && v6.contains("ip6 daddr != ::1")
                        && !v6.contains("127.0.0.0/8") && !v6.contains("10.96.0.10"), "\(v6)")
            } else if mode == "ipvs" {
                let servers = try Sh.must(["ip", "netns", "exec", node, "ipvsadm", "-Ln"])
                #expect(servers.contains("TCP  [fd00:10:96::10]:80 rr") && servers.contains("-> [fd00:10:244:1::2]:8080")
                        && servers.contains("TCP  [fd00:77::1]:30080 rr") && servers.contains("TCP  10.96.0.10:80 rr"), "\(servers)")
                let dummy = try Sh.must(["ip", "-n", node, "addr", "show", "kube-ipvs0"])
                #expect(dummy.contains("fd00:10:96::10/128") && dummy.contains("10.96.0.10/32") && !dummy.contains("tentative"), "\(dummy)")
                let set = try Sh.must(["ip", "netns", "exec", node, "ipset", "list", "KUBE-6-CLUSTER-IP"])
                #expect(set.contains("family inet6") && set.contains("fd00:10:96::10,tcp:80"), "\(set)")
                let v6 = try Sh.must(["ip", "netns", "exec", node, "ip6tables-save", "-t", "nat"])
                #expect(v6.contains("--match-set KUBE-6-CLUSTER-IP dst,dst") && !v6.contains("127.0.0.0/8"), "\(v6)")
                // explain --live reads the IPv6 half of what the kernel holds.
                let live = try Sh.run(["ip", "netns", "exec", node, bin, "explain", "--proxy-mode", "ipvs", "--live",
                                       "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::10]:80"])
                #expect(live.status == 0 && live.out.contains("DNAT to [fd00:10:244:1::2]:8080"), "\(live.out) \(live.err)")
            } else {
                let v6 = try Sh.must(["ip", "netns", "exec", node, "ip6tables-save", "-t", "nat"])
                #expect(v6.contains("-d fd00:10:96::10/128") && !v6.contains("127.0.0.0/8") && !v6.contains("10.96.0.10"), "\(v6)")
            }

            try Self.manifest(dual: false).write(toFile: file, atomically: true, encoding: .utf8)
            #expect(try eventually { try ask("fd00:10:96::10", 80).hasPrefix("failed") }, "\(proxy.output)")
            #expect(try ask("10.96.0.10", 80) == "pod 10.244.1.2")
            #expect(try ask("fd00:10:96::20", 80) == "pod fd00:10:244:1::2")
            #expect(proxy.stop() != nil)

            let cleanup = try Sh.run(["ip", "netns", "exec", node, bin, "proxy", "--cleanup"])
            let removed = ["nftables": "removed the nftables table ip kube-proxy and ip6 kube-proxy", "ipvs": "kube-ipvs0, the IPVS mode's ipsets and rules",
                           "userspace": "removed the userspace mode's portal chains"][mode]
                ?? "removed the iptables mode's rules and chains"
            #expect(cleanup.status == 0 && cleanup.err.contains(removed), "\(cleanup.err)")
            let tables = try Sh.must(["ip", "netns", "exec", node, "nft", "list", "tables"])
            #expect(!tables.contains("kube-proxy"), "\(tables)")
            if mode == "ipvs" {
                #expect(try Sh.must(["ip", "netns", "exec", node, "ipvsadm", "-Ln"]).split(separator: "\n").count == 3, "no virtual server left")
                #expect(try Sh.must(["ip", "netns", "exec", node, "ipset", "list", "-n"]).isEmpty)
            }
            // Everything but kubelet's KUBE-FIREWALL, which kube-proxy creates and never deletes.
            for tool in ["iptables-save", "ip6tables-save"] {
                let left = try Sh.must(["ip", "netns", "exec", node, tool]).split(separator: "\n")
                    .filter { $0.contains("KUBE-") && !$0.contains("KUBE-FIREWALL") }
                #expect(left.isEmpty, "\(tool): \(left)")
            }
        }
    }

    /// `switchyard explain` takes an IPv6 packet through each mode's IPv6 rules (from manifests,
    /// or the IPv6 part of a dual-stack render), and refuses what it cannot walk.
    @Test func explainWalksEachFamily() throws {
        let bin = try switchyardBinary()
        let dir = try tempDir("dual-explain")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml").path
        try Self.manifest(dual: true).write(toFile: file, atomically: true, encoding: .utf8)
        let common = ["--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"]
        func explain(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try Sh.run([bin, "explain", "--proxy-mode", "iptables"] + common + args)
        }
        let v6 = try explain(["-f", file, "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::10]:80"])
        #expect(v6.status == 0 && v6.out.contains("DNAT to [fd00:10:244:1::2]:8080"), "\(v6.out) \(v6.err)")
        let v4 = try explain(["-f", file, "--src", "10.244.2.5", "--dst", "10.96.0.10:80"])
        #expect(v4.status == 0 && v4.out.contains("DNAT to 10.244.1.2:8080"), "\(v4.out) \(v4.err)")
        // The IPv6 NodePort from outside: masqueraded, as upstream's.
        let nodePort = try explain(["-f", file, "--src", "[2600:5200::1]:40000", "--dst", "[fd00:77::1]:30080", "--local-address", "fd00:77::1"])
        #expect(nodePort.status == 0 && nodePort.out.contains("DNAT to [fd00:10:244:1::2]:8080") && nodePort.out.contains("masquerade"),
                "\(nodePort.out) \(nodePort.err)")
        // The IPv6 part of a dual-stack render.
        let rendered = try Sh.run([bin, "render", "--proxy-mode", "iptables"] + common + ["-f", file])
        let rules = dir.appendingPathComponent("dual.rules").path
        try rendered.out.write(toFile: rules, atomically: true, encoding: .utf8)
        let fromRules = try explain(["--rules", rules, "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::20]:80"])
        #expect(fromRules.status == 0 && fromRules.out.contains("DNAT to [fd00:10:244:1::2]:8080"), "\(fromRules.out) \(fromRules.err)")
        let v4FromRules = try explain(["--rules", rules, "--src", "10.244.2.5", "--dst", "10.96.0.10:80"])
        #expect(v4FromRules.status == 0 && v4FromRules.out.contains("DNAT to 10.244.1.2:8080"), "\(v4FromRules.out) \(v4FromRules.err)")
        let mixed = try explain(["-f", file, "--src", "10.244.2.5", "--dst", "[fd00:10:96::10]:80"])
        #expect(mixed.status == 64 && mixed.err.contains("are of different families"), "\(mixed.err)")
        // The nftables mode: the table ip6 kube-proxy, from manifests and from the IPv6 part of a render.
        let nft = try Sh.run([bin, "explain", "--proxy-mode", "nftables"] + common + ["-f", file, "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::10]:80"])
        #expect(nft.status == 0 && nft.out.contains("DNAT to [fd00:10:244:1::2]:8080") && nft.out.contains("ip6 kube-proxy"), "\(nft.out) \(nft.err)")
        let nftRendered = try Sh.run([bin, "render", "--proxy-mode", "nftables"] + common + ["-f", file])
        let nftRules = dir.appendingPathComponent("dual.nft").path
        try nftRendered.out.write(toFile: nftRules, atomically: true, encoding: .utf8)
        for (src, dst, to) in [("fd00:10:244:2::5", "[fd00:10:96::20]:80", "[fd00:10:244:1::2]:8080"), ("10.244.2.5", "10.96.0.10:80", "10.244.1.2:8080")] {
            let r = try Sh.run([bin, "explain", "--proxy-mode", "nftables"] + common + ["--rules", nftRules, "--src", src, "--dst", dst])
            #expect(r.status == 0 && r.out.contains("DNAT to \(to)"), "\(r.out) \(r.err)")
        }
        // The IPVS mode: the IPv6 virtual server, the KUBE-6- sets and the ip6tables rules, from
        // manifests and from the IPv6 part of a render; a port the Service lacks is rejected by
        // the access filter.
        let ipvs = try Sh.run([bin, "explain", "--proxy-mode", "ipvs"] + common + ["-f", file, "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::10]:80"])
        #expect(ipvs.status == 0 && ipvs.out.contains("ipvs TCP  [fd00:10:96::10]:80 rr: -> [fd00:10:244:1::2]:8080 Masq weight 1")
                && ipvs.out.contains("DNAT to [fd00:10:244:1::2]:8080, accepted") && ipvs.out.hasPrefix("ipvs: [fd00:10:244:2::5]:40000 -> [fd00:10:96::10]:80/tcp"),
                "\(ipvs.out) \(ipvs.err)")
        let ipvsRendered = try Sh.run([bin, "render", "--proxy-mode", "ipvs"] + common + ["-f", file])
        let ipvsRules = dir.appendingPathComponent("ipvs.rules").path
        try ipvsRendered.out.write(toFile: ipvsRules, atomically: true, encoding: .utf8)
        let stray = try Sh.run([bin, "explain", "--proxy-mode", "ipvs"] + common + ["--rules", ipvsRules, "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::20]:81"])
        #expect(stray.status == 0 && stray.out.contains("--match-set KUBE-6-IPVS-IPS dst -j REJECT") && stray.out.contains("rejected"), "\(stray.out) \(stray.err)")
        let ipvsV4 = try Sh.run([bin, "explain", "--proxy-mode", "ipvs"] + common + ["--rules", ipvsRules, "--src", "10.244.2.5", "--dst", "10.96.0.10:80"])
        #expect(ipvsV4.status == 0 && ipvsV4.out.contains("DNAT to 10.244.1.2:8080"), "\(ipvsV4.out) \(ipvsV4.err)")
        // The userspace mode: the IPv6 portal rule to the IPv6 listener, which dials the IPv6 endpoint.
        let userspace = try Sh.run([bin, "explain", "--proxy-mode", "userspace"] + common + ["-f", file, "--src", "fd00:10:244:2::5", "--dst", "[fd00:10:96::20]:80"])
        #expect(userspace.status == 0 && userspace.out.contains("-d fd00:10:96::20/128") && userspace.out.contains("proxied to [fd00:10:244:1::2]:8080"),
                "\(userspace.out) \(userspace.err)")
    }

    /// `--ip-family`: each family alone, both (also by default, when a Service has an IPv6
    /// address), in every mode, and a family that is not one refused.
    @Test func renderPicksFamilies() throws {
        let bin = try switchyardBinary()
        let dir = try tempDir("dual-render")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml").path
        try Self.manifest(dual: true).write(toFile: file, atomically: true, encoding: .utf8)
        func render(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try Sh.run([bin, "render", "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56", "-f", file] + args)
        }
        let v4 = try render(["--proxy-mode", "iptables", "--ip-family", "ipv4"])
        #expect(v4.status == 0 && v4.out.contains("-d 10.96.0.10") && !v4.out.contains("fd00:") && !v4.out.contains("# IPv6:"), "\(v4.err)")
        let v6 = try render(["--proxy-mode", "iptables", "--ip-family", "ipv6"])
        #expect(v6.status == 0 && v6.out.contains("-d fd00:10:96::10") && !v6.out.contains("-d 10.96.0.10"), "\(v6.err)")
        let dual = try render(["--proxy-mode", "iptables", "--ip-family", "dual"])
        #expect(dual.out == (try render(["--proxy-mode", "iptables"])).out && dual.out.contains("# IPv4:") && dual.out.contains("# IPv6:"))
        let nft = try render(["--proxy-mode", "nftables", "--ip-family", "ipv6"])
        #expect(nft.status == 0 && nft.out.contains("add table ip6 kube-proxy\ndelete table ip6 kube-proxy\n") && !nft.out.contains("add table ip kube-proxy"),
                "\(nft.err)")
        let ipvs = try render(["--proxy-mode", "ipvs", "--ip-family", "ipv6"])
        #expect(ipvs.status == 0 && ipvs.out.contains("TCP  [fd00:10:96::10]:80 rr") && ipvs.out.contains("# kube-ipvs0: fd00:10:96::10/128 fd00:10:96::20/128")
                && ipvs.out.contains("create KUBE-6-CLUSTER-IP hash:ip,port family inet6") && !ipvs.out.contains("10.96.0.10"), "\(ipvs.out)")
        let userspace = try render(["--proxy-mode", "userspace", "--ip-family", "ipv6", "--proxy-port-range", "40000-40010"])
        #expect(userspace.status == 0 && userspace.out.contains("-d fd00:10:96::10/128 -p tcp -m comment --comment default/web:http -m tcp --dport 80 -j REDIRECT --to-ports 4000")
                && userspace.out.contains(":4000") && userspace.out.contains("-> [fd00:10:244:1::2]:8080") && !userspace.out.contains("10.96.0.10"), "\(userspace.out)")
        #expect(try render(["--proxy-mode", "iptables", "--ip-family", "ipv5"]).status == 64)
        #expect(try Sh.run([bin, "render", "--cluster-cidr", "10.244.0.0/16,10.245.0.0/16", "-f", file]).err.contains("two of different families"))
    }
}
