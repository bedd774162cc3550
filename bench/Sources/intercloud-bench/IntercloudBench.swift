// intercloud-bench: every benchmark of the project, one subcommand each, built in release
// (`swift build -c release --product intercloud-bench`) and driven by the scripts in bench/*/.
// Each subcommand measures against a baseline taken in the same run, so its ratios compare
// across machines; timing, percentiles and the report are BenchmarkHarness's.
import ArgumentParser

@main
struct IntercloudBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "intercloud-bench",
        abstract: "Intercloud benchmarks (see bench/RESULTS.md for commands and numbers).",
        subcommands: [
            XMPPBenchmark.self, XMPPLargeStanzaBenchmark.self, TrustBenchmark.self, NegotiationBenchmark.self, MigrationBenchmark.self,
            HostileBenchmark.self, HostileStranger.self, TransferBenchmark.self, ProvidersBenchmark.self, OpenStackBenchmark.self,
            StorageBenchmark.self,
        ])
}
