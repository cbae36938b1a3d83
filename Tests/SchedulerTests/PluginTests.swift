import Foundation
import Testing
import KubeAPI
@testable import Scheduler

func info(_ o: JSONValue) -> NodeInfo { NodeInfo(o) }

func state(_ p: JSONValue) -> CycleState { CycleState(pod: PodInfo(p)) }

/// The filter and score plugins, on upstream's documented cases.
@Suite("scheduler plugins")
struct PluginTests {
    @Test func resourcesCountInitContainersAndOverhead() {
        // upstream's computePodResourceRequest: max(sum of containers, largest init container) + overhead.
        var p = pod("p", cpu: "500m", memory: "1Gi")
        p[path: ["spec", "initContainers"]] = [["name": "init", "image": "busybox", "resources": ["requests": ["cpu": "2", "memory": "512Mi"]]]]
        p[path: ["spec", "overhead"]] = ["cpu": "250m"]
        let info = PodInfo(p)
        #expect(info.requests.milliCPU == 2250)
        #expect(info.requests.memory == 1 << 30)
        // A container without requests counts 100m and 200Mi when scoring, nothing when filtering.
        let bare = PodInfo(pod("bare"))
        #expect(bare.requests.milliCPU == 0 && bare.nonZeroRequests.milliCPU == 100 && bare.nonZeroRequests.memory == 200 << 20)
    }

    @Test func nodeResourcesFitSaysWhatIsShort() {
        let n = info(node("n", cpu: "1", memory: "1Gi", pods: 2))
        n.add(PodInfo(pod("a", cpu: "600m", memory: "512Mi")))
        let f = NodeResourcesFitFilter()
        #expect(f.filter(state(pod("b", cpu: "300m")), n) == nil)
        #expect(f.filter(state(pod("b", cpu: "500m", memory: "768Mi")), n)?.reasons == ["Insufficient cpu", "Insufficient memory"])
        n.add(PodInfo(pod("c")))
        #expect(f.filter(state(pod("d")), n)?.reasons == ["Too many pods"])
        #expect(f.filter(state(pod("d")), n)?.resolvable == true)
    }

    @Test func taintsNeedTolerations() {
        let taint: JSONValue = ["key": "dedicated", "value": "gpu", "effect": "NoSchedule"]
        let n = info(node("n", taints: [taint, ["key": "soft", "effect": "PreferNoSchedule"]]))
        let f = TaintTolerationFilter()
        #expect(f.filter(state(pod("p")), n)?.reasons == ["node(s) had untolerated taint {dedicated: gpu}"])
        let equal = pod("p", extra: ["tolerations": [["key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"]]])
        #expect(f.filter(state(equal), n) == nil)
        let wrongValue = pod("p", extra: ["tolerations": [["key": "dedicated", "value": "cpu"]]])
        #expect(f.filter(state(wrongValue), n) != nil)
        let everything = pod("p", extra: ["tolerations": [["operator": "Exists"]]])
        #expect(f.filter(state(everything), n) == nil)
        // PreferNoSchedule only lowers the score.
        #expect(TaintTolerationScore().score(state(equal), n) == 1)
        var scores: [Int64] = [1, 0]
        TaintTolerationScore().normalize(&scores)
        #expect(scores == [0, 100])
    }

    @Test func nodeAffinityOperators() {
        let n = info(node("n", labels: ["zone": "a", "gen": "5", "ssd": "true"]))
        func required(_ exprs: [JSONValue]) -> JSONValue {
            pod("p", extra: ["affinity": ["nodeAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [["matchExpressions": .array(exprs)]]]]]])
        }
        let f = NodeAffinityFilter()
        #expect(f.filter(state(required([["key": "zone", "operator": "In", "values": ["a", "b"]]])), n) == nil)
        #expect(f.filter(state(required([["key": "zone", "operator": "NotIn", "values": ["a"]]])), n) != nil)
        #expect(f.filter(state(required([["key": "ssd", "operator": "Exists"]])), n) == nil)
        #expect(f.filter(state(required([["key": "gpu", "operator": "DoesNotExist"]])), n) == nil)
        #expect(f.filter(state(required([["key": "gen", "operator": "Gt", "values": ["4"]]])), n) == nil)
        #expect(f.filter(state(required([["key": "gen", "operator": "Lt", "values": ["4"]]])), n) != nil)
        // Terms are ORed; an empty term matches nothing.
        let either = pod("p", extra: ["affinity": ["nodeAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [
            ["matchExpressions": [["key": "zone", "operator": "In", "values": ["z"]]]],
            ["matchFields": [["key": "metadata.name", "operator": "In", "values": ["n"]]]]]]]]])
        #expect(f.filter(state(either), n) == nil)
        #expect(f.filter(state(required([])), n) != nil)
        // nodeSelector must match as well.
        #expect(f.filter(state(pod("p", extra: ["nodeSelector": ["zone": "b"]])), n)?.reasons == ["node(s) didn't match Pod's node affinity/selector"])
        // Preferred terms score their weights.
        let preferred = pod("p", extra: ["affinity": ["nodeAffinity": ["preferredDuringSchedulingIgnoredDuringExecution": [
            ["weight": 30, "preference": ["matchExpressions": [["key": "zone", "operator": "In", "values": ["a"]]]]],
            ["weight": 5, "preference": ["matchExpressions": [["key": "ssd", "operator": "Exists"]]]]]]]])
        #expect(NodeAffinityScore().score(state(preferred), n) == 35)
        // Without preferred terms the plugin is skipped (upstream's PreScore Skip), as are the
        // pod affinity and topology spread scores of a pod with neither.
        #expect(!NodeAffinityScore().skips(state(preferred)))
        #expect(NodeAffinityScore().skips(state(pod("p"))))
        #expect(InterPodAffinityScore().skips(state(pod("p"))))
        #expect(PodTopologySpreadScore().skips(state(pod("p"))))
    }

    @Test func hostPortsClash() {
        let n = info(node("n"))
        let web: JSONValue = ["containers": [["name": "c", "image": "nginx", "ports": [["containerPort": 80, "hostPort": 8080, "protocol": "TCP"]]]]]
        var a = pod("a"); a["spec"] = web
        n.add(PodInfo(a))
        #expect(NodePorts().filter(state(a), n)?.reasons == ["node(s) didn't have free ports for the requested pod ports"])
        var udp = a
        udp[path: ["spec", "containers"]] = [["name": "c", "image": "dns", "ports": [["containerPort": 53, "hostPort": 8080, "protocol": "UDP"]]]]
        #expect(NodePorts().filter(state(udp), n) == nil)
    }

    @Test func leastAllocatedAndBalanced() {
        // upstream's example: node 4000m / 10000 MiB with 3000m and 5000 MiB requested → cpu 25, memory 50 → 37.
        let n = info(node("n", cpu: "4", memory: "10000Mi"))
        n.add(PodInfo(pod("x", cpu: "3", memory: "5000Mi")))
        let s = state(pod("p", cpu: "0", memory: "0"))
        #expect(LeastAllocated().score(s, n) == 37)
        // cpu 3/4 = 0.75, memory 0.5: std 0.125 → 87.
        #expect(BalancedAllocation().score(s, n) == 87)
    }

    @Test func fitErrorMessageIsUpstreams() {
        let failures: [String: FilterFailure] = [
            "a": FilterFailure(plugin: "TaintToleration", reasons: ["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"], resolvable: false),
            "b": FilterFailure(plugin: "NodeResourcesFit", reasons: ["Insufficient cpu"], resolvable: true),
            "c": FilterFailure(plugin: "NodeResourcesFit", reasons: ["Insufficient cpu"], resolvable: true),
        ]
        #expect(Scheduler.fitError(all: 3, failures: failures)
                == "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.")
    }

    @Test func theAdaptivePercentageOfNodes() {
        let p = Profile.default()
        #expect(p.feasibleNodesToFind(50) == 50)
        #expect(p.feasibleNodesToFind(1000) == 420)   // 50 - 1000/125 = 42%
        #expect(p.feasibleNodesToFind(5000) == 500)   // 10%
        #expect(p.feasibleNodesToFind(200) == 100)    // at least 100
    }

    @Test func aConfigurationChangesTheProfiles() throws {
        let c = try SchedulerConfiguration.parse("""
            apiVersion: kubescheduler.config.k8s.io/v1
            kind: KubeSchedulerConfiguration
            leaderElection:
              leaderElect: false
            percentageOfNodesToScore: 100
            profiles:
            - schedulerName: default-scheduler
            - schedulerName: no-scoring
              plugins:
                score:
                  disabled:
                  - name: '*'
                  enabled:
                  - name: NodeResourcesBalancedAllocation
                    weight: 5
            """)
        #expect(!c.leaderElect)
        #expect(c.profiles.map(\.schedulerName) == ["default-scheduler", "no-scoring"])
        #expect(c.profiles[1].scores.map(\.plugin.name) == ["NodeResourcesBalancedAllocation"])
        #expect(c.profiles[1].scores.first?.weight == 5)
        #expect(c.profiles[0].feasibleNodesToFind(1000) == 1000)
        #expect(throws: SchedulerConfiguration.ConfigError.self) { try SchedulerConfiguration.parse("kind: KubeProxyConfiguration") }
    }
}

@Suite("scheduling queue")
struct QueueTests {
    @Test func higherPriorityFirstThenArrival() async {
        let q = SchedulingQueue()
        await q.add(PodInfo(pod("low")))
        var high = pod("high"); high[path: ["spec", "priority"]] = 100
        await q.add(PodInfo(high))
        await q.add(PodInfo(pod("low2")))
        #expect(await q.pop()?.pod.name == "high")
        #expect(await q.pop()?.pod.name == "low")
        #expect(await q.pop()?.pod.name == "low2")
    }

    @Test func unschedulablePodsWaitForAClusterEventAndTheirBackoff() async throws {
        let q = SchedulingQueue(initialBackoff: .milliseconds(100), maxBackoff: .milliseconds(400))
        await q.add(PodInfo(pod("p")))
        let e = try #require(await q.pop())
        await q.failed(e, unschedulable: true)
        #expect(await q.placeOf("default/p") == .unschedulable)
        await q.flushBackoff()
        #expect(await q.placeOf("default/p") == .unschedulable)   // nothing changed: it stays
        await q.moveAllToActiveOrBackoff()
        #expect(await q.placeOf("default/p") == .backoff)         // within its backoff
        try await Task.sleep(for: .milliseconds(150))
        await q.flushBackoff()
        #expect(await q.placeOf("default/p") == .active)
        let again = try #require(await q.pop())
        #expect(again.attempts == 1)
        // A move request during its cycle sends it to backoff, not to the unschedulable set.
        await q.moveAllToActiveOrBackoff()
        await q.failed(again, unschedulable: true)
        #expect(await q.placeOf("default/p") == .backoff)
    }
}
