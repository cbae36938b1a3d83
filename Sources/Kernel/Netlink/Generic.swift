import CMnl
import Foundation

/// Generic netlink: families are found by name (the IPVS mode asks for "IPVS").
public enum GenericNetlink {
    /// `CTRL_CMD_GETFAMILY` for `name` (pure; for fixtures).
    public static func familyRequest(_ name: String) -> Message {
        var m = Message(type: UInt16(GENL_ID_CTRL), flags: 0, header: [UInt8(CTRL_CMD_GETFAMILY), 1, 0, 0])
        m.put(Int(CTRL_ATTR_FAMILY_NAME), string: name)
        return m
    }

    /// The id of the generic netlink family `name` in `ns`.
    /// - Throws: `NetlinkError` (ENOENT when the kernel has no such family, e.g. no IPVS).
    public static func familyID(_ name: String, in ns: Namespace = .current) throws -> UInt16 {
        let sock = try NetlinkSocket(NETLINK_GENERIC, in: ns)
        let replies = try sock.request(familyRequest(name), "resolve generic netlink family \(name)")
        for r in replies where r.payload.count >= 4 {
            if let id = Attributes(r.payload[4...]).u16(Int(CTRL_ATTR_FAMILY_ID)) { return id }
        }
        throw NetlinkError(errno: ENOENT, what: "resolve generic netlink family \(name)")
    }
}
