import Foundation

/// The CNI spec's versions this implementation speaks (1.1.0 adds GC and STATUS).
public enum CNIVersion {
    public static let current = "1.1.0"
    public static let supported = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

    /// Whether `v` is at least `min` (both dotted).
    public static func atLeast(_ v: String, _ min: String) -> Bool {
        let a = v.split(separator: ".").map { Int($0) ?? 0 }, b = min.split(separator: ".").map { Int($0) ?? 0 }
        for i in 0..<3 {
            let x = i < a.count ? a[i] : 0, y = i < b.count ? b[i] : 0
            if x != y { return x > y }
        }
        return true
    }
}

/// A plugin error as the spec prints it on stdout, with its well-known codes.
public struct CNIError: Error, CustomStringConvertible, Sendable {
    public var code: Int
    public var msg: String
    public var details: String?

    public init(_ code: Int, _ msg: String, details: String? = nil) {
        self.code = code
        self.msg = msg
        self.details = details
    }

    public static let incompatibleVersion = 1
    public static let unsupportedField = 2
    public static let unknownContainer = 3
    public static let invalidEnvironment = 4
    public static let ioFailure = 5
    public static let decodingFailure = 6
    public static let invalidConfig = 7
    public static let tryAgainLater = 11
    public static let notAvailable = 50
    public static let limitedConnectivity = 51
    /// Anything else (the reference plugins use 999).
    public static let other = 999

    public var description: String { details.map { "\(msg): \($0)" } ?? msg }

    public func json(version: String) -> [String: Any] {
        var o: [String: Any] = ["cniVersion": version, "code": code, "msg": msg]
        if let details { o["details"] = details }
        return o
    }
}

/// One interface of a result.
public struct ResultInterface: Equatable, Sendable {
    public var name: String
    public var mac: String
    public var sandbox: String?
    public init(name: String, mac: String, sandbox: String? = nil) {
        self.name = name
        self.mac = mac
        self.sandbox = sandbox
    }
}

/// One address of a result.
public struct ResultIP: Equatable, Sendable {
    /// `10.1.0.5/16`.
    public var address: String
    public var gateway: String?
    /// Index into `interfaces`.
    public var interface: Int?
    public init(address: String, gateway: String? = nil, interface: Int? = nil) {
        self.address = address
        self.gateway = gateway
        self.interface = interface
    }
    public var isIPv6: Bool { address.contains(":") }
}

public struct ResultRoute: Equatable, Sendable {
    public var dst: String
    public var gw: String?
    public var mtu: Int?
    public var advmss: Int?
    public var priority: Int?
    public init(dst: String, gw: String? = nil, mtu: Int? = nil, advmss: Int? = nil, priority: Int? = nil) {
        self.dst = dst
        self.gw = gw
        self.mtu = mtu
        self.advmss = advmss
        self.priority = priority
    }
}

/// A plugin's result in the current (1.x) shape; `json(version:)` converts it for
/// callers that asked for 0.3.x or 0.4.0 (IPs carry a `version` there).
public struct CNIResult: Equatable, Sendable {
    public var interfaces: [ResultInterface] = []
    public var ips: [ResultIP] = []
    public var routes: [ResultRoute] = []
    public var dns: [String: [String]] = [:]

    public init(interfaces: [ResultInterface] = [], ips: [ResultIP] = [], routes: [ResultRoute] = []) {
        self.interfaces = interfaces
        self.ips = ips
        self.routes = routes
    }

    public func json(version: String) -> [String: Any] {
        var o: [String: Any] = ["cniVersion": version]
        let legacy = !CNIVersion.atLeast(version, "1.0.0")
        if !interfaces.isEmpty {
            o["interfaces"] = interfaces.map { i -> [String: Any] in
                var d: [String: Any] = ["name": i.name, "mac": i.mac]
                if let s = i.sandbox { d["sandbox"] = s }
                return d
            }
        }
        if !ips.isEmpty {
            o["ips"] = ips.map { ip -> [String: Any] in
                var d: [String: Any] = ["address": ip.address]
                if legacy { d["version"] = ip.isIPv6 ? "6" : "4" }
                if let g = ip.gateway { d["gateway"] = g }
                if let i = ip.interface { d["interface"] = i }
                return d
            }
        }
        if !routes.isEmpty {
            o["routes"] = routes.map { r -> [String: Any] in
                var d: [String: Any] = ["dst": r.dst]
                if let g = r.gw { d["gw"] = g }
                if !legacy {
                    if let m = r.mtu { d["mtu"] = m }
                    if let m = r.advmss { d["advmss"] = m }
                    if let p = r.priority { d["priority"] = p }
                }
                return d
            }
        }
        o["dns"] = dns
        return o
    }

    /// Reads a result of any supported version (as a delegated IPAM plugin prints it, or a prevResult).
    public init(json o: [String: Any]) throws {
        for i in o["interfaces"] as? [[String: Any]] ?? [] {
            interfaces.append(ResultInterface(name: i["name"] as? String ?? "", mac: i["mac"] as? String ?? "", sandbox: i["sandbox"] as? String))
        }
        for ip in o["ips"] as? [[String: Any]] ?? [] {
            guard let a = ip["address"] as? String else { throw CNIError(CNIError.decodingFailure, "result IP without an address") }
            ips.append(ResultIP(address: a, gateway: ip["gateway"] as? String, interface: ip["interface"] as? Int))
        }
        for r in o["routes"] as? [[String: Any]] ?? [] {
            guard let d = r["dst"] as? String else { throw CNIError(CNIError.decodingFailure, "result route without dst") }
            routes.append(ResultRoute(dst: d, gw: r["gw"] as? String, mtu: r["mtu"] as? Int, advmss: r["advmss"] as? Int, priority: r["priority"] as? Int))
        }
        if let d = o["dns"] as? [String: Any] {
            for (k, v) in d { if let a = v as? [String] { dns[k] = a } else if let s = v as? String { dns[k] = [s] } }
        }
    }
}

/// What a plugin is asked to do: the spec's environment variables and stdin.
public struct CNIRequest: @unchecked Sendable {
    public var command: String
    public var containerID: String
    public var netns: String?
    public var ifname: String
    /// `CNI_ARGS`: `K=V;K2=V2`.
    public var args: [String: String]
    public var path: [String]
    /// The network configuration from stdin, as JSON.
    public var config: [String: Any]
    public var raw: Data

    public var cniVersion: String { config["cniVersion"] as? String ?? "0.3.0" }
    public var name: String { config["name"] as? String ?? "" }

    public init(command: String, containerID: String, netns: String?, ifname: String, args: [String: String],
                path: [String], raw: Data) throws {
        self.command = command
        self.containerID = containerID
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.raw = raw
        if command == "VERSION" && String(decoding: raw, as: UTF8.self).allSatisfy(\.isWhitespace) {
            config = [:]
        } else {
            guard let o = (try? JSON.parse([UInt8](raw))) as? [String: Any] else {
                throw CNIError(CNIError.decodingFailure, "cannot decode the network configuration on stdin as a JSON object")
            }
            config = o
        }
    }

    /// Reads the request from the process environment and stdin, checking what the command needs.
    /// A variable of the process environment, read with getenv(3): building the whole
    /// environment as a dictionary costs a short-lived plugin a measurable part of its run.
    public static func processVariable(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    public static func fromEnvironment(_ env: (String) -> String? = processVariable,
                                       stdin: Data = Data(Files.readAll(0))) throws -> CNIRequest {
        guard let cmd = env("CNI_COMMAND"), !cmd.isEmpty else {
            throw CNIError(CNIError.invalidEnvironment, "CNI_COMMAND is not set")
        }
        var args: [String: String] = [:]
        for kv in (env("CNI_ARGS") ?? "").split(separator: ";") {
            let p = kv.split(separator: "=", maxSplits: 1)
            if p.count == 2 { args[String(p[0])] = String(p[1]) }
        }
        let r = try CNIRequest(command: cmd, containerID: env("CNI_CONTAINERID") ?? "", netns: env("CNI_NETNS").flatMap { $0.isEmpty ? nil : $0 },
                               ifname: env("CNI_IFNAME") ?? "", args: args,
                               path: (env("CNI_PATH") ?? "").split(separator: ":").map(String.init), raw: stdin)
        switch cmd {
        case "ADD", "CHECK":
            var missing: [String] = []
            if r.containerID.isEmpty { missing.append("CNI_CONTAINERID") }
            if r.netns == nil { missing.append("CNI_NETNS") }
            if r.ifname.isEmpty { missing.append("CNI_IFNAME") }
            if !missing.isEmpty {
                throw CNIError(CNIError.invalidEnvironment, "required env variables [\(missing.joined(separator: ","))] missing")
            }
        case "DEL":
            var missing: [String] = []
            if r.containerID.isEmpty { missing.append("CNI_CONTAINERID") }
            if r.ifname.isEmpty { missing.append("CNI_IFNAME") }
            if !missing.isEmpty {
                throw CNIError(CNIError.invalidEnvironment, "required env variables [\(missing.joined(separator: ","))] missing")
            }
        case "VERSION", "GC", "STATUS":
            break
        default:
            throw CNIError(CNIError.invalidEnvironment, "unknown CNI_COMMAND \(cmd)")
        }
        // The reference skel's checks: these names end up in file paths, chain names, rule
        // comments and nft scripts.
        if !r.containerID.isEmpty && !Self.isValidName(r.containerID) {
            throw CNIError(CNIError.invalidEnvironment, "invalid characters in containerID", details: r.containerID)
        }
        if !r.ifname.isEmpty {
            guard r.ifname.utf8.count <= 15, r.ifname != ".", r.ifname != "..",
                  !r.ifname.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }) else {
                throw CNIError(CNIError.invalidEnvironment, "interface name is invalid", details: r.ifname)
            }
        }
        if cmd != "VERSION" {
            guard !r.name.isEmpty, Self.isValidName(r.name) else {
                throw CNIError(CNIError.invalidConfig, "invalid characters found in network name", details: r.name)
            }
            guard CNIVersion.supported.contains(r.cniVersion) else {
                throw CNIError(CNIError.incompatibleVersion, "incompatible CNI versions", details: "config is \"\(r.cniVersion)\", plugin supports \(CNIVersion.supported)")
            }
            if (cmd == "GC" || cmd == "STATUS") && !CNIVersion.atLeast(r.cniVersion, "1.1.0") {
                throw CNIError(CNIError.incompatibleVersion, "\(cmd) needs cniVersion 1.1.0 or later")
            }
        }
        return r
    }

    /// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, as libcni validates container IDs and network names.
    static func isValidName(_ s: String) -> Bool {
        let ok: (UInt8) -> Bool = { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2e || c == 0x2d
        }
        guard let first = s.utf8.first, ok(first), first != 0x5f, first != 0x2e, first != 0x2d else { return false }
        return s.utf8.allSatisfy(ok)
    }
}

/// A plugin: one handler per command.
public protocol CNIPlugin {
    func add(_ r: CNIRequest) throws -> CNIResult
    func del(_ r: CNIRequest) throws
    func check(_ r: CNIRequest) throws
    /// Releases what belongs to attachments not in `cni.dev/valid-attachments`.
    func gc(_ r: CNIRequest) throws
    func status(_ r: CNIRequest) throws
}

public enum CNIMain {
    /// Runs `plugin` for the process's environment and stdin; prints the result
    /// or the error as JSON and returns the exit status (0 or 1).
    public static func run(_ plugin: any CNIPlugin, about: String) -> Int32 {
        var version = CNIVersion.current
        do {
            let r = try CNIRequest.fromEnvironment()
            version = (r.config["cniVersion"] as? String) ?? version
            switch r.command {
            case "VERSION":
                emit(["cniVersion": CNIVersion.current, "supportedVersions": CNIVersion.supported])
            case "ADD":
                emit(try plugin.add(r).json(version: r.cniVersion))
            case "DEL":
                try plugin.del(r)
            case "CHECK":
                try plugin.check(r)
            case "GC":
                try plugin.gc(r)
            case "STATUS":
                try plugin.status(r)
            default:
                throw CNIError(CNIError.invalidEnvironment, "unknown CNI_COMMAND \(r.command)")
            }
            return 0
        } catch let e as CNIError {
            emit(e.json(version: version))
        } catch {
            emit(CNIError(CNIError.other, "\(error)").json(version: version))
        }
        _ = about
        return 1
    }

    static func emit(_ o: [String: Any]) {
        Files.writeAll(1, Array((JSON.serialize(o) + "\n").utf8))
    }
}

extension CNIRequest {
    /// The prevResult of a chained call, if any.
    public var prevResult: CNIResult? {
        get throws {
            guard let p = config["prevResult"] as? [String: Any] else { return nil }
            return try CNIResult(json: p)
        }
    }
}
