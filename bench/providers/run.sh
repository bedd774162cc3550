#!/usr/bin/env bash
# Provider benchmarks: per-verb latency of each driver against its real backend (SimCloud, libvirt
# test driver, EC2 on moto with signatures checked, libvirt qemu:///session with a TCG guest), and
# 1 GiB image import/export throughput against `cp` + `sha256sum` of the same file in the same run.
#
#   bench/providers/run.sh            -> bench/providers/RESULTS.md
#
# Needs what the ProvidersTests need (see Sources/Providers/Providers.docc/Testing.md): moto[server], awscli,
# libvirt-daemon, libvirt-clients, qemu-system-x86, qemu-utils. Starts and stops its own moto server
# and libvirt session daemon. Uses a release build in .build-providers-release.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# `swift test` (not `swift build --build-tests`) so the release build allows the suite's @testable import.
INTERCLOUD_BENCH_OUT=$out INTERCLOUD_ONLY=Providers \
    swift test -c release --scratch-path .build-providers-release -Xswiftc -DINTERCLOUD_BENCHMARKS --filter ProvidersBenchmark
{
    echo "# Providers benchmark"
    echo
    echo "Command: \`bench/providers/run.sh\` (release build; $(nproc) cores; $(date -u +%Y-%m-%d))."
    echo "Each backend is real: SimCloud on SQLite, libvirt's in-process test driver, moto with"
    echo "SigV4 checking on (every request signed and verified), and a QEMU guest under software"
    echo "emulation (TCG) driven through a private qemu:///session daemon. Waits are polls of"
    echo "describe every 100 ms, so \"to running/stopped\" latencies include up to one poll interval."
    echo "For the QEMU guest, \"to running\" also waits for the guest's init to print its ready marker"
    echo "(so the next ACPI request is handled). The machine is shared; treat numbers as indicative."
    echo
    cat "$out"
} > bench/providers/RESULTS.md
cat bench/providers/RESULTS.md
