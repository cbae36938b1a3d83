import Foundation
import Netlink

/// The loopback plugin: sets `lo` up in the container's namespace.
public struct LoopbackPlugin: CNIPlugin {
    public init() {}

    func namespace(_ r: CNIRequest) throws -> Namespace {
        guard let ns = r.netns else { throw CNIError(CNIError.invalidEnvironment, "CNI_NETNS is required") }
        guard FileManager.default.fileExists(atPath: ns) else {
            throw CNIError(CNIError.other, "failed to open netns \"\(ns)\": no such file or directory")
        }
        return Namespace(path: ns)
    }

    public func add(_ r: CNIRequest) throws -> CNIResult {
        let ns = try namespace(r)
        let h = try RouteHandle(in: ns)
        try h.setUp("lo")
        return CNIResult(interfaces: [ResultInterface(name: "lo", mac: "00:00:00:00:00:00", sandbox: r.netns)],
                         ips: [ResultIP(address: "127.0.0.1/8", interface: 0), ResultIP(address: "::1/128", interface: 0)])
    }

    public func del(_ r: CNIRequest) throws {
        // Without a namespace (already gone) there is nothing to do.
        guard let ns = r.netns, FileManager.default.fileExists(atPath: ns) else { return }
        try? RouteHandle(in: Namespace(path: ns)).setUp("lo", false)
    }

    public func check(_ r: CNIRequest) throws {
        let h = try RouteHandle(in: try namespace(r))
        guard try h.mustLink("lo").isUp else { throw CNIError(CNIError.other, "loopback interface is down") }
    }

    public func gc(_ r: CNIRequest) throws {}
    public func status(_ r: CNIRequest) throws {}
}
