import Foundation
import HTTPJSON

/// Pushes images to a registry over the distribution API (v2), plain HTTP: each blob the
/// registry lacks is uploaded (a POST for the upload's location, one PUT with the content),
/// then the manifest is put under its tag.
public struct RegistryClient: Sendable {
    public let url: String
    let http: HTTPJSONClient

    /// - Parameter dial: makes the connected socket (for a registry inside another network
    ///   namespace); the client connects itself without it.
    public init(url: String, dial: (@Sendable (_ host: String, _ port: Int) throws -> Int32)? = nil) throws {
        self.url = url
        var http = try HTTPJSONClient(url: url, peer: "the registry")
        http.dial = dial
        self.http = http
    }

    public struct PushError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Whether the registry answers the v2 API.
    public func ping() async -> Bool {
        ((try? await http.exchange("GET", "/v2/"))?.status ?? 0) == 200
    }

    public func push(_ image: OCIImage, repository: String, tag: String) async throws {
        for blob in image.layers + [image.config] { try await upload(blob, repository) }
        let put = try await http.exchange("PUT", "/v2/\(repository)/manifests/\(tag)", body: image.manifest.data, contentType: image.manifest.mediaType)
        guard put.status == 201 else { throw failure("putting the manifest of \(repository):\(tag)", put.status, put.body) }
    }

    /// An image the registry holds: `repository:tag`, its manifest's digest, and its size (the
    /// config and the layers, as stored).
    public struct Listed: Sendable {
        public var name: String
        public var digest: String
        public var size: Int
    }

    /// Every tagged image, by name (the catalog, each repository's tags, each manifest).
    public func images() async throws -> [Listed] {
        let catalog = try await http.exchange("GET", "/v2/_catalog")
        guard catalog.status == 200, let repos = (try? JSONSerialization.jsonObject(with: catalog.body) as? [String: Any])?["repositories"] as? [String] else {
            throw failure("listing the catalog", catalog.status, catalog.body)
        }
        var out: [Listed] = []
        for repo in repos.sorted() {
            let t = try await http.exchange("GET", "/v2/\(repo)/tags/list")
            let tags = ((try? JSONSerialization.jsonObject(with: t.body) as? [String: Any])?["tags"] as? [String]) ?? []
            for tag in tags.sorted() {
                let m = try await http.exchange("GET", "/v2/\(repo)/manifests/\(tag)", headers: [("Accept", OCIImage.manifestType)])
                guard m.status == 200, let manifest = try? JSONSerialization.jsonObject(with: m.body) as? [String: Any] else { continue }
                let blobs = ((manifest["layers"] as? [[String: Any]]) ?? []) + [(manifest["config"] as? [String: Any]) ?? [:]]
                let digest = m.headers.first { $0.0.lowercased() == "docker-content-digest" }?.1 ?? Blob.digest(m.body)
                out.append(Listed(name: "\(repo):\(tag)", digest: digest, size: blobs.reduce(0) { $0 + (($1["size"] as? Int) ?? 0) }))
            }
        }
        return out
    }

    func upload(_ blob: Blob, _ repository: String) async throws {
        let head = try await http.exchange("HEAD", "/v2/\(repository)/blobs/\(blob.digest)")
        if head.status == 200 { return }
        let start = try await http.exchange("POST", "/v2/\(repository)/blobs/uploads/", body: Data(), contentType: "application/octet-stream")
        guard start.status == 202, let location = start.headers.first(where: { $0.0.lowercased() == "location" })?.1 else {
            throw failure("starting an upload to \(repository)", start.status, start.body)
        }
        // The location is absolute or a path, with its own query (the upload's state).
        var path = location
        if let u = URL(string: location), u.host != nil {
            path = u.path + (u.query.map { "?" + $0 } ?? "")
        }
        path += (path.contains("?") ? "&" : "?") + "digest=" + blob.digest.replacingOccurrences(of: ":", with: "%3A")
        let put = try await http.exchange("PUT", path, body: blob.data, contentType: "application/octet-stream")
        guard put.status == 201 else { throw failure("uploading \(blob.digest) to \(repository)", put.status, put.body) }
    }

    func failure(_ what: String, _ status: Int, _ body: Data) -> PushError {
        PushError(description: "\(url): \(what): HTTP \(status) \(String(decoding: body.prefix(300), as: UTF8.self))")
    }
}
