#!/usr/bin/env bash
# Runs the W3C suites vendored in vendor/w3c through the Catalog's own engine: SPARQL 1.1 query
# evaluation and syntax, SPARQL 1.0 (DAWG data-r2, results as RDF result sets), and the RDF 1.1
# syntax suites (Turtle, N-Triples, RDF/XML). Prints one line per suite and one per kind of test,
# and fails when the build fails or when fewer than 95% of the applicable tests pass.
#
#   scripts/conformance.sh          # all suites
#   scripts/conformance.sh -v       # also each failing test with its reason
#   W3C_SUITES=DIR scripts/conformance.sh   # another copy of the suites (same layout as vendor/w3c)
#   SCRATCH=DIR scripts/conformance.sh      # another build folder (default .build)
set -euo pipefail
cd "$(dirname "$0")/.."
suites=${W3C_SUITES:-vendor/w3c}
scratch=${SCRATCH:-.build}
for suite in sparql11 sparql10 turtle ntriples rdf-xml; do
    [ -d "$suites/$suite" ] || { echo "conformance: $suites/$suite is missing (W3C_SUITES=$suites)"; exit 1; }
done
mkdir -p var
if ! swift build --scratch-path "$scratch" --product sparql-conformance > var/conformance-build.log 2>&1; then
    grep -E "error:" -A3 var/conformance-build.log | head -40
    echo "conformance: the build of sparql-conformance failed (var/conformance-build.log)"
    exit 1
fi
status=0
"$scratch/debug/sparql-conformance" --max-failures 1000000 "$@" "$suites/sparql11" \
    "$suites/sparql10/manifest-evaluation.ttl" "$suites/sparql10/manifest-syntax.ttl" \
    "$suites/turtle" "$suites/ntriples" "$suites/rdf-xml" > var/conformance.log 2>&1 || status=$?
if [ "$status" -ne 0 ]; then tail -20 var/conformance.log; echo "conformance: the runner failed (exit $status)"; exit 1; fi
# The runner's closing line is "N passed, M failed"; say it in other words here so that it is not
# read as the closing line of the test run.
grep -vE '^[0-9]+ passed, [0-9]+ failed$' var/conformance.log | grep -E ":|tests" | tail -60
python3 - var/conformance.log <<'PY'
import re, sys
text = open(sys.argv[1]).read()
passed, failed = map(int, re.findall(r"^(\d+) passed, (\d+) failed$", text, re.M)[-1])
rate = passed / max(1, passed + failed)
print(f"W3C conformance total: {passed} of {passed + failed} tests pass ({rate:.1%}; target 95%)")
sys.exit(0 if rate >= 0.95 else 1)
PY
