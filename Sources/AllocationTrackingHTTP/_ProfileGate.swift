import Dispatch
import Synchronization

/// One profile built at a time: taking a snapshot pauses recording in every thread for the copy and symbolicates
/// every new address, and the encoded profile is as large as the snapshot, so two scrapers at once would cost the
/// process twice for the same answer. Requests wait in arrival order, each for at most a given time; and the
/// requests in flight (waiting, building, or inside a delta's interval) are counted, so that no more than a bound
/// of them hold snapshots or wait at once.
final class _ProfileGate: Sendable {
    private enum Phase {
        /// Created, not yet queued.
        case starting
        /// Gave up (timed out or cancelled) before it was queued.
        case abandoned
        case waiting(CheckedContinuation<Bool, Never>)
    }

    private struct State {
        var pending = 0
        var busy = false
        var nextID: UInt64 = 0
        var phases: [UInt64: Phase] = [:]
        /// Ids in arrival order; those no longer in `phases` are skipped.
        var queue: [UInt64] = []
    }

    private let state = Mutex(State())
    let maximumPending: Int

    init(maximumPending: Int) {
        self.maximumPending = maximumPending
    }

    /// Counts a request in; false when `maximumPending` already are (then no `leave()`).
    func enter() -> Bool {
        state.withLock { state in
            guard state.pending < maximumPending else { return false }
            state.pending += 1
            return true
        }
    }

    /// Counts a request out, after a successful `enter()`.
    func leave() {
        state.withLock { $0.pending -= 1 }
    }

    /// Where profiles are built: a snapshot blocks its thread while it symbolicates new addresses (seconds, the
    /// first time a process is profiled), which must not hold one of Swift concurrency's few threads.
    private let builder = DispatchQueue(label: "AllocationTrackingHTTP.profile-builder")

    /// Runs `body` on the builder thread while no other request's runs, after waiting at most `timeout` for it.
    ///
    /// - Throws: `_GateError` after `timeout`; `CancellationError` when the task is cancelled meanwhile; what
    ///   `body` throws.
    func exclusively<T: Sendable>(within timeout: Duration, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try Task.checkCancellation()
        guard await acquire(within: timeout) else {
            try Task.checkCancellation()
            throw _GateError(message: "waited \(timeout) for another profile being built: try again")
        }
        defer { release() }
        return try await withCheckedThrowingContinuation { continuation in
            builder.async { continuation.resume(with: Result { try body() }) }
        }
    }

    private func acquire(within timeout: Duration) async -> Bool {
        let id = state.withLock { state in
            state.nextID += 1
            state.phases[state.nextID] = .starting
            return state.nextID
        }
        let timer = Task { [self] in
            do { try await Task.sleep(for: timeout) } catch { return }
            giveUp(id)
        }
        defer { timer.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let outcome: Bool? = state.withLock { state in
                    if case .abandoned = state.phases[id] {
                        state.phases[id] = nil
                        return false
                    }
                    if !state.busy {
                        state.busy = true
                        state.phases[id] = nil
                        return true
                    }
                    state.phases[id] = .waiting(continuation)
                    state.queue.append(id)
                    return nil
                }
                if let outcome { continuation.resume(returning: outcome) }
            }
        } onCancel: {
            giveUp(id)
        }
    }

    private func giveUp(_ id: UInt64) {
        let continuation: CheckedContinuation<Bool, Never>? = state.withLock { state in
            switch state.phases[id] {
            case .starting:
                state.phases[id] = .abandoned
                return nil
            case .waiting(let continuation):
                state.phases[id] = nil
                return continuation
            case .abandoned, nil:
                return nil
            }
        }
        continuation?.resume(returning: false)
    }

    /// Hands the gate to the longest waiting request, or opens it.
    private func release() {
        let next: CheckedContinuation<Bool, Never>? = state.withLock { state in
            while !state.queue.isEmpty {
                let id = state.queue.removeFirst()
                if case .waiting(let continuation) = state.phases[id] {
                    state.phases[id] = nil
                    return continuation
                }
            }
            state.busy = false
            return nil
        }
        next?.resume(returning: true)
    }
}

/// A request waited too long for the profile being built.
struct _GateError: Error {
    var message: String
}
