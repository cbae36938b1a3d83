import APIAccess
import Foundation
import KubeAPI
import Synchronization

/// Warnings admission plugins add to the request being served (kubectl prints them as
/// `Warning: …`), collected for the response; and the annotations they add to its audit event
/// (`pod-security.kubernetes.io/enforce-policy`, …), kept even when admission refuses it.
final class AdmissionWarnings: Sendable {
    @TaskLocal static var current: AdmissionWarnings?
    private let list = Mutex<[String]>([])
    private let notes = Mutex<[String: String]>([:])
    func add(_ w: String) { list.withLock { $0.append(w) } }
    var all: [String] { list.withLock { $0 } }
    func annotate(_ key: String, _ value: String) { notes.withLock { $0[key] = value } }
    var annotations: [String: String] { notes.withLock { $0 } }
}

/// The PodSecurity admission plugin, on by default as upstream's (off with
/// `--disable-admission-plugins PodSecurity`): a namespace's `pod-security.kubernetes.io/enforce`
/// level refuses pods that violate it (403, `violates PodSecurity "restricted:latest": …`), its
/// `warn` level returns warnings (`would violate PodSecurity …`) for pods and for the pod
/// templates of workloads (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs,
/// ReplicationControllers, PodTemplates), which are never refused, as upstream; its `audit` level
/// adds `pod-security.kubernetes.io/audit-violations` to the request's audit event, and a pod's
/// event names the enforced policy (`pod-security.kubernetes.io/enforce-policy`). A pod update is
/// checked when it changes the spec. Without labels a namespace has the configuration's defaults
/// (`privileged` unless `--admission-control-config-file` says otherwise); an exempt namespace,
/// user or runtime class is not checked (`pod-security.kubernetes.io/exempt`).
extension APIHandler {
    /// Where a workload keeps its pod template.
    static let podTemplatePaths: [String: [String]] = [
        "apps/deployments": ["spec", "template"], "apps/replicasets": ["spec", "template"], "apps/statefulsets": ["spec", "template"],
        "apps/daemonsets": ["spec", "template"], "batch/jobs": ["spec", "template"], "batch/cronjobs": ["spec", "jobTemplate", "spec", "template"],
        "/replicationcontrollers": ["spec", "template"], "/podtemplates": ["template"],
    ]

    func admitPodSecurity(_ o: JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) async throws {
        guard admissionPlugins.contains("PodSecurity"), subresource == nil, r.custom == nil else { return }
        let isPod = r.group.isEmpty && r.resource == "pods"
        let template: [String]
        if isPod {
            template = []
            // An update that leaves the spec as it was (labels, annotations, finalizers) is not checked.
            if let old, old["spec"] == o["spec"] { return }
        } else if let path = Self.podTemplatePaths["\(r.group)/\(r.resource)"] {
            template = path
            if let old, old[path: path] == o[path: path] { return }
        } else {
            return
        }
        let config = podSecurity
        let annotations = AdmissionWarnings.current
        guard let ns = o[path: ["metadata", "namespace"]]?.string, !ns.isEmpty else { return }
        let metadata = template.isEmpty ? (o["metadata"] ?? [:]) : (o[path: template + ["metadata"]] ?? [:])
        let spec = template.isEmpty ? (o["spec"] ?? [:]) : (o[path: template + ["spec"]] ?? [:])
        // Exemptions, in upstream's order.
        let exempt = config.exemptNamespaces.contains(ns) ? "namespace"
            : config.exemptUsernames.contains(AccessControl.currentUser.name) ? "user"
            : spec["runtimeClassName"]?.string.map(config.exemptRuntimeClasses.contains) == true ? "runtimeClass" : nil
        if let exempt {
            annotations?.annotate("pod-security.kubernetes.io/exempt", exempt)
            return
        }
        // The namespace's labels over the configuration's defaults.
        let namespace = try await store.get(Resources.all[0].key(namespace: nil, name: ns)).flatMap { try? JSONValue.parse($0.value) }
        let labels = (namespace?[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
        let (policy, _) = PodSecurity.policy(labels: labels, defaults: config.defaults)
        if isPod { annotations?.annotate("pod-security.kubernetes.io/enforce-policy", "\(policy.enforce.rawValue):\(policy.enforceVersion)") }
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        if isPod && policy.enforce != .privileged {
            let v = PodSecurity.check(policy.enforce, metadata: metadata, spec: spec)
            if !v.isEmpty {
                throw APIError(code: 403, reason: "Forbidden",
                               message: "pods \"\(name)\" is forbidden: violates PodSecurity \"\(policy.enforce.rawValue):\(policy.enforceVersion)\": \(PodSecurity.describe(v))",
                               details: APIError.details(r, name))
            }
        }
        if policy.audit != .privileged {
            let v = PodSecurity.check(policy.audit, metadata: metadata, spec: spec)
            if !v.isEmpty {
                annotations?.annotate("pod-security.kubernetes.io/audit-violations",
                                      "would violate PodSecurity \"\(policy.audit.rawValue):\(policy.auditVersion)\": \(PodSecurity.describe(v))")
            }
        }
        if policy.warn != .privileged {
            let v = PodSecurity.check(policy.warn, metadata: metadata, spec: spec)
            if !v.isEmpty {
                AdmissionWarnings.current?.add("would violate PodSecurity \"\(policy.warn.rawValue):\(policy.warnVersion)\": \(PodSecurity.describe(v))")
            }
        }
    }
}
