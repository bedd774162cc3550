#!/usr/bin/env bash
# Regenerates scripts/startup-order.txt: the functions `intercloud serve` runs while a broker
# starts and settles (connected, in its exchange room, idle), in the order it first runs them.
#
# Why: the kernel maps executable code 64 KiB at a time around each page a process first
# touches. The ~1 MiB of code a starting broker runs lies scattered through the executable's
# 16 MB of code, which left ~9 MiB of it resident in every idle broker. Release builds compile
# the project's modules with one section per function and link with lld, which puts the
# functions listed here first, together, in this order (--symbol-ordering-file, see
# Package.swift). A list gone stale as the code changes costs memory only, never correctness:
# regenerate it after changes to what a broker does when it starts, and commit it.
#
#   scripts/startup-order.sh [SECONDS]       trace SECONDS of a broker's life (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
swift build -c release --product intercloud > /dev/null 2>&1 || swift build -c release --product intercloud
binary=$(pwd)/.build/release/intercloud
port=${PROSODY_PORT:-27622}
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cc -O2 -o "$work/first-calls" scripts/first-calls.c
scripts/prosody.sh start "$work/prosody" "$port" >/dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
. bench/lib/idle-broker.sh
idle_broker_toml startup broker@cloud1.test/startup "$port" "$work/prosody/certs/ca.crt" > "$work/broker.toml"
# Every function of the executable with its link-time address.
readelf -sW "$binary" | awk '$4 == "FUNC" && $7 != "UND" && $3 > 0 {print $2, $8}' > "$work/functions"
(cd "$work" && ./first-calls functions "$seconds" order "$binary" serve --config broker.toml 2>/dev/null)
# Without names that a dependency's code also defines more than once. lld places every section
# that defines a listed name, and the compiler gives some local functions a copy in each file
# that needs one (outlined copies and destroys, `__swift_allocate_boxed_opaque_existential_1Tm`,
# ...). A dependency's file is one section (no per-function sections there), so each such name
# pulled hundreds of dependency files that a broker never runs (SwiftNIO's, AsyncHTTPClient's)
# in among its startup code: ~1.6 MiB more resident code. Our own copies are a section each and
# stay listed when no dependency defines the name.
ours=" $(ls Sources bench/Sources | tr '\n' ' ') "
for objects in .build/release/*.build; do
    module=$(basename "$objects" .build)
    [[ "$ours" == *" $module "* ]] || find "$objects" -name '*.o' -print0 | xargs -0 -r nm --defined-only 2>/dev/null | awk 'NF >= 3 {print $3}'
done | sort -u > "$work/dependency-names"
awk '{print $2}' "$work/functions" | sort | uniq -d | comm -12 - "$work/dependency-names" > "$work/dropped"
grep -vxFf "$work/dropped" "$work/order" > scripts/startup-order.txt || true
# SwiftPM does not know the list is an input of the link: remove the executable so that the next
# release build links it again, in the new order.
rm -f "$binary"
echo "scripts/startup-order.txt: $(wc -l < scripts/startup-order.txt) functions; build again to link in this order"
