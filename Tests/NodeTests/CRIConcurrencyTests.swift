import CRI
import Foundation
import Testing

@Suite("CRI calls at once", .enabled(if: TestNode.available))
struct CRIConcurrencyTests {
    /// Many calls at once on the one connection all get their answer.
    @Test func manyCallsAtOnce() async throws {
        let node = try await TestNode()
        var failures: [String] = []
        do {
            let cri = node.cri
            failures = await withTaskGroup(of: String?.self) { g in
                for i in 0..<400 {
                    g.addTask {
                        do {
                            if i % 2 == 0 { _ = try await cri.listPodSandbox(nil) } else { _ = try await cri.listContainers(nil) }
                            return nil
                        } catch { return "\(error)" }
                    }
                }
                var out: [String] = []
                for await f in g { if let f { out.append(f) } }
                return out
            }
        }
        #expect(failures.isEmpty, "\(failures.count) failed: \(Set(failures))")
        // Sandboxes started together (each call lasting a second or so) while others list.
        let cri = node.cri
        let busy = await withTaskGroup(of: String?.self) { g in
            for i in 0..<16 {
                g.addTask {
                    do { _ = try await cri.runPodSandbox(node.sandboxConfig("s\(i)"), runtimeHandler: ""); return nil } catch { return "run: \(error)" }
                }
            }
            for _ in 0..<40 {
                g.addTask {
                    do {
                        for _ in 0..<20 { _ = try await cri.listPodSandbox(nil); _ = try await cri.listContainers(nil); try? await Task.sleep(for: .milliseconds(50)) }
                        return nil
                    } catch { return "list: \(error)" }
                }
            }
            var out: [String] = []
            for await f in g { if let f { out.append(f) } }
            return out
        }
        #expect(busy.isEmpty, "\(busy.count) failed: \(Set(busy))")
        await node.close()
    }
}
