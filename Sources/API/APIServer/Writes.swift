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
                return try await self.store.create(r.key(namespace: t.namespace, name: name), value: r.encode(stored))
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
            old = try r.decode(current.value)
        }
        var o = new
        try checkKind(o, r)
        if let n = o[path: ["metadata", "name"]]?.string, n != name {
            throw APIError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        o[path: ["metadata", "name"]] = .string(name)
        if r.namespaced { o[path: ["metadata", "namespace"]] = .string(t.namespace!) }
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
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
            } else if subresource != "binding" {
                o["status"] = oldBare["status"]
            }
        }
        if Self.isCertificateRequests(r) { Self.prepareCertificateRequest(&o, new: new, old: oldBare, subresource: subresource, now: Self.rfc3339()) }
        if r.group.isEmpty && r.resource == "namespaces" {
            // A namespace's spec.finalizers change only through /finalize, and nothing else does.
            if subresource == "finalize" {
                var keep = oldBare
                keep[path: ["spec", "finalizers"]] = o[path: ["spec", "finalizers"]] ?? []
                o = keep
            } else {
                o[path: ["spec", "finalizers"]] = oldBare[path: ["spec", "finalizers"]]
            }
        }
        if hasGeneration(r), Self.generationChanges(o, oldBare, r) {
            o[path: ["metadata", "generation"]] = .int((oldBare[path: ["metadata", "generation"]]?.int ?? 0) + 1)
        }
        switch tracking {
        case .storage:
            break  // straight to storage: no admission, no managed fields
        case .applied:
            try await admit(&o, old: oldBare, r, dryRun: dryRun, subresource: subresource)
        case .update(let manager):
            try await admit(&o, old: oldBare, r, dryRun: dryRun, subresource: subresource)
            if let fm = fieldManager(r, subresource: subresource ?? t.subresource) {
                fm.update(live: oldBare, new: &o, manager: manager, now: Self.rfc3339())
            }
        }
        // Nothing changed: no new revision (kubectl then says "patched (no change)").
        if o == oldBare { return (current, nil) }
        // A dry run answers with what would be stored, at the current revision.
        if dryRun { return (KeyValue(key: current.key, value: Data(), createRevision: current.createRevision, modRevision: current.modRevision), o) }
        if finishesDeletion(o, r) {
            let kv = try await storeCall(r, name) { try await self.store.delete(r.key(namespace: t.namespace, name: name), expected: current.modRevision) }
            await admission.release(oldBare, r)
            return (kv, oldBare)
        }
        let stored = o
        let kv = try await storeCall(r, name) {
            do {
                return try await self.store.update(r.key(namespace: t.namespace, name: name), value: r.encode(stored), expected: current.modRevision)
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
        var opts: JSONValue?
        if !req.body.isEmpty {
            do { opts = try JSONValue.parse(req.body) } catch { throw APIError.badRequest("the body of the request is not DeleteOptions: \(error)") }
        }
        // Query parameters say the same as the body (kubectl sends the body; curl users the query).
        if let g = req.query["gracePeriodSeconds"], let n = Int64(g) { opts = opts ?? [:]; opts?["gracePeriodSeconds"] = .int(n) }
        if let p = req.query["propagationPolicy"] { opts = opts ?? [:]; opts?["propagationPolicy"] = .string(p) }
        var expected: Int64?
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
        if admissionPlugins.contains("ValidatingAdmissionWebhook"), r.group != WebhookAdmission.group,
           try await !currentWebhooks().validating.isEmpty,
           let cur = try await store.get(r.key(namespace: t.namespace, name: name)), let old = try? r.decode(cur.value) {
            try await runValidatingWebhooks(nil, old: old, r, subresource: nil, dryRun: false, operation: "DELETE")
        }
        if r.group.isEmpty && r.resource == "namespaces" { return try await terminate(t, name: name, expected: expected, options: opts ?? [:]) }
        try await restrictNodeDelete(r, namespace: t.namespace, name: name)
        return try await deleteObject(r, namespace: t.namespace, name: name, options: opts ?? [:], expected: expected)
    }

    /// What a deletion does, as kube-apiserver's generic registry decides it:
    /// - an object with finalizers, or deleted with `propagationPolicy` Foreground or Orphan, is
    ///   only marked (`deletionTimestamp`; the `foregroundDeletion` or `orphan` finalizer added),
    ///   and goes when its last finalizer is removed (the garbage collector's part);
    /// - a Pod bound to a node and not finished is marked with `deletionTimestamp` now plus its
    ///   grace period (`deletionGracePeriodSeconds`): its kubelet stops it and deletes it with a
    ///   grace period of 0; an unbound or finished Pod, or one deleted with 0, goes at once;
    /// - anything else goes at once.
    func deleteObject(_ r: ResourceInfo, namespace: String?, name: String, options: JSONValue, expected: Int64?) async throws -> APIResponse {
        let key = r.key(namespace: namespace, name: name)
        var policy = options["propagationPolicy"]?.string
        if policy == nil, let orphan = options["orphanDependents"]?.bool { policy = orphan ? "Orphan" : "Background" }
        if let p = policy, !["Orphan", "Background", "Foreground"].contains(p) {
            throw APIError.invalidOptions("DeleteOptions", [FieldError("propagationPolicy", "Unsupported value: \"\(p)\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"")])
        }
        let grace = options["gracePeriodSeconds"]?.int
        if let grace, grace < 0 {
            throw APIError.invalidOptions("DeleteOptions", [FieldError("gracePeriodSeconds", "Invalid value: \(grace): must be greater than or equal to 0")])
        }
        for _ in 0..<5 {
            guard let current = try await storeCall(r, name, { try await self.store.get(key) }) else { throw APIError.notFound(r, name) }
            if let expected, expected != current.modRevision { throw APIError.conflict(r, name) }
            var o = try r.decode(current.value)
            var finalizers = (o[path: ["metadata", "finalizers"]]?.array ?? []).compactMap(\.string)
            let wanted = policy == "Foreground" ? "foregroundDeletion" : policy == "Orphan" ? "orphan" : nil
            if let wanted, !finalizers.contains(wanted) {
                finalizers.removeAll { $0 == "foregroundDeletion" || $0 == "orphan" }
                finalizers.append(wanted)
            }
            // A Pod's grace period: the option, else its spec's; what is left of an earlier one is shortened, never lengthened.
            var podGrace: Int64?
            if r.group.isEmpty && r.resource == "pods" {
                let bound = !(o[path: ["spec", "nodeName"]]?.string ?? "").isEmpty
                let phase = o[path: ["status", "phase"]]?.string ?? ""
                let g = grace ?? o[path: ["spec", "terminationGracePeriodSeconds"]]?.int ?? 30
                if bound && g > 0 && phase != "Succeeded" && phase != "Failed" { podGrace = g }
            }
            if finalizers.isEmpty && podGrace == nil {
                // A write in between (a controller's status update) is retried, as upstream's
                // registry does, unless the caller's precondition named a version.
                let kv: KeyValue
                do {
                    kv = try await storeCall(r, name) { try await self.store.delete(key, expected: current.modRevision) }
                } catch let e as APIError where e.reason == "Conflict" && expected == nil {
                    continue
                }
                let gone = try present(kv, r)
                await admission.release(gone, r)
                if r == Resources.crd {
                    let customPrefixes = registry.storedResources.filter { $0.custom?.definition == name }.map(\.storePrefix)
                    registry.uninstall(name)
                    try await deleteObjects(under: customPrefixes)
                }
                return .ok(gone)
            }
            // Marked, not deleted.
            let now = Date()
            if let podGrace {
                let previous = o[path: ["metadata", "deletionGracePeriodSeconds"]]?.int
                if previous == nil || podGrace < previous! {
                    o[path: ["metadata", "deletionTimestamp"]] = .string(Self.rfc3339(now.addingTimeInterval(Double(podGrace))))
                    o[path: ["metadata", "deletionGracePeriodSeconds"]] = .int(podGrace)
                }
            } else if o[path: ["metadata", "deletionTimestamp"]] == nil {
                o[path: ["metadata", "deletionTimestamp"]] = .string(Self.rfc3339(now))
                o[path: ["metadata", "deletionGracePeriodSeconds"]] = 0
            }
            o[path: ["metadata", "finalizers"]] = finalizers.isEmpty ? nil : .array(finalizers.map { .string($0) })
            if o == (try r.decode(current.value)) { return .ok(try present(current, r)) }
            let stored = o
            do {
                let kv = try await storeCall(r, name) { try await self.store.update(key, value: r.encode(stored), expected: current.modRevision) }
                try await written(r, stored)
                return .ok(try present(kv, r, known: stored))
            } catch let e as APIError where e.reason == "Conflict" && expected == nil {
                continue
            }
        }
        throw APIError.conflict(r, name)
    }

    /// An update that leaves a marked object without finalizers (and, for a Pod, with a grace
    /// period of 0) deletes it, as upstream's registry does.
    func finishesDeletion(_ o: JSONValue, _ r: ResourceInfo) -> Bool {
        guard o[path: ["metadata", "deletionTimestamp"]] != nil, (o[path: ["metadata", "finalizers"]]?.array ?? []).isEmpty else { return false }
        // A namespace goes once its spec has no finalizer left either.
        if r.group.isEmpty && r.resource == "namespaces" && !(o[path: ["spec", "finalizers"]]?.array ?? []).isEmpty { return false }
        return (o[path: ["metadata", "deletionGracePeriodSeconds"]]?.int ?? 0) == 0
    }

    /// Deleting a namespace, as upstream: the first delete turns it Terminating (nothing new may
    /// be made in it); the namespace controller then deletes what is in it, removes the
    /// `kubernetes` finalizer through `/finalize` and deletes it again, which removes it once
    /// its spec has no finalizer left (before, a delete answers 409, as kube-apiserver's).
    func terminate(_ t: Target, name: String, expected: Int64?, options: JSONValue) async throws -> APIResponse {
        let r = t.resource
        guard let current = try await store.get(r.key(namespace: nil, name: name)) else { throw APIError.notFound(r, name) }
        if let expected, expected != current.modRevision { throw APIError.conflict(r, name) }
        var o = try r.decode(current.value)
        if o[path: ["metadata", "deletionTimestamp"]] != nil {
            guard (o[path: ["spec", "finalizers"]]?.array ?? []).isEmpty else {
                throw APIError(code: 409, reason: "Conflict",
                               message: "Operation cannot be fulfilled on namespaces \"\(name)\": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.",
                               details: APIError.details(r, name))
            }
            return try await deleteObject(r, namespace: nil, name: name, options: options, expected: expected)
        }
        o[path: ["status", "phase"]] = "Terminating"
        o[path: ["metadata", "deletionTimestamp"]] = .string(Self.rfc3339())
        let stored = o
        let kv = try await storeCall(r, name) {
            try await self.store.update(r.key(namespace: nil, name: name), value: r.encode(stored), expected: current.modRevision)
        }
        return .ok(try present(kv, r))
    }

    func deleteCollection(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        let dryRun = try isDryRun(req, deleteOptions: req.body.isEmpty ? nil : try? JSONValue.parse(req.body))
        let items = try await selected(req, t, revision: nil).items
        if dryRun { return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success"]) }
        let opts = req.body.isEmpty ? JSONValue.object([:]) : (try? JSONValue.parse(req.body)) ?? [:]
        for (_, o) in items {
            do {
                _ = try await deleteObject(t.resource, namespace: o.namespace.isEmpty ? nil : o.namespace, name: o.name, options: opts, expected: nil)
            } catch let e as APIError where e.code == 404 {
                continue
            }
        }
        return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success"])
    }

    /// `pods/NAME/binding`, as upstream's BindingREST: the target must be a Node; the pod (with
    /// the Binding's uid, when it names one) must still exist, not be terminating, unassigned and
    /// without scheduling gates; it gets the node, the Binding's annotations and
    /// `PodScheduled=True`, written straight to storage (no managed fields, no admission).
    func bind(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        var duplicates: [String] = []
        var b = try decodeBody(req, duplicates: &duplicates)
        _ = try validateFields(&b, t.resource.gvk(subresource: "binding"), duplicates: duplicates, req)
        let r = t.resource, name = t.name!
        if let n = b[path: ["metadata", "name"]]?.string, !n.isEmpty, n != name {
            throw APIError.badRequest("name in URL does not match name in Binding object")
        }
        guard let node = b[path: ["target", "name"]]?.string, !node.isEmpty else {
            throw APIError.invalid(r, name, [FieldError("target.name", "Required value")])
        }
        if let kind = b[path: ["target", "kind"]]?.string, !kind.isEmpty, kind != "Node" {
            throw APIError.invalid(r, name, [FieldError("target.kind", "Invalid value: \(JSONValue.string(kind).text()): must be empty or 'Node'")])
        }
        guard let current = try await store.get(r.key(namespace: t.namespace, name: name)) else { throw APIError.notFound(r, name) }
        let before = try present(current, r)
        var o = before
        func conflict(_ why: String) -> APIError {
            APIError(code: 409, reason: "Conflict", message: "Operation cannot be fulfilled on pods/binding \"\(name)\": \(why)")
        }
        if let uid = b[path: ["metadata", "uid"]]?.string, !uid.isEmpty, uid != o.uid {
            throw conflict("Precondition failed: UID in precondition: \(uid), UID in object meta: \(o.uid)")
        }
        if o.isDeleting { throw conflict("pod \(name) is being deleted, cannot be assigned to a host") }
        if let existing = o[path: ["spec", "nodeName"]]?.string, !existing.isEmpty {
            throw conflict("pod \(name) is already assigned to node \"\(existing)\"")
        }
        if !(o[path: ["spec", "schedulingGates"]]?.array ?? []).isEmpty {
            throw conflict("pod \(name) has non-empty .spec.schedulingGates")
        }
        o[path: ["spec", "nodeName"]] = .string(node)
        if case .object(let annotations)? = b[path: ["metadata", "annotations"]], !annotations.isEmpty {
            var merged = o[path: ["metadata", "annotations"]]?.object ?? [:]
            for (k, v) in annotations { merged[k] = v }
            o[path: ["metadata", "annotations"]] = .object(merged)
        }
        // podutil.UpdatePodCondition: the transition time moves only when the status does.
        var conditions = o[path: ["status", "conditions"]]?.array ?? []
        let scheduled: JSONValue = ["type": "PodScheduled", "status": "True", "lastProbeTime": nil, "lastTransitionTime": .string(Self.rfc3339())]
        if let i = conditions.firstIndex(where: { $0["type"]?.string == "PodScheduled" }) {
            if conditions[i]["status"]?.string != "True" { conditions[i] = scheduled }
        } else {
            conditions.append(scheduled)
        }
        o[path: ["status", "conditions"]] = .array(conditions)
        _ = try await write(r, t, name: name, new: o, current: current, subresource: "binding", dryRun: try isDryRun(req),
                            tracking: .storage, presented: before)
        return .ok(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success", "code": 201], 201)
    }

    /// `pods/NAME/eviction`: the Pod is deleted (with the Eviction's delete options) unless the
    /// PodDisruptionBudget that selects it allows no disruption now, as upstream's eviction
    /// REST answers: 429 with the budget's cause, and the budget's `disruptionsAllowed`
    /// decremented (and the Pod noted in `disruptedPods`) when it goes.
    func evict(_ req: APIRequest, _ t: Target) async throws -> APIResponse {
        var duplicates: [String] = []
        var e = try decodeBody(req, duplicates: &duplicates)
        _ = try validateFields(&e, t.resource.gvk(subresource: "eviction"), duplicates: duplicates, req)
        let r = t.resource, name = t.name!, ns = t.namespace!
        if let n = e[path: ["metadata", "name"]]?.string, n != name {
            throw APIError.badRequest("name in URL does not match name in Eviction object")
        }
        let options = e["deleteOptions"] ?? [:]
        guard let current = try await store.get(r.key(namespace: ns, name: name)) else { throw APIError.notFound(r, name) }
        let pod = try present(current, r)
        let success: JSONValue = ["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success", "code": 201]
        // A finished, pending or already terminating Pod needs no budget.
        let phase = pod[path: ["status", "phase"]]?.string ?? ""
        if phase == "Succeeded" || phase == "Failed" || phase == "Pending" || pod.isDeleting {
            _ = try await deleteObject(r, namespace: ns, name: name, options: options, expected: nil)
            return .ok(success, 201)
        }
        let pdbs = Resources.find(group: "policy", version: "v1", resource: "poddisruptionbudgets")!
        let budgets = try await store.list(prefix: pdbs.storePrefix + ns + "/", after: nil, limit: 0, revision: nil).items
            .compactMap { kv -> (KeyValue, JSONValue)? in (try? JSONValue.parse(kv.value)).map { (kv, $0) } }
            .filter { _, b in b[path: ["spec", "selector"]].map { ObjectSelector($0) }.map { !$0.isEmpty && $0.matches(pod.labels) } ?? false }
        if budgets.count > 1 {
            throw APIError.internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
        }
        if let (kv, budget) = budgets.first {
            let bname = budget.name
            func tooMany(_ cause: String) -> APIError {
                APIError(code: 429, reason: "TooManyRequests", message: "Cannot evict pod as it would violate the pod's disruption budget.",
                         details: ["causes": [["reason": "DisruptionBudget", "message": .string(cause)]]])
            }
            if (budget[path: ["status", "observedGeneration"]]?.int ?? 0) < (budget[path: ["metadata", "generation"]]?.int ?? 0) {
                throw tooMany("The disruption budget \(bname) is still being processed by the server.")
            }
            let allowed = budget[path: ["status", "disruptionsAllowed"]]?.int ?? 0
            if allowed < 0 {
                throw APIError(code: 403, reason: "Forbidden", message: "pdb disruptions allowed is negative")
            }
            if allowed == 0 {
                let desired = budget[path: ["status", "desiredHealthy"]]?.int ?? 0, healthy = budget[path: ["status", "currentHealthy"]]?.int ?? 0
                throw tooMany("The disruption budget \(bname) needs \(desired) healthy pods and has \(healthy) currently")
            }
            var b = budget
            b[path: ["status", "disruptionsAllowed"]] = .int(allowed - 1)
            var disrupted = b[path: ["status", "disruptedPods"]]?.object ?? [:]
            disrupted[name] = .string(Self.rfc3339())
            b[path: ["status", "disruptedPods"]] = .object(disrupted)
            do {
                _ = try await store.update(kv.key, value: b.serialized(), expected: kv.modRevision)
            } catch let e as StoreError where { if case .conflict = e { true } else { false } }() {
                throw APIError(code: 429, reason: "TooManyRequests", message: "Operation cannot be fulfilled on poddisruptionbudgets.policy \"\(bname)\": the object has been modified; please apply your changes to the latest version and try again")
            }
        }
        _ = try await deleteObject(r, namespace: ns, name: name, options: options, expected: nil)
        return .ok(success, 201)
    }
}
