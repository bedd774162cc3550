// Prints the trust benchmark table (Markdown) for bench/RESULTS.md.
// Usage: trust-bench [iterations]   (default 500)
import Foundation
import Trust

let iterations = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 500
print("Trust benchmark, \(iterations) iterations per figure, \(ProcessInfo.processInfo.activeProcessorCount) cores")
print(try await TrustBenchmark.run(iterations: iterations))
