// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "switchyard",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .executable(name: "switchyard-bench", targets: ["switchyard-bench"]),
        .executable(name: "switchyard-cni", targets: ["switchyard-cni"]),
        .executable(name: "switchyard-netlab", targets: ["switchyard-netlab"]),
        .library(name: "KubeAPI", targets: ["KubeAPI"]),
        .library(name: "ProxyCore", targets: ["ProxyCore"]),
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
    ],
    targets: [
        // JSON's strings, numbers and quoting, shared by the API's reader and the CNI plugins'.
        .target(name: "JSONSyntax", swiftSettings: strict),
        // Kubernetes object model and manifest loading. No I/O besides reading manifests.
        .target(
            name: "KubeAPI",
            dependencies: ["JSONSyntax", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict
        ),
        // The seam: service/endpoint model, change tracking, snapshots, endpoint
        // selection, the backend protocol, the sync runner, healthz and metrics.
        .target(
            name: "ProxyCore",
            dependencies: [
                "KubeAPI",
                "CUserspace",
                "KubeClient",
                "Netlink",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // kube-proxy's iptables mode: structured rules -> iptables-restore text.
        .target(
            name: "ProxyIPTables",
            dependencies: ["ProxyCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // libmnl and libnftnl, from the system (scripts/setup.sh installs the -dev packages).
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl"),
        .systemLibrary(name: "CNftnl", pkgConfig: "libnftnl"),
        // kube-proxy's nftables mode: the kube-proxy table as objects, applied as
        // libnftnl batches, rendered as nft text.
        .target(
            name: "ProxyNFTables",
            dependencies: ["ProxyCore", "Netlink", "CMnl", "CNftnl", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // rtnetlink (links, addresses, routes), generic netlink, namespaces and sysctls, over libmnl.
        .target(name: "Netlink", dependencies: ["CMnl"], swiftSettings: strict),
        // The IPVS mode: virtual servers planned from snapshots, rendered as ipvsadm shows them.
        .target(name: "ProxyIPVS", dependencies: ["ProxyCore", "ProxyIPTables", "Netlink", "KubeAPI", .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        // The CNI plugins (bridge, host-local, loopback) and the spec's types.
        .target(name: "CNI", dependencies: ["Netlink", "JSONSyntax", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        // Static Swift runtime in release builds: a plugin is a process started per call, and the
        // dynamic Swift and Foundation libraries would cost more to load than the work it does.
        .executableTarget(name: "switchyard-cni", dependencies: ["CNI", "Netlink"], swiftSettings: strict,
                          linkerSettings: [.unsafeFlags(["-static-stdlib", "-Xlinker", "--start-group", "-lFoundation", "-lCoreFoundation",
                                                          "-lFoundationInternationalization", "-l_FoundationICU", "-lFoundationEssentials",
                                                          "-l_FoundationCShims", "-l_FoundationCollections", "-lswiftSynchronization", "-lswiftDispatch",
                                                          "-ldispatch", "-lBlocksRuntime", "-Xlinker", "--end-group", "-Xclang-linker", "-no-pie", "-Xlinker", "--no-export-dynamic",
                                                          "-L\(Context.packageDirectory)/link/static-libstdc++", "-Xclang-linker", "-static-libgcc",
                                                          "-Xlinker", "-lstdc++", "-Xlinker", "-lm"],
                                                         .when(configuration: .release))]),
        // The syscalls the userspace data path needs that Swift cannot call directly.
        .target(name: "CUserspace"),
        // The userspace mode: listeners per service port, TCP splicing, UDP relaying, portal rules.
        .target(
            name: "ProxyUserspace",
            dependencies: [
                "ProxyCore", "ProxyIPTables", "CUserspace",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // Helpers for tests and benchmarks that build throw-away network namespaces.
        .target(
            name: "NetnsKit",
            dependencies: ["ProxyCore", "CUserspace", "Netlink"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "KubeAPI", "ProxyCore", "ProxyIPTables", "ProxyNFTables", "ProxyUserspace", "ProxyIPVS", "Netlink", "CNI",
                "APIServer", "KubeStore", "KubeClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict,
            linkerSettings: [.unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"], .when(configuration: .release))],
            plugins: ["BuildInfo"]
        ),
        // Writes the version and the commit a build comes from into the executable that prints them.
        .plugin(name: "BuildInfo", capability: .buildTool()),
        .executableTarget(
            name: "switchyard-bench",
            dependencies: [
                "KubeClient", "KubeStore",
                "KubeAPI", "ProxyCore", "ProxyIPTables", "ProxyNFTables", "ProxyUserspace", "ProxyIPVS", "NetnsKit", "CNI", "Netlink",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // netlab: a cluster in network namespaces (API server, nodes, pods through the CNI
        // plugin, a proxy per node) and the proxy-mode comparison.
        .target(name: "NetLab", dependencies: ["NetnsKit", "ProxyCore", "CUserspace", "KubeClient", "KubeAPI", "CNI",
                                                .product(name: "NIOCore", package: "swift-nio"),
                                                .product(name: "NIOPosix", package: "swift-nio"),
                                                .product(name: "NIOHTTP1", package: "swift-nio")], swiftSettings: strict),
        .executableTarget(name: "switchyard-netlab", dependencies: ["NetLab", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: strict),
        // A Kubernetes REST client over swift-nio: kubeconfig, requests, watches, informers.
        .target(name: "KubeClient", dependencies: ["KubeAPI", .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "NIOCore", package: "swift-nio"),
                                                   .product(name: "NIOPosix", package: "swift-nio"),
                                                   .product(name: "NIOHTTP1", package: "swift-nio"),
                                                   .product(name: "NIOSSL", package: "swift-nio-ssl")], swiftSettings: strict),
        // The API server's store: a revision log with watch and compaction (SQLite by default).
        .target(name: "KubeStore", dependencies: ["KubeAPI", "KubeClient", .product(name: "GRDB", package: "GRDB.swift")], swiftSettings: strict),
        .testTarget(name: "KubeStoreTests", dependencies: ["KubeStore", "NetnsKit"], swiftSettings: strict),
        // The Kubernetes API over the store: discovery, CRUD, list and watch, patches, tables,
        // admission (defaults, ClusterIP and NodePort allocation), validation; served by HummingbirdCore.
        .target(name: "APIServer", dependencies: ["KubeAPI", "KubeStore", "CUserspace", .product(name: "HummingbirdCore", package: "hummingbird"),
                                                   .product(name: "HummingbirdTLS", package: "hummingbird"),
                                                   .product(name: "HTTPTypes", package: "swift-http-types"),
                                                   .product(name: "NIOCore", package: "swift-nio"),
                                                   .product(name: "NIOPosix", package: "swift-nio"),
                                                   .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")], swiftSettings: strict),
        .testTarget(name: "APIServerTests", dependencies: ["APIServer", "KubeAPI", "KubeStore", "KubeClient",
                                                          .product(name: "HummingbirdCore", package: "hummingbird"),
                                                          .product(name: "HTTPTypes", package: "swift-http-types"),
                                                          .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "KubeAPITests", dependencies: ["KubeAPI"], swiftSettings: strict),
        .testTarget(name: "ProxyCoreTests", dependencies: ["ProxyCore", "KubeAPI"], swiftSettings: strict),
        .testTarget(name: "ProxyIPTablesTests", dependencies: ["ProxyIPTables", "ProxyCore", "KubeAPI", "NetnsKit", "Netlink"], swiftSettings: strict),
        .testTarget(name: "ProxyNFTablesTests", dependencies: ["ProxyNFTables", "ProxyCore", "KubeAPI", "NetnsKit", "Netlink"], swiftSettings: strict),
        .testTarget(name: "CNITests", dependencies: ["CNI", "Netlink", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "ProxyIPVSTests", dependencies: ["ProxyIPVS", "ProxyCore", "ProxyIPTables", "KubeAPI", "Netlink", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "ProxyUserspaceTests", dependencies: ["ProxyUserspace", "ProxyCore", "KubeAPI", "NetnsKit"], swiftSettings: strict),
        .testTarget(name: "LabTests", dependencies: ["NetLab", "Netlink", "ProxyIPTables", "ProxyNFTables", "ProxyUserspace", "ProxyCore", "KubeAPI", "NetnsKit", "KubeClient",
                                                     .product(name: "Prometheus", package: "swift-prometheus")], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
