import CMnl
import CNftnl

/// One nf_tables expression, as the kernel executes it. A rule is a list of these;
/// ``NFTBatch`` turns them into libnftnl expressions.
///
/// Data in registers is in network byte order where the packet has it so
/// (addresses, ports) and host order for meta and ct keys, as nft lays it out.
enum Expr: Equatable, Sendable {
    /// Load `len` bytes at `offset` of the network (`NFT_PAYLOAD_NETWORK_HEADER`) or
    /// transport header into `dreg`.
    case payload(base: UInt32, offset: UInt32, len: UInt32, dreg: UInt32)
    case cmp(sreg: UInt32, op: UInt32, data: [UInt8])
    case bitwise(sreg: UInt32, dreg: UInt32, mask: [UInt8], xor: [UInt8])
    case meta(key: UInt32, dreg: UInt32)
    case metaSet(key: UInt32, sreg: UInt32)
    case ct(key: UInt32, dreg: UInt32)
    /// Look up `sreg` in a set; a map lookup writes its data to `dreg`
    /// (`NFT_REG_VERDICT` for a verdict map). `setID` names an anonymous set created
    /// in the same batch.
    case lookup(sreg: UInt32, set: String, setID: UInt32, dreg: UInt32?, invert: Bool)
    case verdict(code: Int32, chain: String?)
    case immediate(dreg: UInt32, data: [UInt8])
    case nat(type: UInt32, family: UInt32, addrReg: UInt32, protoReg: UInt32?, flags: UInt32)
    case masq(flags: UInt32)
    case reject(type: UInt32, code: UInt8)
    case fib(flags: UInt32, result: UInt32, dreg: UInt32)
    case numgen(dreg: UInt32, modulus: UInt32, type: UInt32)
    case dynset(op: UInt32, sregKey: UInt32, set: String, setID: UInt32, timeoutMs: UInt64?)
    case counter

    /// Builds the libnftnl expression. The caller adds it to a rule, which owns it.
    func make() -> OpaquePointer {
        func new(_ name: String) -> OpaquePointer { nftnl_expr_alloc(name)! }
        func bytes(_ e: OpaquePointer, _ attr: Int, _ data: [UInt8]) {
            data.withUnsafeBytes { _ = nftnl_expr_set(e, UInt16(attr), $0.baseAddress, UInt32($0.count)) }
        }
        func u32(_ e: OpaquePointer, _ attr: Int, _ v: UInt32) { nftnl_expr_set_u32(e, UInt16(attr), v) }
        switch self {
        case let .payload(base, offset, len, dreg):
            let e = new("payload")
            u32(e, NFTNL_EXPR_PAYLOAD_BASE, base)
            u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset)
            u32(e, NFTNL_EXPR_PAYLOAD_LEN, len)
            u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg)
            return e
        case let .cmp(sreg, op, data):
            let e = new("cmp")
            u32(e, NFTNL_EXPR_CMP_SREG, sreg)
            u32(e, NFTNL_EXPR_CMP_OP, op)
            bytes(e, NFTNL_EXPR_CMP_DATA, data)
            return e
        case let .bitwise(sreg, dreg, mask, xor):
            let e = new("bitwise")
            u32(e, NFTNL_EXPR_BITWISE_SREG, sreg)
            u32(e, NFTNL_EXPR_BITWISE_DREG, dreg)
            u32(e, NFTNL_EXPR_BITWISE_LEN, UInt32(mask.count))
            bytes(e, NFTNL_EXPR_BITWISE_MASK, mask)
            bytes(e, NFTNL_EXPR_BITWISE_XOR, xor)
            return e
        case let .meta(key, dreg):
            let e = new("meta")
            u32(e, NFTNL_EXPR_META_KEY, key)
            u32(e, NFTNL_EXPR_META_DREG, dreg)
            return e
        case let .metaSet(key, sreg):
            let e = new("meta")
            u32(e, NFTNL_EXPR_META_KEY, key)
            u32(e, NFTNL_EXPR_META_SREG, sreg)
            return e
        case let .ct(key, dreg):
            let e = new("ct")
            u32(e, NFTNL_EXPR_CT_KEY, key)
            u32(e, NFTNL_EXPR_CT_DREG, dreg)
            return e
        case let .lookup(sreg, set, setID, dreg, invert):
            let e = new("lookup")
            u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg)
            nftnl_expr_set_str(e, UInt16(NFTNL_EXPR_LOOKUP_SET), set)
            if setID != 0 { u32(e, NFTNL_EXPR_LOOKUP_SET_ID, setID) }
            if let dreg { u32(e, NFTNL_EXPR_LOOKUP_DREG, dreg) }
            if invert { u32(e, NFTNL_EXPR_LOOKUP_FLAGS, UInt32(NFT_LOOKUP_F_INV.rawValue)) }
            return e
        case let .verdict(code, chain):
            let e = new("immediate")
            u32(e, NFTNL_EXPR_IMM_DREG, UInt32(NFT_REG_VERDICT.rawValue))
            nftnl_expr_set_u32(e, UInt16(NFTNL_EXPR_IMM_VERDICT), UInt32(bitPattern: code))
            if let chain { nftnl_expr_set_str(e, UInt16(NFTNL_EXPR_IMM_CHAIN), chain) }
            return e
        case let .immediate(dreg, data):
            let e = new("immediate")
            u32(e, NFTNL_EXPR_IMM_DREG, dreg)
            bytes(e, NFTNL_EXPR_IMM_DATA, data)
            return e
        case let .nat(type, family, addrReg, protoReg, flags):
            let e = new("nat")
            u32(e, NFTNL_EXPR_NAT_TYPE, type)
            u32(e, NFTNL_EXPR_NAT_FAMILY, family)
            u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, addrReg)
            if let protoReg { u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, protoReg) }
            if flags != 0 { u32(e, NFTNL_EXPR_NAT_FLAGS, flags) }
            return e
        case let .masq(flags):
            let e = new("masq")
            if flags != 0 { u32(e, NFTNL_EXPR_MASQ_FLAGS, flags) }
            return e
        case let .reject(type, code):
            let e = new("reject")
            u32(e, NFTNL_EXPR_REJECT_TYPE, type)
            nftnl_expr_set_u8(e, UInt16(NFTNL_EXPR_REJECT_CODE), code)
            return e
        case let .fib(flags, result, dreg):
            let e = new("fib")
            u32(e, NFTNL_EXPR_FIB_FLAGS, flags)
            u32(e, NFTNL_EXPR_FIB_RESULT, result)
            u32(e, NFTNL_EXPR_FIB_DREG, dreg)
            return e
        case let .numgen(dreg, modulus, type):
            let e = new("numgen")
            u32(e, NFTNL_EXPR_NG_DREG, dreg)
            u32(e, NFTNL_EXPR_NG_MODULUS, modulus)
            u32(e, NFTNL_EXPR_NG_TYPE, type)
            return e
        case let .dynset(op, sregKey, set, setID, timeoutMs):
            let e = new("dynset")
            u32(e, NFTNL_EXPR_DYNSET_OP, op)
            u32(e, NFTNL_EXPR_DYNSET_SREG_KEY, sregKey)
            nftnl_expr_set_str(e, UInt16(NFTNL_EXPR_DYNSET_SET_NAME), set)
            if setID != 0 { u32(e, NFTNL_EXPR_DYNSET_SET_ID, setID) }
            if let timeoutMs { nftnl_expr_set_u64(e, UInt16(NFTNL_EXPR_DYNSET_TIMEOUT), timeoutMs) }
            return e
        case .counter:
            return new("counter")
        }
    }
}

/// Register numbers as nft uses them: 32-bit registers 1…16 are `NFT_REG32_00`….
enum Reg {
    static let verdict = UInt32(NFT_REG_VERDICT.rawValue)
    static let r1 = UInt32(NFT_REG_1.rawValue)
    static let r2 = UInt32(NFT_REG_2.rawValue)
    /// The 32-bit register `n` (0-based), for concatenations.
    static func r32(_ n: Int) -> UInt32 { UInt32(NFT_REG32_00.rawValue) + UInt32(n) }
}
