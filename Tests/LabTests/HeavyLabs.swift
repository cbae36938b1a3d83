import Foundation

/// The tests that bring up a whole netlab on containerd (nodes with containerd and a kubelet,
/// a control plane, the lab cloud) each keep two cores busy for a minute or more; run side by
/// side with each other and the rest of the suite, they starve the timing-sensitive tests. They
/// take turns here, one lab at a time.
actor HeavyLabs {
    static let shared = HeavyLabs()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else { busy = true; return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }

    /// `body`, while no other heavy lab runs.
    static func oneAtATime(_ body: () async -> Void) async {
        await shared.acquire()
        await body()
        await shared.release()
    }
}
