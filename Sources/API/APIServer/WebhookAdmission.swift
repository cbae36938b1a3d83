import APIAccess
import Foundation
import KubeAPI
import KubeStore
import Synchronization
import Webhooks

/// The MutatingAdmissionWebhook and ValidatingAdmissionWebhook plugins, on by default as
/// upstream's: the webhooks of the stored MutatingWebhookConfigurations and
/// ValidatingWebhookConfigurations are called for the writes their rules, namespace selector
/// and object selector match, with an AdmissionReview (v1, or v1beta1 when that is all a webhook
/// takes). Mutating webhooks run one after another in the order of their configurations' names
/// and their JSON patches are applied, then the object is defaulted and validated again;
/// validating webhooks run in parallel on the final object. A refusal is answered as upstream's
/// (`admission webhook "NAME" denied the request: …`); a webhook that cannot be called fails the
/// write (`failurePolicy: Fail`, the default) or is skipped (`Ignore`). Webhooks are never called
/// for the webhook configurations themselves.
final class WebhookAdmission: Sendable {
    /// The configurations as last read; read again after a change (this server's writes at
    /// once, another server's through `followWebhooks`).
    struct Snapshot {
        var valid = false
        var generation = 0
        var mutating: [AdmissionWebhook] = []
        var validating: [AdmissionWebhook] = []
    }
    let snapshot = Mutex(Snapshot())
    let caller: AdmissionWebhookCaller

    init(store: any Store) {
        caller = AdmissionWebhookCaller(resolveService: { namespace, name in
            guard let kv = try? await store.get(Self.services.key(namespace: namespace, name: name)),
                  let o = try? JSONValue.parse(kv.value), let ip = o[path: ["spec", "clusterIP"]]?.string, ip != "None", !ip.isEmpty else { return nil }
            return ip
        })
    }

    static let services = Resources.all.first { $0.group.isEmpty && $0.resource == "services" }!
    static let group = "admissionregistration.k8s.io"
    static let prefix = "/registry/\(group)/"
}

extension APIHandler {
    /// The configurations as stored (read again when they changed since the last read).
    func currentWebhooks() async throws -> WebhookAdmission.Snapshot {
        let have = webhookAdmission.snapshot.withLock { $0 }
        if have.valid { return have }
        var next = WebhookAdmission.Snapshot(valid: true, generation: have.generation)
        for (resource, mutating) in [("mutatingwebhookconfigurations", true), ("validatingwebhookconfigurations", false)] {
            guard let r = registry.find(group: WebhookAdmission.group, version: "v1", resource: resource) else { continue }
            let configs = try await storedValues(prefix: r.storePrefix, revision: nil).compactMap { try? r.decode($0.value) }
                .sorted { ($0[path: ["metadata", "name"]]?.string ?? "") < ($1[path: ["metadata", "name"]]?.string ?? "") }
            let hooks = configs.flatMap { c in
                (c["webhooks"]?.array ?? []).map { AdmissionWebhook($0, configuration: c[path: ["metadata", "name"]]?.string ?? "", mutating: mutating) }
            }
            if mutating { next.mutating = hooks } else { next.validating = hooks }
        }
        // Kept only if nothing changed while it was read.
        webhookAdmission.snapshot.withLock { if $0.generation == next.generation { $0 = next } }
        return next
    }

    /// The configurations changed: the next admission reads them again.
    func invalidateWebhooks() {
        webhookAdmission.snapshot.withLock { $0.valid = false; $0.generation += 1 }
    }

    /// Follows the webhook configurations in the store (another API server's writes too).
    /// Returns when the watch ends (the caller starts it again).
    public func followWebhooks() async throws {
        let revision = try await store.currentRevision(prefix: WebhookAdmission.prefix)
        invalidateWebhooks()
        for try await _ in try await store.watch(prefix: WebhookAdmission.prefix, after: revision) {
            invalidateWebhooks()
        }
    }

    func webhookAttributes(_ o: JSONValue?, old: JSONValue?, _ r: ResourceInfo, subresource: String?, dryRun: Bool, operation: String) -> AdmissionAttributes {
        let meta = (o ?? old)?["metadata"]
        return AdmissionAttributes(operation: operation, group: r.group, version: r.version, resource: r.resource, subresource: subresource ?? "",
                                   kind: r.kind, namespaced: r.namespaced, namespace: r.namespaced ? meta?["namespace"]?.string ?? "" : "",
                                   name: meta?["name"]?.string ?? "", user: AccessControl.currentUser, object: o, oldObject: old, dryRun: dryRun)
    }

    /// The labels of the write's namespace, read when a webhook's namespace selector needs them.
    func namespaceLabels(_ a: AdmissionAttributes) async -> [String: String]? {
        guard a.namespaced, !a.namespace.isEmpty,
              let kv = try? await store.get(Resources.all[0].key(namespace: nil, name: a.namespace)),
              let ns = try? JSONValue.parse(kv.value) else { return nil }
        return (ns[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
    }

    /// The webhooks of `hooks` that take this write.
    func matching(_ hooks: [AdmissionWebhook], _ a: AdmissionAttributes) async -> [AdmissionWebhook] {
        var labels: [String: String]??
        var out: [AdmissionWebhook] = []
        for w in hooks where w.rules.contains(where: { $0.matches(a) }) {
            if labels == nil, !w.namespaceSelector.isEmpty { labels = .some(await namespaceLabels(a)) }
            if w.matches(a, namespaceLabels: labels ?? nil) { out.append(w) }
        }
        return out
    }

    /// A refusal or a failure as the API answers it.
    static func webhookError(_ w: AdmissionWebhook, _ outcome: AdmissionWebhookCaller.Outcome) -> APIError? {
        switch outcome {
        case .allowed: return nil
        case .denied(let code, let reason, let message, _):
            return APIError(code: code, reason: reason, message: message)
        case .failed(let why):
            guard w.failClosed else { return nil }
            let message = "failed calling webhook \"\(w.name)\": \(why)"
            return APIError(code: 500, reason: "InternalError", message: "Internal error occurred: \(message)", details: ["causes": [["message": .string(message)]]])
        }
    }

    static func record(_ outcome: AdmissionWebhookCaller.Outcome) {
        switch outcome {
        case .allowed(_, let warnings), .denied(_, _, _, let warnings): for w in warnings { AdmissionWarnings.current?.add(w) }
        case .failed: break
        }
    }

    /// Runs the mutating webhooks on a create or update; returns whether the object changed.
    func runMutatingWebhooks(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?, dryRun: Bool) async throws -> Bool {
        guard admissionPlugins.contains("MutatingAdmissionWebhook"), r.group != WebhookAdmission.group else { return false }
        let all = try await currentWebhooks().mutating
        guard !all.isEmpty else { return false }
        let operation = old == nil ? "CREATE" : "UPDATE"
        let hooks = await matching(all, webhookAttributes(o, old: old, r, subresource: subresource, dryRun: dryRun, operation: operation))
        guard !hooks.isEmpty else { return false }
        // Webhooks see the object defaulted, as upstream decodes it before admission.
        if r.custom == nil { r.strategy.defaults(&o) }
        var changed = false
        // Upstream's reinvocation: a webhook with `IfNeeded` runs once more when the object
        // changed after it last ran. `version` counts the changes; `seen` what each webhook saw.
        var version = 0
        var seen: [String: Int] = [:]
        func key(_ w: AdmissionWebhook) -> String { w.configuration + "/" + w.name }
        for pass in 0..<2 {
            if pass == 1 && !hooks.contains(where: { $0.reinvokeIfNeeded && (seen[key($0)] ?? 0) < version }) { break }
            for w in hooks {
                if pass == 1 && !(w.reinvokeIfNeeded && (seen[key(w)] ?? 0) < version) { continue }
                let a = webhookAttributes(o, old: old, r, subresource: subresource, dryRun: dryRun, operation: operation)
                let outcome = await webhookAdmission.caller.call(w, a)
                Self.record(outcome)
                if let e = Self.webhookError(w, outcome) { throw e }
                defer { seen[key(w)] = version }
                guard case .allowed(let patch?, _) = outcome else { continue }
                let patched: JSONValue
                do { patched = try Patch.jsonPatch(o, patch) } catch {
                    if let e = Self.webhookError(w, .failed("the webhook's JSON patch does not apply: \(error)")) { throw e }
                    continue
                }
                guard patched != o else { continue }
                if patched["apiVersion"] != o["apiVersion"] || patched["kind"] != o["kind"] {
                    if let e = Self.webhookError(w, .failed("the webhook's patch changed the object's apiVersion or kind")) { throw e }
                    continue
                }
                o = patched
                changed = true
                version += 1
            }
        }
        return changed
    }

    /// Runs the validating webhooks on a write (the object as it will be stored; for a delete,
    /// the old object only), all at once; the first refusal in configuration order is answered.
    func runValidatingWebhooks(_ o: JSONValue?, old: JSONValue?, _ r: ResourceInfo, subresource: String?, dryRun: Bool, operation: String) async throws {
        guard admissionPlugins.contains("ValidatingAdmissionWebhook"), r.group != WebhookAdmission.group else { return }
        let all = try await currentWebhooks().validating
        guard !all.isEmpty else { return }
        let a = webhookAttributes(o, old: old, r, subresource: subresource, dryRun: dryRun, operation: operation)
        let hooks = await matching(all, a)
        guard !hooks.isEmpty else { return }
        let caller = webhookAdmission.caller
        let outcomes = await withTaskGroup(of: (Int, AdmissionWebhookCaller.Outcome).self) { g in
            for (i, w) in hooks.enumerated() { g.addTask { (i, await caller.call(w, a)) } }
            var out: [(Int, AdmissionWebhookCaller.Outcome)] = []
            for await x in g { out.append(x) }
            return out.sorted { $0.0 < $1.0 }
        }
        for (i, outcome) in outcomes {
            Self.record(outcome)
            if let e = Self.webhookError(hooks[i], outcome) { throw e }
        }
    }
}

/// MutatingWebhookConfiguration and ValidatingWebhookConfiguration (admissionregistration.k8s.io/v1):
/// upstream's defaults and validation of each webhook.
struct WebhookConfigurationStrategy: ResourceStrategy {
    let mutating: Bool

    func defaults(_ o: inout JSONValue) {
        guard var hooks = o["webhooks"]?.array else { return }
        for i in hooks.indices {
            var w = hooks[i]
            guard case .object = w else { continue }
            if w["failurePolicy"] == nil { w["failurePolicy"] = "Fail" }
            if w["matchPolicy"] == nil { w["matchPolicy"] = "Equivalent" }
            if w["namespaceSelector"] == nil { w["namespaceSelector"] = [:] }
            if w["objectSelector"] == nil { w["objectSelector"] = [:] }
            if w["timeoutSeconds"] == nil { w["timeoutSeconds"] = 10 }
            if mutating && w["reinvocationPolicy"] == nil { w["reinvocationPolicy"] = "Never" }
            if var rules = w["rules"]?.array {
                for j in rules.indices where rules[j]["scope"] == nil { rules[j]["scope"] = "*" }
                w["rules"] = .array(rules)
            }
            if w[path: ["clientConfig", "service"]] != nil && w[path: ["clientConfig", "service", "port"]] == nil {
                w[path: ["clientConfig", "service", "port"]] = 443
            }
            hooks[i] = w
        }
        o["webhooks"] = .array(hooks)
    }

    static func supported(_ values: [String]) -> String { values.map { "\"\($0)\"" }.joined(separator: ", ") }

    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        var names = Set<String>()
        for (i, w) in (o["webhooks"]?.array ?? []).enumerated() {
            let p = "webhooks[\(i)]"
            let name = w["name"]?.string ?? ""
            if name.isEmpty {
                errs.append(FieldError("\(p).name", "Required value"))
            } else {
                if name.split(separator: ".", omittingEmptySubsequences: false).count < 3 {
                    errs.append(FieldError("\(p).name", "Invalid value: \"\(name)\": should be a domain with at least three segments separated by dots"))
                }
                if !names.insert(name).inserted { errs.append(FieldError("\(p).name", "Duplicate value: \"\(name)\"")) }
            }
            for (j, rule) in (w["rules"]?.array ?? []).enumerated() {
                let rp = "\(p).rules[\(j)]"
                for k in ["operations", "apiGroups", "apiVersions", "resources"] where (rule[k]?.array ?? []).isEmpty {
                    errs.append(FieldError("\(rp).\(k)", "Required value"))
                }
                for (k, op) in (rule["operations"]?.array ?? []).compactMap(\.string).enumerated()
                    where !["*", "CONNECT", "CREATE", "DELETE", "UPDATE"].contains(op) {
                    errs.append(FieldError("\(rp).operations[\(k)]", "Unsupported value: \"\(op)\": supported values: \(Self.supported(["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]))"))
                }
                if let s = rule["scope"]?.string, !["*", "Cluster", "Namespaced"].contains(s) {
                    errs.append(FieldError("\(rp).scope", "Unsupported value: \"\(s)\": supported values: \(Self.supported(["*", "Cluster", "Namespaced"]))"))
                }
            }
            for (field, allowed) in [("failurePolicy", ["Fail", "Ignore"]), ("matchPolicy", ["Equivalent", "Exact"])] + (mutating ? [("reinvocationPolicy", ["IfNeeded", "Never"])] : []) {
                if let v = w[field]?.string, !allowed.contains(v) {
                    errs.append(FieldError("\(p).\(field)", "Unsupported value: \"\(v)\": supported values: \(Self.supported(allowed))"))
                }
            }
            if let s = w["sideEffects"]?.string {
                if !["None", "NoneOnDryRun"].contains(s) {
                    errs.append(FieldError("\(p).sideEffects", "Unsupported value: \"\(s)\": supported values: \(Self.supported(["None", "NoneOnDryRun"]))"))
                }
            } else {
                errs.append(FieldError("\(p).sideEffects", "Required value: must specify one of None, NoneOnDryRun"))
            }
            if let t = w["timeoutSeconds"]?.int, !(1...30).contains(t) {
                errs.append(FieldError("\(p).timeoutSeconds", "Invalid value: \(t): the timeout value must be between 1 and 30 seconds"))
            }
            let versions = (w["admissionReviewVersions"]?.array ?? []).compactMap(\.string)
            if versions.isEmpty {
                errs.append(FieldError("\(p).admissionReviewVersions", "Required value: must specify one of v1, v1beta1"))
            } else if !versions.contains(where: { $0 == "v1" || $0 == "v1beta1" }) {
                errs.append(FieldError("\(p).admissionReviewVersions", "Invalid value: []string{\(versions.map { "\"\($0)\"" }.joined(separator: ", "))}: must include at least one of v1, v1beta1"))
            }
            if !(w["matchConditions"]?.array ?? []).isEmpty {
                errs.append(FieldError("\(p).matchConditions", "Forbidden: matchConditions are CEL expressions, which this server does not evaluate"))
            }
            let c = w["clientConfig"] ?? [:]
            switch (c["url"]?.string, c["service"]) {
            case (let url?, nil):
                if let u = URLComponents(string: url) {
                    if u.scheme != "https" { errs.append(FieldError("\(p).clientConfig.url", "Invalid value: \"\(url)\": 'https' is the only allowed URL scheme")) }
                    if (u.host ?? "").isEmpty { errs.append(FieldError("\(p).clientConfig.url", "Invalid value: \"\(url)\": host must be specified")) }
                    if u.user != nil { errs.append(FieldError("\(p).clientConfig.url", "Invalid value: \"\(url)\": user information is not permitted in the URL")) }
                    if u.fragment != nil { errs.append(FieldError("\(p).clientConfig.url", "Invalid value: \"\(url)\": fragments are not permitted in the URL")) }
                    if u.query != nil { errs.append(FieldError("\(p).clientConfig.url", "Invalid value: \"\(url)\": query parameters are not permitted in the URL")) }
                } else {
                    errs.append(FieldError("\(p).clientConfig.url", "Invalid value: \"\(url)\": not a URL"))
                }
            case (nil, let s?):
                if (s["namespace"]?.string ?? "").isEmpty { errs.append(FieldError("\(p).clientConfig.service.namespace", "Required value: service namespace is required")) }
                if (s["name"]?.string ?? "").isEmpty { errs.append(FieldError("\(p).clientConfig.service.name", "Required value: service name is required")) }
                if let port = s["port"]?.int, !(1...65535).contains(port) {
                    errs.append(FieldError("\(p).clientConfig.service.port", "Invalid value: \(port): port is not valid: must be between 1 and 65535, inclusive"))
                }
                if let path = s["path"]?.string, !path.hasPrefix("/") {
                    errs.append(FieldError("\(p).clientConfig.service.path", "Invalid value: \"\(path)\": must start with a '/'"))
                }
            default:
                errs.append(FieldError("\(p).clientConfig", "Required value: exactly one of url or service is required"))
            }
            if let b = c["caBundle"]?.string, Data(base64Encoded: b, options: .ignoreUnknownCharacters) == nil {
                throw APIError(code: 400, reason: "BadRequest", message: "\(p).clientConfig.caBundle: illegal base64 data")
            }
        }
        return errs
    }

    var columns: [Tables.Column] {
        [Tables.nameColumn,
         Tables.Column(name: "Webhooks", type: "integer") { .int(Int64(($0["webhooks"]?.array ?? []).count)) },
         Tables.ageColumn]
    }
}
