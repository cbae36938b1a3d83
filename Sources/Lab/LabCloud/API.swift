import Foundation
import HTTPTypes
import HummingbirdCore
import KubeAPI
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The lab cloud's HTTP API, shaped as a provider's (JSON; errors as `{"error": …}`):
///
///     GET    /v1/instances              the machines
///     GET    /v1/instances/NAME         one (404 once its namespace is gone)
///     GET    /v1/routes                 the routes, `blackhole` when their instance is gone
///     PUT    /v1/routes/NAME            {targetInstance, destinationCIDR}
///     DELETE /v1/routes/NAME
///     GET    /v1/loadbalancers          the balancers, each target with its health
///     GET    /v1/loadbalancers/NAME
///     PUT    /v1/loadbalancers/NAME     {service, requestedIP?, ports: [{name, protocol, port, nodePort}],
///                                        targets: [instance], healthCheckNodePort?}: made or updated; its address
///                                       (or backends: [address] instead of targets, nodePort optional:
///                                        the same port on each backend)
///     DELETE /v1/loadbalancers/NAME     the address goes back to the pool
extension LabCloud {
    public func handle(_ method: String, _ path: String, _ body: JSONValue?) -> (status: Int, body: JSONValue) {
        do {
            return (200, try route(method, path.split(separator: "/").map(String.init), body ?? .null))
        } catch let f as CloudFailure {
            return (f.status, ["error": .string(f.description)])
        } catch {
            return (500, ["error": .string("\(error)")])
        }
    }

    func route(_ method: String, _ parts: [String], _ body: JSONValue) throws -> JSONValue {
        guard parts.first == "v1", parts.count >= 2, parts.count <= 3 else { throw CloudFailure(404, "no such resource") }
        let name = parts.count == 3 ? parts[2] : nil
        switch (method, parts[1], name) {
        case ("GET", "instances", nil):
            return ["items": .array(configuration.instances.filter(exists).map(json))]
        case ("GET", "instances", let n?):
            guard let i = instance(n), exists(i) else { throw CloudFailure(404, "instance \(n) not found") }
            return json(i)
        case ("GET", "routes", nil):
            return ["items": .array(runtime.withLock { $0.state.routes }.map(json))]
        case ("PUT", "routes", let n?):
            guard let target = body["targetInstance"]?.string, let cidr = body["destinationCIDR"]?.string, Self.isCIDR(cidr) else {
                throw CloudFailure(400, "a route needs targetInstance and destinationCIDR (an IPv4 CIDR)")
            }
            guard let i = instance(target), exists(i) else { throw CloudFailure(404, "instance \(target) not found") }
            let route = Route(name: n, targetInstance: target, destinationCIDR: cidr)
            try change { s in
                s.routes.removeAll { $0.name == n || $0.destinationCIDR == cidr }
                s.routes.append(route)
            }
            return json(route)
        case ("DELETE", "routes", let n?):
            try change { s in
                guard s.routes.contains(where: { $0.name == n }) else { throw CloudFailure(404, "route \(n) not found") }
                s.routes.removeAll { $0.name == n }
            }
            return [:]
        case ("GET", "loadbalancers", nil):
            return ["items": .array(runtime.withLock { r in r.state.balancers.map { json($0, r.failures[$0.name]) } })]
        case ("GET", "loadbalancers", let n?):
            return try runtime.withLock { r in
                guard let b = r.state.balancers.first(where: { $0.name == n }) else { throw CloudFailure(404, "load balancer \(n) not found") }
                return json(b, r.failures[n])
            }
        case ("PUT", "loadbalancers", let n?):
            let b = try ensure(n, body)
            return runtime.withLock { json(b, $0.failures[n]) }
        case ("DELETE", "loadbalancers", let n?):
            try change { s in
                guard s.balancers.contains(where: { $0.name == n }) else { throw CloudFailure(404, "load balancer \(n) not found") }
                s.balancers.removeAll { $0.name == n }
            }
            runtime.withLock { _ = $0.failures.removeValue(forKey: n) }
            return [:]
        default:
            throw CloudFailure(405, "\(method) is not served on /\(parts.joined(separator: "/"))")
        }
    }

    /// Changes the state and applies it; a change the kernel refuses is undone.
    func change(_ body: (inout State) throws -> Void) throws {
        try runtime.withLock { r in
            let before = r.state
            try body(&r.state)
            do { try apply(&r) } catch {
                r.state = before
                try? apply(&r)
                throw error
            }
        }
    }

    func ensure(_ name: String, _ body: JSONValue) throws -> Balancer {
        guard let ports = body["ports"]?.array, !ports.isEmpty else { throw CloudFailure(400, "a load balancer needs ports") }
        let backends = try body["backends"].map { v -> [String] in
            guard let list = v.array?.compactMap(\.string), !list.isEmpty, list.count == v.array?.count,
                  list.allSatisfy({ IPAddress($0)?.family == .ipv4 }) else {
                throw CloudFailure(400, "backends: a list of IPv4 addresses")
            }
            return list.sorted()
        }
        var list: [Port] = []
        for p in ports {
            let proto = p["protocol"]?.string ?? "TCP"
            guard ["TCP", "UDP"].contains(proto) else { throw CloudFailure(400, "protocol \(proto): the lab's balancers forward TCP and UDP") }
            guard let port = p["port"]?.int, (1...65535).contains(port) else { throw CloudFailure(400, "a port needs port (1-65535)") }
            guard let nodePort = p["nodePort"]?.int ?? (backends != nil ? port : nil), (1...65535).contains(nodePort) else {
                throw CloudFailure(400, "port \(port): the lab's balancers forward to NodePorts; this port has none (allocateLoadBalancerNodePorts: false?)")
            }
            list.append(Port(name: p["name"]?.string ?? "", protocol: proto, port: Int(port), nodePort: Int(nodePort)))
        }
        let targets = (body["targets"]?.array ?? []).compactMap(\.string).sorted()
        for t in targets where instance(t) == nil { throw CloudFailure(400, "target \(t) is not an instance of this cloud") }
        let requested = body["requestedIP"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        if let requested, IPAddress(requested) == nil
            || !(requested.hasPrefix(configuration.pool + ".") && Int(requested.dropFirst(configuration.pool.count + 1)).map { (1...254).contains($0) } == true) {
            throw CloudFailure(400, "requested address \(requested) is not in the cloud's pool \(configuration.pool).0/24")
        }
        var made: Balancer?
        try change { s in
            let existing = s.balancers.first { $0.name == name }
            let taken = Set(s.balancers.filter { $0.name != name }.map(\.ip))
            let ip: String
            if let requested {
                guard !taken.contains(requested) else { throw CloudFailure(409, "address \(requested) is in use by another load balancer") }
                ip = requested
            } else if let existing {
                ip = existing.ip
            } else {
                guard let free = (1...254).map({ "\(configuration.pool).\($0)" }).first(where: { !taken.contains($0) }) else {
                    throw CloudFailure(409, "the pool \(configuration.pool).0/24 is exhausted")
                }
                ip = free
            }
            let b = Balancer(name: name, service: body["service"]?.string ?? "", ip: ip, ports: list, targets: backends == nil ? targets : [],
                             healthCheckNodePort: Int(body["healthCheckNodePort"]?.int ?? 0), backends: backends)
            s.balancers.removeAll { $0.name == name }
            s.balancers.append(b)
            made = b
        }
        return made!
    }

    func json(_ r: Route) -> JSONValue {
        let gone = instance(r.targetInstance).map { !exists($0) } ?? true
        return ["name": .string(r.name), "targetInstance": .string(r.targetInstance), "destinationCIDR": .string(r.destinationCIDR), "blackhole": .bool(gone)]
    }

    func json(_ b: Balancer, _ failures: [String: Int]?) -> JSONValue {
        let healthy = Set(b.members.filter { (failures?[$0] ?? 0) < 2 })
        var o: JSONValue = ["name": .string(b.name), "service": .string(b.service), "ip": .string(b.ip),
                            "ports": .array(b.ports.map { ["name": .string($0.name), "protocol": .string($0.protocol), "port": .int(Int64($0.port)), "nodePort": .int(Int64($0.nodePort))] }),
                            "targets": .array(b.targets.map { ["instance": .string($0), "healthy": .bool(healthy.contains($0))] }),
                            "healthCheckNodePort": .int(Int64(b.healthCheckNodePort))]
        if let backends = b.backends { o["backends"] = .array(backends.map { ["address": .string($0), "healthy": .bool(healthy.contains($0))] }) }
        return o
    }

    static func isCIDR(_ s: String) -> Bool {
        CIDR(s)?.address.family == .ipv4
    }

    /// Serves the API on `host:port` until cancelled.
    public func serve(host: String, port: Int) async throws {
        let server = try HTTPServerBuilder.http1().buildServer(
            configuration: ServerConfiguration(address: .hostname(host, port: port)),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
            responder: { [self] request, writer, _ in
                let bytes = try await request.body.collect(upTo: 1 << 20)
                let body = bytes.readableBytes == 0 ? nil : try? JSONValue.parse(Data(bytes.readableBytesView))
                let (status, answer) = handle(request.method.rawValue, request.uri.path, body)
                var headers = HTTPFields()
                headers[.contentType] = "application/json"
                let response = Response(status: .init(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.bytes())))
                try await writer.write(response: response.head, body: response.body)
            })
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], gracefulShutdownSignals: [.sigterm], logger: logger))
        try await group.run()
    }
}
