#!/usr/bin/env python3
"""Differential test of the Catalog SPARQL engine against pyoxigraph.

Generates catalogs (several seeds and sizes, with language tags, blank nodes and missing values)
and many queries from templates with random parameters, runs each through our engine
(`sparql-conformance query --data FILE --query Q --format json`) and through pyoxigraph, and
compares the answers: solutions as multisets (blank nodes by shape, numbers by value), ordered
queries by the order of their sort keys, ASK by value, CONSTRUCT by triple count and ground triples.

usage: catalog_differential.py [--engine PATH] [--queries N] [--seed S]
Needs: pip install pyoxigraph. Exit status 0 when every query agrees.
"""
import argparse
import collections
import decimal
import json
import os
import random
import subprocess
import sys
import tempfile

import pyoxigraph

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IC = "https://intercloud.example.org/ontology#"
XSD = "http://www.w3.org/2001/XMLSchema#"
PREFIXES = f"PREFIX ic: <{IC}>\nPREFIX ex: <https://catalog.example.org/>\nPREFIX xsd: <{XSD}>\n"
NUMERIC = {XSD + t for t in ("integer", "decimal", "double", "float", "int", "long")}


def find_engine():
    for candidate in (os.environ.get("SPARQL_CONFORMANCE"),
                      os.path.join(ROOT, ".build-catalog/debug/sparql-conformance"),
                      os.path.join(ROOT, ".build/debug/sparql-conformance"),
                      os.path.join(ROOT, ".build/release/sparql-conformance")):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit("sparql-conformance not built: swift build --product sparql-conformance")


def catalog(seed, offerings):
    """Turtle text of a random catalog."""
    rng = random.Random(seed)
    out = [f"@prefix ic: <{IC}> .", "@prefix ex: <https://catalog.example.org/> .", f"@prefix xsd: <{XSD}> ."]
    regions = rng.randint(2, 6)
    countries = ["DE", "FR", "NL", "US"]
    for r in range(regions):
        label = f'"Region {r}"@{rng.choice(["en", "de"])}' if rng.random() < 0.5 else f'"region-{r}"'
        out.append(f'ex:r{r} a ic:Region ; ic:name {label} ; ic:country "{rng.choice(countries)}" .')
    for s in range(3):
        out.append(f"ex:sla{s} a ic:SLA ; ic:availability 0.99{s + 1} ; ic:supportLevel \"{rng.choice(['24x7', 'office'])}\" .")
    for o in range(offerings):
        parts = [f"ex:o{o} a ic:Offering"]
        vcpu = rng.choice([1, 2, 4, 8, 16])
        parts.append(f"ic:vcpu {vcpu}")
        # Prices are written in canonical form: Oxigraph stores decimals by value, so "0.50" and
        # "0.5" would become one term there but stay two distinct terms (as RDF says) here.
        if rng.random() < 0.9:
            parts.append(f"ic:pricePerHour {decimal.Decimal(rng.randint(1, 300)) / 100}")
        if rng.random() < 0.8:
            parts.append(f"ic:memoryMiB {vcpu * rng.choice([1024, 2048, 4096])}")
        parts.append(f"ic:region ex:r{rng.randrange(regions)}")
        if rng.random() < 0.4:
            parts.append(f"ic:sla ex:sla{rng.randrange(3)}")
        if rng.random() < 0.3:
            parts.append(f'ic:name "offer {o}"@en')
        if rng.random() < 0.2:
            parts.append(f"ic:image [ a ic:Image ; ic:imageFormat \"{rng.choice(['raw', 'qcow2'])}\" ]")
        if rng.random() < 0.2:
            parts.append(f"ic:successor ex:o{rng.randrange(offerings)}")
        out.append(" ; ".join(parts) + " .")
    return "\n".join(out) + "\n"


def queries(rng):
    """Yields (query, ordered) pairs from templates."""
    v = lambda: rng.choice([1, 2, 4, 8, 16])  # noqa: E731
    p = lambda: f"{rng.randint(1, 300) / 100:.2f}"  # noqa: E731
    c = lambda: rng.choice(["DE", "FR", "NL", "US"])  # noqa: E731
    templates = [
        lambda: (f"SELECT ?o ?v WHERE {{ ?o a ic:Offering ; ic:vcpu ?v FILTER(?v >= {v()}) }}", False),
        lambda: (f"SELECT ?o WHERE {{ ?o ic:vcpu ?v ; ic:pricePerHour ?p FILTER(?v > {v()} || ?p < {p()}) }}", False),
        lambda: (f"SELECT ?o ?n WHERE {{ ?o ic:region ?r . ?r ic:country \"{c()}\" ; ic:name ?n }}", False),
        lambda: ("SELECT ?o ?a WHERE { ?o a ic:Offering OPTIONAL { ?o ic:sla ?s . ?s ic:availability ?a } }", False),
        lambda: ("SELECT ?o ?p ?m WHERE { ?o a ic:Offering OPTIONAL { ?o ic:pricePerHour ?p } OPTIONAL { ?o ic:memoryMiB ?m FILTER(?m > 4096) } }", False),
        lambda: (f"SELECT ?o ?p WHERE {{ ?o ic:pricePerHour ?p }} ORDER BY ?p ?o LIMIT {rng.randint(1, 15)}", True),
        lambda: (f"SELECT ?o ?p WHERE {{ ?o ic:pricePerHour ?p }} ORDER BY DESC(?p) ?o LIMIT {rng.randint(1, 10)} OFFSET {rng.randint(0, 5)}", True),
        lambda: ("SELECT ?r (COUNT(?o) AS ?n) WHERE { ?o ic:region ?r } GROUP BY ?r", False),
        lambda: ("SELECT ?r (SUM(?v) AS ?s) (AVG(?p) AS ?a) (MIN(?p) AS ?lo) (MAX(?v) AS ?hi) WHERE { ?o ic:region ?r ; ic:vcpu ?v ; ic:pricePerHour ?p } GROUP BY ?r", False),
        lambda: (f"SELECT ?v (COUNT(DISTINCT ?r) AS ?n) WHERE {{ ?o ic:vcpu ?v ; ic:region ?r }} GROUP BY ?v HAVING (COUNT(?o) > {rng.randint(0, 3)})", False),
        lambda: ("SELECT (COUNT(*) AS ?n) (COUNT(?p) AS ?np) WHERE { ?o a ic:Offering OPTIONAL { ?o ic:pricePerHour ?p } }", False),
        lambda: ("SELECT DISTINCT ?v WHERE { ?o ic:vcpu ?v }", False),
        lambda: ("SELECT ?x WHERE { { ?x a ic:Region } UNION { ?x a ic:SLA } }", False),
        lambda: ("SELECT ?o WHERE { ?o a ic:Offering MINUS { ?o ic:sla ?s } }", False),
        lambda: ("SELECT ?o WHERE { ?o a ic:Offering FILTER NOT EXISTS { ?o ic:pricePerHour ?p } }", False),
        lambda: (f"SELECT ?o WHERE {{ ?o ic:vcpu ?v FILTER EXISTS {{ ?o ic:sla ?s FILTER(?v >= {v()}) }} }}", False),
        lambda: ("SELECT ?o ?m WHERE { ?o ic:pricePerHour ?p BIND(?p * 720 AS ?m) }", False),
        lambda: (f"SELECT ?o WHERE {{ VALUES ?v {{ {v()} {v()} }} ?o ic:vcpu ?v }}", False),
        lambda: ("SELECT ?o ?min WHERE { { SELECT (MIN(?p) AS ?min) WHERE { ?x ic:pricePerHour ?p } } ?o ic:pricePerHour ?min }", False),
        lambda: ("SELECT ?o ?c WHERE { ?o ic:region/ic:country ?c }", False),
        lambda: ("SELECT ?a ?b WHERE { ?a ic:successor+ ?b }", False),
        lambda: ("SELECT ?a ?b WHERE { ?a ic:successor* ?b }", False),
        lambda: ("SELECT ?r ?o WHERE { ?r ^ic:region ?o }", False),
        lambda: (f"SELECT ?o ?n WHERE {{ ?o ic:vcpu {v()} . ?o ic:successor* ?n }}", False),
        lambda: ("SELECT ?o ?r WHERE { ?o ic:sla ?s . ?o (ic:successor|^ic:successor)+/ic:region ?r }", False),
        lambda: ("SELECT ?o ?n WHERE { ?n ic:vcpu 16 . ?o ic:successor+ ?n }", False),
        lambda: ("SELECT ?o ?f WHERE { ?o ic:image/ic:imageFormat ?f }", False),
        lambda: ("SELECT ?n (LANG(?n) AS ?l) (UCASE(?n) AS ?u) (STRLEN(?n) AS ?len) WHERE { ?x ic:name ?n }", False),
        lambda: ("SELECT ?n WHERE { ?x ic:name ?n FILTER(LANGMATCHES(LANG(?n), \"en\")) }", False),
        lambda: ("SELECT ?n WHERE { ?x ic:name ?n FILTER(REGEX(STR(?n), \"^r\", \"i\")) }", False),
        lambda: ("SELECT ?o (CONCAT(STR(?v), \"x\", STR(?m)) AS ?shape) WHERE { ?o ic:vcpu ?v ; ic:memoryMiB ?m }", False),
        lambda: ("SELECT ?o (IF(?v > 4, \"big\", \"small\") AS ?size) (COALESCE(?p, -1) AS ?price) WHERE { ?o ic:vcpu ?v OPTIONAL { ?o ic:pricePerHour ?p } }", False),
        lambda: ("SELECT ?o (ROUND(?p * 10) AS ?r) (FLOOR(?p) AS ?f) (CEIL(?p) AS ?c) (ABS(-?p) AS ?a) WHERE { ?o ic:pricePerHour ?p }", False),
        lambda: ("SELECT ?r (GROUP_CONCAT(DISTINCT ?c; SEPARATOR=\",\") AS ?cs) WHERE { ?x ic:region ?r . ?r ic:country ?c } GROUP BY ?r", False),
        lambda: ("SELECT ?s ?p ?o WHERE { ?s ?p ?o FILTER(isBLANK(?s)) }", False),
        lambda: (f"ASK {{ ?o ic:vcpu {v()} ; ic:region/ic:country \"{c()}\" }}", False),
        lambda: ("CONSTRUCT { ?o ic:cheap true } WHERE { ?o ic:pricePerHour ?p FILTER(?p < 1) }", False),
        lambda: ("SELECT ?o WHERE { ?o ic:vcpu ?v FILTER(?v IN (1, 16)) }", False),
        lambda: ("SELECT ?x ?y WHERE { ?x ic:vcpu ?v . ?y ic:vcpu ?v FILTER(STR(?x) < STR(?y)) }", False),
        lambda: ("SELECT * WHERE { ?o ic:sla ?s . OPTIONAL { ?s ic:supportLevel ?l } FILTER(BOUND(?l)) }", False),
        lambda: ("SELECT ?big (COUNT(*) AS ?n) WHERE { ?o ic:vcpu ?v } GROUP BY (?v > 4 AS ?big)", False),
        lambda: ("SELECT ?r (AVG(?p) AS ?a) WHERE { ?o ic:region ?r ; ic:pricePerHour ?p } GROUP BY ?r HAVING (AVG(?p) > 1)", False),
        lambda: ("SELECT (COUNT(DISTINCT ?r) AS ?n) (COUNT(DISTINCT *) AS ?d) WHERE { ?o ic:region ?r }", False),
        lambda: ("SELECT ?r ?max WHERE { { SELECT ?r (MAX(?v) AS ?max) WHERE { ?o ic:region ?r ; ic:vcpu ?v } GROUP BY ?r } FILTER(?max > 4) }", False),
        lambda: ("SELECT ?n (STRBEFORE(STR(?n), \" \") AS ?b) (STRAFTER(STR(?n), \"-\") AS ?a) (SUBSTR(STR(?n), 2, 3) AS ?s) WHERE { ?x ic:name ?n }", False),
        lambda: ("SELECT ?n (REPLACE(STR(?n), \"[0-9]+\", \"#\") AS ?r) (ENCODE_FOR_URI(STR(?n)) AS ?e) WHERE { ?x ic:name ?n }", False),
        lambda: ("SELECT ?o (DATATYPE(?p) AS ?t) (isNUMERIC(?p) AS ?num) (sameTerm(?p, ?p) AS ?same) WHERE { ?o ic:pricePerHour ?p }", False),
        lambda: ("SELECT ?o WHERE { ?o ic:vcpu ?v FILTER(?v NOT IN (1, 2, 4)) }", False),
        lambda: ("SELECT ?o (xsd:integer(?p * 100) AS ?cents) (xsd:string(?v) AS ?sv) (STRDT(STR(?v), xsd:decimal) AS ?dv) WHERE { ?o ic:vcpu ?v ; ic:pricePerHour ?p }", False),
        lambda: ("SELECT ?x (LANG(?n) AS ?l) WHERE { ?x ic:name ?n FILTER(STRSTARTS(?n, \"offer\") || CONTAINS(LCASE(?n), \"region\")) }", False),
    ]
    while True:
        yield rng.choice(templates)()


def norm_value(kind, value, datatype=None, language=None):
    if kind == "bnode":
        return ("bnode",)
    if kind == "uri":
        return ("uri", value)
    if datatype in NUMERIC:
        try:
            if datatype in (XSD + "double", XSD + "float"):
                return ("num", round(float(value), 6))
            # Oxigraph keeps 18 fractional digits for xsd:decimal division, we keep more: compare
            # to 15 places.
            return ("num", decimal.Decimal(value).quantize(decimal.Decimal("1e-15")).normalize())
        except (ValueError, decimal.InvalidOperation):
            pass
    if language:
        return ("lit", value, None, language.lower())
    return ("lit", value, datatype or XSD + "string", None)


def ours(engine, data, query):
    proc = subprocess.run([engine, "query", "--data", data, "--query", query, "--format", "json"], capture_output=True, text=True)
    if proc.returncode != 0:
        return ("error", proc.stderr.strip())
    doc = json.loads(proc.stdout)
    if "boolean" in doc:
        return ("ask", doc["boolean"])
    if "triples" in doc:
        return ("graph", [tuple(norm_value(t["type"], t["value"], t.get("datatype"), t.get("xml:lang"))
                                for t in (tr["subject"], tr["predicate"], tr["object"])) for tr in doc["triples"]])
    names = doc["head"]["vars"]
    rows = []
    for b in doc["results"]["bindings"]:
        rows.append(tuple((n, norm_value(b[n]["type"], b[n]["value"], b[n].get("datatype"), b[n].get("xml:lang")) if n in b else None)
                          for n in sorted(names)))
    return ("rows", rows)


def oxi_term(term):
    if term is None:
        return None
    if isinstance(term, pyoxigraph.NamedNode):
        return norm_value("uri", term.value)
    if isinstance(term, pyoxigraph.BlankNode):
        return norm_value("bnode", term.value)
    return norm_value("literal", term.value, term.datatype.value if term.datatype else None, term.language)


def theirs(store, query):
    try:
        result = store.query(query)
    except Exception as error:  # noqa: BLE001
        return ("error", str(error))
    if isinstance(result, bool) or type(result).__name__ == "QueryBoolean":
        return ("ask", bool(result))
    if isinstance(result, pyoxigraph.QueryTriples):
        return ("graph", [(oxi_term(t.subject), oxi_term(t.predicate), oxi_term(t.object)) for t in result])
    names = sorted(v.value for v in result.variables)
    return ("rows", [tuple((n, oxi_term(s[n])) for n in names) for s in result])


def agree(a, b, ordered):
    if a[0] != b[0]:
        return False
    if a[0] in ("ask", "error"):
        return a[0] == "error" or a[1] == b[1]
    if a[0] == "graph":
        return collections.Counter(a[1]) == collections.Counter(b[1])
    if ordered:
        return a[1] == b[1]
    return collections.Counter(a[1]) == collections.Counter(b[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default=None)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    engine = args.engine or find_engine()
    rng = random.Random(args.seed)
    failures = 0
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        datasets = []
        for index, size in enumerate([5, 40, 200]):
            path = os.path.join(tmp, f"catalog{index}.ttl")
            text = catalog(args.seed * 100 + index, size)
            with open(path, "w") as f:
                f.write(text)
            store = pyoxigraph.Store()
            store.load(text.encode(), pyoxigraph.RdfFormat.TURTLE, base_iri="https://catalog.example.org/")
            datasets.append((path, store))
        generator = queries(rng)
        for _ in range(args.queries):
            body, ordered = next(generator)
            query = PREFIXES + body
            path, store = rng.choice(datasets)
            total += 1
            a, b = ours(engine, path, query), theirs(store, query)
            if not agree(a, b, ordered):
                failures += 1
                print(f"DIFFERENT on {os.path.basename(path)}:\n{body}\n  ours:   {str(a)[:400]}\n  oxigraph: {str(b)[:400]}\n")
    print(f"{total - failures} agreed, {failures} differed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
