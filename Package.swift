// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    // Release: every function in a section of its own, so that the linker can put the ones a
    // server runs to start and serve first and together (link/switchyard.order).
    .unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release)),
]

let package = Package(
    name: "switchyard",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .executable(name: "switchyard-bench", targets: ["switchyard-bench"]),
        .executable(name: "switchyard-cni", targets: ["switchyard-cni"]),
        .executable(name: "switchyard-echo", targets: ["switchyard-echo"]),
        .executable(name: "switchyard-netlab", targets: ["switchyard-netlab"]),
        .library(name: "KubeAPI", targets: ["KubeAPI"]),
        .library(name: "ProxySeam", targets: ["ProxySeam"]),
        .library(name: "ProxyRuntime", targets: ["ProxyRuntime"]),
        .library(name: "IPTablesKit", targets: ["IPTablesKit"]),
        .library(name: "ProxyIPTables", targets: ["ProxyIPTables"]),
        .library(name: "ProxyNFTables", targets: ["ProxyNFTables"]),
        .library(name: "ProxyUserspace", targets: ["ProxyUserspace"]),
        .library(name: "Netlink", targets: ["Netlink"]),
        .library(name: "ProxyIPVS", targets: ["ProxyIPVS"]),
        .library(name: "KubeStore", targets: ["KubeStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    ],
    targets: [
        // The layers, bottom up (docs/design.md has the map and the rules a test enforces):
        // Host (processes, memory, sockets) and Kernel (netlink, libnftnl); API (the object model,
        // the client, the store, the server); Proxy (the seam, its runtime, the iptables toolkit,
        // one module per mode, the registry of modes); Node (CNI); Lab (namespaces, netlab);
        // Commands (thin executables).

        // MARK: Host
        // What the processes ask of their host that Swift cannot call directly: processes, memory, sockets.
        .target(name: "CHost", path: "Sources/Host/CHost"),
        // Running programs (posix_spawn, no run loop), the shutdown deadline, memory hand-back, listen errors.
        .target(name: "HostOS", dependencies: ["CHost", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Host/HostOS", swiftSettings: strict),

        // MARK: Kernel
        // libmnl and libnftnl, from the system (scripts/setup.sh installs the -dev packages).
        .systemLibrary(name: "CMnl", path: "Sources/Kernel/CMnl", pkgConfig: "libmnl"),
        .systemLibrary(name: "CNftnl", path: "Sources/Kernel/CNftnl", pkgConfig: "libnftnl"),
        // rtnetlink (links, addresses, routes), generic netlink (IPVS), ctnetlink, nfacct,
        // namespaces and sysctls, over libmnl.
        .target(name: "Netlink", dependencies: ["CMnl"], path: "Sources/Kernel/Netlink", swiftSettings: strict),

        // MARK: API
        // JSON's strings, numbers and quoting, shared by the API's reader and the CNI plugins'.
        .target(name: "JSONSyntax", path: "Sources/API/JSONSyntax", swiftSettings: strict),
        // Kubernetes object model and manifest loading. No I/O besides reading manifests.
        .target(name: "KubeAPI", dependencies: ["JSONSyntax", .product(name: "Yams", package: "Yams")],
                path: "Sources/API/KubeAPI", swiftSettings: strict),
        // JSON over HTTP/1.1 on swift-nio: requests and line-delimited streams, plain or TLS.
        .target(name: "HTTPJSON", dependencies: ["KubeAPI", .product(name: "NIOCore", package: "swift-nio"),
                                                 .product(name: "NIOPosix", package: "swift-nio"),
                                                 .product(name: "NIOHTTP1", package: "swift-nio"),
                                                 .product(name: "NIOSSL", package: "swift-nio-ssl")],
                path: "Sources/API/HTTPJSON", swiftSettings: strict),
        // A Kubernetes REST client: kubeconfig, requests, watches, informers.
        .target(name: "KubeClient", dependencies: ["KubeAPI", "HTTPJSON", .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                   .product(name: "Yams", package: "Yams")],
                path: "Sources/API/KubeClient", swiftSettings: strict),
        // etcd's v3 API: its messages and KV, Watch, Lease and Maintenance clients (generated once
        // by scripts/gen-etcd.sh and committed), over gRPC (members, TLS) or etcd's JSON gateway.
        .target(name: "EtcdClient", dependencies: ["KubeAPI", "HTTPJSON", "GRPCPings",
                                                   .product(name: "GRPCCore", package: "grpc-swift-2"),
                                                   .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                                                   .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                                                   .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                path: "Sources/API/EtcdClient", exclude: ["Generated/SOURCE.md"], swiftSettings: strict),
        // The API server's store: a revision log with watch and compaction (SQLite by default; etcd
        // through EtcdClient).
        .target(name: "KubeStore", dependencies: ["KubeAPI", "EtcdClient", .product(name: "GRDB", package: "GRDB.swift"),
                                                  .product(name: "Crypto", package: "swift-crypto"), .product(name: "_CryptoExtras", package: "swift-crypto")],
                path: "Sources/API/KubeStore", swiftSettings: strict),
        // The OpenAPI schemas of the served kinds (upstream's, generated once by
        // scripts/gen-openapi-schemas.py), compiled for walking objects: field validation,
        // pruning, and what server-side apply and `kubectl explain` read.
        .target(name: "APISchema", dependencies: ["KubeAPI"], path: "Sources/API/APISchema", swiftSettings: strict),
        // Server-side apply: field sets, managedFields, and merging, comparing and pruning objects
        // by their schemas, as structured-merge-diff does.
        .target(name: "FieldManager", dependencies: ["KubeAPI", "APISchema"], path: "Sources/API/FieldManager", swiftSettings: strict),
        // The Kubernetes API over the store: discovery, CRUD, list and watch, patches, tables,
        // admission (defaults, ClusterIP and NodePort allocation), validation; served by HummingbirdCore.
        // HTTP/1.1 with the WebSocket upgrade, other upgrades served as plain requests, and the
        // client certificate of a TLS connection (the API server's and the kubelet's servers).
        .target(name: "UpgradableHTTP", dependencies: [.product(name: "HummingbirdCore", package: "hummingbird"),
                                                       .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                       .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                                                       .product(name: "NIOCore", package: "swift-nio"),
                                                       .product(name: "NIOHTTP1", package: "swift-nio"),
                                                       .product(name: "HTTPTypes", package: "swift-http-types"),
                                                       .product(name: "Logging", package: "swift-log")],
                path: "Sources/API/UpgradableHTTP", swiftSettings: strict),
        // A pod's log and exec go to its node's kubelet (HTTPS, and a WebSocket relayed frame by frame).
        // Who may do what: users, request attributes, the authorizers (RBAC, AlwaysAllow,
        // AlwaysDeny, ABAC, Node), the default roles, service-account tokens (JWTs). Object model
        // and crypto only: the server feeds it.
        .target(name: "APIAccess", dependencies: ["KubeAPI", "ClusterPKI", .product(name: "Crypto", package: "swift-crypto")], path: "Sources/API/APIAccess", swiftSettings: strict),
        // The cluster's CA and the certificates it signs (the API server's serving pair, the
        // admin's and the components' client pairs), kept in the data directory as kubeadm's pki.
        .target(name: "ClusterPKI", dependencies: [.product(name: "X509", package: "swift-certificates"),
                                                   .product(name: "SwiftASN1", package: "swift-asn1"),
                                                   .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/API/ClusterPKI", swiftSettings: strict),
        // The API server's calls out: reviews POSTed to webhooks (the Webhook authorizer; admission
        // webhooks), with their endpoints, deadlines, retries and caches.
        .target(name: "Webhooks", dependencies: ["KubeAPI", "KubeClient", "APIAccess", .product(name: "Logging", package: "swift-log"),
                                                  .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/API/Webhooks", swiftSettings: strict),
        .target(name: "APIServer", dependencies: ["KubeAPI", "APISchema", "FieldManager", "KubeStore", "HostOS", "HTTPJSON", "UpgradableHTTP", "APIAccess", "Webhooks", "ClusterPKI",
                                                   .product(name: "X509", package: "swift-certificates"),
                                                   .product(name: "HummingbirdCore", package: "hummingbird"),
                                                   .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                                                   .product(name: "WSClient", package: "swift-websocket"),
                                                   .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                   .product(name: "HummingbirdTLS", package: "hummingbird"),
                                                   .product(name: "HTTPTypes", package: "swift-http-types"),
                                                   .product(name: "NIOCore", package: "swift-nio"),
                                                   .product(name: "NIOPosix", package: "swift-nio"),
                                                   .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                   .product(name: "Prometheus", package: "swift-prometheus")],
                path: "Sources/API/APIServer", swiftSettings: strict),

        // MARK: ControlPlane
        // What every control-plane component is made of: the API as a transport (HTTP, or the
        // server's handler in memory), informers, the rate-limited work queue, leader election
        // through Leases, the event recorder.
        .target(name: "ControllerKit", dependencies: ["KubeAPI", "KubeClient", .product(name: "Logging", package: "swift-log")],
                path: "Sources/ControlPlane/ControllerKit", swiftSettings: strict),
        // kube-scheduler: the queue, the filter and score plugins, binding, preemption.
        .target(name: "Scheduler", dependencies: ["ControllerKit", "KubeAPI", .product(name: "Logging", package: "swift-log"),
                                                  .product(name: "Yams", package: "Yams")],
                path: "Sources/ControlPlane/Scheduler", swiftSettings: strict),
        // kube-controller-manager's controllers, each a reconcile loop over shared informers.
        .target(name: "Controllers", dependencies: ["ControllerKit", "KubeAPI", "ClusterPKI", .product(name: "Logging", package: "swift-log")],
                path: "Sources/ControlPlane/Controllers", swiftSettings: strict),

        // MARK: Proxy
        // The seam: the service/endpoint model, change tracking, snapshots, endpoint selection and
        // topology, chain hashes, the options every mode shares, the backend protocol and the
        // contract of a sync. Depends on the object model only.
        .target(name: "ProxySeam", dependencies: ["KubeAPI", .product(name: "Crypto", package: "swift-crypto"),
                                                  .product(name: "Logging", package: "swift-log"),
                                                  .product(name: "Prometheus", package: "swift-prometheus")],
                path: "Sources/Proxy/Seam", swiftSettings: strict),
        // What runs a backend: the sync runner, the API and manifest watchers, /healthz, /metrics,
        // conntrack cleanup over netlink.
        .target(
            name: "ProxyRuntime",
            dependencies: [
                "ProxySeam", "KubeAPI", "KubeClient", "Netlink", "HostOS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/Proxy/Runtime", swiftSettings: strict
        ),
        // iptables as upstream's pkg/util/iptables: restore and save (system and fake), the save
        // parser, jump rules, restore text, removing the chains one owns.
        .target(name: "IPTablesKit", dependencies: ["HostOS"], path: "Sources/Proxy/IPTablesKit", swiftSettings: strict),
        // kube-proxy's iptables mode: structured rules -> iptables-restore text.
        .target(name: "ProxyIPTables", dependencies: ["ProxySeam", "IPTablesKit", "HostOS", "KubeAPI", "Netlink", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Proxy/IPTables", swiftSettings: strict),
        // kube-proxy's nftables mode: the kube-proxy table as objects, applied as
        // libnftnl batches, rendered as nft text.
        .target(name: "ProxyNFTables", dependencies: ["ProxySeam", "KubeAPI", "Netlink", "CMnl", "CNftnl", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Proxy/NFTables", swiftSettings: strict),
        // The IPVS mode: virtual servers planned from snapshots, rendered as ipvsadm shows them.
        .target(name: "ProxyIPVS", dependencies: ["ProxySeam", "IPTablesKit", "HostOS", "Netlink", "KubeAPI", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Proxy/IPVS", swiftSettings: strict),
        // The userspace data path's syscalls: epoll with plain tokens, splice through pipes.
        .target(name: "CUserspace", path: "Sources/Proxy/CUserspace"),
        // The userspace mode: listeners per service port, TCP splicing, UDP relaying, portal rules.
        .target(
            name: "ProxyUserspace",
            dependencies: [
                "ProxySeam", "IPTablesKit", "HostOS", "CHost", "CUserspace", "Netlink", "KubeAPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/Proxy/Userspace", swiftSettings: strict
        ),

        // The registry of modes: every mode's `ProxyMode`, in order. The command line, render,
        // --cleanup, netlab and the benchmarks iterate it.
        .target(name: "ProxyModes", dependencies: ["ProxySeam", "ProxyIPTables", "ProxyNFTables", "ProxyIPVS", "ProxyUserspace"],
                path: "Sources/Proxy/Modes", swiftSettings: strict),

        // MARK: Node
        // The CNI plugins (bridge, host-local, loopback) and the spec's types.
        // Nodes without machines (kwok-style): registered, their Leases renewed, their pods set running.
        .target(name: "FakeNodes", dependencies: ["ControllerKit", "KubeAPI", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Node/FakeNodes", swiftSettings: strict),
        .target(name: "CNI", dependencies: ["Netlink", "JSONSyntax", "IPTablesKit", .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/Node/CNI", swiftSettings: strict),
        // The Container Runtime Interface: runtime.v1's messages and RuntimeService/ImageService
        // clients (generated once by scripts/gen-cri.sh and committed), the `ContainerRuntime`
        // the kubelet calls, over gRPC on a unix socket (containerd), and a fake for unit tests.
        // gRPC clients of grpc-go servers: their bandwidth-probing PINGs answered before
        // swift-nio-http2's flood limit closes the connection.
        .target(name: "GRPCPings", dependencies: [.product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")],
                path: "Sources/Host/GRPCPings", swiftSettings: strict),
        .target(name: "CRI", dependencies: ["GRPCPings", .product(name: "GRPCCore", package: "grpc-swift-2"),
                                            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                                            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                                            .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                path: "Sources/Node/CRI", exclude: ["Generated/SOURCE.md"], swiftSettings: strict),
        // The kubelet: the node registered and its Lease renewed, the pods bound to it run
        // through CRI (sandboxes, init and app containers, restarts with back-off, graceful
        // termination), their status written back, the pod CIDR given to the CNI plugin.
        .target(name: "Kubelet", dependencies: ["CRI", "ControllerKit", "KubeAPI", "KubeClient", "ClusterPKI", "HTTPJSON", .product(name: "Logging", package: "swift-log"),
                                                .product(name: "Crypto", package: "swift-crypto"),
                                                .product(name: "GRPCCore", package: "grpc-swift-2"),
                                                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                                                .product(name: "Prometheus", package: "swift-prometheus")],
                path: "Sources/Node/Kubelet", swiftSettings: strict),
        // The kubelet's API on :10250 (HTTPS with a self-signed certificate unless given one):
        // /healthz, /pods, /containerLogs, and /exec over WebSocket (the v5.channel.k8s.io protocol).
        .target(name: "KubeletServer", dependencies: ["Kubelet", "CRI", "KubeAPI", "KubeClient", "UpgradableHTTP", "APIAccess", "Webhooks",
                                                      .product(name: "HummingbirdCore", package: "hummingbird"),
                                                      .product(name: "HummingbirdTLS", package: "hummingbird"),
                                                      .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                                                      .product(name: "WSClient", package: "swift-websocket"),
                                                      .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                      .product(name: "X509", package: "swift-certificates"),
                                                      .product(name: "SwiftASN1", package: "swift-asn1"),
                                                      .product(name: "Crypto", package: "swift-crypto"),
                                                      .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                      .product(name: "Logging", package: "swift-log")],
                path: "Sources/Node/KubeletServer", swiftSettings: strict),
        // OCI images made from files (tar layers, config, manifest) and pushed to a registry over
        // the distribution API; the lab's own images (busybox, pause) from Debian's busybox-static.
        .target(name: "Images", dependencies: ["HTTPJSON", "KubeAPI", "HostOS", .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/Node/Images", swiftSettings: strict),

        // MARK: Lab
        // Helpers for tests and benchmarks that build throw-away network namespaces.
        .target(name: "NetnsKit", dependencies: ["HostOS", "CHost", "Netlink"], path: "Sources/Lab/NetnsKit", swiftSettings: strict),
        // The real services a lab (and the node tests) run in directories they own: Debian's
        // docker-registry with the lab's images pushed, containerd with its CRI plugin.
        .target(name: "LabServices", dependencies: ["HostOS", "Images", "CRI", "NetnsKit", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Lab/LabServices", swiftSettings: strict),
        // netlab: a cluster in network namespaces (API server, nodes, pods through the CNI
        // plugin, a proxy per node) and the proxy-mode comparison.
        .target(name: "NetLab", dependencies: ["NetnsKit", "HostOS", "CHost", "KubeClient", "KubeAPI", "CNI", "ProxyModes", "ProxySeam", "FakeNodes", "ControllerKit",
                                                "LabServices", "Images", "ClusterPKI",
                                                .product(name: "NIOCore", package: "swift-nio"),
                                                .product(name: "NIOPosix", package: "swift-nio"),
                                                .product(name: "NIOHTTP1", package: "swift-nio")],
                path: "Sources/Lab/NetLab", swiftSettings: strict),
        // The lab's cloud, served from its router namespace: instances, routes and nftables load
        // balancers with health checks, behind a provider-shaped HTTP API.
        .target(name: "LabCloud", dependencies: ["NetnsKit", "KubeAPI", .product(name: "Logging", package: "swift-log"),
                                                  .product(name: "HummingbirdCore", package: "hummingbird"),
                                                  .product(name: "HTTPTypes", package: "swift-http-types"),
                                                  .product(name: "NIOCore", package: "swift-nio"),
                                                  .product(name: "NIOPosix", package: "swift-nio"),
                                                  .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                path: "Sources/Lab/LabCloud", swiftSettings: strict),

        // MARK: Edge
        // Traffic from outside: the nginx configuration rendered from Ingresses, and the
        // controller that keeps an nginx serving it.
        .target(name: "IngressNginx", dependencies: ["KubeAPI"], path: "Sources/Edge/IngressNginx", swiftSettings: strict),
        .target(name: "IngressController", dependencies: ["IngressNginx", "ControllerKit", "KubeAPI", "HostOS", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Edge/IngressController", swiftSettings: strict),
        // The cloud controller manager: the provider interface (k8s.io/cloud-provider's shape,
        // with a fake) and the node, route and service controllers that drive it.
        .target(name: "CloudProvider", dependencies: ["KubeAPI"], path: "Sources/Edge/CloudProvider", swiftSettings: strict),
        .target(name: "CloudControllers", dependencies: ["CloudProvider", "ControllerKit", "KubeAPI", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Edge/CloudControllers", swiftSettings: strict),
        // `--cloud-provider netlab`: a client of the lab cloud's HTTP API.
        .target(name: "NetlabCloudProvider", dependencies: ["CloudProvider", "HTTPJSON", "KubeAPI"], path: "Sources/Edge/NetlabCloudProvider", swiftSettings: strict),

        // MARK: Commands
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "KubeAPI", "ProxySeam", "ProxyRuntime", "ProxyModes", "IPTablesKit", "HostOS",
                "ProxyIPTables", "ProxyNFTables", "ProxyUserspace", "ProxyIPVS", "Netlink", "CNI",
                "APIServer", "APIAccess", "Webhooks", "ClusterPKI", "KubeStore", "EtcdClient", "KubeClient", "ControllerKit", "Scheduler", "Controllers", "Kubelet", "KubeletServer", "CRI", "IngressNginx", "IngressController",
                "CloudProvider", "CloudControllers", "NetlabCloudProvider",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Sources/Commands/switchyard",
            swiftSettings: strict,
            // Release: the Swift runtime and Foundation linked in, position-dependent (as the CNI
            // plugin below): no shared library relocated at every start and only the code it uses,
            // 2.5 to 4 MB less resident than with the dynamic libraries (bench/server.md).
            linkerSettings: [.unsafeFlags(["-use-ld=lld", "-static-stdlib", "-Xlinker", "--start-group", "-lFoundation", "-lCoreFoundation",
                                           "-lFoundationInternationalization", "-l_FoundationICU", "-lFoundationEssentials",
                                           "-l_FoundationCShims", "-l_FoundationCollections", "-lswiftSynchronization", "-lswiftDispatch",
                                           "-ldispatch", "-lBlocksRuntime", "-Xlinker", "--end-group", "-Xclang-linker", "-no-pie", "-Xlinker", "--no-export-dynamic",
                                           "-L\(Context.packageDirectory)/link/static-libstdc++", "-Xclang-linker", "-static-libgcc",
                                           "-Xlinker", "-lstdc++", "-Xlinker", "-lm",
                                           // The functions a server runs to start and serve, first and together
                                           // (scripts/gen-symbol-order.sh): fewer code pages resident.
                                           "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/link/switchyard.order",
                                           "-Xlinker", "--no-warn-symbol-ordering"], .when(configuration: .release))],
            plugins: ["BuildInfo"]
        ),
        // Writes the version and the commit a build comes from into the executable that prints them.
        .plugin(name: "BuildInfo", capability: .buildTool()),
        // Static Swift runtime in release builds: a plugin is a process started per call, and the
        // dynamic Swift and Foundation libraries would cost more to load than the work it does.
        .executableTarget(name: "switchyard-cni", dependencies: ["CNI", "Netlink"], path: "Sources/Commands/switchyard-cni", swiftSettings: strict,
                          linkerSettings: [.unsafeFlags(["-static-stdlib", "-Xlinker", "--start-group", "-lFoundation", "-lCoreFoundation",
                                                          "-lFoundationInternationalization", "-l_FoundationICU", "-lFoundationEssentials",
                                                          "-l_FoundationCShims", "-l_FoundationCollections", "-lswiftSynchronization", "-lswiftDispatch",
                                                          "-ldispatch", "-lBlocksRuntime", "-Xlinker", "--end-group", "-Xclang-linker", "-no-pie", "-Xlinker", "--no-export-dynamic",
                                                          "-L\(Context.packageDirectory)/link/static-libstdc++", "-Xclang-linker", "-static-libgcc",
                                                          "-Xlinker", "-lstdc++", "-Xlinker", "-lm"],
                                                         .when(configuration: .release))]),
        // What a lab pod serves (the `switchyard/echo` image): Glibc only, linked statically in
        // every configuration, so the image holds this one file.
        .executableTarget(name: "switchyard-echo", path: "Sources/Commands/switchyard-echo", swiftSettings: strict,
                          linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld", "-Xlinker", "--strip-all"])]),
        .executableTarget(
            name: "switchyard-bench",
            dependencies: [
                "KubeClient", "KubeStore", "EtcdClient", "HostOS", "IPTablesKit", "ControllerKit", "FakeNodes",
                "KubeAPI", "ProxySeam", "ProxyRuntime", "ProxyModes", "ProxyIPTables", "ProxyNFTables", "ProxyUserspace", "ProxyIPVS", "NetnsKit", "CNI", "Netlink",
                "CRI", "Images", "LabServices", "APIServer", "APIAccess", "ClusterPKI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/Commands/switchyard-bench",
            swiftSettings: strict
        ),
        .executableTarget(name: "switchyard-netlab", dependencies: ["NetLab", "LabCloud", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "Sources/Commands/switchyard-netlab", swiftSettings: strict),

        // MARK: Tests
        .testTarget(name: "HostOSTests", dependencies: ["HostOS"], swiftSettings: strict),
        // The module map's dependency rules, read from this package's own description.
        .testTarget(name: "LayeringTests", swiftSettings: strict),
        .testTarget(name: "GRPCPingsTests", dependencies: ["GRPCPings", .product(name: "NIOCore", package: "swift-nio"),
                                                         .product(name: "NIOEmbedded", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "KubeStoreTests", dependencies: ["KubeStore", "EtcdClient", "KubeAPI", "HTTPJSON", "NetnsKit", "HostOS"], swiftSettings: strict),
        .testTarget(name: "APIServerTests", dependencies: ["APIServer", "APIAccess", "Webhooks", "ClusterPKI", "KubeAPI", "KubeStore", "KubeClient",
                                                          .product(name: "HummingbirdCore", package: "hummingbird"),
                                                          .product(name: "HummingbirdTLS", package: "hummingbird"),
                                                          .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                          .product(name: "NIOPosix", package: "swift-nio"),
                                                          .product(name: "Logging", package: "swift-log"),
                                                          .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                          .product(name: "HTTPTypes", package: "swift-http-types"),
                                                          .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "Controllers", "ControllerKit", "ClusterPKI", "FakeNodes", "APIServer", "KubeAPI", "KubeClient", "KubeStore"],
                    swiftSettings: strict),
        .testTarget(name: "APISchemaTests", dependencies: ["APISchema", "KubeAPI"], swiftSettings: strict),
        .testTarget(name: "FieldManagerTests", dependencies: ["FieldManager", "APISchema", "KubeAPI"], swiftSettings: strict),
        .testTarget(name: "KubeAPITests", dependencies: ["KubeAPI", .product(name: "Yams", package: "Yams")], swiftSettings: strict),
        .testTarget(name: "ProxySeamTests", dependencies: ["ProxySeam", "KubeAPI"], swiftSettings: strict),
        .testTarget(name: "ProxyRuntimeTests", dependencies: ["ProxyRuntime", "ProxySeam", "KubeAPI"], swiftSettings: strict),
        // The backend contract, run on every mode with its fakes.
        .testTarget(name: "ProxyContractTests", dependencies: ["ProxySeam", "ProxyIPTables", "ProxyNFTables", "ProxyIPVS", "ProxyUserspace",
                                                              "IPTablesKit", "Netlink", "KubeAPI"], swiftSettings: strict),
        .testTarget(name: "ProxyIPTablesTests", dependencies: ["ProxyIPTables", "IPTablesKit", "ProxySeam", "HostOS", "KubeAPI", "NetnsKit", "Netlink"], swiftSettings: strict),
        .testTarget(name: "ProxyNFTablesTests", dependencies: ["ProxyNFTables", "ProxySeam", "KubeAPI", "NetnsKit", "Netlink"], swiftSettings: strict),
        .testTarget(name: "CNITests", dependencies: ["CNI", "Netlink", "NetnsKit", "HostOS"], swiftSettings: strict),
        .testTarget(name: "NodeTests", dependencies: ["CRI", "Images", "LabServices", "Kubelet", "KubeletServer", "ControllerKit", "APIServer", "KubeStore", "KubeClient",
                                                     "ClusterPKI", "APIAccess", "Webhooks",
                                                     "HostOS", "HTTPJSON", "KubeAPI", "NetnsKit", .product(name: "GRPCCore", package: "grpc-swift-2"),
                                                     .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")], swiftSettings: strict),
        .testTarget(name: "ProxyIPVSTests", dependencies: ["ProxyIPVS", "ProxySeam", "IPTablesKit", "HostOS", "KubeAPI", "Netlink", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "ProxyUserspaceTests", dependencies: ["ProxyUserspace", "ProxySeam", "IPTablesKit", "KubeAPI", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "CloudControllerTests", dependencies: ["CloudControllers", "CloudProvider", "ControllerKit", "APIServer", "KubeAPI", "KubeClient",
                                                                 "KubeStore"], swiftSettings: strict),
        .testTarget(name: "IngressTests", dependencies: ["IngressNginx", "IngressController", "ControllerKit", "APIServer", "KubeAPI", "KubeClient",
                                                         "KubeStore", "HostOS"],
                    path: "Tests/IngressTests", exclude: ["Golden"], swiftSettings: strict),
        .testTarget(name: "LabTests", dependencies: ["NetLab", "Netlink", "ProxyIPTables", "ProxyNFTables", "ProxyUserspace", "ProxySeam", "ProxyRuntime",
                                                     "IPTablesKit", "HostOS", "KubeAPI", "NetnsKit", "KubeClient", "LabServices", "CRI", "LabCloud", "NetlabCloudProvider", "CloudProvider",
                                                     .product(name: "Prometheus", package: "swift-prometheus")],
                    exclude: ["png_colors.py"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
