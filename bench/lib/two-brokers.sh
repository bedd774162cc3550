#!/usr/bin/env bash
# Shared by the wire benchmarks: builds bench-xmpp in release, starts a private Prosody with two
# broker accounts (broker@cloud1.test, broker@cloud2.test) and runs bench-xmpp between them with
# the mode arguments given; Prosody is stopped and its directory removed on exit.
#
#   bench/lib/two-brokers.sh PORT BENCH-XMPP-ARGS...      (BENCH_PORT overrides PORT)
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${BENCH_PORT:-$1}
shift
swift build -c release --product bench-xmpp > /dev/null 2>&1 || swift build -c release --product bench-xmpp
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
scripts/prosody.sh start "$work/prosody" "$port" > /dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
scripts/prosody.sh register "$work/prosody" broker cloud2.test pw
.build/release/bench-xmpp --port "$port" --jid-a broker@cloud1.test --pass-a pw --jid-b broker@cloud2.test --pass-b pw \
    --ca-file "$work/prosody/certs/ca.crt" "$@" 2>"${BENCH_STDERR:-/dev/null}"
