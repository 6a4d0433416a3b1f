import AllocationTracking
import Foundation
import TrackerTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `alloc-track run` on unmodified programs: each keeps 64 blocks of 64 KiB from one named function until it
/// exits, and the snapshot's top site by function must name it.
@Suite struct RunCommand {
    static let cProgram = """
        #include <stdio.h>
        #include <stdlib.h>
        __attribute__((noinline)) void **leak_buffers_in_c(int n) {
            void **kept = malloc(n * sizeof(void *));
            for (int i = 0; i < n; i++) kept[i] = malloc(65536);
            return kept;
        }
        int main(void) {
            void **volatile kept = leak_buffers_in_c(64);
            printf("kept %p\\n", (void *)kept);
            return 3;
        }
        """

    static let cxxProgram = """
        #include <cstdio>
        #include <vector>
        __attribute__((noinline)) std::vector<char *> retain_blocks_in_cpp(int n) {
            std::vector<char *> kept;
            for (int i = 0; i < n; i++) kept.push_back(new char[65536]);
            return kept;
        }
        int main() {
            auto kept = retain_blocks_in_cpp(64);
            std::printf("kept %zu\\n", kept.size());
            return 0;
        }
        """

    /// The snapshot's sites by function, largest first.
    func topFunctions(_ snapshotPath: String) throws -> [(function: String, size: Int)] {
        let snapshot = try Snapshot(contentsOf: URL(fileURLWithPath: snapshotPath))
        return try snapshot.statistics(groupedBy: .function).map { ($0.traceback.frames.first?.function ?? "?", $0.size) }
    }

    @Test func cProgramStatusPassesThroughAndTopSiteIsTheAllocatingFunction() throws {
        let directory = try temporaryDirectory("run-c")
        let program = try compile(Self.cProgram, language: "c", in: directory, name: "leaky")
        let result = try runTool(["run", "-o", "heap.json", "--", program.path], in: directory)
        #expect(result.status == 3, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("kept 0x"))
        #expect(result.stderr == "alloc-track: snapshot written to heap.json\n")
        let top = try topFunctions(directory.appendingPathComponent("heap.json").path)
        #expect(top.first?.function == "leak_buffers_in_c", "\(top.prefix(3))")
        #expect(top.first?.size == 64 * 65536 + 64 * 8)
        var info = stat()
        #expect(stat(directory.appendingPathComponent("heap.json").path, &info) == 0 && info.st_mode & 0o777 == 0o600)

        // top on the written file names it too, through the command.
        let text = try runTool(["top", "heap.json", "--by", "function", "--limit", "1"], in: directory)
        #expect(text.stdout.contains("#1: leak_buffers_in_c"), "\(text.stdout)")
    }

    @Test func cxxProgram() throws {
        let directory = try temporaryDirectory("run-cxx")
        let program = try compile(Self.cxxProgram, language: "c++", in: directory, name: "leaky")
        let result = try runTool(["run", "--unwinder", "libunwind", "-o", "heap.json", "--", program.path], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let top = try topFunctions(directory.appendingPathComponent("heap.json").path)
        #expect(top.first.map { $0.function.contains("retain_blocks_in_cpp") } == true, "\(top.prefix(3))")
        #expect((top.first?.size ?? 0) >= 64 * 65536)
    }

    @Test func swiftProgramThatDoesNotLinkTheLibrary() throws {
        let directory = try temporaryDirectory("run-swift")
        let program = productURL("UntrackedSwiftProgram")
        let result = try runTool(["run", "-o", "heap.json", "--", program.path], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "kept 64 blocks\n")
        let top = try topFunctions(directory.appendingPathComponent("heap.json").path)
        // The allocation is in the `map` closure of that function.
        #expect(top.first?.function == "closure #1 in retainBuffersForTheCache(_:)", "\(top.prefix(3))")
        #expect((top.first?.size ?? 0) >= 64 * 65536)
    }

    /// CPython allocates through its own functions (PyMem_*, _PyObject_*, the bytearray type's resize) with no
    /// Python-level frames in a native stack: the assertion is that the interpreter's bytearray allocation holds
    /// the 32 MiB, named by a function of the interpreter's (`PyByteArray…`, `bytearray…` or `_PyMem…`/`PyMem…`).
    /// The snapshot is taken at exit, after the interpreter's finalisation freed what it could: the list is
    /// leaked (one reference too many), as a leak is what survives to the end.
    @Test func pythonInterpreter() throws {
        guard let python = try realPython() else { Issue.record("no python3"); return }
        let directory = try temporaryDirectory("run-python")
        let result = try runTool(["run", "-o", "heap.json", "--", python, "-c",
                                  "import ctypes\nkept = [bytearray(1 << 20) for _ in range(32)]\nctypes.pythonapi.Py_IncRef(ctypes.py_object(kept))\nprint(len(kept))"],
                                 in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "32\n")
        let top = try topFunctions(directory.appendingPathComponent("heap.json").path)
        let first = top.first?.function ?? ""
        #expect(["ByteArray", "bytearray", "PyMem", "PyObject"].contains { first.contains($0) }, "\(top.prefix(3))")
        #expect((top.first?.size ?? 0) >= 32 << 20, "\(top.prefix(3))")
    }

    @Test func aProgramThatLinksTheLibraryIsTrackedOnce() throws {
        let directory = try temporaryDirectory("run-linked")
        // The `env` scenario prints whether ALLOCATION_TRACKING started its own copy.
        let result = try runTool(["run", "-o", "heap.json", "--", productURL("TrackerScenarios").path, "env"],
                                 in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("tracing=true"), "\(result.stdout)")
        #expect(result.stderr.contains("the preloaded tracker stands aside"), "\(result.stderr)")
        // One snapshot, by the program's own copy; a second copy would have found the name taken.
        #expect(!result.stderr.contains("snapshot_at_exit: cannot write"), "\(result.stderr)")
        #expect(result.stderr.contains("alloc-track: snapshot written to heap.json"), "\(result.stderr)")
    }

    /// The program runs a child that says whether it inherited the tracker: by default it does not (no
    /// ALLOCATION_TRACKING, no preload library); with --follow-children it does, without the snapshot path.
    @Test func childrenAreTrackedOnlyWhenAsked() throws {
        let directory = try temporaryDirectory("run-children")
        let child = "sh -c 'echo \"env=${ALLOCATION_TRACKING:-none} preload=${LD_PRELOAD:-none}\"'"
        let parent = try compile("""
            #include <stdlib.h>
            int main(void) { return system("\(child.replacingOccurrences(of: "\"", with: "\\\""))") == 0 ? 0 : 1; }
            """, language: "c", in: directory, name: "parent")
        let plain = try runTool(["run", "-o", "plain.json", "--", parent.path], in: directory)
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stdout == "env=none preload=none\n")

        let followed = try runTool(["run", "--follow-children", "-o", "followed.json", "--", parent.path], in: directory)
        #expect(followed.status == 0, "\(followed.stderr)")
        #expect(followed.stdout.contains("env=announce=off preload=/"), "\(followed.stdout)")
        #expect(followed.stdout.contains("libAllocationTrackingPreload.so"))
        #expect(!followed.stdout.contains("snapshot_at_exit"))
        #expect(followed.stderr == "alloc-track: snapshot written to followed.json\n", "\(followed.stderr)")
    }

    @Test func missingOrUnloadablePreloadLibraryIsOneClearLine() throws {
        let directory = try temporaryDirectory("run-missing")
        let missing = try runTool(["run", "--", "true"], in: directory,
                                  environment: ["ALLOC_TRACK_PRELOAD": directory.appendingPathComponent("nope.so").path])
        #expect(missing.status == 1)
        #expect(missing.stderr.hasPrefix("alloc-track: the preload library \(directory.path)/nope.so is missing"))
        #expect(missing.stderr.split(separator: "\n").count == 1)

        let bogus = directory.appendingPathComponent("bogus.so")
        try Data("not an ELF file".utf8).write(to: bogus)
        let unloadable = try runTool(["run", "--", "true"], in: directory, environment: ["ALLOC_TRACK_PRELOAD": bogus.path])
        #expect(unloadable.status == 1)
        #expect(unloadable.stderr.hasPrefix("alloc-track: the preload library \(bogus.path) cannot be loaded: "))
        #expect(unloadable.stderr.split(separator: "\n").count == 1)
    }

    @Test func badOptionsAndMissingProgramsAreOneLine() throws {
        let directory = try temporaryDirectory("run-bad")
        let bad = try runTool(["run", "--soft-limit", "lots", "--", "true"], in: directory)
        #expect(bad.status == 1)
        #expect(bad.stderr.hasPrefix("alloc-track: soft_limit must be a size such as 512MiB"), "\(bad.stderr)")
        let notFound = try runTool(["run", "-o", "x.json", "--", "no-such-program-here"], in: directory)
        #expect(notFound.status == 127)
        #expect(notFound.stderr == "alloc-track: cannot run no-such-program-here: No such file or directory\n")
    }

    @Test func exitStatusAndDeathBySignal() throws {
        let directory = try temporaryDirectory("run-status")
        let exited = try runTool(["run", "-o", "a.json", "--", "sh", "-c", "exit 42"], in: directory)
        #expect(exited.status == 42)
        let killed = try runTool(["run", "-o", "b.json", "--", "sh", "-c", "kill -SEGV $$"], in: directory)
        #expect(killed.status == 128 + SIGSEGV, "\(killed.stderr)")
        #expect(killed.stderr.contains("killed by signal \(SIGSEGV): no snapshot"))
    }

    /// Each forwarded signal reaches the child: a shell that traps it exits with a status naming it.
    @Test func signalsAreForwarded() throws {
        let directory = try temporaryDirectory("run-signals")
        // alloc-track is started by the test from a libdispatch worker thread, whose mask blocks these signals and
        // is inherited across exec: forwarding must work from such a start too (it hung before alloc-track
        // unblocked them for itself and its child).
        // Four rounds: the shell (dash) lost a trapped signal when one of the preloaded tracker's threads took it
        // while its main thread was vforked — about one run in twenty, so one round rarely showed it.
        rounds: for round in 1...4 {
            for (name, number) in [("INT", SIGINT), ("TERM", SIGTERM), ("HUP", SIGHUP), ("USR1", SIGUSR1), ("USR2", SIGUSR2)] {
                let ready = directory.appendingPathComponent("ready-\(name)-\(round)").path
                let script = "trap 'exit \(number)' \(name); touch \(ready); while :; do sleep 0.05; done"
                let result = try runTool(["run", "-o", "\(name)-\(round).json", "--", "sh", "-c", script], in: directory,
                                         timeout: 90) { pid in
                    let deadline = Date().addingTimeInterval(60)
                    while access(ready, F_OK) != 0 && Date() < deadline { usleep(20_000) }
                    kill(pid, number)
                }
                #expect(result.status == number, "round \(round), \(name): trap ready: \(access(ready, F_OK) == 0); \(result.stderr)")
                if result.status != number { break rounds }
            }
        }
    }
}
