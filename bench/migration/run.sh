#!/usr/bin/env bash
# A SimCloud cold migration end to end between two brokers (release build) through one private
# Prosody, against `cp` + `sha256sum` of the same disk in the same run; peak RSS reported.
#
#   bench/migration/run.sh [MIB]      (default 1024)
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-1024}
swift build -c release --product bench-xmpp > /dev/null 2>&1 || swift build -c release --product bench-xmpp
work=$(mktemp -d); trap 'scripts/prosody.sh stop "$work/prosody" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=${BENCH_PORT:-27442}
scripts/prosody.sh start "$work/prosody" "$port" > /dev/null
scripts/prosody.sh register "$work/prosody" broker cloud1.test pw
scripts/prosody.sh register "$work/prosody" broker cloud2.test pw
.build/release/bench-xmpp --port "$port" --jid-a broker@cloud1.test --pass-a pw --jid-b broker@cloud2.test --pass-b pw \
    --ca-file "$work/prosody/certs/ca.crt" --migration-mib "$mib" 2>/dev/null
