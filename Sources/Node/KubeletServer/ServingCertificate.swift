import Crypto
import Foundation
import Kubelet
import NIOSSL
import SwiftASN1
import X509

/// The kubelet's serving certificate: the files given (`--tls-cert-file`, `--tls-private-key-file`),
/// or, as upstream does without them, a self-signed pair made once in the certificate directory
/// (`kubelet.crt`, `kubelet.key`) for the node's name and addresses, kept across restarts.
public enum ServingCertificate {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The certificate and key files to serve with, made first when needed.
    public static func files(certFile: String, keyFile: String, certDir: String, hostname: String,
                             addresses: [String]) throws -> (cert: String, key: String) {
        if !certFile.isEmpty || !keyFile.isEmpty {
            guard !certFile.isEmpty, !keyFile.isEmpty else {
                throw Failure(description: "--tls-cert-file and --tls-private-key-file go together")
            }
            return (certFile, keyFile)
        }
        let cert = certDir + "/kubelet.crt", key = certDir + "/kubelet.key"
        if FileManager.default.fileExists(atPath: cert), FileManager.default.fileExists(atPath: key) { return (cert, key) }
        try FileManager.default.createDirectory(atPath: certDir, withIntermediateDirectories: true)
        let (certPEM, keyPEM) = try selfSigned(hostname: hostname, addresses: addresses)
        // The key first, readable by its owner only; the certificate names it once both exist.
        guard FileManager.default.createFile(atPath: key + ".tmp", contents: Data(keyPEM.utf8), attributes: [.posixPermissions: 0o600]),
              FileManager.default.createFile(atPath: cert + ".tmp", contents: Data(certPEM.utf8), attributes: [.posixPermissions: 0o644]),
              rename(key + ".tmp", key) == 0, rename(cert + ".tmp", cert) == 0 else {
            throw Failure(description: "writing the kubelet's serving certificate in \(certDir): \(String(cString: strerror(errno)))")
        }
        return (cert, key)
    }

    /// A self-signed serving certificate (ECDSA P-256, a year, CN `<hostname>@<unix time>` as
    /// upstream names it) and its key, PEM.
    public static func selfSigned(hostname: String, addresses: [String], now: Date = Date()) throws -> (cert: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("\(hostname)@\(Int(now.timeIntervalSince1970))") }
        var sans: [GeneralName] = [.dnsName(hostname)]
        for a in addresses { if let bytes = ipBytes(a) { sans.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...]))) } }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true, keyCertSign: true))
            try ExtendedKeyUsage([.serverAuth])
            SubjectAlternativeNames(sans)
        }
        let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                                   notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(365 * 86400),
                                   issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
                                   issuerPrivateKey: .init(key))
        return (try cert.serializeAsPEM().pemString, key.pemRepresentation)
    }

    static func ipBytes(_ s: String) -> [UInt8]? {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// The server's TLS settings for the pair; with a client CA file, a client may present a
    /// certificate, which must then chain to it.
    public static func tlsConfiguration(cert: String, key: String, clientCAFile: String = "") throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        c.minimumTLSVersion = .tlsv12
        if !clientCAFile.isEmpty {
            let roots: [NIOSSLCertificate]
            do { roots = try NIOSSLCertificate.fromPEMFile(clientCAFile) } catch { throw KubeletAPIError(0, "--client-ca-file \(clientCAFile): \(error)") }
            guard !roots.isEmpty else { throw KubeletAPIError(0, "--client-ca-file \(clientCAFile): no certificate in it") }
            c.certificateVerification = .optionalVerification
            c.trustRoots = .certificates(roots)
        }
        return c
    }
}
