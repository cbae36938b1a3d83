import Crypto

/// kube-proxy's chain-name hashes.
public enum ChainHash {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// The first 16 characters of base32(sha256(`input`)): upstream's `portProtoHash`
    /// when `input` is `servicePortName + protocol`, and the endpoint chain hash when
    /// the endpoint string is appended.
    public static func hash16(_ input: String) -> String {
        var input = input
        var hasher = SHA256()
        input.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        let digest = hasher.finalize()
        // 16 base32 characters take exactly the first 10 bytes (80 bits).
        var out = [UInt8](repeating: 0, count: 16)
        digest.withUnsafeBytes { raw in
            var acc: UInt64 = 0
            var bits = 0
            var o = 0
            for i in 0..<10 {
                acc = (acc << 8) | UInt64(raw[i])
                bits += 8
                while bits >= 5 {
                    bits -= 5
                    out[o] = alphabet[Int((acc >> UInt64(bits)) & 31)]
                    o += 1
                }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func servicePort(_ name: String, proto: String) -> String { hash16(name + proto) }

    public static func endpoint(_ name: String, proto: String, endpoint: String) -> String {
        hash16(name + proto + endpoint)
    }
}
