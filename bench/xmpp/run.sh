#!/usr/bin/env bash
# Broker-to-broker request/response through one private Prosody, side by side in one run with a
# raw libstrophe pair (replies sent from the stanza callback) and a slixmpp pair. All three use
# plaintext c2s and no stream management so they compare on equal terms; the raw pair exchanges the
# brokers' own stanzas (the ratios' baseline) and, as `raw-libstrophe-ping`, XEP-0199 pings like
# slixmpp (the baseline before 2026-12-07: less work for the server); our brokers are also
# measured with the requesting task on the XMPP loop's executor, with XEP-0198 on, and over TLS. Rounds alternate between implementations so machine
# noise hits all of them alike. Also: connect+auth time and a broker's idle RSS.
#
#   bench/xmpp/run.sh [ROUNDS] [SEQUENTIAL] [PIPELINED]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; sequential=${2:-2000}; pipelined=${3:-20000}; window=64
bench/lib/build.sh intercloud-bench intercloud
bin=.build/release
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cc -O2 -o "$work/strophe_pair" bench/xmpp/strophe_pair.c $(pkg-config --cflags --libs libstrophe)
port=${BENCH_PORT:-27222}
scripts/prosody.sh start "$work/prosody" "$port" >/dev/null
for user in a b; do for n in 1 2; do scripts/prosody.sh register "$work/prosody" "bench$user$n" "cloud$n.test" pw; done; done
A=bencha1@cloud1.test; B=benchb2@cloud2.test
results="$work/results.txt"; : > "$results"
run() {  # NAME COMMAND...
    local name=$1; shift
    "$@" > "$work/out.txt" 2>"$work/err.txt" || { echo "$name failed:"; cat "$work/err.txt"; return 1; }
    sed "s/^/$name /" "$work/out.txt" >> "$results"
}
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds" >&2
    run raw-libstrophe "$work/strophe_pair" 127.0.0.1 "$port" "$A/raw" pw "$B/raw" pw "$sequential" "$pipelined" "$window" status
    run raw-libstrophe-ping "$work/strophe_pair" 127.0.0.1 "$port" "$A/raw" pw "$B/raw" pw "$sequential" "$pipelined" "$window" ping
    run intercloud "$bin/intercloud-bench" xmpp --port "$port" --jid-a "$A" --pass-a pw --jid-b "$B" --pass-b pw --sequential "$sequential" --pipelined "$pipelined" --window "$window"
    run slixmpp python3 bench/xmpp/slixmpp_pair.py 127.0.0.1 "$port" "$A/slix" pw "$B/slix" pw "$((sequential / 2))" "$((pipelined / 4))" "$window"
done
run intercloud+loopexec "$bin/intercloud-bench" xmpp --port "$port" --jid-a "$A" --pass-a pw --jid-b "$B" --pass-b pw --sequential "$sequential" --pipelined "$pipelined" --window "$window" --loop-executor
run intercloud+sm "$bin/intercloud-bench" xmpp --port "$port" --jid-a "$A" --pass-a pw --jid-b "$B" --pass-b pw --sequential "$sequential" --pipelined "$pipelined" --window "$window" --stream-management
run intercloud+tls "$bin/intercloud-bench" xmpp --port "$port" --jid-a "$A" --pass-a pw --jid-b "$B" --pass-b pw --sequential "$sequential" --pipelined "$pipelined" --window "$window" --transport tls --ca-file "$work/prosody/certs/ca.crt"
run connect-plain "$bin/intercloud-bench" xmpp --port "$port" --jid-a bencha2@cloud2.test --pass-a pw --jid-b "$B" --pass-b pw --connect-samples 30
run connect-tls "$bin/intercloud-bench" xmpp --port "$port" --jid-a bencha2@cloud2.test --pass-a pw --jid-b "$B" --pass-b pw --connect-samples 30 --transport tls --ca-file "$work/prosody/certs/ca.crt"

# Idle RSS of a broker started as an operator would.
. bench/lib/idle-broker.sh
idle_broker_toml idle benchb1@cloud1.test/idle "$port" "$work/prosody/certs/ca.crt" > "$work/idle.toml"
"$bin/intercloud" serve --config "$work/idle.toml" 2>/dev/null & pid=$!
sleep 4
echo "idle_rss_kib $(awk '/VmRSS/ {print $2}' /proc/$pid/status) $(awk '/RssAnon/ {print $2}' /proc/$pid/status) $(awk '/^Pss:/ {print $2}' /proc/$pid/smaps_rollup)" \
    | sed 's/^/broker /' >> "$results"
kill -TERM $pid; wait $pid 2>/dev/null || true

python3 - "$results" <<'PY'
import statistics, sys
from collections import defaultdict
seq, rps, conn, rss = defaultdict(list), defaultdict(list), defaultdict(list), {}
for line in open(sys.argv[1]):
    name, key, *values = line.split()
    if key == "seq_us": seq[name].append([float(v) for v in values])
    elif key == "pipelined_rps": rps[name].append(float(values[0]))
    elif key == "connect_ms": conn[name] += [float(v) for v in values]
    elif key == "idle_rss_kib": rss[name] = [int(v) for v in values]
def pct(values, p):
    values = sorted(values); return values[min(len(values) - 1, int(p / 100 * len(values)))]
base = "raw-libstrophe"
base_p50 = statistics.median(statistics.median(r) for r in seq[base])
base_rps = statistics.median(rps[base])
print("| client pair | rounds | seq p50 µs | seq p99 µs | p50 vs raw | pipelined req/s (64 in flight) | vs raw |")
print("|---|---|---|---|---|---|---|")
for name in seq:
    p50 = statistics.median(statistics.median(r) for r in seq[name])
    p99 = statistics.median(pct(r, 99) for r in seq[name])
    r = statistics.median(rps[name])
    print(f"| {name} | {len(seq[name])} | {p50:.0f} | {p99:.0f} | {p50 / base_p50:.2f}× | {r:.0f} | {r / base_rps:.2f}× |")
for name, values in conn.items():
    print(f"\n{name}: connect + SASL SCRAM + bind median {statistics.median(values):.1f} ms, p90 {pct(values, 90):.1f} ms ({len(values)} samples)")
for name, (rss_kib, anon_kib, pss_kib) in rss.items():
    print(f"\n{name} idle after 4 s: RSS {rss_kib / 1024:.1f} MiB (anonymous {anon_kib / 1024:.1f} MiB, "
          f"proportional share of shared libraries included: PSS {pss_kib / 1024:.1f} MiB)")
PY
