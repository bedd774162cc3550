#!/usr/bin/env bash
# Alternates the raw libstrophe pair with two or more builds of `intercloud-bench xmpp` through one
# private Prosody, round by round, so machine noise hits all of them alike; prints per-build
# medians and their ratios to the raw pair. For before/after comparisons of the XMPP hot path:
# build each version, copy its .build/release/intercloud-bench somewhere, pass the copies.
# The raw pair runs twice: `raw-libstrophe` exchanges the brokers' own stanzas (status request,
# announcement answer: the ratios' baseline, so the server's work is the same on both sides) and
# `raw-libstrophe-ping` the smaller XEP-0199 ping (the baseline before 2026-12-07), for reference.
# The CPU columns are the server's and the client process's CPU time over a whole run (start-up
# included) divided by its requests: they show where a difference in throughput comes from.
#
#   bench/xmpp/compare.sh ROUNDS SEQUENTIAL PIPELINED NAME=BINARY [NAME=BINARY...] [-- EXTRA ARGS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=$1; sequential=$2; pipelined=$3; shift 3; window=64
builds=(); extra=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
    builds+=("$1"); shift
done
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cc -O2 -o "$work/strophe_pair" bench/xmpp/strophe_pair.c $(pkg-config --cflags --libs libstrophe)
port=${BENCH_PORT:-27232}
scripts/prosody.sh start "$work/prosody" "$port" >/dev/null
for user in a b; do for n in 1 2; do scripts/prosody.sh register "$work/prosody" "bench$user$n" "cloud$n.test" pw; done; done
A=bencha1@cloud1.test; B=benchb2@cloud2.test
results="$work/results.txt"; : > "$results"
server_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$work/prosody/prosody.pid")/stat"; }
ticks_per_second=$(getconf CLK_TCK)
run() {  # NAME ROUND COMMAND...
    local name=$1 round=$2; shift 2
    local before after TIMEFORMAT='%U %S'
    before=$(server_ticks)
    { time "$@" > "$work/out.txt" 2>"$work/err.txt"; } 2> "$work/time.txt" || { echo "$name failed:"; cat "$work/err.txt"; return 1; }
    after=$(server_ticks)
    sed "s/^/$name $round /" "$work/out.txt" >> "$results"
    # CPU seconds of the server and of the client process over the whole run (start-up included).
    echo "$name $round cpu $(( after - before )) $ticks_per_second $(cat "$work/time.txt")" >> "$results"
}
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds" >&2
    run raw-libstrophe "$round" "$work/strophe_pair" 127.0.0.1 "$port" "$A/raw" pw "$B/raw" pw "$sequential" "$pipelined" "$window" status
    run raw-libstrophe-ping "$round" "$work/strophe_pair" 127.0.0.1 "$port" "$A/raw" pw "$B/raw" pw "$sequential" "$pipelined" "$window" ping
    for build in "${builds[@]}"; do
        run "${build%%=*}" "$round" "${build#*=}" xmpp --port "$port" --jid-a "$A" --pass-a pw --jid-b "$B" --pass-b pw \
            --sequential "$sequential" --pipelined "$pipelined" --window "$window" ${extra[@]+"${extra[@]}"}
    done
done
python3 - "$results" "$sequential" "$pipelined" <<'PY'
import statistics, sys
from collections import defaultdict
seq, rps, cpu = defaultdict(dict), defaultdict(dict), defaultdict(dict)
for line in open(sys.argv[1]):
    name, rnd, key, *values = line.split()
    if key == "seq_us": seq[name][rnd] = statistics.median(float(v) for v in values)
    elif key == "pipelined_rps": rps[name][rnd] = float(values[0])
    elif key == "cpu": cpu[name][rnd] = (int(values[0]) / int(values[1]), float(values[2]) + float(values[3]))
requests = int(sys.argv[2]) + int(sys.argv[3])
base = "raw-libstrophe"
print("| build | p50 µs per round | p50 median | × raw (median of per-round ratios) | req/s per round | req/s median | × raw "
      "| server CPU µs per request | client CPU µs per request |")
print("|---|---|---|---|---|---|---|---|---|")
for name in seq:
    rounds = sorted(seq[name])
    p50s = [seq[name][r] for r in rounds]; rs = [rps[name][r] for r in rounds]
    p50_ratio = statistics.median(seq[name][r] / seq[base][r] for r in rounds)
    rps_ratio = statistics.median(rps[name][r] / rps[base][r] for r in rounds)
    print(f"| {name} | {' / '.join(f'{v:.0f}' for v in p50s)} | {statistics.median(p50s):.0f} | {p50_ratio:.2f}× "
          f"| {' / '.join(f'{v:.0f}' for v in rs)} | {statistics.median(rs):.0f} | {rps_ratio:.2f}× "
          f"| {statistics.median(cpu[name][r][0] for r in rounds) / requests * 1e6:.0f} "
          f"| {statistics.median(cpu[name][r][1] for r in rounds) / requests * 1e6:.0f} |")
PY
