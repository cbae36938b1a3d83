import Foundation
import Synchronization
import KubeAPI
import APISchema

/// The resources served now and their schemas: the built-in ones, and those of every
/// established CustomResourceDefinition, which come and go as their definitions are written and
/// deleted. Discovery, routing, validation, apply and the OpenAPI documents all read it.
public final class Registry: Sendable {
    struct State {
        var resources: [ResourceInfo]
        var schemas: SchemaSet
        /// A definition's name → the OpenAPI definitions it adds.
        var definitions: [String: [String: JSONValue]] = [:]
        /// A definition's name → the spec it was installed from (the same again is not reinstalled).
        var installed: [String: JSONValue] = [:]
        /// Built on first use after a change.
        var openAPI: OpenAPI?
        /// Counts changes: a document built from an older state is not kept.
        var generation = 0

        /// The built-in schemas and those of every definition served now, compiled afresh (so
        /// the nodes of a replaced definition do not stay behind).
        mutating func rebuildSchemas() {
            var all: [String: JSONValue] = [:]
            for (_, defs) in definitions { all.merge(defs) { a, _ in a } }
            schemas = SchemaSet.builtin.adding(all)
            openAPI = nil
            generation += 1
        }
    }

    let state: Mutex<State>

    public init() {
        state = Mutex(State(resources: Resources.all, schemas: .builtin))
    }

    public var resources: [ResourceInfo] { state.withLock { $0.resources } }
    public var schemas: SchemaSet { state.withLock { $0.schemas } }

    public func find(group: String, version: String, resource: String) -> ResourceInfo? {
        state.withLock { s in s.resources.first { $0.group == group && $0.version == version && $0.resource == resource } }
    }

    /// The groups besides the core one, each with its versions, the preferred one first.
    public var groups: [(group: String, versions: [String])] {
        let rs = resources
        var order: [String] = []
        var versions: [String: Set<String>] = [:]
        for r in rs where !r.group.isEmpty {
            if versions[r.group] == nil { order.append(r.group) }
            versions[r.group, default: []].insert(r.version)
        }
        return order.map { ($0, versions[$0]!.sorted(by: Self.kubeAwareOrder)) }
    }

    /// The resources stored under distinct prefixes (the versions of one custom resource share one).
    public var storedResources: [ResourceInfo] {
        var seen = Set<String>()
        return resources.filter { seen.insert($0.storePrefix).inserted }
    }

    var openAPI: OpenAPI {
        if let o = state.withLock({ $0.openAPI }) { return o }
        let (rs, schemas, generation) = state.withLock { ($0.resources, $0.schemas, $0.generation) }
        let built = OpenAPI(resources: rs, schemas: schemas)
        state.withLock { if $0.generation == generation { $0.openAPI = built } }
        return built
    }

    /// Serves what a definition declares (replacing what an earlier version of it declared).
    func install(_ crd: JSONValue) {
        guard let name = crd[path: ["metadata", "name"]]?.string else { return }
        if state.withLock({ $0.installed[name] }) == crd["spec"] { return }
        let (resources, definitions) = CustomResources.served(crd)
        state.withLock { s in
            s.installed[name] = crd["spec"]
            s.resources.removeAll { $0.custom?.definition == name }
            s.resources += resources
            s.definitions[name] = definitions
            s.rebuildSchemas()
        }
    }

    /// The definitions served now.
    var definitionNames: Set<String> { state.withLock { Set($0.installed.keys) } }

    func uninstall(_ name: String) {
        state.withLock { s in
            s.installed[name] = nil
            s.resources.removeAll { $0.custom?.definition == name }
            s.definitions[name] = nil
            s.rebuildSchemas()
        }
    }

    /// Kubernetes' version order: GA before beta before alpha, higher majors and minors first,
    /// then versions that are not "kube-like", alphabetically (`v10, v2, v1, v11beta2, v10beta3,
    /// v3beta1, v12alpha1, v11alpha2, foo1, foo10`).
    static func kubeAwareOrder(_ a: String, _ b: String) -> Bool {
        func parse(_ v: String) -> (major: Int, stage: Int, minor: Int)? {
            guard v.hasPrefix("v") else { return nil }
            let rest = v.dropFirst()
            let digits = rest.prefix { $0.isNumber }
            guard let major = Int(digits), !digits.hasPrefix("0") else { return nil }
            let tail = rest.dropFirst(digits.count)
            if tail.isEmpty { return (major, 2, 0) }
            for (word, stage) in [("beta", 1), ("alpha", 0)] where tail.hasPrefix(word) {
                let n = tail.dropFirst(word.count)
                guard let minor = Int(n), !n.hasPrefix("0") else { return nil }
                return (major, stage, minor)
            }
            return nil
        }
        switch (parse(a), parse(b)) {
        case let (x?, y?):
            if x.stage != y.stage { return x.stage > y.stage }
            if x.major != y.major { return x.major > y.major }
            return x.minor > y.minor
        case (.some, nil): return true
        case (nil, .some): return false
        case (nil, nil): return a < b
        }
    }
}
