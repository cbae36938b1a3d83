import KubeAPI

/// The Pod Security Standards as upstream's pod-security-admission library checks them
/// (`k8s.io/pod-security-admission/policy`, Kubernetes v1.33, each check at its newest version:
/// what `restricted:latest` and `baseline:latest` evaluate), and a namespace's policy read from its
/// `pod-security.kubernetes.io/*` labels as `api.PolicyToEvaluate` reads them.
///
/// The words of every refusal are upstream's, character for character (reasons, details,
/// pluralisation, quoting, sorting, the order of the checks), because users compare them with a
/// real cluster's. Strings are compared and sorted byte by byte, as Go does, not by Swift's
/// canonical equivalence.
///
/// Versions other than `latest` are accepted in the labels and reported as given, but every
/// version is evaluated as `latest`.
public enum PodSecurity {
    /// A Pod Security Standards level; `<` is "less strict than".
    public enum Level: String, Sendable, Comparable {
        case privileged, baseline, restricted

        private var strictness: Int {
            switch self {
            case .privileged: return 0
            case .baseline: return 1
            case .restricted: return 2
            }
        }

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.strictness < rhs.strictness }
    }

    /// One failing check: upstream's `ForbiddenReason` and `ForbiddenDetail`.
    public struct Violation: Sendable, Equatable {
        public var reason: String
        public var detail: String

        public init(reason: String, detail: String) {
            self.reason = reason
            self.detail = detail
        }
    }

    // MARK: checking a pod

    /// Every check of `level` over a pod's metadata and spec (baseline's for baseline; baseline's
    /// that restricted does not override, then restricted's, for restricted; none for privileged),
    /// in upstream's order, which is the checks' IDs sorted, baseline's first; only the failing
    /// checks are returned.
    ///
    /// Upstream's order for baseline: appArmorProfile, capabilities_baseline, hostNamespaces,
    /// hostPathVolumes, hostPorts, privileged, procMount, seLinuxOptions, seccompProfile_baseline,
    /// sysctls, windowsHostProcess. Restricted drops capabilities_baseline (for
    /// capabilities_restricted), hostPathVolumes (for restrictedVolumes) and
    /// seccompProfile_baseline (for seccompProfile_restricted) and appends allowPrivilegeEscalation,
    /// capabilities_restricted, restrictedVolumes, runAsNonRoot, runAsUser,
    /// seccompProfile_restricted.
    public static func check(_ level: Level, metadata: JSONValue, spec: JSONValue) -> [Violation] {
        if level == .privileged { return [] }
        let pod = Pod(metadata: metadata, spec: spec)
        let restricted = level == .restricted
        var out: [Violation] = []
        func add(_ v: Violation?) { if let v { out.append(v) } }

        add(appArmorProfile(pod))
        if !restricted { add(capabilitiesBaseline(pod)) }
        add(hostNamespaces(pod))
        if !restricted { add(hostPathVolumes(pod)) }
        add(hostPorts(pod))
        add(privileged(pod))
        add(procMount(pod))
        add(seLinuxOptions(pod))
        if !restricted { add(seccompProfileBaseline(pod)) }
        add(sysctls(pod))
        add(windowsHostProcess(pod))
        if restricted {
            add(allowPrivilegeEscalation(pod))
            add(capabilitiesRestricted(pod))
            add(restrictedVolumes(pod))
            add(runAsNonRoot(pod))
            add(runAsUser(pod))
            add(seccompProfileRestricted(pod))
        }
        return out
    }

    /// Upstream's `AggregateCheckResult.ForbiddenDetail`: `reason (detail), reason (detail)`, a
    /// reason alone when its detail is empty; what follows `violates PodSecurity "restricted:latest": `.
    public static func describe(_ violations: [Violation]) -> String {
        violations.map { (v: Violation) -> String in
            let reason = v.reason.isEmpty ? "unknown forbidden reason" : v.reason
            return v.detail.isEmpty ? reason : reason + " (" + v.detail + ")"
        }.joined(separator: ", ")
    }

    // MARK: a namespace's policy

    /// A namespace's levels and versions for the three modes.
    public struct Policy: Sendable, Equatable {
        public var enforce: Level
        public var audit: Level
        public var warn: Level
        /// `latest` or `v1.N`, as upstream's `api.Version` prints it.
        public var enforceVersion: String
        public var auditVersion: String
        public var warnVersion: String

        /// The defaults are the API server's (`privileged:latest` for every mode).
        public init(enforce: Level = .privileged, audit: Level = .privileged, warn: Level = .privileged,
                    enforceVersion: String = "latest", auditVersion: String = "latest", warnVersion: String = "latest") {
            self.enforce = enforce
            self.audit = audit
            self.warn = warn
            self.enforceVersion = enforceVersion
            self.auditVersion = auditVersion
            self.warnVersion = warnVersion
        }
    }

    public static let enforceLabel = "pod-security.kubernetes.io/enforce"
    public static let enforceVersionLabel = "pod-security.kubernetes.io/enforce-version"
    public static let auditLabel = "pod-security.kubernetes.io/audit"
    public static let auditVersionLabel = "pod-security.kubernetes.io/audit-version"
    public static let warnLabel = "pod-security.kubernetes.io/warn"
    public static let warnVersionLabel = "pod-security.kubernetes.io/warn-version"

    /// A namespace's policy from its labels, as upstream's `api.PolicyToEvaluate` over the API
    /// server's defaults (`privileged:latest`): a missing mode keeps the default; an invalid
    /// enforce level is `restricted` (fail closed), an invalid audit or warn level `privileged`
    /// (fail open), an invalid version `latest`, each with an error in `field.Invalid`'s words
    /// (`metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "x": must be one of
    /// privileged, baseline, restricted`), in the order enforce, enforce-version, audit,
    /// audit-version, warn, warn-version. Without a warn label, a valid enforce level stricter than
    /// warn's becomes warn's too (with enforce's version unless warn-version is set).
    public static func policy(labels: [String: String], defaults: Policy = Policy()) -> (policy: Policy, errors: [String]) {
        var p = defaults
        var errors: [String] = []
        func invalid(_ label: String, _ value: String, _ message: String?) {
            if let message {
                errors.append("metadata.labels[" + label + "]: Invalid value: " + goQuote(value) + ": " + message)
            }
        }
        var hasEnforceLevel = false
        var hasWarnLevel = false
        var hasWarnVersion = false

        if let value = labels[enforceLabel] {
            let (level, error) = parseLevel(value)
            p.enforce = level
            hasEnforceLevel = error == nil
            invalid(enforceLabel, value, error)
        }
        if let value = labels[enforceVersionLabel] {
            let (version, error) = parseVersion(value)
            p.enforceVersion = version
            invalid(enforceVersionLabel, value, error)
        }
        if let value = labels[auditLabel] {
            let (level, error) = parseLevel(value)
            p.audit = error == nil ? level : .privileged
            invalid(auditLabel, value, error)
        }
        if let value = labels[auditVersionLabel] {
            let (version, error) = parseVersion(value)
            p.auditVersion = version
            invalid(auditVersionLabel, value, error)
        }
        if let value = labels[warnLabel] {
            hasWarnLevel = true
            let (level, error) = parseLevel(value)
            p.warn = error == nil ? level : .privileged
            invalid(warnLabel, value, error)
        }
        if let value = labels[warnVersionLabel] {
            hasWarnVersion = true
            let (version, error) = parseVersion(value)
            p.warnVersion = version
            invalid(warnVersionLabel, value, error)
        }
        if !hasWarnLevel && hasEnforceLevel && p.enforce > p.warn {
            p.warn = p.enforce
            if !hasWarnVersion { p.warnVersion = p.enforceVersion }
        }
        return (p, errors)
    }

    /// The plugin's configuration (`PodSecurityConfiguration`, pod-security.admission.config.k8s.io/v1,
    /// inside the API server's AdmissionConfiguration): the levels of namespaces without labels,
    /// and the requests never checked (by user, by the pod's runtime class, by namespace).
    public struct Configuration: Sendable, Equatable {
        public var defaults = Policy()
        public var exemptUsernames: Set<String> = []
        public var exemptRuntimeClasses: Set<String> = []
        public var exemptNamespaces: Set<String> = []
        public init() {}

        public struct Failure: Error, CustomStringConvertible { public var description: String }

        /// Reads a PodSecurityConfiguration document; an invalid level or version, or another
        /// kind, is an error naming the field.
        public init(_ doc: JSONValue) throws {
            guard doc["kind"]?.string == "PodSecurityConfiguration",
                  ["pod-security.admission.config.k8s.io/v1", "pod-security.admission.config.k8s.io/v1beta1"].contains(doc["apiVersion"]?.string ?? "") else {
                throw Failure(description: "want kind PodSecurityConfiguration of apiVersion pod-security.admission.config.k8s.io/v1")
            }
            var labels: [String: String] = [:]
            for (mode, o) in doc["defaults"]?.object ?? [:] {
                guard let v = o.string else { throw Failure(description: "defaults.\(mode): a string") }
                guard ["enforce", "enforce-version", "audit", "audit-version", "warn", "warn-version"].contains(mode) else {
                    throw Failure(description: "defaults.\(mode): unknown field")
                }
                labels["pod-security.kubernetes.io/" + mode] = v
            }
            let (policy, errors) = PodSecurity.policy(labels: labels)
            if let e = errors.first {
                throw Failure(description: e.replacingOccurrences(of: "metadata.labels[pod-security.kubernetes.io/", with: "defaults.").replacingOccurrences(of: "]: ", with: ": "))
            }
            defaults = policy
            // Without a warn default, warn follows enforce only through the labels' rule above;
            // a configuration names each mode it sets.
            if labels["pod-security.kubernetes.io/warn"] == nil { defaults.warn = .privileged; defaults.warnVersion = "latest" }
            func names(_ key: String) -> Set<String> { Set((doc[path: ["exemptions", key]]?.array ?? []).compactMap(\.string)) }
            exemptUsernames = names("usernames")
            exemptRuntimeClasses = names("runtimeClasses")
            exemptNamespaces = names("namespaces")
        }
    }

    /// `api.ParseLevel`: an unknown level is `restricted`, with an error.
    static func parseLevel(_ s: String) -> (level: Level, error: String?) {
        for level in [Level.privileged, .baseline, .restricted] where same(level.rawValue, s) {
            return (level, nil)
        }
        return (.restricted, "must be one of privileged, baseline, restricted")
    }

    /// `api.ParseVersion`: `latest` or `v1.N` (`^v1\.([0-9]|[1-9][0-9]*)$`, N fitting an int);
    /// anything else is `latest`, with an error.
    static func parseVersion(_ s: String) -> (version: String, error: String?) {
        if same(s, "latest") { return ("latest", nil) }
        let failure: (version: String, error: String?) = ("latest", "must be \"latest\" or \"v1.x\"")
        let bytes = Array(s.utf8)
        let prefix = Array("v1.".utf8)
        guard bytes.count > prefix.count, bytes.starts(with: prefix) else { return failure }
        let digits = Array(bytes[prefix.count...])
        let zero = UInt8(ascii: "0"), nine = UInt8(ascii: "9")
        guard digits.allSatisfy({ $0 >= zero && $0 <= nine }),
              digits.count == 1 || digits[0] != zero,
              let minor = Int64(String(decoding: digits, as: UTF8.self)) else { return failure }
        return ("v1.\(minor)", nil)
    }

    // MARK: the pod, as the checks read it

    /// The parts of a pod the checks read. A field that is absent or `null` is unset, as a nil
    /// pointer after Go's decoding.
    struct Pod {
        var annotations: [String: String]
        var spec: JSONValue
        var securityContext: JSONValue?
        /// Init containers, then containers, then ephemeral containers: upstream's `visitContainers`.
        var containers: [Container]
        var volumes: [JSONValue]
        /// `spec.os.name` is `windows`.
        var isWindows: Bool

        init(metadata: JSONValue, spec: JSONValue) {
            annotations = (metadata["annotations"]?.object ?? [:]).compactMapValues(\.string)
            self.spec = spec
            securityContext = PodSecurity.present(spec["securityContext"])
            var list: [Container] = []
            for key in ["initContainers", "containers", "ephemeralContainers"] {
                for c in spec[key]?.array ?? [] {
                    list.append(Container(name: c["name"]?.string ?? "",
                                          securityContext: PodSecurity.present(c["securityContext"]),
                                          ports: c["ports"]?.array ?? []))
                }
            }
            containers = list
            volumes = spec["volumes"]?.array ?? []
            isWindows = PodSecurity.same(spec[path: ["os", "name"]]?.string ?? "", "windows")
        }
    }

    struct Container {
        var name: String
        var securityContext: JSONValue?
        var ports: [JSONValue]
    }

    // MARK: baseline checks (policy/check_*.go)

    /// check_appArmorProfile.go (appArmorProfile_1_0).
    static func appArmorProfile(_ pod: Pod) -> Violation? {
        func allowedType(_ t: String) -> Bool { same(t, "RuntimeDefault") || same(t, "Localhost") }
        func allowedAnnotation(_ v: String) -> Bool { v.isEmpty || same(v, "runtime/default") || hasPrefix(v, "localhost/") }

        var badSetters: [String] = []
        var badValues: [String] = []
        if let profile = present(pod.securityContext?["appArmorProfile"]) {
            let t = profile["type"]?.string ?? ""
            if !allowedType(t) {
                badSetters.append("pod")
                badValues.append(t)
            }
        }
        var badContainers: [String] = []
        for c in pod.containers {
            if let profile = present(c.securityContext?["appArmorProfile"]) {
                let t = profile["type"]?.string ?? ""
                if !allowedType(t) {
                    badContainers.append(c.name)
                    badValues.append(t)
                }
            }
        }
        if !badContainers.isEmpty { badSetters.append(containers(badContainers)) }

        var forbiddenAnnotations: [String] = []
        for (k, v) in pod.annotations where hasPrefix(k, "container.apparmor.security.beta.kubernetes.io/") && !allowedAnnotation(v) {
            forbiddenAnnotations.append(k + "=" + goQuote(v))
        }
        var badValueList = goSortedSet(badValues)
        if !forbiddenAnnotations.isEmpty {
            badValueList += goSorted(forbiddenAnnotations)
            badSetters.append(pluralize("annotation", "annotations", forbiddenAnnotations.count))
        }
        guard !badSetters.isEmpty else { return nil }
        return Violation(
            reason: pluralize("forbidden AppArmor profile", "forbidden AppArmor profiles", badValueList.count),
            detail: badSetters.joined(separator: " and ") + " must not set AppArmor profile type to " + joinQuote(badValueList))
    }

    static let defaultCapabilities = [
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    ]

    /// check_capabilities_baseline.go (capabilitiesBaseline_1_0); restricted overrides it.
    static func capabilitiesBaseline(_ pod: Pod) -> Violation? {
        var badContainers: [String] = []
        var nonDefault: [String] = []
        for c in pod.containers {
            guard let caps = present(c.securityContext?["capabilities"]) else { continue }
            var valid = true
            for cap in strings(caps["add"]) where !isOneOf(cap, defaultCapabilities) {
                valid = false
                nonDefault.append(cap)
            }
            if !valid { badContainers.append(c.name) }
        }
        guard !badContainers.isEmpty else { return nil }
        return Violation(
            reason: "non-default capabilities",
            detail: containers(badContainers) + " must not include " + joinQuote(goSortedSet(nonDefault)) + " in securityContext.capabilities.add")
    }

    /// check_hostNamespaces.go (hostNamespaces_1_0).
    static func hostNamespaces(_ pod: Pod) -> Violation? {
        var set: [String] = []
        if pod.spec["hostNetwork"]?.bool == true { set.append("hostNetwork=true") }
        if pod.spec["hostPID"]?.bool == true { set.append("hostPID=true") }
        if pod.spec["hostIPC"]?.bool == true { set.append("hostIPC=true") }
        guard !set.isEmpty else { return nil }
        return Violation(reason: "host namespaces", detail: set.joined(separator: ", "))
    }

    /// check_hostPathVolumes.go (hostPathVolumes_1_0); restricted overrides it.
    static func hostPathVolumes(_ pod: Pod) -> Violation? {
        var names: [String] = []
        for v in pod.volumes where present(v["hostPath"]) != nil {
            names.append(v["name"]?.string ?? "")
        }
        guard !names.isEmpty else { return nil }
        return Violation(reason: "hostPath volumes", detail: pluralize("volume", "volumes", names.count) + " " + joinQuote(names))
    }

    /// check_hostPorts.go (hostPorts_1_0). The ports are sorted as strings, as upstream's set.
    static func hostPorts(_ pod: Pod) -> Violation? {
        var badContainers: [String] = []
        var ports: [String] = []
        for c in pod.containers {
            var valid = true
            for port in c.ports {
                if let hostPort = port["hostPort"]?.int, hostPort != 0 {
                    valid = false
                    ports.append(String(hostPort))
                }
            }
            if !valid { badContainers.append(c.name) }
        }
        guard !badContainers.isEmpty else { return nil }
        let list = goSortedSet(ports)
        return Violation(
            reason: "hostPort",
            detail: containers(badContainers) + " " + pluralize("uses", "use", badContainers.count) + " "
                + pluralize("hostPort", "hostPorts", list.count) + " " + list.joined(separator: ", "))
    }

    /// check_privileged.go (privileged_1_0).
    static func privileged(_ pod: Pod) -> Violation? {
        let bad = pod.containers.filter { $0.securityContext?["privileged"]?.bool == true }.map(\.name)
        guard !bad.isEmpty else { return nil }
        return Violation(reason: "privileged", detail: containers(bad) + " must not set securityContext.privileged=true")
    }

    /// check_procMount.go (procMount_1_0). Upstream relaxes it for pods with `hostUsers: false`
    /// only when the UserNamespacesPodSecurityStandards feature gate (alpha, off) is on.
    static func procMount(_ pod: Pod) -> Violation? {
        var badContainers: [String] = []
        var types: [String] = []
        for c in pod.containers {
            if let t = c.securityContext?["procMount"]?.string, !same(t, "Default") {
                badContainers.append(c.name)
                types.append(t)
            }
        }
        guard !badContainers.isEmpty else { return nil }
        return Violation(
            reason: "procMount",
            detail: containers(badContainers) + " must not set securityContext.procMount to " + joinQuote(goSortedSet(types)))
    }

    static let seLinuxAllowedTypes = ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"]

    /// check_seLinuxOptions.go (seLinuxOptions1_31).
    static func seLinuxOptions(_ pod: Pod) -> Violation? {
        var badTypes: [String] = []
        var setUser = false
        var setRole = false
        func valid(_ opts: JSONValue) -> Bool {
            var ok = true
            let t = opts["type"]?.string ?? ""
            if !isOneOf(t, seLinuxAllowedTypes) {
                ok = false
                badTypes.append(t)
            }
            if !(opts["user"]?.string ?? "").isEmpty {
                ok = false
                setUser = true
            }
            if !(opts["role"]?.string ?? "").isEmpty {
                ok = false
                setRole = true
            }
            return ok
        }

        var badSetters: [String] = []
        if let opts = present(pod.securityContext?["seLinuxOptions"]), !valid(opts) {
            badSetters.append("pod")
        }
        var badContainers: [String] = []
        for c in pod.containers {
            if let opts = present(c.securityContext?["seLinuxOptions"]), !valid(opts) {
                badContainers.append(c.name)
            }
        }
        if !badContainers.isEmpty { badSetters.append(containers(badContainers)) }
        guard !badSetters.isEmpty else { return nil }

        var badData: [String] = []
        let types = goSortedSet(badTypes)
        if !types.isEmpty { badData.append(pluralize("type", "types", types.count) + " " + joinQuote(types)) }
        if setUser { badData.append("user may not be set") }
        if setRole { badData.append("role may not be set") }
        return Violation(
            reason: "seLinuxOptions",
            detail: badSetters.joined(separator: " and ") + " set forbidden securityContext.seLinuxOptions: " + badData.joined(separator: "; "))
    }

    static func validSeccomp(_ t: String) -> Bool { same(t, "Localhost") || same(t, "RuntimeDefault") }

    /// check_seccompProfile_baseline.go (seccompProfileBaseline_1_19: the fields, not the alpha
    /// annotations); restricted overrides it.
    static func seccompProfileBaseline(_ pod: Pod) -> Violation? {
        var badSetters: [String] = []
        var badValues: [String] = []
        if let profile = present(pod.securityContext?["seccompProfile"]) {
            let t = profile["type"]?.string ?? ""
            if !validSeccomp(t) {
                badSetters.append("pod")
                badValues.append(t)
            }
        }
        var badContainers: [String] = []
        for c in pod.containers {
            if let profile = present(c.securityContext?["seccompProfile"]) {
                let t = profile["type"]?.string ?? ""
                if !validSeccomp(t) {
                    badContainers.append(c.name)
                    badValues.append(t)
                }
            }
        }
        if !badContainers.isEmpty { badSetters.append(containers(badContainers)) }
        guard !badSetters.isEmpty else { return nil }
        return Violation(
            reason: "seccompProfile",
            detail: badSetters.joined(separator: " and ") + " must not set securityContext.seccompProfile.type to " + joinQuote(goSortedSet(badValues)))
    }

    static let safeSysctls = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    ]

    /// check_sysctls.go (sysctlsV1Dot32). Names are compared as written (`net/ipv4/…` is not allowed).
    static func sysctls(_ pod: Pod) -> Violation? {
        var forbidden: [String] = []
        for s in pod.securityContext?["sysctls"]?.array ?? [] {
            let name = s["name"]?.string ?? ""
            if !isOneOf(name, safeSysctls) { forbidden.append(name) }
        }
        guard !forbidden.isEmpty else { return nil }
        return Violation(reason: "forbidden sysctls", detail: forbidden.joined(separator: ", "))
    }

    /// check_windowsHostProcess.go (windowsHostProcess_1_0).
    static func windowsHostProcess(_ pod: Pod) -> Violation? {
        let bad = pod.containers.filter { $0.securityContext?[path: ["windowsOptions", "hostProcess"]]?.bool == true }.map(\.name)
        var setters: [String] = []
        if pod.securityContext?[path: ["windowsOptions", "hostProcess"]]?.bool == true { setters.append("pod") }
        if !bad.isEmpty { setters.append(containers(bad)) }
        guard !setters.isEmpty else { return nil }
        return Violation(
            reason: "hostProcess",
            detail: setters.joined(separator: " and ") + " must not set securityContext.windowsOptions.hostProcess=true")
    }

    // MARK: restricted checks

    /// check_allowPrivilegeEscalation.go (allowPrivilegeEscalation_1_25: Windows pods are exempt).
    static func allowPrivilegeEscalation(_ pod: Pod) -> Violation? {
        if pod.isWindows { return nil }
        let bad = pod.containers.filter { $0.securityContext?["allowPrivilegeEscalation"]?.bool != false }.map(\.name)
        guard !bad.isEmpty else { return nil }
        return Violation(
            reason: "allowPrivilegeEscalation != false",
            detail: containers(bad) + " must set securityContext.allowPrivilegeEscalation=false")
    }

    /// check_capabilities_restricted.go (capabilitiesRestricted_1_25: Windows pods are exempt).
    static func capabilitiesRestricted(_ pod: Pod) -> Violation? {
        if pod.isWindows { return nil }
        var missingDropAll: [String] = []
        var addingForbidden: [String] = []
        var forbidden: [String] = []
        for c in pod.containers {
            guard let caps = present(c.securityContext?["capabilities"]) else {
                missingDropAll.append(c.name)
                continue
            }
            if !strings(caps["drop"]).contains(where: { same($0, "ALL") }) {
                missingDropAll.append(c.name)
            }
            var added = false
            for cap in strings(caps["add"]) where !same(cap, "NET_BIND_SERVICE") {
                added = true
                forbidden.append(cap)
            }
            if added { addingForbidden.append(c.name) }
        }
        var details: [String] = []
        if !missingDropAll.isEmpty {
            details.append(containers(missingDropAll) + " must set securityContext.capabilities.drop=[\"ALL\"]")
        }
        if !addingForbidden.isEmpty {
            details.append(containers(addingForbidden) + " must not include " + joinQuote(goSortedSet(forbidden)) + " in securityContext.capabilities.add")
        }
        guard !details.isEmpty else { return nil }
        return Violation(reason: "unrestricted capabilities", detail: details.joined(separator: "; "))
    }

    static let allowedVolumeSources = [
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret",
    ]
    /// In upstream's order: a volume naming several is reported by the first.
    static let restrictedVolumeSources = [
        "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd",
        "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
        "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos",
    ]

    /// check_restrictedVolumes.go (restrictedVolumes_1_0); overrides hostPathVolumes.
    static func restrictedVolumes(_ pod: Pod) -> Violation? {
        var badVolumes: [String] = []
        var badTypes: [String] = []
        for v in pod.volumes {
            if allowedVolumeSources.contains(where: { present(v[$0]) != nil }) { continue }
            badVolumes.append(v["name"]?.string ?? "")
            badTypes.append(restrictedVolumeSources.first(where: { present(v[$0]) != nil }) ?? "unknown")
        }
        guard !badVolumes.isEmpty else { return nil }
        let types = goSortedSet(badTypes)
        return Violation(
            reason: "restricted volume types",
            detail: pluralize("volume", "volumes", badVolumes.count) + " " + joinQuote(badVolumes) + " "
                + pluralize("uses", "use", badVolumes.count) + " "
                + pluralize("restricted volume type", "restricted volume types", types.count) + " " + joinQuote(types))
    }

    /// check_runAsNonRoot.go (runAsNonRoot_1_0). Upstream relaxes it for `hostUsers: false` only
    /// when opted in (RelaxPolicyForUserNamespacePods, off by default).
    static func runAsNonRoot(_ pod: Pod) -> Violation? {
        var badSetters: [String] = []
        var podRunAsNonRoot = false
        if let v = pod.securityContext?["runAsNonRoot"]?.bool {
            if v { podRunAsNonRoot = true } else { badSetters.append("pod") }
        }
        var explicitlyBad: [String] = []
        var implicitlyBad: [String] = []
        for c in pod.containers {
            if let v = c.securityContext?["runAsNonRoot"]?.bool {
                if !v { explicitlyBad.append(c.name) }
            } else if !podRunAsNonRoot {
                implicitlyBad.append(c.name)
            }
        }
        if !explicitlyBad.isEmpty { badSetters.append(containers(explicitlyBad)) }
        if !badSetters.isEmpty {
            return Violation(
                reason: "runAsNonRoot != true",
                detail: badSetters.joined(separator: " and ") + " must not set securityContext.runAsNonRoot=false")
        }
        if !implicitlyBad.isEmpty {
            return Violation(
                reason: "runAsNonRoot != true",
                detail: "pod or " + containers(implicitlyBad) + " must set securityContext.runAsNonRoot=true")
        }
        return nil
    }

    /// check_runAsUser.go (runAsUser_1_23).
    static func runAsUser(_ pod: Pod) -> Violation? {
        var badSetters: [String] = []
        if pod.securityContext?["runAsUser"]?.int == 0 { badSetters.append("pod") }
        let bad = pod.containers.filter { $0.securityContext?["runAsUser"]?.int == 0 }.map(\.name)
        if !bad.isEmpty { badSetters.append(containers(bad)) }
        guard !badSetters.isEmpty else { return nil }
        return Violation(reason: "runAsUser=0", detail: badSetters.joined(separator: " and ") + " must not set runAsUser=0")
    }

    /// check_seccompProfile_restricted.go (seccompProfileRestricted_1_25: Windows pods are
    /// exempt); overrides seccompProfile_baseline.
    static func seccompProfileRestricted(_ pod: Pod) -> Violation? {
        if pod.isWindows { return nil }
        var badSetters: [String] = []
        var badValues: [String] = []
        var podSeccompSet = false
        if let profile = present(pod.securityContext?["seccompProfile"]) {
            let t = profile["type"]?.string ?? ""
            if !validSeccomp(t) {
                badSetters.append("pod")
                badValues.append(t)
            } else {
                podSeccompSet = true
            }
        }
        var explicitlyBad: [String] = []
        var implicitlyBad: [String] = []
        for c in pod.containers {
            if let profile = present(c.securityContext?["seccompProfile"]) {
                let t = profile["type"]?.string ?? ""
                if !validSeccomp(t) {
                    explicitlyBad.append(c.name)
                    badValues.append(t)
                }
            } else if !podSeccompSet {
                implicitlyBad.append(c.name)
            }
        }
        if !explicitlyBad.isEmpty { badSetters.append(containers(explicitlyBad)) }
        if !badSetters.isEmpty {
            return Violation(
                reason: "seccompProfile",
                detail: badSetters.joined(separator: " and ") + " must not set securityContext.seccompProfile.type to " + joinQuote(goSortedSet(badValues)))
        }
        if !implicitlyBad.isEmpty {
            return Violation(
                reason: "seccompProfile",
                detail: "pod or " + containers(implicitlyBad) + " must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"")
        }
        return nil
    }

    // MARK: helpers (policy/helpers.go, and Go's string semantics)

    /// A field as a Go pointer sees it: absent or `null` is nil.
    static func present(_ v: JSONValue?) -> JSONValue? {
        guard let v else { return nil }
        if case .null = v { return nil }
        return v
    }

    /// A list of strings (`null` items read as empty strings, as Go decodes them).
    static func strings(_ v: JSONValue?) -> [String] {
        (v?.array ?? []).map { $0.string ?? "" }
    }

    /// `"a", "b"`, or nothing for no items.
    static func joinQuote(_ items: [String]) -> String {
        items.isEmpty ? "" : "\"" + items.joined(separator: "\", \"") + "\""
    }

    static func pluralize(_ singular: String, _ plural: String, _ count: Int) -> String {
        count == 1 ? singular : plural
    }

    /// `container "a"` or `containers "a", "b"`.
    static func containers(_ names: [String]) -> String {
        pluralize("container", "containers", names.count) + " " + joinQuote(names)
    }

    /// Byte equality, as Go's `==` on strings.
    static func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

    static func isOneOf(_ s: String, _ list: [String]) -> Bool { list.contains(where: { same($0, s) }) }

    static func hasPrefix(_ s: String, _ prefix: String) -> Bool { s.utf8.starts(with: prefix.utf8) }

    /// Sorted by bytes, as Go's `sort.Strings`.
    static func goSorted(_ items: [String]) -> [String] {
        items.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) })
    }

    /// Deduplicated and sorted by bytes, as a `sets.String`'s `List()`.
    static func goSortedSet(_ items: [String]) -> [String] {
        var out: [String] = []
        for s in goSorted(items) {
            if let last = out.last, same(last, s) { continue }
            out.append(s)
        }
        return out
    }

    /// Go's `%q` (`strconv.Quote`): printable characters as they are, `"` and `\` escaped, the
    /// rest as `\n`, `\x07`-style, `\u00a0` or `\U0001f600` escapes.
    static func goQuote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            if u == "\"" {
                out += "\\\""
            } else if u == "\\" {
                out += "\\\\"
            } else if isGoPrint(u) {
                out.unicodeScalars.append(u)
            } else {
                switch u.value {
                case 0x07: out += "\\a"
                case 0x08: out += "\\b"
                case 0x0C: out += "\\f"
                case 0x0A: out += "\\n"
                case 0x0D: out += "\\r"
                case 0x09: out += "\\t"
                case 0x0B: out += "\\v"
                case 0..<0x20, 0x7F: out += "\\x" + hex(u.value, width: 2)
                case 0..<0x10000: out += "\\u" + hex(u.value, width: 4)
                default: out += "\\U" + hex(u.value, width: 8)
                }
            }
        }
        return out + "\""
    }

    /// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
    static func isGoPrint(_ u: Unicode.Scalar) -> Bool {
        if u.value < 0x80 { return u.value >= 0x20 && u.value < 0x7F }
        switch u.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark,
             .decimalNumber, .letterNumber, .otherNumber,
             .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation,
             .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            return true
        default:
            return false
        }
    }

    static func hex(_ v: UInt32, width: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
}
