import Foundation

// The small languages of the workload API, shared by the server (validation), the scheduler and
// the controllers: int-or-percent values, quantities, label selectors in object form, cron
// schedules.

/// An int-or-string of the API: a count, or a percentage of a total (`"25%"`).
public enum IntOrPercent: Sendable, Equatable {
    case count(Int)
    case percent(Int)

    public init?(_ v: JSONValue?) {
        if let n = v?.int { self = .count(Int(n)); return }
        guard let s = v?.string else { return nil }
        self.init(s)
    }

    public init?(_ s: String) {
        if s.hasSuffix("%"), let n = Int(s.dropLast()), n >= 0 { self = .percent(n); return }
        if let n = Int(s), n >= 0 { self = .count(n); return }
        return nil
    }

    /// The value against `total`, a percentage rounded up or down (upstream's
    /// `GetScaledValueFromIntOrPercent`).
    public func value(of total: Int, roundUp: Bool) -> Int {
        switch self {
        case .count(let n): return n
        case .percent(let p): return roundUp ? (p * total + 99) / 100 : p * total / 100
        }
    }
}

/// A resource quantity (`100m`, `1.5`, `128Mi`, `1e3`), as a number of thousandths (CPU) or of
/// units (bytes), rounded up as upstream's `MilliValue()` and `Value()` round.
public enum Quantity {
    static let suffixes: [(String, Double)] = [
        ("Ki", 1024), ("Mi", 1_048_576), ("Gi", 1_073_741_824), ("Ti", 1_099_511_627_776), ("Pi", 1_125_899_906_842_624),
        ("Ei", 1_152_921_504_606_846_976), ("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9),
        ("T", 1e12), ("P", 1e15), ("E", 1e18),
    ]

    /// The quantity as a real number, nil when it is not one.
    public static func parse(_ s: String) -> Double? {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { return nil }
        for (suffix, factor) in suffixes where t.hasSuffix(suffix) {
            guard let n = Double(t.dropLast(suffix.count)), n.isFinite else { return nil }
            return n * factor
        }
        guard let n = Double(t), n.isFinite, t.first.map({ $0.isNumber || $0 == "-" || $0 == "+" || $0 == "." }) == true else { return nil }
        return n
    }

    public static func parse(_ v: JSONValue?) -> Double? {
        switch v {
        case .int(let n)?: return Double(n)
        case .double(let d)?: return d
        case .string(let s)?: return parse(s)
        default: return nil
        }
    }

    /// Thousandths, rounded up (`100m` → 100, `1` → 1000).
    public static func milli(_ v: JSONValue?) -> Int64 {
        guard let d = parse(v) else { return 0 }
        return Int64((d * 1000 - 1e-6).rounded(.up))
    }

    /// Units, rounded up (`128Mi` → 134217728).
    public static func value(_ v: JSONValue?) -> Int64 {
        guard let d = parse(v) else { return 0 }
        return Int64((d - 1e-9).rounded(.up))
    }
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions) applied to labels. An empty
/// selector matches everything; a missing one (nil) nothing, as upstream's
/// `LabelSelectorAsSelector` reads them.
public struct ObjectSelector: Sendable, Equatable {
    public var matchLabels: [String: String]
    public var expressions: [(key: String, op: String, values: [String])]

    public static func == (a: ObjectSelector, b: ObjectSelector) -> Bool {
        a.matchLabels == b.matchLabels && a.expressions.count == b.expressions.count
            && zip(a.expressions, b.expressions).allSatisfy { $0.key == $1.key && $0.op == $1.op && $0.values == $1.values }
    }

    public init(_ v: JSONValue) {
        matchLabels = (v["matchLabels"]?.object ?? [:]).compactMapValues(\.string)
        expressions = (v["matchExpressions"]?.array ?? []).map {
            ($0["key"]?.string ?? "", $0["operator"]?.string ?? "", ($0["values"]?.array ?? []).compactMap(\.string))
        }
    }

    public init(matchLabels: [String: String]) {
        self.matchLabels = matchLabels
        expressions = []
    }

    public var isEmpty: Bool { matchLabels.isEmpty && expressions.isEmpty }

    public func matches(_ labels: [String: String]) -> Bool {
        for (k, v) in matchLabels where labels[k] != v { return false }
        for e in expressions {
            let have = labels[e.key]
            switch e.op {
            case "In": if have == nil || !e.values.contains(have!) { return false }
            case "NotIn": if let have, e.values.contains(have) { return false }
            case "Exists": if have == nil { return false }
            case "DoesNotExist": if have != nil { return false }
            default: return false
            }
        }
        return true
    }

    /// The selector as `labelSelector=` spells it.
    public var query: String {
        var parts = matchLabels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        for e in expressions {
            switch e.op {
            case "In": parts.append("\(e.key) in (\(e.values.joined(separator: ",")))")
            case "NotIn": parts.append("\(e.key) notin (\(e.values.joined(separator: ",")))")
            case "Exists": parts.append(e.key)
            case "DoesNotExist": parts.append("!\(e.key)")
            default: break
            }
        }
        return parts.joined(separator: ",")
    }
}

extension JSONValue {
    /// `metadata.labels` as strings.
    public var labels: [String: String] { (self[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues(\.string) }
    public var name: String { self[path: ["metadata", "name"]]?.string ?? "" }
    public var namespace: String { self[path: ["metadata", "namespace"]]?.string ?? "" }
    public var uid: String { self[path: ["metadata", "uid"]]?.string ?? "" }
    /// `namespace/name`, or the name of a cluster-scoped object.
    public var key: String { namespace.isEmpty ? name : "\(namespace)/\(name)" }
    public var isDeleting: Bool { self[path: ["metadata", "deletionTimestamp"]]?.string != nil }
}

/// A cron schedule as CronJobs take it (robfig/cron's standard parser, as upstream uses): five
/// fields (minute, hour, day of month, month, day of week; `*`, lists, ranges, steps, names) or
/// a descriptor (`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`,
/// `@annually`, `@every 5m`).
public struct CronSchedule: Sendable, Equatable {
    var minutes: Set<Int> = [], hours: Set<Int> = [], days: Set<Int> = [], months: Set<Int> = [], weekdays: Set<Int> = []
    /// Day of month and day of week both restricted: either matches (cron's rule).
    var domStar = false, dowStar = false
    var every: TimeInterval?

    public init?(_ text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("TZ=") || t.hasPrefix("CRON_TZ=") { return nil }
        let expanded: String
        switch t {
        case "@yearly", "@annually": expanded = "0 0 1 1 *"
        case "@monthly": expanded = "0 0 1 * *"
        case "@weekly": expanded = "0 0 * * 0"
        case "@daily", "@midnight": expanded = "0 0 * * *"
        case "@hourly": expanded = "0 * * * *"
        default:
            if t.hasPrefix("@every ") {
                guard let d = GoDuration.seconds(String(t.dropFirst(7))), d >= 1 else { return nil }
                every = d
                return
            }
            if t.hasPrefix("@") { return nil }
            expanded = t
        }
        let f = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard f.count == 5 else { return nil }
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        guard let mi = Self.field(f[0], 0...59, names: []), let h = Self.field(f[1], 0...23, names: []),
              let dom = Self.field(f[2], 1...31, names: []), let mo = Self.field(f[3], 1...12, names: months, base: 1),
              let dow = Self.field(f[4], 0...7, names: days) else { return nil }
        minutes = mi
        hours = h
        self.days = dom
        self.months = mo
        weekdays = Set(dow.map { $0 % 7 })
        domStar = f[2] == "*" || f[2] == "?"
        dowStar = f[4] == "*" || f[4] == "?"
    }

    static func field(_ s: String, _ range: ClosedRange<Int>, names: [String], base: Int = 0) -> Set<Int>? {
        var out = Set<Int>()
        for part in s.split(separator: ",", omittingEmptySubsequences: false) {
            var body = Substring(part), step = 1
            if let slash = body.firstIndex(of: "/") {
                guard let n = Int(body[body.index(after: slash)...]), n > 0 else { return nil }
                step = n
                body = body[..<slash]
            }
            func value(_ v: Substring) -> Int? {
                if let n = Int(v) { return range.contains(n) ? n : nil }
                if let i = names.firstIndex(of: v.lowercased()) { return i + base }
                return nil
            }
            var lo: Int, hi: Int
            if body == "*" || body == "?" {
                lo = range.lowerBound; hi = range.upperBound
            } else if let dash = body.firstIndex(of: "-") {
                guard let a = value(body[..<dash]), let b = value(body[body.index(after: dash)...]), a <= b else { return nil }
                lo = a; hi = b
            } else {
                guard let a = value(body) else { return nil }
                lo = a; hi = part.contains("/") ? range.upperBound : a
            }
            out.formUnion(stride(from: lo, through: hi, by: step))
        }
        return out.isEmpty ? nil : out
    }

    /// The first time strictly after `date` the schedule fires, in `timeZone`.
    public func next(after date: Date, in timeZone: TimeZone = TimeZone(identifier: "UTC")!) -> Date? {
        if let every { return date.addingTimeInterval(every - date.timeIntervalSince1970.truncatingRemainder(dividingBy: 1)) }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = timeZone
        var t = cal.date(bySetting: .second, value: 0, of: date.addingTimeInterval(60)) ?? date
        if t <= date { t = t.addingTimeInterval(60) }
        // A minute at a time would be slow for yearly schedules: skip whole hours and days that cannot match.
        for _ in 0..<600_000 {
            let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
            guard let month = c.month, let day = c.day, let hour = c.hour, let minute = c.minute, let wd = c.weekday else { return nil }
            if !months.contains(month) {
                t = cal.date(from: DateComponents(year: c.year, month: month + 1, day: 1)) ?? t.addingTimeInterval(86_400)
                continue
            }
            let domOK = days.contains(day), dowOK = weekdays.contains(wd - 1)
            let dayOK = domStar || dowStar ? (domOK && dowOK) : (domOK || dowOK)
            if !dayOK {
                t = cal.date(from: DateComponents(year: c.year, month: month, day: day + 1)) ?? t.addingTimeInterval(86_400)
                continue
            }
            if !hours.contains(hour) {
                t = cal.date(from: DateComponents(year: c.year, month: month, day: day, hour: hour + 1)) ?? t.addingTimeInterval(3600)
                continue
            }
            if minutes.contains(minute) { return t }
            t = t.addingTimeInterval(60)
        }
        return nil
    }
}

// Taints, tolerations and node selector terms, as the scheduler, the node lifecycle controller
// and the DaemonSet controller read them.

public struct Taint: Sendable, Equatable {
    public var key: String
    public var value: String
    public var effect: String

    public init(key: String, value: String = "", effect: String) {
        self.key = key
        self.value = value
        self.effect = effect
    }

    /// A node's `spec.taints` entry.
    public init(_ v: JSONValue) {
        self.init(key: v["key"]?.string ?? "", value: v["value"]?.string ?? "", effect: v["effect"]?.string ?? "")
    }
}

public struct Toleration: Sendable, Hashable {
    public var key: String
    public var op: String
    public var value: String
    public var effect: String
    public var seconds: Int64?

    public init(_ v: JSONValue) {
        key = v["key"]?.string ?? ""
        op = v["operator"]?.string ?? "Equal"
        value = v["value"]?.string ?? ""
        effect = v["effect"]?.string ?? ""
        seconds = v["tolerationSeconds"]?.int
    }

    /// upstream's `ToleratesTaint`: an empty effect tolerates every effect, an empty key with
    /// Exists every taint.
    public func tolerates(_ t: Taint) -> Bool {
        if !effect.isEmpty && effect != t.effect { return false }
        if !key.isEmpty && key != t.key { return false }
        switch op {
        case "Exists": return true
        case "Equal", "": return value == t.value
        default: return false
        }
    }
}

/// A node selector requirement (`key`, `operator`, `values`) of node affinity.
public struct NodeSelectorRequirement: Sendable, Equatable {
    public var key: String
    public var op: String
    public var values: [String]

    public init(_ v: JSONValue) {
        key = v["key"]?.string ?? ""
        op = v["operator"]?.string ?? ""
        values = (v["values"]?.array ?? []).compactMap(\.string)
    }

    public func matches(_ labels: [String: String], fields: [String: String] = [:], isField: Bool = false) -> Bool {
        let have = isField ? fields[key] : labels[key]
        switch op {
        case "In": return have.map { values.contains($0) } ?? false
        case "NotIn": return have.map { !values.contains($0) } ?? true
        case "Exists": return have != nil
        case "DoesNotExist": return have == nil
        case "Gt", "Lt":
            guard let h = have.flatMap({ Int64($0) }), values.count == 1, let v = Int64(values[0]) else { return false }
            return op == "Gt" ? h > v : h < v
        default: return false
        }
    }
}

/// A node selector term: every expression and field must match.
public struct NodeSelectorTerm: Sendable, Equatable {
    public var expressions: [NodeSelectorRequirement]
    public var fields: [NodeSelectorRequirement]

    public init(_ v: JSONValue) {
        expressions = (v["matchExpressions"]?.array ?? []).map(NodeSelectorRequirement.init)
        fields = (v["matchFields"]?.array ?? []).map(NodeSelectorRequirement.init)
    }

    /// Whether a node with these labels and this name matches.
    public func matches(labels: [String: String], name: String) -> Bool {
        // A term with nothing in it matches no node (upstream's rule).
        if expressions.isEmpty && fields.isEmpty { return false }
        let f = ["metadata.name": name]
        return expressions.allSatisfy { $0.matches(labels) } && fields.allSatisfy { $0.matches([:], fields: f, isField: true) }
    }
}
