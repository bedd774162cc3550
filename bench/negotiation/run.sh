#!/usr/bin/env bash
# Negotiation over the wire: two brokers (own CAs, trusted) through one private Prosody; full
# negotiations request → FINALIZED (direct and with a counter-offer) against a signed request
# round trip in the same run, and the policy evaluation cost per request.
#
#   bench/negotiation/run.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-100}
exec bench/lib/two-brokers.sh 27432 negotiation --iterations "$iterations"
