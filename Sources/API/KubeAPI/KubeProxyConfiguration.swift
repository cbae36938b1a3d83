import Foundation
import Yams

/// kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration, the fields Switchyard reads.
public struct KubeProxyConfiguration: Codable, Sendable {
    public var apiVersion: String?
    public var kind: String?
    public var mode: String?
    public var hostnameOverride: String?
    public var clusterCIDR: String?
    public var bindAddress: String?
    public var healthzBindAddress: String?
    public var metricsBindAddress: String?
    public var nodePortAddresses: [String]?
    public var detectLocalMode: String?
    public var detectLocal: DetectLocal?
    public var iptables: IPTablesSection?
    public var syncPeriod: String?
    public var minSyncPeriod: String?

    public struct DetectLocal: Codable, Sendable {
        public var bridgeInterface: String?
        public var interfaceNamePrefix: String?
        public var clusterCIDRs: [String]?
    }

    public struct IPTablesSection: Codable, Sendable {
        public var masqueradeAll: Bool?
        public var masqueradeBit: Int?
        public var localhostNodePorts: Bool?
        public var syncPeriod: String?
        public var minSyncPeriod: String?
    }

    public static func load(path: String) throws -> KubeProxyConfiguration {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw ManifestError.unreadable(path, "no such file")
        }
        let c: KubeProxyConfiguration
        do {
            c = try YAMLDecoder().decode(KubeProxyConfiguration.self, from: String(decoding: d, as: UTF8.self))
        } catch let e as DecodingError {
            if case .dataCorrupted(let ctx) = e, let y = ctx.underlyingError as? YamlError {
                throw ManifestError.syntax(path, "\(y)")
            }
            let f = ManifestLoader.describe(e)
            throw ManifestError.syntax(path, f.description)
        } catch let y as YamlError {
            throw ManifestError.syntax(path, "\(y)")
        }
        if let k = c.kind, k != "KubeProxyConfiguration" {
            throw ManifestError.syntax(path, "kind is \(k), expected KubeProxyConfiguration")
        }
        return c
    }

    /// Parses a Go duration (`30s`, `1m0s`, `500ms`, `1h`) into seconds.
    public static func parseDuration(_ s: String) -> Double? { GoDuration.seconds(s) }
}

/// Go's duration syntax, as upstream's flags and configuration files take it (`30s`, `1m0s`,
/// `500ms`, `1h`).
public enum GoDuration {
    /// The duration in seconds; nil if it is not one.
    public static func seconds(_ s: String) -> Double? {
        var total = 0.0
        var num = ""
        var i = s.startIndex
        guard !s.isEmpty else { return nil }
        while i < s.endIndex {
            let c = s[i]
            if c.isNumber || c == "." {
                num.append(c)
                i = s.index(after: i)
                continue
            }
            var unit = ""
            while i < s.endIndex, !(s[i].isNumber || s[i] == ".") {
                unit.append(s[i])
                i = s.index(after: i)
            }
            guard let v = Double(num) else { return nil }
            let mult: Double
            switch unit {
            case "ns": mult = 1e-9
            case "us", "µs": mult = 1e-6
            case "ms": mult = 1e-3
            case "s": mult = 1
            case "m": mult = 60
            case "h": mult = 3600
            default: return nil
            }
            total += v * mult
            num = ""
        }
        if !num.isEmpty { return num == "0" ? 0 : nil }
        return total
    }
}
