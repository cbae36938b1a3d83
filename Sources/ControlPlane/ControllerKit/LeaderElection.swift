import Foundation
import Logging
import KubeAPI

/// Leader election through a coordination.k8s.io Lease, as client-go's leaderelection does it:
/// the candidate takes the Lease when it is free or its holder has not renewed it for
/// `leaseDuration` (measured on this clock from when the record last changed, never from the
/// holder's timestamps), renews it every `retryPeriod`, and stops leading when it could not
/// renew within `renewDeadline`. Upstream's defaults: 15 s, 10 s, 2 s.
public struct LeaderElector: Sendable {
    public let api: API
    public let namespace: String
    public let name: String
    /// This candidate (`hostname_uuid`, as upstream makes it).
    public let identity: String
    public var leaseDuration: Double = 15
    public var renewDeadline: Double = 10
    public var retryPeriod: Double = 2
    let logger: Logger

    public init(api: API, namespace: String = "kube-system", name: String, identity: String? = nil,
                logger: Logger = Logger(label: "switchyard.leaderelection")) {
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity ?? "\(ProcessInfo.processInfo.hostName)_\(UUID().uuidString.lowercased())"
        self.logger = logger
    }

    var path: String { API.path("coordination.k8s.io/v1", "leases", namespace: namespace, name: name) }

    public static func microTime(_ d: Date = Date()) -> String { RFC3339.format(d.timeIntervalSince1970, microseconds: true) }

    /// What was last seen of the Lease, and when (on this clock) it last changed.
    final class Observed: @unchecked Sendable {
        var holder = "", renew = "", at = Date.distantPast
    }

    /// One attempt to take or renew the Lease; true when this candidate holds it now.
    func tryAcquireOrRenew(_ seen: Observed) async -> Bool {
        let now = Date()
        let spec: JSONValue = ["holderIdentity": .string(identity), "leaseDurationSeconds": .int(Int64(leaseDuration)),
                               "acquireTime": .string(Self.microTime(now)), "renewTime": .string(Self.microTime(now)), "leaseTransitions": 0]
        do {
            let lease: JSONValue
            do {
                lease = try await api.get(path)
            } catch let e as APIStatusError where e.isNotFound {
                _ = try await api.create(API.path("coordination.k8s.io/v1", "leases", namespace: namespace),
                                         ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": ["name": .string(name), "namespace": .string(namespace)], "spec": spec])
                seen.holder = identity; seen.renew = spec["renewTime"]!.string!; seen.at = now
                return true
            }
            let holder = lease[path: ["spec", "holderIdentity"]]?.string ?? ""
            let renew = lease[path: ["spec", "renewTime"]]?.string ?? ""
            if holder != seen.holder || renew != seen.renew {
                seen.holder = holder; seen.renew = renew; seen.at = now
            }
            let duration = Double(lease[path: ["spec", "leaseDurationSeconds"]]?.int ?? Int64(leaseDuration))
            if !holder.isEmpty && holder != identity && now < seen.at.addingTimeInterval(duration) { return false }
            var updated = lease
            var s = spec
            if holder == identity {
                s["acquireTime"] = lease[path: ["spec", "acquireTime"]] ?? s["acquireTime"]
                s["leaseTransitions"] = lease[path: ["spec", "leaseTransitions"]] ?? 0
            } else {
                s["leaseTransitions"] = .int((lease[path: ["spec", "leaseTransitions"]]?.int ?? 0) + (holder.isEmpty ? 0 : 1))
            }
            updated["spec"] = s
            _ = try await api.update(path, updated)
            seen.holder = identity; seen.renew = s["renewTime"]!.string!; seen.at = now
            return true
        } catch {
            logger.debug("lease \(namespace)/\(name): \(error)")
            return false
        }
    }

    /// Waits to lead, then runs `lead` while leading. Returns when leadership is lost (after
    /// cancelling `lead`) or when cancelled (after giving the Lease up, so another candidate
    /// takes over at once).
    public func run(lead: @escaping @Sendable () async -> Void) async {
        let seen = Observed()
        var announced = false
        while !Task.isCancelled {
            if await tryAcquireOrRenew(seen) { break }
            if !announced {
                logger.info("attempting to acquire leader lease \(namespace)/\(name)...")
                announced = true
            }
            try? await Task.sleep(for: .milliseconds(Int(retryPeriod * 1000 * (1 + Double.random(in: 0..<0.2)))))
        }
        if Task.isCancelled { return }
        logger.info("successfully acquired lease \(namespace)/\(name)")
        let work = Task { await lead() }
        var lastRenew = Date()
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Int(retryPeriod * 1000)))
            if Task.isCancelled { break }
            if await tryAcquireOrRenew(seen) {
                lastRenew = Date()
            } else if Date().timeIntervalSince(lastRenew) > renewDeadline {
                logger.error("failed to renew lease \(namespace)/\(name): timed out waiting for the condition; leaderelection lost")
                work.cancel()
                return
            }
        }
        work.cancel()
        await release()
    }

    /// Gives the Lease up (holder emptied), as `ReleaseOnCancel` does.
    func release() async {
        guard var lease = try? await api.get(path), lease[path: ["spec", "holderIdentity"]]?.string == identity else { return }
        lease[path: ["spec", "holderIdentity"]] = nil
        lease[path: ["spec", "leaseDurationSeconds"]] = 1
        lease[path: ["spec", "renewTime"]] = .string(Self.microTime())
        _ = try? await api.update(path, lease)
    }
}
