@testable import AllocationTracking
import Testing

/// Names as reports print them (the runtime's simplified demangling), where it says too little.
@Suite struct Demangling {
    /// A closure in top-level code (a service's main.swift routes) is named after its module, as the full
    /// demangling names it, instead of ending in an empty context ("closure #5 in ").
    @Test func topLevelClosuresNameTheirModule() {
        #expect(_demangle("$s12ServiceBenchyycfU3_") == "closure #5 in ServiceBench")
        #expect(_demangle("$s12ServiceBenchyycfU3_yycfU_") == "closure #1 in closure #5 in ServiceBench")
        // Everything else as the runtime prints it.
        #expect(_demangle("$s12ServiceBench5StoreV6appendyySiF") == "Store.append(_:)")
        #expect(_demangle("malloc") == nil)
        #expect(_moduleName(ofMangled: "$sSS5countSivg") == nil)  // the standard library: a substitution
        #expect(_moduleName(ofMangled: "$s99") == nil)  // truncated
    }
}
