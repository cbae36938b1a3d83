import Foundation
import KubeAPI
import NetnsKit
import Testing

/// `switchyard explain --live` against the kernel: the iptables mode's rules, the nftables
/// mode's table (both layouts) and the IPVS mode's virtual servers, ipsets and rules loaded into a
/// namespace lab (a node, pods on its bridge, a client outside), each packet explained from the
/// kernel's own rules, then sent for real; the pods that answer are the endpoints explain names,
/// a masqueraded packet reaches its pod from the node's address, a rejected one is refused at
/// once and a dropped one goes unanswered.
@Suite("explain against the kernel", .enabled(if: isRoot, "needs root for network namespaces"))
struct ExplainLabTests {
    static let manifests = """
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        spec:
          clusterIP: 10.96.0.10
          ports: [{name: http, port: 80, targetPort: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.1.2], nodeName: node-a}
        - {addresses: [10.244.1.3], nodeName: node-a}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: empty, namespace: default}
        spec:
          clusterIP: 10.96.0.20
          ports: [{name: http, port: 80}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: open, namespace: default}
        spec:
          type: LoadBalancer
          clusterIP: 10.96.0.30
          externalIPs: [192.0.2.60]
          loadBalancerSourceRanges: [10.250.0.0/24]
          ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
        status: {loadBalancer: {ingress: [{ip: 192.0.2.50}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: open-1, namespace: default, labels: {kubernetes.io/service-name: open}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.1.2], nodeName: node-a}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: closed, namespace: default}
        spec:
          type: LoadBalancer
          clusterIP: 10.96.0.31
          loadBalancerSourceRanges: [198.51.100.0/24]
          ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]
        status: {loadBalancer: {ingress: [{ip: 192.0.2.51}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: closed-1, namespace: default, labels: {kubernetes.io/service-name: closed}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.1.2], nodeName: node-a}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: local, namespace: default}
        spec:
          type: NodePort
          externalTrafficPolicy: Local
          clusterIP: 10.96.0.32
          ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30090}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: local-1, namespace: default, labels: {kubernetes.io/service-name: local}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.9.9], nodeName: node-b}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: peer, namespace: default}
        spec:
          clusterIP: 10.96.0.40
          ports: [{name: peer, port: 9000, targetPort: 9000}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: peer-1, namespace: default, labels: {kubernetes.io/service-name: peer}}
        addressType: IPv4
        ports: [{name: peer, port: 9000, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.1.4], nodeName: node-a}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: gone, namespace: default}
        spec:
          type: LoadBalancer
          clusterIP: 10.96.0.50
          externalIPs: [192.0.2.61]
          ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30050}]
        status: {loadBalancer: {ingress: [{ip: 192.0.2.52}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: lpeer, namespace: default}
        spec:
          type: LoadBalancer
          externalTrafficPolicy: Local
          clusterIP: 10.96.0.41
          externalIPs: [192.0.2.62]
          ports: [{name: peer, port: 9000, targetPort: 9000, nodePort: 30041}]
        status: {loadBalancer: {ingress: [{ip: 192.0.2.53}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: lpeer-1, namespace: default, labels: {kubernetes.io/service-name: lpeer}}
        addressType: IPv4
        ports: [{name: peer, port: 9000, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.1.4], nodeName: node-a}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: sticky, namespace: default}
        spec:
          clusterIP: 10.96.0.42
          sessionAffinity: ClientIP
          ports: [{name: http, port: 80, targetPort: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: sticky-1, namespace: default, labels: {kubernetes.io/service-name: sticky}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        - {addresses: [10.244.1.2], nodeName: node-a}
        - {addresses: [10.244.1.3], nodeName: node-a}
        """

    /// What the kernel did with a connection: the answers of `tries` attempts, or refused (or
    /// reset or closed without a byte as soon as it was accepted: the userspace mode's listener
    /// without endpoints; every pod of the lab answers with something), or nothing.
    enum Fate: Equatable { case answered(Set<String>), refused, unanswered(String) }

    static func send(_ lab: Lab, from ns: String, _ ip: String, _ port: Int, tries: Int) throws -> Fate {
        var answers: Set<String> = []
        for _ in 0..<tries {
            let r = try Sh.run(["ip", "netns", "exec", ns, "socat", "-T2", "-", "TCP:\(ip):\(port),connect-timeout=2"], input: "", timeout: 8)
            let out = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
            if r.status == 0, !out.isEmpty { answers.insert(out); continue }
            if r.err.contains("Connection refused") || r.err.contains("Connection reset by peer") || (r.status == 0 && out.isEmpty) { return .refused }
            return .unanswered("socat exited \(r.status): \(r.err.suffix(300))")
        }
        return .answered(answers)
    }

    /// A connection to explain and then send: from which namespace and source address, to where.
    struct Case {
        var what: String, ns: String, src: String, dst: String, port: Int
        /// ClientIP affinity: every try goes to the one endpoint the first picked.
        var sticky = false
    }

    /// 30 connections: each kind of service address (cluster IP, NodePort, load balancer IP,
    /// external IP) from a pod, from outside and from the node; with and without endpoints,
    /// inside and outside source ranges, externalTrafficPolicy Cluster and Local, a pod
    /// reaching itself, ClientIP affinity.
    static func cases(_ lab: Lab) -> [Case] {
        let b = lab.pods["b"]!, c = lab.pods["c"]!, out = lab.client, outIP = lab.clientIP, node = lab.nodeClientIP
        return [
            Case(what: "pod to cluster IP, two endpoints", ns: c, src: "10.244.1.4", dst: "10.96.0.10", port: 80),
            Case(what: "outside to cluster IP", ns: out, src: outIP, dst: "10.96.0.10", port: 80),
            Case(what: "pod to cluster IP without endpoints", ns: b, src: "10.244.1.3", dst: "10.96.0.20", port: 80),
            Case(what: "outside to NodePort", ns: out, src: outIP, dst: node, port: 30080),
            Case(what: "outside to LoadBalancer IP in its source ranges", ns: out, src: outIP, dst: "192.0.2.50", port: 80),
            Case(what: "outside to LoadBalancer IP outside its source ranges", ns: out, src: outIP, dst: "192.0.2.51", port: 80),
            Case(what: "outside to external IP", ns: out, src: outIP, dst: "192.0.2.60", port: 80),
            Case(what: "outside to a Local NodePort without local endpoints", ns: out, src: outIP, dst: node, port: 30090),
            Case(what: "outside to cluster IP, masqueraded", ns: out, src: outIP, dst: "10.96.0.40", port: 9000),
            Case(what: "pod to cluster IP, not masqueraded", ns: b, src: "10.244.1.3", dst: "10.96.0.40", port: 9000),
            Case(what: "pod to NodePort", ns: b, src: "10.244.1.3", dst: node, port: 30080),
            Case(what: "pod to LoadBalancer IP outside its source ranges", ns: c, src: "10.244.1.4", dst: "192.0.2.50", port: 80),
            Case(what: "pod to external IP", ns: c, src: "10.244.1.4", dst: "192.0.2.60", port: 80),
            Case(what: "outside to the NodePort of a LoadBalancer with source ranges (they hold for its IP only)", ns: out, src: outIP, dst: node, port: 30081),
            Case(what: "pod to the NodePort of a LoadBalancer with source ranges", ns: b, src: "10.244.1.3", dst: node, port: 30081),
            Case(what: "outside to cluster IP without endpoints", ns: out, src: outIP, dst: "10.96.0.20", port: 80),
            Case(what: "outside to NodePort without endpoints", ns: out, src: outIP, dst: node, port: 30050),
            Case(what: "outside to LoadBalancer IP without endpoints", ns: out, src: outIP, dst: "192.0.2.52", port: 80),
            Case(what: "outside to external IP without endpoints", ns: out, src: outIP, dst: "192.0.2.61", port: 80),
            Case(what: "pod to NodePort without endpoints", ns: b, src: "10.244.1.3", dst: node, port: 30050),
            Case(what: "outside to a Local LoadBalancer IP with a local endpoint, source kept", ns: out, src: outIP, dst: "192.0.2.53", port: 9000),
            Case(what: "outside to a Local NodePort with a local endpoint, source kept", ns: out, src: outIP, dst: node, port: 30041),
            Case(what: "outside to a Local external IP with a local endpoint", ns: out, src: outIP, dst: "192.0.2.62", port: 9000),
            Case(what: "pod to a Local LoadBalancer IP", ns: b, src: "10.244.1.3", dst: "192.0.2.53", port: 9000),
            Case(what: "pod to itself through its cluster IP (hairpin)", ns: c, src: "10.244.1.4", dst: "10.96.0.40", port: 9000),
            Case(what: "pod to cluster IP with ClientIP affinity", ns: b, src: "10.244.1.3", dst: "10.96.0.42", port: 80, sticky: true),
            Case(what: "node to cluster IP", ns: lab.node, src: node, dst: "10.96.0.10", port: 80),
            Case(what: "node to its own NodePort", ns: lab.node, src: node, dst: node, port: 30080),
            Case(what: "node to cluster IP without endpoints", ns: lab.node, src: node, dst: "10.96.0.20", port: 80),
            Case(what: "node to NodePort without endpoints", ns: lab.node, src: node, dst: node, port: 30050),
        ]
    }

    /// A lab with the manifests' pods: a and b answer with their names on 8080, c with the
    /// peer's address on 9000; their bridge ports in hairpin mode, as the kubelet sets them.
    static func lab() throws -> Lab {
        let lab = try Lab()
        do {
            try lab.addServingPods(tcpPort: 8080)
            try lab.addPod("c", host: 4)
            try lab.servePeerAddress(pod: "c", tcpPort: 9000)
            for port in ["vetha", "vethb", "vethc"] {
                try Sh.must(["ip", "-n", lab.node, "link", "set", port, "type", "bridge_slave", "hairpin", "on"])
            }
            try lab.routeFromClient("10.96.0.0/16", "192.0.2.0/24")
            // Pod traffic through the bridge is seen by iptables (as on a node with br_netfilter).
            try Sh.must(["ip", "netns", "exec", lab.node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
            // The kernel sends a peer at most a few ICMP errors a second: the client's rejected
            // connections come one after another here, and a limited one would look dropped.
            try Sh.must(["ip", "netns", "exec", lab.node, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
        } catch {
            lab.destroy()
            throw error
        }
        return lab
    }

    /// `render`s the manifests for `mode` (with `extra` flags).
    static func render(_ bin: String, _ lab: Lab, _ mode: String, _ extra: [String]) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sy-explain-\(lab.id).yaml")
        try Self.manifests.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let r = try Sh.run([bin, "render", "--proxy-mode", mode] + extra + ["--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16", "-f", file.path])
        guard r.status == 0 else { throw LabError("render \(mode): \(r.err)") }
        return r.out
    }

    /// Explains each case from the kernel's rules (`--live` in the node, or `rules`, a render,
    /// with the node's address given), then sends it.
    static func check(_ bin: String, _ lab: Lab, mode: String, rules: String? = nil) throws {
        let pods = ["10.244.1.2": "a", "10.244.1.3": "b", "10.244.1.4": "c"]
        let cases = Self.cases(lab)
        #expect(cases.count >= 30)
        for k in cases {
            let from = rules.map { ["--rules", $0, "--local-address", lab.nodeClientIP] } ?? ["--live"]
            let e = try Sh.run(["ip", "netns", "exec", lab.node, bin, "explain", "--proxy-mode", mode] + from + ["--src", k.src,
                                "--dst", "\(k.dst):\(k.port)", "-o", "json"])
            try #require(e.status == 0, "\(k.what): \(e.err)")
            let path = try JSONValue.parse(Data(e.out.utf8))
            let outcomes = path["outcomes"]?.array ?? []
            let verdicts = Set(outcomes.compactMap { $0["verdict"]?.string })
            let endpoints = Set(outcomes.compactMap { $0["endpoint"]?.string?.split(separator: ":").first.map(String.init) })
            let masq = outcomes.contains { $0["masqueraded"] == true }
            if mode == "nftables" {
                // The kernel's own account of the first packet: the rules nft monitor trace saw
                // match, in order, are the hops of one of the ways explain gives, rule for rule
                // (explain --live reads the rules as nft lists them).
                let seen = try Self.trace(lab, k)
                let ways = outcomes.map { o in
                    (o["hops"]?.array ?? []).filter { $0["table"]?.string == "ip kube-proxy" }.map { "\($0["chain"]?.string ?? ""): \(Self.uncounted($0["rule"]?.string ?? ""))" }
                }
                #expect(!seen.isEmpty && ways.contains(seen), "\(mode), \(k.what): nft monitor trace saw \(seen); explain: \(ways)")
            }
            let fate = try Self.send(lab, from: k.ns, k.dst, k.port, tries: endpoints.count > 1 ? 16 : 2)
            switch fate {
            case .refused: #expect(verdicts == ["rejected"], "\(mode), \(k.what): the kernel refused; explain: \(e.out)")
            case .unanswered(let how):
                // Dropped; or sent to an endpoint no pod of the lab holds (another node's); or let
                // through untranslated to an address nothing in the lab holds (a load balancer IP
                // the mode does not serve), which the node routes on and nothing answers.
                let toNowhere = verdicts == ["accepted"]
                    && (endpoints.isEmpty ? pods[k.dst] == nil && k.dst != lab.nodeClientIP : endpoints.allSatisfy { pods[$0] == nil })
                #expect(verdicts == ["dropped"] || toNowhere, "\(mode), \(k.what): the kernel dropped (\(how)); explain: \(e.out)")
            case .answered(let replies):
                #expect(verdicts == ["accepted"], "\(mode), \(k.what): the kernel answered; explain: \(e.out)")
                if endpoints.contains("10.244.1.4") {
                    // The peer-address server answers with where the connection came from.
                    let peer = replies.first ?? ""
                    #expect(masq == (peer != k.src), "\(mode), \(k.what): the pod saw \(peer); explain: \(e.out)")
                    #expect(endpoints == ["10.244.1.4"], "\(mode), \(k.what): \(e.out)")
                } else if k.sticky {
                    #expect(replies.count == 1 && Set(endpoints.compactMap { pods[$0] }).isSuperset(of: replies),
                            "\(mode), \(k.what): answered by \(replies); explain: \(e.out)")
                } else {
                    #expect(Set(endpoints.compactMap { pods[$0] }) == replies, "\(mode), \(k.what): answered by \(replies); explain: \(e.out)")
                }
            }
        }
    }

    /// One connection of the case with `meta nftrace` set on its SYN (in a table of its own,
    /// before conntrack), and the chains of table ip kube-proxy whose rules matched that packet,
    /// in order, as `nft monitor trace` reports them (`CHAIN: RULE`, the rule as nft lists it).
    static func trace(_ lab: Lab, _ k: Case) throws -> [String] {
        // The SYN only (the connection's later packets match the addresses too).
        let match = "ip saddr \(k.src) ip daddr \(k.dst) tcp dport \(k.port) tcp flags & (syn | ack) == syn meta nftrace set 1"
        let table = """
            table ip sytrace {
              chain pre { type filter hook prerouting priority -500; \(match); }
              chain out { type filter hook output priority -500; \(match); }
            }
            """
        _ = try Sh.run(["ip", "netns", "exec", lab.node, "nft", "delete", "table", "ip", "sytrace"])
        try Sh.must(["ip", "netns", "exec", lab.node, "nft", "-f", "-"], input: table)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sy-trace-\(lab.id).txt")
        defer { try? FileManager.default.removeItem(at: file) }
        // The monitor subscribes, the connection goes, the monitor stops (`ip netns exec` runs
        // nft in its own process, so $! is nft).
        let script = """
            ip netns exec \(lab.node) nft monitor trace > \(file.path) 2>/dev/null & m=$!
            sleep 0.3
            ip netns exec \(k.ns) socat -T1 - TCP:\(k.dst):\(k.port),connect-timeout=0.5 < /dev/null > /dev/null 2>&1
            sleep 0.3
            kill $m; wait $m
            """
        _ = try Sh.run(["sh", "-c", script], timeout: 10)
        // trace id ID ip kube-proxy CHAIN rule … (verdict …). The SYN gets a new trace id where
        // it comes back in (over the bridge to the node, or over lo from the node to itself): its
        // ids' lines, in the order they were written, are its way.
        var chains: [String] = []
        for line in try String(contentsOf: file, encoding: .utf8).split(separator: "\n") {
            let f = line.split(separator: " ", maxSplits: 6)
            guard f.count == 7, f[0] == "trace", f[1] == "id", f[3] == "ip", f[4] == "kube-proxy", f[6].hasPrefix("rule ") else { continue }
            // "rule RULE (verdict V)": the rule as nft lists it.
            var rule = f[6].dropFirst(5)
            if let v = rule.range(of: " (verdict ", options: .backwards) { rule = rule[..<v.lowerBound] }
            chains.append("\(f[5]): \(Self.uncounted(String(rule)))")
        }
        return chains
    }

    /// A rule without its counter's figures, which differ between a trace and a listing.
    static func uncounted(_ rule: String) -> String {
        rule.replacingOccurrences(of: #"counter packets \d+ bytes \d+"#, with: "counter", options: .regularExpression)
            .trimmingCharacters(in: .whitespaces)
    }

    @Test(arguments: ["iptables", "nftables", "nftables-maps"])
    func explainAgreesWithTheKernel(variant: String) throws {
        let mode = variant.hasPrefix("nftables") ? "nftables" : variant
        let layout = variant == "nftables-maps" ? ["--nftables-layout", "maps"] : []
        let bin = try switchyardBinary()
        let lab = try Self.lab()
        defer { lab.destroy() }
        let rules = try Self.render(bin, lab, mode, layout)
        let load = try Sh.run(["ip", "netns", "exec", lab.node] + (mode == "iptables" ? ["iptables-restore", "--noflush"] : ["nft", "-f", "-"]), input: rules)
        try #require(load.status == 0, "\(load.err)")
        try Self.check(bin, lab, mode: mode)
    }

    /// The userspace mode: a running `switchyard proxy --proxy-mode userspace` on the manifests
    /// (the kernel holds its portal rules, the proxy its listeners), explained from the render
    /// (its listener ports from the same range, so the same ones), then the same 30 connections.
    @Test func explainAgreesWithTheKernelInUserspace() async throws {
        let bin = try switchyardBinary()
        let lab = try Self.lab()
        defer { lab.destroy() }
        let flags = ["--proxy-port-range", "41000-41100", "--cluster-cidr", "10.244.0.0/16"]
        let rules = FileManager.default.temporaryDirectory.appendingPathComponent("sy-explain-\(lab.id).rules")
        try Self.render(bin, lab, "userspace", flags).write(to: rules, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: rules) }
        let manifests = FileManager.default.temporaryDirectory.appendingPathComponent("sy-explain-\(lab.id)-proxy.yaml")
        try Self.manifests.write(to: manifests, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: manifests) }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sy-explain-\(lab.id)-proxy.log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        try lab.spawn(lab.node, [bin, "proxy", "--proxy-mode", "userspace", "--hostname-override", "node-a", "--manifests", manifests.path,
                                 "--healthz-bind-address", "", "--metrics-bind-address", ""] + flags, log: log)
        // A debug binary starting beside the rest of the suite can take minutes on a loaded
        // machine (in one CI run its first log line came nine and a half minutes after the
        // spawn, its first sync a second later): first its log's first sync, then, with a deadline of
        // its own, a connection through it (its pods answer through a shell, which a loaded
        // machine can keep past a short timeout).
        let startDeadline = ContinuousClock.now + .seconds(900)
        var synced = false
        while !synced && ContinuousClock.now < startDeadline {
            synced = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("synced userspace rules")
            if !synced { try await Task.sleep(for: .milliseconds(200)) }
        }
        let deadline = ContinuousClock.now + .seconds(180)
        var up = false
        while synced && !up && ContinuousClock.now < deadline {
            up = lab.tcp("10.96.0.10", 80, timeout: 3) != nil
            if !up { try await Task.sleep(for: .milliseconds(200)) }
        }
        try #require(up, "the proxy did not start serving; its output: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "none")")
        try Self.check(bin, lab, mode: "userspace", rules: rules.path)
    }

    /// The IPVS mode (in the qemu guest on this machine): its render's parts loaded as a node
    /// holds them (kube-ipvs0 and its addresses, the ipsets, the iptables rules, the virtual
    /// servers) with the sysctls the proxier sets, then the same 30 connections.
    @Test(.enabled(if: kernelHasIPVS, "no IPVS in this kernel: CNITests.GuestKernelTests runs this in qemu"))
    func explainAgreesWithTheKernelInIPVS() throws {
        let bin = try switchyardBinary()
        let lab = try Self.lab()
        defer { lab.destroy() }
        let flags = ["--nodeport-addresses", "\(lab.nodeClientIP)/32"]
        let listing = try Self.render(bin, lab, "ipvs", flags)
        let addresses = listing.split(separator: "\n").first { $0.hasPrefix("# kube-ipvs0:") }?.split(separator: " ").dropFirst(2) ?? []
        #expect(addresses.contains("10.96.0.10/32"))
        try Sh.must(["ip", "-n", lab.node, "link", "add", "kube-ipvs0", "type", "dummy"])
        for a in addresses { try Sh.must(["ip", "-n", lab.node, "addr", "add", String(a), "dev", "kube-ipvs0"]) }
        for (k, v) in [("net.ipv4.vs.conntrack", "1"), ("net.ipv4.vs.expire_nodest_conn", "1"), ("net.ipv4.vs.expire_quiescent_template", "1")] {
            try Sh.must(["ip", "netns", "exec", lab.node, "sysctl", "-qw", "\(k)=\(v)"])
        }
        for (format, loader) in [("ipset", ["ipset", "restore", "-exist"]), ("iptables", ["iptables-restore", "--noflush"]), ("save", ["ipvsadm-restore"])] {
            let part = try Self.render(bin, lab, "ipvs", flags + ["--ipvs-format", format])
            let load = try Sh.run(["ip", "netns", "exec", lab.node] + loader, input: part)
            try #require(load.status == 0, "\(format): \(load.err)")
        }
        try Self.check(bin, lab, mode: "ipvs")
    }
}
