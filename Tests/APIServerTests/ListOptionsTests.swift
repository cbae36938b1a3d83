import Foundation
@testable import APIServer
import KubeAPI
import Testing

/// Lists and watches as current client-go uses them: pages with `remainingItemCount`,
/// `resourceVersionMatch`, and the watch-list (`sendInitialEvents`) with its closing bookmark.
@Suite("list options")
struct ListOptionsTests {
    static let path = "/api/v1/namespaces/default/configmaps"

    func fill(_ h: APIHandler, _ n: Int) async {
        for i in 0..<n {
            _ = await h.post(Self.path, ["metadata": ["name": .string(String(format: "cm-%03d", i)), "labels": ["odd": .string(i % 2 == 1 ? "yes" : "no")]]])
        }
    }

    @Test func pagesSayHowManyRemain() async throws {
        let h = try await makeHandler()
        await fill(h, 25)
        var page = await h.get(Self.path, ["limit": "10"]).json
        #expect(page?["items"]?.array?.count == 10 && page?[path: ["metadata", "remainingItemCount"]] == 15)
        let rv = page?[path: ["metadata", "resourceVersion"]]
        // Writes after the first page change neither the pages nor the count: they are read at its revision.
        await fill(h, 0)
        _ = await h.post(Self.path, ["metadata": ["name": "zz-later"]])
        page = await h.get(Self.path, ["limit": "10", "continue": page?[path: ["metadata", "continue"]]?.string ?? ""]).json
        #expect(page?[path: ["metadata", "remainingItemCount"]] == 5 && page?[path: ["metadata", "resourceVersion"]] == rv)
        page = await h.get(Self.path, ["limit": "10", "continue": page?[path: ["metadata", "continue"]]?.string ?? ""]).json
        #expect(page?["items"]?.array?.count == 5 && page?[path: ["metadata", "remainingItemCount"]] == nil && page?[path: ["metadata", "continue"]] == nil)
        // With a selector the count is not known: none is given.
        let selected = await h.get(Self.path, ["limit": "3", "labelSelector": "odd=yes"]).json
        #expect(selected?["items"]?.array?.count == 3 && selected?[path: ["metadata", "continue"]] != nil)
        #expect(selected?[path: ["metadata", "remainingItemCount"]] == nil)
    }

    @Test func resourceVersionMatchIsValidated() async throws {
        let h = try await makeHandler()
        await fill(h, 3)
        let rv = await h.get(Self.path).json?[path: ["metadata", "resourceVersion"]]?.string ?? ""
        #expect(await h.get(Self.path, ["resourceVersion": rv, "resourceVersionMatch": "NotOlderThan"]).json?["items"]?.array?.count == 3)
        #expect(await h.get(Self.path, ["resourceVersion": rv, "resourceVersionMatch": "Exact"]).json?["items"]?.array?.count == 3)
        let noRV = await h.get(Self.path, ["resourceVersionMatch": "Exact"])
        #expect(noRV.code == 422)
        #expect(noRV.json?["message"] == #"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"#)
        #expect(await h.get(Self.path, ["resourceVersion": rv, "resourceVersionMatch": "Newest"]).code == 422)
        #expect(await h.get(Self.path, ["sendInitialEvents": "true"]).code == 422, "a list may not ask for initial events")
        let watchWithoutBookmarks = await h.get(Self.path, ["watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"])
        #expect(watchWithoutBookmarks.code == 422)
    }

    /// The watch-list: every current object as ADDED, a bookmark annotated
    /// `k8s.io/initial-events-end`, then what changes.
    @Test func watchListSendsInitialEventsThenABookmark() async throws {
        let h = try await makeHandler()
        await fill(h, 4)
        let r = await h.get(Self.path, ["watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
                                        "allowWatchBookmarks": "true", "labelSelector": "odd=yes"])
        guard case .stream(let s) = r.body else { Issue.record("not a stream: \(r.json?.text() ?? "")"); return }
        _ = await h.post(Self.path, ["metadata": ["name": "new", "labels": ["odd": "yes"]]])
        var events: [String] = []
        for try await line in s {
            let e = try JSONValue.parse(line)
            let end = e[path: ["object", "metadata", "annotations", "k8s.io/initial-events-end"]] == "true"
            events.append("\(e["type"]?.string ?? "") \(end ? "end" : e[path: ["object", "metadata", "name"]]?.string ?? "")")
            if events.count == 4 { break }
        }
        #expect(events == ["ADDED cm-001", "ADDED cm-003", "BOOKMARK end", "ADDED new"])
        // sendInitialEvents=false: from now on, nothing before.
        #expect(await h.get(Self.path, ["watch": "1", "sendInitialEvents": "false"]).code == 422, "sendInitialEvents needs resourceVersionMatch=NotOlderThan")
        let quiet = await h.get(Self.path, ["watch": "1", "sendInitialEvents": "false", "resourceVersionMatch": "NotOlderThan"])
        guard case .stream(let q) = quiet.body else { Issue.record("not a stream"); return }
        _ = await h.post(Self.path, ["metadata": ["name": "newer"]])
        for try await line in q {
            #expect(try JSONValue.parse(line)[path: ["object", "metadata", "name"]] == "newer")
            break
        }
    }
}
