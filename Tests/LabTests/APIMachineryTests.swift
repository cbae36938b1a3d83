import Foundation
import NetnsKit
import Testing

/// What kubectl reads besides objects: the OpenAPI schemas (`explain`, server-side field
/// validation, strategic merge patches) and aggregated discovery, with the oldest and newest
/// kubectl on the machine.
@Suite("API machinery with kubectl", .enabled(if: isRoot, "needs root for network namespaces"))
struct APIMachineryTests {
    static let misspelled = """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicaz: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: web, image: nginx, imagex: foo}]
        """

    @Test(arguments: ["1.27", "1.33"])
    func explainPrintsUpstreamsText(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        // Field, a line of upstream's description of it, and a field below it.
        let cases = [
            ("deployment.spec.strategy", "The deployment strategy to use to replace existing pods with new ones.", "rollingUpdate"),
            ("pod.spec.containers.ports", "List of ports to expose from the container.", "containerPort"),
            ("service.spec.sessionAffinityConfig", "sessionAffinityConfig contains the configurations of session affinity.", "clientIP"),
            ("node.status.addresses", "List of addresses reachable to the node.", "address"),
            ("endpointslice.endpoints.conditions", "conditions contains information about the current status of the endpoint.", "serving"),
            ("configmap", "ConfigMap holds configuration data for pods to consume.", "binaryData"),
        ]
        for (field, line, child) in cases {
            let r = try server.kubectl(k, ["explain", field])
            #expect(r.status == 0, "explain \(field): \(r.err)")
            // kubectl wraps long descriptions: compare with whitespace folded.
            let folded = r.out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(folded.contains(line), "explain \(field): \(r.out)")
            #expect(r.out.contains("  \(child)\t<"), "explain \(field) lists \(child): \(r.out)")
        }
    }

    /// `--validate=strict` (kubectl's default) finds in the v3 document that the server checks
    /// fields itself and leaves it to it: upstream's message, nothing stored; `--validate=warn`
    /// stores the object without the misspelled fields and prints a warning for each.
    @Test(arguments: ["1.27", "1.33"])
    func strictValidationOnTheServer(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        var r = try server.kubectl(k, ["create", "--validate=strict", "-f", "-"], input: Self.misspelled)
        #expect(r.status != 0)
        #expect(r.err.contains(#"Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.replicaz", unknown field "spec.template.spec.containers[0].imagex""#),
                "\(r.err)")
        #expect(try server.kubectl(k, ["get", "deploy", "web"]).status != 0)
        r = try server.kubectl(k, ["create", "--validate=warn", "-f", "-"], input: Self.misspelled)
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains(#"Warning: unknown field "spec.replicaz""#) && r.err.contains(#"Warning: unknown field "spec.template.spec.containers[0].imagex""#), "\(r.err)")
        r = try server.kubectl(k, ["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0]}"])
        #expect(r.out.hasPrefix("1 ") && !r.out.contains("imagex"), "\(r.out)")
    }

    /// Discovery in two requests (`/api` and `/apis`, aggregated), not one per group-version;
    /// and client-side apply computes its strategic merge patch from the served schemas.
    @Test(arguments: ["1.27", "1.33"])
    func aggregatedDiscoveryAndApply(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        let r = try server.kubectl(k, ["api-resources", "-v=6"])
        #expect(r.status == 0, "\(r.err)")
        let gets = r.err.split(separator: "\n").filter { $0.contains(" GET ") || $0.contains(#"verb="GET""#) }
        #expect(gets.count == 2, "discovery requests: \(gets.joined(separator: "\n"))")
        for name in ["deployments", "endpointslices", "namespaces"] { #expect(r.out.contains(name)) }

        let deploy = { (replicas: Int, image: String) in
            Self.misspelled.replacingOccurrences(of: "replicaz: 2", with: "replicas: \(replicas)")
                .replacingOccurrences(of: "image: nginx, imagex: foo", with: "image: \(image), ports: [{containerPort: 80}]")
        }
        for (n, image) in [(2, "nginx"), (3, "nginx:2")] {
            let a = try server.kubectl(k, ["apply", "-f", "-"], input: deploy(n, image))
            #expect(a.status == 0, "\(a.err)")
        }
        let got = try server.kubectl(k, ["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"])
        #expect(got.out == "3 nginx:2 80")
        let diff = try server.kubectl(k, ["diff", "-f", "-"], input: deploy(3, "nginx:2"))
        #expect(diff.status == 0, "no difference: \(diff.out) \(diff.err)")
    }
}
