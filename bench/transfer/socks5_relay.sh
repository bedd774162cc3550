#!/usr/bin/env bash
# XEP-0065 alternative, measured once for the channel choice: SIZE_MIB through Prosody's proxy65
# (see socks5_relay.py), next to the same amount over loopback TCP with no relay.
#
#   bench/transfer/socks5_relay.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
size=${1:-1024}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=$(mktemp -d /tmp/transfer-proxy65.XXXXXX)
port=$((30000 + RANDOM % 20000))
trap '"$root/scripts/prosody.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$root/scripts/prosody.sh" start "$dir" "$port" >/dev/null
"$root/scripts/prosody.sh" register "$dir" initiator cloud1.test secret
python3 "$here/socks5_relay.py" 127.0.0.1 "$port" $((port + 2)) initiator@cloud1.test secret "$size"
