import Foundation
import Testing
@testable import HostOS

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

    /// Both pipes are drained together: a program that writes megabytes to stderr before stdout
    /// does not block on a full pipe.
    @Test func bothPipesAreReadTogether() throws {
        let r = try CommandRunner().run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' e >&2; echo out; exit 3"], check: false)
        #expect(r.status == 3)
        #expect(r.stdout == "out\n")
        #expect(r.stderr.utf8.count == 3_000_000)
    }

    /// Past its timeout a program gets SIGTERM (and SIGKILL if it ignores that): the run ends,
    /// with the signal's number as the status, and nothing is left running.
    @Test func aTimeoutEndsTheProgram() throws {
        let start = ContinuousClock.now
        let r = try CommandRunner().run(["sh", "-c", "trap '' TERM; echo started; exec sleep 30"], check: false, timeout: .milliseconds(200))
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(r.stdout == "started\n")
        #expect(r.status == SIGKILL, "an ignored SIGTERM is followed by SIGKILL")
        let quick = try CommandRunner().run(["sleep", "30"], check: false, timeout: .milliseconds(100))
        #expect(quick.status == SIGTERM)
    }

    /// A program that is not there, or not on PATH, fails with a message that says so (127).
    @Test func aMissingProgramIsAClearFailure() {
        do {
            try CommandRunner().run(["switchyard-no-such-program"])
            Issue.record("a missing program must fail")
        } catch let f as CommandRunner.Failure {
            #expect(f.status == 127)
            #expect(f.description.contains("switchyard-no-such-program: not found on PATH"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    /// The child starts with no signal blocked and none ignored, whatever the calling thread
    /// blocks (Swift concurrency's threads block most signals).
    @Test func theChildStartsWithDefaultSignals() async throws {
        let r = try CommandRunner().run(["sh", "-c", "grep -E '^(SigBlk|SigIgn)' /proc/self/status"])
        // Signals 1 to 31 (32 and 33 are glibc's own, which it keeps as it likes).
        func standard(_ field: String) -> UInt64? {
            r.stdout.split(separator: "\n").first { $0.hasPrefix(field) }
                .flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }.map { $0 & 0x7fff_ffff }
        }
        #expect(standard("SigBlk:") == 0, "\(r.stdout)")
        #expect(standard("SigIgn:") == 0, "\(r.stdout)")
    }
}
