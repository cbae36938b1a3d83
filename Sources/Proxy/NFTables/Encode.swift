import CMnl
import CNftnl
import KubeAPI

/// Message builders for the objects of one table. Each call appends one message
/// to the batch; nothing is sent until the batch is committed.
struct TableWriter {
    let batch: Batch
    let table: String
    /// The table's family: `ip` or `ip6`.
    var family: IPFamily = .ipv4

    private static let create = Int32(NLM_F_CREATE)

    func addTable(comment: String?) {
        batch.add(UInt32(NFT_MSG_NEWTABLE.rawValue), flags: Self.create, label: "add table \(family.nftPrefix) \(table)") { nlh in
            let t = nftnl_table_alloc()!
            defer { nftnl_table_free(t) }
            nftnl_table_set_str(t, UInt16(NFTNL_TABLE_NAME.rawValue), table)
            nftnl_table_set_u32(t, UInt16(NFTNL_TABLE_FAMILY.rawValue), family.nfproto)
            if let comment {
                let ud = udataString(UInt8(NFTNL_UDATA_TABLE_COMMENT.rawValue), comment)
                ud.withUnsafeBytes { _ = nftnl_table_set_data(t, UInt16(NFTNL_TABLE_USERDATA.rawValue), $0.baseAddress, UInt32($0.count)) }
            }
            nftnl_table_nlmsg_build_payload(nlh, t)
        }
    }

    func deleteTable() {
        batch.add(UInt32(NFT_MSG_DELTABLE.rawValue), flags: 0, label: "delete table \(family.nftPrefix) \(table)") { nlh in
            let t = nftnl_table_alloc()!
            defer { nftnl_table_free(t) }
            nftnl_table_set_str(t, UInt16(NFTNL_TABLE_NAME.rawValue), table)
            nftnl_table_nlmsg_build_payload(nlh, t)
        }
    }

    private func withChain(_ name: String, _ body: @escaping (OpaquePointer) -> Void) -> (UnsafeMutablePointer<nlmsghdr>) -> Void {
        { nlh in
            let c = nftnl_chain_alloc()!
            defer { nftnl_chain_free(c) }
            nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_TABLE.rawValue), table)
            nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_NAME.rawValue), name)
            body(c)
            nftnl_chain_nlmsg_build_payload(nlh, c)
        }
    }

    func addChain(_ chain: Chain) {
        batch.add(UInt32(NFT_MSG_NEWCHAIN.rawValue), flags: Self.create, label: "add chain \(family.nftPrefix) \(table) \(chain.name)",
                  withChain(chain.name) { c in
            if let b = chain.base {
                nftnl_chain_set_u32(c, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue), b.hook.number)
                nftnl_chain_set_s32(c, UInt16(NFTNL_CHAIN_PRIO.rawValue), b.priority)
                nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_TYPE.rawValue), b.kind.rawValue)
                nftnl_chain_set_u32(c, UInt16(NFTNL_CHAIN_POLICY.rawValue), UInt32(NF_ACCEPT))
            }
            if let comment = chain.comment {
                let ud = udataString(UInt8(NFTNL_UDATA_CHAIN_COMMENT.rawValue), comment)
                ud.withUnsafeBytes { _ = nftnl_chain_set_data(c, UInt16(NFTNL_CHAIN_USERDATA.rawValue), $0.baseAddress, UInt32($0.count)) }
            }
        })
    }

    func flushChain(_ name: String) {
        batch.add(UInt32(NFT_MSG_DELRULE.rawValue), flags: 0, label: "flush chain \(family.nftPrefix) \(table) \(name)") { nlh in
            let r = nftnl_rule_alloc()!
            defer { nftnl_rule_free(r) }
            nftnl_rule_set_str(r, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_set_str(r, UInt16(NFTNL_RULE_CHAIN.rawValue), name)
            nftnl_rule_nlmsg_build_payload(nlh, r)
        }
    }

    func deleteChain(_ name: String) {
        batch.add(UInt32(NFT_MSG_DELCHAIN.rawValue), flags: 0, label: "delete chain \(family.nftPrefix) \(table) \(name)", withChain(name) { _ in })
    }

    /// Appends `rule` to `chain`, creating the anonymous sets it needs first.
    func addRule(_ chain: String, _ rule: Rule, namer: inout AnonNamer) {
        let (exprs, sets) = rule.compile(&namer, family: family)
        for s in sets { addAnonSet(s) }
        batch.add(UInt32(NFT_MSG_NEWRULE.rawValue), flags: Int32(NLM_F_CREATE | NLM_F_APPEND),
                  label: "add rule \(family.nftPrefix) \(table) \(chain) \(rule.text)") { nlh in
            let r = nftnl_rule_alloc()!
            defer { nftnl_rule_free(r) }
            nftnl_rule_set_str(r, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_set_str(r, UInt16(NFTNL_RULE_CHAIN.rawValue), chain)
            for e in exprs { nftnl_rule_add_expr(r, e.make()) }
            if let ud = rule.userData {
                ud.withUnsafeBytes { _ = nftnl_rule_set_data(r, UInt16(NFTNL_RULE_USERDATA.rawValue), $0.baseAddress, UInt32($0.count)) }
            }
            nftnl_rule_nlmsg_build_payload(nlh, r)
        }
    }

    private func newSet(_ name: String) -> OpaquePointer {
        let s = nftnl_set_alloc()!
        nftnl_set_set_str(s, UInt16(NFTNL_SET_TABLE.rawValue), table)
        nftnl_set_set_str(s, UInt16(NFTNL_SET_NAME.rawValue), name)
        nftnl_set_set_u32(s, UInt16(NFTNL_SET_FAMILY.rawValue), family.nfproto)
        return s
    }

    private func addAnonSet(_ a: AnonSet) {
        batch.add(UInt32(NFT_MSG_NEWSET.rawValue), flags: Self.create, label: "add anonymous set \(a.name)") { nlh in
            let s = newSet(a.name)
            defer { nftnl_set_free(s) }
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_ID.rawValue), a.id)
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_FLAGS.rawValue), a.flags)
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_KEY_TYPE.rawValue), a.keyType)
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_KEY_LEN.rawValue), a.keyLength)
            if a.isVerdictMap {
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_TYPE.rawValue), NFT_DATA_VERDICT.rawValue)
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_LEN.rawValue), 0)
            } else if let d = a.data {
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_TYPE.rawValue), d.type)
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_LEN.rawValue), d.length)
            }
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_DESC_SIZE.rawValue), UInt32(a.elements.count))
            var ud = udataU32(UInt8(NFTNL_UDATA_SET_KEYBYTEORDER.rawValue), a.keyByteOrder)
            if a.data != nil { ud += udataU32(UInt8(NFTNL_UDATA_SET_DATABYTEORDER.rawValue), 2 /* big endian */) }
            ud.withUnsafeBytes { _ = nftnl_set_set_data(s, UInt16(NFTNL_SET_USERDATA.rawValue), $0.baseAddress, UInt32($0.count)) }
            nftnl_set_nlmsg_build_payload(nlh, s)
        }
        batch.add(UInt32(NFT_MSG_NEWSETELEM.rawValue), flags: Self.create, label: "add elements to anonymous set \(a.name)") { nlh in
            // By ID only: the kernel finds a set created in this transaction by its ID
            // without first walking every set of the table by name, as it does when a
            // name is given (a quadratic cost over a full sync of 10,000 services).
            let s = nftnl_set_alloc()!
            defer { nftnl_set_free(s) }
            nftnl_set_set_str(s, UInt16(NFTNL_SET_TABLE.rawValue), table)
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_FAMILY.rawValue), family.nfproto)
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_ID.rawValue), a.id)
            for (i, el) in a.elements.enumerated() {
                let e = nftnl_set_elem_alloc()!
                el.key.withUnsafeBytes { _ = nftnl_set_elem_set(e, UInt16(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
                if el.flags != 0 { nftnl_set_elem_set_u32(e, UInt16(NFTNL_SET_ELEM_FLAGS), el.flags) }
                if let v = el.verdict { setVerdict(e, v) }
                if let d = a.data {
                    d.values[i].withUnsafeBytes { _ = nftnl_set_elem_set(e, UInt16(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }
                }
                nftnl_set_elem_add(s, e)
            }
            nftnl_set_elems_nlmsg_build_payload(nlh, s)
        }
    }

    private func setVerdict(_ e: OpaquePointer, _ v: Verdict) {
        nftnl_set_elem_set_u32(e, UInt16(NFTNL_SET_ELEM_VERDICT), UInt32(bitPattern: v.code))
        if let c = v.chain { nftnl_set_elem_set_str(e, UInt16(NFTNL_SET_ELEM_CHAIN), c) }
    }

    func addSet(_ d: SetDef) {
        batch.add(UInt32(NFT_MSG_NEWSET.rawValue), flags: Self.create, label: "add set \(family.nftPrefix) \(table) \(d.name)") { nlh in
            let s = newSet(d.name)
            defer { nftnl_set_free(s) }
            // The kernel requires an ID on every new set (rules in the batch may refer to it by ID).
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_ID.rawValue), batch.nextSetID())
            var flags: UInt32 = 0
            if d.isMap { flags |= UInt32(NFT_SET_MAP.rawValue) }
            if d.timeoutSeconds != nil { flags |= UInt32(NFT_SET_TIMEOUT.rawValue | NFT_SET_EVAL.rawValue) }
            nftnl_set_set_u32(s, UInt16(NFTNL_SET_FLAGS.rawValue), flags)
            var ud: [UInt8]
            if let raw = d.raw {
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_KEY_TYPE.rawValue), raw.keyType)
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_KEY_LEN.rawValue), raw.keyLength)
                if raw.dataLength > 0 {
                    nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_TYPE.rawValue), raw.dataType)
                    nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_LEN.rawValue), raw.dataLength)
                }
                ud = raw.userData
            } else {
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_KEY_TYPE.rawValue), d.keyTypeID)
                nftnl_set_set_u32(s, UInt16(NFTNL_SET_KEY_LEN.rawValue), d.keyLength)
                if d.isVerdictMap {
                    nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_TYPE.rawValue), NFT_DATA_VERDICT.rawValue)
                    nftnl_set_set_u32(s, UInt16(NFTNL_SET_DATA_LEN.rawValue), 0)
                }
                ud = udataU32(UInt8(NFTNL_UDATA_SET_KEYBYTEORDER.rawValue), 2)
            }
            if let t = d.timeoutSeconds { nftnl_set_set_u64(s, UInt16(NFTNL_SET_TIMEOUT.rawValue), UInt64(t) * 1000) }
            if let c = d.comment { ud += udataString(UInt8(NFTNL_UDATA_SET_COMMENT.rawValue), c) }
            ud.withUnsafeBytes { _ = nftnl_set_set_data(s, UInt16(NFTNL_SET_USERDATA.rawValue), $0.baseAddress, UInt32($0.count)) }
            nftnl_set_nlmsg_build_payload(nlh, s)
        }
    }

    /// What one element may take in a message: attribute headers, key, verdict and
    /// chain name, comment. Generous, so the real size stays below the estimate.
    static func estimatedSize(_ e: Element) -> Int {
        64 + e.key.reduce(0) { $0 + ($1.family == .ipv6 ? 20 : 8) } + (e.data?.reduce(0) { $0 + ($1.family == .ipv6 ? 20 : 8) } ?? 0) + (e.verdict?.chain?.utf8.count ?? 0) + (e.comment?.utf8.count ?? 0)
    }

    /// Bytes of elements per message, under the 65535 a nested attribute's length holds.
    static let elementListLimit = 60_000

    func deleteSet(_ name: String) {
        batch.add(UInt32(NFT_MSG_DELSET.rawValue), flags: 0, label: "delete set \(family.nftPrefix) \(table) \(name)") { nlh in
            let s = newSet(name)
            defer { nftnl_set_free(s) }
            nftnl_set_nlmsg_build_payload(nlh, s)
        }
    }

    func flushSet(_ name: String) {
        batch.add(UInt32(NFT_MSG_DELSETELEM.rawValue), flags: 0, label: "flush set \(family.nftPrefix) \(table) \(name)") { nlh in
            let s = newSet(name)
            defer { nftnl_set_free(s) }
            nftnl_set_elems_nlmsg_build_payload(nlh, s)
        }
    }

    /// Adds or deletes `elements` of set `name`, in as many messages as it takes to
    /// keep each element list under the 64 KiB a netlink attribute can hold.
    func elements(_ add: Bool, _ name: String, _ elements: [Element]) {
        var i = 0
        while i < elements.count {
            var end = i
            var bytes = 0
            while end < elements.count {
                let size = Self.estimatedSize(elements[end])
                if end > i && bytes + size > Self.elementListLimit { break }
                bytes += size
                end += 1
            }
            let part = elements[i..<end]
            i = end
            let type = add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM
            batch.add(UInt32(type.rawValue), flags: add ? Self.create : 0,
                      label: "\(add ? "add" : "delete") element \(family.nftPrefix) \(table) \(name) { \(part.first!.text)\(part.count > 1 ? ", …" : "") }") { nlh in
                let s = newSet(name)
                defer { nftnl_set_free(s) }
                for el in part {
                    let e = nftnl_set_elem_alloc()!
                    let key = el.key.flatMap(\.bytes)
                    key.withUnsafeBytes { _ = nftnl_set_elem_set(e, UInt16(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
                    if add {
                        if let v = el.verdict { setVerdict(e, v) }
                        if let d = el.data {
                            let bytes = d.flatMap(\.bytes)
                            bytes.withUnsafeBytes { _ = nftnl_set_elem_set(e, UInt16(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }
                        }
                        if let c = el.comment {
                            let ud = udataString(UInt8(NFTNL_UDATA_SET_ELEM_COMMENT.rawValue), c)
                            ud.withUnsafeBytes { _ = nftnl_set_elem_set(e, UInt16(NFTNL_SET_ELEM_USERDATA), $0.baseAddress, UInt32($0.count)) }
                        }
                    }
                    nftnl_set_elem_add(s, e)
                }
                nftnl_set_elems_nlmsg_build_payload(nlh, s)
            }
        }
    }
}
