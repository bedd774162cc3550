#!/bin/sh
# Catalog benchmark: builds the engine in release mode, then times the five catalog query shapes
# (and load) against pyoxigraph and rdflib on generated catalogs of 1k, 10k and 100k triples.
# Needs: python3 with pyoxigraph and rdflib (pip install pyoxigraph rdflib), libraptor2-dev.
set -eu
cd "$(dirname "$0")/../.."
SCRATCH=${SCRATCH:-.build-catalog-release}
INTERCLOUD_ONLY=sparql-conformance swift build -c release --scratch-path "$SCRATCH" --product sparql-conformance
exec python3 bench/catalog/bench.py --engine "$SCRATCH/release/sparql-conformance" "$@"
