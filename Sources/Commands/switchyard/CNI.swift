import ArgumentParser
import CNI
import Foundation

struct CNICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cni",
        abstract: "The CNI plugins (switchyard-bridge, switchyard-host-local, switchyard-loopback).",
        subcommands: [Install.self])

    struct Install: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put the plugins into a CNI bin directory and a sample .conflist into a conf directory.")

        @Argument(help: "The CNI bin directory (a runtime's CNI_PATH, e.g. /opt/cni/bin).")
        var dir: String

        @Option(help: "Where the sample 10-switchyard.conflist goes (default: DIR; a runtime reads /etc/cni/net.d).")
        var confDir: String?

        @Option(help: "The plugin binary to install (default: switchyard-cni next to this executable).")
        var pluginBinary: String?

        @Option(help: "The sample's network name.") var network = "switchyard"
        @Option(help: "The sample's bridge.") var bridge = "cni0"
        @Option(help: "The sample's pod subnet for host-local.") var subnet = "10.244.0.0/24"

        func run() throws {
            let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            var installer = CNIInstaller(binary: pluginBinary ?? here.appendingPathComponent("switchyard-cni").path,
                                         binDir: dir, confDir: confDir)
            installer.network = network
            installer.bridge = bridge
            installer.subnet = subnet
            do {
                for path in try installer.install() { print(path) }
            } catch let e as CNIError {
                throw ValidationError(e.description)
            }
        }
    }
}
