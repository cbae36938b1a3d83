import Testing
import KubeAPI

@Suite("RFC 3339 formatting")
struct RFC3339FormatTests {
    @Test func formatsAsGoDoes() {
        #expect(RFC3339.format(0) == "1970-01-01T00:00:00Z")
        #expect(RFC3339.format(1_700_000_000) == "2023-11-14T22:13:20Z")
        #expect(RFC3339.format(951_782_400) == "2000-02-29T00:00:00Z")          // a leap day
        #expect(RFC3339.format(1_700_000_000.25, microseconds: true) == "2023-11-14T22:13:20.250000Z")
        #expect(RFC3339.format(-1) == "1969-12-31T23:59:59Z")
        // Round trips through the reader.
        for t in [0.0, 1_234_567_890, 4_102_444_800, 1_700_000_000.123456] {
            #expect(abs((RFC3339.seconds(RFC3339.format(t, microseconds: true)) ?? -1) - t) < 1e-6)
        }
    }

    /// Go's RFC3339Nano: the fraction's trailing zeros dropped, none for a whole second.
    @Test func formatsNanoAsGoDoes() {
        #expect(RFC3339.formatNano(1_700_000_000) == "2023-11-14T22:13:20Z")
        #expect(RFC3339.formatNano(1_700_000_000.25) == "2023-11-14T22:13:20.25Z")
        #expect(RFC3339.formatNano(0.000_000_5) == "1970-01-01T00:00:00.0000005Z")
        #expect(abs((RFC3339.seconds(RFC3339.formatNano(1_700_000_000.123456)) ?? -1) - 1_700_000_000.123456) < 1e-6)
    }
}
