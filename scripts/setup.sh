#!/usr/bin/env bash
# Installs what Intercloud needs on a fresh Debian 12 machine: C libraries, the real services the
# tests talk to, and the independent peers used for interop tests. Idempotent.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# Every program a test, benchmark or script runs comes from this list, the pip line below, or the
# machine image (coreutils, bash, gcc, pkg-config, python3): when a test starts calling a new one,
# add its package here. What each is for:
#   C libraries the build links: libstrophe-dev libsqlite3-dev libssl-dev libxml2-dev libraptor2-dev libvirt-dev
#   real services the tests start: prosody (+ lua-unbound for its resolver), nginx-light (transfer
#     benchmark, federation call gate), libvirt-daemon + libvirt-daemon-driver-qemu + qemu-system-x86
#     (QEMU guests), libvirt-clients (virsh)
#   programs tests run: qemu-utils (qemu-img), openssl, raptor2-utils (rapper), curl, util-linux
#     (setpriv, setsid, prlimit), xz-utils, libxml2-utils (xmllint), binutils (readelf:
#     scripts/startup-order.sh)
#   a real OpenStack for the OpenStack driver's tests: scripts/openstack.sh install (MariaDB,
#     RabbitMQ, Keystone, Glance, Placement, the Neutron API, Nova with libvirt/QEMU, the openstack
#     client; its header lists each program's package). It diverts python3-swiftclient's
#     /usr/bin/swift, which would shadow the Swift toolchain.
packages=(nginx-light libstrophe-dev libsqlite3-dev libssl-dev libxml2-dev libraptor2-dev libvirt-dev
          libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils qemu-system-x86 prosody
          lua-unbound openssl raptor2-utils util-linux xz-utils curl libxml2-utils binutils
          python3-pip ca-certificates)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Nothing of it runs as a machine service; scripts/openstack.sh start runs private instances.
"$(dirname "$0")/openstack.sh" install

# Prosody's Debian service is not used (tests run private instances); keep it from holding ports.
$SUDO systemctl disable --now prosody >/dev/null 2>&1 || true

# Independent implementations for interop tests and benchmarks, and the test runner itself.
# A failed install fails the setup (pip's root warning alone is filtered out).
pip_log=$(mktemp)
if ! python3 -m pip install -q --disable-pip-version-check pytest slixmpp cryptography pyoxigraph rdflib "moto[server]" awscli \
        > "$pip_log" 2>&1; then
    grep -v -i "warning: running pip as" "$pip_log" >&2
    rm -f "$pip_log"
    echo "setup: pip install failed" >&2
    exit 1
fi
rm -f "$pip_log"
