import APIAccess
import ClusterPKI
import Foundation
import KubeAPI

/// certificates.k8s.io/v1 CertificateSigningRequests: the request (a PKCS #10 request, base64
/// PEM), who asked (filled from the requester at create, whatever the client sent), and the
/// status written through two subresources as upstream's: `/approval` (the Approved and Denied
/// conditions, by an approver) and `/status` (the certificate and other conditions, by a signer).
/// The spec never changes after create.
struct CertificateSigningRequestStrategy: ResourceStrategy {
    /// The usages the API knows (upstream's `KeyUsage` values).
    static let usages = ["any", "cert sign", "client auth", "code signing", "content commitment", "crl sign", "data encipherment",
                         "decipher only", "digital signature", "email protection", "encipher only", "ipsec end system", "ipsec tunnel",
                         "ipsec user", "key agreement", "key encipherment", "microsoft sgc", "netscape sgc", "ocsp signing", "s/mime",
                         "server auth", "signing", "timestamping"]
    static let approvalTypes: Set<String> = ["Approved", "Denied"]

    func validate(_ o: JSONValue, _ r: ResourceInfo) throws -> [FieldError] {
        var errs: [FieldError] = []
        let spec = o["spec"] ?? [:]
        if let b64 = spec["request"]?.string, !b64.isEmpty {
            if Self.request(o) == nil {
                errs.append(FieldError("spec.request", "Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST"))
            }
        } else {
            errs.append(FieldError("spec.request", "Required value"))
        }
        let signer = spec["signerName"]?.string ?? ""
        if signer.isEmpty {
            errs.append(FieldError("spec.signerName", "Required value"))
        } else if let why = Self.signerNameProblem(signer) {
            errs.append(FieldError("spec.signerName", "Invalid value: \"\(signer)\": \(why)"))
        }
        let usages = spec["usages"]?.array?.compactMap(\.string) ?? []
        if usages.isEmpty { errs.append(FieldError("spec.usages", "Required value")) }
        var seen = Set<String>()
        for (i, u) in usages.enumerated() {
            if !Self.usages.contains(u) {
                errs.append(FieldError("spec.usages[\(i)]", "Unsupported value: \"\(u)\": supported values: \(Self.usages.map { "\"\($0)\"" }.joined(separator: ", "))"))
            } else if !seen.insert(u).inserted {
                errs.append(FieldError("spec.usages[\(i)]", "Duplicate value: \"\(u)\""))
            }
        }
        if let e = spec["expirationSeconds"]?.int, e < 600 {
            errs.append(FieldError("spec.expirationSeconds", "Invalid value: \(e): may not specify a duration less than 600 seconds (10 minutes)"))
        }
        let conditions = o[path: ["status", "conditions"]]?.array ?? []
        var types = Set<String>()
        for (i, c) in conditions.enumerated() {
            let type = c["type"]?.string ?? ""
            if type.isEmpty { errs.append(FieldError("status.conditions[\(i)].type", "Required value")); continue }
            if ["Approved", "Denied", "Failed"].contains(type) {
                if c["status"]?.string != "True" {
                    errs.append(FieldError("status.conditions[\(i)].status", "Unsupported value: \"\(c["status"]?.string ?? "")\": supported values: \"True\""))
                }
                if !types.insert(type).inserted { errs.append(FieldError("status.conditions[\(i)].type", "Duplicate value: \"\(type)\"")) }
            }
        }
        if types.isSuperset(of: Self.approvalTypes), let i = conditions.lastIndex(where: { Self.approvalTypes.contains($0["type"]?.string ?? "") }) {
            errs.append(FieldError("status.conditions[\(i)].type", "Invalid value: \"\(conditions[i]["type"]?.string ?? "")\": Approved and Denied conditions are mutually exclusive"))
        }
        if let cert = o[path: ["status", "certificate"]]?.string, !cert.isEmpty,
           !(Data(base64Encoded: cert).map { ClusterPKI.isCertificateBundle(String(decoding: $0, as: UTF8.self)) } ?? false) {
            errs.append(FieldError("status.certificate", "Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block"))
        }
        return errs
    }

    /// The request the object carries, read (nil when it is not one).
    static func request(_ o: JSONValue) -> CertificateRequest? {
        guard let b64 = o[path: ["spec", "request"]]?.string, let d = Data(base64Encoded: b64) else { return nil }
        return try? CertificateRequest(pem: String(decoding: d, as: UTF8.self))
    }

    /// What is wrong with a signer name (`domain/path`), as upstream says it; nil when nothing.
    static func signerNameProblem(_ s: String) -> String? {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            return "must be a fully qualified domain and path of the form 'example.com/signer-name'"
        }
        if !KubeAPI.Validation.isDNS1123Subdomain(parts[0]) { return "validating label \"\(parts[0])\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character" }
        if !parts[0].contains(".") { return "should be a domain with at least two segments separated by dots" }
        if !KubeAPI.Validation.isDNS1123Subdomain(parts[1]) { return "validating label \"\(parts[1])\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character" }
        return nil
    }

    var columns: [Tables.Column] {
        [Tables.nameColumn, Tables.ageColumn,
         Tables.Column(name: "SignerName") { Tables.str($0[path: ["spec", "signerName"]]) },
         Tables.Column(name: "Requestor") { Tables.str($0[path: ["spec", "username"]]) },
         Tables.Column(name: "RequestedDuration") { o in
             .string(o[path: ["spec", "expirationSeconds"]]?.int.map { Tables.human(Double($0)) } ?? "<none>")
         },
         Tables.Column(name: "Condition") { .string(Self.condition($0)) }]
    }

    /// kubectl's CONDITION column: Denied, Approved or Pending, then `,Failed` and `,Issued`.
    static func condition(_ o: JSONValue) -> String {
        let types = Set((o[path: ["status", "conditions"]]?.array ?? []).compactMap { $0["type"]?.string })
        var s = types.contains("Denied") ? "Denied" : types.contains("Approved") ? "Approved" : "Pending"
        if types.contains("Failed") { s += ",Failed" }
        if let c = o[path: ["status", "certificate"]]?.string, !c.isEmpty { s += ",Issued" }
        return s
    }
}

/// The writes' part for CertificateSigningRequests: the strategies' preparation, the update
/// rules, and the admission plugins CertificateApproval, CertificateSigning and
/// CertificateSubjectRestriction.
extension APIHandler {
    static func isCertificateRequests(_ r: ResourceInfo) -> Bool { r.group == "certificates.k8s.io" && r.resource == "certificatesigningrequests" }

    /// What a write through `subresource` may change of `old`, from `new` (as sent) into `o`
    /// (as prepared by the generic write): never the spec; the approval conditions only through
    /// `/approval`, the certificate and other conditions only through `/status`. Conditions get
    /// their times.
    static func prepareCertificateRequest(_ o: inout JSONValue, new: JSONValue, old: JSONValue, subresource: String?, now: String) {
        o["spec"] = old["spec"]
        let approval = CertificateSigningRequestStrategy.approvalTypes
        let oldConditions = old[path: ["status", "conditions"]]?.array ?? []
        switch subresource {
        case "approval":
            var status = old["status"]?.object ?? [:]
            status["conditions"] = new[path: ["status", "conditions"]]
            o["status"] = .object(status)
        case "status":
            let kept = oldConditions.filter { approval.contains($0["type"]?.string ?? "") }
            let rest = (o[path: ["status", "conditions"]]?.array ?? []).filter { !approval.contains($0["type"]?.string ?? "") }
            if !(kept + rest).isEmpty || o[path: ["status", "conditions"]] != nil { o[path: ["status", "conditions"]] = .array(kept + rest) }
        default:
            break
        }
        stampConditions(&o, old: oldConditions, now: now)
    }

    static func stampConditions(_ o: inout JSONValue, old: [JSONValue], now: String) {
        guard var conditions = o[path: ["status", "conditions"]]?.array else { return }
        for i in conditions.indices {
            if conditions[i]["lastUpdateTime"] == nil { conditions[i]["lastUpdateTime"] = .string(now) }
            if conditions[i]["lastTransitionTime"] == nil {
                let same = old.first { $0["type"] == conditions[i]["type"] && $0["status"] == conditions[i]["status"] }
                conditions[i]["lastTransitionTime"] = same?["lastTransitionTime"] ?? .string(now)
            }
        }
        o[path: ["status", "conditions"]] = .array(conditions)
    }

    /// On create: who asked, from the request's user; no status. On update: what may not go.
    /// Then the three admission plugins.
    func admitCertificateRequest(_ o: inout JSONValue, old: JSONValue?, _ r: ResourceInfo, subresource: String?) async throws {
        guard Self.isCertificateRequests(r) else { return }
        let user = AccessControl.currentUser
        let name = o[path: ["metadata", "name"]]?.string ?? ""
        let signer = o[path: ["spec", "signerName"]]?.string ?? ""
        guard let old else {
            if signer == "kubernetes.io/legacy-unknown" {
                throw APIError.invalid(r, name, [FieldError("spec.signerName", "Invalid value: \"\(signer)\": the legacy signerName is not allowed via this API version")])
            }
            o[path: ["spec", "username"]] = .string(user.name)
            o[path: ["spec", "uid"]] = user.uid.isEmpty ? nil : .string(user.uid)
            o[path: ["spec", "groups"]] = user.groups.isEmpty ? nil : .array(user.groups.map { .string($0) })
            o[path: ["spec", "extra"]] = user.extra.isEmpty ? nil : .object(user.extra.mapValues { .array($0.map { .string($0) }) })
            o["status"] = nil
            if admissionPlugins.contains("CertificateSubjectRestriction"), signer == "kubernetes.io/kube-apiserver-client",
               CertificateSigningRequestStrategy.request(o)?.organizations.contains(UserInfo.privilegedGroup) == true {
                throw Self.forbidden(r, name, "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed")
            }
            return
        }
        var errs: [FieldError] = []
        let newConditions = o[path: ["status", "conditions"]]?.array ?? []
        for c in old[path: ["status", "conditions"]]?.array ?? [] {
            let type = c["type"]?.string ?? ""
            if ["Approved", "Denied", "Failed"].contains(type), !newConditions.contains(where: { $0["type"]?.string == type }) {
                errs.append(FieldError("status.conditions", "Forbidden: updates may not remove a condition of type \"\(type)\""))
            }
        }
        if let was = old[path: ["status", "certificate"]]?.string, !was.isEmpty, o[path: ["status", "certificate"]]?.string != was {
            errs.append(FieldError("status.certificate", "Forbidden: updates may not modify existing certificate content"))
        }
        if !errs.isEmpty { throw APIError.invalid(r, name, errs) }
        if subresource == "approval", admissionPlugins.contains("CertificateApproval"), !(await mayActOnSigner(user, verb: "approve", signer)) {
            throw Self.forbidden(r, name, "user not permitted to approve requests with signerName \"\(signer)\"")
        }
        if subresource == "status", admissionPlugins.contains("CertificateSigning"),
           o[path: ["status", "certificate"]] != old[path: ["status", "certificate"]] || o[path: ["status", "conditions"]] != old[path: ["status", "conditions"]],
           !(await mayActOnSigner(user, verb: "sign", signer)) {
            throw Self.forbidden(r, name, "user not permitted to sign requests with signerName \"\(signer)\"")
        }
    }

    /// Whether `user` may `verb` the `signers` named `signer`, or all of its domain (`domain/*`).
    func mayActOnSigner(_ user: UserInfo, verb: String, _ signer: String) async -> Bool {
        let group = "certificates.k8s.io"
        if await access.authorize(.resource(user, verb: verb, group: group, resource: "signers", namespace: "", name: signer)).allowed { return true }
        let domain = signer.split(separator: "/").first.map(String.init) ?? signer
        return await access.authorize(.resource(user, verb: verb, group: group, resource: "signers", namespace: "", name: domain + "/*")).allowed
    }
}
