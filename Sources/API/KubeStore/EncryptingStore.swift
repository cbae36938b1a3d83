import Crypto
import _CryptoExtras
import Foundation

/// Encryption at rest (`--encryption-provider-config`, apiserver.config.k8s.io/v1
/// EncryptionConfiguration): the values of the configured resources are written through the
/// first provider and read through whichever wrote them, as kube-apiserver stores them:
/// `k8s:enc:aescbc:v1:KEYNAME:` + IV + AES-CBC with PKCS#7 padding, `k8s:enc:aesgcm:v1:KEYNAME:` +
/// nonce + AES-GCM with its tag, `k8s:enc:secretbox:v1:KEYNAME:` + nonce + NaCl's secretbox (tag and
/// ciphertext); `identity` writes the value as it is. The store under it never
/// sees a configured resource's value in clear (unless identity is first).
public struct EncryptingStore: Store {
    public let inner: any Store
    let rules: [(prefixes: [String], providers: [Provider])]

    public enum Provider: Sendable {
        case aescbc([(name: String, key: Data)])
        case aesgcm([(name: String, key: Data)])
        case secretbox([(name: String, key: Data)], Secretbox)
        case identity

        var prefix: String? {
            switch self {
            case .aescbc(let keys): keys.first.map { "k8s:enc:aescbc:v1:\($0.name):" }
            case .aesgcm(let keys): keys.first.map { "k8s:enc:aesgcm:v1:\($0.name):" }
            case .secretbox(let keys, _): keys.first.map { "k8s:enc:secretbox:v1:\($0.name):" }
            case .identity: nil
            }
        }
    }

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    /// - Parameter resources: per rule, the store prefixes it covers (`/registry/core/secrets/`)
    ///   and its providers, the first of which writes.
    public init(inner: any Store, rules: [(prefixes: [String], providers: [Provider])]) {
        self.inner = inner
        self.rules = rules
    }

    func providers(for key: String) -> [Provider]? {
        rules.first { $0.prefixes.contains { key.hasPrefix($0) } }?.providers
    }

    func seal(_ key: String, _ value: Data) throws -> Data {
        guard let provider = providers(for: key)?.first else { return value }
        switch provider {
        case .identity:
            return value
        case .aesgcm(let keys):
            let k = keys[0]
            let box = try AES.GCM.seal(value, using: SymmetricKey(data: k.key))
            return Data("k8s:enc:aesgcm:v1:\(k.name):".utf8) + Data(box.nonce) + box.ciphertext + box.tag
        case .aescbc(let keys):
            let k = keys[0]
            // SystemRandomNumberGenerator: the kernel's getrandom.
            let ivBytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
            let sealed = try AES._CBC.encrypt(value, using: SymmetricKey(data: k.key), iv: try AES._CBC.IV(ivBytes: ivBytes))
            return Data("k8s:enc:aescbc:v1:\(k.name):".utf8) + Data(ivBytes) + sealed
        case .secretbox(let keys, let box):
            let k = keys[0]
            let nonce = (0..<Secretbox.nonceBytes).map { _ in UInt8.random(in: 0...255) }
            return Data("k8s:enc:secretbox:v1:\(k.name):".utf8) + Data(nonce) + box.seal(value, nonce: nonce, key: k.key)
        }
    }

    func open(_ key: String, _ value: Data) throws -> Data {
        guard let providers = providers(for: key) else { return value }
        let marker = Data("k8s:enc:".utf8)
        guard value.starts(with: marker) else {
            // Written in clear (before encryption, or by identity): readable while identity is listed.
            if providers.contains(where: { if case .identity = $0 { return true } else { return false } }) { return value }
            throw Failure(description: "\(key) is stored in clear but no identity provider is configured to read it")
        }
        for p in providers {
            switch p {
            case .aesgcm(let keys):
                for k in keys {
                    let head = Data("k8s:enc:aesgcm:v1:\(k.name):".utf8)
                    guard value.starts(with: head) else { continue }
                    let rest = value.dropFirst(head.count)
                    guard rest.count >= 28 else { throw Failure(description: "\(key): the stored value is too short") }
                    let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: rest.prefix(12)), ciphertext: rest.dropFirst(12).dropLast(16),
                                                    tag: rest.suffix(16))
                    return try AES.GCM.open(box, using: SymmetricKey(data: k.key))
                }
            case .aescbc(let keys):
                for k in keys {
                    let head = Data("k8s:enc:aescbc:v1:\(k.name):".utf8)
                    guard value.starts(with: head) else { continue }
                    let rest = value.dropFirst(head.count)
                    guard rest.count >= 32, let iv = try? AES._CBC.IV(ivBytes: Array(rest.prefix(16))) else {
                        throw Failure(description: "\(key): the stored value is too short")
                    }
                    return try AES._CBC.decrypt(rest.dropFirst(16), using: SymmetricKey(data: k.key), iv: iv)
                }
            case .secretbox(let keys, let box):
                for k in keys {
                    let head = Data("k8s:enc:secretbox:v1:\(k.name):".utf8)
                    guard value.starts(with: head) else { continue }
                    let rest = value.dropFirst(head.count)
                    guard rest.count >= Secretbox.nonceBytes + Secretbox.tagBytes else { throw Failure(description: "\(key): the stored value is too short") }
                    guard let opened = box.open(Data(rest.dropFirst(Secretbox.nonceBytes)), nonce: Array(rest.prefix(Secretbox.nonceBytes)), key: k.key) else {
                        throw Failure(description: "\(key): the secretbox does not verify with key \(k.name)")
                    }
                    return opened
                }
            case .identity:
                continue
            }
        }
        throw Failure(description: "\(key): no configured provider can read it (\(String(decoding: value.prefix(40), as: UTF8.self))…)")
    }

    func opened(_ kv: KeyValue) throws -> KeyValue {
        var kv = kv
        kv.value = try open(kv.key, kv.value)
        return kv
    }

    public func currentRevision() async throws -> Int64 { try await inner.currentRevision() }
    public func currentRevision(prefix: String) async throws -> Int64 { try await inner.currentRevision(prefix: prefix) }
    public func get(_ key: String) async throws -> KeyValue? { try await inner.get(key).map(opened) }
    public func create(_ key: String, value: Data) async throws -> KeyValue {
        var kv = try await inner.create(key, value: try seal(key, value))
        kv.value = value
        return kv
    }
    public func update(_ key: String, value: Data, expected: Int64?) async throws -> KeyValue {
        var kv = try await inner.update(key, value: try seal(key, value), expected: expected)
        kv.value = value
        return kv
    }
    public func delete(_ key: String, expected: Int64?) async throws -> KeyValue { try opened(try await inner.delete(key, expected: expected)) }
    public func list(prefix: String, after: String?, limit: Int, revision: Int64?) async throws -> ListPage {
        var page = try await inner.list(prefix: prefix, after: after, limit: limit, revision: revision)
        page.items = try page.items.map(opened)
        return page
    }
    public func count(prefix: String, after: String?, revision: Int64?) async throws -> Int {
        try await inner.count(prefix: prefix, after: after, revision: revision)
    }
    public func compact(through revision: Int64) async throws { try await inner.compact(through: revision) }
    public func watch(prefix: String, after revision: Int64) async throws -> AsyncThrowingStream<StoreEvent, any Error> {
        let events = try await inner.watch(prefix: prefix, after: revision)
        let me = self
        return AsyncThrowingStream { c in
            let task = Task {
                do {
                    for try await var e in events {
                        e.kv = try me.opened(e.kv)
                        if let p = e.previous { e.previous = try me.opened(p) }
                        c.yield(e)
                    }
                    c.finish()
                } catch { c.finish(throwing: error) }
            }
            c.onTermination = { _ in task.cancel() }
        }
    }
}

extension EncryptingStore {
    /// Reads an EncryptionConfiguration (YAML already turned into JSON): which resources
    /// (`secrets`, `configmaps`, `deployments.apps`, …) each rule covers, and its providers.
    /// `prefix(resource, group)` names a resource's store prefix.
    public static func rules(_ config: [String: Any], prefix: (String, String) -> String) throws -> [(prefixes: [String], providers: [Provider])] {
        guard config["kind"] as? String == "EncryptionConfiguration",
              ["apiserver.config.k8s.io/v1", "apiserver.config.k8s.io/v1beta1"].contains(config["apiVersion"] as? String ?? "") else {
            throw Failure(description: "want kind EncryptionConfiguration of apiVersion apiserver.config.k8s.io/v1")
        }
        var out: [(prefixes: [String], providers: [Provider])] = []
        for (i, r) in ((config["resources"] as? [[String: Any]]) ?? []).enumerated() {
            let names = (r["resources"] as? [String]) ?? []
            guard !names.isEmpty else { throw Failure(description: "resources[\(i)].resources: at least one resource") }
            let prefixes = names.map { n -> String in
                let parts = n.split(separator: ".", maxSplits: 1)
                return prefix(String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            }
            var providers: [Provider] = []
            for (j, p) in ((r["providers"] as? [[String: Any]]) ?? []).enumerated() {
                func keys(_ kind: String, sizes: Set<Int> = [16, 24, 32]) throws -> [(name: String, key: Data)] {
                    let ks = ((p[kind] as? [String: Any])?["keys"] as? [[String: Any]]) ?? []
                    guard !ks.isEmpty else { throw Failure(description: "resources[\(i)].providers[\(j)].\(kind).keys: at least one key") }
                    return try ks.enumerated().map { (n, k) in
                        guard let name = k["name"] as? String, !name.isEmpty, let secret = k["secret"] as? String,
                              let data = Data(base64Encoded: secret), sizes.contains(data.count) else {
                            throw Failure(description: "resources[\(i)].providers[\(j)].\(kind).keys[\(n)]: a name and a base64 secret of \(sizes == [32] ? "32" : "16, 24 or 32") bytes")
                        }
                        return (name, data)
                    }
                }
                if p["aesgcm"] != nil { providers.append(.aesgcm(try keys("aesgcm"))) }
                else if p["aescbc"] != nil { providers.append(.aescbc(try keys("aescbc"))) }
                else if p["secretbox"] != nil {
                    switch Secretbox.shared {
                    case .success(let box): providers.append(.secretbox(try keys("secretbox", sizes: [32]), box))
                    case .failure(let e): throw Failure(description: "resources[\(i)].providers[\(j)].secretbox: \(e)")
                    }
                }
                else if p["identity"] != nil { providers.append(.identity) }
                else {
                    throw Failure(description: "resources[\(i)].providers[\(j)]: supported providers are aescbc, aesgcm, secretbox and identity (\(p.keys.sorted().joined(separator: ", ")) is not)")
                }
            }
            guard !providers.isEmpty else { throw Failure(description: "resources[\(i)].providers: at least one provider") }
            out.append((prefixes, providers))
        }
        return out
    }
}
