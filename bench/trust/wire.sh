#!/usr/bin/env bash
# Trust over the wire: two brokers with chains from different CAs through one private Prosody:
# handshake time, and a signed federation request (federation-ping; under a session, and with
# signatures only) against an unsigned request on the same deferred path, in the same run.
#
#   bench/trust/wire.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-1000}
exec bench/lib/two-brokers.sh 27422 trust wire --iterations "$iterations"
