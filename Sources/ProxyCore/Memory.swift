import CUserspace

/// The C heap keeps pages that were freed. After a phase that allocates a lot and drops
/// it (loading 10,000 manifests, writing a full ruleset), this hands those pages back to
/// the kernel, as Go's scavenger does, so the proxy's resident size is what it holds.
public enum HeapTrim {
    public static func releaseFreePages() {
        _ = cus_heap_trim()
    }
}
