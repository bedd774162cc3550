#!/usr/bin/env bash
# Shared by the wire benchmarks: builds intercloud-bench in release, starts a private Prosody with
# two broker accounts (broker@cloud1.test, broker@cloud2.test) and runs the given intercloud-bench
# subcommand between them; Prosody is stopped and its directory removed on exit.
#
#   bench/lib/two-brokers.sh PORT SUBCOMMAND [ARGS...]      (BENCH_PORT overrides PORT)
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${BENCH_PORT:-$1}
shift
bench/lib/build.sh intercloud-bench
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
scripts/prosody.sh start "$work/prosody" "$port" > /dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
scripts/prosody.sh register "$work/prosody" broker cloud2.test pw
.build/release/intercloud-bench "$@" --port "$port" --jid-a broker@cloud1.test --pass-a pw --jid-b broker@cloud2.test --pass-b pw \
    --ca-file "$work/prosody/certs/ca.crt" 2>"${BENCH_STDERR:-/dev/null}"
