import IPTablesKit
import Logging
import ProxySeam

/// What the proxy modes leave in the kernel, found and removed: by `proxy --cleanup` (every mode),
/// and when a proxy starts (every mode but its own, as upstream kube-proxy removes the other
/// modes' rules at start), so rules of a mode that no longer runs never stay in charge of traffic.
enum Leftovers {
    /// Removes the leftovers of `modes`, in their removal order; logs each mode whose state was
    /// there and is gone, and returns the errors (by mode) of those that could not be removed.
    @discardableResult
    static func remove(_ modes: [ProxyMode], keeping running: String?, logger: Logger) async -> [(String, any Error)] {
        var failures: [(String, any Error)] = []
        var removedAny = false
        // One look at the iptables tables, for the marks the iptables-based modes leave.
        let scan = LeftoverScan(running: running, iptablesSave: try? SystemIPTables().save(tables: ["filter", "nat", "mangle"]))
        let order = modes.enumerated().sorted { ($0.element.removalOrder, $0.offset) < ($1.element.removalOrder, $1.offset) }
        for mode in order.map(\.element) {
            do {
                guard let what = try await mode.removeLeftovers(scan) else { continue }
                removedAny = true
                if let running {
                    logger.info("removed \(what), left by an earlier proxy in the \(mode.name) mode (this proxy runs the \(running) mode)")
                } else {
                    logger.info("removed \(what)")
                }
            } catch {
                failures.append((mode.name, error))
                logger.error("removing what the \(mode.name) mode left: \(error)")
            }
        }
        if running == nil && !removedAny && failures.isEmpty { logger.info("nothing to remove: no proxy mode left rules here") }
        return failures
    }
}
