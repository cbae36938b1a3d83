import APIAccess
import Foundation
import KubeAPI
import Logging
import Synchronization

/// One write, as an admission webhook is asked about it.
public struct AdmissionAttributes: Sendable {
    /// CREATE, UPDATE or DELETE.
    public var operation: String
    public var group: String
    public var version: String
    public var resource: String
    public var subresource: String
    public var kind: String
    public var namespaced: Bool
    public var namespace: String
    public var name: String
    public var user: UserInfo
    public var object: JSONValue?
    public var oldObject: JSONValue?
    public var dryRun: Bool

    public init(operation: String, group: String, version: String, resource: String, subresource: String, kind: String,
                namespaced: Bool, namespace: String, name: String, user: UserInfo, object: JSONValue?, oldObject: JSONValue?, dryRun: Bool) {
        self.operation = operation
        self.group = group
        self.version = version
        self.resource = resource
        self.subresource = subresource
        self.kind = kind
        self.namespaced = namespaced
        self.namespace = namespace
        self.name = name
        self.user = user
        self.object = object
        self.oldObject = oldObject
        self.dryRun = dryRun
    }
}

/// A `rules[]` entry of a webhook: the operations and resources it is called for.
public struct AdmissionRule: Sendable, Equatable {
    public var operations: [String]
    public var apiGroups: [String]
    public var apiVersions: [String]
    public var resources: [String]
    public var scope: String

    public init(_ v: JSONValue) {
        func strings(_ k: String) -> [String] { (v[k]?.array ?? []).compactMap(\.string) }
        operations = strings("operations")
        apiGroups = strings("apiGroups")
        apiVersions = strings("apiVersions")
        resources = strings("resources")
        scope = v["scope"]?.string ?? "*"
    }

    /// As upstream's rule matcher: `*` any group, version or operation; `*` every resource (not
    /// subresources), `*/*` everything, `pods/*` a resource's subresources, `*/status` a
    /// subresource of any resource; the scope `Cluster`, `Namespaced` or `*`.
    public func matches(_ a: AdmissionAttributes) -> Bool {
        guard operations.contains("*") || operations.contains(a.operation),
              apiGroups.contains("*") || apiGroups.contains(a.group),
              apiVersions.contains("*") || apiVersions.contains(a.version) else { return false }
        switch scope {
        case "Cluster": if a.namespaced { return false }
        case "Namespaced": if !a.namespaced { return false }
        default: break
        }
        for r in resources {
            let parts = r.split(separator: "/", maxSplits: 1).map(String.init)
            let (res, sub) = (parts.first ?? "", parts.count > 1 ? parts[1] : "")
            guard res == "*" || res == a.resource else { continue }
            if sub == "*" || sub == a.subresource { return true }
        }
        return false
    }
}

/// One entry of a MutatingWebhookConfiguration's or ValidatingWebhookConfiguration's `webhooks`,
/// as stored (defaulted).
public struct AdmissionWebhook: Sendable {
    public var configuration: String
    public var name: String
    public var mutating: Bool
    public var clientConfig: JSONValue
    public var rules: [AdmissionRule]
    public var failClosed: Bool
    public var namespaceSelector: ObjectSelector
    public var objectSelector: ObjectSelector
    public var sideEffects: String
    public var timeout: Duration
    /// The AdmissionReview version sent: the first of `admissionReviewVersions` this server speaks.
    public var reviewVersion: String?
    public var reinvokeIfNeeded: Bool

    public init(_ w: JSONValue, configuration: String, mutating: Bool) {
        self.configuration = configuration
        self.mutating = mutating
        name = w["name"]?.string ?? ""
        clientConfig = w["clientConfig"] ?? [:]
        rules = (w["rules"]?.array ?? []).map(AdmissionRule.init)
        failClosed = (w["failurePolicy"]?.string ?? "Fail") != "Ignore"
        namespaceSelector = ObjectSelector(w["namespaceSelector"] ?? [:])
        objectSelector = ObjectSelector(w["objectSelector"] ?? [:])
        sideEffects = w["sideEffects"]?.string ?? ""
        timeout = .seconds(Int64(w["timeoutSeconds"]?.int ?? 10))
        reviewVersion = (w["admissionReviewVersions"]?.array ?? []).compactMap(\.string).first { $0 == "v1" || $0 == "v1beta1" }
        reinvokeIfNeeded = w["reinvocationPolicy"]?.string == "IfNeeded"
    }

    /// Whether the write is this webhook's: a rule matches, the namespace's labels match the
    /// namespace selector (a Namespace is matched by its own labels; other cluster-scoped objects
    /// always pass), and the object's or the old object's labels match the object selector.
    public func matches(_ a: AdmissionAttributes, namespaceLabels: [String: String]?) -> Bool {
        guard rules.contains(where: { $0.matches(a) }) else { return false }
        if !namespaceSelector.isEmpty {
            if a.group.isEmpty && a.resource == "namespaces" {
                let labels = Self.labels(a.object ?? a.oldObject)
                if !namespaceSelector.matches(labels) { return false }
            } else if a.namespaced {
                guard let labels = namespaceLabels, namespaceSelector.matches(labels) else { return false }
            }
        }
        if !objectSelector.isEmpty {
            let candidates = [a.object, a.oldObject].compactMap { $0 }
            if !candidates.contains(where: { objectSelector.matches(Self.labels($0)) }) { return false }
        }
        return true
    }

    static func labels(_ o: JSONValue?) -> [String: String] {
        (o?[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string)
    }
}

/// Calls admission webhooks: the AdmissionReview sent, the answer read as upstream's
/// dispatchers read it. Clients are kept per endpoint.
public final class AdmissionWebhookCaller: Sendable {
    /// What a call came to.
    public enum Outcome: Sendable {
        /// Allowed, with the JSON patch to apply (mutating webhooks) and the warnings to return.
        case allowed(patch: JSONValue?, warnings: [String])
        /// Refused: the status to answer with (its code at least 400), the message prefixed as upstream's.
        case denied(code: Int, reason: String, message: String, warnings: [String])
        /// The webhook could not be called or answered nonsense.
        case failed(String)
    }

    /// A Service reference's address: its cluster IP (upstream's default service resolver).
    public typealias ServiceResolver = @Sendable (_ namespace: String, _ name: String) async -> String?

    let resolveService: ServiceResolver
    let endpoints = Mutex<[String: WebhookEndpoint]>([:])
    let logger: Logger

    public init(resolveService: @escaping ServiceResolver, logger: Logger = Logger(label: "switchyard.admission.webhook")) {
        self.resolveService = resolveService
        self.logger = logger
    }

    func endpoint(_ w: AdmissionWebhook) async throws -> WebhookEndpoint {
        let c = w.clientConfig
        let ca = c["caBundle"]?.string.flatMap { Data(base64Encoded: $0, options: .ignoreUnknownCharacters) }.map(Array.init)
        var url: String
        var serverName: String?
        if let u = c["url"]?.string {
            url = u
        } else if let s = c["service"], let ns = s["namespace"]?.string, let name = s["name"]?.string {
            guard let ip = await resolveService(ns, name) else {
                throw WebhookEndpoint.Failure(description: "service \"\(name)\" in namespace \"\(ns)\" has no cluster IP", retriable: false)
            }
            let port = s["port"]?.int ?? 443
            var path = s["path"]?.string ?? "/"
            if !path.hasPrefix("/") { path = "/" + path }
            url = "https://\(ip):\(port)\(path)"
            serverName = "\(name).\(ns).svc"
        } else {
            throw WebhookEndpoint.Failure(description: "the webhook has neither a url nor a service", retriable: false)
        }
        // Upstream adds the timeout to the query, as client-go does.
        url += (url.contains("?") ? "&" : "?") + "timeout=\(w.timeout.components.seconds)s"
        let key = "\(url)|\(serverName ?? "")|\(c["caBundle"]?.string ?? "")|\(w.timeout)"
        if let e = endpoints.withLock({ $0[key] }) { return e }
        let e = try WebhookEndpoint(url: url, caBundle: ca, serverName: serverName, timeout: w.timeout)
        endpoints.withLock { $0[key] = e }
        return e
    }

    /// The AdmissionReview for `a`, version `v1` or `v1beta1`, with a fresh UID.
    public static func review(_ a: AdmissionAttributes, version: String, uid: String) -> JSONValue {
        var user: [String: JSONValue] = ["username": .string(a.user.name)]
        if !a.user.uid.isEmpty { user["uid"] = .string(a.user.uid) }
        if !a.user.groups.isEmpty { user["groups"] = .array(a.user.groups.map { .string($0) }) }
        if !a.user.extra.isEmpty { user["extra"] = .object(a.user.extra.mapValues { .array($0.map { .string($0) }) }) }
        let kind: JSONValue = ["group": .string(a.group), "version": .string(a.version), "kind": .string(a.kind)]
        let resource: JSONValue = ["group": .string(a.group), "version": .string(a.version), "resource": .string(a.resource)]
        let optionsKind = ["CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"][a.operation] ?? "CreateOptions"
        var options: JSONValue = ["apiVersion": "meta.k8s.io/v1", "kind": .string(optionsKind)]
        if a.dryRun { options["dryRun"] = ["All"] }
        var request: [String: JSONValue] = [
            "uid": .string(uid), "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
            "operation": .string(a.operation), "userInfo": .object(user), "object": a.object ?? .null, "oldObject": a.oldObject ?? .null,
            "dryRun": .bool(a.dryRun), "options": options,
        ]
        if !a.subresource.isEmpty {
            request["subResource"] = .string(a.subresource)
            request["requestSubResource"] = .string(a.subresource)
        }
        if !a.name.isEmpty { request["name"] = .string(a.name) }
        if !a.namespace.isEmpty { request["namespace"] = .string(a.namespace) }
        return ["apiVersion": .string("admission.k8s.io/\(version)"), "kind": "AdmissionReview", "request": .object(request)]
    }

    /// Sends the review and reads the answer.
    public func call(_ w: AdmissionWebhook, _ a: AdmissionAttributes) async -> Outcome {
        guard let version = w.reviewVersion else {
            return .failed("webhook does not accept v1 or v1beta1 AdmissionReview")
        }
        let uid = UUID().uuidString.lowercased()
        let answer: JSONValue
        do {
            answer = try await endpoint(w).post(Self.review(a, version: version, uid: uid))
        } catch {
            return .failed("failed to call webhook: \(error)")
        }
        guard let response = answer["response"], case .object = response else {
            return .failed("received invalid webhook response: expected response")
        }
        guard response["uid"]?.string == uid else {
            return .failed("expected response.uid=\"\(uid)\", got \"\(response["uid"]?.string ?? "")\"")
        }
        if answer["apiVersion"]?.string != "admission.k8s.io/\(version)" || answer["kind"]?.string != "AdmissionReview" {
            return .failed("expected webhook response of admission.k8s.io/\(version), Kind=AdmissionReview, got \(answer["apiVersion"]?.string ?? ""), Kind=\(answer["kind"]?.string ?? "")")
        }
        let warnings = (response["warnings"]?.array ?? []).compactMap(\.string)
        guard response["allowed"]?.bool == true else {
            let status = response["status"] ?? [:]
            let code = max(400, Int(status["code"]?.int ?? 400))
            let deniedBy = "admission webhook \"\(w.name)\" denied the request"
            let message: String
            if let m = status["message"]?.string, !m.isEmpty { message = "\(deniedBy): \(m)" }
            else if let r = status["reason"]?.string, !r.isEmpty { message = "\(deniedBy): \(r)" }
            else { message = "\(deniedBy) without explanation" }
            return .denied(code: code, reason: status["reason"]?.string ?? "", message: message, warnings: warnings)
        }
        guard let encoded = response["patch"]?.string else { return .allowed(patch: nil, warnings: warnings) }
        guard w.mutating else { return .failed("validating webhook may not return a patch") }
        guard let type = response["patchType"]?.string else { return .failed("webhook returned a patch without patchType") }
        guard type == "JSONPatch" else { return .failed("unsupported patch type \"\(type)\"") }
        guard let bytes = Data(base64Encoded: encoded), let patch = try? JSONValue.parse(bytes), case .array = patch else {
            return .failed("webhook returned a patch that is not a base64-encoded JSON array")
        }
        return .allowed(patch: patch, warnings: warnings)
    }
}
