import KubeAPI

/// A packet to walk through what a proxy mode programs (`switchyard explain`): a new connection
/// from `source` to `destination:port`, either arriving at the node (from a pod or from outside)
/// or sent by the node itself.
public struct ExplainQuery: Sendable {
    public var source: String
    public var sourcePort: Int
    public var destination: String
    public var port: Int
    /// `tcp`, `udp` or `sctp`.
    public var proto: String
    /// The packet starts on the node (its OUTPUT path) rather than arriving (PREROUTING).
    public var fromNode: Bool
    /// The node's own addresses (`addrtype LOCAL`); 127.0.0.0/8 always is.
    public var localAddresses: [String]

    public init(source: String, sourcePort: Int = 40000, destination: String, port: Int, proto: String = "tcp", fromNode: Bool = false,
                localAddresses: [String] = []) {
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.port = port
        self.proto = proto
        self.fromNode = fromNode
        self.localAddresses = localAddresses
    }
}

/// What became of the packet: each way it can go (one per endpoint a Service picks at random,
/// with its probability), the rules it passed on that way, and the verdict.
public struct PacketPath: Sendable {
    public struct Hop: Sendable, Equatable {
        /// `nat`, `filter` (iptables tables), or the mode's own grouping.
        public var table: String
        public var chain: String
        /// The rule as the mode writes it.
        public var rule: String
        public init(table: String, chain: String, rule: String) {
            self.table = table
            self.chain = chain
            self.rule = rule
        }

        /// Hops from a walk that keeps them as (table, chain, rule).
        public static func list(_ hops: [(table: String, chain: String, rule: String)]) -> [Hop] {
            hops.map { Hop(table: $0.table, chain: $0.chain, rule: $0.rule) }
        }
    }

    public struct Outcome: Sendable {
        public var probability: Double
        public var hops: [Hop]
        /// `accepted`, `rejected` or `dropped`.
        public var verdict: String
        /// Where the destination NAT sent it (`10.244.1.2:8080`), nil when not translated.
        public var endpoint: String?
        /// Its source rewritten to the node's on the way out.
        public var masqueraded: Bool
        public init(probability: Double, hops: [Hop], verdict: String, endpoint: String?, masqueraded: Bool) {
            self.probability = probability
            self.hops = hops
            self.verdict = verdict
            self.endpoint = endpoint
            self.masqueraded = masqueraded
        }
    }

    public var query: ExplainQuery
    public var mode: String
    public var outcomes: [Outcome]

    public init(query: ExplainQuery, mode: String, outcomes: [Outcome]) {
        self.query = query
        self.mode = mode
        self.outcomes = outcomes
    }

    /// How each outcome reads in one line.
    static func summary(_ o: Outcome) -> String {
        var parts: [String] = []
        // A proxy that carries the bytes itself (the userspace mode) dials the endpoint from the node.
        let proxied = o.hops.last?.table == "userspace"
        if let e = o.endpoint { parts.append(proxied ? "proxied to \(e)" : "DNAT to \(e)") }
        if o.masqueraded { parts.append(proxied ? "from the node's address" : "masqueraded") }
        parts.append(o.verdict)
        return parts.joined(separator: ", ")
    }

    /// For people: the packet, the rules of the most likely way (and where the others part), the outcomes.
    public func text() -> String {
        let q = query
        var out = "\(mode): \(joinHostPort(q.source, q.sourcePort)) -> \(joinHostPort(q.destination, q.port))/\(q.proto), "
            + (q.fromNode ? "sent by the node (OUTPUT)\n" : "arriving at the node (PREROUTING)\n")
        guard let first = outcomes.max(by: { $0.probability < $1.probability }) else { return out + "no outcome\n" }
        for h in first.hops { out += "  \(h.table) \(h.chain): \(h.rule)\n" }
        out += outcomes.count == 1 ? "outcome:\n" : "outcomes (\(outcomes.count)):\n"
        for o in outcomes {
            // Where this way parts from the one shown: its own hops, until the ways meet again.
            let via = o.hops.filter { !first.hops.contains($0) }.map(\.chain)
            var seen: [String] = []
            for c in via where seen.last != c { seen.append(c) }
            let pct = (o.probability * 1000).rounded() / 10
            out += "  \(pct)%  \(Self.summary(o))\(seen.isEmpty ? "" : "  (via \(seen.joined(separator: " > ")))")\n"
        }
        return out
    }

    public var json: JSONValue {
        let q = query
        return ["mode": .string(mode),
                "packet": ["source": .string(q.source), "sourcePort": .int(Int64(q.sourcePort)), "destination": .string(q.destination), "port": .int(Int64(q.port)),
                           "protocol": .string(q.proto), "fromNode": .bool(q.fromNode)],
                "outcomes": .array(outcomes.map { o in
                    ["probability": .double(o.probability), "verdict": .string(o.verdict), "endpoint": o.endpoint.map(JSONValue.string) ?? .null,
                     "masqueraded": .bool(o.masqueraded),
                     "hops": .array(o.hops.map { ["table": .string($0.table), "chain": .string($0.chain), "rule": .string($0.rule)] })]
                })]
    }
}
