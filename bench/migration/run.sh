#!/usr/bin/env bash
# A SimCloud cold migration end to end between two brokers (release build) through one private
# Prosody, against `cp` + `sha256sum` of the same disk in the same run; peak RSS reported.
#
#   bench/migration/run.sh [MIB]      (default 1024)
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-1024}
exec bench/lib/two-brokers.sh 27442 migration --mib "$mib"
