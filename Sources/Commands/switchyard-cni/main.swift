import CNI
import Netlink
import Foundation

// One binary for every plugin, chosen by the name it is run as
// (`switchyard-bridge`, `switchyard-host-local`, `switchyard-loopback`).
// A child (IPAM, iptables-restore, nft) that exits before reading its stdin must not kill us mid-ADD.
signal(SIGPIPE, SIG_IGN)
LinkDelete.runHelperIfAsked()
// This process is the plugin, so a detached copy of it can finish a veth deletion (see LinkDelete).
LinkDelete.detached = true
// One thread doing one thing: namespace work switches this thread and back, with no thread started.
Namespace.switchCallingThread = true
// argv[0] read directly: `CommandLine.arguments` builds every argument as a String first.
let argv0 = CommandLine.unsafeArgv[0].map { String(cString: $0) } ?? ""
let name = String(argv0.split(separator: "/").last ?? "")
let plugin: any CNIPlugin
switch name {
case let n where n.hasSuffix("host-local"): plugin = HostLocalPlugin()
case let n where n.hasSuffix("loopback"): plugin = LoopbackPlugin()
case let n where n.hasSuffix("bridge"): plugin = BridgePlugin()
default:
    FileHandle.standardError.write(Data("switchyard-cni: run me as switchyard-bridge, switchyard-host-local or switchyard-loopback (switchyard cni install DIR sets that up)\n".utf8))
    exit(1)
}
if getenv("CNI_COMMAND") == nil {
    FileHandle.standardError.write(Data("CNI plugin \(name) (switchyard)\nCNI protocol versions supported: \(CNIVersion.supported.joined(separator: ", "))\n".utf8))
    exit(0)
}
exit(CNIMain.run(plugin, about: name))
