#!/usr/bin/env bash
# Runs the W3C SPARQL 1.1 query-evaluation and RDF syntax suites (from ../shared/w3c, or
# $W3C_SUITES) through our engine and fails below the target pass rate.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=${W3C_SUITES:-../shared/w3c}
if [ ! -d "$suites" ]; then echo "W3C suites not found at $suites; set W3C_SUITES"; exit 1; fi
swift build --product sparql-conformance >/dev/null
.build/debug/sparql-conformance "$suites" | tee var/conformance.log | tail -25
