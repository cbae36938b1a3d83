import Foundation
import Netlink

/// `switchyard cni install DIR`: the plugin binary and its three names in a CNI bin
/// directory, and a sample network configuration list in a conf directory.
public struct CNIInstaller {
    public static let pluginNames = ["switchyard-bridge", "switchyard-host-local", "switchyard-loopback"]
    public static let conflistName = "10-switchyard.conflist"

    public var binary: String
    public var binDir: String
    public var confDir: String
    public var network = "switchyard"
    public var bridge = "cni0"
    public var subnet = "10.244.0.0/24"

    public init(binary: String, binDir: String, confDir: String? = nil) {
        self.binary = binary
        self.binDir = binDir
        self.confDir = confDir ?? binDir
    }

    /// The sample `.conflist`: our bridge with host-local, then the reference `portmap` when
    /// the bin directory has one (runtimes look for every plugin of a list there).
    public func conflist(withPortmap: Bool) throws -> Data {
        var plugins: [[String: Any]] = [[
            "type": "switchyard-bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": ["type": "switchyard-host-local", "ranges": [[["subnet": subnet]]], "routes": [["dst": "0.0.0.0/0"]]],
        ]]
        if withPortmap { plugins.append(["type": "portmap", "capabilities": ["portMappings": true], "snat": true]) }
        let list: [String: Any] = ["cniVersion": "1.0.0", "name": network, "plugins": plugins]
        return Data((JSON.serialize(list) + "\n").utf8)
    }

    /// Installs; every file appears whole (written aside, then renamed), so a runtime that
    /// runs a plugin meanwhile sees the old one or the new one. Returns the paths written.
    @discardableResult
    public func install() throws -> [String] {
        let fm = FileManager.default
        guard fm.isExecutableFile(atPath: binary) else {
            throw CNIError(CNIError.other, "plugin binary \(binary) not found: build it first (swift build)")
        }
        guard subnet.contains("/"), let net = IPNet(subnet), net.network == net else {
            throw CNIError(CNIError.invalidConfig, "invalid subnet \(subnet): want a network such as 10.244.0.0/24")
        }
        for d in Set([binDir, confDir]) { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
        var written: [String] = []
        let target = (binDir as NSString).appendingPathComponent("switchyard-cni")
        try place(try Data(contentsOf: URL(fileURLWithPath: binary)), at: target, mode: 0o755)
        written.append(target)
        for name in Self.pluginNames {
            let link = (binDir as NSString).appendingPathComponent(name)
            let tmp = link + ".tmp-\(getpid())"
            try? fm.removeItem(atPath: tmp)
            try fm.createSymbolicLink(atPath: tmp, withDestinationPath: "switchyard-cni")
            guard rename(tmp, link) == 0 else { throw CNIError(CNIError.ioFailure, "rename \(tmp) to \(link): errno \(errno)") }
            written.append(link)
        }
        let withPortmap = fm.isExecutableFile(atPath: (binDir as NSString).appendingPathComponent("portmap"))
        let conf = (confDir as NSString).appendingPathComponent(Self.conflistName)
        try place(try conflist(withPortmap: withPortmap), at: conf, mode: 0o644)
        written.append(conf)
        return written
    }

    private func place(_ data: Data, at path: String, mode: Int) throws {
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: mode]) else {
            throw CNIError(CNIError.ioFailure, "cannot write \(tmp)")
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            try? FileManager.default.removeItem(atPath: tmp)
            throw CNIError(CNIError.ioFailure, "rename \(tmp) to \(path): errno \(e)")
        }
    }
}
