import APIAccess
@testable import APIServer
import Foundation
import KubeAPI
import KubeStore
import Testing

/// The PodSecurity plugin's configuration (defaults for namespaces without labels, exemptions by
/// namespace, user and runtime class) and what it writes into the audit log, as upstream's plugin
/// annotates a request's event: the enforced policy of a pod, the audit level's violations, the
/// exemption that let a pod through.
@Suite struct PodSecurityAuditTests {
    static let configuration = """
        apiVersion: pod-security.admission.config.k8s.io/v1
        kind: PodSecurityConfiguration
        defaults: {enforce: baseline, enforce-version: latest, audit: restricted, audit-version: v1.33}
        exemptions: {usernames: [ci-bot], runtimeClasses: [trusted], namespaces: [legacy]}
        """

    @Test func defaultsExemptionsAndAuditAnnotations() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sy-psa-audit-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try PodSecurity.Configuration(try YAMLToJSON.convert(Self.configuration))
        #expect(config.defaults.enforce == .baseline && config.defaults.audit == .restricted && config.defaults.auditVersion == "v1.33")
        #expect(config.defaults.warn == .privileged, "a mode the configuration does not name stays privileged")
        let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules: [{level: Metadata, resources: [{group: \"\", resources: [pods]}]}]\n"
        let h = APIHandler(store: try SQLiteStore(path: ":memory:"), audit: try AuditLog(policy: policy, path: path), podSecurity: config)
        try await h.bootstrap()
        for ns in ["app", "legacy", "open"] {
            var labels: JSONValue = [:]
            if ns == "open" { labels = ["pod-security.kubernetes.io/enforce": "privileged"] }
            _ = await h.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", body: body(["metadata": ["name": .string(ns), "labels": labels]])))
        }
        func pod(_ ns: String, _ name: String, privileged: Bool = false, runtimeClass: String? = nil, user: String = "alice") async -> APIResponse {
            var spec: JSONValue = ["containers": [["name": "c", "image": "busybox", "securityContext": ["privileged": .bool(privileged)]]]]
            if let runtimeClass { spec["runtimeClassName"] = .string(runtimeClass) }
            var r = APIRequest(method: "POST", path: "/api/v1/namespaces/\(ns)/pods", body: body(["metadata": ["name": .string(name)], "spec": spec]))
            r.user = UserInfo(name: user, groups: ["devs"]).authenticated()
            return await h.handle(r)
        }
        // The defaults apply to a namespace without labels: baseline refuses a privileged pod.
        let refused = await pod("app", "p1", privileged: true)
        #expect(refused.code == 403 && refused.json?["message"]?.string?.contains("violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)") == true,
                "\(refused.json?.text() ?? "")")
        // A baseline pod goes in; restricted (the audit default) would refuse it.
        #expect(await pod("app", "p2").code == 201)
        // Exemptions: the namespace, the user, the runtime class.
        #expect(await pod("legacy", "p3", privileged: true).code == 201)
        #expect(await pod("app", "p4", privileged: true, user: "ci-bot").code == 201)
        #expect(await pod("app", "p5", privileged: true, runtimeClass: "trusted").code == 201)
        // A namespace's labels win over the defaults.
        #expect(await pod("open", "p6", privileged: true).code == 201)

        let events = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
            .filter { $0["verb"]?.string == "create" && $0[path: ["objectRef", "resource"]]?.string == "pods" }
        func annotations(_ name: String) -> [String: String] {
            (events.first { $0[path: ["objectRef", "name"]]?.string == name }?["annotations"]?.object ?? [:]).compactMapValues(\.string)
        }
        #expect(annotations("p1")["pod-security.kubernetes.io/enforce-policy"] == "baseline:latest", "a refused pod's event names the policy too")
        #expect(annotations("p1")["authorization.k8s.io/decision"] == "allow")
        let p2 = annotations("p2")
        #expect(p2["pod-security.kubernetes.io/enforce-policy"] == "baseline:latest")
        #expect(p2["pod-security.kubernetes.io/audit-violations"]?.hasPrefix("would violate PodSecurity \"restricted:v1.33\": allowPrivilegeEscalation != false") == true, "\(p2)")
        #expect(annotations("p3")["pod-security.kubernetes.io/exempt"] == "namespace")
        #expect(annotations("p4")["pod-security.kubernetes.io/exempt"] == "user")
        #expect(annotations("p5")["pod-security.kubernetes.io/exempt"] == "runtimeClass")
        #expect(annotations("p3")["pod-security.kubernetes.io/enforce-policy"] == nil)
        #expect(annotations("p6")["pod-security.kubernetes.io/enforce-policy"] == "privileged:latest")
    }

    @Test func badConfigurationsAreRefused() throws {
        func parse(_ yaml: String) throws -> PodSecurity.Configuration { try PodSecurity.Configuration(try YAMLToJSON.convert(yaml)) }
        let header = "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\n"
        #expect(throws: PodSecurity.Configuration.Failure.self) { try parse("apiVersion: v1\nkind: Other\n") }
        do {
            _ = try parse(header + "defaults: {enforce: strict}\n")
            Issue.record("an unknown level is refused")
        } catch let e as PodSecurity.Configuration.Failure {
            #expect(e.description == "defaults.enforce: Invalid value: \"strict\": must be one of privileged, baseline, restricted")
        }
        #expect(throws: PodSecurity.Configuration.Failure.self) { try parse(header + "defaults: {enforce-version: v2.0}\n") }
        #expect(throws: PodSecurity.Configuration.Failure.self) { try parse(header + "defaults: {enforcing: baseline}\n") }
        #expect(try parse(header) == PodSecurity.Configuration())
    }
}
