import Foundation
import Netlink
import NetnsKit
import Testing

/// The built `switchyard` binary (the test script builds it before the tests run).
func switchyardBinary() throws -> String {
    if let p = ProcessInfo.processInfo.environment["SWITCHYARD_BIN"] { return p }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    for dir in [".build/debug", ".build/release"] {
        let p = root.appendingPathComponent(dir).appendingPathComponent("switchyard").path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw LabError("switchyard binary not built: run `swift build` first or set SWITCHYARD_BIN")
}

@Suite("switchyard proxy as a process", .enabled(if: isRoot, "needs root for network namespaces"))
struct ProxyCommandTests {
    func manifest(endpoints: [String]) -> String {
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        spec:
          type: NodePort
          clusterIP: 10.96.0.10
          ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        \(endpoints.map { "- {addresses: [\($0)], nodeName: node-a}" }.joined(separator: "\n"))
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: "Bad_Name"}
        spec: {ports: [{port: 99999}]}
        """
    }

    @Test func followsManifestsServesHealthAndMetricsAndCleansUp() async throws {
        let bin = try switchyardBinary()
        let lab = try Lab()
        defer { lab.destroy() }
        try lab.addServingPods(tcpPort: 8080)
        try lab.routeFromClient("10.96.0.0/12")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("app.yaml")
        try manifest(endpoints: ["10.244.1.2", "10.244.1.3"]).write(to: file, atomically: true, encoding: .utf8)

        try lab.spawn(lab.node, [bin, "proxy", "--proxy-mode", "iptables", "--hostname-override", "node-a",
                                 "--cluster-cidr", "10.244.0.0/16", "--manifests", dir.path,
                                 "--min-sync-period", "100ms", "--sync-period", "2s",
                                 "--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256"])
        // Wait for the first sync to make the service reachable.
        var seen = Set<String>()
        for _ in 0..<60 where seen.count < 2 {
            if let r = lab.tcp("10.96.0.10", 80, timeout: 1) { seen.insert(r) } else { usleep(100_000) }
        }
        #expect(seen == ["a", "b"])
        let health = try Sh.run(["ip", "netns", "exec", lab.node, "curl", "-s", "-w", "%{http_code}", "http://127.0.0.1:10256/healthz"])
        #expect(health.out.hasSuffix("200"), "healthz: \(health.out)")
        let metrics = try Sh.run(["ip", "netns", "exec", lab.node, "curl", "-s", "http://127.0.0.1:10249/metrics"]).out
        #expect(metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket"))
        #expect(metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"))

        // Remove pod b from the manifest: the proxy follows the file.
        try manifest(endpoints: ["10.244.1.2"]).write(to: file, atomically: true, encoding: .utf8)
        var onlyA = false
        for _ in 0..<50 {
            let save = try Sh.must(["ip", "netns", "exec", lab.node, "iptables-save", "-t", "nat"])
            if !save.contains("10.244.1.3:8080") { onlyA = true; break }
            usleep(100_000)
        }
        #expect(onlyA, "the endpoint removed from the manifest should leave the rules")
        for _ in 0..<5 { #expect(lab.tcp("10.96.0.10", 80) == "a") }

        // Someone flushes the nat table: the canary check restores the rules.
        for t in ["nat", "filter", "mangle"] {
            try Sh.must(["ip", "netns", "exec", lab.node, "iptables", "-t", t, "-F"])
            try Sh.must(["ip", "netns", "exec", lab.node, "iptables", "-t", t, "-X"])
        }
        var back = false
        for _ in 0..<80 {
            if lab.tcp("10.96.0.10", 80, timeout: 1) == "a" { back = true; break }
            usleep(100_000)
        }
        #expect(back, "a flushed ruleset should be restored by a full resync")

        // Stop the proxy, then --cleanup removes every KUBE-* chain and jump.
        // This lab's proxy alone (by its manifests' directory): `ip netns exec` does not scope
        // pkill, which would also stop the proxies other tests run at the same time.
        _ = try? Sh.run(["pkill", "-TERM", "-f", "proxy.*--manifests \(dir.path)"])
        let c = try Sh.run(["ip", "netns", "exec", lab.node, bin, "proxy", "--cleanup"])
        #expect(c.status == 0, "\(c.err)")
        let all = try Sh.must(["ip", "netns", "exec", lab.node, "iptables-save"])
        let left = all.split(separator: "\n").filter { $0.contains("KUBE-") && !$0.contains("KUBE-FIREWALL") }
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test func renderReportsBadObjectsAndLoadsCleanly() throws {
        let bin = try switchyardBinary()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-render-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try manifest(endpoints: ["10.244.1.2"]).write(to: file, atomically: true, encoding: .utf8)
        let r = try Sh.run([bin, "render", "--proxy-mode", "iptables", "--hostname-override", "node-a", "-f", file.path])
        #expect(r.status == 0)
        #expect(r.err.contains("document 3"), "the invalid service is reported with its document: \(r.err)")
        #expect(r.err.contains("spec.ports[0].port"))
        #expect(r.out.contains("default/web:http cluster IP"))
        // What render prints loads into a fresh namespace with the real iptables-restore.
        let ns = "sy\(String(UInt32.random(in: 0...UInt32.max), radix: 16))r"
        try Sh.must(["ip", "netns", "add", ns])
        defer { _ = try? Sh.run(["ip", "netns", "del", ns]) }
        let load = try Sh.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush", "--counters"], input: r.out)
        #expect(load.status == 0, "iptables-restore rejected the rendered rules: \(load.err)")
        // stdin works too.
        let viaStdin = try Sh.run([bin, "render", "--hostname-override", "node-a", "-f", "-"], input: manifest(endpoints: ["10.244.1.2"]))
        #expect(viaStdin.out == r.out)
    }
}

/// Where the kernel has nfacct (this one does, built in), the iptables mode counts into
/// upstream's two counters and serves them as upstream's metrics: a connection to a localhost
/// NodePort shows in `kubeproxy_iptables_localhost_nodeports_accepted_packets_total`.
@Suite("nfacct counters", .enabled(if: isRoot && NFAcct.isSupported(), "needs root and a kernel with nfacct"))
struct NFAcctLabTests {
    @Test func localhostNodePortTrafficIsCounted() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let p = try Started(netns: ns.name, [bin, "proxy", "--proxy-mode", "iptables", "--manifests", examplesDir, "--hostname-override", "node-a",
                                             "--healthz-bind-address", "", "--metrics-bind-address", "127.0.0.1:10249"])
        #expect(p.wait(for: "synced iptables rules", seconds: 20), "\(p.output)")
        let save = try Sh.must(["ip", "netns", "exec", ns.name, "iptables-save"])
        // (iptables-save prints the counter's name after two spaces.)
        #expect(save.contains("--ctstate INVALID -m nfacct --nfacct-name") && save.contains("ct_state_invalid_dropped_pkts -j DROP"), "\(save)")
        #expect(save.contains("-d 127.0.0.0/8") && save.contains("localhost_nps_accepted_pkts"), "\(save)")
        func metric(_ name: String) -> Double? {
            // The metrics listener may come up a moment after the first sync on a loaded machine.
            var text = ""
            for _ in 0..<50 where !text.contains("# TYPE") {
                text = (try? Sh.run(["ip", "netns", "exec", ns.name, "curl", "-s", "-m", "2", "http://127.0.0.1:10249/metrics"]))?.out ?? ""
                if !text.contains("# TYPE") { usleep(100_000) }
            }
            #expect(text.contains("# TYPE \(name) counter"), "\(text)")
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        let before = metric("kubeproxy_iptables_localhost_nodeports_accepted_packets_total") ?? -1
        // The sticky Service's NodePort on localhost: its endpoints are not there, but the SYN is counted on the way.
        _ = try? Sh.run(["ip", "netns", "exec", ns.name, "curl", "-s", "-m", "1", "http://127.0.0.1:30080/"])
        let after = metric("kubeproxy_iptables_localhost_nodeports_accepted_packets_total") ?? -1
        #expect(before >= 0 && after > before, "before \(before), after \(after)")
        #expect(metric("kubeproxy_iptables_ct_state_invalid_dropped_packets_total") != nil)
        _ = p.stop()
    }
}
