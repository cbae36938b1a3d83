import Foundation
import KubeAPI
import NetnsKit
import Testing

/// Two API servers on one three-member etcd cluster, as in a highly available control plane:
/// what is written through either is watched through the other from any resourceVersion, once
/// and in order, and losing an etcd member loses no write.
@Suite("two API servers on one etcd cluster", .enabled(if: isRoot && EtcdProcess.available, "needs root and Debian's etcd"))
struct SharedEtcdTests {
    @Test func watchesResumeOnEitherServerAcrossAMemberLoss() throws {
        let lab = try Lab()
        defer { lab.destroy() }
        let etcd = try EtcdProcess(netns: lab.node, members: 3)
        defer { etcd.stop() }
        let alone = ["--disable-scheduler", "--disable-controller-manager"]
        let a = try LabServer(lab: lab, sharing: etcd, arguments: alone)
        let b = try LabServer(lab: lab, sharing: etcd, arguments: alone)
        func url(_ s: LabServer, _ path: String) -> String { "http://127.0.0.1:\(s.port)\(path)" }
        /// Creates a ConfigMap through `s`; its resourceVersion.
        func create(_ s: LabServer, _ name: String) throws -> String {
            let r = try Sh.run(["ip", "netns", "exec", lab.node, "curl", "-sf", "-m", "20", "-XPOST", "-H", "Content-Type: application/json",
                                "-d", #"{"metadata":{"name":"\#(name)"},"data":{"n":"\#(name)"}}"#, url(s, "/api/v1/namespaces/default/configmaps")])
            let rv = try? JSONValue.parse(Data(r.out.utf8))[path: ["metadata", "resourceVersion"]]?.string
            guard r.status == 0, let rv else { throw LabError("create \(name) through :\(s.port): \(r.status) \(r.out) \(r.err)") }
            return rv
        }
        // Both servers answer (the second made nothing the first had made already).
        let from = try create(a, "cm-0")
        // Writes through both in turn; an etcd member killed halfway (whichever the servers use).
        for i in 1...10 {
            if i == 5 { etcd.kill(member: 0) }
            _ = try create(i % 2 == 0 ? a : b, "cm-\(i)")
        }
        // From cm-0's resourceVersion, each server's watch has the ten creations, in order, once.
        for s in [a, b] {
            let r = try Sh.run(["ip", "netns", "exec", lab.node, "curl", "-sN", "-m", "4",
                                url(s, "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=\(from)")], timeout: 10)
            let added = r.out.split(separator: "\n").compactMap { line -> String? in
                guard let e = try? JSONValue.parse(Data(line.utf8)), e["type"]?.string == "ADDED" else { return nil }
                return e[path: ["object", "metadata", "name"]]?.string
            }
            #expect(added == (1...10).map { "cm-\($0)" }, "through :\(s.port): \(r.out.prefix(500))")
        }
    }
}
