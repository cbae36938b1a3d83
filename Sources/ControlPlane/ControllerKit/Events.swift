import Foundation
import Logging
import Synchronization
import KubeAPI

/// Records Events about objects, as client-go's event recorders: best effort and in the
/// background (a queue of 1,000; when it is full, events are dropped, as upstream's broadcaster
/// drops them). In the `core` style (client-go's `tools/record`, the controllers') a repeat of
/// the same event (object, type, reason, message) increments the first one's `count`; in the
/// `eventsV1` style (`tools/events`, the scheduler's) events are events.k8s.io/v1 ones with an
/// action and a reporting controller and instance, sent several at once, and a repeat becomes
/// the first one's `series`.
public final class EventRecorder: Sendable {
    let api: API
    /// `source.component`, or `reportingController` (`default-scheduler`, `replicaset-controller`).
    public let component: String
    let host: String
    let logger: Logger
    public let style: Style

    public enum Style: Sendable {
        case core
        case eventsV1
    }
    struct State {
        var pending: [JSONValue] = []
        var wake: CheckedContinuation<Void, Never>?
        /// Recent events by what makes them the same, with their name and count.
        var seen: [String: (name: String, namespace: String, count: Int64)] = [:]
        var dropped = 0
    }
    let state = Mutex(State())
    static let capacity = 1000

    public init(api: API, component: String, host: String = "", style: Style = .core, logger: Logger = Logger(label: "switchyard.events")) {
        self.api = api
        self.component = component
        self.host = host
        self.style = style
        self.logger = logger
    }

    /// Records an event about `object` (a full object, or at least its kind, apiVersion and metadata).
    /// `action` is what the events.k8s.io/v1 style records as the event's action (`Binding`).
    public func record(_ object: JSONValue, type: String = "Normal", reason: String, message: String, action: String = "",
                       kind: String? = nil, apiVersion: String? = nil) {
        let ref: JSONValue = ["kind": .string(kind ?? object["kind"]?.string ?? ""), "apiVersion": .string(apiVersion ?? object["apiVersion"]?.string ?? ""),
                              "namespace": .string(object.namespace), "name": .string(object.name), "uid": .string(object.uid),
                              "resourceVersion": .string(object[path: ["metadata", "resourceVersion"]]?.string ?? "")]
        let e: JSONValue = ["involvedObject": ref, "type": .string(type), "reason": .string(reason), "message": .string(message), "action": .string(action)]
        let wake = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.pending.count < Self.capacity else { s.dropped += 1; return nil }
            s.pending.append(e)
            defer { s.wake = nil }
            return s.wake
        }
        wake?.resume()
    }

    /// Sends what is recorded, until cancelled.
    public func run() async {
        while !Task.isCancelled {
            let batch = state.withLock { s -> [JSONValue] in defer { s.pending.removeAll() }; return s.pending }
            if batch.isEmpty {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        let now = state.withLock { s -> Bool in
                            if !s.pending.isEmpty || Task.isCancelled { return true }
                            s.wake = c
                            return false
                        }
                        if now { c.resume() }
                    }
                } onCancel: {
                    let w = state.withLock { s -> CheckedContinuation<Void, Never>? in defer { s.wake = nil }; return s.wake }
                    w?.resume()
                }
                continue
            }
            if style == .eventsV1 {
                // As client-go's events library, which records each event in a goroutine of its
                // own: several at once (16), so a burst of scheduled pods has its events.
                await withTaskGroup(of: Void.self) { g in
                    var running = 0
                    for e in batch {
                        if running == 16 { await g.next(); running -= 1 }
                        g.addTask { await self.send(e) }
                        running += 1
                    }
                }
            } else {
                for e in batch { await send(e) }
            }
        }
    }

    func send(_ e: JSONValue) async {
        let ref = e["involvedObject"] ?? [:]
        let ns = ref["namespace"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        let same = [ref["uid"]?.string ?? "", e["type"]?.string ?? "", e["reason"]?.string ?? "", e["message"]?.string ?? "",
                    e["action"]?.string ?? ""].joined(separator: "\u{0}")
        let now = LeaderElector.microTime()
        let seconds = String(now.prefix(19)) + "Z"
        let v1 = style == .eventsV1
        let groupVersion = v1 ? "events.k8s.io/v1" : "v1"
        // A repeat: the first event's count, or its series.
        if let known = state.withLock({ $0.seen[same] }) {
            let count = known.count + 1
            let change: JSONValue = v1 ? ["series": ["count": .int(count), "lastObservedTime": .string(now)]]
                                       : ["count": .int(count), "lastTimestamp": .string(seconds)]
            if (try? await api.mergePatch(API.path(groupVersion, "events", namespace: known.namespace, name: known.name), change)) != nil {
                state.withLock { $0.seen[same]?.count = count }
                return
            }
        }
        let name = "\(ref["name"]?.string ?? "event").\(String(UInt64(Date().timeIntervalSince1970 * 1e9), radix: 16))"
        let event: JSONValue
        if v1 {
            event = ["apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": ["name": .string(name), "namespace": .string(ns)],
                     "eventTime": .string(now), "regarding": ref, "type": e["type"] ?? "Normal", "reason": e["reason"] ?? "",
                     "action": e["action"] ?? "", "note": e["message"] ?? "",
                     "reportingController": .string(component), "reportingInstance": .string(instance)]
        } else {
            var core = e
            core["action"] = nil
            core["metadata"] = ["name": .string(name), "namespace": .string(ns)]
            core["source"] = host.isEmpty ? ["component": .string(component)] : ["component": .string(component), "host": .string(host)]
            core["reportingComponent"] = .string(component)
            core["reportingInstance"] = .string(host)
            core["firstTimestamp"] = .string(seconds)
            core["lastTimestamp"] = .string(seconds)
            core["count"] = 1
            event = core
        }
        do {
            _ = try await api.create(API.path(groupVersion, "events", namespace: ns), event)
            state.withLock { s in
                if s.seen.count > 4096 { s.seen.removeAll() }
                s.seen[same] = (name, ns, 1)
            }
        } catch {
            logger.debug("event \(e["reason"]?.string ?? "") about \(ns)/\(ref["name"]?.string ?? ""): \(error)")
        }
    }

    /// The events.k8s.io/v1 instance name: the controller and the host, as client-go names it.
    var instance: String { host.isEmpty ? component : "\(component)-\(host)" }
}
