import ControllerKit
import CRI
import Foundation
import KubeAPI
@testable import Kubelet
import Testing

/// A kubelet over the fake runtime and the API server in memory.
struct KubeletHarness {
    let api: API
    let runtime: FakeRuntime
    let kubelet: Kubelet
    let task: Task<Void, Never>
    let dir: String

    static func start(api: API? = nil, runtime: FakeRuntime = FakeRuntime(registry: ["switchyard/busybox:latest", "busybox:1.36"]),
                      dir: String? = nil, configure: (inout KubeletConfiguration) -> Void = { _ in }) async throws -> KubeletHarness {
        var transport: API
        if let api { transport = api } else { transport = try await HandlerTransport.make().1 }
        let api = transport
        let dir = dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("sy-kubelet-\(UUID().uuidString)").path
        var c = KubeletConfiguration(nodeName: "node-a")
        c.nodeIP = "192.0.2.10"
        c.rootDir = dir + "/root"
        c.podLogsDir = dir + "/logs"
        c.cniConfDir = dir + "/cni"
        c.nodeStatusUpdateFrequency = .milliseconds(200)
        c.relistPeriod = .milliseconds(100)
        c.syncFrequency = .seconds(2)
        c.backOff = .seconds(1)
        c.maxBackOff = .seconds(4)
        c.runtimeName = "fake"
        configure(&c)
        let kubelet = Kubelet(api: api, runtime: runtime, config: c)
        let task = Task { _ = try? await kubelet.run() }
        return KubeletHarness(api: api, runtime: runtime, kubelet: kubelet, task: task, dir: dir)
    }

    func stop() {
        task.cancel()
    }

    func cleanUp() {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func pod(_ name: String) async throws -> JSONValue { try await api.get("/api/v1/namespaces/default/pods/\(name)") }

    func create(_ name: String, containers: [JSONValue], initContainers: [JSONValue] = [], restartPolicy: String = "Always",
                extra: [String: JSONValue] = [:]) async throws {
        var spec: [String: JSONValue] = ["containers": .array(containers), "restartPolicy": .string(restartPolicy), "nodeName": "node-a"]
        if !initContainers.isEmpty { spec["initContainers"] = .array(initContainers) }
        for (k, v) in extra { spec[k] = v }
        _ = try await api.create("/api/v1/namespaces/default/pods", ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name)], "spec": .object(spec)])
    }

    func eventually(_ what: String, _ check: @escaping () async throws -> Bool) async throws {
        let ok = try await api.eventually(240, check)
        #expect(ok, "\(what)")
        if !ok { throw KubeletError("timed out: \(what)") }
    }
}

func container(_ name: String, image: String = "switchyard/busybox:latest", extra: [String: JSONValue] = [:]) -> JSONValue {
    var c: [String: JSONValue] = ["name": .string(name), "image": .string(image)]
    for (k, v) in extra { c[k] = v }
    return .object(c)
}

/// What a PodSpec becomes in CRI, by upstream's formulas.
@Suite("kubelet: PodSpec to CRI")
struct SpecsTests {
    @Test func resourcesAndOOMScoresByQoS() {
        let burstable: JSONValue = ["name": "c", "resources": ["requests": ["cpu": "250m", "memory": "1Gi"], "limits": ["cpu": "500m", "memory": "2Gi"]]]
        let r = Specs.linuxResources(burstable, qos: .burstable, nodeMemory: 8 << 30)
        #expect(r.cpuShares == 256)
        #expect(r.cpuQuota == 50_000)
        #expect(r.cpuPeriod == 100_000)
        #expect(r.memoryLimitInBytes == 2 << 30)
        #expect(r.oomScoreAdj == 875)   // 1000 - 1000 × 1 GiB / 8 GiB
        #expect(Specs.linuxResources(["name": "c"], qos: .bestEffort, nodeMemory: 8 << 30).oomScoreAdj == 1000)
        #expect(Specs.linuxResources(["name": "c"], qos: .bestEffort, nodeMemory: 8 << 30).cpuShares == 2)
        let guaranteed: JSONValue = ["spec": ["containers": [["name": "c", "resources": ["limits": ["cpu": "1", "memory": "1Gi"]]]]]]
        #expect(Specs.QoS.of(guaranteed) == .guaranteed)
        #expect(Specs.QoS.of(["spec": ["containers": [burstable]]]) == .burstable)
        #expect(Specs.QoS.of(["spec": ["containers": [["name": "c"]]]]) == .bestEffort)
    }

    @Test func pullPolicyDefaultsAsUpstream() {
        #expect(Specs.pullPolicy(["image": "busybox"]) == "Always")
        #expect(Specs.pullPolicy(["image": "busybox:latest"]) == "Always")
        #expect(Specs.pullPolicy(["image": "busybox:1.36"]) == "IfNotPresent")
        #expect(Specs.pullPolicy(["image": "localhost:5000/app"]) == "Always")
        #expect(Specs.pullPolicy(["image": "app@sha256:abc"]) == "IfNotPresent")
        #expect(Specs.pullPolicy(["image": "busybox", "imagePullPolicy": "Never"]) == "Never")
    }

    @Test func clusterFirstDNSAndHostNetwork() {
        let dns = Specs.DNS(servers: ["10.96.0.10"], clusterDomain: "cluster.local")
        let pod: JSONValue = ["metadata": ["name": "p", "namespace": "shop"], "spec": [:]]
        let c = dns.config(for: pod)
        #expect(c?.servers == ["10.96.0.10"])
        #expect(c?.searches == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"])
        #expect(c?.options == ["ndots:5"])
        #expect(dns.config(for: ["metadata": ["name": "p", "namespace": "shop"], "spec": ["hostNetwork": true]]) == nil)
        let custom = dns.config(for: ["metadata": ["name": "p", "namespace": "shop"],
                                      "spec": ["dnsConfig": ["options": [["name": "ndots", "value": "2"]]]]])
        #expect(custom?.options == ["ndots:2"])
    }

    @Test func variablesExpandAsUpstream() {
        let vars = [("A", "x"), ("B", "y")]
        #expect(Resolver.expand("$(A)-$(B)", vars) == "x-y")
        #expect(Resolver.expand("$$(A)", vars) == "$(A)")
        #expect(Resolver.expand("$(C)", vars) == "$(C)")
        #expect(Resolver.expand("no refs", vars) == "no refs")
    }
}

@Suite("kubelet over a fake runtime", .serialized)
struct KubeletTests {
    @Test func registersTheNodeKeepsItsLeaseAndGivesThePodCIDRToCNI() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.eventually("the node registers") { (try? await h.api.get("/api/v1/nodes/node-a")) != nil }
        let node = try await h.api.get("/api/v1/nodes/node-a")
        #expect(node[path: ["metadata", "labels", "kubernetes.io/hostname"]] == "node-a")
        #expect(node[path: ["metadata", "labels", "kubernetes.io/os"]] == "linux")
        // Registered with its nodeInfo; the conditions come with the first status update.
        try await h.eventually("the node reports its status") {
            try await h.api.get("/api/v1/nodes/node-a")[path: ["status", "conditions"]]?.array?.isEmpty == false
        }
        let status = try await h.api.get("/api/v1/nodes/node-a")["status"] ?? [:]
        #expect(status[path: ["capacity", "pods"]] == "110")
        #expect(status[path: ["capacity", "cpu"]]?.string == String(ProcessInfo.processInfo.activeProcessorCount))
        #expect(status["addresses"]?.array?.first?["address"] == "192.0.2.10")
        #expect(status[path: ["nodeInfo", "containerRuntimeVersion"]] == "fake://0.1.0")
        let ready = status["conditions"]?.array?.first { $0["type"] == "Ready" }
        #expect(ready?["status"] == "True")
        #expect(ready?["reason"] == "KubeletReady")
        try await h.eventually("the lease is held") {
            try await h.api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-a")[path: ["spec", "holderIdentity"]] == "node-a"
        }
        _ = try await h.api.mergePatch("/api/v1/nodes/node-a", ["spec": ["podCIDR": "10.244.7.0/24"]])
        let conf = h.dir + "/cni/10-switchyard.conflist"
        try await h.eventually("the CNI configuration is written") { FileManager.default.fileExists(atPath: conf) }
        let text = try String(contentsOfFile: conf, encoding: .utf8)
        #expect(text.contains("\"subnet\": \"10.244.7.0/24\""))
    }

    @Test func runsAPodAndReportsItAsUpstreamDoes() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        _ = try await h.api.create("/api/v1/namespaces/default/configmaps", ["metadata": ["name": "settings"], "data": ["mode": "fast"]])
        _ = try await h.api.create("/api/v1/namespaces/default/services", ["metadata": ["name": "web-api"],
                                                                           "spec": ["ports": [["port": 80, "name": "http"]], "selector": ["app": "x"]]])
        try await h.create("web", containers: [container("main", extra: [
            "command": ["sh", "-c"], "args": ["echo $(MODE)"],
            "env": [["name": "MODE", "valueFrom": ["configMapKeyRef": ["name": "settings", "key": "mode"]]],
                    ["name": "NODE", "valueFrom": ["fieldRef": ["fieldPath": "spec.nodeName"]]],
                    ["name": "ME", "valueFrom": ["fieldRef": ["fieldPath": "metadata.name"]]]]])])
        try await h.eventually("the pod runs and is ready") {
            let p = try await h.pod("web")
            return p[path: ["status", "phase"]] == "Running" && p[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
        }
        let p = try await h.pod("web")
        let status = p["status"] ?? [:]
        #expect(status["podIP"]?.string?.hasPrefix("10.88.") == true)
        #expect(status["hostIP"] == "192.0.2.10")
        #expect(status["qosClass"] == "BestEffort")
        let types = (status["conditions"]?.array ?? []).compactMap { $0["type"]?.string }
        #expect(types == ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"], "\(types)")
        let cs = status["containerStatuses"]?.array?.first ?? [:]
        #expect(cs["name"] == "main")
        #expect(cs["ready"] == true)
        #expect(cs["started"] == true)
        #expect(cs["restartCount"] == 0)
        #expect(cs[path: ["state", "running", "startedAt"]]?.string != nil)
        #expect(cs["containerID"]?.string?.hasPrefix("fake://") == true)
        let config = try #require(h.runtime.containerConfig("main"))
        let env = Dictionary(config.envs.map { ($0.key, String(decoding: $0.value, as: UTF8.self)) }, uniquingKeysWith: { _, b in b })
        #expect(env["MODE"] == "fast")
        #expect(env["NODE"] == "node-a")
        #expect(env["ME"] == "web")
        #expect(env["WEB_API_SERVICE_PORT_HTTP"] == "80")
        #expect(env["WEB_API_SERVICE_HOST"]?.isEmpty == false)
        #expect(config.args == ["echo fast"])
        #expect(config.labels["io.kubernetes.pod.uid"] == p.uid)
        // Events are sent in the background.
        try await h.eventually("the pod's events are recorded") {
            let events = try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
            return Set(events.compactMap { $0["reason"]?.string }).isSuperset(of: ["Pulling", "Pulled", "Created", "Started"])
        }
        let events = try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
        #expect(events.first { $0["reason"] == "Started" }?[path: ["source", "component"]] == "kubelet")
    }

    /// Upstream's kubelet metrics: a pod's start counted once, from when the kubelet first saw it
    /// to Running; each runtime call counted and timed under upstream's operation name, a failed
    /// one as an error too.
    @Test func startUpAndRuntimeCallsAreMeasuredAsUpstream() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.create("web", containers: [container("main")])
        try await h.create("missing", containers: [container("main", image: "nothing/here:1")])
        try await h.eventually("the pod runs") { try await h.pod("web")[path: ["status", "phase"]] == "Running" }
        try await h.eventually("the missing image's pull failed") {
            h.kubelet.metrics.text().contains(#"kubelet_runtime_operations_errors_total{operation_type="pull_image"}"#)
        }
        // A few more syncs: still one start.
        try await Task.sleep(for: .milliseconds(500))
        let text = h.kubelet.metrics.text()
        let lines = text.split(separator: "\n").map(String.init)
        // Each sample by its name and labels.
        var sample: [String: Double] = [:]
        for l in lines where !l.hasPrefix("#") {
            if let space = l.lastIndex(of: " "), let v = Double(l[l.index(after: space)...]) { sample[String(l[..<space])] = v }
        }
        for family in ["kubelet_pod_start_duration_seconds histogram", "kubelet_runtime_operations_total counter",
                       "kubelet_runtime_operations_duration_seconds histogram", "kubelet_runtime_operations_errors_total counter"] {
            #expect(lines.contains("# TYPE " + family), "\(family)")
        }
        #expect(sample["kubelet_pod_start_duration_seconds_count"] == 1, "one pod started")
        #expect(sample[#"kubelet_pod_start_duration_seconds_bucket{le="60.0"}"#] == 1)
        func ops(_ op: String) -> Double? { sample[#"kubelet_runtime_operations_total{operation_type="\#(op)"}"#] }
        #expect(ops("run_podsandbox") == 2, "a sandbox for each pod")
        #expect(ops("create_container") == 1 && ops("start_container") == 1, "one container ran")
        #expect((ops("list_podsandbox") ?? 0) >= 1 && (ops("pull_image") ?? 0) >= 2)
        #expect((sample[#"kubelet_runtime_operations_errors_total{operation_type="pull_image"}"#] ?? 0) >= 1)
        #expect(sample[#"kubelet_runtime_operations_errors_total{operation_type="create_container"}"#] == nil)
        // ExponentialBuckets(0.005, 2.5, 14): 5 ms, 12.5 ms, 31.25 ms, ...
        let les = Set(lines.filter { $0.hasPrefix(#"kubelet_runtime_operations_duration_seconds_bucket{operation_type="run_podsandbox","#) }
            .compactMap { $0.split(separator: "\"").dropFirst(3).first.flatMap { Double($0) } })
        #expect(les.count == 15 && les.contains(0.005) && les.contains(0.0125) && les.contains(0.03125) && les.contains(.infinity), "\(les.sorted())")
    }

    /// A container that keeps crashing leaves two instances at most (the newest and the one
    /// before it), not one per restart.
    @Test func deadContainersAreCollected() async throws {
        let h = try await KubeletHarness.start { c in
            c.backOff = .milliseconds(50)
            c.maxBackOff = .milliseconds(100)
        }
        defer { h.cleanUp() }
        try await h.create("crashy", containers: [container("main")])
        try await h.eventually("the pod runs") { try await h.pod("crashy")[path: ["status", "phase"]] == "Running" }
        let uid = try await h.pod("crashy").uid
        for n in 1...5 {
            h.runtime.exit(pod: uid, container: "main", code: 1)
            try await h.eventually("restart \(n)") {
                let s = try await h.pod("crashy")[path: ["status", "containerStatuses"]]?.array?.first ?? [:]
                return s["restartCount"] == .int(Int64(n)) && s[path: ["state", "running"]] != nil
            }
        }
        try await h.eventually("two instances left") {
            try await h.runtime.listContainers(.with { $0.labelSelector = [Specs.podUIDLabel: uid] }).count == 2
        }
        let status = try await h.pod("crashy")[path: ["status", "containerStatuses"]]?.array?.first ?? [:]
        #expect(status[path: ["lastState", "terminated", "exitCode"]] == 1)
    }

    @Test func restartsACrashingContainerWithBackOff() async throws {
        // A back-off long enough to be seen under a loaded machine's delays: with 1 s, a sync
        // that comes late restarts the container before any status says it waits.
        let h = try await KubeletHarness.start { c in
            c.backOff = .seconds(3)
            c.maxBackOff = .seconds(6)
        }
        defer { h.cleanUp() }
        try await h.create("crash", containers: [container("main")])
        try await h.eventually("the pod runs") { try await h.pod("crash")[path: ["status", "phase"]] == "Running" }
        let uid = try await h.pod("crash").uid
        func statusOfMain() async throws -> JSONValue { try await h.pod("crash")[path: ["status", "containerStatuses"]]?.array?.first ?? [:] }
        // The first restart is at once.
        h.runtime.exit(pod: uid, container: "main", code: 1)
        try await h.eventually("restarted once") {
            let s = try await statusOfMain()
            return s["restartCount"] == 1 && s[path: ["state", "running"]] != nil
        }
        #expect(try await statusOfMain()[path: ["lastState", "terminated", "exitCode"]] == 1)
        #expect(try await statusOfMain()[path: ["lastState", "terminated", "reason"]] == "Error")
        // The next waits: CrashLoopBackOff, then a restart when the back-off ends.
        h.runtime.exit(pod: uid, container: "main", code: 2)
        try await h.eventually("backing off") { try await statusOfMain()[path: ["state", "waiting", "reason"]] == "CrashLoopBackOff" }
        let waiting = try await statusOfMain()
        #expect(waiting[path: ["state", "waiting", "message"]] == .string("back-off 3s restarting failed container=main pod=crash_default(\(uid))"))
        let ready = try await h.pod("crash")[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }
        #expect(ready?["status"] == "False")
        #expect(ready?["message"] == "containers with unready status: [main]")
        try await h.eventually("restarted after the back-off") {
            let s = try await statusOfMain()
            return s["restartCount"] == 2 && s[path: ["state", "running"]] != nil
        }
        try await h.eventually("the back-off is recorded") {
            let events = try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
            return events.contains { $0["reason"] == "BackOff" && $0["type"] == "Warning" }
        }
    }

    @Test func finishesWithTheRestartPolicy() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.create("job-ok", containers: [container("main")], restartPolicy: "Never")
        try await h.create("job-bad", containers: [container("main")], restartPolicy: "Never")
        try await h.eventually("both run") {
            let a = try await h.pod("job-ok"), b = try await h.pod("job-bad")
            return a[path: ["status", "phase"]] == "Running" && b[path: ["status", "phase"]] == "Running"
        }
        h.runtime.exit(pod: try await h.pod("job-ok").uid, container: "main", code: 0)
        h.runtime.exit(pod: try await h.pod("job-bad").uid, container: "main", code: 3)
        try await h.eventually("one succeeded") { try await h.pod("job-ok")[path: ["status", "phase"]] == "Succeeded" }
        try await h.eventually("one failed") { try await h.pod("job-bad")[path: ["status", "phase"]] == "Failed" }
        let ok = try await h.pod("job-ok")
        #expect(ok[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["reason"] == "PodCompleted")
        #expect(ok[path: ["status", "containerStatuses"]]?.array?.first?[path: ["state", "terminated", "reason"]] == "Completed")
        let bad = try await h.pod("job-bad")
        #expect(bad[path: ["status", "containerStatuses"]]?.array?.first?[path: ["state", "terminated", "exitCode"]] == 3)
        #expect(bad[path: ["status", "containerStatuses"]]?.array?.first?["restartCount"] == 0)
    }

    @Test func runsInitContainersFirstInOrder() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.create("inits", containers: [container("app")], initContainers: [container("first"), container("second")])
        try await h.eventually("the first init container runs") {
            try await h.pod("inits")[path: ["status", "initContainerStatuses"]]?.array?.first?[path: ["state", "running"]] != nil
        }
        let p = try await h.pod("inits")
        #expect(p[path: ["status", "phase"]] == "Pending")
        let initialized = p[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Initialized" }
        #expect(initialized?["status"] == "False")
        #expect(initialized?["reason"] == "ContainersNotInitialized")
        #expect(initialized?["message"] == "containers with incomplete status: [first second]")
        #expect(p[path: ["status", "containerStatuses"]]?.array?.first?[path: ["state", "waiting", "reason"]] == "PodInitializing")
        #expect(h.runtime.containerConfig("second") == nil)
        #expect(h.runtime.containerConfig("app") == nil)
        h.runtime.exit(pod: p.uid, container: "first", code: 0)
        try await h.eventually("the second runs") { h.runtime.containerConfig("second") != nil }
        #expect(h.runtime.containerConfig("app") == nil)
        h.runtime.exit(pod: p.uid, container: "second", code: 0)
        try await h.eventually("the app runs") { try await h.pod("inits")[path: ["status", "phase"]] == "Running" }
        let done = try await h.pod("inits")
        #expect(done[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Initialized" }?["status"] == "True")
        #expect(done[path: ["status", "initContainerStatuses"]]?.array?.allSatisfy { $0[path: ["state", "terminated", "reason"]] == "Completed" } == true)
    }

    @Test func finishesAGracefulDeletionAndLeavesNothing() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.create("gone", containers: [container("main")])
        try await h.eventually("the pod runs") { try await h.pod("gone")[path: ["status", "phase"]] == "Running" }
        #expect(h.runtime.runningContainers == 1)
        _ = try await h.api.delete("/api/v1/namespaces/default/pods/gone")
        try await h.eventually("the kubelet deletes it") {
            do { _ = try await h.pod("gone"); return false } catch let e as APIStatusError { return e.isNotFound }
        }
        #expect(h.runtime.runningContainers == 0)
        #expect(h.runtime.sandboxCount == 0)
        #expect(h.runtime.calls.contains("StopContainer"))
    }

    @Test func aPullFailureWaitsAndTheImageIsPulledOnceItExists() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.create("pull", containers: [container("main", image: "switchyard/later:1.0")])
        try await h.eventually("the pull fails") {
            let reason = try await h.pod("pull")[path: ["status", "containerStatuses"]]?.array?.first?[path: ["state", "waiting", "reason"]]?.string
            return reason == "ErrImagePull" || reason == "ImagePullBackOff"
        }
        h.runtime.makeAvailable("switchyard/later:1.0")
        try await h.eventually("the pod runs once the image exists") { try await h.pod("pull")[path: ["status", "phase"]] == "Running" }
    }

    /// Readiness drives the Ready condition both ways by its thresholds; a failing liveness
    /// probe restarts the container; liveness and readiness wait for the startup probe.
    @Test func probesDecideReadinessAndRestarts() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        let flags = Flags()
        let prestops = Counter()
        h.runtime.onExec { container, cmd in
            let what = cmd.last ?? ""
            if what == "prestop" { prestops.add() }
            return (flags.get("\(container)/\(what)") ? 0 : 1, "\(what) is \(flags.get("\(container)/\(what)") ? "ok" : "not ok")")
        }
        func probe(_ what: String, failure: Int = 1) -> JSONValue {
            ["exec": ["command": ["check", .string(what)]], "periodSeconds": 1, "failureThreshold": .int(Int64(failure))]
        }
        // The liveness probe's own grace period (7 s) wins over the pod's (30 s), and the
        // container's preStop hook runs before it is stopped, as on a deletion.
        var liveness = probe("alive", failure: 2)
        liveness["terminationGracePeriodSeconds"] = 7
        try await h.create("probed", containers: [container("main", extra: ["readinessProbe": probe("ready"), "livenessProbe": liveness,
                                                                           "startupProbe": probe("booted", failure: 30),
                                                                           "lifecycle": ["preStop": ["exec": ["command": ["check", "prestop"]]]]])])
        flags.set("main/alive", true)
        flags.set("main/prestop", true)
        func ready() async throws -> String? {
            try await h.pod("probed")[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"]?.string
        }
        try await h.eventually("running") { try await h.pod("probed")[path: ["status", "phase"]] == "Running" }
        try await Task.sleep(for: .milliseconds(1500))
        var main = try await h.pod("probed")[path: ["status", "containerStatuses"]]?.array?.first ?? [:]
        #expect(main["started"] == false)
        #expect(try await ready() == "False")
        flags.set("main/booted", true)
        try await h.eventually("started") { try await h.pod("probed")[path: ["status", "containerStatuses"]]?.array?.first?["started"] == true }
        #expect(try await ready() == "False")
        flags.set("main/ready", true)
        try await h.eventually("ready") { try await ready() == "True" }
        flags.set("main/ready", false)
        try await h.eventually("not ready again") { try await ready() == "False" }
        main = try await h.pod("probed")[path: ["status", "containerStatuses"]]?.array?.first ?? [:]
        #expect(main["ready"] == false)
        #expect(main["restartCount"] == 0)
        flags.set("main/alive", false)
        try await h.eventually("restarted by the liveness probe") {
            try await h.pod("probed")[path: ["status", "containerStatuses"]]?.array?.first?["restartCount"] == 1
        }
        try await h.eventually("the kill is recorded") {
            let events = try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
            return events.contains { $0["reason"] == "Killing" }
        }
        let events = try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []
        #expect(events.contains { $0["reason"] == "Unhealthy" && $0["message"]?.string?.hasPrefix("Liveness probe failed: alive is not ok") == true })
        #expect(events.contains { $0["reason"] == "Unhealthy" && $0["message"]?.string?.hasPrefix("Readiness probe failed:") == true })
        #expect(events.contains { $0["reason"] == "Killing" && $0["message"] == "Container main failed liveness probe, will be restarted" })
        #expect(prestops.get() == 1, "the preStop hook ran once before the liveness kill")
        #expect(h.runtime.stopTimeouts.first.map { (2...7).contains($0) } == true, "stopped within the probe's grace period: \(h.runtime.stopTimeouts)")
    }

    /// A sandbox that stopped by itself is replaced, the containers run again in the new one,
    /// and the pod's emptyDir volume keeps what was written to it.
    @Test func aStoppedSandboxIsReplacedAndVolumesStay() async throws {
        let h = try await KubeletHarness.start()
        defer { h.cleanUp() }
        try await h.create("sb", containers: [container("main", extra: ["volumeMounts": [["name": "scratch", "mountPath": "/scratch"]]])],
                           extra: ["volumes": [["name": "scratch", "emptyDir": [:]]]])
        try await h.eventually("running") { try await h.pod("sb")[path: ["status", "phase"]] == "Running" }
        let uid = try await h.pod("sb").uid
        let mount = try #require(h.runtime.containerConfig("main")?.mounts.first)
        #expect(mount.containerPath == "/scratch")
        try Data("kept".utf8).write(to: URL(fileURLWithPath: mount.hostPath + "/file"))
        let first = h.runtime.calls.filter { $0.hasPrefix("RunPodSandbox") }.count
        h.runtime.killSandbox(pod: uid)
        try await h.eventually("a new sandbox runs the container again") {
            h.runtime.calls.filter { $0.hasPrefix("RunPodSandbox") }.count == first + 1 && h.runtime.runningContainers == 1
        }
        try await h.eventually("the pod is Ready again") {
            try await h.pod("sb")[path: ["status", "conditions"]]?.array?.first { $0["type"] == "Ready" }?["status"] == "True"
        }
        #expect(try String(contentsOfFile: mount.hostPath + "/file", encoding: .utf8) == "kept")
        try await h.eventually("SandboxChanged is recorded") {
            (try await h.api.list("/api/v1/namespaces/default/events")["items"]?.array ?? []).contains { $0["reason"] == "SandboxChanged" }
        }
    }

    /// A restarted kubelet finds its pods in the runtime and leaves them running.
    @Test func aRestartedKubeletAdoptsItsPods() async throws {
        let first = try await KubeletHarness.start()
        try await first.create("keep", containers: [container("main")])
        try await first.eventually("the pod runs") { try await first.pod("keep")[path: ["status", "phase"]] == "Running" }
        first.stop()
        try await Task.sleep(for: .milliseconds(300))
        let creates = first.runtime.calls.filter { $0.hasPrefix("RunPodSandbox") || $0.hasPrefix("CreateContainer") }.count
        let second = try await KubeletHarness.start(api: first.api, runtime: first.runtime, dir: first.dir)
        defer { second.cleanUp() }
        try await Task.sleep(for: .seconds(2))
        #expect(second.runtime.calls.filter { $0.hasPrefix("RunPodSandbox") || $0.hasPrefix("CreateContainer") }.count == creates)
        #expect(second.runtime.runningContainers == 1)
        #expect(try await second.pod("keep")[path: ["status", "phase"]] == "Running")
    }
}

final class Flags: @unchecked Sendable {
    let lock = NSLock()
    var values: [String: Bool] = [:]
    func set(_ k: String, _ v: Bool) { lock.withLock { values[k] = v } }
    func get(_ k: String) -> Bool { lock.withLock { values[k] ?? false } }
}

final class Counter: @unchecked Sendable {
    let lock = NSLock()
    var value = 0
    func add() { lock.withLock { value += 1 } }
    func get() -> Int { lock.withLock { value } }
}
