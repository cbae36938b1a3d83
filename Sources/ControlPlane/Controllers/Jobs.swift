import Foundation
import Logging
import Synchronization
import KubeAPI
import ControllerKit

/// The Job controller: runs `parallelism` pods at a time until `completions` have succeeded
/// (NonIndexed, or Indexed with a completion index per pod), counts failures against
/// `backoffLimit` (new pods after failures wait 10 s doubling to 6 minutes), stops at
/// `activeDeadlineSeconds`, deletes the active pods of a suspended Job, and writes upstream's
/// status and conditions (SuccessCriteriaMet then Complete; FailureTarget then Failed;
/// Suspended).
public final class JobController: Controller, Sendable {
    public let name = "job"
    let api: API
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    let jobs = Mutex<Informer<JSONValue>?>(nil)
    let pods = Mutex<Informer<JSONValue>?>(nil)
    /// Pods created and not yet seen, per job (upstream's expectations).
    let pending = Mutex<[String: (count: Int, at: Date)]>([:])
    static let indexAnnotation = "batch.kubernetes.io/job-completion-index"

    public init(api: API, logger: Logger = Logger(label: "switchyard.job")) {
        self.api = api
        self.logger = logger
        events = EventRecorder(api: api, component: "job-controller")
    }

    public func setUp(_ informers: SharedInformers) {
        let j = informers.informer("/apis/batch/v1/jobs", slim: Slim.managedFields)
        let p = informers.pods
        jobs.withLock { $0 = j }
        pods.withLock { $0 = p }
        j.onChange { [queue] c in await queue.add(c.key) }
        p.onChange { [weak self] c in
            guard let self, let o = c.new ?? c.old, let owner = Owners.controller(o, kind: "Job") else { return }
            let key = "\(o.namespace)/\(owner.name)"
            if c.old == nil { self.pending.withLock { m in if let x = m[key], x.count > 0 { m[key] = (x.count - 1, x.at) } } }
            await self.queue.add(key)
        }
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask { await runWorkers(self.queue, workers: 5, logger: self.logger, name: self.name) { key in try await self.sync(key) } }
        }
    }

    static func condition(_ job: JSONValue, _ type: String) -> Bool {
        (job[path: ["status", "conditions"]]?.array ?? []).contains { $0["type"]?.string == type && $0["status"] == "True" }
    }

    static func finished(_ job: JSONValue) -> Bool { condition(job, "Complete") || condition(job, "Failed") }

    func sync(_ key: String) async throws {
        guard let job = jobs.withLock({ $0 })?.get(key), let podInf = pods.withLock({ $0 }) else { return }
        if Self.finished(job) || job.isDeleting { return }
        let expecting = pending.withLock { m -> Bool in
            guard let x = m[key] else { return false }
            if x.count <= 0 || Date().timeIntervalSince(x.at) > 300 { m[key] = nil; return false }
            return true
        }
        let owned = podInf.filter { $0.namespace == job.namespace && Owners.controller($0)?.uid == job.uid }
        let active = owned.filter(PodStatus.isActive)
        let succeededPods = owned.filter { $0[path: ["status", "phase"]]?.string == "Succeeded" }
        let failedPods = owned.filter { $0[path: ["status", "phase"]]?.string == "Failed" }
        let spec = job["spec"] ?? [:]
        let indexed = spec["completionMode"]?.string == "Indexed"
        let completions = spec["completions"]?.int.map(Int.init)
        let parallelism = Int(spec["parallelism"]?.int ?? 1)
        let backoffLimit = Int(spec["backoffLimit"]?.int ?? 6)
        let suspended = spec["suspend"]?.bool ?? false
        var status = job["status"]?.object ?? [:]
        let before = JSONValue.object(status)
        // Counts never go back: pods removed after they finished stay counted.
        let succeeded = max(Int(status["succeeded"]?.int ?? 0), succeededPods.count)
        let failed = max(Int(status["failed"]?.int ?? 0), failedPods.count)
        var conditions = status["conditions"]?.array ?? []
        let now = Time.now()
        func set(_ type: String, _ s: String, _ reason: String, _ message: String) {
            let c: JSONValue = ["type": .string(type), "status": .string(s), "reason": .string(reason), "message": .string(message),
                                "lastProbeTime": .string(now), "lastTransitionTime": .string(now)]
            if let i = conditions.firstIndex(where: { $0["type"]?.string == type }) {
                if conditions[i]["status"]?.string != s || conditions[i]["reason"]?.string != reason { conditions[i] = c }
            } else {
                conditions.append(c)
            }
        }
        if status["startTime"] == nil && !suspended { status["startTime"] = .string(now) }
        var finishedNow: String?
        var deleteActive = false
        if suspended {
            deleteActive = true
            set("Suspended", "True", "JobSuspended", "Job suspended")
        } else if conditions.contains(where: { $0["type"] == "Suspended" && $0["status"] == "True" }) {
            set("Suspended", "False", "JobResumed", "Job resumed")
        }
        let completedIndexes = Set(succeededPods.compactMap { $0[path: ["metadata", "annotations", Self.indexAnnotation]]?.string.flatMap { Int($0) } })
        let complete = indexed ? completions.map { completedIndexes.count >= $0 } ?? false
            : completions.map { succeeded >= $0 } ?? (succeeded > 0 && active.isEmpty)
        if !suspended, let deadline = spec["activeDeadlineSeconds"]?.int, let start = status["startTime"]?.string.flatMap(Time.parse) {
            let left = Double(deadline) - Date().timeIntervalSince(start)
            if left <= 0 {
                finishedNow = "DeadlineExceeded"
            } else {
                queue.add(key, after: left + 0.1)
            }
        }
        if finishedNow == nil && failed > backoffLimit { finishedNow = "BackoffLimitExceeded" }
        if let reason = finishedNow {
            let message = reason == "DeadlineExceeded" ? "Job was active longer than specified deadline" : "Job has reached the specified backoff limit"
            set("FailureTarget", "True", reason, message)
            set("Failed", "True", reason, message)
            deleteActive = true
            events.record(job, type: "Warning", reason: reason, message: message, kind: "Job", apiVersion: "batch/v1")
        } else if complete {
            set("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods")
            set("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")
            status["completionTime"] = .string(now)
            deleteActive = true
            events.record(job, reason: "Completed", message: "Job completed", kind: "Job", apiVersion: "batch/v1")
        }
        if deleteActive {
            for p in active {
                _ = try? await api.delete(API.path("v1", "pods", namespace: p.namespace, name: p.name))
            }
        } else if !expecting {
            // How many more to run now.
            var want = parallelism
            if let completions { want = min(parallelism, completions - (indexed ? completedIndexes.count : succeeded)) }
            else if succeeded > 0 { want = 0 }
            let missing = want - active.count
            if missing > 0 {
                // After failures, new pods wait (10 s doubling, at most 6 minutes) from the last failure.
                let lastFailure = failedPods.compactMap { ($0[path: ["status", "conditions"]]?.array ?? []).compactMap { $0["lastTransitionTime"]?.string.flatMap(Time.parse) }.max() }.max()
                let delay = failed == 0 ? 0 : min(10 * pow(2, Double(failed - 1)), 360)
                let wait = lastFailure.map { delay - Date().timeIntervalSince($0) } ?? 0
                if wait > 0 {
                    queue.add(key, after: wait)
                } else {
                    var indexes: [Int] = []
                    if indexed, let completions {
                        let busy = Set(active.compactMap { $0[path: ["metadata", "annotations", Self.indexAnnotation]]?.string.flatMap { Int($0) } })
                        indexes = Array((0..<completions).filter { !completedIndexes.contains($0) && !busy.contains($0) }.prefix(missing))
                    }
                    let n = indexed ? indexes.count : missing
                    pending.withLock { $0[key] = (n, Date()) }
                    for i in 0..<n { try await createPod(job, index: indexed ? indexes[i] : nil) }
                }
            }
        }
        status["active"] = .int(Int64(deleteActive ? 0 : active.count))
        status["ready"] = .int(Int64(active.filter(PodStatus.isReady).count))
        status["succeeded"] = .int(Int64(succeeded))
        status["failed"] = .int(Int64(failed))
        status["terminating"] = .int(Int64(owned.filter(\.isDeleting).count))
        if indexed, !completedIndexes.isEmpty { status["completedIndexes"] = .string(Self.ranges(completedIndexes.sorted())) }
        for k in ["active", "succeeded", "failed"] where status[k] == 0 { status[k] = nil }
        if !conditions.isEmpty { status["conditions"] = .array(conditions) }
        guard JSONValue.object(status) != before else { return }
        _ = try await api.mergePatch(API.path("batch/v1", "jobs", namespace: job.namespace, name: job.name, subresource: "status"), ["status": .object(status)])
    }

    /// `1,3-5` as upstream spells completed indexes.
    static func ranges(_ xs: [Int]) -> String {
        var out: [String] = [], i = 0
        while i < xs.count {
            var j = i
            while j + 1 < xs.count && xs[j + 1] == xs[j] + 1 { j += 1 }
            out.append(i == j ? "\(xs[i])" : "\(xs[i])-\(xs[j])")
            i = j + 1
        }
        return out.joined(separator: ",")
    }

    func createPod(_ job: JSONValue, index: Int?) async throws {
        let t = job[path: ["spec", "template"]] ?? [:]
        var meta: [String: JSONValue] = ["generateName": .string(index.map { "\(job.name)-\($0)-" } ?? "\(job.name)-"),
                                         "namespace": .string(job.namespace),
                                         "labels": t[path: ["metadata", "labels"]] ?? [:],
                                         "ownerReferences": [Owners.reference(job, apiVersion: "batch/v1", kind: "Job")]]
        var annotations = t[path: ["metadata", "annotations"]]?.object ?? [:]
        var spec = t["spec"] ?? [:]
        if let index {
            annotations[Self.indexAnnotation] = .string(String(index))
            meta["labels"]?[Self.indexAnnotation] = .string(String(index))
            if spec["hostname"] == nil { spec["hostname"] = .string("\(job.name)-\(index)") }
        }
        if !annotations.isEmpty { meta["annotations"] = .object(annotations) }
        do {
            let p = try await api.create(API.path("v1", "pods", namespace: job.namespace), ["apiVersion": "v1", "kind": "Pod", "metadata": .object(meta), "spec": spec])
            events.record(job, reason: "SuccessfulCreate", message: "Created pod: \(p.name)", kind: "Job", apiVersion: "batch/v1")
        } catch {
            pending.withLock { m in if let x = m[job.key] { m[job.key] = (x.count - 1, x.at) } }
            events.record(job, type: "Warning", reason: "FailedCreate", message: "Error creating: \(error)", kind: "Job", apiVersion: "batch/v1")
            throw error
        }
    }
}

/// The CronJob controller: at each time its schedule names (in `timeZone`, within
/// `startingDeadlineSeconds`), a Job from the template named `<cronjob>-<minutes since the
/// epoch>`, as `concurrencyPolicy` allows (Allow, Forbid, Replace); finished Jobs kept to the
/// history limits; `status.active`, `lastScheduleTime`, `lastSuccessfulTime`.
public final class CronJobController: Controller, Sendable {
    public let name = "cronjob"
    let api: API
    let queue = WorkQueue()
    let events: EventRecorder
    let logger: Logger
    let cronjobs = Mutex<Informer<JSONValue>?>(nil)
    let jobs = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, logger: Logger = Logger(label: "switchyard.cronjob")) {
        self.api = api
        self.logger = logger
        events = EventRecorder(api: api, component: "cronjob-controller")
    }

    public func setUp(_ informers: SharedInformers) {
        let c = informers.informer("/apis/batch/v1/cronjobs", slim: Slim.managedFields)
        let j = informers.informer("/apis/batch/v1/jobs", slim: Slim.managedFields)
        cronjobs.withLock { $0 = c }
        jobs.withLock { $0 = j }
        c.onChange { [queue] ch in await queue.add(ch.key) }
        j.onChange { [queue] ch in
            if let o = ch.new ?? ch.old, let owner = Owners.controller(o, kind: "CronJob") { await queue.add("\(o.namespace)/\(owner.name)") }
        }
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.events.run() }
            g.addTask { await runWorkers(self.queue, workers: 2, logger: self.logger, name: self.name) { key in try await self.sync(key) } }
        }
    }

    func sync(_ key: String) async throws {
        guard let cj = cronjobs.withLock({ $0 })?.get(key), let jobInf = jobs.withLock({ $0 }), !cj.isDeleting else { return }
        guard let schedule = cj[path: ["spec", "schedule"]]?.string.flatMap({ CronSchedule($0) }) else { return }
        let zone = cj[path: ["spec", "timeZone"]]?.string.flatMap { TimeZone(identifier: $0) } ?? TimeZone(identifier: "UTC")!
        let owned = jobInf.filter { $0.namespace == cj.namespace && Owners.controller($0)?.uid == cj.uid }
        var status = cj["status"]?.object ?? [:]
        let before = JSONValue.object(status)
        // Finished jobs: noted, and the history trimmed.
        var active = owned.filter { !JobController.finished($0) && !$0.isDeleting }
        let succeeded = owned.filter { JobController.condition($0, "Complete") }.sorted { ($0[path: ["status", "completionTime"]]?.string ?? "") < ($1[path: ["status", "completionTime"]]?.string ?? "") }
        let failed = owned.filter { JobController.condition($0, "Failed") }.sorted { ($0[path: ["metadata", "creationTimestamp"]]?.string ?? "") < ($1[path: ["metadata", "creationTimestamp"]]?.string ?? "") }
        if let last = succeeded.last?[path: ["status", "completionTime"]] { status["lastSuccessfulTime"] = last }
        for (list, limitKey) in [(succeeded, "successfulJobsHistoryLimit"), (failed, "failedJobsHistoryLimit")] {
            let limit = Int(cj[path: ["spec", limitKey]]?.int ?? (limitKey == "successfulJobsHistoryLimit" ? 3 : 1))
            for j in list.dropLast(limit) where !j.isDeleting {
                _ = try? await api.delete(API.path("batch/v1", "jobs", namespace: j.namespace, name: j.name), options: ["propagationPolicy": "Background"])
                events.record(cj, reason: "SuccessfulDelete", message: "Deleted job \(j.name)", kind: "CronJob", apiVersion: "batch/v1")
            }
        }
        let suspended = cj[path: ["spec", "suspend"]]?.bool ?? false
        let now = Date()
        let since = status["lastScheduleTime"]?.string.flatMap(Time.parse) ?? cj[path: ["metadata", "creationTimestamp"]]?.string.flatMap(Time.parse) ?? now
        // The most recent missed time (upstream runs only the latest of those missed).
        var due: Date?
        var t = since
        var steps = 0
        while let next = schedule.next(after: t, in: zone), next <= now, steps < 1000 {
            due = next
            t = next
            steps += 1
        }
        if let due, !suspended {
            let deadline = cj[path: ["spec", "startingDeadlineSeconds"]]?.int
            let tooLate = deadline.map { now.timeIntervalSince(due) > Double($0) } ?? false
            let policy = cj[path: ["spec", "concurrencyPolicy"]]?.string ?? "Allow"
            if tooLate {
                events.record(cj, type: "Warning", reason: "MissSchedule", message: "Missed scheduled time to start a job: \(Time.now(due))", kind: "CronJob", apiVersion: "batch/v1")
                status["lastScheduleTime"] = .string(Time.now(due))
            } else if policy == "Forbid" && !active.isEmpty {
                events.record(cj, reason: "JobAlreadyActive", message: "Not starting job because prior execution is running and concurrency policy is Forbid", kind: "CronJob", apiVersion: "batch/v1")
            } else {
                if policy == "Replace" {
                    for j in active {
                        _ = try? await api.delete(API.path("batch/v1", "jobs", namespace: j.namespace, name: j.name), options: ["propagationPolicy": "Background"])
                        events.record(cj, reason: "SuccessfulDelete", message: "Deleted job \(j.name)", kind: "CronJob", apiVersion: "batch/v1")
                    }
                    active = []
                }
                let name = "\(cj.name)-\(Int(due.timeIntervalSince1970) / 60)"
                let template = cj[path: ["spec", "jobTemplate"]] ?? [:]
                var meta: [String: JSONValue] = ["name": .string(name), "namespace": .string(cj.namespace),
                                                 "ownerReferences": [Owners.reference(cj, apiVersion: "batch/v1", kind: "CronJob")]]
                meta["labels"] = template[path: ["metadata", "labels"]]
                var annotations = template[path: ["metadata", "annotations"]]?.object ?? [:]
                annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] = .string(Time.now(due))
                meta["annotations"] = .object(annotations)
                do {
                    let j = try await api.create(API.path("batch/v1", "jobs", namespace: cj.namespace),
                                                 ["apiVersion": "batch/v1", "kind": "Job", "metadata": .object(meta), "spec": template["spec"] ?? [:]])
                    events.record(cj, reason: "SuccessfulCreate", message: "Created job \(j.name)", kind: "CronJob", apiVersion: "batch/v1")
                    active.append(j)
                } catch let e as APIStatusError where e.isAlreadyExists {}
                status["lastScheduleTime"] = .string(Time.now(due))
            }
        }
        status["active"] = active.isEmpty ? nil : .array(active.map { ["kind": "Job", "apiVersion": "batch/v1", "namespace": .string($0.namespace),
                                                                          "name": .string($0.name), "uid": .string($0.uid)] })
        if JSONValue.object(status) != before {
            var patch = JSONValue.object(status)
            if status["active"] == nil { patch["active"] = .null }
            _ = try await api.mergePatch(API.path("batch/v1", "cronjobs", namespace: cj.namespace, name: cj.name, subresource: "status"), ["status": patch])
        }
        // Back at the next time.
        if let next = schedule.next(after: now, in: zone) { queue.add(key, after: next.timeIntervalSince(now) + 0.05) }
    }
}

/// The TTL-after-finished controller: a finished Job with `ttlSecondsAfterFinished` is deleted
/// (its pods with it, in the background) that long after it finished.
public final class TTLAfterFinishedController: Controller, Sendable {
    public let name = "ttl-after-finished"
    let api: API
    let queue = WorkQueue()
    let logger: Logger
    let jobs = Mutex<Informer<JSONValue>?>(nil)

    public init(api: API, logger: Logger = Logger(label: "switchyard.ttlafterfinished")) {
        self.api = api
        self.logger = logger
    }

    public func setUp(_ informers: SharedInformers) {
        let j = informers.informer("/apis/batch/v1/jobs", slim: Slim.managedFields)
        jobs.withLock { $0 = j }
        j.onChange { [queue] c in if let o = c.new, o[path: ["spec", "ttlSecondsAfterFinished"]] != nil { await queue.add(c.key) } }
    }

    public func run() async {
        await runWorkers(queue, workers: 2, logger: logger, name: name) { [self] key in try await sync(key) }
    }

    func sync(_ key: String) async throws {
        guard let job = jobs.withLock({ $0 })?.get(key), !job.isDeleting, let ttl = job[path: ["spec", "ttlSecondsAfterFinished"]]?.int,
              JobController.finished(job) else { return }
        let finishedAt = (job[path: ["status", "conditions"]]?.array ?? []).filter { ($0["type"] == "Complete" || $0["type"] == "Failed") && $0["status"] == "True" }
            .compactMap { $0["lastTransitionTime"]?.string.flatMap(Time.parse) }.max() ?? Date()
        let left = Double(ttl) - Date().timeIntervalSince(finishedAt)
        if left > 0 { queue.add(key, after: left + 0.05); return }
        _ = try? await api.delete(API.path("batch/v1", "jobs", namespace: job.namespace, name: job.name),
                                  options: ["propagationPolicy": "Background", "preconditions": ["uid": .string(job.uid)]])
    }
}
