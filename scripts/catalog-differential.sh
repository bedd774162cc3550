#!/bin/sh
# Differential test of the Catalog SPARQL engine against pyoxigraph (pip install pyoxigraph):
# generated catalogs and queries, answers compared. Extra arguments go to the Python script
# (e.g. --queries 1000 --seed 3).
set -eu
cd "$(dirname "$0")/.."
SCRATCH=${SCRATCH:-.build}
swift build --scratch-path "$SCRATCH" --product sparql-conformance >/dev/null
exec python3 Tests/Interop/catalog_differential.py --engine "$SCRATCH/debug/sparql-conformance" "$@"
