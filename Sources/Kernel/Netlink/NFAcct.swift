import CMnl
import Foundation

/// Extended accounting objects of nfnetlink_acct (what `nfacct` lists): named packet and byte
/// counters that iptables rules count into with `-m nfacct --nfacct-name NAME`. kube-proxy's
/// iptables mode keeps two and exports them as metrics.
public final class NFAcct: @unchecked Sendable {
    private let sock: NetlinkSocket
    private let lock = NSLock()

    // linux/netfilter/nfnetlink_acct.h (not in libmnl's headers).
    static let subsystem: Int32 = 7          // NFNL_SUBSYS_ACCT
    static let msgNew: Int32 = 0             // NFNL_MSG_ACCT_NEW
    static let msgGet: Int32 = 1             // NFNL_MSG_ACCT_GET
    static let attrName = 1                  // NFACCT_NAME
    static let attrPackets = 2               // NFACCT_PKTS
    static let attrBytes = 3                 // NFACCT_BYTES

    public init(in ns: Namespace = .current) throws {
        sock = try NetlinkSocket(NETLINK_NETFILTER, in: ns)
    }

    static func type(_ msg: Int32) -> UInt16 { UInt16((subsystem << 8) | msg) }
    static let header: [UInt8] = [UInt8(AF_UNSPEC), UInt8(NFNETLINK_V0), 0, 0]

    /// `NFNL_MSG_ACCT_GET` of one object by name.
    public static func getMessage(_ name: String) -> Message {
        var m = Message(type: type(msgGet), flags: 0, header: header)
        m.put(attrName, string: name)
        return m
    }

    /// `NFNL_MSG_ACCT_NEW` of one object, failing if it exists.
    public static func newMessage(_ name: String) -> Message {
        var m = Message(type: type(msgNew), flags: Int32(NLM_F_CREATE | NLM_F_EXCL), header: header)
        m.put(attrName, string: name)
        return m
    }

    /// The counter's packets and bytes. Throws `NetlinkError` (ENOENT when there is no such counter).
    public func get(_ name: String) throws -> (packets: UInt64, bytes: UInt64) {
        let msgs = try lock.withLock { try sock.request(Self.getMessage(name), "get nfacct counter \(name)") }
        guard let payload = msgs.first?.payload, payload.count > 4 else {
            throw NetlinkError(errno: ENOENT, what: "get nfacct counter \(name)")
        }
        let a = Attributes(payload[4...])
        func be64(_ t: Int) -> UInt64 {
            guard let p = a[t], p.count >= 8 else { return 0 }
            return p.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
        }
        return (be64(Self.attrPackets), be64(Self.attrBytes))
    }

    /// Creates the counter if it is not there (upstream's `Ensure`).
    public func ensure(_ name: String) throws {
        do {
            _ = try get(name)
        } catch let e as NetlinkError where e.errno == ENOENT {
            do {
                try lock.withLock { _ = try sock.request(Self.newMessage(name), "add nfacct counter \(name)") }
            } catch let e as NetlinkError where e.errno == EEXIST {}
        }
    }

    /// Whether this kernel has nfnetlink_acct, decided as upstream decides: asking for a counter
    /// that need not exist answers ENOENT when the subsystem is there, anything else when not.
    public static func isSupported(in ns: Namespace = .current) -> Bool {
        guard let acct = try? NFAcct(in: ns) else { return false }
        do {
            _ = try acct.get("IMayExist")
            return true
        } catch let e as NetlinkError {
            return e.errno == ENOENT
        } catch {
            return false
        }
    }
}
