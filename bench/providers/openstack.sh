#!/usr/bin/env bash
# OpenStack driver benchmark: per-verb latency of the driver against a real OpenStack on loopback,
# beside the same operations with the `openstack` CLI (Debian's python3-openstackclient) in the same
# run, the CLI's start-up and token fetch measured on their own and subtracted.
#
#   bench/providers/openstack.sh [ROUNDS]     -> bench/providers/OPENSTACK-RESULTS.md
#
# Starts the OpenStack of scripts/openstack.sh in a fresh directory (about a minute; it stops when
# this script exits), or uses the one running in OPENSTACK_DIR. Needs scripts/openstack.sh install
# (scripts/setup.sh runs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
bench/lib/build.sh intercloud-bench
if [[ -n ${OPENSTACK_DIR:-} ]]; then
    dir=$OPENSTACK_DIR
    scripts/openstack.sh start "$dir" >/dev/null
else
    dir=$(mktemp -d /var/tmp/intercloud-openstack-bench-XXXXXX)
    trap 'scripts/openstack.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    scripts/openstack.sh start "$dir" >&2
fi
out=$(mktemp)
.build/release/intercloud-bench openstack --facts "$dir/openstack.json" --rounds "$rounds" > "$out"
{
    echo "# OpenStack driver benchmark"
    echo
    echo "Command: \`bench/providers/openstack.sh $rounds\` (release build; $(nproc) cores; $(date -u +%Y-%m-%d))."
    echo "A real OpenStack (Debian 12's Zed packages: Keystone, Glance on its file store, Placement, Neutron's"
    echo "API, Nova with one libvirt/QEMU compute service) on loopback, started by scripts/openstack.sh."
    echo "\"accepted\" verbs return when Nova accepted the request (the driver then reads the server once);"
    echo "waits for a state are not timed. The machine is shared; treat numbers as indicative."
    echo
    cat "$out"
} > bench/providers/OPENSTACK-RESULTS.md
rm -f "$out"
cat bench/providers/OPENSTACK-RESULTS.md
