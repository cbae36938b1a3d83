import Crypto
import Foundation
import SwiftASN1
import X509

/// Certificate signing requests (PKCS #10), as the CertificateSigningRequest API carries them:
/// read and checked here once for the server's validation, the approver and the signer, and
/// made here for a kubelet that asks for its client certificate.
public struct CertificateRequest: Sendable, Equatable {
    public var commonName: String
    public var organizations: [String]
    public var dnsNames: [String]
    public var ipAddresses: [String]
    public var emailAddresses: [String]
    public var uris: [String]
    /// Whether the key is RSA (for which `key encipherment` is an expected usage).
    public var rsaKey: Bool

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The request in `pem` (one `CERTIFICATE REQUEST` block), its own signature checked.
    public init(pem: String) throws {
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: pem) } catch {
            throw Failure("PEM block type must be CERTIFICATE REQUEST")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else { throw Failure("the request's signature does not verify") }
        var cn = "", orgs: [String] = []
        for rdn in csr.subject {
            for a in rdn {
                if a.type == .RDNAttributeType.commonName { cn = "\(a.value)" }
                if a.type == .RDNAttributeType.organizationName { orgs.append("\(a.value)") }
            }
        }
        commonName = cn
        organizations = orgs
        dnsNames = []
        ipAddresses = []
        emailAddresses = []
        uris = []
        if let sans = try csr.attributes.extensionRequest?.extensions.subjectAlternativeNames {
            for n in sans {
                switch n {
                case .dnsName(let d): dnsNames.append(d)
                case .ipAddress(let b): ipAddresses.append(Self.address(Array(b.bytes)))
                case .rfc822Name(let e): emailAddresses.append(e)
                case .uniformResourceIdentifier(let u): uris.append(u)
                default: break
                }
            }
        }
        rsaKey = "\(csr.publicKey)".contains("RSA")
    }

    static func address(_ b: [UInt8]) -> String {
        if b.count == 4 { return b.map(String.init).joined(separator: ".") }
        var a = in6_addr()
        withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: b.prefix(16)) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        return inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count)) != nil ? String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    }

    /// A new ECDSA P-256 key and a request for `commonName` in `organizations`, both PEM (what
    /// a kubelet sends for `kubernetes.io/kube-apiserver-client-kubelet`).
    public static func make(commonName: String, organizations: [String], dnsNames: [String] = [], ipAddresses: [String] = []) throws -> (request: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            for o in organizations { OrganizationName(o) }
            CommonName(commonName)
        }
        var sans: [GeneralName] = dnsNames.map { .dnsName($0) }
        for a in ipAddresses { if let b = ClusterPKI.ipBytes(a) { sans.append(.ipAddress(ASN1OctetString(contentBytes: b[...]))) } }
        var attributes = CertificateSigningRequest.Attributes()
        if !sans.isEmpty {
            attributes.insert(try .init(ExtensionRequest(extensions: try Certificate.Extensions { SubjectAlternativeNames(sans) })))
        }
        let csr = try CertificateSigningRequest(version: .v1, subject: subject, privateKey: .init(key), attributes: attributes,
                                                signatureAlgorithm: .ecdsaWithSHA256)
        return (try csr.serializeAsPEM().pemString, key.pemRepresentation)
    }
}

extension ClusterPKI {
    /// A CA from given files (kube-controller-manager's `--cluster-signing-cert-file` and
    /// `--cluster-signing-key-file`).
    public static func signer(certFile: String, keyFile: String) throws -> ClusterPKI {
        guard let c = read(certFile) else { throw Failure("\(certFile): cannot read it") }
        guard let k = read(keyFile) else { throw Failure("\(keyFile): cannot read it") }
        do {
            let certificate = try Certificate(pemEncoded: c)
            let key = try P256.Signing.PrivateKey(pemRepresentation: k)
            guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else { throw Failure("\(certFile) and \(keyFile) are not a pair") }
        } catch let e as Failure { throw e } catch {
            throw Failure("\(certFile), \(keyFile): not a PEM certificate and ECDSA P-256 key (\(error))")
        }
        return ClusterPKI(dir: (certFile as NSString).deletingLastPathComponent, caPEM: c, caKeyPEM: k)
    }

    /// The certificate for an approved request: its subject and alternative names, the key
    /// and extended usages `usages` names (the API's words: `client auth`, `server auth`,
    /// `digital signature`, …), valid from five minutes ago (clocks differ, as upstream's signer
    /// backdates) for `duration`, never past the CA's own end. PEM.
    public func sign(request pem: String, usages: [String], duration: TimeInterval, now: Date = Date()) throws -> String {
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: pem) } catch { throw Failure("PEM block type must be CERTIFICATE REQUEST") }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else { throw Failure("the request's signature does not verify") }
        let ca = try caCertificate
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: caKeyPEM)
        var eku: [ExtendedKeyUsage.Usage] = []
        if usages.contains("client auth") { eku.append(.clientAuth) }
        if usages.contains("server auth") { eku.append(.serverAuth) }
        if usages.contains("code signing") { eku.append(.codeSigning) }
        if usages.contains("email protection") { eku.append(.emailProtection) }
        if usages.contains("timestamping") { eku.append(.timeStamping) }
        if usages.contains("ocsp signing") { eku.append(.ocspSigning) }
        let sans = try csr.attributes.extensionRequest?.extensions.subjectAlternativeNames
        let keyUsage = KeyUsage(digitalSignature: usages.contains("digital signature") || usages.contains("signing"),
                                nonRepudiation: usages.contains("content commitment"), keyEncipherment: usages.contains("key encipherment"),
                                dataEncipherment: usages.contains("data encipherment"), keyAgreement: usages.contains("key agreement"),
                                keyCertSign: false, cRLSign: false,
                                encipherOnly: usages.contains("encipher only"), decipherOnly: usages.contains("decipher only"))
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            // No key usage asked: no extension (an empty one is refused by Go's TLS stack).
            if keyUsage != KeyUsage() { Critical(keyUsage) }
            if !eku.isEmpty { try ExtendedKeyUsage(eku) }
            AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
            if let sans, !sans.isEmpty { SubjectAlternativeNames(sans) }
        }
        let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: csr.publicKey,
                                   notValidBefore: now.addingTimeInterval(-300), notValidAfter: min(now.addingTimeInterval(duration), ca.notValidAfter),
                                   issuer: ca.subject, subject: csr.subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
                                   issuerPrivateKey: .init(caKey))
        return try cert.serializeAsPEM().pemString
    }

    /// The validity of the first certificate in `pem` (nil when it is not one).
    public static func validity(_ pem: String) -> (notBefore: Date, notAfter: Date)? {
        guard let doc = (try? PEMDocument.parseMultiple(pemString: pem))?.first(where: { $0.discriminator == "CERTIFICATE" }),
              let c = try? Certificate(derEncoded: doc.derBytes) else { return nil }
        return (c.notValidBefore, c.notValidAfter)
    }

    /// Whether `pem` holds one or more PEM certificates and nothing else.
    public static func isCertificateBundle(_ pem: String) -> Bool {
        guard let docs = try? PEMDocument.parseMultiple(pemString: pem), !docs.isEmpty else { return false }
        return docs.allSatisfy { $0.discriminator == "CERTIFICATE" && (try? Certificate(derEncoded: $0.derBytes)) != nil }
    }

    /// Who a client certificate (DER) names, as Kubernetes reads it: its subject's common name
    /// the user, its organizations the groups. nil when it does not parse or names no one.
    public static func clientIdentity(der: [UInt8]) -> (name: String, groups: [String])? {
        guard let cert = try? Certificate(derEncoded: der) else { return nil }
        var name = "", groups: [String] = []
        for rdn in cert.subject {
            for attribute in rdn {
                if attribute.type == .RDNAttributeType.commonName { name = "\(attribute.value)" }
                if attribute.type == .RDNAttributeType.organizationName { groups.append("\(attribute.value)") }
            }
        }
        return name.isEmpty ? nil : (name, groups)
    }

    /// kubeadm's `--discovery-token-ca-cert-hash` of the CA certificate in `pem`.
    public static func caCertHash(of pem: String) throws -> String {
        let ca = try Certificate(pemEncoded: pem)
        var s = DER.Serializer()
        try s.serialize(ca.publicKey)
        return "sha256:" + SHA256.hash(data: s.serializedBytes).map { String(format: "%02x", $0) }.joined()
    }
}

/// The detached JWS (RFC 7515 appendix F: `header..signature`, HS256 keyed with a bootstrap
/// token's secret, `kid` its ID) that the bootstrap signer puts beside `cluster-info`'s
/// kubeconfig as `jws-kubeconfig-ID`, and a joining node checks with the token it was given.
public enum BootstrapTokenJWS {
    static func base64URL<D: Sequence>(_ d: D) -> String where D.Element == UInt8 {
        Data(d).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decodeBase64URL(_ s: String) -> Data? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t)
    }

    public static func sign(_ content: String, tokenID: String, tokenSecret: String) -> String {
        let header = base64URL(Array(#"{"alg":"HS256","kid":"\#(tokenID)"}"#.utf8))
        let input = header + "." + base64URL(Array(content.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(tokenSecret.utf8)))
        return header + ".." + base64URL(mac)
    }

    /// Whether `jws` signs `content` with the token: HS256 only, `kid` the token's ID.
    public static func verify(_ jws: String, content: String, tokenID: String, tokenSecret: String) -> Bool {
        let parts = jws.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, parts[1].isEmpty, let h = decodeBase64URL(parts[0]),
              let header = try? JSONSerialization.jsonObject(with: h) as? [String: Any],
              header["alg"] as? String == "HS256", header["kid"] as? String == tokenID,
              let signature = decodeBase64URL(parts[2]) else { return false }
        let input = parts[0] + "." + base64URL(Array(content.utf8))
        return HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data(input.utf8), using: SymmetricKey(data: Data(tokenSecret.utf8)))
    }
}
