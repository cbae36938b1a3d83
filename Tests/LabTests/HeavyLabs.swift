import Foundation
import NetLab
import Testing

/// The tests that bring up a whole netlab on containerd (nodes with containerd and a kubelet,
/// a control plane, the lab cloud) each keep two cores busy for a minute or more; run side by
/// side with each other and the rest of the suite, they starve the timing-sensitive tests. They
/// take turns here, one lab at a time.
actor HeavyLabs {
    static let shared = HeavyLabs()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else { busy = true; return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }

    /// `body`, while no other heavy lab runs.
    static func oneAtATime(_ body: () async -> Void) async {
        await shared.acquire()
        await body()
        await shared.release()
    }

    /// A lab named `prefix` and eight random hex digits, built and checked by `run(name, binDir)`
    /// while no other heavy lab runs: on failure the issue carries the last `tail` characters of
    /// every log; the lab is taken down after, and nothing of it may be left.
    static func withLab(prefix: String, tail: Int, _ run: (_ name: String, _ bin: String) async throws -> Void) async throws {
        let bin = URL(fileURLWithPath: try switchyardBinary()).deletingLastPathComponent().path
        let hex = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let name = prefix + String(repeating: "0", count: 8 - hex.count) + hex
        await oneAtATime {
            do {
                try await run(name, bin)
            } catch {
                let logs = (try? FileManager.default.contentsOfDirectory(atPath: "\(LabPaths.dir(name))/logs")) ?? []
                let tails = logs.sorted().map { "\($0): " + String(((try? String(contentsOfFile: "\(LabPaths.dir(name))/logs/\($0)", encoding: .utf8)) ?? "").suffix(tail)) }
                Issue.record("\(error)\n\(tails.joined(separator: "\n"))")
            }
            try? await Cluster.down(name: name, progress: { _ in })
            #expect(Cluster.leftovers(name).isEmpty)
        }
    }
}
