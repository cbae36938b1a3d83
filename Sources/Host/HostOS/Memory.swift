import CHost

/// Hands memory the process no longer uses back to the kernel, so its resident size is what it
/// holds rather than what it once touched.
public enum ResidentMemory {
    /// The C heap keeps pages that were freed. After a phase that allocates a lot and drops
    /// it (loading 10,000 manifests, writing a full ruleset), this returns those pages to the
    /// kernel, as Go's scavenger does.
    public static func releaseFreeHeapPages() {
        _ = ch_heap_trim()
    }

    /// Start-up runs code that is not run again (argument parsing, opening the store, building
    /// the server), and the kernel maps code in 64 KiB windows around each page touched, so a
    /// process that has started holds megabytes of code pages it does not use while it serves.
    /// This drops the process's mappings of clean file-backed pages (code and read-only data of
    /// the binary and its libraries; never a page with private contents): they stay in the page
    /// cache and a later touch maps them again (a minor fault). Returns the KiB unmapped, or nil
    /// if `/proc/self/smaps` could not be read.
    @discardableResult
    public static func unmapCleanFilePages() -> Int? {
        let kib = ch_unmap_clean_file_pages()
        return kib < 0 ? nil : Int(kib)
    }
}
