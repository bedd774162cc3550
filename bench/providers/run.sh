#!/usr/bin/env bash
# Provider benchmarks: per-verb latency of each driver against its real backend (SimCloud, libvirt
# test driver, EC2 on moto with signatures checked, libvirt qemu:///session with a TCG guest), and
# 1 GiB image import/export throughput against `cp` + `sha256sum` of the same file in the same run.
#
#   bench/providers/run.sh            -> bench/providers/RESULTS.md
#
# Needs what the ProvidersTests need (see Sources/Providers/Providers.docc/Testing.md): moto[server], awscli,
# libvirt-daemon, libvirt-clients, qemu-system-x86, qemu-utils. Starts its own moto server and
# libvirt session daemon (both stop when this script exits) and runs `intercloud-bench providers`
# (release build) against them. PROVIDERS_BENCH_ARGS adds options (e.g. `--rounds 3 --image-mib 64`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bench/lib/build.sh intercloud-bench
work=$(mktemp -d)
out="$work/results.md"
# Not under $work: the session daemon runs as an unprivileged user, and mktemp's directory is root's alone.
session=/tmp/intercloud-libvirt-session-$$
trap 'scripts/libvirt-session.sh stop "$session" >/dev/null 2>&1 || true; rm -rf "$work" "$session"' EXIT
backends=()

# EC2 on moto, signatures checked from the first EC2 call (scripts/moto.sh user).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
scripts/moto.sh run "$port" $$ &
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" && break; sleep 0.1; done
read -r key secret < <(scripts/moto.sh user "$port")
backends+=(--moto-endpoint "http://127.0.0.1:$port" --moto-access-key "$key" --moto-secret-key "$secret")

# The tiny QEMU guest under a private session daemon.
guest=${INTERCLOUD_GUEST_DIR:-/tmp/intercloud-test-guest}
scripts/guest-build.sh "$guest" >&2
socket=$(scripts/libvirt-session.sh start "$session" $$)
backends+=(--qemu-socket "$socket" --guest-directory "$guest")

# shellcheck disable=SC2086 # PROVIDERS_BENCH_ARGS is a list of options
.build/release/intercloud-bench providers "${backends[@]}" ${PROVIDERS_BENCH_ARGS:-} > "$out"
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
