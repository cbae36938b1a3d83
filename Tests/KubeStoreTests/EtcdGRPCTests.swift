import EtcdClient
import Foundation
import HostOS
@testable import KubeStore
import NetnsKit
import Testing

/// A CA, a serving certificate for 127.0.0.1 and a client certificate, made with openssl in a
/// directory of their own.
final class EtcdTestPKI: @unchecked Sendable {
    let dir = TempDir()
    var ca: String { dir.url.appendingPathComponent("ca.crt").path }
    var serverCert: String { dir.url.appendingPathComponent("server.crt").path }
    var serverKey: String { dir.url.appendingPathComponent("server.key").path }
    var clientCert: String { dir.url.appendingPathComponent("client.crt").path }
    var clientKey: String { dir.url.appendingPathComponent("client.key").path }

    init() throws {
        let d = dir.url.path
        let script = """
        set -e
        cd \(d)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -subj /CN=etcd-ca -days 1
        for who in server client; do
          openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr -subj /CN=$who
        done
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext
        printf 'extendedKeyUsage=clientAuth\\n' > client.ext
        for who in server client; do
          openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $who.crt -days 1 -extfile $who.ext
        done
        """
        let r = try Sh.run(["bash", "-c", script], timeout: 30)
        guard r.status == 0 else { throw LabError("openssl: \(r.err)") }
    }

    var server: EtcdProcess.ServerTLS { .init(caFile: ca, certFile: serverCert, keyFile: serverKey) }
}

@Suite("etcd over gRPC: etcd's own tools, members, TLS, leases", .serialized, .enabled(if: EtcdProcess.available, "needs Debian's etcd (etcd-server)"))
struct EtcdGRPCTests {
    /// Keys are kube-apiserver's, so etcdctl lists our objects where it lists upstream's.
    @Test func etcdctlReadsTheKeys() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let store = try EtcdStore(servers: [etcd.url])
        let svc = #"{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"default"}}"#
        _ = try await store.create("/registry/services/specs/default/web", value: data(svc))
        let r = try Sh.run(["env", "ETCDCTL_API=3", "etcdctl", "--endpoints", etcd.url, "get", "--prefix", "/registry/services"], timeout: 10)
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out == "/registry/services/specs/default/web\n\(svc)\n")
    }

    /// With three members, the member calls go to is killed: writes go on on the others without
    /// a failure, and a watch open across the kill misses and repeats nothing.
    @Test func aKilledMemberIsPassedOver() async throws {
        let etcd = try EtcdProcess(members: 3)
        defer { etcd.stop() }
        let store = try EtcdStore(servers: etcd.urls)
        let start = try await store.currentRevision()
        var written: [Int64] = []
        for i in 0..<10 { written.append(try await store.create("/cm/default/a\(i)", value: data("\(i)")).modRevision) }
        let before = try await next(10, of: try await store.watch(prefix: "/cm/", after: start))
        #expect(before.map(\.revision) == written)

        let watch = try await store.watch(prefix: "/cm/", after: written.last!)
        etcd.kill(member: store.members.current)
        for i in 10..<30 { written.append(try await store.create("/cm/default/a\(i)", value: data("\(i)")).modRevision) }
        #expect(try await store.count(prefix: "/cm/") == 30)

        // The watch was on the killed member: the shared etcd watch is made again on another
        // from the last revision it delivered, and this watch goes on without a gap or a repeat.
        let after = try await next(20, of: watch, within: 10)
        #expect(after.map(\.revision) == Array(written[10...]))
    }

    /// TLS with client certificates (`--client-cert-auth`): the store connects with the CA,
    /// certificate and key, and without a client certificate etcd refuses it.
    @Test func tlsWithClientCertificates() async throws {
        let pki = try EtcdTestPKI()
        let etcd = try EtcdProcess(tls: pki.server)
        defer { etcd.stop() }
        #expect(etcd.url.hasPrefix("https://"))
        let store = try EtcdStore(servers: [etcd.url], tls: EtcdTLS(caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey))
        let v = try await store.create("/cm/default/x", value: data("x"))
        #expect(try await store.get("/cm/default/x")?.modRevision == v.modRevision)

        let anonymous = try EtcdStore(servers: [etcd.url], tls: EtcdTLS(caFile: pki.ca))
        await #expect(throws: StoreError.self) { try await anonymous.get("/cm/default/x") }
        // And plain HTTP to a TLS port is no answer either.
        let plain = try EtcdStore(servers: [etcd.url.replacingOccurrences(of: "https://", with: "http://")])
        await #expect(throws: StoreError.self) { try await plain.get("/cm/default/x") }
        // A certificate without its key is refused before connecting.
        #expect(throws: StoreError.self) { try EtcdStore(servers: [etcd.url], tls: EtcdTLS(certFile: pki.clientCert)) }
    }

    /// Events are written with a lease of their TTL: etcd removes them, and writes within the
    /// reuse window share one lease.
    @Test func expiringKeysHaveLeases() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let transport = try EtcdGRPCTransport(endpoints: [etcd.url])
        let shared = try EtcdStore(transport: transport, expiring: ("/registry/core/events/", 2))
        _ = try await shared.create("/registry/core/events/default/a", value: data("a"))
        _ = try await shared.create("/registry/core/events/default/b", value: data("b"))
        _ = try await shared.create("/registry/configmaps/default/c", value: data("c"))
        func lease(_ key: String) async throws -> Int64 {
            var r = Etcdserverpb_RangeRequest()
            r.key = Data(key.utf8)
            return try await transport.range(r, at: 0).kvs.first?.lease ?? -1
        }
        let a = try await lease("/registry/core/events/default/a")
        #expect(a > 0)
        #expect(try await lease("/registry/core/events/default/b") == a)
        #expect(try await lease("/registry/configmaps/default/c") == 0)

        // Without reuse, the lease is the TTL itself: the event is gone after it.
        let expiring = try EtcdStore(transport: transport, expiring: ("/registry/core/events/", 5), leaseReuse: 0)
        _ = try await expiring.create("/registry/core/events/default/d", value: data("d"))
        #expect(try await expiring.get("/registry/core/events/default/d") != nil)
        var gone = false
        for _ in 0..<120 where !gone {
            try await Task.sleep(for: .milliseconds(250))
            gone = try await expiring.get("/registry/core/events/default/d") == nil
        }
        #expect(gone, "etcd removed the event when its lease ran out")
        #expect(try await expiring.get("/registry/configmaps/default/c") != nil)
    }

    /// etcd sends a PING with nearly every call (grpc-go's bandwidth probe): 600 calls one after
    /// another on one connection, and a watch open across them, all go through without the
    /// connection being closed as a PING flood (no call here is retried but one that is slow).
    @Test func etcdsPingsDoNotCloseTheConnection() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let transport = try EtcdGRPCTransport(endpoints: [etcd.url])
        defer { transport.close() }
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data("/p/".utf8)
        create.rangeEnd = Data("/p0".utf8)
        // From the revision after now: the call returns before etcd has made the watch, and one
        // made "from now" after the first puts went through would miss them (on a loaded machine
        // it did, and the loop below waited for events that had passed).
        var now = Etcdserverpb_RangeRequest()
        now.key = Data("/p/".utf8)
        create.startRevision = try await transport.range(now, at: 0).header.revision + 1
        let watch = try await transport.watch(create, at: 0)
        for i in 0..<600 {
            var p = Etcdserverpb_PutRequest()
            p.key = Data("/p/\(i)".utf8)
            p.value = Data("\(i)".utf8)
            // A put slower than the write deadline (a loaded machine) is made again; a closed
            // connection is what fails the test.
            for attempt in 1... {
                do {
                    _ = try await transport.put(p, at: 0)
                    break
                } catch let e as EtcdError where "\(e)".contains("timed out") && attempt < 3 {}
            }
        }
        let events = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                var events = 0
                for try await msg in watch {
                    events += msg.events.count
                    if events >= 600 { break }
                }
                return events
            }
            group.addTask {
                try await Task.sleep(for: .seconds(60))
                throw EtcdError.failed(member: "test", message: "the watch did not deliver 600 events within a minute")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        #expect(events >= 600)
    }

    /// A member that is not there at all (a wrong port) is passed over too, from the first call.
    @Test func anUnreachableFirstMemberIsPassedOver() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let store = try EtcdStore(servers: ["http://127.0.0.1:1", etcd.url])
        _ = try await store.create("/cm/default/x", value: data("x"))
        #expect(store.members.current == 1)
        let events = try await next(1, of: try await store.watch(prefix: "/cm/", after: 0))
        #expect(events.first?.kv.key == "/cm/default/x")
    }
}
