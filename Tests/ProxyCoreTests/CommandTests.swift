import Foundation
@testable import ProxyCore
import Testing

@Suite struct CommandTests {
    @Test func inputInPartsReachesTheProgramInOrder() throws {
        let dir = NSTemporaryDirectory() + "switchyard-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Spooled past its one-megabyte buffer, so part of it is flushed before the end.
        let spool = try Spool(directory: dir)
        var expected = ""
        for i in 0..<40_000 {
            let line = "-A KUBE-SEP-\(i) -j DNAT --to-destination 10.0.\(i / 250).\(i % 250):80\n"
            spool += line
            expected += line
        }
        guard case .file(let f) = try spool.finish() else { Issue.record("a file spool finishes as a file"); return }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "the spool's file has no name")
        let r = try CommandRunner().run(["cat"], input: [.text("*nat\n"), .file(f), .text("COMMIT\n")])
        #expect(r.stdout == "*nat\n" + expected + "COMMIT\n")
        // In memory, the same text comes back as text.
        let mem = Spool()
        mem += "a"
        mem += "b"
        guard case .text("ab") = try mem.finish() else { Issue.record("an in-memory spool finishes as its text"); return }
    }

    @Test func aMissingInputFileIsAnError() {
        #expect(throws: CommandRunner.WriteError.self) {
            try CommandRunner().run(["cat"], input: [.file("/nonexistent/switchyard-\(UUID().uuidString)")])
        }
    }
}
