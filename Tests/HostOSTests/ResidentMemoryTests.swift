import Foundation
import Testing
@testable import HostOS

@Suite struct ResidentMemoryTests {
    /// Resident KiB of the mapping that starts at `address`, from /proc/self/smaps.
    static func residentKiB(at address: UnsafeMutableRawPointer) -> Int? {
        // Read to the end: Foundation's file reading stops at the first 4 KiB of a /proc file.
        let fd = open("/proc/self/smaps", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        let smaps = String(decoding: bytes, as: UTF8.self)
        let start = String(UInt(bitPattern: address), radix: 16)
        var inside = false
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit) {
                inside = line[..<dash].drop(while: { $0 == "0" }) == start[...]
            } else if inside, line.hasPrefix("Rss:") {
                return Int(line.split(separator: " ")[1])
            }
        }
        return nil
    }

    @Test func cleanFilePagesAreUnmappedAndPrivateContentsKept() throws {
        let path = NSTemporaryDirectory() + "switchyard-resident-\(UUID().uuidString)"
        let size = 1 << 20
        let pattern = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try Data(pattern).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }

        // A read-only mapping whose pages are all touched: clean, the kind that is unmapped.
        let clean = try #require(mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0))
        try #require(clean != MAP_FAILED)
        defer { munmap(clean, size) }
        var sum = 0
        for i in stride(from: 0, to: size, by: 4096) { sum &+= Int(clean.load(fromByteOffset: i, as: UInt8.self)) }
        #expect(Self.residentKiB(at: clean) == size / 1024)

        // A private mapping written to (its pages copied) and then made read-only, as the dynamic
        // loader leaves relocated data: unmapping it would lose what was written.
        let written = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0))
        try #require(written != MAP_FAILED)
        defer { munmap(written, size) }
        for i in stride(from: 0, to: size, by: 4096) { written.storeBytes(of: 0xEE, toByteOffset: i, as: UInt8.self) }
        #expect(mprotect(written, size, PROT_READ) == 0)

        // Writable once and never written (read only): its pages are the file's, but the mapping
        // is of the kind relocated data lives in, and is left alone too.
        let wasWritable = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0))
        try #require(wasWritable != MAP_FAILED)
        defer { munmap(wasWritable, size) }
        for i in stride(from: 0, to: size, by: 4096) { sum &+= Int(wasWritable.load(fromByteOffset: i, as: UInt8.self)) &* 0 }
        #expect(mprotect(wasWritable, size, PROT_READ) == 0)
        let wasWritableBefore = Self.residentKiB(at: wasWritable)

        let released = try #require(ResidentMemory.unmapCleanFilePages())
        #expect(released >= size / 1024)
        #expect(Self.residentKiB(at: clean) == 0, "the clean mapping holds no page after the trim")
        #expect(Self.residentKiB(at: written) == size / 1024, "the written mapping is left alone")
        #expect(Self.residentKiB(at: wasWritable) == wasWritableBefore && (wasWritableBefore ?? 0) > 0, "a once-writable mapping is left alone")
        // Both still read as before: the clean pages come back from the file, the written ones kept.
        #expect(memcmp(clean, pattern, size) == 0)
        var again = 0
        for i in stride(from: 0, to: size, by: 4096) {
            again &+= Int(clean.load(fromByteOffset: i, as: UInt8.self))
            #expect(written.load(fromByteOffset: i, as: UInt8.self) == 0xEE)
        }
        #expect(again == sum)
    }
}
