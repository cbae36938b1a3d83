import HostOS
import IPTablesKit
import KubeAPI
import Netlink
import ProxySeam

/// A packet through what the IPVS mode programs (`switchyard explain --proxy-mode ipvs`), in
/// the order netfilter and IPVS take a new connection's first packet:
/// - arriving: nat PREROUTING (KUBE-SERVICES marks for masquerade and accepts), then, to one
///   of the node's addresses (kube-ipvs0 holds every service IP), filter INPUT
///   (KUBE-PROXY-FIREWALL, KUBE-NODE-PORT, KUBE-IPVS-FILTER), then IPVS at LOCAL_IN: the
///   virtual server for the protocol, address and port sends it to a real server, on through
///   filter OUTPUT and nat POSTROUTING (KUBE-POSTROUTING masquerades what was marked, and a
///   pod reaching itself through KUBE-LOOP-BACK); a virtual server without real servers answers
///   with an ICMP port unreachable. Not to the node: filter FORWARD and nat POSTROUTING.
/// - sent by the node: nat OUTPUT, IPVS at LOCAL_OUT, filter OUTPUT, nat POSTROUTING (and filter
///   INPUT when it stays on the node).
///
/// It reads the `render` default (`ipvsadm -Ln`'s listing, kube-ipvs0's addresses, the ipsets,
/// the iptables rules) or the same parts saved from a node: `ipvsadm -Ln` or `ipvsadm-save -n`,
/// `ipset save` and `iptables-save`, one after the other in one file. The rules' ipsets are
/// looked up by member, and the iptables walk indexes its long chains, so an answer does not
/// scan the services.
public struct IPVSWalk: Sendable {
    public struct Real: Sendable, Equatable {
        public var address: String
        public var port: Int
        public var weight: Int
        /// `Masq`, `Local`, `Route` or `Tunnel`, as ipvsadm lists it.
        public var forward: String
    }

    public struct Virtual: Sendable {
        /// As ipvsadm lists it: `TCP  10.96.0.10:80 rr persistent 10800`.
        public var line: String
        public var reals: [Real] = []
    }

    /// By `tcp 10.96.0.10:80` (`tcp [fd00:10:96::10]:80`), addresses in their canonical text.
    public private(set) var virtuals: [String: Virtual] = [:]
    /// kube-ipvs0's addresses (the node's own, for `--dst-type LOCAL`).
    public private(set) var dummyAddresses: [String] = []
    /// The iptables rules, with the ipsets they match on, read once.
    var rules: IPTablesWalk

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ text: String) throws {
        var inTable = false
        var current: String?
        var iptablesLines: [Substring] = [], ipsetLines: [Substring] = []
        // Lines and words split as bytes: a 10,000-Service listing is 130,000 lines, and splitting
        // by Character would walk its grapheme clusters.
        let dummyComment = "# \(IPVSPlan.dummyInterface):"
        for (n, bytes) in text.utf8.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
            let line = Substring(bytes.last == 13 ? bytes.dropLast() : bytes)
            if inTable {
                iptablesLines.append(line)
                if line == "COMMIT" { inTable = false }
                continue
            }
            switch bytes.first {
            case 42:   // *table
                inTable = true
                iptablesLines.append(line)
                continue
            case 97, 99:   // ipset's add and create
                if line.hasPrefix("create ") || line.hasPrefix("add ") {
                    ipsetLines.append(line)
                    continue
                }
            case 35:   // a comment: kube-ipvs0's addresses, or nothing to read
                if line.hasPrefix(dummyComment) {
                    dummyAddresses += line.split(separator: " ").dropFirst(2).map { String($0.split(separator: "/")[0]) }
                }
                continue
            default:
                break
            }
            let f = line.utf8.split(separator: 32).map { Substring($0) }
            guard let first = f.first else { continue }
            switch first {
            case "TCP", "UDP", "SCTP":   // a virtual server, as listed
                guard f.count >= 3, let (a, p) = Self.endpoint(f[1]) else { throw ParseError(description: "line \(n + 1): not a virtual server: \(line)") }
                let key = "\(first.lowercased()) \(joinHostPort(a, p))"
                // As ipvsadm lists it: two spaces after a three-letter protocol.
                virtuals[key] = Virtual(line: "\(first)\(first.utf8.count == 3 ? "  " : " ")\(f[1...].joined(separator: " "))")
                current = key
            case "FWM":
                current = nil   // marks are not what kube-proxy programs
            case "->":
                guard let c = current, f.count >= 3, let (a, p) = Self.endpoint(f[1]) else { continue }   // the header, or a fwmark's
                virtuals[c]?.reals.append(Real(address: a, port: p, weight: f.count > 3 ? Int(f[3]) ?? 1 : 1, forward: String(f[2])))
            case "-A", "-a":   // ipvsadm-save -n
                guard f.count >= 3, let proto = ["-t": "tcp", "-u": "udp", "--sctp-service": "sctp"][String(f[1])], let (a, p) = Self.endpoint(f[2]) else {
                    if f.count >= 2 && f[1] == "-f" { continue }
                    throw ParseError(description: "line \(n + 1): not an ipvsadm-save line: \(line)")
                }
                let key = "\(proto) \(joinHostPort(a, p))"
                func option(_ o: String) -> String? { f.firstIndex(of: Substring(o)).flatMap { $0 + 1 < f.count ? String(f[$0 + 1]) : nil } }
                if first == "-A" {
                    var listed = "\(proto.uppercased())  \(joinHostPort(a, p)) \(option("-s") ?? "wlc")"
                    if let t = option("-p") { listed += " persistent \(t)" }
                    virtuals[key] = Virtual(line: listed)
                } else {
                    guard let r = option("-r"), let (ra, rp) = Self.endpoint(Substring(r)) else { throw ParseError(description: "line \(n + 1): a real server without -r: \(line)") }
                    let forward = f.contains("-g") ? "Route" : f.contains("-i") ? "Tunnel" : "Masq"
                    virtuals[key, default: Virtual(line: "\(proto.uppercased())  \(joinHostPort(a, p))")].reals
                        .append(Real(address: ra, port: rp, weight: option("-w").flatMap { Int($0) } ?? 1, forward: forward))
                }
            default:
                continue   // comments, ipvsadm's headers
            }
        }
        guard !virtuals.isEmpty || !iptablesLines.isEmpty else {
            throw ParseError(description: "no IPVS virtual server and no iptables rules: give what `render --proxy-mode ipvs` writes, or ipvsadm -Ln, ipset save and iptables-save one after the other")
        }
        do { rules = try IPTablesWalk(iptablesLines.joined(separator: "\n") + "\n") } catch { throw ParseError(description: "the iptables rules: \(error)") }
        rules.sets = IPSetMembers.parse(ipsetLines.joined(separator: "\n"))
    }

    /// `a.b.c.d:port` or `[IPv6]:port`, the address in its canonical text.
    static func endpoint(_ s: Substring) -> (String, Int)? {
        let u = s.utf8
        guard let colon = u.lastIndex(of: 58), let port = Int(Substring(u[u.index(after: colon)...])) else { return nil }
        var a = Substring(u[..<colon])
        if a.hasPrefix("[") && a.hasSuffix("]") { a = a.dropFirst().dropLast() }
        return IPTablesWalk.address(String(a)).map { (IPTablesWalk.text($0), port) }
    }

    /// Every way the packet can go.
    public func walk(_ q: ExplainQuery) throws -> [IPTablesWalk.Outcome] {
        var w = rules
        guard let src = IPTablesWalk.address(q.source), let dst = IPTablesWalk.address(q.destination) else {
            throw ParseError(description: "explain takes IP addresses here (\(q.source), \(q.destination))")
        }
        guard src.v6 == dst.v6 else {
            throw ParseError(description: "the source \(q.source) and the destination \(q.destination) are of different families")
        }
        w.local = Set((q.localAddresses + dummyAddresses).compactMap(IPTablesWalk.address))
        let start = [IPTablesWalk.Outcome(packet: IPTablesWalk.Packet(source: src, sourcePort: q.sourcePort, destination: dst, port: q.port, proto: q.proto),
                                          end: .fallThrough)]
        if q.fromNode {
            var s = w.hook("nat", "OUTPUT", start, fromNode: true)
            s = s.flatMap(balance)
            s = w.hook("filter", "OUTPUT", s, fromNode: true)
            s = w.hook("nat", "POSTROUTING", s, fromNode: true)
            return s.flatMap { o in Self.goesOn(o) && w.isLocal(o.packet.destination) ? w.hook("filter", "INPUT", [o], fromNode: true) : [o] }
        }
        return w.hook("nat", "PREROUTING", start, fromNode: false).flatMap { o -> [IPTablesWalk.Outcome] in
            guard Self.goesOn(o) else { return [o] }
            guard w.isLocal(o.packet.destination) else {
                return w.hook("nat", "POSTROUTING", w.hook("filter", "FORWARD", [o], fromNode: false), fromNode: false)
            }
            return w.hook("filter", "INPUT", [o], fromNode: false).flatMap { i -> [IPTablesWalk.Outcome] in
                guard Self.goesOn(i), virtual(i.packet) != nil else { return [i] }
                // IPVS sends it on from LOCAL_IN: through LOCAL_OUT's filter and POSTROUTING's nat.
                return balance(i).flatMap { b in
                    Self.goesOn(b) ? w.hook("nat", "POSTROUTING", w.hook("filter", "OUTPUT", [b], fromNode: true), fromNode: false) : [b]
                }
            }
        }
    }

    static func goesOn(_ o: IPTablesWalk.Outcome) -> Bool { o.end == .accept || o.end == .fallThrough }

    func virtual(_ p: IPTablesWalk.Packet) -> Virtual? {
        virtuals["\(p.proto) \(joinHostPort(IPTablesWalk.text(p.destination), p.port))"]
    }

    /// IPVS on the packet: to each real server of weight above zero, as likely as its share of
    /// the weights (the first connection of a client; persistence keeps the later ones on it);
    /// none: ICMP port unreachable. A packet no virtual server takes goes on as it is.
    func balance(_ o: IPTablesWalk.Outcome) -> [IPTablesWalk.Outcome] {
        guard Self.goesOn(o), let v = virtual(o.packet) else { return [o] }
        let serving = v.reals.filter { $0.weight > 0 }
        let total = serving.reduce(0) { $0 + $1.weight }
        guard total > 0 else {
            var p = o.packet
            p.hops.append(("ipvs", v.line, v.reals.isEmpty ? "no real server: IPVS answers with an ICMP port unreachable"
                                                         : "every real server at weight 0: IPVS answers with an ICMP port unreachable"))
            return [IPTablesWalk.Outcome(packet: p, end: .reject)]
        }
        return serving.map { r in
            var p = o.packet
            p.hops.append(("ipvs", v.line, "-> \(joinHostPort(r.address, r.port)) \(r.forward) weight \(r.weight)"))
            p.probability *= Double(r.weight) / Double(total)
            p.destination = IPTablesWalk.address(r.address)!
            p.port = r.port
            p.states.insert("DNAT")
            return IPTablesWalk.Outcome(packet: p, end: .accept)
        }
    }

    /// `switchyard explain --proxy-mode ipvs`.
    static func explain(_ ruleset: String, _ q: ExplainQuery) throws -> PacketPath {
        let walked: [IPTablesWalk.Outcome]
        do { walked = try IPVSWalk(ruleset).walk(q) } catch { throw ProxyConfigError("\(error)") }
        return PacketPath(query: q, mode: "ipvs", outcomes: walked.map { o in
            PacketPath.Outcome(probability: o.packet.probability, hops: PacketPath.Hop.list(o.packet.hops), verdict: o.end.verdict,
                               endpoint: o.translatedTo, masqueraded: o.packet.masqueraded)
        })
    }

    /// What the kernel holds of the IPVS mode for `family` (`explain --live`), in the form
    /// `explain` reads: that family's virtual servers through netlink, listed as `ipvsadm -Ln`,
    /// its addresses on kube-ipvs0, `ipset save` and `iptables-save` (or `ip6tables-save`) of
    /// nat and filter.
    static func live(_ family: IPFamily = .ipv4) throws -> String {
        let ipvs: IPVS
        do { ipvs = try IPVS() } catch { throw ProxyConfigError("explain --live --proxy-mode ipvs: \(error) (netlab/guest runs a kernel that has IPVS)") }
        let ipv6 = family == .ipv6
        let servers = try ipvs.services().filter { $0.isIPv6 == ipv6 }.map { s in (service: s, reals: try ipvs.destinations(of: s)) }
        var out = IPVSRenderer.listing(servers)
        let links = try RouteHandle()
        if let dummy = try links.link(named: IPVSPlan.dummyInterface) {
            let addresses = try links.addresses(of: dummy).map(\.address).filter { $0.isIPv6 == ipv6 }
            out += "# \(IPVSPlan.dummyInterface): \(addresses.map(\.description).joined(separator: " "))\n"
        }
        out += "# ipset save\n" + (try CommandRunner().run(["ipset", "save"]).stdout)
        out += "# \(ipv6 ? "ip6tables" : "iptables")-save\n" + (try SystemIPTables(ipv6: ipv6).save(tables: ["filter", "nat"]))
        return out
    }
}
