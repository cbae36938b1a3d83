import CRI
import Foundation
import HostOS
import NetnsKit

/// A containerd of its own (Debian's containerd 1.6 with its CRI plugin, and runc): root, state,
/// socket, CNI directories and registry configuration under one directory, optionally started
/// inside a network namespace (a lab node's: the pods' veths then hang off that node's bridge).
/// `stop()` removes every pod it ran through CRI, then ends it and whatever it left (shims,
/// mounts) and removes the directory.
public final class ContainerdProcess: @unchecked Sendable {
    public static let binary = "/usr/bin/containerd"
    public static var available: Bool {
        FileManager.default.isExecutableFile(atPath: binary) && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc")
    }

    public struct Options: Sendable {
        /// Where the CNI plugins are (the runtime looks up each configuration's `type` there;
        /// containerd also needs a `loopback`).
        public var cniBinDir: String
        /// The `.conflist` the runtime reads (the kubelet writes it once it knows the pod CIDR).
        public var cniConfDir: String
        /// The lab registry (`HOST:PORT`): `docker.io` and the registry's own name resolve to it.
        public var registry: String?
        /// The pod sandbox's image.
        public var sandboxImage = "docker.io/switchyard/pause:latest"
        public var netns: String?
        public init(cniBinDir: String, cniConfDir: String, registry: String? = nil, netns: String? = nil) {
            self.cniBinDir = cniBinDir
            self.cniConfDir = cniConfDir
            self.registry = registry
            self.netns = netns
        }
    }

    public let dir: URL
    public let socket: String
    public var endpoint: String { "unix://" + socket }
    public let options: Options
    let process: Process

    public struct StartError: Error, CustomStringConvertible { public var description: String }

    /// The configuration file's text (version 2, as containerd 1.6 reads it).
    public static func config(dir: URL, socket: String, _ o: Options) -> String {
        let d = dir.path
        return """
            version = 2
            root = "\(d)/root"
            state = "\(d)/state"
            disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            [debug]
              address = ""
            [metrics]
              address = ""
            [plugins]
              [plugins."io.containerd.grpc.v1.cri"]
                sandbox_image = "\(o.sandboxImage)"
                stream_server_address = "127.0.0.1"
                stream_server_port = "0"
                enable_selinux = false
                disable_apparmor = true
                # Where this process may not lower its OOM score (a container, a sandboxed VM),
                # runc cannot set the sandbox's -998: containerd then keeps the score it may set.
                restrict_oom_score_adj = \(Self.oomScoreRestricted)
                [plugins."io.containerd.grpc.v1.cri".cni]
                  bin_dir = "\(o.cniBinDir)"
                  conf_dir = "\(o.cniConfDir)"
                [plugins."io.containerd.grpc.v1.cri".registry]
                  config_path = "\(d)/certs.d"
              [plugins."io.containerd.internal.v1.opt"]
                path = "\(d)/opt"

            """
    }

    /// Whether this process may not lower its OOM score adjustment (no CAP_SYS_RESOURCE): found
    /// by lowering it by one and putting it back.
    public static let oomScoreRestricted: Bool = {
        let path = "/proc/self/oom_score_adj"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let current = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return true }
        if current <= -1000 { return false }
        guard (try? Data("\(current - 1)".utf8).write(to: URL(fileURLWithPath: path))) != nil else { return true }
        try? Data("\(current)".utf8).write(to: URL(fileURLWithPath: path))
        return false
    }()

    /// hosts.toml that sends `docker.io` and the registry's own name to the plain-HTTP lab registry.
    public static func hosts(registry: String) -> [(host: String, toml: String)] {
        let toml = """
            server = "http://\(registry)"
            [host."http://\(registry)"]
              capabilities = ["pull", "resolve"]

            """
        return [("docker.io", toml), (registry, toml)]
    }

    /// Writes what a containerd for `socket` reads from `dir`: config.toml, the registry's
    /// hosts.toml, the CNI configuration directory. Returns the configuration's path.
    @discardableResult
    public static func prepare(dir: URL, socket: String, _ options: Options) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        for h in options.registry.map(Self.hosts) ?? [] {
            let (host, toml) = (h.host, h.toml)
            let d = dir.appendingPathComponent("certs.d").appendingPathComponent(host)
            try fm.createDirectory(at: d, withIntermediateDirectories: true)
            try Data(toml.utf8).write(to: d.appendingPathComponent("hosts.toml"))
        }
        try fm.createDirectory(atPath: options.cniConfDir, withIntermediateDirectories: true)
        let configPath = dir.appendingPathComponent("config.toml")
        try Data(Self.config(dir: dir, socket: socket, options).utf8).write(to: configPath)
        return configPath
    }

    public init(dir: URL, _ options: Options) throws {
        self.dir = dir
        self.options = options
        // A unix socket's path has room for 107 bytes: the socket lives in a short directory of its own.
        socket = "/run/sy-ctd-\(UUID().uuidString.prefix(8).lowercased()).sock"
        let fm = FileManager.default
        let configPath = try Self.prepare(dir: dir, socket: socket, options)
        let log = dir.appendingPathComponent("containerd.log")
        _ = fm.createFile(atPath: log.path, contents: nil)
        // nsenter, not `ip netns exec`: that one mounts a sysfs of the namespace over /sys, which
        // hides /sys/fs/cgroup from containerd and runc ("no cgroup mount found in mountinfo").
        process = CommandRunner.process((options.netns.map { ["nsenter", "--net=/run/netns/\($0)"] } ?? []) + [Self.binary, "--config", configPath.path, "--log-level", ProcessInfo.processInfo.environment["SWITCHYARD_CONTAINERD_LOG_LEVEL"] ?? "warn"])
        process.standardOutput = try FileHandle(forWritingTo: log)
        process.standardError = process.standardOutput
        try process.run()
        for _ in 0..<200 where process.isRunning {
            if fm.fileExists(atPath: socket) { return }
            usleep(25_000)
        }
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? fm.removeItem(at: dir)
        throw StartError(description: "containerd did not start: \(text.suffix(600))")
    }

    /// The last lines of its log (for a failing test's message).
    public func logTail(_ bytes: Int = 2000) -> String {
        String(((try? String(contentsOf: dir.appendingPathComponent("containerd.log"), encoding: .utf8)) ?? "").suffix(bytes))
    }

    /// Every pod sandbox it runs stopped and removed through CRI (their containers, network
    /// namespaces and CNI allocations with them); then containerd, its shims and its mounts.
    public func stop() async {
        await Self.cleanUp(socket: socket, dir: dir, process: process)
    }

    /// What `stop()` does, also for a containerd this process did not start (netlab's, found
    /// by its socket and directory): every pod sandbox removed through CRI when it answers,
    /// then it (`process`, or whatever listens on `socket`), its shims, what the shims still
    /// run (when CRI could not remove it), their network namespaces and its mounts.
    public static func cleanUp(socket: String, dir: URL, process: Process? = nil) async {
        if FileManager.default.fileExists(atPath: socket), let cri = try? CRIClient(endpoint: "unix://" + socket, timeout: .seconds(30)) {
            if let pods = try? await cri.listPodSandbox(nil) {
                for p in pods {
                    try? await cri.stopPodSandbox(p.id)
                    try? await cri.removePodSandbox(p.id)
                }
            }
            cri.close()
        }
        if let process, process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        let others = Self.processes(matching: "containerd --config \(dir.path)/config.toml")
        for pid in others { kill(pid, SIGTERM) }
        for _ in 0..<100 where others.contains(where: { kill($0, 0) == 0 && !isZombie($0) }) { usleep(50_000) }
        for pid in others { kill(pid, SIGKILL) }
        // Shims outlive containerd by design: those started for this socket go too, with
        // what they run, and the network namespaces of what they ran.
        let shims = Self.processes(matching: "-address \(socket)")
        let left = descendants(of: shims)
        let namespaces = Set(left.compactMap { Self.netnsInode($0) })
        for pid in shims + left { kill(pid, SIGKILL) }
        if !namespaces.isEmpty {
            let fm = FileManager.default
            for name in (try? fm.contentsOfDirectory(atPath: "/run/netns")) ?? [] where name.hasPrefix("cni-") {
                var st = stat()
                if stat("/run/netns/\(name)", &st) == 0, namespaces.contains(UInt64(st.st_ino)) {
                    umount2("/run/netns/\(name)", Int32(MNT_DETACH))
                    unlink("/run/netns/\(name)")
                }
            }
        }
        unmountAll(under: dir.path)
        try? FileManager.default.removeItem(at: dir)
        try? FileManager.default.removeItem(atPath: socket)
        try? FileManager.default.removeItem(atPath: socket + ".ttrpc")
    }

    /// Unmounts whatever is mounted under `path` (overlay root filesystems, shm), deepest first.
    public static func unmountAll(under path: String) {
        let mounts = ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "")
            .split(separator: "\n").compactMap { $0.split(separator: " ").dropFirst(4).first.map(String.init) }
            .filter { $0.hasPrefix(path + "/") }.sorted { $0.count > $1.count }
        for m in mounts { umount2(m, Int32(MNT_DETACH)) }
    }

    static func isZombie(_ pid: Int32) -> Bool { ProcStat(pid)?.isZombie ?? true }

    /// The inode of `pid`'s network namespace.
    static func netnsInode(_ pid: Int32) -> UInt64? {
        var st = stat()
        return stat("/proc/\(pid)/ns/net", &st) == 0 ? UInt64(st.st_ino) : nil
    }

    /// Every process below `roots` (children, their children, …).
    static func descendants(of roots: [Int32]) -> [Int32] {
        let fm = FileManager.default
        var children: [Int32: [Int32]] = [:]
        for pid in ((try? fm.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap({ Int32($0) }) {
            if let ppid = ProcStat(pid)?.ppid { children[ppid, default: []].append(pid) }
        }
        var out: [Int32] = []
        var queue = roots
        while let p = queue.popLast() {
            for c in children[p] ?? [] { out.append(c); queue.append(c) }
        }
        return out
    }

    /// Processes whose command line contains `text`.
    static func processes(matching text: String) -> [Int32] {
        let fm = FileManager.default
        return ((try? fm.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }.filter { pid in
            guard let raw = fm.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let cmdline = String(decoding: raw.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
            return cmdline.contains(text)
        }
    }
}
