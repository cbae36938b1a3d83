import Foundation

/// Go's duration syntax as upstream flags and configurations take it (`15s`, `1m30s`, `500ms`, `2h`).
public enum GoDuration {
    public static func seconds(_ s: String) -> Double? {
        var total = 0.0, number = ""
        var rest = Substring(s.trimmingCharacters(in: .whitespaces))
        guard !rest.isEmpty else { return nil }
        if rest == "0" { return 0 }
        while let c = rest.first {
            if c.isNumber || c == "." { number.append(c); rest = rest.dropFirst(); continue }
            guard let n = Double(number) else { return nil }
            let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
            guard let (u, f) = units.first(where: { rest.hasPrefix($0.0) }) else { return nil }
            total += n * f
            rest = rest.dropFirst(u.count)
            number = ""
        }
        return number.isEmpty ? total : nil
    }
}
