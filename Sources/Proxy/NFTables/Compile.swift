import CMnl
import CNftnl
import KubeAPI

/// An anonymous set or map a rule carries inline (`{ … }`), created in the same
/// batch as the rule and freed by the kernel with it.
struct AnonSet {
    var name: String
    var id: UInt32
    var flags: UInt32
    var keyType: UInt32
    var keyLength: UInt32
    /// Key-byte-order user data nft writes: 1 host, 2 big endian.
    var keyByteOrder: UInt32
    var isVerdictMap: Bool
    var elements: [(key: [UInt8], flags: UInt32, verdict: Verdict?)]
    /// A data map's data type and length (nft's concatenated type id for `ipv4_addr . inet_service`),
    /// and each element's data, in the order of `elements`.
    var data: (type: UInt32, length: UInt32, values: [[UInt8]])? = nil
}

/// Hands out names for anonymous sets. nft sends `__set%d` and lets the kernel pick
/// a free number, which costs a scan of every set in the table per new set (quadratic
/// over a full sync); a literal unique name skips that scan. Anonymous sets are
/// listed inline, so their names are never seen.
struct AnonNamer {
    private var next: UInt32 = 1

    mutating func take(_ prefix: String) -> (String, UInt32) {
        let n = next
        next &+= 1
        return ("\(prefix)\(n)", n)
    }

    /// Skips past numbers the kernel already holds.
    mutating func advance(past n: UInt32) {
        if next <= n { next = n &+ 1 }
    }
}

private let netHeader = UInt32(NFT_PAYLOAD_NETWORK_HEADER.rawValue)
private let transportHeader = UInt32(NFT_PAYLOAD_TRANSPORT_HEADER.rawValue)
private let cmpEQ = UInt32(NFT_CMP_EQ.rawValue)
private let cmpNEQ = UInt32(NFT_CMP_NEQ.rawValue)

private func host32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

extension Rule {
    /// The expressions of this rule and the anonymous sets it needs, laid out as
    /// `nft` lays them out.
    func compile(_ namer: inout AnonNamer, family: IPFamily = .ipv4) -> (exprs: [Expr], sets: [AnonSet]) {
        var out: [Expr] = []
        var sets: [AnonSet] = []
        for s in stmts { s.compile(into: &out, sets: &sets, namer: &namer, family: family) }
        return (out, sets)
    }

    /// The rule's user data: its comment, as nft stores it.
    var userData: [UInt8]? {
        guard let comment else { return nil }
        return udataString(UInt8(NFTNL_UDATA_RULE_COMMENT.rawValue), comment)
    }
}

/// One TLV of nftnl user data with a NUL-terminated string.
func udataString(_ type: UInt8, _ s: String) -> [UInt8] {
    let b = Array(s.utf8) + [0]
    return [type, UInt8(truncatingIfNeeded: b.count)] + b
}

func udataU32(_ type: UInt8, _ v: UInt32) -> [UInt8] {
    [type, 4] + host32(v)
}

extension Stmt {
    /// `family`: the table's, for what the statement does not say itself (`reject`).
    func compile(into out: inout [Expr], sets: inout [AnonSet], namer: inout AnonNamer, family: IPFamily = .ipv4) {
        let r1 = Reg.r1
        switch self {
        case let .addr(f, neg, cidr):
            let v = cidr.network.address.bytes
            let op = neg ? cmpNEQ : cmpEQ
            let plen = cidr.prefixLength
            if plen % 8 == 0 && plen > 0 {
                let n = plen / 8
                out.append(.payload(base: netHeader, offset: f.offset, len: UInt32(n), dreg: r1))
                out.append(.cmp(sreg: r1, op: op, data: Array(v.prefix(n))))
            } else {
                let mask = (0..<v.count).map { i in
                    let bits = max(0, min(8, plen - i * 8))
                    return bits == 0 ? UInt8(0) : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
                }
                out.append(.payload(base: netHeader, offset: f.offset, len: f.length, dreg: r1))
                out.append(.bitwise(sreg: r1, dreg: r1, mask: mask, xor: [UInt8](repeating: 0, count: v.count)))
                out.append(.cmp(sreg: r1, op: op, data: v))
            }
        case let .addrInSet(f, neg, set):
            out.append(.payload(base: netHeader, offset: f.offset, len: f.length, dreg: r1))
            out.append(.lookup(sreg: r1, set: set, setID: 0, dreg: nil, invert: neg))
        case let .addrInList(f, neg, list):
            if list.count == 1 {
                Stmt.addr(f, negate: neg, list[0]).compile(into: &out, sets: &sets, namer: &namer, family: family)
                return
            }
            let (name, id) = namer.take("__set")
            let set = AnonSet(name: name, id: id,
                              flags: UInt32(NFT_SET_ANONYMOUS.rawValue | NFT_SET_CONSTANT.rawValue | NFT_SET_INTERVAL.rawValue),
                              keyType: f.family.addrType.id, keyLength: f.length, keyByteOrder: 2,
                              isVerdictMap: false, elements: intervalElements(list))
            sets.append(set)
            out.append(.payload(base: netHeader, offset: f.offset, len: f.length, dreg: r1))
            out.append(.lookup(sreg: r1, set: name, setID: id, dreg: nil, invert: neg))
        case .l4proto(let p):
            out.append(.meta(key: UInt32(NFT_META_L4PROTO.rawValue), dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: [p.number]))
        case let .dport(p, port):
            out.append(.meta(key: UInt32(NFT_META_L4PROTO.rawValue), dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: [p.number]))
            out.append(.payload(base: transportHeader, offset: 2, len: 2, dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: [UInt8(port >> 8), UInt8(port & 0xff)]))
        case .ctStateNew:
            out.append(.ct(key: UInt32(NFT_CT_STATE.rawValue), dreg: r1))
            out.append(.bitwise(sreg: r1, dreg: r1, mask: host32(8), xor: host32(0)))
            out.append(.cmp(sreg: r1, op: cmpNEQ, data: host32(0)))
        case .fibLocal(let f):
            let flag = f.part == .daddr ? NFTA_FIB_F_DADDR.rawValue : NFTA_FIB_F_SADDR.rawValue
            out.append(.fib(flags: UInt32(flag), result: UInt32(NFT_FIB_RESULT_ADDRTYPE.rawValue), dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: host32(2 /* RTN_LOCAL */)))
        case .iifname(let n), .iifnameNot(let n):
            let op: UInt32
            if case .iifnameNot = self { op = cmpNEQ } else { op = cmpEQ }
            out.append(.meta(key: UInt32(NFT_META_IIFNAME.rawValue), dreg: r1))
            if n.hasSuffix("*") {
                out.append(.cmp(sreg: r1, op: op, data: Array(n.dropLast().utf8)))
            } else {
                var b = Array(n.utf8)
                b += [UInt8](repeating: 0, count: max(0, 16 - b.count))
                out.append(.cmp(sreg: r1, op: op, data: Array(b.prefix(16))))
            }
        case .markUnset(let m):
            out.append(.meta(key: UInt32(NFT_META_MARK.rawValue), dreg: r1))
            out.append(.bitwise(sreg: r1, dreg: r1, mask: host32(m), xor: host32(0)))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: host32(0)))
        case .markSetOr(let m):
            out.append(.meta(key: UInt32(NFT_META_MARK.rawValue), dreg: r1))
            out.append(.bitwise(sreg: r1, dreg: r1, mask: host32(~m), xor: host32(m)))
            out.append(.metaSet(key: UInt32(NFT_META_MARK.rawValue), sreg: r1))
        case .markSetXor(let m):
            out.append(.meta(key: UInt32(NFT_META_MARK.rawValue), dreg: r1))
            out.append(.bitwise(sreg: r1, dreg: r1, mask: host32(~0), xor: host32(m)))
            out.append(.metaSet(key: UInt32(NFT_META_MARK.rawValue), sreg: r1))
        case let .vmap(keys, set):
            out += KeyPart.loads(keys).exprs
            out.append(.lookup(sreg: r1, set: set, setID: 0, dreg: Reg.verdict, invert: false))
        case .numgenVmap(let chains):
            let (name, id) = namer.take("__map")
            let elements = chains.enumerated().map { (key: host32(UInt32($0.offset)), flags: UInt32(0), verdict: Optional(Verdict.goto($0.element))) }
            sets.append(AnonSet(name: name, id: id,
                                flags: UInt32(NFT_SET_ANONYMOUS.rawValue | NFT_SET_CONSTANT.rawValue | NFT_SET_MAP.rawValue),
                                keyType: 4 /* integer */, keyLength: 4, keyByteOrder: 1,
                                isVerdictMap: true, elements: elements))
            out.append(.numgen(dreg: r1, modulus: UInt32(chains.count), type: UInt32(NFT_NG_RANDOM.rawValue)))
            out.append(.lookup(sreg: r1, set: name, setID: id, dreg: Reg.verdict, invert: false))
        case let .updateSet(set, key):
            out.append(key.load(r1))
            out.append(.dynset(op: UInt32(NFT_DYNSET_OP_UPDATE.rawValue), sregKey: r1, set: set, setID: 0, timeoutMs: nil))
        case let .dnat(p, ip, port):
            out.append(.meta(key: UInt32(NFT_META_L4PROTO.rawValue), dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: [p.number]))
            out.append(.immediate(dreg: r1, data: ip.bytes))
            out.append(.immediate(dreg: Reg.r2, data: [UInt8(port >> 8), UInt8(port & 0xff)]))
            out.append(.nat(type: UInt32(NFT_NAT_DNAT.rawValue), family: (ip.family ?? .ipv4).nfproto, addrReg: r1, protoReg: Reg.r2,
                            flags: UInt32(NF_NAT_RANGE_PROTO_SPECIFIED)))
        case .masquerade(let fr):
            out.append(.masq(flags: fr ? UInt32(NF_NAT_RANGE_PROTO_RANDOM_FULLY) : 0))
        case .reject:
            // `reject` in an ip or ip6 table: ICMP(v6) port unreachable, code 3 and 4.
            out.append(.reject(type: UInt32(NFT_REJECT_ICMP_UNREACH.rawValue), code: family == .ipv6 ? 4 : 3))
        case .verdict(let v):
            out.append(.verdict(code: v.code, chain: v.chain))
        case let .dnatMap(p, keys, n, set):
            out.append(.meta(key: UInt32(NFT_META_L4PROTO.rawValue), dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: [p.number]))
            let (loads, regs) = KeyPart.loads(keys)
            out += loads
            out.append(.numgen(dreg: Reg.r32(regs), modulus: UInt32(n), type: UInt32(NFT_NG_RANDOM.rawValue)))
            out.append(.lookup(sreg: r1, set: set, setID: 0, dreg: r1, invert: false))
            out.append(.nat(type: UInt32(NFT_NAT_DNAT.rawValue), family: UInt32(NFPROTO_IPV4), addrReg: r1, protoReg: Reg.r32(1), flags: 0))
        case let .inConcatSet(keys, set):
            out += KeyPart.loads(keys).exprs
            out.append(.lookup(sreg: r1, set: set, setID: 0, dreg: nil, invert: false))
        case .markIsSet(let m):
            out.append(.meta(key: UInt32(NFT_META_MARK.rawValue), dreg: r1))
            out.append(.bitwise(sreg: r1, dreg: r1, mask: host32(m), xor: host32(0)))
            out.append(.cmp(sreg: r1, op: cmpNEQ, data: host32(0)))
        case .ctStatusDNAT:
            out.append(.ct(key: UInt32(NFT_CT_STATUS.rawValue), dreg: r1))
            out.append(.bitwise(sreg: r1, dreg: r1, mask: host32(0x20 /* IPS_DST_NAT */), xor: host32(0)))
            out.append(.cmp(sreg: r1, op: cmpNEQ, data: host32(0)))
        case let .dnatNumgenMap(p, dests):
            let (name, id) = namer.take("__map")
            let keys = dests.indices.map { (key: host32(UInt32($0)), flags: UInt32(0), verdict: Optional<Verdict>.none) }
            let values = dests.map { $0.ip.bytes + [UInt8($0.port >> 8), UInt8($0.port & 0xff), 0, 0] }
            let v6 = dests.first?.ip.family == .ipv6
            // `ipv4_addr . inet_service` (7 << 6 | 13) or `ipv6_addr . inet_service` (8 << 6 | 13).
            let dataType: UInt32 = v6 ? 525 : 461
            sets.append(AnonSet(name: name, id: id,
                                flags: UInt32(NFT_SET_ANONYMOUS.rawValue | NFT_SET_CONSTANT.rawValue | NFT_SET_MAP.rawValue),
                                keyType: 4 /* integer */, keyLength: 4, keyByteOrder: 1,
                                isVerdictMap: false, elements: keys,
                                data: (type: dataType, length: v6 ? 20 : 8, values: values)))
            out.append(.meta(key: UInt32(NFT_META_L4PROTO.rawValue), dreg: r1))
            out.append(.cmp(sreg: r1, op: cmpEQ, data: [p.number]))
            out.append(.numgen(dreg: r1, modulus: UInt32(dests.count), type: UInt32(NFT_NG_RANDOM.rawValue)))
            out.append(.lookup(sreg: r1, set: name, setID: id, dreg: r1, invert: false))
            out.append(.nat(type: UInt32(NFT_NAT_DNAT.rawValue), family: v6 ? UInt32(NFPROTO_IPV6) : UInt32(NFPROTO_IPV4),
                            addrReg: r1, protoReg: Reg.r32(v6 ? 4 : 1), flags: 0))
        }
    }
}

/// The elements of an interval set covering `cidrs` (of one family), as nft sends them:
/// each range's start, and the first address after it flagged as an interval end, with
/// an end element at 0 when the first range does not start there.
func intervalElements(_ cidrs: [CIDR]) -> [(key: [UInt8], flags: UInt32, verdict: Verdict?)] {
    // Each range as its first address and the first after it (nil past the last address).
    var ranges: [(start: [UInt8], end: [UInt8]?)] = cidrs.map { c in
        let start = c.network.address.bytes
        var end = start
        for i in 0..<end.count {
            let hostBits = max(0, min(8, (i + 1) * 8 - c.prefixLength))
            end[i] |= UInt8(truncatingIfNeeded: (1 << hostBits) - 1)
        }
        return (start, increment(end))
    }.sorted { $0.start.lexicographicallyPrecedes($1.start) }
    var merged: [(start: [UInt8], end: [UInt8]?)] = []
    for r in ranges {
        if let last = merged.last, last.end.map({ !$0.lexicographicallyPrecedes(r.start) }) ?? true {
            let end: [UInt8]? = (last.end == nil || r.end == nil) ? nil
                : (last.end!.lexicographicallyPrecedes(r.end!) ? r.end : last.end)
            merged[merged.count - 1].end = end
        } else {
            merged.append(r)
        }
    }
    ranges = merged
    let endFlag = UInt32(NFT_SET_ELEM_INTERVAL_END.rawValue)
    var out: [(key: [UInt8], flags: UInt32, verdict: Verdict?)] = []
    if let first = ranges.first, first.start.contains(where: { $0 != 0 }) {
        out.append(([UInt8](repeating: 0, count: first.start.count), endFlag, nil))
    }
    for r in ranges {
        out.append((r.start, 0, nil))
        if let e = r.end { out.append((e, endFlag, nil)) }
    }
    return out
}

/// The address after `bytes`; nil past the last one.
private func increment(_ bytes: [UInt8]) -> [UInt8]? {
    var b = bytes
    for i in b.indices.reversed() {
        if b[i] == 0xff { b[i] = 0 } else { b[i] += 1; return b }
    }
    return nil
}
