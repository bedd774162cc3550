#!/usr/bin/env python3
"""Synthetic Intercloud catalog in N-Triples: clouds, regions, SLAs and offerings (instance types
with vCPU, memory, disk, price per hour, currency, region, optional SLA), ~10 triples per offering.

usage: generate.py TRIPLES OUTPUT.nt [SEED]"""
import random
import sys

IC = "https://intercloud.example.org/ontology#"
RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
XSD = "http://www.w3.org/2001/XMLSchema#"
COUNTRIES = ["DE", "FR", "NL", "IE", "SE", "PL", "IT", "ES", "US", "JP"]


def iri(local):
    return f"<https://catalog.example.org/{local}>"


def p(name):
    return f"<{IC}{name}>"


def lit(value, datatype=None):
    if datatype:
        return f'"{value}"^^<{XSD}{datatype}>'
    return f'"{value}"'


def generate(target, seed=42):
    rng = random.Random(seed)
    triples = []
    regions = max(4, min(40, target // 2500))
    clouds = max(2, regions // 4)
    slas = 8
    for c in range(clouds):
        triples.append((iri(f"cloud/{c}"), RDF_TYPE, p("Cloud")))
        triples.append((iri(f"cloud/{c}"), p("xmppAddress"), lit(f"broker@cloud{c}.test")))
    for r in range(regions):
        region = iri(f"region/{r}")
        triples.append((region, RDF_TYPE, p("Region")))
        triples.append((region, p("name"), lit(f"region-{r}")))
        triples.append((region, p("country"), lit(COUNTRIES[r % len(COUNTRIES)])))
        triples.append((iri(f"cloud/{r % clouds}"), p("hasRegion"), region))
    for s in range(slas):
        sla = iri(f"sla/{s}")
        triples.append((sla, RDF_TYPE, p("SLA")))
        triples.append((sla, p("availability"), lit(f"0.{990 + s}", "decimal")))
        triples.append((sla, p("supportLevel"), lit("24x7" if s % 2 else "business-hours")))
    o = 0
    while len(triples) < target:
        offering = iri(f"offering/{o}")
        vcpu = rng.choice([1, 2, 4, 8, 16, 32, 64])
        price = round(vcpu * rng.uniform(0.01, 0.08), 4)
        triples.append((offering, RDF_TYPE, p("Offering")))
        triples.append((offering, p("name"), lit(f"type-{o % 97}.{vcpu}x")))
        triples.append((offering, p("vcpu"), lit(vcpu, "integer")))
        triples.append((offering, p("memoryMiB"), lit(vcpu * rng.choice([1024, 2048, 4096, 8192]), "integer")))
        triples.append((offering, p("diskGiB"), lit(rng.choice([20, 40, 80, 160, 320]), "integer")))
        triples.append((offering, p("pricePerHour"), lit(f"{price:.4f}", "decimal")))
        triples.append((offering, p("currency"), lit("EUR")))
        triples.append((offering, p("region"), iri(f"region/{rng.randrange(regions)}")))
        triples.append((offering, p("operatedBy"), iri(f"cloud/{rng.randrange(clouds)}")))
        if rng.random() < 0.5:
            triples.append((offering, p("sla"), iri(f"sla/{rng.randrange(slas)}")))
        o += 1
    return triples[:target] if len(triples) > target else triples


if __name__ == "__main__":
    count = int(sys.argv[1])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 42
    with open(sys.argv[2], "w") as out:
        for s, pr, ob in generate(count, seed):
            out.write(f"{s} {pr} {ob} .\n")
