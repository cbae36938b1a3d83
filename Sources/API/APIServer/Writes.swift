import Foundation
import Synchronization
import KubeAPI
import KubeStore
import APISchema
import FieldManager

/// The writes: create, update, patch, delete (a namespace by terminating it), delete a collection, bind.
extension APIHandler {
    func create(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource
        var duplicates: [String] = []
        var o = try decodeBody(req, duplicates: &duplicates)
        try checkKind(o, r)
        let warnings = try validateFields(&o, r.gvk, duplicates: duplicates, req)
        return try await insert(o, req, t, warnings: warnings, tracking: .update(try fieldManagerName(req)))
    }

    /// Stores a new object (from a create, or an apply of an object that did not exist).
    func insert(_ object: JSONValue, _ req: APIRequest, _ t: Target, warnings: [String], tracking: Tracking) async throws -> APIResponse {
        let r = t.resource
        var o = object
        var name = o[path: ["metadata", "name"]]?.string ?? ""
        if name.isEmpty, let g = o[path: ["metadata", "generateName"]]?.string, !g.isEmpty {
            name = g + Admission.randomSuffix()
            o[path: ["metadata", "name"]] = .string(name)
        }
        if r.namespaced {
            if let ns = o[path: ["metadata", "namespace"]]?.string, !ns.isEmpty, ns != t.namespace {
                throw APIError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
            }
            o[path: ["metadata", "namespace"]] = .string(t.namespace!)
            guard let ns = try await store.get(Resources.all[0].key(namespace: nil, name: t.namespace!)) else {
                throw APIError(code: 404, reason: "NotFound", message: "namespaces \"\(t.namespace!)\" not found",
                               details: ["name": .string(t.namespace!), "kind": "namespaces"])
            }
            if (try? JSONValue.parse(ns.value))?[path: ["status", "phase"]]?.string == "Terminating" {
                throw APIError(code: 403, reason: "Forbidden", message: "\(r.resource) \"\(name)\" is forbidden: unable to create new content in namespace \(t.namespace!) because it is being terminated")
            }
        }
        o[path: ["metadata", "uid"]] = .string(UUID().uuidString.lowercased())
        o[path: ["metadata", "creationTimestamp"]] = .string(Self.rfc3339())
        o[path: ["metadata", "resourceVersion"]] = nil
        o[path: ["metadata", "selfLink"]] = nil
        o[path: ["metadata", "deletionTimestamp"]] = nil
        if hasGeneration(r) { o[path: ["metadata", "generation"]] = 1 }
        let dryRun = try isDryRun(req)
        try await admit(&o, old: nil, r, dryRun: dryRun)
        if case .update(let manager) = tracking, let fm = fieldManager(r, subresource: nil) {
            fm.update(live: nil, new: &o, manager: manager, now: Self.rfc3339())
        }
        if dryRun {
            if try await store.get(r.key(namespace: t.namespace, name: name)) != nil {
                throw APIError.alreadyExists(r, name)
            }
            return .ok(presentUnstored(o, r), 201, warnings: warnings)
        }
        let stored = o
        let kv = try await storeCall(r, name) {
            do {
                return try await self.store.create(r.key(namespace: t.namespace, name: name), value: stored.serialized())
            } catch {
                await self.admission.release(stored, r)
                throw error
            }
        }
        try await written(r, o)
        return .ok(try present(kv, r, known: stored), 201, warnings: warnings)
    }

    func checkKind(_ o: JSONValue, _ r: ResourceInfo) throws {
        if let k = o["kind"]?.string, !k.isEmpty, k != r.kind {
            throw APIError.badRequest("the kind of the object (\(k)) does not match the resource (\(r.kind))")
        }
        if let v = o["apiVersion"]?.string, !v.isEmpty, v != r.groupVersion {
            throw APIError.badRequest("the API version of the object (\(v)) does not match the resource (\(r.groupVersion))")
        }
    }

    /// Writes `new` over the object at `key` if it is still at `expected`, keeping what a client
    /// may not change (uid, creation time), and the status or the rest, by subresource.
    func write(_ r: ResourceInfo, _ t: Target, name: String, new: JSONValue, current: KeyValue, subresource: String?,
               dryRun: Bool = false, tracking: Tracking, presented: JSONValue? = nil) async throws -> (kv: KeyValue, object: JSONValue?) {
        // The stored object: parsed again unless the caller has it already, as presented.
        let old: JSONValue
        if var p = presented {
            p[path: ["metadata", "resourceVersion"]] = nil
            old = p
        } else {
            old = try JSONValue.parse(current.value)
        }
        var o = new
        try checkKind(o, r)
        if let n = o[path: ["metadata", "name"]]?.string, n != name {
            throw APIError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        o[path: ["metadata", "name"]] = .string(name)
        if r.namespaced { o[path: ["metadata", "namespace"]] = .string(t.namespace!) }
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "generation"] {
            o[path: ["metadata", f]] = old[path: ["metadata", f]]
        }
        o[path: ["metadata", "resourceVersion"]] = nil
        o["kind"] = nil
        o["apiVersion"] = nil
        var oldBare = old
        oldBare["kind"] = nil
        oldBare["apiVersion"] = nil
        if r.subresources.contains("status") {
            if subresource == "status" {
                // Only the status changes through /status.
                var keep = oldBare
                keep["status"] = o["status"]
                // An apply through /status has just computed who owns what: keep that.
                if case .applied = tracking { keep[path: ["metadata", "managedFields"]] = o[path: ["metadata", "managedFields"]] }
                o = keep
            } else {
                o["status"] = oldBare["status"]
            }
        }
        if hasGeneration(r), Self.generationChanges(o, oldBare, r) {
            o[path: ["metadata", "generation"]] = .int((oldBare[path: ["metadata", "generation"]]?.int ?? 0) + 1)
        }
        try await admit(&o, old: oldBare, r, dryRun: dryRun, subresource: subresource)
        if case .update(let manager) = tracking, let fm = fieldManager(r, subresource: subresource ?? t.subresource) {
            fm.update(live: oldBare, new: &o, manager: manager, now: Self.rfc3339())
        }
        // Nothing changed: no new revision (kubectl then says "patched (no change)").
        if o == oldBare { return (current, nil) }
        // A dry run answers with what would be stored, at the current revision.
        if dryRun { return (KeyValue(key: current.key, value: Data(), createRevision: current.createRevision, modRevision: current.modRevision), o) }
        let stored = o
        let kv = try await storeCall(r, name) {
            do {
                return try await self.store.update(r.key(namespace: t.namespace, name: name), value: stored.serialized(), expected: current.modRevision)
            } catch {
                // The update did not happen: what admission took for it goes back, and what it
                // gave back (still held by the stored object) is taken again.
                await self.admission.undo(update: stored, of: oldBare, r)
                throw error
            }
        }
        try await written(r, stored)
        return (kv, stored)
    }

    func update(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        var duplicates: [String] = []
        var o = try decodeBody(req, duplicates: &duplicates)
        let warnings = try validateFields(&o, r.gvk(subresource: t.subresource), duplicates: duplicates, req)
        guard let current = try await storeCall(r, name, { try await self.store.get(r.key(namespace: t.namespace, name: name)) }) else {
            throw APIError.notFound(r, name)
        }
        if t.subresource == "scale" {
            o = try Scale.apply(o, to: try present(current, r), r)
        }
        if let rv = o[path: ["metadata", "resourceVersion"]]?.string, !rv.isEmpty, rv != String(current.modRevision) {
            throw APIError.conflict(r, name)
        }
        let w = try await write(r, t, name: name, new: o, current: current, subresource: t.subresource == "scale" ? nil : t.subresource,
                                dryRun: try isDryRun(req), tracking: .update(try fieldManagerName(req)))
        let out = try present(w.kv, r, known: w.object)
        return .ok(t.subresource == "scale" ? Scale.of(out, r) : out, warnings: warnings)
    }

    func patch(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        guard req.body.count <= Self.maxBodySize else { throw APIError.tooLarge(Self.maxBodySize) }
        let type = (req.contentType ?? "").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if req.query["force"] != nil && type != "application/apply-patch+yaml" {
            throw APIError.invalidOptions("PatchOptions", [FieldError("force", "Forbidden: may not be specified for non-apply patch")])
        }
        if type == "application/apply-patch+yaml" || type == "application/apply-patch+cbor" { return try await apply(req, t) }
        let patch = try JSONValue.parse(req.body)
        // Retried on a conflict with a concurrent writer, as kube-apiserver does for patches.
        for attempt in 0..<5 {
            guard let current = try await storeCall(r, name, { try await self.store.get(r.key(namespace: t.namespace, name: name)) }) else {
                throw APIError.notFound(r, name)
            }
            let presented = try present(current, r)
            var base = presented
            if t.subresource == "scale" { base = Scale.of(base, r) }
            var patched: JSONValue
            switch type {
            case "application/json-patch+json": patched = try Patch.jsonPatch(base, patch)
            case "application/merge-patch+json": patched = Patch.mergePatch(base, patch)
            case "application/strategic-merge-patch+json": patched = try Patch.strategicMergePatch(base, patch, kind: r.kind)
            default: throw APIError.unsupportedMediaType(type)
            }
            guard case .object = patched else { throw APIError.badRequest("the patch did not produce an object") }
            let warnings = try validateFields(&patched, r.gvk(subresource: t.subresource), req)
            if let rv = patch[path: ["metadata", "resourceVersion"]]?.string, rv != String(current.modRevision) {
                throw APIError.conflict(r, name)
            }
            if t.subresource == "scale" { patched = try Scale.apply(patched, to: presented, r) }
            do {
                let w = try await write(r, t, name: name, new: patched, current: current, subresource: t.subresource == "scale" ? nil : t.subresource,
                                        dryRun: try isDryRun(req), tracking: .update(try fieldManagerName(req)), presented: presented)
                let out = try present(w.kv, r, known: w.object)
                return .ok(t.subresource == "scale" ? Scale.of(out, r) : out, warnings: warnings)
            } catch let e as APIError where e.reason == "Conflict" && attempt < 4 {
                continue
            }
        }
        throw APIError.conflict(r, name)
    }

    func delete(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let r = t.resource, name = t.name!
        var expected: Int64?
        let opts = req.body.isEmpty ? nil : try? JSONValue.parse(req.body)
        if let rv = opts?[path: ["preconditions", "resourceVersion"]]?.string {
            expected = Int64(rv)
            guard expected != nil else { throw APIError.badRequest("invalid precondition resourceVersion \(rv)") }
        }
        if let uid = opts?[path: ["preconditions", "uid"]]?.string,
           let cur = try await store.get(r.key(namespace: t.namespace, name: name)),
           (try? JSONValue.parse(cur.value))?[path: ["metadata", "uid"]]?.string != uid {
            throw APIError(code: 409, reason: "Conflict", message: "Precondition failed: UID in precondition: \(uid), UID in object meta: ",
                           details: APIError.details(r, name))
        }
        if try isDryRun(req, deleteOptions: opts) {
            guard let cur = try await storeCall(r, name, { try await self.store.get(r.key(namespace: t.namespace, name: name)) }) else {
                throw APIError.notFound(r, name)
            }
            if let expected, expected != cur.modRevision { throw APIError.conflict(r, name) }
            return .ok(try present(cur, r))
        }
        if r.resource == "namespaces" { return try await terminate(t, name: name, expected: expected) }
        // A definition goes first (its preconditions checked), then stops being served, then its objects go.
        let customPrefixes = r == Resources.crd ? registry.storedResources.filter { $0.custom?.definition == name }.map(\.storePrefix) : []
        let kv = try await storeCall(r, name) { try await self.store.delete(r.key(namespace: t.namespace, name: name), expected: expected) }
        let gone = try present(kv, r)
        await admission.release(gone, r)
        if r == Resources.crd {
            registry.uninstall(name)
            try await deleteObjects(under: customPrefixes)
        }
        return .ok(gone)
    }

    /// Deleting a namespace, as upstream: it turns Terminating at once (nothing new may be made in
    /// it), and a moment later (as upstream's namespace controller gets to it) its objects are
    /// deleted, then the namespace itself. The moment lets `kubectl delete -f` of a namespace and
    /// what is in it delete each object itself, as it does against kube-apiserver.
    func terminate(_ t: Target, name: String, expected: Int64?) async throws -> APIResponse {
        let r = t.resource
        guard let current = try await store.get(r.key(namespace: nil, name: name)) else { throw APIError.notFound(r, name) }
        if let expected, expected != current.modRevision { throw APIError.conflict(r, name) }
        var o = try JSONValue.parse(current.value)
        let already = o[path: ["status", "phase"]]?.string == "Terminating"
        if !already {
            o[path: ["status", "phase"]] = "Terminating"
            o[path: ["metadata", "deletionTimestamp"]] = .string(Self.rfc3339())
        }
        let stored = o
        let kv = already ? current : try await storeCall(r, name) {
            try await self.store.update(r.key(namespace: nil, name: name), value: stored.serialized(), expected: current.modRevision)
        }
        if !already {
            let handler = self
            Task {
                try? await Task.sleep(for: .seconds(1))
                for res in handler.registry.storedResources where res.namespaced {
                    guard let page = try? await handler.store.list(prefix: res.storePrefix + name + "/", after: nil, limit: 0, revision: nil) else { continue }
                    for item in page.items {
                        if let d = try? await handler.store.delete(item.key, expected: nil), let o = try? handler.present(d, res) {
                            await handler.admission.release(o, res)
                        }
                    }
                }
                _ = try? await handler.store.delete(r.key(namespace: nil, name: name), expected: nil)
            }
        }
        return .ok(try present(kv, r))
    }

    func deleteCollection(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let dryRun = try isDryRun(req, deleteOptions: req.body.isEmpty ? nil : try? JSONValue.parse(req.body))
        let items = try await selected(req, t, revision: nil).items
        if dryRun { return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success"]) }
        for (kv, o) in items {
            let name = o[path: ["metadata", "name"]]?.string ?? ""
            let customPrefixes = t.resource == Resources.crd ? registry.storedResources.filter { $0.custom?.definition == name }.map(\.storePrefix) : []
            guard (try? await store.delete(kv.key, expected: nil)) != nil else { continue }
            await admission.release(o, t.resource)
            if t.resource == Resources.crd {
                registry.uninstall(name)
                try await deleteObjects(under: customPrefixes)
            }
        }
        return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success"])
    }

    func bind(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        var duplicates: [String] = []
        var b = try decodeBody(req, duplicates: &duplicates)
        _ = try validateFields(&b, t.resource.gvk(subresource: "binding"), duplicates: duplicates, req)
        guard let node = b[path: ["target", "name"]]?.string, !node.isEmpty else {
            throw APIError.invalid(t.resource, t.name!, [FieldError("target.name", "Required value")])
        }
        let r = t.resource, name = t.name!
        guard let current = try await store.get(r.key(namespace: t.namespace, name: name)) else { throw APIError.notFound(r, name) }
        var o = try present(current, r)
        if let existing = o[path: ["spec", "nodeName"]]?.string, !existing.isEmpty {
            throw APIError(code: 409, reason: "Conflict", message: "Operation cannot be fulfilled on pods/binding \"\(name)\": pod \(name) is already assigned to node \"\(existing)\"")
        }
        o[path: ["spec", "nodeName"]] = .string(node)
        _ = try await write(r, t, name: name, new: o, current: current, subresource: nil, dryRun: try isDryRun(req),
                            tracking: .update(try fieldManagerName(req)))
        return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success", "code": 201], 201)
    }
}
