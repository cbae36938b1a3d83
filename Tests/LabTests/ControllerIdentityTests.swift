import Foundation
import KubeAPI
import NetnsKit
import Testing

/// `--use-service-account-credentials` as kubeadm runs the controller manager: under
/// `Node,RBAC`, each controller writes as its own service account in kube-system, bound to its
/// `system:controller:NAME` role, and that role is enough for what it does. The audit log says
/// who wrote what, and that no controller was refused anything.
@Suite("controllers with their own identities", .enabled(if: isRoot && kubectl("1.33") != nil, "needs root and kubectl 1.33"))
struct ControllerIdentityTests {
    static let workloads = """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec: {containers: [{name: web, image: busybox}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {selector: {app: web}, ports: [{port: 80}]}
        ---
        apiVersion: batch/v1
        kind: Job
        metadata: {name: once}
        spec:
          template:
            spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}
        """

    @Test func eachControllerWritesAsItsServiceAccount() throws {
        let k = kubectl("1.33")!
        let lab = try Lab()
        defer { lab.destroy() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sy-identity-\(lab.id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let policy = dir.appendingPathComponent("audit-policy.yaml").path, log = dir.appendingPathComponent("audit.log").path
        try "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules: [{level: Metadata}]\n"
            .write(toFile: policy, atomically: true, encoding: .utf8)
        let server = try LabServer(lab: lab, secure: true, arguments: ["--authorization-mode", "Node,RBAC", "--use-service-account-credentials",
                                                                       "--audit-log-path", log, "--audit-policy-file", policy])
        func run(_ args: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) { try server.kubectl(k, args, input: input) }
        func eventually(_ what: String, _ check: () throws -> Bool) throws {
            for _ in 0..<300 { if try check() { return }; usleep(100_000) }
            Issue.record("timed out: \(what)")
        }
        #expect(try run(["apply", "-f", "-"], input: Self.workloads).status == 0)
        try eventually("the Deployment's pods") {
            try run(["get", "pods", "-l", "app=web", "-o", "name"]).out.split(separator: "\n").count == 2
        }
        try eventually("the Job's pod") { try run(["get", "pods", "-l", "job-name=once", "-o", "name"]).out.split(separator: "\n").count == 1 }
        try eventually("the Service's EndpointSlice") { try run(["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "name"]).out.contains("web-") }
        // A namespace and what is in it go (the namespace controller); the Deployment's children
        // go after it (the garbage collector).
        #expect(try run(["create", "namespace", "doomed"]).status == 0)
        #expect(try run(["-n", "doomed", "create", "configmap", "c", "--from-literal", "a=b"]).status == 0)
        #expect(try run(["delete", "namespace", "doomed", "--wait=false"]).status == 0)
        #expect(try run(["delete", "deployment", "web", "--cascade=background"]).status == 0)
        try eventually("the namespace is gone") { try run(["get", "namespace", "doomed"]).status != 0 }
        try eventually("the ReplicaSet and its pods are gone") {
            try run(["get", "replicasets,pods", "-l", "app=web", "-o", "name"]).out.isEmpty
        }

        // The accounts, their roles and bindings; what a role allows and does not.
        let accounts = try run(["-n", "kube-system", "get", "serviceaccounts", "-o", "name"]).out
        for sa in ["deployment-controller", "replicaset-controller", "job-controller", "endpointslice-controller", "endpoint-controller",
                   "namespace-controller", "generic-garbage-collector", "service-account-controller"] {
            #expect(accounts.contains("serviceaccount/\(sa)\n"), "\(sa) in \(accounts)")
        }
        let binding = try run(["get", "clusterrolebinding", "system:controller:deployment-controller", "-o",
                               "jsonpath={.roleRef.name} {.subjects[0].kind} {.subjects[0].namespace}/{.subjects[0].name}"]).out
        #expect(binding == "system:controller:deployment-controller ServiceAccount kube-system/deployment-controller")
        let sa = "system:serviceaccount:kube-system:deployment-controller"
        #expect(try run(["auth", "can-i", "create", "replicasets.apps", "--as", sa]).out == "yes\n")
        #expect(try run(["auth", "can-i", "get", "secrets", "--as", sa]).out == "no\n")
        #expect(try run(["auth", "can-i", "delete", "pods", "--as", "system:serviceaccount:kube-system:node-controller"]).out == "yes\n")

        // Who wrote what, from the audit log; no controller was refused.
        let events = (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
        func writer(_ verb: String, _ resource: String, _ subresource: String = "") -> Set<String> {
            Set(events.filter {
                $0["verb"]?.string == verb && $0[path: ["objectRef", "resource"]]?.string == resource
                    && ($0[path: ["objectRef", "subresource"]]?.string ?? "") == subresource && $0["stage"]?.string == "ResponseComplete"
            }.compactMap { $0[path: ["user", "username"]]?.string })
        }
        let prefix = "system:serviceaccount:kube-system:"
        #expect(writer("create", "replicasets") == [prefix + "deployment-controller"])
        #expect(writer("create", "pods") == [prefix + "replicaset-controller", prefix + "job-controller"])
        #expect(writer("create", "endpointslices") == [prefix + "endpointslice-controller"])
        #expect(writer("create", "serviceaccounts").contains(prefix + "service-account-controller"))
        #expect(writer("deletecollection", "configmaps") == [prefix + "namespace-controller"] || writer("delete", "configmaps") == [prefix + "namespace-controller"])
        #expect(writer("delete", "replicasets") == [prefix + "generic-garbage-collector"])
        // The tokens: asked by the manager itself.
        #expect(writer("create", "serviceaccounts", "token") == ["system:kube-controller-manager"])
        let refused = events.filter {
            ($0[path: ["user", "username"]]?.string ?? "").hasPrefix(prefix) && $0[path: ["responseStatus", "code"]]?.int == 403
        }.map { "\($0[path: ["user", "username"]]?.string ?? "") \($0["verb"]?.string ?? "") \($0["requestURI"]?.string ?? "")" }
        #expect(refused.isEmpty, "refused: \(refused)")
    }
}
