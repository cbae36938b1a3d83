import Foundation
import KubeAPI
import NetnsKit
import Testing

/// `switchyard explain --live` against the kernel: the iptables mode's rules and the nftables
/// mode's table (both layouts) loaded into a
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
        """

    /// What the kernel did with a connection: the answers of `tries` attempts, or refused, or nothing.
    enum Fate: Equatable { case answered(Set<String>), refused, unanswered }

    static func send(_ lab: Lab, from ns: String, _ ip: String, _ port: Int, tries: Int) throws -> Fate {
        var answers: Set<String> = []
        for _ in 0..<tries {
            let r = try Sh.run(["ip", "netns", "exec", ns, "socat", "-T2", "-", "TCP:\(ip):\(port),connect-timeout=2"], input: "", timeout: 8)
            let out = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
            if r.status == 0, !out.isEmpty { answers.insert(out); continue }
            if r.err.contains("Connection refused") { return .refused }
            return .unanswered
        }
        return .answered(answers)
    }

    @Test(arguments: ["iptables", "nftables", "nftables-maps"])
    func explainAgreesWithTheKernel(variant: String) throws {
        let mode = variant.hasPrefix("nftables") ? "nftables" : variant
        let layout = variant == "nftables-maps" ? ["--nftables-layout", "maps"] : []
        let bin = try switchyardBinary()
        let lab = try Lab()
        defer { lab.destroy() }
        try lab.addServingPods(tcpPort: 8080)
        try lab.addPod("c", host: 4)
        try lab.servePeerAddress(pod: "c", tcpPort: 9000)
        try lab.routeFromClient("10.96.0.0/16", "192.0.2.0/24")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-explain-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.manifests.write(to: file, atomically: true, encoding: .utf8)
        let render = try Sh.run([bin, "render", "--proxy-mode", mode] + layout + ["--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16", "-f", file.path])
        #expect(render.status == 0, "\(render.err)")
        let load = try Sh.run(["ip", "netns", "exec", lab.node] + (mode == "iptables" ? ["iptables-restore", "--noflush"] : ["nft", "-f", "-"]), input: render.out)
        try #require(load.status == 0, "\(load.err)")
        // Pod traffic through the bridge is seen by iptables (as on a node with br_netfilter).
        try Sh.must(["ip", "netns", "exec", lab.node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
        let pods = ["10.244.1.2": "a", "10.244.1.3": "b", "10.244.1.4": "c"]
        let b = lab.pods["b"]!, c = lab.pods["c"]!

        // (what, from namespace, source address, destination, port)
        let cases: [(String, String, String, String, Int)] = [
            ("pod to cluster IP, two endpoints", c, "10.244.1.4", "10.96.0.10", 80),
            ("outside to cluster IP", lab.client, lab.clientIP, "10.96.0.10", 80),
            ("pod to cluster IP without endpoints", b, "10.244.1.3", "10.96.0.20", 80),
            ("outside to NodePort", lab.client, lab.clientIP, lab.nodeClientIP, 30080),
            ("outside to LoadBalancer IP in its source ranges", lab.client, lab.clientIP, "192.0.2.50", 80),
            ("outside to LoadBalancer IP outside its source ranges", lab.client, lab.clientIP, "192.0.2.51", 80),
            ("outside to external IP", lab.client, lab.clientIP, "192.0.2.60", 80),
            ("outside to a Local NodePort without local endpoints", lab.client, lab.clientIP, lab.nodeClientIP, 30090),
            ("outside to cluster IP, masqueraded", lab.client, lab.clientIP, "10.96.0.40", 9000),
            ("pod to cluster IP, not masqueraded", b, "10.244.1.3", "10.96.0.40", 9000),
            ("pod to NodePort", b, "10.244.1.3", lab.nodeClientIP, 30080),
            ("pod to LoadBalancer IP outside its source ranges", c, "10.244.1.4", "192.0.2.50", 80),
            ("pod to external IP", c, "10.244.1.4", "192.0.2.60", 80),
            ("outside to the NodePort of a LoadBalancer with source ranges (they hold for its IP only)", lab.client, lab.clientIP, lab.nodeClientIP, 30081),
            ("pod to the NodePort of a LoadBalancer with source ranges", b, "10.244.1.3", lab.nodeClientIP, 30081),
        ]
        for (what, ns, src, dst, port) in cases {
            let e = try Sh.run(["ip", "netns", "exec", lab.node, bin, "explain", "--proxy-mode", mode, "--live", "--src", src,
                                "--dst", "\(dst):\(port)", "-o", "json"])
            try #require(e.status == 0, "\(what): \(e.err)")
            let path = try JSONValue.parse(Data(e.out.utf8))
            let outcomes = path["outcomes"]?.array ?? []
            let verdicts = Set(outcomes.compactMap { $0["verdict"]?.string })
            let endpoints = Set(outcomes.compactMap { $0["endpoint"]?.string?.split(separator: ":").first.map(String.init) })
            let masq = outcomes.contains { $0["masqueraded"] == true }
            let fate = try Self.send(lab, from: ns, dst, port, tries: endpoints.count > 1 ? 16 : 2)
            switch fate {
            case .refused: #expect(verdicts == ["rejected"], "\(what): the kernel refused; explain: \(e.out)")
            case .unanswered: #expect(verdicts == ["dropped"], "\(what): the kernel dropped; explain: \(e.out)")
            case .answered(let replies):
                #expect(verdicts == ["accepted"], "\(what): the kernel answered; explain: \(e.out)")
                if port == 9000 {
                    // The peer-address server answers with where the connection came from.
                    let peer = replies.first ?? ""
                    #expect(masq == (peer != src), "\(what): the pod saw \(peer); explain: \(e.out)")
                    #expect(endpoints == ["10.244.1.4"], "\(what): \(e.out)")
                } else {
                    #expect(Set(endpoints.compactMap { pods[$0] }) == replies, "\(what): answered by \(replies); explain: \(e.out)")
                }
            }
        }
    }
}
