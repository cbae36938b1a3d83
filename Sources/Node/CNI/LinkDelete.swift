import Foundation
import Netlink

/// Deleting a veth pair: the kernel unlists the interface, removes its addresses and routes
/// under the RTNL lock, and then, still inside the deleting `sendmsg`, waits for an RCU
/// barrier and the last references before freeing it, about 20 ms on these machines. The
/// wait changes nothing anyone can observe. So DEL hands the request to a detached copy of
/// this binary and returns as soon as the interface is gone from the namespace; the copy
/// sits out the kernel's wait on its own. Every later link change on the node queues
/// behind the RTNL lock the deletion holds, so nothing can overtake it.
public enum LinkDelete {
    static let helperKey = "SWITCHYARD_CNI_DELETE_LINK"
    /// Set by the plugin executable: only then is this process's binary the plugin that can be
    /// re-run as the helper. Other callers of `BridgePlugin` (tests, daemons) delete in place.
    nonisolated(unsafe) public static var detached = false

    /// In the helper process: deletes the link named in the environment and exits.
    /// Returns (doing nothing) in a normal plugin run.
    public static func runHelperIfAsked() {
        guard let raw = getenv(helperKey) else { return }
        let spec = String(cString: raw)
        let parts = spec.split(separator: "|", maxSplits: 1).map(String.init)
        guard parts.count == 2, let index = Int32(parts[0]) else { exit(2) }
        do {
            let h = try RouteHandle(in: Namespace(path: parts[1]))
            try h.deleteLink(index: index)
            exit(0)
        } catch {
            exit(1)
        }
    }

    /// Deletes `name` in the namespace at `path`; returns once it is gone from the namespace.
    static func delete(_ name: String, in path: String, handle: RouteHandle) throws {
        guard let link = try handle.link(named: name) else { return }
        guard detached, let me = Exec.selfPath else {
            try handle.deleteLink(index: link.index)
            return
        }
        let pid: pid_t
        do {
            pid = try Exec.spawnDetached(me, [], env: [helperKey: "\(link.index)|\(path)"])
        } catch {
            try handle.deleteLink(index: link.index)
            return
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            guard let l = try handle.link(named: name), l.index == link.index else { return }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                // The helper is done; if the link is still there it failed: do it here, for the error.
                if let l = try handle.link(named: name), l.index == link.index { try handle.deleteLink(index: link.index) }
                return
            }
            usleep(200)
        }
        // Slow (a loaded machine): wait for the helper itself, then judge by the link.
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        if let l = try handle.link(named: name), l.index == link.index { try handle.deleteLink(index: link.index) }
    }
}
