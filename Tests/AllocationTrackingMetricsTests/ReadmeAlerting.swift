import AllocationTracking
import AllocationTrackingMetrics

/// The README's "Alerting before the OOM" snippet, compiled (ReadmeTests finds its lines here); not run: it
/// starts tracking with a 10 s history and publishes to the bootstrapped metrics backend.
func readmeAlertingBeforeTheOOM() throws {
    var configuration = AllocationTracker.Configuration()
    configuration.trend.interval = .seconds(10)             // a sample every 10 s; the last hour is kept (79 KiB)
    configuration.limits.predictedExhaustion = .seconds(600) // a report when the limit is 10 minutes away
    try AllocationTracker.start(configuration)
    let publisher = AllocationTrackingMetrics.startPublishing() // gauges and counters every 10 s

    let trend = try AllocationTracker.trend(over: .seconds(900))
    if let eta = trend.timeToContainerLimit { print("container limit in \(eta) at this rate") }
    for suspect in trend.suspects.prefix(3) { print(suspect) }
    publisher.stop()
}
