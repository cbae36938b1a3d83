import Foundation
import Synchronization

/// One request's latency trackers, as kube-apiserver keeps them in a request's context and writes
/// them into its audit events as `apiserver.latency.k8s.io/*` annotations: the time spent
/// authenticating, authorizing and in the store (`etcd`), and the whole (`total`), from the
/// request's arrival to its answer.
public final class RequestLatency: Sendable {
    /// Nanoseconds per tracker, added to by concurrent store calls.
    let authenticationNanos = Atomic<Int64>(0)
    let authorizationNanos = Atomic<Int64>(0)
    let etcdNanos = Atomic<Int64>(0)
    /// When the request arrived (before authentication), on both clocks.
    public let received: Date
    let start: ContinuousClock.Instant

    /// The request being served, where the store can find it.
    @TaskLocal public static var current: RequestLatency?

    public init(received: Date = Date(), start: ContinuousClock.Instant = .now) {
        self.received = received
        self.start = start
    }

    static func nanos(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }

    public func authenticated(in d: Duration) { authenticationNanos.add(Self.nanos(d), ordering: .relaxed) }
    func authorized(in d: Duration) { authorizationNanos.add(Self.nanos(d), ordering: .relaxed) }
    func stored(in d: Duration) { etcdNanos.add(Self.nanos(d), ordering: .relaxed) }

    /// The audit annotations, as upstream names and formats them (Go's duration text).
    func annotations(now: ContinuousClock.Instant = .now) -> [String: String] {
        var a = ["apiserver.latency.k8s.io/total": Self.goDuration(Self.nanos(now - start))]
        let auth = authenticationNanos.load(ordering: .relaxed), authz = authorizationNanos.load(ordering: .relaxed)
        let etcd = etcdNanos.load(ordering: .relaxed)
        if auth > 0 { a["apiserver.latency.k8s.io/authentication"] = Self.goDuration(auth) }
        if authz > 0 { a["apiserver.latency.k8s.io/authorization"] = Self.goDuration(authz) }
        if etcd > 0 { a["apiserver.latency.k8s.io/etcd"] = Self.goDuration(etcd) }
        return a
    }

    /// Go's `time.Duration.String()`: `850ns`, `3.056µs`, `629.994µs`, `12.5ms`, `1.25s`, `2m3.5s`.
    public static func goDuration(_ ns: Int64) -> String {
        if ns == 0 { return "0s" }
        let sign = ns < 0 ? "-" : ""
        let n = ns.magnitude
        func fraction(_ v: UInt64, _ unit: UInt64) -> String {
            let whole = v / unit, rest = v % unit
            guard rest > 0 else { return String(whole) }
            var digits = String(rest)
            digits = String(repeating: "0", count: String(unit).count - 1 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            return "\(whole).\(digits)"
        }
        if n < 1_000 { return "\(sign)\(n)ns" }
        if n < 1_000_000 { return "\(sign)\(fraction(n, 1_000))µs" }
        if n < 1_000_000_000 { return "\(sign)\(fraction(n, 1_000_000))ms" }
        let hours = n / 3_600_000_000_000, minutes = n / 60_000_000_000 % 60, secs = n % 60_000_000_000
        var s = sign
        if hours > 0 { s += "\(hours)h" }
        if hours > 0 || minutes > 0 { s += "\(minutes)m" }
        return s + fraction(secs, 1_000_000_000) + "s"
    }
}
