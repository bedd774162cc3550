#!/bin/sh
# libFuzzer targets for the Catalog's untrusted-input boundaries:
#   sparql  — the SPARQL parser and evaluator (queries from peers), on a small fixed catalog
#   turtle / ntriples / rdfxml — the Raptor-backed RDF loader with its limits and screens
#
# usage: scripts/catalog-fuzz.sh TARGET [libFuzzer options...]
#   e.g. scripts/catalog-fuzz.sh sparql -max_total_time=300
#        scripts/catalog-fuzz.sh rdfxml -max_total_time=300 -max_len=4096
# Builds with `swiftc -sanitize=fuzzer,address` from Sources/Catalog (all files except the GRDB
# persistence, which the fuzzers do not need) into $OUT (default /tmp/intercloud-catalog-fuzz),
# and keeps the corpus and any crash reproducers there. Needs libraptor2-dev.
set -eu
TARGET=${1:?usage: catalog-fuzz.sh sparql|turtle|ntriples|rdfxml [libFuzzer options]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/intercloud-catalog-fuzz}
mkdir -p "$OUT/corpus-$TARGET"

cat > "$OUT/FuzzMain.swift" <<'EOF'
import Foundation

let fuzzTarget = ProcessInfo.processInfo.environment["CATALOG_FUZZ_TARGET"] ?? "sparql"

let fuzzStore: TripleStore = {
    let store = TripleStore()
    _ = try? store.load(turtle: """
    @prefix ic: <https://intercloud.example.org/ontology#> . @prefix ex: <http://ex/> .
    ex:a a ic:Offering ; ic:vcpu 2 ; ic:pricePerHour 0.5 ; ic:region ex:r ; ic:name "a"@en ; ic:next ex:b .
    ex:b a ic:Offering ; ic:vcpu 8 ; ic:pricePerHour 1.25 ; ic:region ex:r ; ic:next ex:a ; ic:sla [ ic:availability 0.99 ] .
    ex:r a ic:Region ; ic:name "r" ; ic:country "DE" .
    """)
    return store
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(bytes: data, count: size)
    switch fuzzTarget {
    case "sparql":
        let text = String(decoding: bytes, as: UTF8.self)
        let limits = QueryLimits(timeout: .milliseconds(200), maxResults: 10_000, maxIntermediateRows: 100_000)
        if let result = try? SPARQLEngine(fuzzStore).execute(query: text, limits: limits) {
            _ = result.serializedXML()
            _ = result.serializedJSON()
        }
    case "turtle", "ntriples", "rdfxml":
        let format: RDFFormat = fuzzTarget == "turtle" ? .turtle : (fuzzTarget == "ntriples" ? .nTriples : .rdfXML)
        let limits = LoadLimits(maxInputBytes: 1 << 20, maxTriples: 10_000, maxLiteralBytes: 4096)
        if let triples = try? RDFLoader.parse(bytes, format: format, baseIRI: "http://fuzz/", limits: limits) {
            _ = serializeNTriples(triples)
        }
    default:
        break
    }
    return 0
}
EOF

BIN="$OUT/catalog-fuzz"
SOURCES=$(find "$ROOT/Sources/Catalog" -name '*.swift' ! -name 'CatalogStore.swift')
if [ ! -x "$BIN" ] || [ -n "$(find "$ROOT/Sources/Catalog" "$ROOT/Sources/CRaptor" -newer "$BIN" -type f)" ]; then
    # CRaptor loads Raptor with dlopen (Sources/CRaptor): its C file, and the module map SwiftPM
    # would otherwise generate for its header.
    mkdir -p "$OUT/CRaptor"
    printf 'module CRaptor {\n    header "%s"\n    export *\n}\n' "$ROOT/Sources/CRaptor/include/CRaptor.h" > "$OUT/CRaptor/module.modulemap"
    clang -O1 -c "$ROOT/Sources/CRaptor/CRaptor.c" -I "$ROOT/Sources/CRaptor/include" -o "$OUT/CRaptor.o"
    # shellcheck disable=SC2086
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name Catalog \
        -I "$OUT/CRaptor" "$OUT/CRaptor.o" -ldl \
        $SOURCES "$OUT/FuzzMain.swift" -o "$BIN"
fi

# Seed corpora.
case "$TARGET" in
    sparql) find "$ROOT/bench/catalog/queries" -name '*.rq' -exec cp {} "$OUT/corpus-$TARGET/" \; ;;
    turtle) cp "$ROOT/ontology/intercloud.ttl" "$OUT/corpus-$TARGET/" ;;
esac
W3C=${W3C_SUITES:-$ROOT/vendor/w3c}
if [ -d "$W3C" ]; then
    case "$TARGET" in
        sparql) find "$W3C/sparql11" -name '*.rq' | head -300 | xargs -I{} cp {} "$OUT/corpus-$TARGET/" 2>/dev/null || true ;;
        turtle) find "$W3C/turtle" -name '*.ttl' | head -300 | xargs -I{} cp {} "$OUT/corpus-$TARGET/" 2>/dev/null || true ;;
        ntriples) find "$W3C/ntriples" -name '*.nt' | xargs -I{} cp {} "$OUT/corpus-$TARGET/" 2>/dev/null || true ;;
        rdfxml) find "$W3C/rdf-xml" -name '*.rdf' | head -300 | while read -r f; do cp "$f" "$OUT/corpus-$TARGET/$(echo "$f" | tr / _)"; done ;;
    esac
fi

cd "$OUT"
CATALOG_FUZZ_TARGET="$TARGET" exec "$BIN" "$OUT/corpus-$TARGET" -artifact_prefix="$OUT/crash-$TARGET-" "$@"
