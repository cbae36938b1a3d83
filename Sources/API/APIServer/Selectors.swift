import KubeAPI

/// A label selector as `labelSelector=` carries it: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
/// `a notin (x)`, `a`, `!a`, joined by commas.
public struct LabelSelector: Sendable, Equatable {
    enum Requirement: Sendable, Equatable {
        case equals(String, String), notEquals(String, String), isIn(String, Set<String>), notIn(String, Set<String>)
        case exists(String), notExists(String)
    }
    var requirements: [Requirement] = []

    public init(_ text: String) throws {
        var rest = Substring(text)
        while !rest.trimmingCharacters(in: .whitespaces).isEmpty {
            // One requirement: up to the next comma outside parentheses.
            var depth = 0, end = rest.endIndex
            for i in rest.indices {
                if rest[i] == "(" { depth += 1 } else if rest[i] == ")" { depth -= 1 } else if rest[i] == "," && depth == 0 { end = i; break }
            }
            let part = rest[rest.startIndex..<end].trimmingCharacters(in: .whitespaces)
            rest = end == rest.endIndex ? "" : rest[rest.index(after: end)...]
            requirements.append(try Self.requirement(part))
        }
    }

    static func requirement(_ p: String) throws -> Requirement {
        func key(_ s: some StringProtocol) throws -> String {
            let k = s.trimmingCharacters(in: .whitespaces)
            guard !k.isEmpty, k.allSatisfy({ $0.isLetter || $0.isNumber || "-_./".contains($0) }) else {
                throw APIError.badRequest("unable to parse requirement: invalid label key \"\(k)\"")
            }
            return k
        }
        func values(_ s: some StringProtocol) throws -> Set<String> {
            let t = s.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("("), t.hasSuffix(")") else { throw APIError.badRequest("unable to parse requirement: expected (values) in \"\(p)\"") }
            return Set(t.dropFirst().dropLast().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        }
        if let r = p.range(of: " notin ") { return .notIn(try key(p[..<r.lowerBound]), try values(p[r.upperBound...])) }
        if let r = p.range(of: " in ") { return .isIn(try key(p[..<r.lowerBound]), try values(p[r.upperBound...])) }
        if let r = p.range(of: "!=") { return .notEquals(try key(p[..<r.lowerBound]), p[r.upperBound...].trimmingCharacters(in: .whitespaces)) }
        if let r = p.range(of: "==") ?? p.range(of: "=") { return .equals(try key(p[..<r.lowerBound]), p[r.upperBound...].trimmingCharacters(in: .whitespaces)) }
        if p.hasPrefix("!") { return .notExists(try key(p.dropFirst())) }
        return .exists(try key(p))
    }

    public func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { r in
            switch r {
            case .equals(let k, let v): return labels[k] == v
            case .notEquals(let k, let v): return labels[k] != v
            case .isIn(let k, let vs): return labels[k].map(vs.contains) ?? false
            case .notIn(let k, let vs): return !(labels[k].map(vs.contains) ?? false)
            case .exists(let k): return labels[k] != nil
            case .notExists(let k): return labels[k] == nil
            }
        }
    }
}

/// A field selector: `metadata.name=x`, `spec.nodeName!=y`, joined by commas; any field path of
/// the object, compared as text.
public struct FieldSelector: Sendable, Equatable {
    var requirements: [(path: [String], value: String, equal: Bool)] = []

    public static func == (a: FieldSelector, b: FieldSelector) -> Bool {
        a.requirements.map { "\($0.path)\($0.value)\($0.equal)" } == b.requirements.map { "\($0.path)\($0.value)\($0.equal)" }
    }

    public init(_ text: String) throws {
        for part in text.split(separator: ",") {
            let p = String(part)
            let equal: Bool
            let r: Range<String.Index>
            if let x = p.range(of: "!=") { r = x; equal = false }
            else if let x = p.range(of: "==") ?? p.range(of: "=") { r = x; equal = true }
            else { throw APIError.badRequest("invalid selector: '\(p)'; can't understand '\(p)'") }
            let path = p[..<r.lowerBound].split(separator: ".").map(String.init)
            guard !path.isEmpty else { throw APIError.badRequest("invalid field selector: '\(p)'") }
            requirements.append((path, String(p[r.upperBound...]), equal))
        }
    }

    public func matches(_ object: JSONValue) -> Bool {
        requirements.allSatisfy { r in
            let v = object[path: r.path]
            let text: String
            switch v {
            case .string(let s): text = s
            case .int(let i): text = String(i)
            case .bool(let b): text = b ? "true" : "false"
            case nil, .null?: text = ""
            default: text = v!.text()
            }
            return (text == r.value) == r.equal
        }
    }
}

import Foundation
