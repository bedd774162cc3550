#!/usr/bin/env bash
# Large stanzas through a full socket: round trips of 300 KiB requests over verified STARTTLS
# through a private Prosody, with the kernel's send buffer (the baseline) and with a small fixed
# one, so every stanza leaves in writes cut short by a full socket (`intercloud-bench xmpp-large`).
#
#   bench/xmpp/large.sh [REQUESTS] [KIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bench/lib/two-brokers.sh 27236 xmpp-large --requests "${1:-20}" --kib "${2:-300}"
