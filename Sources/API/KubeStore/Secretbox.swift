import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// NaCl's secretbox (XSalsa20 and Poly1305), what kube-apiserver's `secretbox` encryption
/// provider seals with, from the system's libsodium (Debian's `libsodium23`), loaded when a
/// configuration asks for it: `seal` gives the 16-byte tag then the ciphertext, as Go's
/// `nacl/secretbox.Seal` and libsodium's `crypto_secretbox_easy` both lay it out.
public final class Secretbox: Sendable {
    public static let keyBytes = 32, nonceBytes = 24, tagBytes = 16

    typealias SealFunction = @convention(c) (UnsafeMutablePointer<UInt8>?, UnsafePointer<UInt8>?, UInt64, UnsafePointer<UInt8>?, UnsafePointer<UInt8>?) -> Int32

    let sealFunction: SealFunction
    let openFunction: SealFunction

    public struct Unavailable: Error, CustomStringConvertible { public var description: String }

    /// The library, loaded once; why not when it cannot be.
    public static let shared: Result<Secretbox, Unavailable> = {
        for name in ["libsodium.so.23", "libsodium.so"] {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { continue }
            guard let initialize = dlsym(handle, "sodium_init"), let seal = dlsym(handle, "crypto_secretbox_easy"),
                  let open = dlsym(handle, "crypto_secretbox_open_easy") else { continue }
            typealias Init = @convention(c) () -> Int32
            guard unsafeBitCast(initialize, to: Init.self)() >= 0 else { return .failure(Unavailable(description: "libsodium failed to initialise")) }
            return .success(Secretbox(seal: unsafeBitCast(seal, to: SealFunction.self), open: unsafeBitCast(open, to: SealFunction.self)))
        }
        return .failure(Unavailable(description: "the secretbox provider needs libsodium (libsodium.so.23): apt-get install libsodium23"))
    }()

    init(seal: SealFunction, open: SealFunction) {
        sealFunction = seal
        openFunction = open
    }

    /// The tag and ciphertext of `message` under `key` (32 bytes) and `nonce` (24 bytes).
    public func seal(_ message: Data, nonce: [UInt8], key: Data) -> Data {
        precondition(nonce.count == Self.nonceBytes && key.count == Self.keyBytes)
        var out = [UInt8](repeating: 0, count: message.count + Self.tagBytes)
        let m = Array(message), k = Array(key)
        let r = out.withUnsafeMutableBufferPointer { o in
            m.withUnsafeBufferPointer { mp in
                nonce.withUnsafeBufferPointer { n in
                    k.withUnsafeBufferPointer { kp in sealFunction(o.baseAddress, mp.baseAddress, UInt64(m.count), n.baseAddress, kp.baseAddress) }
                }
            }
        }
        precondition(r == 0, "crypto_secretbox_easy failed")
        return Data(out)
    }

    /// The message, or nil when the box does not verify under `key` and `nonce`.
    public func open(_ box: Data, nonce: [UInt8], key: Data) -> Data? {
        guard box.count >= Self.tagBytes, nonce.count == Self.nonceBytes, key.count == Self.keyBytes else { return nil }
        var out = [UInt8](repeating: 0, count: box.count - Self.tagBytes)
        let c = Array(box), k = Array(key)
        let r = out.withUnsafeMutableBufferPointer { o in
            c.withUnsafeBufferPointer { cp in
                nonce.withUnsafeBufferPointer { n in
                    k.withUnsafeBufferPointer { kp in openFunction(o.baseAddress, cp.baseAddress, UInt64(c.count), n.baseAddress, kp.baseAddress) }
                }
            }
        }
        return r == 0 ? Data(out) : nil
    }
}
