#!/usr/bin/env bash
# Installs what Intercloud needs on a fresh Debian 12 machine: C libraries, the real services the
# tests talk to, and the independent peers used for interop tests. Idempotent.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

packages=(nginx-light libstrophe-dev libsqlite3-dev libssl-dev libxml2-dev libraptor2-dev libvirt-dev
          libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils qemu-system-x86 prosody
          lua-unbound openssl util-linux xz-utils curl
          python3-pip ca-certificates busybox-static)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Prosody's Debian service is not used (tests run private instances); keep it from holding ports.
$SUDO systemctl disable --now prosody >/dev/null 2>&1 || true

python3 -m pip install -q --disable-pip-version-check slixmpp pyoxigraph rdflib "moto[server]" awscli 2>&1 \
    | grep -v -i "warning: running pip as" || true
