#!/usr/bin/env bash
# Trust CPU cost in process: handshake, envelopes and their SQLite writes against raw P-256
# sign + verify measured in the same run (release build).
#
#   bench/trust/run.sh [ITERATIONS]      (default 500; bench/RESULTS.md quotes 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-500}
bench/lib/build.sh intercloud-bench
exec .build/release/intercloud-bench trust --iterations "$iterations"
