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

    @Test(arguments: ["aesgcm", "aescbc"])
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

    @Test func badConfigurationsAreRefused() throws {
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([["secretbox": ["keys": [["name": "k", "secret": Self.k1]]]]]) }
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([["aesgcm": ["keys": [["name": "k", "secret": "c2hvcnQ="]]]]]) }
        #expect(throws: EncryptingStore.Failure.self) { try Self.config([]) }
        #expect(throws: EncryptingStore.Failure.self) {
            try EncryptingStore.rules(["kind": "Other", "apiVersion": "v1"]) { _, _ in "" }
        }
    }
}
