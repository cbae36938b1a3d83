import Foundation
import Testing
import ClusterPKI

/// The cluster CA and what it signs, checked by openssl rather than by the code that made them.
@Suite("cluster PKI")
struct ClusterPKITests {
    func tempDir() throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("sy-pki-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @discardableResult
    func openssl(_ args: [String]) throws -> (status: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func mode(_ path: String) throws -> Int? { try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int }

    @Test func theCAIsMadeOnceAndKept() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try ClusterPKI.loadOrCreate(in: dir + "/pki")
        let again = try ClusterPKI.loadOrCreate(in: dir + "/pki")
        #expect(first.caPEM == again.caPEM)
        #expect(try mode(first.caKeyFile) == 0o600)
        #expect(try mode(dir + "/pki") == 0o700)
        let text = try openssl(["x509", "-in", first.caCertFile, "-noout", "-subject", "-ext", "basicConstraints,keyUsage"]).out
        #expect(text.contains("CN = kubernetes") && text.contains("CA:TRUE") && text.contains("Certificate Sign"), "\(text)")
        // kubeadm's hash of the CA's public key.
        let der = try openssl(["x509", "-in", first.caCertFile, "-noout", "-pubkey"]).out
        let pub = dir + "/ca.pub"
        try der.write(toFile: pub, atomically: true, encoding: .utf8)
        let hash = try openssl(["pkey", "-pubin", "-in", pub, "-outform", "DER", "-out", dir + "/ca.pub.der"])
        #expect(hash.status == 0)
        let digest = try openssl(["dgst", "-sha256", "-hex", dir + "/ca.pub.der"]).out
        let ours = try first.caCertHash
        #expect(ours.hasPrefix("sha256:") && digest.contains(String(ours.dropFirst("sha256:".count))), "\(digest) vs \(ours)")
    }

    @Test func aBrokenCAIsRefusedNotReplaced() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try ClusterPKI.loadOrCreate(in: dir + "/a")
        _ = try ClusterPKI.loadOrCreate(in: dir + "/b")
        // b's certificate with a's key: not a pair.
        try FileManager.default.removeItem(atPath: dir + "/b/ca.key")
        try FileManager.default.copyItem(atPath: a.caKeyFile, toPath: dir + "/b/ca.key")
        #expect(throws: ClusterPKI.Failure.self) { try ClusterPKI.loadOrCreate(in: dir + "/b") }
        // One of the two missing: refused, and the other left as it was.
        try FileManager.default.removeItem(atPath: dir + "/b/ca.key")
        let before = try String(contentsOfFile: dir + "/b/ca.crt", encoding: .utf8)
        #expect(throws: ClusterPKI.Failure.self) { try ClusterPKI.loadOrCreate(in: dir + "/b") }
        #expect(try String(contentsOfFile: dir + "/b/ca.crt", encoding: .utf8) == before)
    }

    @Test func theServingCertificateCarriesItsNamesAndIsReissuedForANewOne() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pki = try ClusterPKI.loadOrCreate(in: dir)
        let names = ["kubernetes", "kubernetes.default.svc", "localhost"]
        try pki.servingCertificate(dnsNames: names, addresses: ["127.0.0.1", "10.96.0.1"])
        #expect(try openssl(["verify", "-CAfile", pki.caCertFile, "-purpose", "sslserver", pki.servingCertFile]).out.contains(": OK"))
        let sans = try openssl(["x509", "-in", pki.servingCertFile, "-noout", "-ext", "subjectAltName,extendedKeyUsage"]).out
        #expect(sans.contains("DNS:kubernetes.default.svc") && sans.contains("IP Address:10.96.0.1") && sans.contains("TLS Web Server Authentication"), "\(sans)")
        #expect(try mode(pki.servingKeyFile) == 0o600)
        // The key matches the certificate.
        let certKey = try openssl(["x509", "-in", pki.servingCertFile, "-noout", "-pubkey"]).out
        let keyPub = try openssl(["pkey", "-in", pki.servingKeyFile, "-pubout"]).out
        #expect(certKey == keyPub)
        // The same names: kept. A new address: issued again, with it.
        let first = try String(contentsOfFile: pki.servingCertFile, encoding: .utf8)
        try pki.servingCertificate(dnsNames: names, addresses: ["10.96.0.1"])
        #expect(try String(contentsOfFile: pki.servingCertFile, encoding: .utf8) == first)
        try pki.servingCertificate(dnsNames: names, addresses: ["127.0.0.1", "10.96.0.1", "10.250.0.1"])
        #expect(try String(contentsOfFile: pki.servingCertFile, encoding: .utf8) != first)
        #expect(try openssl(["x509", "-in", pki.servingCertFile, "-noout", "-ext", "subjectAltName"]).out.contains("IP Address:10.250.0.1"))
        // One signed by another CA is replaced by one of this CA's.
        let other = try ClusterPKI.loadOrCreate(in: dir + "/other")
        try other.servingCertificate(dnsNames: names, addresses: ["127.0.0.1"])
        try FileManager.default.removeItem(atPath: pki.servingCertFile)
        try FileManager.default.removeItem(atPath: pki.servingKeyFile)
        try FileManager.default.copyItem(atPath: other.servingCertFile, toPath: pki.servingCertFile)
        try FileManager.default.copyItem(atPath: other.servingKeyFile, toPath: pki.servingKeyFile)
        try pki.servingCertificate(dnsNames: names, addresses: ["127.0.0.1"])
        #expect(try openssl(["verify", "-CAfile", pki.caCertFile, pki.servingCertFile]).out.contains(": OK"))
    }

    @Test func clientCertificatesNameTheUserAndGroups() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pki = try ClusterPKI.loadOrCreate(in: dir)
        let admin = try pki.clientCertificate(name: "admin", commonName: "kubernetes-admin", organizations: ["system:masters"])
        #expect(try openssl(["verify", "-CAfile", pki.caCertFile, "-purpose", "sslclient", dir + "/admin.crt"]).out.contains(": OK"))
        let subject = try openssl(["x509", "-in", dir + "/admin.crt", "-noout", "-subject", "-nameopt", "RFC2253"]).out
        #expect(subject.contains("CN=kubernetes-admin,O=system:masters"), "\(subject)")
        #expect(try openssl(["verify", "-CAfile", pki.caCertFile, "-purpose", "sslserver", dir + "/admin.crt"]).status != 0)
        // Kept while valid for the same subject; a new subject gets a new one.
        #expect(try pki.clientCertificate(name: "admin", commonName: "kubernetes-admin", organizations: ["system:masters"]) == admin)
        let other = try pki.clientCertificate(name: "admin", commonName: "kubernetes-admin", organizations: ["a", "b"])
        #expect(other != admin)
        let two = try openssl(["x509", "-in", dir + "/admin.crt", "-noout", "-subject", "-nameopt", "RFC2253"]).out
        #expect(two.contains("O=b") && two.contains("O=a"), "\(two)")
        #expect(throws: ClusterPKI.Failure.self) { try pki.clientCertificate(name: "../x", commonName: "x") }
        #expect(throws: ClusterPKI.Failure.self) { try pki.clientCertificate(name: "ca", commonName: "x") }
    }
}
