#!/usr/bin/env bash
# What a stranger's flood costs a broker, in one run against a private Prosody on loopback
# (intercloud-bench hostile, bench/Sources/intercloud-bench/HostileBenchmark.swift):
#   - victim CPU per refused hostile stanza (unsigned catalog query from a non-peer) against CPU per
#     answered XEP-0199 ping from the same stranger, alternating rounds;
#   - victim bytes written to disk (/proc/PID/io write_bytes) per 1000 refused, and SQLite + WAL growth;
#   - a trusted peer's signed catalog query p50 during the flood against idle.
# The victim is a real `intercloud serve` process; the stranger floods from a process of its own.
#
#   bench/hostile/run.sh [FLOOD_STANZAS [SAMPLES [ROUNDS]]] [-- EXTRA-INTERCLOUD-BENCH-HOSTILE-ARGS]
#   (defaults 20000 300 5; BENCH_PORT overrides the port 27522; BENCH_STDERR=FILE keeps intercloud-bench's stderr;
#   BENCH_SERVER_RATE=20kb/s shapes every account but the two brokers in Prosody (mod_limits), as an
#   operator shapes accounts that are not peers: the flood then comes at the server's rate for them)
set -euo pipefail
cd "$(dirname "$0")/../.."
numbers=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do numbers+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
flood=${numbers[0]:-20000}; samples=${numbers[1]:-300}; rounds=${numbers[2]:-5}
port=${BENCH_PORT:-27522}
bench/lib/build.sh intercloud-bench intercloud
if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
    echo "port $port is already in use (another run?); set BENCH_PORT" >&2
    exit 1
fi
work=$(mktemp -d)
cleanup() {
    # The victim (`intercloud serve`) outlives intercloud-bench only if intercloud-bench crashed: stop it by pid.
    if [ -s "$work/victim.pid" ]; then
        victim=$(cat "$work/victim.pid")
        if [ "$(cat "/proc/$victim/comm" 2>/dev/null)" = intercloud ]; then kill "$victim" 2>/dev/null || true; fi
    fi
    scripts/prosody.sh stop "$work/prosody" > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${BENCH_SERVER_RATE:-}" ]; then
    export PROSODY_C2S_RATE=$BENCH_SERVER_RATE PROSODY_UNLIMITED_JIDS="broker@cloud1.test broker@cloud2.test"
fi
scripts/prosody.sh start "$work/prosody" "$port" > /dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
scripts/prosody.sh register "$work/prosody" broker cloud2.test pw
scripts/prosody.sh register "$work/prosody" stranger cloud2.test pw
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; Prosody $(dpkg-query -W -f '${Version}' prosody 2>/dev/null || echo ?); server rate limit for non-brokers: ${BENCH_SERVER_RATE:-none}"
.build/release/intercloud-bench hostile --port "$port" --ca-file "$work/prosody/certs/ca.crt" \
    --jid-a broker@cloud1.test --pass-a pw --jid-b broker@cloud2.test --pass-b pw \
    --jid-stranger stranger@cloud2.test --pass-stranger pw \
    --victim-binary .build/release/intercloud --victim-pid-file "$work/victim.pid" \
    --server-pid "$(cat "$work/prosody/prosody.pid")" \
    --flood "$flood" --samples "$samples" --rounds "$rounds" "$@" 2>"${BENCH_STDERR:-/dev/null}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
