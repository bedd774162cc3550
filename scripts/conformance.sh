#!/usr/bin/env bash
# Runs the W3C SPARQL 1.1 (query evaluation and syntax) and RDF syntax suites (Turtle, N-Triples,
# RDF/XML) from ../shared/w3c (or $W3C_SUITES) through our engine, prints one line per suite, and
# fails if less than 95% of the tests pass (the catalog issue's target).
set -euo pipefail
cd "$(dirname "$0")/.."
suites=${W3C_SUITES:-../shared/w3c}
if [ ! -d "$suites/sparql11" ]; then echo "W3C suites not found at $suites; set W3C_SUITES"; exit 1; fi
mkdir -p var
swift build --product sparql-conformance 2>&1 | grep -E "error:" || true
.build/debug/sparql-conformance --max-failures 1000000 "$suites"/sparql11/*/ "$suites/turtle" "$suites/ntriples" "$suites/rdf-xml" \
    > var/conformance.log 2>&1
# The runner's closing line is "N passed, M failed"; say it in other words here so that it is not
# read as the closing line of the test run.
grep -vE '^[0-9]+ passed, [0-9]+ failed$' var/conformance.log | grep -E ":|tests" | tail -30
python3 - var/conformance.log <<'PY'
import re, sys
text = open(sys.argv[1]).read()
passed, failed = map(int, re.findall(r"^(\d+) passed, (\d+) failed$", text, re.M)[-1])
rate = passed / max(1, passed + failed)
print(f"W3C conformance total: {passed} of {passed + failed} tests pass ({rate:.1%}; target 95%)")
sys.exit(0 if rate >= 0.95 else 1)
PY
