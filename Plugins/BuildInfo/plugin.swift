import Foundation
import PackagePlugin

/// Writes `BuildInfo.swift` for a target: the version and the commit the build comes from
/// (`git describe`, "-dirty" when the tree has changes), so `switchyard --version` says which
/// source a binary was built from. It runs again whenever the repository's HEAD moves (its
/// reflog is an input) or the package's sources change; without git it writes "unknown".
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let root = context.package.directoryURL
        let out = context.pluginWorkDirectoryURL.appending(path: "BuildInfo.swift")
        var inputs: [URL] = []
        for rel in [".git/HEAD", ".git/logs/HEAD", ".git/index"] {
            let u = root.appending(path: rel)
            if FileManager.default.fileExists(atPath: u.path) { inputs.append(u) }
        }
        if let t = target as? SourceModuleTarget { inputs += t.sourceFiles.map(\.url) }
        let script = """
            set -u
            commit=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
            dirty=""
            if [ "$commit" != unknown ] && [ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]; then dirty="-dirty"; fi
            date=$(git -C "$1" show -s --format=%cI HEAD 2>/dev/null || echo unknown)
            built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
            swift=$(swift --version 2>/dev/null | head -1 | sed -n 's/.*Swift version \\([^ ]*\\).*/\\1/p')
            cat > "$2.tmp" <<SWIFT
            // Generated at build time by Plugins/BuildInfo; not committed.
            enum BuildInfo {
                static let version = "0.18.0"
                static let commit = "$commit$dirty"
                static let commitDate = "$date"
                static let buildDate = "$built"
                static let swiftVersion = "${swift:-unknown}"
            }
            SWIFT
            mv "$2.tmp" "$2"
            """
        return [.buildCommand(displayName: "Writing BuildInfo.swift (the commit this build comes from)",
                              executable: URL(fileURLWithPath: "/bin/sh"),
                              arguments: ["-c", script, "sh", root.path, out.path],
                              inputFiles: inputs, outputFiles: [out])]
    }
}
