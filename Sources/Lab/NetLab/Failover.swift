import Foundation
import KubeAPI
import KubeClient
import NetnsKit

/// The failover figures of a lab with several control-plane members (`netlab failover`): how
/// long after a crash the cluster serves again, each against what the same step takes with
/// nothing broken, in the same run.
extension Cluster {
    /// A client of the API servers through their balancer, as the admin, from `netns` (the
    /// outside client's by default): what kubectl on a workstation reaches.
    public func balancedClient(from netns: String? = nil) throws -> KubeClient {
        var c = KubeClient(config: try Kubeconfig.load(path: kubeconfig))
        let ns = netns ?? state.client
        c.dial = { host, port in
            try inNamespace(ns) {
                guard let fd = TCP.connect(host, port, timeout: 2) else { throw NetLabError("cannot reach \(host):\(port) from \(ns)") }
                return fd
            }
        }
        return c
    }

    public struct FailoverFigures: Sendable {
        /// A ConfigMap written through the balancer, nothing broken (ms).
        public var write: [Double] = []
        /// The etcd leader killed → the first write acknowledged after it (ms).
        public var etcd: [Double] = []
        /// An API server killed → the first write acknowledged after it (ms).
        public var apiServer: [Double] = []
        /// A pod created → bound, nothing broken (ms).
        public var bind: [Double] = []
        /// The leading scheduler killed, a pod created → bound by the next leader (ms).
        public var scheduler: [Double] = []
        /// The Lease's duration the next leader waits out (s).
        public var leaseDuration: Double = 15
    }

    /// `rounds` of each fault, healed after each, from the outside client through the balancer.
    public func failover(rounds: Int) async throws -> FailoverFigures {
        guard state.controlPlanes != nil else { throw NetLabError("lab \(state.name) has one API server: `netlab up --control-plane 3` first") }
        let api = try balancedClient()
        var f = FailoverFigures()
        var n = 0
        func write() async -> Bool {
            n += 1
            let r = try? await api.request("POST", "/api/v1/namespaces/default/configmaps",
                                           body: ["metadata": ["name": .string("failover-\(n)"), "labels": ["netlab-failover": "true"]], "data": ["n": .string("\(n)")]])
            return r.map { (200..<300).contains($0.status) } ?? false
        }
        /// From now until a write is acknowledged (ms); nil after 60 s.
        func untilWritten() async -> Double? {
            let t0 = Date()
            while Date().timeIntervalSince(t0) < 60 {
                if await write() { return Date().timeIntervalSince(t0) * 1000 }
                try? await Task.sleep(for: .milliseconds(10))
            }
            return nil
        }
        for _ in 0..<max(20, rounds) { if let ms = await untilWritten() { f.write.append(ms) } }
        for round in 0..<rounds {
            try await inject(.killEtcd(nil))
            guard let e = await untilWritten() else { throw NetLabError("no write acknowledged within 60 s of the etcd leader's loss") }
            f.etcd.append(e)
            try await healed()
            let m = state.members[round % state.members.count]
            try await inject(.killAPIServer(m.name))
            guard let a = await untilWritten() else { throw NetLabError("no write acknowledged within 60 s of \(m.name)'s API server's loss") }
            f.apiServer.append(a)
            try await healed()
        }
        // A pod pinned to node-1, from its create to its binding.
        func bindTime(_ name: String) async throws -> Double {
            let t0 = Date()
            let created = try await api.request("POST", "/api/v1/namespaces/default/pods", body: [
                "apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name)],
                "spec": ["nodeSelector": ["kubernetes.io/hostname": .string(state.nodes[0].name)], "terminationGracePeriodSeconds": 0,
                         "containers": [Self.echoContainer()]]])
            guard (200..<300).contains(created.status) else { throw NetLabError("creating pod \(name): \(created.status) \(created.body.text())") }
            defer { Task { _ = try? await api.request("DELETE", "/api/v1/namespaces/default/pods/\(name)", body: ["gracePeriodSeconds": 0]) } }
            while Date().timeIntervalSince(t0) < 120 {
                if let r = try? await api.request("GET", "/api/v1/namespaces/default/pods/\(name)"), r.body[path: ["spec", "nodeName"]]?.string != nil {
                    return Date().timeIntervalSince(t0) * 1000
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw NetLabError("pod \(name) was not bound within 120 s")
        }
        for i in 0..<rounds { f.bind.append(try await bindTime("failover-bind-\(i)")) }
        for i in 0..<rounds {
            try await inject(.killScheduler(nil))
            f.scheduler.append(try await bindTime("failover-scheduler-\(i)"))
            try await healed()
        }
        _ = try? await api.request("DELETE", "/api/v1/namespaces/default/configmaps", query: ["labelSelector": "netlab-failover=true"])
        return f
    }

    /// `fault heal`, then until every member's etcd is healthy and its API server answers.
    func healed(timeout: Double = 60) async throws {
        try await inject(.heal)
        let deadline = Date().addingTimeInterval(timeout)
        for m in state.members {
            while Measure.httpStatus(m.netns, "127.0.0.1", Self.etcdClientPort, "/health") != 200
                || Measure.httpStatus(m.netns, "127.0.0.1", LabState.insecurePort, "/readyz") != 200 {
                guard Date() < deadline else { throw NetLabError("\(m.name) did not come back within \(Int(timeout)) s") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
