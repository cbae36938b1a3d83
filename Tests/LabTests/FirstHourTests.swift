import Foundation
import NetnsKit
import Testing
import HostOS

/// A long-running command started in a namespace, its stderr in a file, stoppable with a signal.
final class Started: @unchecked Sendable {
    let process: Process
    let log: URL

    /// `args` inside `netns`, or in the test's own namespace when it is nil.
    init(netns: String?, _ args: [String]) throws {
        log = FileManager.default.temporaryDirectory.appendingPathComponent("sy-started-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process = CommandRunner.process((netns.map { ["ip", "netns", "exec", $0] } ?? []) + args)
        let out = try FileHandle(forWritingTo: log)
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// Waits until the output contains `text` or the process ends; true when the text came.
    func wait(for text: String, seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            usleep(50_000)
        }
        return false
    }

    /// Sends `signal` and returns how long the process took to end (nil: still running after `limit`).
    func stop(_ signal: Int32 = SIGTERM, limit: Double = 10) -> Double? {
        let start = Date()
        if process.isRunning { kill(process.processIdentifier, signal) }
        while process.isRunning {
            if Date().timeIntervalSince(start) > limit {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return nil
            }
            usleep(20_000)
        }
        return Date().timeIntervalSince(start)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: log)
    }
}

/// A namespace as `ip netns add` leaves it: loopback down. Deleted (and its processes killed) at deinit.
final class BareNamespace: @unchecked Sendable {
    let name = "sybare\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    init() throws { try Sh.must(["ip", "netns", "add", name]) }
    deinit {
        for p in Netns.pids(name) { kill(p, SIGKILL) }
        _ = try? Sh.run(["ip", "netns", "del", name])
    }
}

func tempDir(_ tag: String) throws -> URL {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("sy-\(tag)-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
    return d
}

/// The examples directory of this checkout.
let examplesDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("examples").path

@Suite("the first hour: loopback down, one data dir, the examples, error messages", .enabled(if: isRoot, "needs root for network namespaces"))
struct FirstHourTests {
    /// Each long-running command, started in a namespace whose loopback is down, either works or
    /// exits non-zero with a message, and SIGTERM ends it within 5 s. (Foundation's `Process`
    /// used to hang the iptables mode there for good, SIGTERM or not.)
    @Test(arguments: ["iptables", "nftables", "userspace", "ipvs"])
    func proxyWithLoopbackDown(mode: String) throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        let p = try Started(netns: ns.name, [bin, "proxy", "--proxy-mode", mode, "--manifests", examplesDir,
                                             "--hostname-override", "node-a", "--proxy-port-range", mode == "userspace" ? "40000-40100" : ""].filter { !$0.isEmpty })
        let worked = p.wait(for: "synced \(mode) rules", seconds: 20)
        if !worked {
            // Allowed only as a clear refusal: a non-zero exit with an Error line.
            #expect(!p.process.isRunning, "\(mode): neither synced nor exited within 20 s:\n\(p.output)")
            _ = p.stop(SIGKILL)
            #expect(p.process.terminationStatus != 0)
            #expect(p.output.contains("Error: "), "\(mode): ended by \(p.process.terminationReason == .uncaughtSignal ? "signal" : "exit") \(p.process.terminationStatus): \(p.output)")
            return
        }
        let took = p.stop()
        #expect(took != nil && took! < 5, "\(mode): SIGTERM took \(took.map { "\($0) s" } ?? "forever"):\n\(p.output)")
        #expect(p.output.contains("switchyard proxy stopped"), "\(p.output)")
        #expect(!p.output.contains("CFSocket"), "\(p.output)")
        // --cleanup in the same namespace finishes, and removes what the proxy wrote.
        let c = try Sh.run(["ip", "netns", "exec", ns.name, bin, "proxy", "--cleanup"], timeout: 20)
        #expect(c.status == 0, "--cleanup: \(c.err)")
        let save = try Sh.must(["ip", "netns", "exec", ns.name, "iptables-save"])
        #expect(!save.contains("KUBE-SERVICES") && !save.contains("KUBE-PORTALS"), "\(save)")
        #expect(try Sh.must(["ip", "netns", "exec", ns.name, "nft", "list", "tables"]).contains("kube-proxy") == false)
    }

    /// The API server with loopback down (it listens on 127.0.0.1, which `lo` holds even down):
    /// it serves, and SIGTERM ends it within 5 s.
    @Test func serverWithLoopbackDown() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        let dir = try tempDir("bare-server")
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--port", "0"])
        #expect(p.wait(for: "serving the Kubernetes API", seconds: 20), "\(p.output)")
        let took = p.stop()
        #expect(took != nil && took! < 5, "SIGTERM took \(took.map { "\($0) s" } ?? "forever"):\n\(p.output)")
    }

    /// An iptables-mode proxy in `ns` whose first sync never ends: its `iptables-restore` (from
    /// `dir`) sleeps for ten minutes. Returned once it has started and is in that sync.
    func stuckProxy(in ns: BareNamespace, dir: URL) throws -> Started {
        let fake = dir.appendingPathComponent("iptables-restore")
        try "#!/bin/sh\necho stuck >&2\nexec sleep 600\n".write(to: fake, atomically: true, encoding: .utf8)
        chmod(fake.path, 0o755)
        let p = try Started(netns: ns.name, ["/usr/bin/env", "PATH=\(dir.path):/usr/sbin:/usr/bin:/sbin:/bin", try switchyardBinary(), "proxy",
                                             "--proxy-mode", "iptables", "--manifests", examplesDir, "--hostname-override", "node-a"])
        #expect(p.wait(for: "switchyard proxy starting", seconds: 20), "\(p.output)")
        usleep(500_000)
        return p
    }

    /// A proxy stuck in a sync still ends on SIGTERM: a fake `iptables-restore` that never ends
    /// holds the first sync, and the shutdown deadline ends the process.
    @Test func stuckSyncStillEndsOnSIGTERM() throws {
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        let dir = try tempDir("stuck")
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = try stuckProxy(in: ns, dir: dir)
        let took = p.stop()
        #expect(took != nil && took! < 5, "SIGTERM took \(took.map { "\($0) s" } ?? "forever"):\n\(p.output)")
        // It says how it ended: the deadline, a clean stop, or (on a loaded machine, where
        // libdispatch's re-delivery of the one SIGTERM can come later than the quarter second
        // ShutdownDeadline folds together) the "second" signal's immediate exit.
        #expect(p.output.contains("did not finish shutting down") || p.output.contains("switchyard proxy stopped")
                || p.output.contains("second SIGTERM during shutdown; exiting now"), "\(p.output)")
        // The fake restore the proxy started is not left running.
        usleep(200_000)
        #expect(Netns.pids(ns.name).isEmpty, "left running in the namespace: \(Netns.pids(ns.name))")
    }

    /// A second SIGTERM during a stuck shutdown ends the process at once, without waiting out
    /// the deadline; one `kill` is never taken for two.
    @Test func aSecondSignalEndsAStuckShutdownAtOnce() throws {
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        let dir = try tempDir("stuck2")
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = try stuckProxy(in: ns, dir: dir)
        kill(p.process.processIdentifier, SIGTERM)
        usleep(1_000_000)
        #expect(p.process.isRunning, "one SIGTERM was taken for two:\n\(p.output)")
        let took = p.stop()
        #expect(took != nil && took! < 1.5, "the second SIGTERM took \(took.map { "\($0) s" } ?? "forever"):\n\(p.output)")
        #expect(p.output.contains("second SIGTERM during shutdown"), "\(p.output)")
        usleep(200_000)
        #expect(Netns.pids(ns.name).isEmpty, "left running in the namespace: \(Netns.pids(ns.name))")
    }

    /// `--help` and `help` print each command's help on stdout and exit 0, the flags named as
    /// kube-proxy names them and the modes listed from the registry.
    @Test func helpIsPrinted() throws {
        let bin = try switchyardBinary()
        for args in [["--help"], ["help"], ["proxy", "--help"], ["render", "-h"], ["help", "server"]] {
            let r = try Sh.run([bin] + args, timeout: 20)
            #expect(r.status == 0, "switchyard \(args): exit \(r.status): \(r.err)")
            #expect(r.out.contains("USAGE: switchyard"), "switchyard \(args): \(r.out)")
            #expect(!r.err.contains("CommandError"), "switchyard \(args): \(r.err)")
        }
        // (Help text wraps: compare it with its whitespace collapsed.)
        let proxy = try Sh.run([bin, "proxy", "--help"], timeout: 20).out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(proxy.contains("--proxy-mode") && proxy.contains("iptables (the default), nftables, ipvs or userspace"), "\(proxy)")
    }

    /// A second server on the same data dir is refused, naming the first one's PID; the first's
    /// kubeconfig stays as it was, so no two servers hand out the same ClusterIP from one dir.
    @Test(.enabled(if: kubectl("1.33") != nil, "kubectl 1.33 is not installed"))
    func secondServerOnOneDataDirIsRefused() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let dir = try tempDir("datadir")
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--port", "0"])
        #expect(first.wait(for: "serving the Kubernetes API", seconds: 20), "\(first.output)")
        let kubeconfig = dir.appendingPathComponent("kubeconfig").path
        let before = try String(contentsOfFile: kubeconfig, encoding: .utf8)

        let second = try Sh.run(["ip", "netns", "exec", ns.name, bin, "server", "--data-dir", dir.path, "--port", "0"], timeout: 10)
        #expect(second.status != 0)
        #expect(second.err.contains("--data-dir \(dir.path) is in use by another switchyard server (pid \(first.process.processIdentifier))"), "\(second.err)")
        #expect(try String(contentsOfFile: kubeconfig, encoding: .utf8) == before, "the refused server must not rewrite the kubeconfig")

        // The one server there is hands out 10.96.0.50 once.
        let k = kubectl("1.33")!
        let a = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "create", "service", "clusterip", "a", "--tcp=80", "--clusterip=10.96.0.50"])
        #expect(a.status == 0, "\(a.err)")
        let b = try Sh.run(["ip", "netns", "exec", ns.name, k, "--kubeconfig", kubeconfig, "create", "service", "clusterip", "b", "--tcp=80", "--clusterip=10.96.0.50"])
        #expect(b.status != 0 && b.err.contains("already allocated"), "\(b.err)")

        // Stopped, the lock is gone with the process: a new server takes the dir over.
        #expect(first.stop() != nil)
        let third = try Started(netns: ns.name, [bin, "server", "--data-dir", dir.path, "--port", "0"])
        #expect(third.wait(for: "serving the Kubernetes API", seconds: 20), "\(third.output)")
        _ = third.stop()
    }

    /// The README's step: `kubectl apply -f examples/` on an empty server exits 0 with both
    /// kubectl versions, and again ("unchanged"); one object's `kubectl get` is a table.
    @Test(arguments: ["1.27", "1.33"])
    func examplesApplyOnAnEmptyServer(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        var r = try server.kubectl(k, ["apply", "-f", examplesDir])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(r.out.contains("namespace/shop created") && r.out.contains("deployment.apps/web created"), "\(r.out)")
        r = try server.kubectl(k, ["apply", "-f", examplesDir])
        #expect(r.status == 0 && r.out.contains("service/web unchanged"), "\(r.out)\(r.err)")
        // A single object as a table, columns and all (it used to print NAME and AGE only).
        r = try server.kubectl(k, ["get", "svc", "web"])
        #expect(r.out.contains("CLUSTER-IP") && r.out.contains("10.96.0.10") && r.out.contains("80/TCP,53/UDP"), "\(r.out)")
        r = try server.kubectl(k, ["get", "deployment", "web", "-n", "default"])
        #expect(r.out.contains("READY") && r.out.contains("UP-TO-DATE"), "\(r.out)")
        // Upstream's defaults on kubectl's create path, not only on apply.
        r = try server.kubectl(k, ["create", "deployment", "d", "--image=nginx:1.25", "--port=80"])
        #expect(r.status == 0, "\(r.err)")
        r = try server.kubectl(k, ["get", "deployment", "d", "-o",
                                   "jsonpath={.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.template.spec.containers[0].ports[0].protocol} {.spec.template.spec.containers[0].imagePullPolicy}"])
        #expect(r.out == "RollingUpdate 25% TCP IfNotPresent", "\(r.out)")
    }

    /// Rules of a mode that no longer runs are removed when another mode starts (and it says so);
    /// a restarted proxy of the same mode removes nothing.
    @Test func switchingModesRemovesTheOtherModesRules() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        func run(_ mode: String) throws -> String {
            let p = try Started(netns: ns.name, [bin, "proxy", "--proxy-mode", mode, "--manifests", examplesDir, "--hostname-override", "node-a",
                                                 "--healthz-bind-address", "", "--metrics-bind-address", ""])
            #expect(p.wait(for: "synced \(mode) rules", seconds: 20), "\(p.output)")
            #expect(p.stop() != nil)
            return p.output
        }
        _ = try run("nftables")
        #expect(try Sh.must(["ip", "netns", "exec", ns.name, "nft", "list", "tables"]).contains("kube-proxy"))
        var out = try run("userspace")
        #expect(out.contains("removed the nftables table ip kube-proxy and ip6 kube-proxy, left by an earlier proxy in the nftables mode"), "\(out)")
        #expect(!(try Sh.must(["ip", "netns", "exec", ns.name, "nft", "list", "tables"])).contains("kube-proxy"))
        out = try run("iptables")
        #expect(out.contains("removed the userspace mode's portal chains"), "\(out)")
        #expect(!(try Sh.must(["ip", "netns", "exec", ns.name, "iptables-save"])).contains("KUBE-PORTALS"))
        out = try run("iptables")
        #expect(!out.contains("removed"), "a restarted proxy of the same mode removes nothing: \(out)")
        out = try run("nftables")
        #expect(out.contains("removed the iptables mode's rules and chains"), "\(out)")
        #expect(!(try Sh.must(["ip", "netns", "exec", ns.name, "iptables-save"])).contains("KUBE-SERVICES"))
    }

    /// Each render begins with the command that loads it, and loading it twice is harmless: the
    /// nftables table is replaced whole; the iptables jumps get a second copy that a proxy's full
    /// sync and `--cleanup` both remove.
    @Test func rendersSayHowToLoadThemAndLoadTwice() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        let nft = try Sh.run([bin, "render", "--proxy-mode", "nftables", "-f", examplesDir])
        #expect(nft.out.hasPrefix("# switchyard render --proxy-mode nftables") && nft.out.contains("# Load it with:  nft -f FILE"), "\(nft.out)")
        var listings: [String] = []
        for _ in 0..<2 {
            let load = try Sh.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input: nft.out)
            #expect(load.status == 0, "\(load.err)")
            listings.append(try Sh.must(["ip", "netns", "exec", ns.name, "nft", "list", "table", "ip", "kube-proxy"]))
        }
        // Loaded twice, the table is as after one load, not doubled.
        #expect(listings[0] == listings[1], "\(listings[1])")
        #expect(listings[0].contains("10.96.0.10 . tcp . 80"), "\(listings[0])")

        let ipt = try Sh.run([bin, "render", "--proxy-mode", "iptables", "-f", examplesDir])
        #expect(ipt.out.contains("# Load it with:  iptables-restore --noflush < FILE"), "\(ipt.out)")
        for _ in 0..<2 {
            let load = try Sh.run(["ip", "netns", "exec", ns.name, "iptables-restore", "--noflush"], input: ipt.out)
            #expect(load.status == 0, "\(load.err)")
        }
        let jump = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        #expect(try Sh.must(["ip", "netns", "exec", ns.name, "iptables-save", "-t", "nat"]).components(separatedBy: jump).count - 1 == 2)
        let c = try Sh.run(["ip", "netns", "exec", ns.name, bin, "proxy", "--cleanup"])
        #expect(c.status == 0, "\(c.err)")
        let left = try Sh.must(["ip", "netns", "exec", ns.name, "iptables-save"]).split(separator: "\n")
            .filter { $0.contains("KUBE-") && !$0.contains("KUBE-FIREWALL") }
        #expect(left.isEmpty, "left after --cleanup: \(left)")
        #expect(!(try Sh.must(["ip", "netns", "exec", ns.name, "nft", "list", "tables"])).contains("kube-proxy"))
    }

    /// The error messages a newcomer meets: each names the flag or file, says what is wrong
    /// and what to do, with no Swift or NIO internals, and a non-zero exit.
    @Test func errorMessagesNameTheFlagAndTheFix() throws {
        let bin = try switchyardBinary()
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let dir = try tempDir("errors")
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let badConfig = dir.appendingPathComponent("bad-config.yaml")
        try "kind: KubeProxyConfiguration\nmode: [\n".write(to: badConfig, atomically: true, encoding: .utf8)
        let noName = dir.appendingPathComponent("noname.yaml")
        try "apiVersion: v1\nkind: Service\nmetadata: {namespace: default}\nspec: {ports: [{port: 80}]}\n".write(to: noName, atomically: true, encoding: .utf8)
        let kubeconfig = dir.appendingPathComponent("kubeconfig")
        try """
            apiVersion: v1
            kind: Config
            clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
            contexts: [{name: c, context: {cluster: c, user: u}}]
            current-context: c
            users: [{name: u, user: {}}]
            """.write(to: kubeconfig, atomically: true, encoding: .utf8)

        struct Case { var args: [String]; var status: Int32?; var wants: [String] }
        let cases: [Case] = [
            Case(args: ["render", "--proxy-mode", "nft", "-f", examplesDir], status: 64,
                 wants: ["--proxy-mode nft: unknown mode; one of iptables, nftables, ipvs, userspace", "See 'switchyard render --help'"]),
            Case(args: ["proxy", "--healthz-bind-address", "10256", "--manifests", examplesDir], status: 64,
                 wants: ["--healthz-bind-address 10256: want IP:PORT, such as 0.0.0.0:10256"]),
            Case(args: ["proxy", "--healthz-bind-address", "10.123.45.67:10256", "--manifests", examplesDir], status: 64,
                 wants: ["--healthz-bind-address 10.123.45.67:10256", "no interface of this host has that address"]),
            Case(args: ["proxy", "--manifests", "/missing/dir/"], status: 64, wants: ["--manifests /missing/dir/: no such file or directory"]),
            Case(args: ["render", "-f", empty.path], status: 0, wants: ["\(empty.path): no manifest files (.yaml, .yml, .json)"]),
            Case(args: ["render", "--strict", "-f", empty.path], status: 1, wants: ["no manifest files"]),
            Case(args: ["render", "--strict", "-f", noName.path], status: 1,
                 wants: ["\(noName.path): document 1 (Service with no name in namespace default): metadata.name: Required value"]),
            Case(args: ["render", "--config", badConfig.path, "-f", examplesDir], status: nil,
                 wants: ["\(badConfig.path): not valid YAML or JSON: 3:1"]),
            Case(args: ["server", "--data-dir", "/proc/x"], status: 64, wants: ["--data-dir /proc/x: cannot create /proc/x"]),
            Case(args: ["server", "--data-dir", "/proc/x", "--tls-san", "api.lab,bad name"], status: 64,
                 wants: ["--tls-san \"bad name\": neither an IP address nor a DNS name"]),
            Case(args: ["proxy", "--cleanup"], status: 0, wants: ["nothing to remove"]),
            Case(args: ["--version"], status: 0, wants: ["switchyard v", "(commit "]),
        ]
        for c in cases {
            let r = try Sh.run(["ip", "netns", "exec", ns.name, bin] + c.args, timeout: 20)
            let text = r.out + r.err
            if let s = c.status { #expect(r.status == s, "\(c.args): exit \(r.status)\n\(text)") } else { #expect(r.status != 0, "\(c.args)") }
            for w in c.wants { #expect(text.contains(w), "\(c.args): wanted \"\(w)\" in:\n\(text)") }
            for bad in ["NSCocoaErrorDomain", "DecodingError", "Logging.Logger", "errno: ", "bind(descriptor", "Usage: switchyard <subcommand>"] {
                #expect(!text.contains(bad), "\(c.args): \"\(bad)\" in:\n\(text)")
            }
            #expect(!(c.args == ["proxy", "--cleanup"] && text.contains("removed the nftables table")), "\(text)")
        }

        // A port in use: the second proxy names the flag, the address and the likely cause, and
        // changes nothing in the kernel.
        let first = try Started(netns: ns.name, [bin, "proxy", "--proxy-mode", "nftables", "--manifests", examplesDir,
                                                 "--healthz-bind-address", "0.0.0.0:10256", "--metrics-bind-address", ""])
        #expect(first.wait(for: "synced nftables rules", seconds: 20), "\(first.output)")
        let second = try Sh.run(["ip", "netns", "exec", ns.name, bin, "proxy", "--proxy-mode", "iptables", "--manifests", examplesDir,
                                 "--healthz-bind-address", "0.0.0.0:10256", "--metrics-bind-address", ""], timeout: 20)
        #expect(second.status != 0)
        #expect(second.err.contains("--healthz-bind-address 0.0.0.0:10256: cannot listen on 0.0.0.0:10256: Address already in use"), "\(second.err)")
        #expect(try Sh.must(["ip", "netns", "exec", ns.name, "nft", "list", "tables"]).contains("kube-proxy"),
                "the refused proxy must not remove the running one's table")
        _ = first.stop()

        // An API server that is not there: one line per attempt, with the URL and the next try.
        let p = try Started(netns: ns.name, [bin, "proxy", "--kubeconfig", kubeconfig.path, "--healthz-bind-address", "", "--metrics-bind-address", ""])
        #expect(p.wait(for: "(in 1.0 s)", seconds: 15), "\(p.output)")
        _ = p.stop()
        let lines = p.output.split(separator: "\n").filter { $0.contains("cannot connect") }
        #expect(lines.first?.contains("cannot connect to the API server at http://127.0.0.1:1: Connection refused; next try at") == true, "\(p.output)")
        let first2 = lines.prefix(2)
        #expect(first2.count == 2 && first2.last!.contains("(in 1.0 s)"), "one line per retry, not one per informer: \(p.output)")
        #expect(!p.output.contains("SingleConnectionFailure"), "\(p.output)")
    }

    /// `switchyard-netlab serve --netns NS --http PORT` listens inside NS (it listened in the
    /// caller's namespace).
    @Test func netlabServeListensInItsNamespace() throws {
        let bin = (try switchyardBinary() as NSString).deletingLastPathComponent + "/switchyard-netlab"
        let ns = try BareNamespace()
        // Alive to the end: released after its last use, it would kill what runs in it.
        defer { withExtendedLifetime(ns) {} }
        try Sh.must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        let port = Int.random(in: 30000...39999)
        let p = try Started(netns: nil, [bin, "serve", "--netns", ns.name, "--name", "p1", "--http", String(port)])
        var answer = ""
        for _ in 0..<100 where answer.isEmpty {
            answer = (try? Sh.run(["ip", "netns", "exec", ns.name, "curl", "-s", "-m", "1", "http://127.0.0.1:\(port)/"]))?.out ?? ""
            if answer.isEmpty { usleep(50_000) }
        }
        #expect(answer.hasPrefix("p1 127.0.0.1:"), "inside \(ns.name): \(answer) \(p.output)")
        let outside = try Sh.run(["curl", "-s", "-m", "1", "http://127.0.0.1:\(port)/"])
        #expect(outside.status != 0, "the caller's namespace must not have the listener: \(outside.out)")
        _ = p.stop(SIGKILL)
    }
}
