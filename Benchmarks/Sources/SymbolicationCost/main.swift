// Cost of symbolication on a large binary (this executable links SwiftNIO through AllocationTrackingHTTP), as a
// plain executable so that its figures are not mixed with ordo-one/benchmark's: cold and warm lookups of N distinct
// addresses spread over the executable's code, the per-call cost of the watchdog's former warm-up (256 new addresses
// once a second), and the resident memory the symbol data adds.
//
//     swift run -c release SymbolicationCost [N]

@_spi(Testing) import AllocationTracking
import AllocationTrackingHTTP

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

func seconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func cpuSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Resident set size in MiB, from /proc/self/statm.
func residentMiB() -> Double {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var size = 0, resident = 0
    withUnsafeMutablePointer(to: &size) { s in
        withUnsafeMutablePointer(to: &resident) { r in
            _ = withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
        }
    }
    return Double(resident * Int(sysconf(Int32(_SC_PAGESIZE)))) / 1048576
}

func format(_ value: Double, _ digits: Int = 1) -> String {
    var text = String(Int((value * pow(10, Double(digits))).rounded()))
    while text.count <= digits { text = "0" + text }
    if digits > 0 { text.insert(".", at: text.index(text.endIndex, offsetBy: -digits)) }
    return text
}

let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 10_000 : 10_000
_ = AllocationProfileServer.self  // keeps SwiftNIO's code in the binary

// The executable's code range, from a snapshot's images (the main executable is always the first).
try AllocationTracker.start()
let main = try AllocationTracker.takeSnapshot(symbolicate: false).images[0]
AllocationTracker.stop()
let span = main.end - main.start
print("executable: \(main.path), code \(format(Double(span) / 1048576)) MiB")
// `count` distinct addresses evenly spread over the code; a second, interleaved set for the warm-up calls.
let step = span / UInt(count + 1)
let addresses = (1...UInt(count)).map { main.start + $0 * step }
let others = addresses.map { $0 + step / 2 }

/// Times one batch: wall and CPU seconds, and the frames.
func measure(_ batch: [UInt], runtime: Bool = false) -> (wall: Double, cpu: Double, frames: [UInt: [Frame]]) {
    let t = seconds(), c = cpuSeconds()
    let frames = AllocationTracker._symbolicate(Set(batch), usingRuntimeModule: runtime)
    return (seconds() - t, cpuSeconds() - c, frames)
}

func describe(_ frames: [UInt: [Frame]]) -> String {
    let named = frames.values.filter { $0.last?.function != nil }.count
    let withLines = frames.values.filter { $0.last?.file != nil }.count
    let inlined = frames.values.reduce(0) { $0 + $1.filter(\.isInlined).count }
    return "named \(named), with file:line \(withLines), inlined frames \(inlined)"
}

print("\n## The toolchain's Runtime module (the former resolver; uncached, so each call is cold per address)")
let runtimeCount = min(count, CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 256 : 256)
var rss = residentMiB()
for (label, batch) in [("1 address", [others[count / 2]]), ("1 other address", [others[count / 3]]),
                       ("\(runtimeCount) addresses", Array(others.prefix(runtimeCount))),
                       ("the same \(runtimeCount) again", Array(others.prefix(runtimeCount)))] {
    let m = measure(batch, runtime: true)
    print("\(label): \(format(m.wall * 1000)) ms wall, \(format(m.cpu * 1000)) ms CPU"
          + " (\(format(m.wall * 1000 / Double(batch.count), 3)) ms per address); \(describe(m.frames))")
}
print("RSS: \(format(rss)) MiB before, \(format(residentMiB())) MiB after (+\(format(residentMiB() - rss)))")
let reference = AllocationTracker._symbolicate(Set(others.prefix(runtimeCount)), usingRuntimeModule: true)

print("\n## _Symbolicator (this library: one pass over the line table per batch, cached per address)")
rss = residentMiB()
var t0 = seconds(), c0 = cpuSeconds()
let one = AllocationTracker._symbolicate([addresses[count / 2]])
let firstWall = seconds() - t0, firstCPU = cpuSeconds() - c0
print("first lookup (1 address, cold image): \(format(firstWall * 1000)) ms wall, \(format(firstCPU * 1000)) ms CPU;"
      + " \(one.values.first?.last?.function ?? "?") at \(one.values.first?.last?.file ?? "?"):\(one.values.first?.last?.line ?? 0)")
t0 = seconds(); c0 = cpuSeconds()
let next = AllocationTracker._symbolicate([addresses[count / 3]])
print("second lookup (1 address, image seen): \(format((seconds() - t0) * 1000, 2)) ms wall, \(format((cpuSeconds() - c0) * 1000, 2)) ms CPU")
_ = next

t0 = seconds(); c0 = cpuSeconds()
let cold = AllocationTracker._symbolicate(Set(addresses))
let coldWall = seconds() - t0, coldCPU = cpuSeconds() - c0
let named = cold.values.filter { $0.last?.function != nil }.count
let withLines = cold.values.filter { $0.last?.file != nil }.count
let inlined = cold.values.reduce(0) { $0 + $1.filter(\.isInlined).count }
print("cold batch of \(count): \(format(coldWall * 1000)) ms wall, \(format(coldCPU * 1000)) ms CPU"
      + " (\(format(coldWall * 1e6 / Double(count), 2)) µs per address); named \(named), with file:line \(withLines), inlined frames \(inlined)")
t0 = seconds()
_ = AllocationTracker._symbolicate(Set(addresses))
print("warm batch of \(count): \(format((seconds() - t0) * 1000)) ms wall")
print("RSS: \(format(rss)) MiB before, \(format(residentMiB())) MiB after (+\(format(residentMiB() - rss)))")

// The watchdog's former warm-up: 256 new addresses per call.
var callTimes: [Double] = []
var index = 0
c0 = cpuSeconds()
while index < min(others.count, 256 * 20) {
    let batch = Set(others[index..<min(index + 256, others.count)])
    let t = seconds()
    _ = AllocationTracker._symbolicate(batch)
    callTimes.append(seconds() - t)
    index += 256
}
let warmCPU = cpuSeconds() - c0
callTimes.sort()
print("calls of 256 new addresses: \(callTimes.count), median \(format(callTimes[callTimes.count / 2] * 1000)) ms,"
      + " max \(format(callTimes.last! * 1000)) ms, CPU in all \(format(warmCPU * 1000)) ms")
print("RSS at the end: \(format(residentMiB())) MiB; symbol cache entries: \(AllocationTracker._symbolCacheCount)")

// Agreement with the Runtime module on the addresses both resolved (the physical frame: function and file:line).
let mine = AllocationTracker._symbolicate(Set(others.prefix(runtimeCount)))
var sameFunction = 0, sameLine = 0, runtimeInlined = 0
for (address, frames) in reference {
    guard let theirs = frames.last, let ours = mine[address]?.last else { continue }
    if theirs.mangledName == ours.mangledName || theirs.function == ours.function { sameFunction += 1 }
    let innermost = frames.first!
    if innermost.file == ours.file && innermost.line == ours.line { sameLine += 1 }
    if frames.count > 1 { runtimeInlined += 1 }
}
print("agreement with the Runtime module on \(reference.count) addresses: same function \(sameFunction),"
      + " same innermost file:line \(sameLine); addresses the Runtime module expanded into inlined frames: \(runtimeInlined)")
