import Foundation
import ControllerKit
import FakeNodes
import KubeAPI
import KubeClient

/// `switchyard-netlab stand-in`: renews the Leases of the lab's nodes and runs its fake nodes,
/// until killed (netlab down kills it with the rest of the control plane's processes).
public enum StandIn {
    public static func run(kubeconfig: String, nodes: [String], fakeNodes: Int) async throws {
        let client = KubeClient(config: try Kubeconfig.load(path: kubeconfig))
        let api = API(client, fieldManager: "kubelet")
        let fake = FakeNodes(api: api, count: fakeNodes, heartbeatOnly: nodes)
        await fake.run()
    }
}
