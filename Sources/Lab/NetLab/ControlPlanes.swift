import ClusterPKI
import Foundation
import KubeAPI
import NetnsKit

/// A highly available control plane (`netlab up --control-plane 3`), laid out as kubeadm's
/// stacked etcd topology: each member's namespace runs an etcd member (Debian's etcd-server),
/// an API server on the whole etcd cluster (its own member first), and a scheduler and a
/// controller manager against that local API server, both with leader election, so one of each
/// acts. The API servers share the cluster CA and the service-account key (kubeadm copies them
/// to each control-plane node); each member's processes see its name as their hostname, so a
/// Lease's holder names the member. The lab cloud's load balancer in front of the API servers
/// (`LabCloudNet.apiServerAddress`:6443, health-checked) is what kubelets, proxies, the cloud
/// controller manager and kubectl use.
extension Cluster {
    public static let etcdClientPort = 2379
    public static let etcdPeerPort = 2380

    /// The members of an `n`-member control plane for lab namespaces prefixed `p`.
    static func controlPlaneMembers(_ n: Int, prefix p: String) -> [LabState.ControlPlaneMember] {
        (1...n).map { i in
            LabState.ControlPlaneMember(name: "cp-\(i)", netns: i == 1 ? p + "cp" : "\(p)cp\(i)", address: "\(underlay).\(i == 1 ? 1 : i + 1)")
        }
    }

    /// The etcd members' client URLs, `first`'s own first.
    func etcdURLs(first: LabState.ControlPlaneMember) -> [String] {
        let all = state.members.map { "http://\($0.address):\(Self.etcdClientPort)" }
        let own = "http://\(first.address):\(Self.etcdClientPort)"
        return [own] + all.filter { $0 != own }
    }

    func serverDir(_ m: LabState.ControlPlaneMember) -> String { m.name == "cp-1" ? "\(dir)/server" : "\(dir)/server-\(m.name)" }

    /// The etcd cluster, every member at once (a member waits for a quorum of its peers), then
    /// healthy within `timeout`.
    func startEtcdCluster(timeout: Double = 30) async throws {
        let members = state.members
        let cluster = members.map { "\($0.name)=http://\($0.address):\(Self.etcdPeerPort)" }.joined(separator: ",")
        progress("etcd: \(members.count) members (\(members.map { "\($0.name) \($0.address)" }.joined(separator: ", "))), data in \(dir)/etcd")
        for m in members {
            let client = "http://\(m.address):\(Self.etcdClientPort)", peer = "http://\(m.address):\(Self.etcdPeerPort)"
            try spawn(m.netns, [EtcdProcess.binary, "--name", m.name, "--data-dir", "\(dir)/etcd/\(m.name)",
                                "--listen-client-urls", "\(client),http://127.0.0.1:\(Self.etcdClientPort)", "--advertise-client-urls", client,
                                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster,
                                "--initial-cluster-token", "netlab-\(state.name)", "--initial-cluster-state", "new", "--log-level", "warn"],
                      log: "etcd-\(m.name)", keep: true)
        }
        let deadline = Date().addingTimeInterval(timeout)
        for m in members {
            while Measure.httpStatus(m.netns, "127.0.0.1", Self.etcdClientPort, "/health") != 200 {
                guard Date() < deadline else { throw NetLabError("etcd member \(m.name) is not healthy after \(Int(timeout)) s; see \(dir)/logs/etcd-\(m.name).log") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// The API servers: the first makes the cluster CA and the service-account key, which the
    /// others get before they start (as `kubeadm join --control-plane` copies them).
    func startAPIServers(timeout: Double = 30) async throws {
        let members = state.members
        let saKey = "\(dir)/server/sa.key"
        for (i, m) in members.enumerated() {
            let d = serverDir(m)
            if i > 0 {
                try FileManager.default.createDirectory(atPath: "\(d)/pki", withIntermediateDirectories: true)
                for f in ["ca.crt", "ca.key"] { try FileManager.default.copyItem(atPath: "\(dir)/server/pki/\(f)", toPath: "\(d)/pki/\(f)") }
            }
            try spawn(m.netns, ["\(state.binDir)/switchyard", "server", "--data-dir", d] + (try auditFlags(server: d)) + ["--etcd-servers", etcdURLs(first: m).joined(separator: ","),
                                "--bind-address", m.address, "--secure-port", String(state.serverPort), "--port", String(LabState.insecurePort),
                                "--tls-san", LabCloudNet.apiServerAddress, "--service-account-signing-key-file", saKey,
                                "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction", "--enable-bootstrap-token-auth",
                                "--disable-scheduler", "--disable-controller-manager"],
                      log: "server-\(m.name)", hostname: m.name, keep: true)
            // The first one alone, until it has made what the others share.
            if i == 0 || i == members.count - 1 {
                let waitFor = i == 0 ? [m] : Array(members.dropFirst())
                let deadline = Date().addingTimeInterval(timeout)
                for w in waitFor {
                    while !FileManager.default.fileExists(atPath: "\(serverDir(w))/kubeconfig") {
                        guard Date() < deadline else { throw NetLabError("the API server on \(w.name) did not start; see \(dir)/logs/server-\(w.name).log") }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
            }
        }
        progress("control plane: \(members.count) switchyard servers on etcd (\(members.map { "\($0.name) https://\($0.address):\(state.serverPort)" }.joined(separator: ", ")))")
    }

    /// A scheduler and a controller manager on every member, each against its member's API
    /// server, electing their leaders through Leases (kube-system/kube-scheduler,
    /// kube-system/kube-controller-manager) with upstream's default timings.
    func startElectedComponents() throws {
        let pki = "\(dir)/server/pki"
        for m in state.members {
            let local = "https://\(m.address):\(state.serverPort)"
            let scheduler = try componentKubeconfig("scheduler-\(m.name)", commonName: "system:kube-scheduler", server: local)
            try spawn(m.netns, ["\(state.binDir)/switchyard", "scheduler", "--kubeconfig", scheduler, "--leader-elect", "--logging-format", "json"],
                      log: "scheduler-\(m.name)", hostname: m.name, keep: true)
            let cm = try componentKubeconfig("controller-manager-\(m.name)", commonName: "system:kube-controller-manager", server: local)
            try spawn(m.netns, ["\(state.binDir)/switchyard", "controller-manager", "--kubeconfig", cm, "--leader-elect", "--logging-format", "json",
                                "--controllers", "*,bootstrapsigner,tokencleaner", "--use-service-account-credentials",
                                "--cluster-signing-cert-file", "\(pki)/ca.crt", "--cluster-signing-key-file", "\(pki)/ca.key", "--root-ca-file", "\(pki)/ca.crt"],
                      log: "controller-manager-\(m.name)", hostname: m.name, keep: true)
        }
        progress("control plane: switchyard scheduler and controller-manager on every member, with leader election")
    }

    /// The lab cloud's balancer in front of the API servers, once its address answers from a node.
    func startAPIBalancer(timeout: Double = 30) async throws {
        guard state.controlPlanes != nil, let router = state.router else { return }
        let body: JSONValue = ["service": "kube-apiserver (the control plane)", "requestedIP": .string(LabCloudNet.apiServerAddress),
                               "ports": [["name": "https", "protocol": "TCP", "port": .int(Int64(state.serverPort))]],
                               "backends": .array(state.members.map { .string($0.address) })]
        let r = try Sh.run(["ip", "netns", "exec", state.controlPlane, "curl", "-sS", "-m", "5", "-X", "PUT", "-H", "Content-Type: application/json",
                            "--data-binary", "@-", "\(LabCloudNet.endpoint)/v1/loadbalancers/kube-apiserver"], input: String(decoding: body.serialized(), as: UTF8.self))
        guard r.status == 0, (try? JSONValue.parse(Data(r.out.utf8)))?["ip"]?.string == LabCloudNet.apiServerAddress else {
            throw NetLabError("the lab cloud refused the API servers' load balancer: \(r.out)\(r.err)")
        }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let fd = try? inNamespace(state.nodes[0].netns) { TCP.connect(LabCloudNet.apiServerAddress, self.state.serverPort, timeout: 1) }
            if let fd = fd ?? nil { close(fd); break }
            guard Date() < deadline else { throw NetLabError("the API servers' balancer \(LabCloudNet.apiServerAddress):\(state.serverPort) does not answer; see \(dir)/logs/cloud.log") }
            try await Task.sleep(for: .milliseconds(100))
        }
        progress("control plane: the lab cloud's balancer \(LabCloudNet.apiServerAddress):\(state.serverPort) in \(router) in front of the API servers; every kubeconfig names it")
    }

    /// The admin's kubeconfig for a lab with several API servers: kubernetes-admin
    /// (system:masters), at the balancer.
    func writeAdminKubeconfig() throws {
        _ = try componentKubeconfig("admin", commonName: "kubernetes-admin", organizations: ["system:masters"])
    }
}

extension Cluster {
    /// `netlab status`'s lines about a control plane of several members: what runs on each,
    /// who leads etcd, the scheduler and the controller manager.
    func controlPlaneStatus() async -> String {
        guard state.controlPlanes != nil else { return "" }
        let etcdLeader = (try? etcdLeader())?.name
        var holders: [String: String] = [:]
        for lease in ["kube-scheduler", "kube-controller-manager"] {
            holders[lease] = (try? await leaseHolder(lease))?.name
        }
        var out = "control plane: \(state.members.count) members behind \(LabCloudNet.apiServerAddress):\(state.serverPort) (the lab cloud's balancer)\n"
        for m in state.members {
            func shown(_ what: String, _ log: String, leads: Bool) -> String {
                componentPID(log) == nil ? "\(what) DOWN" : what + (leads ? " (leader)" : "")
            }
            let parts = [shown("etcd", "etcd-\(m.name)", leads: etcdLeader == m.name), shown("apiserver", "server-\(m.name)", leads: false),
                         shown("scheduler", "scheduler-\(m.name)", leads: holders["kube-scheduler"] == m.name),
                         shown("controller-manager", "controller-manager-\(m.name)", leads: holders["kube-controller-manager"] == m.name)]
            out += "  \(m.name): \(m.netns), \(m.address): \(parts.joined(separator: ", "))\n"
        }
        if let f = state.faults, !f.isEmpty { out += "  faults in place: \(f.joined(separator: ", ")) (netlab fault heal undoes them)\n" }
        return out
    }
}
