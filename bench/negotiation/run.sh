#!/usr/bin/env bash
# Negotiation over the wire: two brokers (own CAs, trusted) through one private Prosody; full
# negotiations request → FINALIZED (direct and with a counter-offer) against a signed request
# round trip in the same run, and the policy evaluation cost per request.
#
#   bench/negotiation/run.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-100}
swift build -c release --product bench-xmpp > /dev/null 2>&1 || swift build -c release --product bench-xmpp
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=${BENCH_PORT:-27432}
scripts/prosody.sh start "$work/prosody" "$port" > /dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
scripts/prosody.sh register "$work/prosody" broker cloud2.test pw
.build/release/bench-xmpp --port "$port" --jid-a broker@cloud1.test --pass-a pw --jid-b broker@cloud2.test --pass-b pw \
    --ca-file "$work/prosody/certs/ca.crt" --negotiation-iterations "$iterations" 2>/dev/null
