import Foundation
import Yams

/// Where an object came from, for error messages: `file: document 2, item 3`.
public struct ManifestLocation: Hashable, Sendable, CustomStringConvertible {
    public var source: String
    public var document: Int
    public var item: Int?
    public var description: String {
        var s = "\(source): document \(document)"
        if let item { s += ", item \(item)" }
        return s
    }
}

/// A problem with one object in a manifest. The object is skipped; the rest still loads.
public struct ManifestIssue: Error, Hashable, Sendable, CustomStringConvertible {
    public var location: ManifestLocation
    public var kind: String
    public var name: String
    public var errors: [FieldError]
    public var description: String {
        let what = name.isEmpty ? kind : "\(kind) \(name)"
        return "\(location) (\(what)): " + errors.map(\.description).joined(separator: "; ")
    }

    /// `ns/name`, `name`, or for an object without a name `with no name in namespace ns`
    /// (not the namespace alone, which reads like a name).
    static func objectName(namespace: String?, name: String?) -> String {
        guard let name, !name.isEmpty else { return namespace.map { "with no name in namespace \($0)" } ?? "with no name" }
        return [namespace, name].compactMap { $0 }.joined(separator: "/")
    }
}

/// The objects a set of manifests holds, by kind, with what was skipped and why.
public struct ManifestSet: Sendable {
    public var services: [Service] = []
    public var endpointSlices: [EndpointSlice] = []
    public var endpoints: [Endpoints] = []
    public var nodes: [Node] = []
    public var pods: [Pod] = []
    public var namespaces: [Namespace] = []
    public var serviceCIDRs: [ServiceCIDR] = []
    /// Invalid objects, skipped.
    public var issues: [ManifestIssue] = []
    /// Kinds that were present but that no command here uses, with counts.
    public var skippedKinds: [String: Int] = [:]

    public init() {}

    public mutating func merge(_ o: ManifestSet) {
        services += o.services
        endpointSlices += o.endpointSlices
        endpoints += o.endpoints
        nodes += o.nodes
        pods += o.pods
        namespaces += o.namespaces
        serviceCIDRs += o.serviceCIDRs
        issues += o.issues
        skippedKinds.merge(o.skippedKinds, uniquingKeysWith: +)
    }
}

public enum ManifestError: Error, CustomStringConvertible {
    case unreadable(String, String)
    case syntax(String, String)
    public var description: String {
        switch self {
        case .unreadable(let p, let why): return "\(p): cannot read: \(why)"
        case .syntax(let p, let why): return "\(p): not valid YAML or JSON: \(why)"
        }
    }
}

/// Loads Kubernetes manifests: YAML or JSON, multi-document, `kind: List`, files,
/// directories (`.yaml`, `.yml`, `.json`, sorted by name) and `-` for stdin.
public enum ManifestLoader {
    public static func load(paths: [String]) throws -> ManifestSet {
        var set = ManifestSet()
        for p in paths {
            for (name, data) in try read(path: p) {
                set.merge(try parse(data: data, source: name))
            }
        }
        return set
    }

    /// Every object of the manifests at `paths` as JSON, whatever its kind (a `List`'s items
    /// each on its own), for commands that read kinds this module has no type for.
    public static func objects(paths: [String]) throws -> [JSONValue] {
        var out: [JSONValue] = []
        func add(_ v: JSONValue) {
            if v["kind"]?.string == "List" || (v["kind"]?.string?.hasSuffix("List") == true && v["items"]?.array != nil) {
                for item in v["items"]?.array ?? [] { add(item) }
            } else if v.object != nil {
                out.append(v)
            }
        }
        for p in paths {
            for (name, data) in try read(path: p) {
                let first = data.first { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d) }
                if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") {
                    let v: JSONValue
                    do { v = try JSONValue.parse(data) } catch { throw ManifestError.syntax(name, "\(error)") }
                    if case .array(let items) = v { items.forEach(add) } else { add(v) }
                    continue
                }
                for node in try yamlDocuments(String(decoding: data, as: UTF8.self), source: name, resolver: .default) {
                    do { add(try YAMLToJSON.value(Constructor.default.any(from: node))) } catch { throw ManifestError.syntax(name, "\(error)") }
                }
            }
        }
        return out
    }

    /// The files a path names: itself, or for a directory the manifest files in it, recursively.
    public static func files(at path: String) throws -> [String] {
        if path == "-" { return ["-"] }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ManifestError.unreadable(path, "no such file or directory")
        }
        if !isDir.boolValue { return [path] }
        guard let e = FileManager.default.enumerator(atPath: path) else { return [] }
        var out: [String] = []
        while let rel = e.nextObject() as? String {
            if rel.hasSuffix(".yaml") || rel.hasSuffix(".yml") || rel.hasSuffix(".json") {
                out.append((path as NSString).appendingPathComponent(rel))
            }
        }
        return out.sorted()
    }

    static func read(path: String) throws -> [(String, Data)] {
        if path == "-" {
            return [("<stdin>", FileHandle.standardInput.readDataToEndOfFile())]
        }
        return try files(at: path).map { f in
            guard let d = FileManager.default.contents(atPath: f) else {
                throw ManifestError.unreadable(f, "permission denied or not a regular file")
            }
            return (f, d)
        }
    }

    /// Parses one file's text.
    public static func parse(_ text: String, source: String) throws -> ManifestSet {
        try parse(data: Data(text.utf8), source: source)
    }

    /// Parses one file's bytes. JSON is decoded from them directly; only YAML is made a string.
    public static func parse(data: Data, source: String) throws -> ManifestSet {
        var set = ManifestSet()
        let first = data.first { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d) }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") {
            // A list is decoded item by item: the decoder's index of a whole 14 MB list of
            // 20,000 objects would be held at once beside everything decoded from it.
            if let split = JSONListSplitter.split(data), let set = try? parse(split, data: data, source: source) {
                return set
            }
            // JSON: one typed pass with Foundation's decoder; each object decodes by its kind.
            let docs: [JSONDoc]
            do {
                if first == UInt8(ascii: "[") {
                    docs = try JSONDecoder().decode([JSONDoc].self, from: data)
                } else {
                    docs = [try JSONDecoder().decode(JSONDoc.self, from: data)]
                }
            } catch {
                throw ManifestError.syntax(source, "\(error)")
            }
            for (i, d) in docs.enumerated() {
                d.file(at: ManifestLocation(source: source, document: i + 1), into: &set)
            }
            return set
        }
        let text = String(decoding: data, as: UTF8.self)
        // Parsed with Yams' basic resolver, which resolves no tag by regular expression (the
        // default one's cost half the load, in the parser's duplicate-key check alone); the fast
        // path resolves plain scalars itself. Documents it leaves to Yams' decoder are taken from
        // a second parse with the default resolver, made only if one is needed.
        let nodes = try yamlDocuments(text, source: source, resolver: .basic)
        let exact = LazyDocuments { try yamlDocuments(text, source: source, resolver: .default) }
        for (i, node) in nodes.enumerated() {
            if case .scalar = node { continue }  // an empty document
            let loc = ManifestLocation(source: source, document: i + 1)
            if let json = YAMLNodeJSON.value(node) {
                file(json: json, at: loc, into: &set) { type, path in
                    var cur = try exact.get()[i]
                    for j in path { cur = cur["items"]?.sequence?[j] ?? cur }
                    return try YAMLDecoder().decode(type, from: cur)
                }
            } else if let n = try? exact.get()[i] {
                add(yaml: n, at: loc, into: &set)
            }
        }
        return set
    }

    /// The documents of a YAML text, as nodes.
    static func yamlDocuments(_ text: String, source: String, resolver: Resolver) throws -> [Yams.Node] {
        var nodes: [Yams.Node] = []
        do {
            // nextRoot throws on syntax errors (the lazy sequence would stop silently).
            let parser = try Yams.Parser(yaml: text, resolver: resolver)
            while let n = try parser.nextRoot() { nodes.append(n) }
        } catch {
            throw ManifestError.syntax(source, "\(error)")
        }
        return nodes
    }

    /// A parse made the first time it is asked for.
    final class LazyDocuments {
        private let make: () throws -> [Yams.Node]
        private var made: [Yams.Node]?
        init(_ make: @escaping () throws -> [Yams.Node]) { self.make = make }
        func get() throws -> [Yams.Node] {
            if let made { return made }
            let n = try make()
            made = n
            return n
        }
    }

    /// A JSON list decoded one item at a time, each parsed by `JSONParser` and decoded by the
    /// fast path where its kind has one (throws if any item is not valid JSON; the caller then
    /// decodes the whole text for the decoder's own error).
    static func parse(_ split: JSONListSplitter.Split, data: Data, source: String) throws -> ManifestSet {
        var set = ManifestSet()
        let decoder = JSONDecoder()
        try data.withUnsafeBytes { raw in
            let all = raw.bindMemory(to: UInt8.self)
            // The bulk kinds straight from the bytes, on every core; the rest (and any item the
            // fast decoders are unsure of) below, in order, by the tree.
            let fast = FastItems(split.items, in: all)
            for (j, r) in split.items.enumerated() {
                var loc = ManifestLocation(source: source, document: split.topLevelArray ? j + 1 : 1)
                if !split.topLevelArray { loc.item = j + 1 }
                let item = UnsafeBufferPointer(rebasing: all[r])
                var decoded: (kind: String, meta: ObjectMeta, object: Any)?
                switch fast[j] {
                case .service(let s): decoded = ("Service", s.metadata, s)
                case .endpointSlice(let s): decoded = ("EndpointSlice", s.metadata, s)
                case nil: break
                }
                if let d = decoded {
                    let name = ManifestIssue.objectName(namespace: d.meta.namespace, name: d.meta.name)
                    decode(kind: d.kind, name: name, at: loc, into: &set) { _ in d.object }
                    continue
                }
                let bytes = Data(item)
                let value = try JSONParser.parse(bytes)
                // Not an object: the whole text is decoded instead, for the decoder's own error.
                guard case .object = value else { throw ManifestError.syntax(source, "item \(j + 1) is not an object") }
                file(json: value, bytes: bytes, at: loc, into: &set, decoder: decoder)
            }
        }
        return set
    }

    /// Files one parsed JSON object (a list: each item). Service and EndpointSlice go through
    /// their fast decoders; anything those refuse, and every other kind, through Codable, whose
    /// errors name the field.
    static func file(json v: JSONValue, bytes: Data?, at loc: ManifestLocation, into set: inout ManifestSet, decoder: JSONDecoder) {
        file(json: v, at: loc, into: &set) { type, path in
            if path.isEmpty, let bytes { return try decoder.decode(type, from: bytes) }
            var cur = v
            for i in path { cur = cur["items"]?.array?[i] ?? .null }
            return try decoder.decode(type, from: cur.serialized())
        }
    }

    /// Files one parsed object (a list: each item): Service and EndpointSlice through their fast
    /// decoders, anything those refuse and every other kind through `slow`, which decodes the
    /// original (`path`: the item's index in each enclosing list) with the format's own Codable decoder.
    static func file(json v: JSONValue, at loc: ManifestLocation, into set: inout ManifestSet,
                     path: [Int] = [], slow: (any Decodable.Type, [Int]) throws -> Any) {
        let kind = v["kind"]?.string ?? ""
        if isList(kind: kind, hasItems: v["items"]?.array != nil) {
            for (j, element) in (v["items"]?.array ?? []).enumerated() {
                var l = loc
                l.item = j + 1
                file(json: element, at: l, into: &set, path: path + [j], slow: slow)
            }
            return
        }
        let name = ManifestIssue.objectName(namespace: v["metadata"]?["namespace"]?.string, name: v["metadata"]?["name"]?.string)
        decode(kind: kind, name: name, at: loc, into: &set) { type in
            if type == Service.self, let s = Service(fast: v) { return s }
            if type == EndpointSlice.self, let s = EndpointSlice(fast: v) { return s }
            return try slow(type, path)
        }
    }

    static func add(yaml node: Yams.Node, at loc: ManifestLocation, into set: inout ManifestSet) {
        let kind = node["kind"]?.string ?? ""
        if isList(kind: kind, hasItems: node["items"]?.sequence != nil) {
            for (j, item) in (node["items"]?.sequence ?? []).enumerated() {
                var l = loc
                l.item = j + 1
                add(yaml: item, at: l, into: &set)
            }
            return
        }
        let name = ManifestIssue.objectName(namespace: node["metadata"]?["namespace"]?.string, name: node["metadata"]?["name"]?.string)
        decode(kind: kind, name: name, at: loc, into: &set) { type in
            try YAMLDecoder().decode(type, from: node)
        }
    }

    /// `kind: List`, or a typed list (`ServiceList`, …) that carries `items`.
    static func isList(kind: String, hasItems: Bool) -> Bool {
        kind == "List" || (kind.hasSuffix("List") && hasItems)
    }

    /// The type of each kind this loader decodes.
    static func type(forKind kind: String) -> (any Decodable.Type)? {
        switch kind {
        case "Service": return Service.self
        case "EndpointSlice": return EndpointSlice.self
        case "Endpoints": return Endpoints.self
        case "Node": return Node.self
        case "Pod": return Pod.self
        case "Namespace": return Namespace.self
        case "ServiceCIDR": return ServiceCIDR.self
        default: return nil
        }
    }

    /// Decodes by kind, validates, and files the object or the problem.
    static func decode(kind: String, name: String, at loc: ManifestLocation, into set: inout ManifestSet,
                       _ dec: (any Decodable.Type) throws -> Any) {
        func issue(_ errs: [FieldError]) {
            set.issues.append(ManifestIssue(location: loc, kind: kind.isEmpty ? "object" : kind, name: name, errors: errs))
        }
        guard let type = type(forKind: kind) else {
            if kind.isEmpty {
                issue([FieldError("kind", "Required value: every document needs apiVersion and kind")])
            } else {
                set.skippedKinds[kind, default: 0] += 1
            }
            return
        }
        do {
            switch try dec(type) {
            case var s as Service:
                if s.metadata.namespace == nil { s.metadata.namespace = "default" }
                let errs = Validation.validate(s)
                if errs.isEmpty { set.services.append(s) } else { issue(errs) }
            case var s as EndpointSlice:
                if s.metadata.namespace == nil { s.metadata.namespace = "default" }
                let errs = Validation.validate(s)
                if errs.isEmpty { set.endpointSlices.append(s) } else { issue(errs) }
            case let e as Endpoints: set.endpoints.append(e)
            case let n as Node: set.nodes.append(n)
            case let p as Pod: set.pods.append(p)
            case let n as Namespace: set.namespaces.append(n)
            case let c as ServiceCIDR:
                let errs = Validation.validate(c)
                if errs.isEmpty { set.serviceCIDRs.append(c) } else { issue(errs) }
            default:
                set.skippedKinds[kind, default: 0] += 1
            }
        } catch let e as DecodingError {
            issue([describe(e)])
        } catch {
            issue([FieldError("", "\(error)")])
        }
    }

    static func describe(_ e: DecodingError) -> FieldError {
        func path(_ p: [any CodingKey]) -> String {
            var s = ""
            for k in p {
                if let i = k.intValue { s += "[\(i)]" } else { s += s.isEmpty ? k.stringValue : ".\(k.stringValue)" }
            }
            return s
        }
        switch e {
        case .keyNotFound(let k, let ctx):
            let p = path(ctx.codingPath + [k])
            return FieldError(p, "Required value")
        case .typeMismatch(let t, let ctx):
            return FieldError(path(ctx.codingPath), "Invalid value: expected \(t)")
        case .valueNotFound(let t, let ctx):
            return FieldError(path(ctx.codingPath), "Invalid value: expected \(t), found null")
        case .dataCorrupted(let ctx):
            return FieldError(path(ctx.codingPath), "Invalid value: \(ctx.debugDescription)")
        @unknown default:
            return FieldError("", "\(e)")
        }
    }
}

/// One JSON object decoded by its `kind` in a single pass (lists recurse).
struct JSONDoc: Decodable {
    enum Keys: String, CodingKey { case kind, metadata, items }
    struct Meta: Decodable { var name: String?; var namespace: String? }
    let kind: String
    let name: String
    let items: [JSONDoc]?
    let decoded: Result<Any, any Error>

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        kind = (try? c.decode(String.self, forKey: .kind)) ?? ""
        let m = try? c.decode(Meta.self, forKey: .metadata)
        name = ManifestIssue.objectName(namespace: m?.namespace, name: m?.name)
        if ManifestLoader.isList(kind: kind, hasItems: c.contains(.items)) {
            items = (try? c.decode([JSONDoc].self, forKey: .items)) ?? []
            decoded = .success(())
            return
        }
        items = nil
        if let type = ManifestLoader.type(forKind: kind) {
            decoded = Result { try type.init(from: decoder) }
        } else {
            decoded = .success(())
        }
    }

    func file(at loc: ManifestLocation, into set: inout ManifestSet) {
        if let items {
            for (j, item) in items.enumerated() {
                var l = loc
                l.item = j + 1
                item.file(at: l, into: &set)
            }
            return
        }
        ManifestLoader.decode(kind: kind, name: name, at: loc, into: &set) { _ in try decoded.get() }
    }
}

/// Finds the items of a JSON list without decoding it: the elements of a top-level array, or
/// of the `items` array of a top-level object whose `kind` is `List` or `…List`. Only the
/// structure is scanned (strings, nesting); anything unexpected gives nil and the text is
/// decoded whole instead.
enum JSONListSplitter {
    struct Split {
        var topLevelArray: Bool
        var items: [Range<Int>]
    }

    static func split(_ data: Data) -> Split? {
        data.withUnsafeBytes { raw -> Split? in
            let b = raw.bindMemory(to: UInt8.self)
            var i = 0
            skipSpace(b, &i)
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: "[") {
                guard let items = elements(b, &i) else { return nil }
                skipSpace(b, &i)
                return i == b.count ? Split(topLevelArray: true, items: items) : nil
            }
            guard b[i] == UInt8(ascii: "{") else { return nil }
            i += 1
            var kind: String?
            var items: [Range<Int>]?
            while true {
                skipSpace(b, &i)
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: "}") { i += 1; break }
                guard b[i] == UInt8(ascii: "\""), let key = string(b, &i) else { return nil }
                skipSpace(b, &i)
                guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                skipSpace(b, &i)
                guard i < b.count else { return nil }
                if key == "items" && b[i] == UInt8(ascii: "[") {
                    guard let e = elements(b, &i) else { return nil }
                    items = e
                } else if key == "kind" && b[i] == UInt8(ascii: "\"") {
                    guard let k = string(b, &i) else { return nil }
                    kind = k
                } else if !skipValue(b, &i) {
                    return nil
                }
                skipSpace(b, &i)
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; break }
                return nil
            }
            skipSpace(b, &i)
            guard i == b.count, let items, let kind, ManifestLoader.isList(kind: kind, hasItems: true) else { return nil }
            return Split(topLevelArray: false, items: items)
        }
    }

    private static func skipSpace(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) {
        while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0a || b[i] == 0x0d { i += 1 }
    }

    /// A string at `i` (its raw bytes, escapes kept); `i` ends after the closing quote.
    private static func string(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> String? {
        let start = i + 1
        guard skipString(b, &i) else { return nil }
        return String(decoding: UnsafeBufferPointer(rebasing: b[start..<(i - 1)]), as: UTF8.self)
    }

    private static func skipString(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Bool {
        i += 1
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""): i += 1; return true
            default: i += 1
            }
        }
        return false
    }

    /// Any value; containers by their brackets, strings by their quotes.
    private static func skipValue(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Bool {
        guard i < b.count else { return false }
        switch b[i] {
        case UInt8(ascii: "\""):
            return skipString(b, &i)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while i < b.count {
                switch b[i] {
                case UInt8(ascii: "\""):
                    guard skipString(b, &i) else { return false }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { i += 1; return true }
                default: break
                }
                i += 1
            }
            return false
        default:
            // A literal or a number; the decoder checks numbers closely only where items are decoded.
            let start = i
            while i < b.count, !(b[i] == UInt8(ascii: ",") || b[i] == UInt8(ascii: "}") || b[i] == UInt8(ascii: "]")
                                 || b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0a || b[i] == 0x0d) { i += 1 }
            let token = UnsafeBufferPointer(rebasing: b[start..<i])
            if token.elementsEqual("true".utf8) || token.elementsEqual("false".utf8) || token.elementsEqual("null".utf8) { return true }
            return !token.isEmpty && token.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "+")
                || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }
        }
    }

    /// The elements of the array at `i`; `i` ends after its `]`.
    private static func elements(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> [Range<Int>]? {
        i += 1
        var out: [Range<Int>] = []
        skipSpace(b, &i)
        if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return out }
        while i < b.count {
            skipSpace(b, &i)
            let start = i
            guard skipValue(b, &i) else { return nil }
            out.append(start..<i)
            skipSpace(b, &i)
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return out }
            return nil
        }
        return nil
    }
}

/// The Services and EndpointSlices of a list's items, decoded from the bytes on every core
/// (each item on its own); nil for an item of another kind or one the fast decoders refuse.
final class FastItems: @unchecked Sendable {
    enum Item: Sendable {
        case service(Service)
        case endpointSlice(EndpointSlice)
    }

    private let buffer: UnsafeMutableBufferPointer<Item?>

    init(_ ranges: [Range<Int>], in all: UnsafeBufferPointer<UInt8>) {
        buffer = .allocate(capacity: ranges.count)
        buffer.initialize(repeating: nil)
        let bytes = SendableBytes(base: all)
        let out = self
        let workers = min(ProcessInfo.processInfo.activeProcessorCount, 4, max(1, ranges.count / 256))
        let work: @Sendable (Int) -> Void = { w in
            var i = w
            while i < ranges.count {
                out.buffer[i] = Self.decode(UnsafeBufferPointer(rebasing: bytes.base[ranges[i]]))
                i += workers
            }
        }
        if workers <= 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: work) }
    }

    deinit {
        _ = buffer.deinitialize()
        buffer.deallocate()
    }

    subscript(i: Int) -> Item? { buffer[i] }

    static func decode(_ item: UnsafeBufferPointer<UInt8>) -> Item? {
        switch PullReader.kind(of: item) {
        case "Service":
            var reader = PullReader(item)
            return (try? reader.service()).map { .service($0) }
        case "EndpointSlice":
            var reader = PullReader(item)
            return (try? reader.endpointSlice()).map { .endpointSlice($0) }
        default: return nil
        }
    }

    /// The list's bytes, read (never written) by the workers while the caller holds them.
    struct SendableBytes: @unchecked Sendable {
        let base: UnsafeBufferPointer<UInt8>
    }
}
