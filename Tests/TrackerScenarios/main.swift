// Scenarios run in a process of their own; AllocationTrackingTests spawns this executable as
// `TrackerScenarios <name> [arguments…]` and asserts on its output and exit status. Each prints `key=value` lines.
// One file per scenario in Scenarios/; what they share is in Support.swift.

/// Every scenario, by the name the tests pass.
let scenarios: [any Scenario.Type] = [
    EnvScenario.self,
    ForkScenario.self,
    ChainScenario.self,
    AccountingScenario.self,
    PeakScenario.self,
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
scenario.run(arguments)
