import Foundation
import KubeAPI
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
        // The same from the OpenAPI v2 document, which kubectl reads as gnostic's protobuf.
        let v2 = try server.kubectl(k, ["explain", "deployment.spec.strategy", "--output", "plaintext-openapiv2"])
        #expect(v2.status == 0, "\(v2.err)")
        let folded = v2.out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(folded.contains("The deployment strategy to use to replace existing pods with new ones.") && v2.out.contains("rollingUpdate"), "\(v2.out)")
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

    static func deployment(_ name: String, replicas: Int) -> String {
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: \(name)}
        spec:
          replicas: \(replicas)
          selector: {matchLabels: {app: \(name)}}
          template:
            metadata: {labels: {app: \(name)}}
            spec:
              containers: [{name: web, image: nginx}]
        """
    }

    /// `kubectl apply --server-side` by two field managers: the second conflicts over the field
    /// the first set to another value, with upstream's message, until it forces; managedFields
    /// then hold one Apply entry per manager, as kube-apiserver writes them. A client-side
    /// applied object moves to server-side apply without a conflict, and back.
    @Test(arguments: ["1.27", "1.33"])
    func serverSideApply(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        var r = try server.kubectl(k, ["apply", "--server-side", "-f", "-"], input: Self.deployment("web", replicas: 2))
        #expect(r.status == 0 && r.out.contains("serverside-applied"), "\(r.out) \(r.err)")
        r = try server.kubectl(k, ["apply", "--server-side", "--field-manager=other", "-f", "-"], input: Self.deployment("web", replicas: 3))
        #expect(r.status != 0)
        #expect(r.err.hasPrefix(#"error: Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#), "\(r.err)")
        r = try server.kubectl(k, ["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-"], input: Self.deployment("web", replicas: 3))
        #expect(r.status == 0, "\(r.err)")
        r = try server.kubectl(k, ["get", "deploy", "web", "-o", "json", "--show-managed-fields"])
        let o = try JSONValue.parse(Data(r.out.utf8))
        #expect(o[path: ["spec", "replicas"]] == 3)
        // The controller manager's own entries (the revision annotation, the status) come after, as upstream's.
        let all = o[path: ["metadata", "managedFields"]]?.array ?? []
        #expect(all.dropFirst(2).allSatisfy { $0["manager"] == "kube-controller-manager" && $0["operation"] == "Update" })
        let entries = all.filter { $0["manager"] != "kube-controller-manager" }
        #expect(entries.map { "\($0["manager"]?.string ?? "")/\($0["operation"]?.string ?? "")" } == ["kubectl/Apply", "other/Apply"])
        let containers: JSONValue = [#"k:{"name":"web"}"#: [".": [:], "f:image": [:], "f:name": [:]]]
        let shared: JSONValue = ["f:selector": [:], "f:template": ["f:metadata": ["f:labels": ["f:app": [:]]], "f:spec": ["f:containers": containers]]]
        var other = shared
        other["f:replicas"] = [:]
        #expect(entries.first?["fieldsV1"] == ["f:spec": shared], "kubectl lost .spec.replicas to the forced apply")
        #expect(entries.last?["fieldsV1"] == ["f:spec": other])
        #expect(entries.allSatisfy { $0["apiVersion"] == "apps/v1" && $0["fieldsType"] == "FieldsV1" && $0["time"]?.string?.hasSuffix("Z") == true })
        // kubectl diff --server-side: nothing to show for what is applied.
        r = try server.kubectl(k, ["diff", "--server-side", "--field-manager=other", "-f", "-"], input: Self.deployment("web", replicas: 3))
        #expect(r.status == 0, "\(r.out) \(r.err)")

        // Client-side apply, then server-side apply of a change: no conflict (kubectl takes over
        // what the last-applied annotation set), then client-side again.
        r = try server.kubectl(k, ["apply", "-f", "-"], input: Self.deployment("csa", replicas: 2))
        #expect(r.status == 0, "\(r.err)")
        r = try server.kubectl(k, ["apply", "--server-side", "-f", "-"], input: Self.deployment("csa", replicas: 4))
        #expect(r.status == 0, "\(r.err)")
        #expect(try server.kubectl(k, ["get", "deploy", "csa", "-o", "jsonpath={.spec.replicas}"]).out == "4")
        r = try server.kubectl(k, ["apply", "-f", "-"], input: Self.deployment("csa", replicas: 5))
        #expect(r.status == 0, "\(r.err)")
        #expect(try server.kubectl(k, ["get", "deploy", "csa", "-o", "jsonpath={.spec.replicas}"]).out == "5")
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// A definition installed with kubectl; custom objects created, listed with their columns,
    /// explained, patched, scaled, watched, applied, and removed with the definition.
    @Test(arguments: ["1.27", "1.33"])
    func customResourcesWithKubectl(version: String) throws {
        guard let k = kubectlOrRecord(version) else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        func must(_ args: [String], input: String? = nil) throws -> String {
            let r = try server.kubectl(k, args, input: input)
            #expect(r.status == 0, "kubectl \(args.joined(separator: " ")): \(r.err)")
            return r.out
        }
        _ = try must(["apply", "-f", Self.fixtures.appendingPathComponent("crontab-crd.yaml").path])
        _ = try must(["wait", "--for", "condition=established", "--timeout=10s", "crd/crontabs.stable.example.com"])
        let cron = { (name: String, spec: String) in "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: \(name)}\nspec: \(spec)\n" }
        _ = try must(["apply", "-f", "-"], input: cron("a", #"{cronSpec: "* * * * */5", image: my-image, replicas: 2}"#))
        _ = try must(["create", "-f", "-"], input: cron("b", #"{cronSpec: "0 * * * *"}"#))
        let table = try must(["get", "crontabs"]).split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(table.first == ["NAME", "SPEC", "REPLICAS", "AGE"], "\(table)")
        #expect(table.dropFirst().map { Array($0.prefix(7)) } == [["a", "*", "*", "*", "*", "*/5", "2"], ["b", "0", "*", "*", "*", "*", "1"]], "\(table)")
        #expect(try must(["get", "ct", "b", "-o", "jsonpath={.spec.replicas}"]) == "1", "the schema's default")
        #expect(try must(["get", "all", "-o", "name"]).contains("crontab.stable.example.com/a"), "in the all category")
        let explain = try must(["explain", "crontab.spec.cronSpec"])
        #expect(explain.contains("When to run, in cron's format."), "\(explain)")
        var r = try server.kubectl(k, ["create", "-f", "-"], input: cron("bad", #"{cronSpec: "sometimes", replicas: 11}"#))
        #expect(r.status != 0 && r.err.contains(#"spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"#), "\(r.err)")
        r = try server.kubectl(k, ["create", "--validate=strict", "-f", "-"], input: cron("c", #"{cronSpec: "* * * * *", colour: red}"#))
        #expect(r.status != 0 && r.err.contains(#"strict decoding error: unknown field "spec.colour""#), "\(r.err)")

        // A watch sees the changes that follow.
        let watchOut = FileManager.default.temporaryDirectory.appendingPathComponent("sy-watch-\(lab.id)")
        defer { try? FileManager.default.removeItem(at: watchOut) }
        let watcher = Process()
        watcher.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        watcher.arguments = ["netns", "exec", lab.node, k, "--kubeconfig", server.kubeconfig, "get", "crontabs", "--watch-only", "-o", "name", "--request-timeout=8s"]
        _ = FileManager.default.createFile(atPath: watchOut.path, contents: nil)
        watcher.standardOutput = try FileHandle(forWritingTo: watchOut)
        try watcher.run()
        usleep(700_000)
        _ = try must(["patch", "ct", "a", "--type=merge", "-p", #"{"spec":{"image":"other"}}"#])
        _ = try must(["scale", "ct", "a", "--replicas=4"])
        #expect(try must(["get", "ct", "a", "-o", "jsonpath={.spec.replicas} {.spec.image}"]) == "4 other")
        _ = try must(["delete", "ct", "b"])
        var watched = ""
        for _ in 0..<50 {
            watched = (try? String(contentsOf: watchOut, encoding: .utf8)) ?? ""
            if watched.contains("crontab.stable.example.com/b") { break }
            usleep(100_000)
        }
        watcher.terminate()
        #expect(watched.contains("crontab.stable.example.com/a") && watched.contains("crontab.stable.example.com/b"), "watched: \(watched)")

        // Served in the other version too (None conversion), and applied server-side.
        #expect(try must(["get", "crontabs.v1beta1.stable.example.com", "a", "-o", "jsonpath={.apiVersion}"]) == "stable.example.com/v1beta1")
        _ = try must(["apply", "--server-side", "--force-conflicts", "-f", "-"], input: cron("a", #"{cronSpec: "* * * * */5", image: my-image, replicas: 2}"#))

        _ = try must(["delete", "crd", "crontabs.stable.example.com"])
        r = try server.kubectl(k, ["get", "--raw", "/apis/stable.example.com/v1/namespaces/default/crontabs"])
        #expect(r.status != 0 && r.err.contains("NotFound"), "\(r.err)")
    }

    /// The official Python client's dynamic client: definition, objects, patch, apply, watch, delete.
    @Test func customResourcesWithThePythonClient() throws {
        guard (try? Sh.run(["python3", "-c", "import kubernetes"]).status) == 0 else {
            Issue.record("the kubernetes Python client is not installed (scripts/setup.sh installs it)")
            return
        }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab)
        let r = try Sh.run(["ip", "netns", "exec", lab.node, "python3", Self.fixtures.appendingPathComponent("python/dynamic_crd.py").path,
                            server.kubeconfig, Self.fixtures.appendingPathComponent("crontab-crd.yaml").path], timeout: 60)
        #expect(r.status == 0, "\(r.err)")
        let seen = try JSONValue.parse(Data(r.out.utf8))
        #expect(seen["established"] == true)
        #expect(seen["defaultedReplicas"] == 1)
        #expect(seen["names"] == ["py-a", "py-b"] && seen["replicas"] == ["py-a": 3, "py-b": 2])
        #expect(seen["managers"] == ["python/Apply"])
        #expect(seen[path: ["invalid", "status"]] == 422)
        #expect(seen[path: ["invalid", "message"]]?.string?.contains("spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10") == true)
        #expect(seen["events"] == ["DELETED py-a"])
        #expect(seen["afterDelete"] == 404)
    }

    /// `kubectl get --raw /metrics`, as an admin and on HTTPS: upstream's request and storage
    /// metrics, counting what kubectl just did, on SQLite and on etcd.
    @Test(arguments: EtcdProcess.available ? ["sqlite", "etcd"] : ["sqlite"])
    func metricsAsKubectlReadsThem(store: String) throws {
        guard let k = kubectlOrRecord("1.33") else { return }
        let lab = try Lab()
        defer { lab.destroy() }
        let server = try LabServer(lab: lab, etcd: store == "etcd", secure: true)
        let cm = try server.kubectl(k, ["create", "configmap", "counted", "--from-literal=a=b"])
        #expect(cm.status == 0, "\(cm.err)")
        // Counted apart from the controllers' ConfigMaps (kube-root-ca.crt in every namespace).
        let dry = try server.kubectl(k, ["create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server"])
        #expect(dry.status == 0, "\(dry.err)")
        let r = try server.kubectl(k, ["get", "--raw", "/metrics"])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n")
        for family in ["apiserver_request_total counter", "apiserver_request_duration_seconds histogram", "apiserver_storage_objects gauge",
                       "apiserver_current_inflight_requests gauge", "etcd_request_duration_seconds histogram"] {
            #expect(lines.contains { $0 == "# TYPE " + family }, "# TYPE \(family)")
        }
        let created = lines.first { $0.hasPrefix("apiserver_request_total{") && $0.contains(#"code="201""#) && $0.contains(#"resource="configmaps""#)
            && $0.contains(#"verb="POST""#) && $0.contains(#"scope="namespace""#) && $0.contains(#"version="v1""#) && $0.contains(#"dry_run="All""#) }
        #expect(created?.hasSuffix(" 1") == true, "kubectl's dry run counted once: \(created ?? "none")")
        // The ConfigMap and the one the server writes in kube-public (kubeadm's cluster-info).
        let stored = lines.first { $0.hasPrefix(#"apiserver_storage_objects{resource="configmaps"}"#) }
        #expect(stored.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 1 } == true, "\(stored ?? "none")")
        #expect(lines.contains { $0.hasPrefix("etcd_request_duration_seconds_count{") && $0.contains(#"operation="create""#) && $0.contains(#"type="configmaps""#) })
    }
}
