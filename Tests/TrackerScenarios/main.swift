// Scenarios run in a process of their own; AllocationTrackingTests spawns this executable as
// `TrackerScenarios <name> [arguments…]` and asserts on its output and exit status. Each prints `key=value` lines.
// One file per scenario in Scenarios/; what they share is in Support.swift.

@_spi(Testing) import AllocationTracking

/// Every scenario, by the name the tests pass.
let scenarios: [any Scenario.Type] = [
    EnvScenario.self,
    ForkScenario.self,
    ChainScenario.self,
    AccountingScenario.self,
    PeakScenario.self,
    ThreadDeltasScenario.self,
    TrackerHeapScenario.self,
    SoftLimitScenario.self,
    ContainerFakeScenario.self,
    ContainerGrowScenario.self,
    SignalScenario.self,
    FailurePauseScenario.self,
    WarmUpScenario.self,
    DlcloseScenario.self,
    ReportSymlinkScenario.self,
    AtExitScenario.self,
    ReportUnwritableScenario.self,
    AvailabilityScenario.self,
    LibunwindScenario.self,
    OOMScenario.self,
    OOMThreadsScenario.self,
    ClearOutOfMemoryScenario.self,
    OOMConfiguredScenario.self,
    PauseAfterFailureScenario.self,
    TrendLeakScenario.self,
    PredictGrowScenario.self,
    ImpossibleSizeScenario.self,
    ReportKilledScenario.self,
    ReportDiskFullScenario.self,
    SignalFreesScenario.self,
    SamplingAccuracyScenario.self,
    SamplingLifecycleScenario.self,
    SignalLatencyScenario.self,
    SignalMergeScenario.self,
    ReportUnnamedScenario.self,
]

let arguments = CommandLine.arguments.dropFirst()
guard let scenario = scenarios.first(where: { $0.name == arguments.first }) else {
    fail("unknown scenario \(arguments.first.map { "'\($0)'" } ?? "(none given)"); "
         + "known: \(scenarios.map { $0.name }.joined(separator: ", "))")
}
// Scenarios check what reports say, not how fast they come (signal-latency and signal-merge do, with the default
// budget): a report's names get 30 s here rather than 0.5 s, since a cold lookup in this large debug executable can
// outlast the default on a loaded machine, and a report would then print image+offset where the test reads a name.
AllocationTracker._reportNameBudget = .seconds(30)
scenario.run(arguments)
