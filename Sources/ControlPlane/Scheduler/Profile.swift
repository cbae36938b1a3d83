import Foundation
import KubeAPI
import Yams

/// One scheduling profile: the filter plugins in order, the score plugins with their weights,
/// and how many feasible nodes are enough (upstream's `percentageOfNodesToScore`).
public struct Profile: Sendable {
    public var schedulerName: String
    public var filters: [any FilterPlugin]
    public var scores: [(plugin: any ScorePlugin, weight: Int64)]
    /// nil or 0: upstream's adaptive percentage (50% less 1% per 125 nodes, at least 5%).
    public var percentageOfNodesToScore: Int?
    /// Whether the DefaultPreemption post-filter runs.
    public var preemption = true

    /// kube-scheduler's default profile (the v1 configuration's defaults).
    public static func `default`(name: String = "default-scheduler") -> Profile {
        Profile(schedulerName: name,
                filters: [NodeUnschedulable(), NodeName(), TaintTolerationFilter(), NodeAffinityFilter(), NodePorts(),
                          NodeResourcesFitFilter(), PodTopologySpreadFilter(), InterPodAffinityFilter()],
                scores: [(TaintTolerationScore(), 3), (NodeAffinityScore(), 2), (LeastAllocated(), 1), (PodTopologySpreadScore(), 2),
                         (InterPodAffinityScore(), 2), (BalancedAllocation(), 1), (ImageLocality(), 1)],
                percentageOfNodesToScore: nil)
    }

    /// How many feasible nodes to find among `all` before scoring (upstream's
    /// `numFeasibleNodesToFind`; at least 100).
    public func feasibleNodesToFind(_ all: Int) -> Int {
        if all < 100 { return all }
        var p = percentageOfNodesToScore ?? 0
        if p >= 100 { return all }
        if p <= 0 { p = max(5, 50 - all / 125) }
        return max(all * p / 100, 100)
    }
}

/// What `--config` (a KubeSchedulerConfiguration, `kubescheduler.config.k8s.io/v1`) says that
/// this scheduler reads: the profiles (scheduler names; score and filter plugins enabled,
/// disabled, weighted, `*` for all), `percentageOfNodesToScore`, leader election and the
/// kubeconfig.
public struct SchedulerConfiguration: Sendable {
    public var profiles: [Profile] = [.default()]
    public var leaderElect = true
    public var leaseDuration = 15.0, renewDeadline = 10.0, retryPeriod = 2.0
    public var resourceNamespace = "kube-system", resourceName = "kube-scheduler"
    public var kubeconfig: String?

    public init() {}

    public struct ConfigError: Error, CustomStringConvertible { public var description: String }

    static func seconds(_ v: JSONValue?) -> Double? { v?.string.flatMap(GoDuration.seconds) }

    public static func parse(_ text: String, source: String = "config") throws -> SchedulerConfiguration {
        let doc = try YAMLToJSON.convert(text)
        guard doc["kind"]?.string == "KubeSchedulerConfiguration" else {
            throw ConfigError(description: "\(source): not a KubeSchedulerConfiguration (kind \(doc["kind"]?.string ?? "missing"))")
        }
        let av = doc["apiVersion"]?.string ?? ""
        guard av == "kubescheduler.config.k8s.io/v1" else {
            throw ConfigError(description: "\(source): apiVersion \(av): only kubescheduler.config.k8s.io/v1 is read")
        }
        var c = SchedulerConfiguration()
        c.kubeconfig = doc[path: ["clientConnection", "kubeconfig"]]?.string
        if let le = doc["leaderElection"] {
            c.leaderElect = le["leaderElect"]?.bool ?? true
            c.leaseDuration = seconds(le["leaseDuration"]) ?? c.leaseDuration
            c.renewDeadline = seconds(le["renewDeadline"]) ?? c.renewDeadline
            c.retryPeriod = seconds(le["retryPeriod"]) ?? c.retryPeriod
            c.resourceNamespace = le["resourceNamespace"]?.string ?? c.resourceNamespace
            c.resourceName = le["resourceName"]?.string ?? c.resourceName
        }
        let percentage = doc["percentageOfNodesToScore"]?.int.map(Int.init)
        let profiles = doc["profiles"]?.array ?? [[:]]
        c.profiles = []
        var names = Set<String>()
        for p in profiles {
            var profile = Profile.default(name: p["schedulerName"]?.string ?? "default-scheduler")
            guard names.insert(profile.schedulerName).inserted else {
                throw ConfigError(description: "\(source): profiles: duplicate schedulerName \"\(profile.schedulerName)\"")
            }
            profile.percentageOfNodesToScore = p["percentageOfNodesToScore"]?.int.map(Int.init) ?? percentage
            let plugins = p["plugins"] ?? [:]
            for point in ["filter", "score", "postFilter", "multiPoint"] {
                let set = plugins[point] ?? [:]
                let disabled = Set((set["disabled"]?.array ?? []).compactMap { $0["name"]?.string })
                let enabled = (set["enabled"]?.array ?? []).map { ($0["name"]?.string ?? "", $0["weight"]?.int) }
                func off(_ name: String) -> Bool { disabled.contains("*") || disabled.contains(name) }
                if point == "filter" || point == "multiPoint" {
                    profile.filters.removeAll { off($0.name) }
                }
                if point == "score" || point == "multiPoint" {
                    profile.scores.removeAll { off($0.plugin.name) }
                }
                if point == "postFilter" || point == "multiPoint" {
                    if off("DefaultPreemption") { profile.preemption = false }
                }
                for (name, weight) in enabled {
                    let known = Profile.default()
                    if point == "filter" || point == "multiPoint", let f = known.filters.first(where: { $0.name == name }),
                       !profile.filters.contains(where: { $0.name == name }) {
                        profile.filters.append(f)
                    }
                    if point == "score" || point == "multiPoint" {
                        let candidates = known.scores.filter { $0.plugin.name == name }
                        if candidates.isEmpty && point == "score" && name != "DefaultPreemption" {
                            throw ConfigError(description: "\(source): profiles[\(profile.schedulerName)].plugins.score: unknown plugin \"\(name)\"")
                        }
                        for cand in candidates {
                            profile.scores.removeAll { $0.plugin.name == name }
                            profile.scores.append((cand.plugin, weight ?? cand.weight))
                        }
                    }
                    if name == "DefaultPreemption" { profile.preemption = true }
                }
            }
            c.profiles.append(profile)
        }
        return c
    }
}
