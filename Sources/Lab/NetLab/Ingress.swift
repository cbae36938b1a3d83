import Foundation
import KubeAPI

/// The lab's Ingress (with a cloud): `switchyard ingress-controller` with Debian's nginx on node-1's
/// network (as a host-network ingress-nginx), behind the Service `ingress-nginx/ingress-nginx` of
/// type LoadBalancer, whose endpoint is node-1's address; the Ingress `echo` sends the host
/// `echo.netlab.test` to the echo Service. The client reaches it at the balancer's address, through
/// the cloud, a NodePort and the proxies of whatever mode runs.
extension Cluster {
    public static let ingressHost = "echo.netlab.test"
    public static let ingressNamespace = "ingress-nginx"
    static let nginx = "/usr/sbin/nginx"

    func startIngress(timeout: Double = 30) async throws {
        guard state.router != nil, let node = state.nodes.first else { return }
        let ns = Self.ingressNamespace
        try await must("POST", "/api/v1/namespaces", ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(ns)]], okIf: [409])
        // The controller's rights, as ingress-nginx's manifests grant them.
        try await grant("system:ingress-nginx", role: "ingress-nginx", rules: [["apiGroups": [""], "resources": ["services", "secrets", "endpoints", "configmaps", "namespaces", "nodes", "pods"], "verbs": ["get", "list", "watch"]],
                      ["apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]],
                      ["apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["get", "list", "watch"]],
                      ["apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]],
                      ["apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]]])
        try await must("POST", "/apis/networking.k8s.io/v1/ingressclasses", [
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": ["name": "nginx", "annotations": ["ingressclass.kubernetes.io/is-default-class": "true"]],
            "spec": ["controller": "k8s.io/ingress-nginx"],
        ], okIf: [409])
        // Its Service: no selector; the endpoint is node-1's address, where nginx listens.
        try await must("POST", "/api/v1/namespaces/\(ns)/services", [
            "apiVersion": "v1", "kind": "Service", "metadata": ["name": "ingress-nginx", "namespace": .string(ns)],
            "spec": ["type": "LoadBalancer", "ports": [["name": "http", "port": 80, "targetPort": 80], ["name": "https", "port": 443, "targetPort": 443]]],
        ], okIf: [409])
        try await must("POST", "/apis/discovery.k8s.io/v1/namespaces/\(ns)/endpointslices", [
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": ["name": .string("ingress-nginx-\(node.name)"), "namespace": .string(ns),
                         "labels": ["kubernetes.io/service-name": "ingress-nginx", "endpointslice.kubernetes.io/managed-by": "netlab"]],
            "addressType": "IPv4",
            "endpoints": [["addresses": [.string(node.address)], "conditions": ["ready": true], "nodeName": .string(node.name)]],
            "ports": [["name": "http", "port": 80, "protocol": "TCP"], ["name": "https", "port": 443, "protocol": "TCP"]],
        ], okIf: [409])
        try await must("POST", "/apis/networking.k8s.io/v1/namespaces/default/ingresses", [
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ["name": "echo", "labels": ["netlab": "true"]],
            "spec": ["rules": [["host": .string(Self.ingressHost),
                                "http": ["paths": [["path": "/", "pathType": "Prefix", "backend": ["service": ["name": "echo", "port": ["number": 80]]]]]]]]],
        ], okIf: [409])
        let kubeconfig = try componentKubeconfig("ingress-nginx", commonName: "system:ingress-nginx")
        try spawn(node.netns, ["\(state.binDir)/switchyard", "ingress-controller", "--kubeconfig", kubeconfig, "--nginx", Self.nginx,
                               "--run-dir", "\(dir)/ingress", "--bind-address", node.address, "--http-port", "80", "--https-port", "443",
                               "--publish-service", "\(ns)/ingress-nginx"], log: "ingress-controller")
        // Served once the Ingress shows the balancer's address.
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let ing = try await must("GET", "/apis/networking.k8s.io/v1/namespaces/default/ingresses/echo", nil)
            if let ip = ing[path: ["status", "loadBalancer", "ingress"]]?.array?.first?["ip"]?.string {
                progress("ingress: switchyard ingress-controller (nginx) on \(node.name), behind \(ns)/ingress-nginx at \(ip); http://\(Self.ingressHost)/ → echo")
                return
            }
            guard Date() < deadline else {
                throw NetLabError("the ingress controller did not publish the Ingress's address within \(Int(timeout)) s; see \(dir)/logs/ingress-controller.log")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The Ingress's address, when it has one.
    func ingressAddress() async throws -> String? {
        let ing = try await api.request("GET", "/apis/networking.k8s.io/v1/namespaces/default/ingresses/echo")
        guard ing.status == 200 else { return nil }
        return ing.body[path: ["status", "loadBalancer", "ingress"]]?.array?.first?["ip"]?.string
    }
}
