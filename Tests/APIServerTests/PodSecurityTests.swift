import APIAccess
import Foundation
import KubeAPI
import Testing

/// The Pod Security Standards as upstream's pod-security-admission library (v0.33, Kubernetes
/// v1.33) checks them for `latest`: each check's reason and detail in upstream's words, the order
/// of the checks, the joined message of a refusal, and a namespace's policy read from its labels.
/// The expected strings are derived from `staging/src/k8s.io/pod-security-admission/policy/check_*.go`,
/// `policy/checks.go` (ForbiddenDetail), `policy/registry.go` (order) and `api/helpers.go`
/// (PolicyToEvaluate) at v1.33, and agree with the cases of upstream's `check_*_test.go`.
@Suite struct PodSecurityTests {
    typealias Violation = PodSecurity.Violation

    func json(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

    func check(_ level: PodSecurity.Level, _ spec: String, metadata: String = "{}") throws -> [Violation] {
        try PodSecurity.check(level, metadata: json(metadata), spec: json(spec))
    }

    func v(_ reason: String, _ detail: String) -> Violation { Violation(reason: reason, detail: detail) }

    /// A container that passes restricted by itself.
    static let goodContainer = #"""
    {"name": "c", "image": "x", "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true,
     "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}}}
    """#

    @Test func aHardenedPodPassesEveryLevel() throws {
        let metadata = #"{"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/prof"}}"#
        let spec = #"""
        {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"},
                             "sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]},
         "initContainers": [{"name": "init", "image": "x",
                             "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
         "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}],
                         "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 1000,
                                             "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                                             "seLinuxOptions": {"type": "container_engine_t"},
                                             "appArmorProfile": {"type": "RuntimeDefault"}}}],
         "volumes": [{"name": "cm", "configMap": {"name": "x"}}, {"name": "tmp", "emptyDir": {}},
                     {"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]}
        """#
        #expect(try check(.restricted, spec, metadata: metadata) == [])
        #expect(try check(.baseline, spec, metadata: metadata) == [])
        #expect(try check(.privileged, spec, metadata: metadata) == [])
        // The same pod with the init container's capabilities left as they are fails restricted only.
        let lax = spec.replacingOccurrences(of: #""allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],"#,
                                            with: #""allowPrivilegeEscalation": false}}],"#)
        #expect(lax != spec)
        #expect(try check(.restricted, lax, metadata: metadata)
            == [v("unrestricted capabilities", #"container "init" must set securityContext.capabilities.drop=["ALL"]"#)])
        #expect(try check(.baseline, lax, metadata: metadata) == [])
    }

    @Test func aBarePodFailsRestrictedFourTimes() throws {
        let spec = #"{"containers": [{"name": "c", "image": "x"}]}"#
        let violations = try check(.restricted, spec)
        #expect(violations == [
            v("allowPrivilegeEscalation != false", #"container "c" must set securityContext.allowPrivilegeEscalation=false"#),
            v("unrestricted capabilities", #"container "c" must set securityContext.capabilities.drop=["ALL"]"#),
            v("runAsNonRoot != true", #"pod or container "c" must set securityContext.runAsNonRoot=true"#),
            v("seccompProfile", #"pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#),
        ])
        // Derived from pod-security-admission v0.33.13 (Kubernetes v1.33): the details of
        // check_allowPrivilegeEscalation.go (1.25), check_capabilities_restricted.go (1.25),
        // check_runAsNonRoot.go (1.0) and check_seccompProfile_restricted.go (1.25), in
        // registry.go's order (IDs sorted, baseline's first), joined by checks.go's
        // AggregateCheckResult.ForbiddenDetail; admission.go puts it after
        // `violates PodSecurity "restricted:latest": `.
        #expect(PodSecurity.describe(violations)
            == #"allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#)
        #expect(try check(.baseline, spec) == [])
        #expect(try check(.privileged, spec) == [])
    }

    @Test func baselineFailuresComeBeforeRestrictedOnesInIDOrder() throws {
        let spec = #"{"hostNetwork": true, "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}"#
        #expect(PodSecurity.describe(try check(.restricted, spec))
            == #"host namespaces (hostNetwork=true), privileged (container "c" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#)
        #expect(PodSecurity.describe(try check(.baseline, spec))
            == #"host namespaces (hostNetwork=true), privileged (container "c" must not set securityContext.privileged=true)"#)
    }

    @Test func privilegedContainersAreNamedInVisitOrder() throws {
        #expect(try check(.baseline, #"{"containers": [{"name": "a", "securityContext": {"privileged": true}}]}"#)
            == [v("privileged", #"container "a" must not set securityContext.privileged=true"#)])
        // Init containers, then containers, then ephemeral containers; privileged=false is fine.
        let spec = #"""
        {"containers": [{"name": "a", "securityContext": {"privileged": true}}, {"name": "b", "securityContext": {"privileged": false}}],
         "ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}],
         "initContainers": [{"name": "init", "securityContext": {"privileged": true}}]}
        """#
        #expect(try check(.baseline, spec) == [v("privileged", #"containers "init", "a", "debug" must not set securityContext.privileged=true"#)])
    }

    @Test func hostNamespacesAreOneViolation() throws {
        let spec = #"{"hostNetwork": true, "hostPID": true, "hostIPC": false, "containers": [{"name": "c", "image": "x"}]}"#
        let violations = try check(.baseline, spec)
        #expect(violations == [v("host namespaces", "hostNetwork=true, hostPID=true")])
        #expect(PodSecurity.describe(violations) == "host namespaces (hostNetwork=true, hostPID=true)")
        #expect(try check(.baseline, #"{"hostIPC": true, "containers": [{"name": "c"}]}"#) == [v("host namespaces", "hostIPC=true")])
    }

    @Test func hostPathVolumesAndRestrictedVolumeTypes() throws {
        let spec = #"""
        {"containers": [\#(Self.goodContainer)],
         "volumes": [{"name": "data", "hostPath": {"path": "/data"}}, {"name": "cache", "emptyDir": {}}]}
        """#
        #expect(try check(.baseline, spec) == [v("hostPath volumes", #"volume "data""#)])
        // Restricted overrides hostPathVolumes with restrictedVolumes.
        #expect(try check(.restricted, spec) == [v("restricted volume types", #"volume "data" uses restricted volume type "hostPath""#)])
        let many = #"""
        {"containers": [\#(Self.goodContainer)],
         "volumes": [{"name": "a", "nfs": {"server": "s", "path": "/"}}, {"name": "b", "secret": {"secretName": "s"}},
                     {"name": "c"}, {"name": "d", "gitRepo": {"repository": "r"}}, {"name": "e", "hostPath": {"path": "/"}},
                     {"name": "f", "hostPath": null, "csi": {"driver": "d"}}]}
        """#
        #expect(try check(.restricted, many)
            == [v("restricted volume types", #"volumes "a", "c", "d", "e" use restricted volume types "gitRepo", "hostPath", "nfs", "unknown""#)])
        #expect(try check(.baseline, many) == [v("hostPath volumes", #"volume "e""#)])
    }

    @Test func hostPortsAreListedAsSortedStrings() throws {
        #expect(try check(.baseline, #"{"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}"#)
            == [v("hostPort", #"container "a" uses hostPort 8080"#)])
        let spec = #"""
        {"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]},
                        {"name": "b", "ports": [{"containerPort": 82, "hostPort": 10000}, {"containerPort": 83, "hostPort": 8080}]},
                        {"name": "c", "ports": [{"containerPort": 84, "hostPort": 0}]}]}
        """#
        #expect(try check(.baseline, spec) == [v("hostPort", #"containers "a", "b" use hostPorts 10000, 8080"#)])
    }

    @Test func addedCapabilities() throws {
        #expect(try check(.baseline, #"{"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "KILL"]}}}]}"#)
            == [v("non-default capabilities", #"container "c" must not include "SYS_ADMIN" in securityContext.capabilities.add"#)])
        let two = #"""
        {"containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_RAW"]}}},
                        {"name": "b", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}},
                        {"name": "ok", "securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"]}}}]}
        """#
        #expect(try check(.baseline, two)
            == [v("non-default capabilities", #"containers "a", "b" must not include "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add"#)])
        // Restricted overrides the baseline check: drop ALL, add nothing but NET_BIND_SERVICE.
        let spec = #"""
        {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
         "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"add": ["SYS_ADMIN"]}}}]}
        """#
        #expect(try check(.restricted, spec)
            == [v("unrestricted capabilities", #"container "c" must set securityContext.capabilities.drop=["ALL"]; container "c" must not include "SYS_ADMIN" in securityContext.capabilities.add"#)])
    }

    @Test func unsafeSysctls() throws {
        let spec = #"""
        {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                         {"name": "net/ipv4/tcp_syncookies", "value": "1"}, {"name": "net.ipv4.tcp_wmem", "value": "1 2 3"}]},
         "containers": [{"name": "c"}]}
        """#
        let violations = try check(.baseline, spec)
        #expect(violations == [v("forbidden sysctls", "kernel.msgmax, net/ipv4/tcp_syncookies")])
        #expect(PodSecurity.describe(violations) == "forbidden sysctls (kernel.msgmax, net/ipv4/tcp_syncookies)")
    }

    @Test func appArmorProfilesFromFieldsAndAnnotations() throws {
        #expect(try check(.baseline, #"{"containers": [{"name": "c"}]}"#,
                          metadata: #"{"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}"#)
            == [v("forbidden AppArmor profile", #"annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/c="unconfined"""#)])
        let metadata = #"""
        {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined",
                         "container.apparmor.security.beta.kubernetes.io/d": "localhost/foo",
                         "container.apparmor.security.beta.kubernetes.io/e": "runtime/default",
                         "container.apparmor.security.beta.kubernetes.io/b": "x\ty",
                         "other.example.com/b": "unconfined"}}
        """#
        let spec = #"""
        {"securityContext": {"appArmorProfile": {"type": "Unconfined"}},
         "containers": [{"name": "c", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
                        {"name": "d", "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "foo"}}}]}
        """#
        // The annotation's value is quoted as Go's %q, then the whole item quoted again, as upstream.
        #expect(try check(.baseline, spec, metadata: metadata)
            == [v("forbidden AppArmor profiles", #"pod and container "c" and annotations must not set AppArmor profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/b="x\ty"", "container.apparmor.security.beta.kubernetes.io/c="unconfined"""#)])
    }

    @Test func seLinuxSeccompProcMountAndHostProcess() throws {
        let selinux = #"""
        {"securityContext": {"seLinuxOptions": {"type": "spc_t"}},
         "containers": [{"name": "e", "securityContext": {"seLinuxOptions": {"type": "foo", "user": "u"}}},
                        {"name": "f", "securityContext": {"seLinuxOptions": {"role": "r"}}},
                        {"name": "g", "securityContext": {"seLinuxOptions": {"type": "container_engine_t", "level": "s0:c1"}}}]}
        """#
        #expect(try check(.baseline, selinux)
            == [v("seLinuxOptions", #"pod and containers "e", "f" set forbidden securityContext.seLinuxOptions: types "foo", "spc_t"; user may not be set; role may not be set"#)])

        let seccomp = #"""
        {"securityContext": {"seccompProfile": {"type": "Unconfined"}},
         "containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}},
                        {"name": "d", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}
        """#
        let detail = #"pod and container "d" must not set securityContext.seccompProfile.type to "Unconfined""#
        #expect(try check(.baseline, seccomp) == [v("seccompProfile", detail)])
        #expect(try check(.restricted, seccomp).filter { $0.reason == "seccompProfile" } == [v("seccompProfile", detail)])

        let procMount = #"""
        {"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}, {"name": "d", "securityContext": {"procMount": "Default"}}]}
        """#
        #expect(try check(.baseline, procMount) == [v("procMount", #"container "c" must not set securityContext.procMount to "Unmasked""#)])

        let hostProcess = #"""
        {"securityContext": {"windowsOptions": {"hostProcess": true}},
         "containers": [{"name": "c", "securityContext": {"windowsOptions": {"hostProcess": true}}},
                        {"name": "d", "securityContext": {"windowsOptions": {"hostProcess": false}}}]}
        """#
        #expect(try check(.baseline, hostProcess)
            == [v("hostProcess", #"pod and container "c" must not set securityContext.windowsOptions.hostProcess=true"#)])
    }

    @Test func runAsUserRunAsNonRootAndWindowsPods() throws {
        let root = #"""
        {"securityContext": {"runAsUser": 0, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
         "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsUser": 0}},
                        {"name": "d", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000}}]}
        """#
        #expect(try check(.restricted, root) == [v("runAsUser=0", #"pod and container "c" must not set runAsUser=0"#)])
        #expect(try check(.baseline, root) == [])

        // An explicit runAsNonRoot=false is reported instead of the containers that did not set it.
        let explicit = #"""
        {"securityContext": {"runAsNonRoot": false, "seccompProfile": {"type": "RuntimeDefault"}},
         "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": false}},
                        {"name": "d", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}
        """#
        #expect(try check(.restricted, explicit)
            == [v("runAsNonRoot != true", #"pod and container "c" must not set securityContext.runAsNonRoot=false"#)])

        // Windows pods are exempt from allowPrivilegeEscalation, capabilities and seccomp.
        #expect(try check(.restricted, #"{"os": {"name": "windows"}, "containers": [{"name": "c", "image": "x"}]}"#)
            == [v("runAsNonRoot != true", #"pod or container "c" must set securityContext.runAsNonRoot=true"#)])
    }

    @Test func describeJoinsAsUpstreamsForbiddenDetail() {
        #expect(PodSecurity.describe([]) == "")
        #expect(PodSecurity.describe([v("a", ""), v("b", "x, y"), v("", "z")]) == "a, b (x, y), unknown forbidden reason (z)")
    }

    @Test func levelsCompareByStrictness() {
        #expect(PodSecurity.Level.privileged < .baseline)
        #expect(PodSecurity.Level.baseline < .restricted)
        #expect(!(PodSecurity.Level.restricted < .privileged))
        #expect([PodSecurity.Level.restricted, .privileged, .baseline].sorted() == [.privileged, .baseline, .restricted])
    }

    @Test func namespacePolicyFromLabels() {
        // No labels, or none of PodSecurity's: privileged everywhere.
        let empty = PodSecurity.policy(labels: [:])
        #expect(empty.policy == PodSecurity.Policy() && empty.errors.isEmpty)
        #expect(empty.policy.enforce == .privileged && empty.policy.audit == .privileged && empty.policy.warn == .privileged)
        #expect(empty.policy.enforceVersion == "latest" && empty.policy.warnVersion == "latest")
        let unrelated = PodSecurity.policy(labels: ["app": "x"])
        #expect(unrelated.policy == PodSecurity.Policy() && unrelated.errors.isEmpty)

        // enforce=restricted: warn follows it (no warn label), audit stays privileged.
        let restricted = PodSecurity.policy(labels: ["pod-security.kubernetes.io/enforce": "restricted"])
        #expect(restricted.errors.isEmpty)
        #expect(restricted.policy == PodSecurity.Policy(enforce: .restricted, audit: .privileged, warn: .restricted))

        let versioned = PodSecurity.policy(labels: ["pod-security.kubernetes.io/enforce": "baseline",
                                                     "pod-security.kubernetes.io/enforce-version": "v1.25"])
        #expect(versioned.errors.isEmpty)
        #expect(versioned.policy == PodSecurity.Policy(enforce: .baseline, warn: .baseline, enforceVersion: "v1.25", warnVersion: "v1.25"))

        let explicitWarn = PodSecurity.policy(labels: ["pod-security.kubernetes.io/enforce": "restricted",
                                                        "pod-security.kubernetes.io/warn": "baseline",
                                                        "pod-security.kubernetes.io/audit": "restricted",
                                                        "pod-security.kubernetes.io/audit-version": "v1.0"])
        #expect(explicitWarn.errors.isEmpty)
        #expect(explicitWarn.policy == PodSecurity.Policy(enforce: .restricted, audit: .restricted, warn: .baseline, auditVersion: "v1.0"))

        // An invalid enforce level fails closed (restricted) and does not raise warn.
        let invalid = PodSecurity.policy(labels: ["pod-security.kubernetes.io/enforce": "bogus"])
        #expect(invalid.policy == PodSecurity.Policy(enforce: .restricted))
        #expect(invalid.errors == [#"metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "bogus": must be one of privileged, baseline, restricted"#])

        // Invalid audit and warn levels fail open; an invalid version is latest. Errors in label order.
        let several = PodSecurity.policy(labels: ["pod-security.kubernetes.io/warn": "Restricted",
                                                   "pod-security.kubernetes.io/audit": "",
                                                   "pod-security.kubernetes.io/enforce": "baseline",
                                                   "pod-security.kubernetes.io/enforce-version": "1.25"])
        #expect(several.policy == PodSecurity.Policy(enforce: .baseline, audit: .privileged, warn: .privileged))
        #expect(several.errors == [
            #"metadata.labels[pod-security.kubernetes.io/enforce-version]: Invalid value: "1.25": must be "latest" or "v1.x""#,
            #"metadata.labels[pod-security.kubernetes.io/audit]: Invalid value: "": must be one of privileged, baseline, restricted"#,
            #"metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: "Restricted": must be one of privileged, baseline, restricted"#,
        ])
        #expect(PodSecurity.policy(labels: ["pod-security.kubernetes.io/warn-version": "v1.025"]).errors
            == [#"metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "v1.025": must be "latest" or "v1.x""#])
    }
}
