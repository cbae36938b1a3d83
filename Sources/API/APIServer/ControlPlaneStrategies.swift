import Foundation
import KubeAPI

// The strategies of the kinds the scheduler, the controller manager and the kubelet read and
// write besides Pods and Services: their defaults and checks as upstream's registry strategies
// and `SetDefaults_*` functions have them, and the columns of upstream's printers.

extension Tables {
    /// The names of a pod template's containers, and their images (the wide columns of workloads).
    static let containersColumn = Column(name: "Containers", priority: 1) { o in
        Tables.str(.string(((o[path: ["spec", "template", "spec", "containers"]] ?? o[path: ["spec", "jobTemplate", "spec", "template", "spec", "containers"]])?.array ?? [])
            .compactMap { $0["name"]?.string }.joined(separator: ",")))
    }
    static let imagesColumn = Column(name: "Images", priority: 1) { o in
        Tables.str(.string(((o[path: ["spec", "template", "spec", "containers"]] ?? o[path: ["spec", "jobTemplate", "spec", "template", "spec", "containers"]])?.array ?? [])
            .compactMap { $0["image"]?.string }.joined(separator: ",")))
    }
    static let selectorColumn = Column(name: "Selector", priority: 1) { o in
        Tables.none((o[path: ["spec", "selector"]] ?? o[path: ["spec", "jobTemplate", "spec", "selector"]]).map { ObjectSelector($0).query } ?? "")
    }
}

/// The pod template of a workload defaulted as a Pod's spec is.
func defaultTemplate(_ o: inout JSONValue, at path: [String]) {
    if var spec = o[path: path] {
        PodStrategy.defaultPodSpec(&spec)
        o[path: path] = spec
    }
}

/// The selector of a workload: required, and matching its template's labels.
func checkSelector(_ o: JSONValue, selector: [String], labels: [String], errs: inout [FieldError]) {
    let sel = o[path: selector + ["matchLabels"]]?.object ?? [:]
    let tpl = o[path: labels]?.object ?? [:]
    if sel.isEmpty && o[path: selector + ["matchExpressions"]] == nil {
        errs.append(FieldError(selector.joined(separator: "."), "Required value"))
    } else if !sel.allSatisfy({ tpl[$0.key] == $0.value }) {
        errs.append(FieldError(labels.joined(separator: "."), "Invalid value: \(JSONValue.object(tpl).text()): `selector` does not match template `labels`"))
    }
}

/// `spec.replicas`, when given, not negative.
func checkReplicas(_ o: JSONValue, errs: inout [FieldError]) {
    if let n = o[path: ["spec", "replicas"]]?.int, n < 0 {
        errs.append(FieldError("spec.replicas", "Invalid value: \(n): must be greater than or equal to 0"))
    }
}

struct DaemonSetStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    func defaults(_ o: inout JSONValue) {
        var strategy = o[path: ["spec", "updateStrategy"]]?.object ?? [:]
        if (strategy["type"]?.string ?? "").isEmpty { strategy["type"] = "RollingUpdate" }
        if strategy["type"]?.string == "RollingUpdate" {
            var ru = strategy["rollingUpdate"]?.object ?? [:]
            if ru["maxUnavailable"] == nil { ru["maxUnavailable"] = 1 }
            if ru["maxSurge"] == nil { ru["maxSurge"] = 0 }
            strategy["rollingUpdate"] = .object(ru)
        }
        o[path: ["spec", "updateStrategy"]] = .object(strategy)
        if o[path: ["spec", "revisionHistoryLimit"]] == nil { o[path: ["spec", "revisionHistoryLimit"]] = 10 }
        defaultTemplate(&o, at: ["spec", "template", "spec"])
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        checkSelector(o, selector: ["spec", "selector"], labels: ["spec", "template", "metadata", "labels"], errs: &errs)
        if let p = o[path: ["spec", "template", "spec", "restartPolicy"]]?.string, p != "Always" {
            errs.append(FieldError("spec.template.spec.restartPolicy", "Unsupported value: \"\(p)\": supported values: \"Always\""))
        }
        return errs
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Desired", type: "integer") { .int($0[path: ["status", "desiredNumberScheduled"]]?.int ?? 0) },
         Tables.Column(name: "Current", type: "integer") { .int($0[path: ["status", "currentNumberScheduled"]]?.int ?? 0) },
         Tables.Column(name: "Ready", type: "integer") { .int($0[path: ["status", "numberReady"]]?.int ?? 0) },
         Tables.Column(name: "Up-to-date", type: "integer") { .int($0[path: ["status", "updatedNumberScheduled"]]?.int ?? 0) },
         Tables.Column(name: "Available", type: "integer") { .int($0[path: ["status", "numberAvailable"]]?.int ?? 0) },
         Tables.Column(name: "Node Selector") { o in
             Tables.none((o[path: ["spec", "template", "spec", "nodeSelector"]]?.object ?? [:]).compactMapValues(\.string)
                 .sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
         },
         Tables.ageColumn, Tables.containersColumn, Tables.imagesColumn, Tables.selectorColumn]
    }
}

struct StatefulSetStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    func defaults(_ o: inout JSONValue) {
        if o[path: ["spec", "replicas"]] == nil { o[path: ["spec", "replicas"]] = 1 }
        if o[path: ["spec", "podManagementPolicy"]] == nil { o[path: ["spec", "podManagementPolicy"]] = "OrderedReady" }
        var strategy = o[path: ["spec", "updateStrategy"]]?.object ?? [:]
        if (strategy["type"]?.string ?? "").isEmpty { strategy["type"] = "RollingUpdate" }
        if strategy["type"]?.string == "RollingUpdate" {
            var ru = strategy["rollingUpdate"]?.object ?? [:]
            if ru["partition"] == nil { ru["partition"] = 0 }
            strategy["rollingUpdate"] = .object(ru)
        }
        o[path: ["spec", "updateStrategy"]] = .object(strategy)
        if o[path: ["spec", "revisionHistoryLimit"]] == nil { o[path: ["spec", "revisionHistoryLimit"]] = 10 }
        if o[path: ["spec", "persistentVolumeClaimRetentionPolicy"]] == nil {
            o[path: ["spec", "persistentVolumeClaimRetentionPolicy"]] = ["whenDeleted": "Retain", "whenScaled": "Retain"]
        }
        defaultTemplate(&o, at: ["spec", "template", "spec"])
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        checkSelector(o, selector: ["spec", "selector"], labels: ["spec", "template", "metadata", "labels"], errs: &errs)
        checkReplicas(o, errs: &errs)
        return errs
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Ready") { o in .string("\(o[path: ["status", "readyReplicas"]]?.int ?? 0)/\(o[path: ["spec", "replicas"]]?.int ?? 0)") },
         Tables.ageColumn, Tables.containersColumn, Tables.imagesColumn]
    }
}

/// Jobs as upstream's strategy and `SetDefaults_Job` make them: completions and parallelism,
/// backoffLimit 6, a selector on the controller's uid generated at creation (unless
/// `manualSelector`), with the labels it selects added to the template.
struct JobStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    static let controllerUID = "batch.kubernetes.io/controller-uid"
    static let jobName = "batch.kubernetes.io/job-name"

    func defaults(_ o: inout JSONValue) {
        JobStrategy.defaultSpec(&o, at: ["spec"], uid: o[path: ["metadata", "uid"]]?.string, name: o[path: ["metadata", "name"]]?.string)
    }

    /// The Job spec at `path` (a Job's, or a CronJob's template's), with the selector generated
    /// when the Job's uid is known.
    static func defaultSpec(_ o: inout JSONValue, at path: [String], uid: String?, name: String?) {
        var spec = o[path: path] ?? [:]
        if spec["completions"] == nil && spec["parallelism"] == nil {
            spec["completions"] = 1
            spec["parallelism"] = 1
        } else if spec["parallelism"] == nil {
            spec["parallelism"] = 1
        }
        if spec["backoffLimit"] == nil { spec["backoffLimit"] = spec["backoffLimitPerIndex"] == nil ? 6 : 2_147_483_647 }
        if spec["completionMode"] == nil { spec["completionMode"] = "NonIndexed" }
        if spec["suspend"] == nil { spec["suspend"] = false }
        if spec["podReplacementPolicy"] == nil { spec["podReplacementPolicy"] = spec["podFailurePolicy"] == nil ? "TerminatingOrFailed" : "Failed" }
        if spec["manualSelector"]?.bool != true, let uid, let name, path == ["spec"], spec["selector"] == nil {
            // Upstream's generateSelector: the template carries the uid and name labels, old and new spellings.
            var labels = spec[path: ["template", "metadata", "labels"]]?.object ?? [:]
            labels[controllerUID] = .string(uid)
            labels[jobName] = .string(name)
            labels["controller-uid"] = .string(uid)
            labels["job-name"] = .string(name)
            spec[path: ["template", "metadata", "labels"]] = .object(labels)
            spec["selector"] = ["matchLabels": [controllerUID: .string(uid)]]
        }
        o[path: path] = spec
        defaultTemplate(&o, at: path + ["template", "spec"])
    }

    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        JobStrategy.check(o, at: ["spec"], requireSelector: true)
    }

    static func check(_ o: JSONValue, at path: [String], requireSelector: Bool) -> [FieldError] {
        var errs: [FieldError] = []
        let p = path.joined(separator: ".")
        if requireSelector {
            checkSelector(o, selector: path + ["selector"], labels: path + ["template", "metadata", "labels"], errs: &errs)
        }
        let policy = o[path: path + ["template", "spec", "restartPolicy"]]?.string ?? ""
        if policy != "OnFailure" && policy != "Never" {
            errs.append(FieldError("\(p).template.spec.restartPolicy", policy.isEmpty
                ? "Required value: valid values: \"OnFailure\", \"Never\""
                : "Unsupported value: \"\(policy)\": supported values: \"OnFailure\", \"Never\""))
        }
        for f in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"] {
            if let n = o[path: path + [f]]?.int, n < (f == "activeDeadlineSeconds" ? 1 : 0) {
                errs.append(FieldError("\(p).\(f)", "Invalid value: \(n): must be greater than or equal to \(f == "activeDeadlineSeconds" ? 1 : 0)"))
            }
        }
        return errs
    }

    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Status") { o in .string(JobStrategy.status(o)) },
         Tables.Column(name: "Completions") { o in
             let succeeded = o[path: ["status", "succeeded"]]?.int ?? 0
             if let c = o[path: ["spec", "completions"]]?.int { return .string("\(succeeded)/\(c)") }
             let parallelism = o[path: ["spec", "parallelism"]]?.int ?? 0
             return .string(parallelism > 1 ? "\(succeeded)/1 of \(parallelism)" : "\(succeeded)/1")
         },
         Tables.Column(name: "Duration") { o in
             guard let s = o[path: ["status", "startTime"]]?.string.flatMap(APIHandler.parseRFC3339) else { return "" }
             let end = o[path: ["status", "completionTime"]]?.string.flatMap(APIHandler.parseRFC3339) ?? Date()
             return .string(Tables.human(end.timeIntervalSince(s)))
         },
         Tables.ageColumn, Tables.containersColumn, Tables.imagesColumn, Tables.selectorColumn]
    }

    /// The Status column of `kubectl get jobs` (1.30+): the last true terminal condition, else
    /// Suspended or Running.
    static func status(_ o: JSONValue) -> String {
        let conditions = (o[path: ["status", "conditions"]]?.array ?? []).filter { $0["status"]?.string == "True" }.compactMap { $0["type"]?.string }
        if conditions.contains("Complete") { return "Complete" }
        if conditions.contains("Failed") { return "Failed" }
        if conditions.contains("FailureTarget") { return "FailureTarget" }
        if conditions.contains("SuccessCriteriaMet") { return "SuccessCriteriaMet" }
        if conditions.contains("Suspended") { return "Suspended" }
        return "Running"
    }
}

struct CronJobStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    func defaults(_ o: inout JSONValue) {
        if o[path: ["spec", "concurrencyPolicy"]] == nil { o[path: ["spec", "concurrencyPolicy"]] = "Allow" }
        if o[path: ["spec", "suspend"]] == nil { o[path: ["spec", "suspend"]] = false }
        if o[path: ["spec", "successfulJobsHistoryLimit"]] == nil { o[path: ["spec", "successfulJobsHistoryLimit"]] = 3 }
        if o[path: ["spec", "failedJobsHistoryLimit"]] == nil { o[path: ["spec", "failedJobsHistoryLimit"]] = 1 }
        if o[path: ["spec", "jobTemplate", "spec"]] != nil {
            JobStrategy.defaultSpec(&o, at: ["spec", "jobTemplate", "spec"], uid: nil, name: nil)
        }
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let schedule = o[path: ["spec", "schedule"]]?.string ?? ""
        if schedule.isEmpty {
            errs.append(FieldError("spec.schedule", "Required value"))
        } else if CronSchedule(schedule) == nil {
            errs.append(FieldError("spec.schedule", "Invalid value: \"\(schedule)\": unparseable schedule"))
        }
        errs += JobStrategy.check(o, at: ["spec", "jobTemplate", "spec"], requireSelector: false)
        return errs
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Schedule") { Tables.str($0[path: ["spec", "schedule"]]) },
         Tables.Column(name: "Timezone") { Tables.none($0[path: ["spec", "timeZone"]]?.string ?? "") },
         Tables.Column(name: "Suspend", type: "boolean") { .bool($0[path: ["spec", "suspend"]]?.bool ?? false) },
         Tables.Column(name: "Active", type: "integer") { Tables.count($0[path: ["status", "active"]]) },
         Tables.Column(name: "Last Schedule") { o in
             guard let t = o[path: ["status", "lastScheduleTime"]]?.string.flatMap(APIHandler.parseRFC3339) else { return "<none>" }
             return .string(Tables.human(Date().timeIntervalSince(t)))
         },
         Tables.ageColumn, Tables.containersColumn, Tables.imagesColumn, Tables.selectorColumn]
    }
}

struct LeaseStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.Column(name: "Holder") { Tables.str($0[path: ["spec", "holderIdentity"]]) }, Tables.ageColumn]
    }
}

/// PriorityClasses: `system-` names are reserved for upstream's two, values above one billion
/// are for them alone.
struct PriorityClassStrategy: ResourceStrategy {
    static let system: [(name: String, value: Int64, description: String)] = [
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ]
    static let highestUserDefinable: Int64 = 1_000_000_000

    func defaults(_ o: inout JSONValue) {
        if o["preemptionPolicy"] == nil { o["preemptionPolicy"] = "PreemptLowerPriority" }
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        guard let value = o["value"]?.int else { return [FieldError("value", "Required value")] }
        if let s = Self.system.first(where: { $0.name == name }) {
            if value != s.value { errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": name and value do not match for the system priority class")) }
        } else if name.hasPrefix("system-") {
            errs.append(FieldError("metadata.name", "Invalid value: \"\(name)\": priority class names with 'system-' prefix are reserved"))
        } else if value > Self.highestUserDefinable {
            errs.append(FieldError("value", "Forbidden: maximum allowed value of a user defined priority is \(Self.highestUserDefinable)"))
        }
        if let p = o["preemptionPolicy"]?.string, p != "PreemptLowerPriority" && p != "Never" {
            errs.append(FieldError("preemptionPolicy", "Unsupported value: \"\(p)\": supported values: \"Never\", \"PreemptLowerPriority\""))
        }
        return errs
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Value", type: "integer") { .int($0["value"]?.int ?? 0) },
         Tables.Column(name: "Global-Default", type: "boolean") { .bool($0["globalDefault"]?.bool ?? false) },
         Tables.ageColumn,
         Tables.Column(name: "PreemptionPolicy") { Tables.str($0["preemptionPolicy"]) }]
    }
}

struct PodDisruptionBudgetStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        if o[path: ["spec", "minAvailable"]] != nil && o[path: ["spec", "maxUnavailable"]] != nil {
            errs.append(FieldError("spec", "Invalid value: \(o["spec"]!.text()): minAvailable and maxUnavailable cannot be both set"))
        }
        for f in ["minAvailable", "maxUnavailable"] {
            if let n = o[path: ["spec", f]]?.int, n < 0 {
                errs.append(FieldError("spec.\(f)", "Invalid value: \(n): must be greater than or equal to 0"))
            }
            if let s = o[path: ["spec", f]]?.string, IntOrPercent(s) == nil {
                errs.append(FieldError("spec.\(f)", "Invalid value: \"\(s)\": must be an integer or percentage (e.g '5%')"))
            }
        }
        return errs
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Min Available") { o in .string(o[path: ["spec", "minAvailable"]].map { $0.string ?? $0.int.map(String.init) ?? "" } ?? "N/A") },
         Tables.Column(name: "Max Unavailable") { o in .string(o[path: ["spec", "maxUnavailable"]].map { $0.string ?? $0.int.map(String.init) ?? "" } ?? "N/A") },
         Tables.Column(name: "Allowed Disruptions", type: "integer") { .int($0[path: ["status", "disruptionsAllowed"]]?.int ?? 0) },
         Tables.ageColumn]
    }
}

struct LimitRangeStrategy: ResourceStrategy {
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.Column(name: "Created At", type: "date") { $0[path: ["metadata", "creationTimestamp"]] ?? .null }]
    }
}

struct ResourceQuotaStrategy: ResourceStrategy {
    static let scopes = ["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity"]
    /// What a BestEffort pod may be counted by (it asks for no compute resources).
    static let bestEffortResources: Set<String> = ["pods", "count/pods"]

    /// Upstream's scope checks: known names, no conflicting pair, BestEffort and
    /// CrossNamespacePodAffinity only on pod counts, a selector's operators.
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let listed = o[path: ["spec", "scopes"]]?.array?.compactMap(\.string) ?? []
        let selected = (o[path: ["spec", "scopeSelector", "matchExpressions"]]?.array ?? []).compactMap { $0["scopeName"]?.string }
        func quoted(_ v: [String]) -> String { "[]core.ResourceQuotaScope{" + v.map { "\"\($0)\"" }.joined(separator: ", ") + "}" }
        for (i, scope) in listed.enumerated() where !Self.scopes.contains(scope) {
            errs.append(FieldError("spec.scopes[\(i)]", "Invalid value: \"\(scope)\": unsupported scope"))
        }
        for (i, e) in (o[path: ["spec", "scopeSelector", "matchExpressions"]]?.array ?? []).enumerated() {
            let scope = e["scopeName"]?.string ?? ""
            if !Self.scopes.contains(scope) { errs.append(FieldError("spec.scopeSelector.matchExpressions[\(i)].scopeName", "Invalid value: \"\(scope)\": unsupported scope")) }
            let op = e["operator"]?.string ?? ""
            let values = e["values"]?.array ?? []
            switch op {
            case "In", "NotIn":
                if values.isEmpty { errs.append(FieldError("spec.scopeSelector.matchExpressions[\(i)].values", "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector")) }
            case "Exists", "DoesNotExist":
                if !values.isEmpty { errs.append(FieldError("spec.scopeSelector.matchExpressions[\(i)].values", "Invalid value: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector")) }
            default:
                errs.append(FieldError("spec.scopeSelector.matchExpressions[\(i)].operator", "Invalid value: \"\(op)\": not a valid selector operator"))
            }
        }
        let all = Set(listed + selected)
        if all.isSuperset(of: ["Terminating", "NotTerminating"]) || all.isSuperset(of: ["BestEffort", "NotBestEffort"]) {
            errs.append(FieldError("spec.scopes", "Invalid value: \(quoted(listed)): conflicting scopes"))
        }
        let hard = Set((o[path: ["spec", "hard"]]?.object ?? [:]).keys)
        if !all.isDisjoint(with: ["BestEffort", "CrossNamespacePodAffinity"]), !hard.isSubset(of: Self.bestEffortResources) {
            errs.append(FieldError("spec.scopes", "Invalid value: \(quoted(listed)): unsupported scope applied to resource"))
        }
        return errs
    }

    /// As upstream's printer: `cpu: 1/4, pods: 2/10` for requests, limits apart.
    func cells(_ o: JSONValue, limits: Bool) -> JSONValue {
        let hard = o[path: ["status", "hard"]]?.object ?? o[path: ["spec", "hard"]]?.object ?? [:]
        let used = o[path: ["status", "used"]]?.object ?? [:]
        let keys = hard.keys.filter { $0.hasPrefix("limits.") == limits }.sorted()
        return .string(keys.map { "\($0): \(used[$0]?.string ?? "0")/\(hard[$0]?.string ?? hard[$0]?.int.map(String.init) ?? "")" }.joined(separator: ", "))
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.ageColumn,
         Tables.Column(name: "Request") { self.cells($0, limits: false) },
         Tables.Column(name: "Limit") { self.cells($0, limits: true) }]
    }
}

/// ReplicationControllers: a selector that is a plain map, defaulted from the template's labels
/// (upstream's SetDefaults_ReplicationController), as are the controller's own labels.
struct ReplicationControllerStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    func defaults(_ o: inout JSONValue) {
        if o[path: ["spec", "replicas"]] == nil { o[path: ["spec", "replicas"]] = 1 }
        let labels = o[path: ["spec", "template", "metadata", "labels"]]
        if (o[path: ["spec", "selector"]]?.object ?? [:]).isEmpty, let labels { o[path: ["spec", "selector"]] = labels }
        if (o[path: ["metadata", "labels"]]?.object ?? [:]).isEmpty, let labels { o[path: ["metadata", "labels"]] = labels }
        defaultTemplate(&o, at: ["spec", "template", "spec"])
    }
    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let sel = (o[path: ["spec", "selector"]]?.object ?? [:])
        let tpl = o[path: ["spec", "template", "metadata", "labels"]]?.object ?? [:]
        if sel.isEmpty {
            errs.append(FieldError("spec.selector", "Required value"))
        } else if !sel.allSatisfy({ tpl[$0.key] == $0.value }) {
            errs.append(FieldError("spec.template.metadata.labels", "Invalid value: \(JSONValue.object(tpl).text()): `selector` does not match template `labels`"))
        }
        checkReplicas(o, errs: &errs)
        return errs
    }
    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Desired", type: "integer") { .int($0[path: ["spec", "replicas"]]?.int ?? 0) },
         Tables.Column(name: "Current", type: "integer") { .int($0[path: ["status", "replicas"]]?.int ?? 0) },
         Tables.Column(name: "Ready", type: "integer") { .int($0[path: ["status", "readyReplicas"]]?.int ?? 0) },
         Tables.ageColumn, Tables.containersColumn, Tables.imagesColumn,
         Tables.Column(name: "Selector", priority: 1) { o in
             Tables.none((o[path: ["spec", "selector"]]?.object ?? [:]).compactMapValues(\.string).sorted { $0.key < $1.key }
                 .map { "\($0.key)=\($0.value)" }.joined(separator: ","))
         }]
    }
}

/// events.k8s.io/v1 Events: the core Events of the store, with upstream's field names
/// (`regarding` for `involvedObject`, `note` for `message`, the `deprecated…` fields for the
/// counting ones), so an event written through either version is read through both, as
/// kube-apiserver serves them from one storage. Checked as upstream checks this version's
/// events: a reporting controller, instance and action, the time it happened, no deprecated field.
struct EventsV1Strategy: ResourceStrategy {
    /// events.k8s.io/v1 name → core/v1 name.
    static let renamed: [(String, String)] = [
        ("regarding", "involvedObject"), ("note", "message"), ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"), ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"), ("reportingController", "reportingComponent"),
    ]
    var storedAs: (group: String, resource: String)? { ("", "events") }

    func fromStorage(_ o: inout JSONValue) {
        for (v1, core) in Self.renamed {
            let value = o[core]
            o[core] = nil
            if let value, value != .null, !(core == "source" && value == [:]) { o[v1] = value }
        }
    }

    func toStorage(_ o: inout JSONValue) {
        for (v1, core) in Self.renamed {
            let value = o[v1]
            o[v1] = nil
            if let value { o[core] = value }
        }
    }

    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        func required(_ field: String, limit: Int? = nil) {
            let v = o[field]?.string ?? ""
            if v.isEmpty { errs.append(FieldError(field, "Required value")) }
            if let limit, v.count > limit { errs.append(FieldError(field, "Invalid value: \"\": can have at most \(limit) characters")) }
        }
        if o["eventTime"]?.string == nil { errs.append(FieldError("eventTime", "Required value")) }
        required("reportingController")
        required("reportingInstance", limit: 128)
        required("action", limit: 128)
        required("reason", limit: 128)
        if (o["note"]?.string ?? "").utf8.count > 1024 { errs.append(FieldError("note", "Invalid value: \"\": can have at most 1024 characters")) }
        let type = o["type"]?.string ?? ""
        if type != "Normal" && type != "Warning" { errs.append(FieldError("type", "Invalid value: \"\": has invalid value: \(type)")) }
        for f in ["deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"] where o[f] != nil && o[f] != .null {
            errs.append(FieldError(f, "Invalid value: \"\": needs to be unset"))
        }
        if let s = o["deprecatedSource"], !((s["component"]?.string ?? "").isEmpty && (s["host"]?.string ?? "").isEmpty) {
            errs.append(FieldError("deprecatedSource", "Invalid value: \"\": needs to be unset"))
        }
        if let series = o["series"], series != .null {
            if (series["count"]?.int ?? 0) < 2 { errs.append(FieldError("series.count", "Invalid value: \"\": should be at least 2")) }
            if series["lastObservedTime"]?.string == nil { errs.append(FieldError("series.lastObservedTime", "Required value")) }
        }
        if let ns = o[path: ["regarding", "namespace"]]?.string, !ns.isEmpty, ns != o[path: ["metadata", "namespace"]]?.string {
            errs.append(FieldError("regarding.namespace", "Invalid value: \"\(ns)\": does not match event.namespace"))
        }
        return errs
    }

    var columns: [Tables.Column] { EventStrategy().columns }
}
