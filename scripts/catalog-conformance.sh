#!/bin/sh
# Runs the W3C conformance suites against the Catalog (SPARQL 1.1 query, Turtle, N-Triples,
# RDF/XML). The suites live outside the project, in ../shared/w3c (override with W3C=DIR).
# Prints one line per suite, totals per kind of test, and "N passed, M failed"; extra arguments
# (e.g. -v for the reasons of failures) go to the runner.
set -eu
cd "$(dirname "$0")/.."
W3C=${W3C:-../shared/w3c}
SCRATCH=${SCRATCH:-.build}
swift build --scratch-path "$SCRATCH" --product sparql-conformance >/dev/null
exec "$SCRATCH/debug/sparql-conformance" "$@" "$W3C/sparql11" "$W3C/turtle" "$W3C/ntriples" "$W3C/rdf-xml"
