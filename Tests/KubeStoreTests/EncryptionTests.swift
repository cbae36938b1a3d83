import Foundation
@testable import KubeStore
import Testing

/// Encryption at rest as kube-apiserver stores it: the configured prefixes' values go to the
/// store under them sealed (`k8s:enc:aesgcm:v1:KEY:` or `k8s:enc:aescbc:v1:KEY:`), come back in
/// clear through every read (get, list, watch, the value a delete returns), and a key rotated
/// behind a new one still reads what it wrote.
@Suite struct EncryptionTests {
    static let secretsPrefix = "/registry/core/secrets/"
    static func config(_ providers: [[String: Any]]) throws -> [(prefixes: [String], providers: [EncryptingStore.Provider])] {
        try EncryptingStore.rules(["kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1",
                                   "resources": [["resources": ["secrets"], "providers": providers]]]) { r, g in "/registry/\(g.isEmpty ? "core" : g)/\(r)/" }
    }
    static let k1 = Data((0..<32).map { UInt8($0) }).base64EncodedString()
    static let k2 = Data((0..<32).map { UInt8(255 - $0) }).base64EncodedString()

    @Test(arguments: ["aesgcm", "aescbc", "secretbox"])
    func valuesAreSealedBelowAndClearAbove(provider: String) async throws {
        let raw = try SQLiteStore(path: ":memory:")
        let store = EncryptingStore(inner: raw, rules: try Self.config([[provider: ["keys": [["name": "key1", "secret": Self.k1]]]], ["identity": [:]]]))
        let secret = Data(#"{"metadata":{"name":"s"},"data":{"password":"aHVudGVyMg=="}}"#.utf8)
        let watch = try await store.watch(prefix: Self.secretsPrefix, after: try await store.currentRevision())
        let created = try await store.create(Self.secretsPrefix + "default/s", value: secret)
        #expect(created.value == secret)
        let below = try #require(try await raw.get(Self.secretsPrefix + "default/s")).value
        #expect(below.starts(with: Data("k8s:enc:\(provider):v1:key1:".utf8)))
        #expect(below.range(of: Data("aHVudGVyMg".utf8)) == nil && below.range(of: Data("metadata".utf8)) == nil, "nothing in clear")
        #expect(try await store.get(Self.secretsPrefix + "default/s")?.value == secret)
        #expect(try await store.list(prefix: Self.secretsPrefix, after: nil, limit: 0, revision: nil).items.map(\.value) == [secret])
        var it = watch.makeAsyncIterator()
        #expect(try await it.next()?.kv.value == secret)
        // Other prefixes are stored as they are.
        _ = try await store.create("/registry/core/configmaps/default/c", value: Data("{}".utf8))
        #expect(try await raw.get("/registry/core/configmaps/default/c")?.value == Data("{}".utf8))
        // A value written before encryption (in clear) reads through identity.
        _ = try await raw.create(Self.secretsPrefix + "default/old", value: Data("{\"old\":1}".utf8))
        #expect(try await store.get(Self.secretsPrefix + "default/old")?.value == Data("{\"old\":1}".utf8))
        #expect(try await store.delete(Self.secretsPrefix + "default/s", expected: nil).value == secret)

        // Rotation: a new key first, the old one still listed, reads both; without the old one,
        // what it sealed is refused, not returned garbled.
        _ = try await store.create(Self.secretsPrefix + "default/t", value: secret)
        let rotated = EncryptingStore(inner: raw, rules: try Self.config([[provider: ["keys": [["name": "key2", "secret": Self.k2], ["name": "key1", "secret": Self.k1]]]]]))
        #expect(try await rotated.get(Self.secretsPrefix + "default/t")?.value == secret)
        _ = try await rotated.update(Self.secretsPrefix + "default/t", value: secret, expected: nil)
        #expect(try await raw.get(Self.secretsPrefix + "default/t")?.value.starts(with: Data("k8s:enc:\(provider):v1:key2:".utf8)) == true)
        let onlyNew = EncryptingStore(inner: raw, rules: try Self.config([[provider: ["keys": [["name": "key2", "secret": Self.k2]]]]]))
        await #expect(throws: EncryptingStore.Failure.self) { _ = try await onlyNew.get(Self.secretsPrefix + "default/old") }
    }

    /// NaCl's published secretbox vector (its tests/secretbox.c: the "firstkey", the nonce, the
    /// 131-byte message and the 147-byte box), through the system's libsodium.
    @Test func secretboxMatchesNaClsVector() throws {
        let box = try Secretbox.shared.get()
        func bytes(_ hex: String) -> [UInt8] {
            let h = Array(hex.utf8.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") })
            return stride(from: 0, to: h.count, by: 2).map { UInt8(String(decoding: h[$0...$0 + 1], as: UTF8.self), radix: 16)! }
        }
        let key = Data(bytes("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389"))
        let nonce = bytes("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
        let message = Data(bytes("""
            be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb310e
            3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705
            """))
        let sealed = Data(bytes("""
            f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c97271
            d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973
            f622a43d14a6599b1f654cb45a74e355a5
            """))
        #expect(message.count == 131 && sealed.count == 147)
        #expect(box.seal(message, nonce: nonce, key: key) == sealed)
        #expect(box.open(sealed, nonce: nonce, key: key) == message)
        var tampered = sealed
        tampered[20] ^= 1
        #expect(box.open(tampered, nonce: nonce, key: key) == nil, "a changed byte does not verify")
        #expect(box.open(sealed, nonce: nonce, key: Data(repeating: 7, count: 32)) == nil, "nor another key")
    }

    @Test func badConfigurationsAreRefused() throws {
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([["secretbox": ["keys": [["name": "k", "secret": Data(repeating: 1, count: 16).base64EncodedString()]]]]]) }
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([["kms": ["name": "k", "endpoint": "unix:///tmp/kms.sock"]]]) }
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([["aesgcm": ["keys": [["name": "k", "secret": "c2hvcnQ="]]]]]) }
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([]) }
        #expect(throws: EncryptingStore.Failure.self) {
            try EncryptingStore.rules(["kind": "Other", "apiVersion": "v1"]) { _, _ in "" }
        }
    }
}
