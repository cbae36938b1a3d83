import Crypto
import Foundation
import KubeAPI

/// Content addressed by its SHA-256, as a registry and containerd store it.
public struct Blob: Sendable, Equatable {
    public var mediaType: String
    public var data: Data
    public var digest: String

    public init(mediaType: String, data: Data) {
        self.mediaType = mediaType
        self.data = data
        digest = Self.digest(data)
    }

    public static func digest(_ data: Data) -> String {
        "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// The descriptor a manifest names the blob by.
    public var descriptor: JSONValue {
        ["mediaType": .string(mediaType), "digest": .string(digest), "size": .int(Int64(data.count))]
    }
}

/// An OCI image (image-spec v1): uncompressed tar layers, the config that says how to run it,
/// and the manifest that names both.
public struct OCIImage: Sendable {
    public static let manifestType = "application/vnd.oci.image.manifest.v1+json"
    public static let configType = "application/vnd.oci.image.config.v1+json"
    public static let layerType = "application/vnd.oci.image.layer.v1.tar"

    public var layers: [Blob]
    public var config: Blob
    public var manifest: Blob

    /// How a container of the image runs, as the config's `config` object holds it.
    public struct RunConfig: Sendable {
        public var entrypoint: [String] = []
        public var cmd: [String] = []
        public var env: [String] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        public var workingDir = "/"
        public var exposedPorts: [String] = []
        public var user = ""
        public init(entrypoint: [String] = [], cmd: [String] = [], exposedPorts: [String] = []) {
            self.entrypoint = entrypoint
            self.cmd = cmd
            self.exposedPorts = exposedPorts
        }
    }

    /// The image of `layers` (each a finished tar archive), run as `run` says.
    public init(layers tars: [Data], run: RunConfig, architecture: String = OCIImage.hostArchitecture) {
        layers = tars.map { Blob(mediaType: Self.layerType, data: $0) }
        var runConfig: [String: JSONValue] = ["Env": .array(run.env.map { .string($0) }), "WorkingDir": .string(run.workingDir)]
        if !run.entrypoint.isEmpty { runConfig["Entrypoint"] = .array(run.entrypoint.map { .string($0) }) }
        if !run.cmd.isEmpty { runConfig["Cmd"] = .array(run.cmd.map { .string($0) }) }
        if !run.exposedPorts.isEmpty { runConfig["ExposedPorts"] = .object(Dictionary(uniqueKeysWithValues: run.exposedPorts.map { ($0, JSONValue.object([:])) })) }
        if !run.user.isEmpty { runConfig["User"] = .string(run.user) }
        let configJSON: JSONValue = [
            "architecture": .string(architecture), "os": "linux", "config": .object(runConfig),
            // Uncompressed layers: each diff ID is the layer's own digest.
            "rootfs": ["type": "layers", "diff_ids": .array(layers.map { .string($0.digest) })],
        ]
        config = Blob(mediaType: Self.configType, data: configJSON.serialized())
        let manifestJSON: JSONValue = ["schemaVersion": 2, "mediaType": .string(Self.manifestType), "config": config.descriptor,
                                       "layers": .array(layers.map(\.descriptor))]
        manifest = Blob(mediaType: Self.manifestType, data: manifestJSON.serialized())
    }

    /// The platform's name for this machine's architecture (amd64, arm64, …).
    public static var hostArchitecture: String {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return "amd64"
        case "aarch64": return "arm64"
        case "armv7l": return "arm"
        default: return machine
        }
    }
}
