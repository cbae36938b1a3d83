import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
@testable import Kubelet
import Synchronization
import Testing

/// gRPC probes against a real gRPC server (grpc-swift 2) serving the standard health service.
@Suite("gRPC probes")
struct GRPCProbeTests {
    final class Health: RegistrableRPCService {
        let status = Atomic<Int>(1)
        let services = Mutex<[String]>([])
        func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
            router.registerHandler(forMethod: MethodDescriptor(fullyQualifiedService: "grpc.health.v1.Health", method: "Check"),
                                   deserializer: GRPCHealth.Raw(), serializer: GRPCHealth.Raw()) { request, _ in
                var asked: [UInt8] = []
                for try await m in request.messages { asked = m }
                self.services.withLock { $0.append(String(decoding: asked.dropFirst(2), as: UTF8.self)) }
                let s = self.status.load(ordering: .relaxed)
                return StreamingServerResponse(single: ServerResponse(message: s == 0 ? [] : [0x08, UInt8(s)]))
            }
        }
    }

    @Test func messagesAreOneFieldEach() {
        #expect(GRPCHealth.request(service: "") == [])
        #expect(GRPCHealth.request(service: "db") == [0x0a, 2, 100, 98])
        #expect(GRPCHealth.status([0x08, 1]) == 1)
        #expect(GRPCHealth.status([]) == 0)
        #expect(GRPCHealth.status([0x12, 1, 0x41, 0x08, 2]) == 2)
        #expect(GRPCHealth.status([0x08]) == nil)
    }

    @Test func servingPassesAndTheRestFailsAsUpstreamWordsIt() async throws {
        let health = Health()
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [health])
        let serving = Task { try await server.serve() }
        defer { server.beginGracefulShutdown(); serving.cancel() }
        let port = try #require(try await transport.listeningAddress.ipv4?.port)

        // Timeouts generous enough for a loaded machine (the whole suite runs at once).
        let ok = await GRPCHealth.check(host: "127.0.0.1", port: port, service: "", timeout: 20)
        #expect(ok.ok, "\(ok.message)")
        health.status.store(2, ordering: .relaxed)
        let notServing = await GRPCHealth.check(host: "127.0.0.1", port: port, service: "db", timeout: 20)
        #expect(!notServing.ok && notServing.message == "service unhealthy (responded with \"NOT_SERVING\")")
        #expect(health.services.withLock { $0 } == ["", "db"])
        health.status.store(0, ordering: .relaxed)
        #expect(await GRPCHealth.check(host: "127.0.0.1", port: port, service: "", timeout: 20).message == "service unhealthy (responded with \"UNKNOWN\")")

        // Nothing listening: the connection fails within the timeout.
        server.beginGracefulShutdown()
        _ = try? await serving.value
        let start = ContinuousClock.now
        let closed = await GRPCHealth.check(host: "127.0.0.1", port: port, service: "", timeout: 1)
        #expect(!closed.ok && closed.message.hasPrefix("timeout: failed to connect service \"127.0.0.1:\(port)\" within 1s"), "\(closed.message)")
        // Bounded (it does not hang), with room for a machine running the whole suite at once.
        #expect(ContinuousClock.now - start < .seconds(30))
    }
}
