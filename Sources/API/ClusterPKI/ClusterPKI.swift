import Crypto
import Foundation
import SwiftASN1
import X509

/// The cluster's certificate authority and what it signs, kept in a directory as kubeadm keeps
/// `/etc/kubernetes/pki`: `ca.crt` and `ca.key` (made on first use, ten years), the API server's
/// serving pair `apiserver.crt` and `apiserver.key` (re-issued when a name it must carry is
/// missing or it nears its end), and client pairs `NAME.crt` and `NAME.key` for the users and
/// components that authenticate with a certificate. Keys are ECDSA P-256, readable by their owner
/// only; every file is written whole (a temporary file renamed).
public struct ClusterPKI: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public let dir: String
    /// The CA's certificate, PEM: what clients trust and what client certificates chain to.
    public let caPEM: String
    /// The CA's key, PEM (kept as text: swift-crypto's key types are not Sendable).
    let caKeyPEM: String

    public var caCertFile: String { dir + "/ca.crt" }
    public var caKeyFile: String { dir + "/ca.key" }
    public var servingCertFile: String { dir + "/apiserver.crt" }
    public var servingKeyFile: String { dir + "/apiserver.key" }

    /// The CA in `dir`, made there when it is not.
    public static func loadOrCreate(in dir: String, now: Date = Date()) throws -> ClusterPKI {
        try makeDirectory(dir)
        let cert = dir + "/ca.crt", key = dir + "/ca.key"
        if let c = Self.read(cert), let k = Self.read(key) {
            do {
                let certificate = try Certificate(pemEncoded: c)
                let privateKey = try P256.Signing.PrivateKey(pemRepresentation: k)
                guard certificate.publicKey == Certificate.PublicKey(privateKey.publicKey) else {
                    throw Failure("\(cert) and \(key) are not a pair")
                }
            } catch let e as Failure { throw e } catch {
                throw Failure("\(cert), \(key): not a PEM certificate and ECDSA P-256 key (\(error))")
            }
            return ClusterPKI(dir: dir, caPEM: c, caKeyPEM: k)
        }
        if Self.read(cert) != nil || Self.read(key) != nil {
            throw Failure("\(dir): one of ca.crt and ca.key is missing; remove the other to make a new CA")
        }
        let privateKey = P256.Signing.PrivateKey()
        // kubeadm's CA is named "kubernetes".
        let name = try DistinguishedName { CommonName("kubernetes") }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true, keyCertSign: true))
            SubjectKeyIdentifier(hash: Certificate.PublicKey(privateKey.publicKey))
        }
        let ca = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(privateKey.publicKey),
                                 notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
                                 issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
                                 issuerPrivateKey: .init(privateKey))
        let pem = try ca.serializeAsPEM().pemString
        // The key first: a certificate without its key would stop the next start.
        try Self.write(privateKey.pemRepresentation, to: key, mode: 0o600)
        try Self.write(pem, to: cert, mode: 0o644)
        return ClusterPKI(dir: dir, caPEM: pem, caKeyPEM: privateKey.pemRepresentation)
    }

    var caCertificate: Certificate { get throws { try Certificate(pemEncoded: caPEM) } }

    /// Whether `pem` is a certificate this CA signed that is valid for 30 days more.
    public func signed(_ pem: String, now: Date = Date()) -> Certificate? {
        guard let ca = try? caCertificate, let c = try? Certificate(pemEncoded: pem), c.issuer == ca.subject,
              ca.publicKey.isValidSignature(c.signature, for: c),
              c.notValidAfter > now.addingTimeInterval(30 * 86400), c.notValidBefore <= now.addingTimeInterval(300) else { return nil }
        return c
    }

    /// The serving pair's files, issued (again) when they are missing, not this CA's, near their
    /// end, or without one of `dnsNames` and `addresses` among their subject alternative names.
    @discardableResult
    public func servingCertificate(dnsNames: [String], addresses: [String], now: Date = Date()) throws -> (cert: String, key: String) {
        let wantDNS = Set(dnsNames), wantIPs = Set(addresses.compactMap(Self.ipBytes))
        if let c = Self.read(servingCertFile).flatMap({ signed($0, now: now) }), let k = Self.read(servingKeyFile),
           let key = try? P256.Signing.PrivateKey(pemRepresentation: k), c.publicKey == Certificate.PublicKey(key.publicKey),
           let sans = try? c.extensions.subjectAlternativeNames {
            var dns = Set<String>(), ips = Set<[UInt8]>()
            for n in sans {
                switch n {
                case .dnsName(let d): dns.insert(d)
                case .ipAddress(let b): ips.insert(Array(b.bytes))
                default: break
                }
            }
            if wantDNS.isSubset(of: dns) && wantIPs.isSubset(of: ips) { return (servingCertFile, servingKeyFile) }
        }
        var sans: [GeneralName] = dnsNames.map { .dnsName($0) }
        var seen = Set<[UInt8]>()
        for a in addresses { if let b = Self.ipBytes(a), seen.insert(b).inserted { sans.append(.ipAddress(ASN1OctetString(contentBytes: b[...]))) } }
        let (cert, key) = try issue(subject: DistinguishedName { CommonName("kube-apiserver") }, usage: .serverAuth, sans: sans,
                                    validity: 365 * 86400, now: now)
        try Self.write(key, to: servingKeyFile, mode: 0o600)
        try Self.write(cert, to: servingCertFile, mode: 0o644)
        return (servingCertFile, servingKeyFile)
    }

    /// A client pair for `commonName` in `organizations` (the user and its groups to the API
    /// server), `NAME.crt` and `NAME.key` in the directory; kept while it is valid for the same
    /// subject, issued again otherwise. Returns the PEMs.
    @discardableResult
    public func clientCertificate(name: String, commonName: String, organizations: [String] = [], now: Date = Date()) throws -> (cert: String, key: String) {
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix("."), name != "ca", name != "apiserver" else {
            throw Failure("\(name): not a name for a client certificate's files")
        }
        let subject = try DistinguishedName {
            for o in organizations { OrganizationName(o) }
            CommonName(commonName)
        }
        let certFile = "\(dir)/\(name).crt", keyFile = "\(dir)/\(name).key"
        if let c = Self.read(certFile), let k = Self.read(keyFile), let cert = signed(c, now: now), cert.subject == subject,
           let key = try? P256.Signing.PrivateKey(pemRepresentation: k), cert.publicKey == Certificate.PublicKey(key.publicKey) {
            return (c, k)
        }
        let (cert, key) = try issue(subject: subject, usage: .clientAuth, sans: [], validity: 365 * 86400, now: now)
        try Self.write(key, to: keyFile, mode: 0o600)
        try Self.write(cert, to: certFile, mode: 0o644)
        return (cert, key)
    }

    /// A new key and a certificate for it signed by the CA.
    func issue(subject: DistinguishedName, usage: ExtendedKeyUsage.Usage, sans: [GeneralName], validity: TimeInterval, now: Date) throws -> (cert: String, key: String) {
        let ca = try caCertificate
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: caKeyPEM)
        let key = P256.Signing.PrivateKey()
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
            try ExtendedKeyUsage([usage])
            AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
            if !sans.isEmpty { SubjectAlternativeNames(sans) }
        }
        let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                                   notValidBefore: now.addingTimeInterval(-300), notValidAfter: min(now.addingTimeInterval(validity), ca.notValidAfter),
                                   issuer: ca.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
                                   issuerPrivateKey: .init(caKey))
        return (try cert.serializeAsPEM().pemString, key.pemRepresentation)
    }

    /// kubeadm's `--discovery-token-ca-cert-hash`: sha256 of the CA's SubjectPublicKeyInfo.
    public var caCertHash: String { get throws { try Self.caCertHash(of: caPEM) } }

    static func ipBytes(_ s: String) -> [UInt8]? {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func read(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }

    static func makeDirectory(_ dir: String) throws {
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            throw Failure("\(dir): cannot create it: \(error.localizedDescription)")
        }
    }

    static func write(_ text: String, to path: String, mode: Int) throws {
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8), attributes: [.posixPermissions: mode]),
              rename(tmp, path) == 0 else {
            unlink(tmp)
            throw Failure("writing \(path): \(String(cString: strerror(errno)))")
        }
    }
}
