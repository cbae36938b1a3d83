import ArgumentParser

@main
struct Switchyard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A Kubernetes networking data plane: kube-proxy modes, CNI, and a lab in network namespaces.",
        subcommands: [Render.self, Proxy.self, CNICommand.self, Server.self])
}
