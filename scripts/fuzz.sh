#!/usr/bin/env bash
# Fuzzes every decoder of input from peers, strangers and operators' files with libFuzzer
# (coverage-guided, AddressSanitizer): the signed envelope, the trust handshake, the presence
# announcement, negotiation, usage record, migration and federation messages, transfer channel
# frames, the policy and template loaders, and the disk image header check.
#
#   scripts/fuzz.sh                    # every target, 1,000,000 inputs each
#   scripts/fuzz.sh envelope 200000    # one target, that many inputs
#   FUZZ_SECONDS=60 scripts/fuzz.sh    # every target for 60 s each instead of a count
#
# Builds into .build-fuzz (INTERCLOUD_FUZZ=1 adds the harness target and instruments the project's
# modules; ordinary builds are untouched). Seeds are Tests/Fuzz/corpus/TARGET; inputs libFuzzer finds
# interesting go to var/fuzz/corpus-TARGET, crashes to var/fuzz/crash-TARGET-*. Exits non-zero on
# the first crash, timeout or leak. Leak detection is on, except for the TOML targets (policy,
# template): TOMLKit 0.6.0 never frees a parsed table (`TOMLTable(string:)` has no deinit that
# frees its toml++ table, nor the error buffer it allocates), so every operator file loaded leaks
# ~1 KiB and leak detection would stop at the first valid input. Those files are the operator's,
# read at start and on reload; no peer reaches that parser. Memory growth is bounded by
# -rss_limit_mb (8 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(envelope handshake announce negotiation usage migration federation transfer policy template image-header xml)
if [ $# -ge 1 ]; then targets=("$1"); fi
runs=${2:-1000000}
mkdir -p var/fuzz
# libFuzzer without its main(), from the toolchain's clang runtime.
toolchain=$(dirname "$(dirname "$(command -v swiftc)")")
INTERCLOUD_FUZZER_LIBRARY=$(find "$toolchain/lib/clang" -name 'libclang_rt.fuzzer_no_main-x86_64.a' | head -1)
[ -n "$INTERCLOUD_FUZZER_LIBRARY" ] || { echo "fuzz: libclang_rt.fuzzer_no_main not found under $toolchain/lib/clang"; exit 1; }
export INTERCLOUD_FUZZER_LIBRARY
echo "== building the fuzz harness (.build-fuzz)"
INTERCLOUD_FUZZ=1 swift build --scratch-path .build-fuzz --product intercloud-fuzz > var/fuzz/build.log 2>&1 || {
    grep -E "error:" -A3 var/fuzz/build.log | head -40; echo "fuzz: the build failed (var/fuzz/build.log)"; exit 1; }
binary=.build-fuzz/debug/intercloud-fuzz
failed=()
for target in "${targets[@]}"; do
    corpus=var/fuzz/corpus-$target
    mkdir -p "$corpus"
    limit=(-runs="$runs")
    [ -n "${FUZZ_SECONDS:-}" ] && limit=(-max_total_time="$FUZZ_SECONDS")
    started=$(date +%s)
    leaks=1
    case $target in policy|template) leaks=0 ;; esac
    ASAN_OPTIONS=detect_leaks=$leaks INTERCLOUD_FUZZ_TARGET=$target "$binary" "$corpus" "Tests/Fuzz/corpus/$target" "${limit[@]}" \
        -max_len=65536 -timeout=10 -rss_limit_mb=8192 -detect_leaks=$leaks -artifact_prefix="var/fuzz/crash-$target-" \
        -print_final_stats=1 > "var/fuzz/$target.log" 2>&1 || {
        why=$(grep -m1 -E "Assertion|Fatal error|ERROR: AddressSanitizer|ERROR: LeakSanitizer|ERROR: libFuzzer|deadly signal|timeout" "var/fuzz/$target.log" | cut -c1-200)
        echo "$target: FAILED after $(( $(date +%s) - started )) s: ${why:-see var/fuzz/$target.log} (input: $(ls var/fuzz/crash-"$target"-* 2>/dev/null | head -1))"
        failed+=("$target")
        continue; }
    executed=$(grep -E "stat::number_of_executed_units" "var/fuzz/$target.log" | awk '{print $2}')
    echo "$target: ${executed:-?} inputs in $(( $(date +%s) - started )) s, no crash (corpus $(ls "$corpus" | wc -l) files)"
done
if [ ${#failed[@]} -gt 0 ]; then echo "fuzz: failures in ${failed[*]}"; exit 1; fi
