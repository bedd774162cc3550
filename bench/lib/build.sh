#!/usr/bin/env bash
# Builds products in release for the benchmarks, quietly unless the build fails (then its output
# is shown). Binaries land in .build/release.
#
#   bench/lib/build.sh PRODUCT...
set -euo pipefail
cd "$(dirname "$0")/../.."
for product in "$@"; do
    swift build -c release --product "$product" > /dev/null 2>&1 || swift build -c release --product "$product"
done
