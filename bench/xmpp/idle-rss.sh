#!/usr/bin/env bash
# Idle memory of a broker started as an operator would (the config of bench/xmpp/run.sh's last
# step), alone and quick: one private Prosody, then each binary started RUNS times, alternating
# between binaries so machine noise hits them alike. After 4 s (IDLE_SECONDS): RSS, anonymous, PSS
# (medians), and the resident KiB of each mapping (medians, largest first).
#
#   bench/xmpp/idle-rss.sh [RUNS] [BINARY...]      default: 4 runs of .build/release/intercloud
#
# Compare two builds: copy one binary aside (cp .build/release/intercloud /tmp/before), build the
# other, then bench/xmpp/idle-rss.sh 4 /tmp/before .build/release/intercloud.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/idle-broker.sh
runs=${1:-4}; shift || true
binaries=("$@"); [ ${#binaries[@]} -gt 0 ] || { bench/lib/build.sh intercloud; binaries=(.build/release/intercloud); }
for index in "${!binaries[@]}"; do binaries[$index]=$(realpath "${binaries[$index]}"); done
port=${BENCH_PORT:-27322}
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
scripts/prosody.sh start "$work/prosody" "$port" >/dev/null
scripts/prosody.sh register "$work/prosody" benchb1 cloud1.test pw
results="$work/results.txt"; : > "$results"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg), $runs runs each, ${IDLE_SECONDS:-4} s idle" >&2
for run in $(seq 1 "$runs"); do
    for index in "${!binaries[@]}"; do
        # A fresh directory and database each time, as a first start.
        dir="$work/run$run-$index"; mkdir -p "$dir"
        idle_broker_toml idle benchb1@cloud1.test/idle "$port" "$work/prosody/certs/ca.crt" > "$dir/idle.toml"
        (cd "$dir" && exec "${binaries[$index]}" serve --config "$dir/idle.toml" 2>/dev/null) & pid=$!
        sleep "${IDLE_SECONDS:-4}"
        echo "$index total $(awk '/^Rss:/ {r=$2} /^Pss:/ {p=$2} /^Anonymous:/ {a=$2} END {print r, a, p}' /proc/$pid/smaps_rollup)" >> "$results"
        # Resident KiB per mapped file (all its mappings together), anonymous and stacks apart.
        awk -v index_="$index" '
            /^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : "[anonymous]"; sub(/.*\//, "", name); next }
            /^Rss:/ { rss[name] += $2 }
            END { for (n in rss) if (rss[n] > 0) print index_, "map", n, rss[n] }' /proc/$pid/smaps >> "$results"
        kill -TERM $pid; wait $pid 2>/dev/null || true
    done
done
python3 - "$results" "${binaries[@]}" <<'PY'
import statistics, sys
from collections import defaultdict
binaries = sys.argv[2:]
totals, maps = defaultdict(list), defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    index, kind, *rest = line.split()
    if kind == "total": totals[int(index)].append([int(v) for v in rest])
    else: maps[int(index)][rest[0]].append(int(rest[1]))
print("| binary | runs | RSS MiB | anonymous MiB | PSS MiB |")
print("|---|---|---|---|---|")
for index, binary in enumerate(binaries):
    t = totals[index]
    median = [statistics.median(v[i] for v in t) / 1024 for i in range(3)]
    print(f"| {binary} | {len(t)} | {median[0]:.1f} | {median[1]:.1f} | {median[2]:.1f} |")
names = sorted({n for m in maps.values() for n in m},
               key=lambda n: -max(statistics.median(maps[i][n]) if maps[i][n] else 0 for i in maps))
print("\nresident KiB by mapping (medians; a mapping absent from a run counts 0):")
print("| mapping | " + " | ".join(f"[{i}]" for i in range(len(binaries))) + " |")
print("|---|" + "---|" * len(binaries))
for n in names:
    values = [statistics.median(maps[i][n] + [0] * (len(totals[i]) - len(maps[i][n]))) for i in range(len(binaries))]
    if max(values) >= 100: print(f"| {n} | " + " | ".join(f"{v:.0f}" for v in values) + " |")
PY
