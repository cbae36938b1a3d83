import ArgumentParser
import Foundation

@main
struct Switchyard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A Kubernetes networking data plane: kube-proxy modes, CNI, and a lab in network namespaces.",
        version: BuildInfo.versionLine,
        subcommands: [Render.self, Explain.self, Proxy.self, CNICommand.self, Server.self, SchedulerCommand.self, ControllerManagerCommand.self, KubeletCommand.self, AgentCommand.self, IngressControllerCommand.self, CloudControllerManagerCommand.self, TokenCommand.self, Version.self])

    /// Upstream's boolean flags may stand alone (`--leader-elect`) or take a value
    /// (`--leader-elect=false`); ArgumentParser's options always take one.
    static let bareBooleans: Set<String> = ["--leader-elect", "--allocate-node-cidrs", "--rotate-certificates", "--anonymous-auth",
                                                 "--authentication-token-webhook", "--use-service-account-credentials",
                                                 "--watch-ingress-without-class"]

    static func arguments() -> [String] {
        var out: [String] = []
        let args = Array(CommandLine.arguments.dropFirst())
        for (i, a) in args.enumerated() {
            out.append(a)
            if bareBooleans.contains(a), !(i + 1 < args.count && ["true", "false"].contains(args[i + 1])) { out.append("true") }
        }
        return out
    }

    /// As ArgumentParser's, except for errors a command throws while it runs: those are printed
    /// as one `Error:` line (and, for a bad flag value, where to read the command's flags),
    /// not followed by the root command's usage, which says nothing about the command that failed.
    static func main() async {
        let command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments())
        } catch {
            exit(withError: error)
        }
        do {
            if var c = command as? any AsyncParsableCommand {
                try await c.run()
            } else {
                var c = command
                try c.run()
            }
        } catch {
            let name = type(of: command).configuration.commandName ?? "\(type(of: command))".lowercased()
            let full = name == "switchyard" ? name : "switchyard \(name)"
            if let e = error as? ValidationError {
                FileHandle.standardError.write(Data("Error: \(e.message)\nSee '\(full) --help'.\n".utf8))
                Foundation.exit(ExitCode.validationFailure.rawValue)
            }
            // ArgumentParser's own errors (the help `--help` and `help` ask for, which its help
            // command throws from `run`; CleanExit, ExitCode) are reported as it reports them.
            if String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") { exit(withError: error) }
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            Foundation.exit(ExitCode.failure.rawValue)
        }
    }
}

/// `switchyard version`: the version, the commit it was built from, and the Swift it was built with.
struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version and the commit this build comes from.")

    @Option(name: [.customShort("o"), .customLong("output")], help: "'json' for kubectl version's JSON shape; default one line.")
    var output: String?

    func run() throws {
        switch output {
        case nil, "": print(BuildInfo.versionLine)
        case "json": print(BuildInfo.json)
        default: throw ValidationError("--output \(output!): want json, or nothing")
        }
    }
}

extension BuildInfo {
    /// `switchyard v0.18.0 (commit 1a2b3c4d5e6f of 2026-12-04T22:00:00+00:00; Swift 6.3.1)`.
    static var versionLine: String {
        "switchyard v\(version) (commit \(commit) of \(commitDate), built \(buildDate); Swift \(swiftVersion))"
    }

    /// The fields `kubectl version -o json` prints for a component, filled with ours.
    static var json: String {
        """
        {
          "gitVersion": "v\(version)",
          "gitCommit": "\(commit)",
          "gitTreeState": "\(commit.hasSuffix("-dirty") ? "dirty" : "clean")",
          "buildDate": "\(buildDate)",
          "compiler": "swiftc",
          "swiftVersion": "\(swiftVersion)",
          "platform": "linux/amd64"
        }
        """
    }
}
