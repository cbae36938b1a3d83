import Foundation
import HostOS

/// The images a lab runs, built on this machine from files it has: no image comes from outside.
/// Their names are short (`switchyard/busybox:latest`); every node's containerd resolves
/// `docker.io` to the lab's registry, as kind's local registry works.
public enum LabImages {
    /// Where Debian's busybox-static puts its one binary.
    public static let busyboxPath = "/bin/busybox"

    /// A root filesystem of busybox: the binary, a link per applet in /bin, the usual
    /// directories, root and nobody in /etc/passwd and /etc/group.
    public static func busyboxLayer(busybox: String = busyboxPath) throws -> Data {
        let binary = try Data(contentsOf: URL(fileURLWithPath: busybox))
        let applets = try CommandRunner().run([busybox, "--list"]).stdout
            .split(separator: "\n").map(String.init).filter { !$0.isEmpty && $0 != "busybox" }
        var tar = TarWriter()
        for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "var", "root", "home"] {
            try tar.directory(d, mode: d == "tmp" ? 0o1777 : 0o755)
        }
        try tar.file("bin/busybox", binary, mode: 0o755)
        for a in applets.sorted() { try tar.symlink("bin/\(a)", to: "busybox") }
        try tar.file("etc/passwd", Data("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n".utf8))
        try tar.file("etc/group", Data("root:x:0:\nnobody:x:65534:\n".utf8))
        tar.finish()
        return tar.data
    }

    /// `switchyard/busybox:latest`: busybox, `sh` by default.
    public static func busybox(layer: Data) -> OCIImage {
        OCIImage(layers: [layer], run: .init(cmd: ["sh"]))
    }

    /// `switchyard/pause:latest`, the pod sandbox's image: a process that only waits (the
    /// runtime kills it with SIGKILL when the pod goes).
    public static func pause(layer: Data) -> OCIImage {
        OCIImage(layers: [layer], run: .init(entrypoint: ["/bin/sleep", "2147483647"]))
    }

    /// `switchyard/echo:latest`: this project's statically linked `switchyard-echo` and nothing
    /// else (a `/tmp`), serving what netlab's pods serve: HTTP on 8080 answering with the pod's
    /// name and the client's address, TCP echo and a UDP answer on 9090.
    public static func echo(binary: String) throws -> OCIImage {
        var tar = TarWriter()
        for d in ["bin", "tmp", "etc"] { try tar.directory(d, mode: d == "tmp" ? 0o1777 : 0o755) }
        try tar.file("bin/switchyard-echo", try Data(contentsOf: URL(fileURLWithPath: binary)), mode: 0o755)
        try tar.file("etc/passwd", Data("root:x:0:0:root:/:/bin/switchyard-echo\nnobody:x:65534:65534:nobody:/:/bin/false\n".utf8))
        tar.finish()
        return OCIImage(layers: [tar.data], run: .init(entrypoint: ["/bin/switchyard-echo"], cmd: ["--http", "8080", "--echo", "9090", "--udp", "9090"],
                                                 exposedPorts: ["8080/tcp", "9090/tcp", "9090/udp"]))
    }

    /// `switchyard/iperf3:latest`: this machine's iperf3 with the shared libraries `ldd` names
    /// (each at the path the loader looks for it), serving on 5201.
    public static func iperf3(binary: String = "/usr/bin/iperf3") throws -> OCIImage {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw RegistryClient.PushError(description: "\(binary) is missing: install iperf3 (scripts/setup.sh does)")
        }
        let ldd = try CommandRunner().run(["ldd", binary]).stdout
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
        var files = [binary]
        for line in ldd.split(separator: "\n") {
            let words = line.split(separator: " ").map { $0.trimmingCharacters(in: .whitespaces) }
            if let arrow = words.firstIndex(of: "=>"), arrow + 1 < words.count, words[arrow + 1].hasPrefix("/") { files.append(words[arrow + 1]) }
            else if let first = words.first, first.hasPrefix("/") { files.append(first) }
        }
        var tar = TarWriter()
        var made: Set<String> = []
        for d in ["tmp", "etc"] { try tar.directory(d, mode: d == "tmp" ? 0o1777 : 0o755); made.insert(d) }
        for f in files {
            let path = String(f.dropFirst())
            var parent = ""
            for part in path.split(separator: "/").dropLast() {
                parent += parent.isEmpty ? String(part) : "/\(part)"
                if made.insert(parent).inserted { try tar.directory(parent) }
            }
            let real = URL(fileURLWithPath: f).resolvingSymlinksInPath()
            try tar.file(path, try Data(contentsOf: real), mode: 0o755)
        }
        try tar.file("etc/passwd", Data("root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n".utf8))
        tar.finish()
        return OCIImage(layers: [tar.data], run: .init(entrypoint: [binary], cmd: ["-s", "-p", "5201"], exposedPorts: ["5201/tcp"]))
    }

    /// Every lab image, built and pushed; their names. `switchyard/echo` is among them when the
    /// `switchyard-echo` binary is given, `switchyard/iperf3` when asked for.
    public static func pushAll(to client: RegistryClient, busybox: String = busyboxPath, echo echoBinary: String? = nil,
                               iperf3: Bool = false) async throws -> [String] {
        let layer = try busyboxLayer(busybox: busybox)
        var images = [("switchyard/busybox", Self.busybox(layer: layer)), ("switchyard/pause", Self.pause(layer: layer))]
        if let echoBinary { images.append(("switchyard/echo", try Self.echo(binary: echoBinary))) }
        if iperf3 { images.append(("switchyard/iperf3", try Self.iperf3())) }
        for (repository, image) in images { try await client.push(image, repository: repository, tag: "latest") }
        return images.map { "\($0.0):latest" }
    }
}
