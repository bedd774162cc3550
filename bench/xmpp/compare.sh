#!/usr/bin/env bash
# Alternates the raw libstrophe pair with two or more builds of `intercloud-bench xmpp` through one
# private Prosody, round by round, so machine noise hits all of them alike; prints per-build
# medians and their ratios to the raw pair. For before/after comparisons of the XMPP hot path:
# build each version, copy its .build/release/intercloud-bench somewhere, pass the copies.
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
run() {  # NAME ROUND COMMAND...
    local name=$1 round=$2; shift 2
    "$@" > "$work/out.txt" 2>"$work/err.txt" || { echo "$name failed:"; cat "$work/err.txt"; return 1; }
    sed "s/^/$name $round /" "$work/out.txt" >> "$results"
}
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds" >&2
    run raw-libstrophe "$round" "$work/strophe_pair" 127.0.0.1 "$port" "$A/raw" pw "$B/raw" pw "$sequential" "$pipelined" "$window"
    for build in "${builds[@]}"; do
        run "${build%%=*}" "$round" "${build#*=}" xmpp --port "$port" --jid-a "$A" --pass-a pw --jid-b "$B" --pass-b pw \
            --sequential "$sequential" --pipelined "$pipelined" --window "$window" ${extra[@]+"${extra[@]}"}
    done
done
python3 - "$results" <<'PY'
import statistics, sys
from collections import defaultdict
seq, rps = defaultdict(dict), defaultdict(dict)
for line in open(sys.argv[1]):
    name, rnd, key, *values = line.split()
    if key == "seq_us": seq[name][rnd] = statistics.median(float(v) for v in values)
    elif key == "pipelined_rps": rps[name][rnd] = float(values[0])
base = "raw-libstrophe"
print("| build | p50 µs per round | p50 median | × raw (median of per-round ratios) | req/s per round | req/s median | × raw |")
print("|---|---|---|---|---|---|---|")
for name in seq:
    rounds = sorted(seq[name])
    p50s = [seq[name][r] for r in rounds]; rs = [rps[name][r] for r in rounds]
    p50_ratio = statistics.median(seq[name][r] / seq[base][r] for r in rounds)
    rps_ratio = statistics.median(rps[name][r] / rps[base][r] for r in rounds)
    print(f"| {name} | {' / '.join(f'{v:.0f}' for v in p50s)} | {statistics.median(p50s):.0f} | {p50_ratio:.2f}× "
          f"| {' / '.join(f'{v:.0f}' for v in rs)} | {statistics.median(rs):.0f} | {rps_ratio:.2f}× |")
PY
