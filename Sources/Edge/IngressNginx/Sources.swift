import KubeAPI

/// What an nginx configuration is rendered from: the objects as the API serves them.
public struct IngressSources: Sendable {
    public var ingresses: [JSONValue] = []
    public var ingressClasses: [JSONValue] = []
    public var services: [JSONValue] = []
    public var endpointSlices: [JSONValue] = []
    public var secrets: [JSONValue] = []

    public init(ingresses: [JSONValue] = [], ingressClasses: [JSONValue] = [], services: [JSONValue] = [],
                endpointSlices: [JSONValue] = [], secrets: [JSONValue] = []) {
        self.ingresses = ingresses
        self.ingressClasses = ingressClasses
        self.services = services
        self.endpointSlices = endpointSlices
        self.secrets = secrets
    }

    /// Files each object by its kind; other kinds are left out (and counted).
    public init(objects: [JSONValue]) {
        for o in objects {
            switch (o["apiVersion"]?.string ?? "", o["kind"]?.string ?? "") {
            case ("networking.k8s.io/v1", "Ingress"): ingresses.append(o)
            case ("networking.k8s.io/v1", "IngressClass"): ingressClasses.append(o)
            case ("v1", "Service"): services.append(o)
            case ("discovery.k8s.io/v1", "EndpointSlice"): endpointSlices.append(o)
            case ("v1", "Secret"): secrets.append(o)
            case ("v1", "List"): self.append(IngressSources(objects: o["items"]?.array ?? []))
            default: continue
            }
        }
    }

    mutating func append(_ o: IngressSources) {
        ingresses += o.ingresses
        ingressClasses += o.ingressClasses
        services += o.services
        endpointSlices += o.endpointSlices
        secrets += o.secrets
    }
}

/// How the controller runs nginx: which Ingresses are its own, where nginx listens and keeps its
/// files. The names are ingress-nginx's flags.
public struct NginxOptions: Sendable, Equatable {
    /// `--controller-class`: the IngressClasses whose `spec.controller` is this are ours.
    public var controllerClass = "k8s.io/ingress-nginx"
    /// `--ingress-class`: Ingresses with the legacy `kubernetes.io/ingress.class` annotation of
    /// this value are ours too.
    public var ingressClass = "nginx"
    /// `--watch-ingress-without-class`: Ingresses that name no class are ours (they are anyway
    /// when one of our IngressClasses is the default).
    public var watchWithoutClass = false
    /// Where nginx listens (nil: every address).
    public var bindAddress: String?
    public var httpPort = 80
    public var httpsPort = 443
    /// The directory nginx keeps its pid, logs, temporary files and the certificates in.
    public var runDirectory = "/run/switchyard-ingress"
    /// `--default-ssl-certificate NAMESPACE/NAME`: the certificate of the catch-all HTTPS server.
    public var defaultSSLCertificate: String?
    /// `--default-backend-service NAMESPACE/NAME`: where requests no rule matches go (port 80
    /// or the Service's first port); without, they are answered 404.
    public var defaultBackendService: String?
    /// nginx's `worker_processes`.
    public var workerProcesses = "auto"
    /// Access log (off: none).
    public var accessLog = false

    public init() {}
}
