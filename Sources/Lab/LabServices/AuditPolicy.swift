/// The audit policy of netlab's API servers, and of the trace-cost benchmark that measures what it
/// costs: every write at Metadata level (what `netlab trace` reads), reads, Leases and Events not
/// at all.
public enum LabAuditPolicy {
    public static let metadataWrites = """
        apiVersion: audit.k8s.io/v1
        kind: Policy
        omitStages: [RequestReceived]
        rules:
        - level: None
          verbs: [get, list, watch]
        - level: None
          resources:
          - group: coordination.k8s.io
            resources: [leases]
        - level: None
          resources:
          - group: ""
            resources: [events]
          - group: events.k8s.io
            resources: [events]
        - level: Metadata

        """
}
