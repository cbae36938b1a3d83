import ArgumentParser
import ClusterPKI
import Foundation
import KubeAPI
import KubeClient
import Kubelet

/// `switchyard token`: bootstrap tokens, as `kubeadm token` makes them.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Manage bootstrap tokens, with which nodes join (switchyard agent --token).",
        subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a bootstrap token (a bootstrap-token-ID Secret in kube-system) and print it, or the command that joins a node with it.")

        @Argument(help: "The token, ID.SECRET ([a-z0-9]{6}.[a-z0-9]{16}); a random one when left out.")
        var token: String?

        @Option(help: "An admin's kubeconfig of the API server.")
        var kubeconfig: String

        @Option(help: "How long the token lives (Go duration; 0 for ever).")
        var ttl = "24h0m0s"

        @Option(help: "What the token is for, in words.")
        var description: String?

        @Option(help: "Extra groups the token authenticates with (system:bootstrappers:…).")
        var groups = "system:bootstrappers:kubeadm:default-node-token"

        @Option(help: "What the token may be used for: signing (cluster-info), authentication.")
        var usages = "signing,authentication"

        @Flag(name: .customLong("print-join-command"), help: "Print the whole `switchyard agent` command that joins a node, not only the token.")
        var printJoinCommand = false

        static func random(_ n: Int) -> String {
            let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
            var g = SystemRandomNumberGenerator()
            return String((0..<n).map { _ in alphabet[Int(g.next(upperBound: UInt64(alphabet.count)))] })
        }

        func run() async throws {
            let given = token ?? Self.random(6) + "." + Self.random(16)
            let (id, secret): (String, String)
            do { (id, secret) = try KubeletClientCertificate.parseToken(given) } catch { throw ValidationError("\(error)") }
            guard let seconds = GoDuration.seconds(ttl), seconds >= 0 else { throw ValidationError("--ttl \(ttl): a Go duration (24h0m0s)") }
            let usageList = usages.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if let bad = usageList.first(where: { !["signing", "authentication"].contains($0) }) {
                throw ValidationError("--usages: \(bad): the usages are signing and authentication")
            }
            let groupList = groups.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if let bad = groupList.first(where: { !$0.hasPrefix("system:bootstrappers:") }) {
                throw ValidationError("--groups: \(bad): bootstrap groups must start with \"system:bootstrappers:\"")
            }
            let config: Kubeconfig
            do { config = try Kubeconfig.load(path: kubeconfig) } catch { throw ValidationError("--kubeconfig \(kubeconfig): \(error)") }
            var data: [String: JSONValue] = ["token-id": .string(id), "token-secret": .string(secret)]
            if seconds > 0 { data["expiration"] = .string(RFC3339.format(Date().timeIntervalSince1970 + seconds)) }
            for u in usageList { data["usage-bootstrap-\(u)"] = "true" }
            if !groupList.isEmpty { data["auth-extra-groups"] = .string(groupList.joined(separator: ",")) }
            if let description { data["description"] = .string(description) }
            let secretObject: JSONValue = [
                "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                "metadata": ["name": .string("bootstrap-token-" + id), "namespace": "kube-system"], "stringData": .object(data),
            ]
            let r = try await KubeClient(config: config).request("POST", "/api/v1/namespaces/kube-system/secrets", body: secretObject)
            guard r.status == 201 else {
                throw ValidationError("creating the token's Secret: HTTP \(r.status): \(r.body[path: ["message"]]?.string ?? r.body.text())")
            }
            guard printJoinCommand else { print(given); return }
            guard let ca = config.tls?.certificateAuthority else {
                throw ValidationError("--kubeconfig \(kubeconfig): no certificate-authority: the join command pins the cluster CA")
            }
            let hash: String
            do { hash = try ClusterPKI.caCertHash(of: String(decoding: ca, as: UTF8.self)) } catch { throw ValidationError("the kubeconfig's CA: \(error)") }
            print("switchyard agent --server \(config.server) --token \(given) --ca-cert-hash \(hash)")
        }
    }
}
