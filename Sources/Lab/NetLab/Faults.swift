import Foundation
import KubeAPI
import NetnsKit

/// Faults for demos and tests (`netlab fault …`): a control-plane process or a whole node
/// killed as a crash would (SIGKILL), two parts of the lab cut off from each other, and `heal`,
/// which undoes every one: the partitions lifted, the links up, the killed processes started
/// again on their data, and any other component of the lab that exited (a scheduler or
/// controller manager stops when it loses its Lease, as upstream's do) started again too.
public enum Fault: Sendable, Equatable {
    /// etcd on the member named, or the cluster's leader.
    case killEtcd(String?)
    /// The API server on the member named, or the first member's.
    case killAPIServer(String?)
    /// The scheduler on the member named, or the one holding the kube-scheduler Lease.
    case killScheduler(String?)
    /// The controller manager on the member named, or the one holding its Lease.
    case killControllerManager(String?)
    /// A node gone: its kubelet, containerd and proxy killed, its link to the underlay down.
    case killNode(String)
    /// Every packet between `a`'s and `b`'s addresses dropped (cp-N, node-N, client, router), both ways.
    case partition(String, String)
    case heal
}

extension Cluster {
    /// Does `fault`; what was done, for people.
    @discardableResult
    public func inject(_ fault: Fault) async throws -> String {
        switch fault {
        case .killEtcd(let name):
            let m = try name.map(member) ?? etcdLeader()
            return try killComponent("etcd-\(m.name)", what: "etcd member \(m.name)")
        case .killAPIServer(let name):
            let m = try name.map(member) ?? state.members[0]
            return try killComponent("server-\(m.name)", what: "the API server on \(m.name)")
        case .killScheduler(let name):
            let m = try await memberOrLeader(name, lease: "kube-scheduler")
            return try killComponent("scheduler-\(m.name)", what: "the scheduler on \(m.name)")
        case .killControllerManager(let name):
            let m = try await memberOrLeader(name, lease: "kube-controller-manager")
            return try killComponent("controller-manager-\(m.name)", what: "the controller manager on \(m.name)")
        case .killNode(let name):
            guard let node = state.nodes.first(where: { $0.name == name }) else {
                throw NetLabError("no node \(name) in lab \(state.name): one of \(state.nodes.map(\.name).joined(separator: ", "))")
            }
            var killed: [String] = []
            for (log, _) in (state.components ?? [:]).sorted(by: { $0.key < $1.key }) where log.hasSuffix("-\(name)") {
                if let pid = componentPID(log) { kill(pid, SIGKILL); killed.append(log) }
            }
            try Sh.must(["ip", "-n", node.netns, "link", "set", "eth0", "down"])
            try record("node:\(name)")
            return "\(name): \(killed.isEmpty ? "nothing ran" : killed.joined(separator: ", ") + " killed"), its underlay link down; its pods stay, cut off"
        case .partition(let a, let b):
            let (na, aa) = try endpoint(a), (nb, ab) = try endpoint(b)
            guard na != nb else { throw NetLabError("partition \(a) \(b): the same namespace") }
            // Only each side's own address is matched: with br_netfilter, the bridge's namespace
            // (cp-1's) also sees the traffic it bridges between others, which stays untouched.
            for (ns, own, other) in [(na, aa, ab), (nb, ab, aa)] {
                let script = """
                    table ip \(Self.faultTable) {
                    \tchain prerouting { type filter hook prerouting priority -300; policy accept; }
                    \tchain output { type filter hook output priority -300; policy accept; }
                    }
                    add rule ip \(Self.faultTable) prerouting ip saddr \(other) ip daddr \(own) drop
                    add rule ip \(Self.faultTable) output ip daddr \(other) drop

                    """
                let r = try Sh.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input: script)
                guard r.status == 0 else { throw NetLabError("partition in \(ns): nft: \(r.err)") }
                try record("partition:\(ns)")
            }
            return "\(a) (\(aa)) and \(b) (\(ab)) cut off from each other, both ways"
        case .heal:
            return try await heal()
        }
    }

    static let faultTable = "netlab-fault"

    func member(_ name: String) throws -> LabState.ControlPlaneMember {
        guard let m = state.members.first(where: { $0.name == name }) else {
            throw NetLabError("no control-plane member \(name) in lab \(state.name): one of \(state.members.map(\.name).joined(separator: ", "))")
        }
        return m
    }

    /// A lab part's namespace and address, by the names `fault partition` takes.
    func endpoint(_ name: String) throws -> (String, String) {
        if let m = state.members.first(where: { $0.name == name }) { return (m.netns, m.address) }
        if let n = state.nodes.first(where: { $0.name == name }) { return (n.netns, n.address) }
        if name == "client" { return (state.client, state.clientAddress) }
        if name == "router", let r = state.router { return (r, LabCloudNet.routerAddress) }
        throw NetLabError("no \(name) in lab \(state.name): one of \((state.members.map(\.name) + state.nodes.map(\.name) + ["client"] + (state.router == nil ? [] : ["router"])).joined(separator: ", "))")
    }

    func memberOrLeader(_ name: String?, lease: String) async throws -> LabState.ControlPlaneMember {
        if let name { return try member(name) }
        return try await leaseHolder(lease)
    }

    /// The member whose etcd leads, as etcd's maintenance status says.
    func etcdLeader() throws -> LabState.ControlPlaneMember {
        guard state.controlPlanes != nil else { throw NetLabError("lab \(state.name) has no etcd cluster (up --control-plane 3 makes one)") }
        for m in state.members {
            let r = try? Sh.run(["ip", "netns", "exec", m.netns, "curl", "-sf", "-m", "2", "-X", "POST", "-d", "{}",
                                 "http://127.0.0.1:\(Self.etcdClientPort)/v3/maintenance/status"])
            guard let r, r.status == 0, let status = try? JSONValue.parse(Data(r.out.utf8)),
                  let leader = status["leader"]?.string, let me = status[path: ["header", "member_id"]]?.string else { continue }
            if leader == me { return m }
        }
        throw NetLabError("no etcd member says it leads")
    }

    /// The member whose process holds kube-system/`lease` (its holder is HOSTNAME_UUID, the
    /// hostname the member's name).
    func leaseHolder(_ lease: String) async throws -> LabState.ControlPlaneMember {
        let l = try await must("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/\(lease)", nil)
        let holder = l[path: ["spec", "holderIdentity"]]?.string ?? ""
        guard let m = state.members.first(where: { holder.hasPrefix($0.name + "_") }) else {
            throw NetLabError("the \(lease) Lease is held by \(holder.isEmpty ? "no one" : holder), not a member of lab \(state.name)")
        }
        return m
    }

    /// The pid of the component netlab started as `log`, if it runs.
    func componentPID(_ log: String) -> Int32? {
        guard let c = state.components?[log] else { return nil }
        for pid in Netns.pids(c.netns) {
            guard let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { continue }
            if cmd.split(separator: "\0").map(String.init) == c.command && Self.isAlive(pid) { return pid }
        }
        return nil
    }

    func killComponent(_ log: String, what: String) throws -> String {
        guard let pid = componentPID(log) else { throw NetLabError("\(what) does not run (lab \(state.name))") }
        kill(pid, SIGKILL)
        for _ in 0..<100 where Self.isAlive(pid) { usleep(10_000) }
        try record("component:\(log)")
        return "\(what) killed (pid \(pid))"
    }

    func record(_ fault: String) throws {
        var f = state.faults ?? []
        if !f.contains(fault) { f.append(fault) }
        state.faults = f
        try state.save()
    }

    /// Lifts the partitions, brings cut-off nodes back, starts killed components again.
    func heal() async throws -> String {
        var done: [String] = []
        for f in state.faults ?? [] {
            let parts = f.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "partition":
                _ = try? Sh.run(["ip", "netns", "exec", parts[1], "nft", "delete", "table", "ip", Self.faultTable])
                done.append("partition in \(parts[1]) lifted")
            case "node":
                guard let node = state.nodes.first(where: { $0.name == parts[1] }) else { continue }
                try Sh.must(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
                // Its default route went with the link.
                _ = try? Sh.run(["ip", "-n", node.netns, "route", "replace", "default", "via", state.router == nil ? state.serverAddress : LabCloudNet.routerAddress])
                for (log, _) in (state.components ?? [:]).sorted(by: { $0.key < $1.key }) where log.hasSuffix("-\(node.name)") && componentPID(log) == nil {
                    try respawn(log)
                }
                done.append("\(node.name) back")
            case "component":
                if componentPID(parts[1]) == nil { try respawn(parts[1]) }
                done.append("\(parts[1]) started again")
            default: continue
            }
        }
        // What exited by itself: a scheduler or controller manager that lost its Lease stops, as
        // upstream's do, for the kubelet to start its static pod again; here, heal does.
        let downed = state.faults ?? []
        for (log, c) in (state.components ?? [:]).sorted(by: { $0.key < $1.key }) where componentPID(log) == nil && !downed.contains("component:\(log)") {
            if let node = state.nodes.first(where: { $0.netns == c.netns }), downed.contains("node:\(node.name)") { continue }
            try respawn(log)
            done.append("\(log) (it had exited) started again")
        }
        state.faults = nil
        try state.save()
        return done.isEmpty ? "nothing to heal" : done.joined(separator: "; ")
    }

    /// Starts a component again; the log of the one that died is kept as LOG.previous.log
    /// (what `kubectl logs --previous` shows of a restarted container).
    func respawn(_ log: String) throws {
        guard let c = state.components?[log] else { return }
        let logs = "\(dir)/logs"
        try? FileManager.default.removeItem(atPath: "\(logs)/\(c.log).previous.log")
        try? FileManager.default.moveItem(atPath: "\(logs)/\(c.log).log", toPath: "\(logs)/\(c.log).previous.log")
        try spawnArgv(c.netns, c.argv, log: c.log)
    }
}
