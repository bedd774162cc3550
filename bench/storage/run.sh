#!/usr/bin/env bash
# What journal writes cost the rest of the broker: journaling actors commit durably (an fsync
# each) on the cooperative pool, as before StorageExecutor, and on the storage thread, alternating
# in one run, while a probe on the pool measures how late it is woken. Release build.
# WORKLOAD `audit`: audit records written synchronously on the pool (one commit each, as before)
# against the audit log's group commit.
#   bench/storage/run.sh [WRITERS] [WRITES] [ROUNDS] [journals|audit]
set -euo pipefail
cd "$(dirname "$0")/../.."
bench/lib/build.sh intercloud-bench
.build/release/intercloud-bench storage --writers "${1:-4}" --writes "${2:-100}" --rounds "${3:-3}" --workload "${4:-journals}"
