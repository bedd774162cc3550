#!/usr/bin/env bash
# Trust over the wire: two brokers with chains from different CAs through one private Prosody:
# handshake time, and a signed federation request (federation-ping, signed answer) against an
# unsigned request on the same deferred path, in the same run.
#
#   bench/trust/wire.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-1000}
swift build -c release --product bench-xmpp > /dev/null 2>&1 || swift build -c release --product bench-xmpp
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=${BENCH_PORT:-27422}
scripts/prosody.sh start "$work/prosody" "$port" > /dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
scripts/prosody.sh register "$work/prosody" broker cloud2.test pw
.build/release/bench-xmpp --port "$port" --jid-a broker@cloud1.test --pass-a pw --jid-b broker@cloud2.test --pass-b pw \
    --ca-file "$work/prosody/certs/ca.crt" --trust-iterations "$iterations" 2>/dev/null
