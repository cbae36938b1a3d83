import Foundation

/// A tar archive (POSIX ustar) written in memory: what an image layer is. Entries keep the
/// order they are added in; times are the epoch and owners root, so the same files always give
/// the same bytes (and the same layer digest).
public struct TarWriter: Sendable {
    public private(set) var data = Data()

    public init() {}

    public enum EntryError: Error, CustomStringConvertible {
        case nameTooLong(String)
        public var description: String {
            switch self {
            case .nameTooLong(let n): "tar: \(n): the name is longer than ustar's 255 bytes"
            }
        }
    }

    public mutating func directory(_ path: String, mode: Int = 0o755) throws {
        try header(path.hasSuffix("/") ? path : path + "/", mode: mode, size: 0, type: "5", link: "")
    }

    public mutating func file(_ path: String, _ contents: Data, mode: Int = 0o644) throws {
        try header(path, mode: mode, size: contents.count, type: "0", link: "")
        data.append(contents)
        let pad = (512 - contents.count % 512) % 512
        data.append(Data(count: pad))
    }

    public mutating func symlink(_ path: String, to target: String) throws {
        try header(path, mode: 0o777, size: 0, type: "2", link: target)
    }

    /// The two zero blocks that end an archive.
    public mutating func finish() { data.append(Data(count: 1024)) }

    mutating func header(_ path: String, mode: Int, size: Int, type: Character, link: String) throws {
        var name = Array(path.utf8), prefix: [UInt8] = []
        if name.count > 100 {
            // ustar: the name splits at a slash into a prefix (155) and a name (100).
            guard let cut = name.indices.filter({ name[$0] == UInt8(ascii: "/") && $0 <= 155 && name.count - $0 - 1 <= 100 }).last else {
                throw EntryError.nameTooLong(path)
            }
            prefix = Array(name[..<cut])
            name = Array(name[(cut + 1)...])
        }
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int, width: Int) {
            for (i, b) in bytes.prefix(width).enumerated() { h[offset + i] = b }
        }
        func octal(_ v: Int, at offset: Int, width: Int) {
            let s = String(v, radix: 8)
            put(Array((String(repeating: "0", count: max(0, width - 1 - s.count)) + s).utf8), at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(mode, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(0, at: 136, width: 12)
        put(Array(repeating: UInt8(ascii: " "), count: 8), at: 148, width: 8)
        h[156] = UInt8(ascii: Unicode.Scalar(String(type))!)
        put(Array(link.utf8), at: 157, width: 100)
        put(Array("ustar\0".utf8), at: 257, width: 6)
        put(Array("00".utf8), at: 263, width: 2)
        put(Array("root".utf8), at: 265, width: 32)
        put(Array("root".utf8), at: 297, width: 32)
        put(prefix, at: 345, width: 155)
        let sum = h.reduce(0) { $0 + Int($1) }
        let s = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - s.count)) + s).utf8) + [0, UInt8(ascii: " ")], at: 148, width: 8)
        data.append(contentsOf: h)
    }
}
