#!/usr/bin/env python3
"""Catalog benchmark: our SPARQL engine (release build, via `sparql-conformance bench`) against
pyoxigraph and rdflib on the same generated catalogs, in the same run. Prints a Markdown table of
medians (ms) and writes it to RESULTS.md when --write is given.

usage: bench.py --engine PATH [--sizes 1000,10000,100000] [--runs 7] [--write]"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402

SHAPES = ["filter", "join-region", "optional-sla", "order-limit", "count-by-region"]


def query_text(shape):
    with open(os.path.join(HERE, "queries", shape + ".rq")) as f:
        return f.read()


def timed(fn, runs):
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def bench_ours(engine, path, runs):
    args = [engine, "bench", "--data", path, "--runs", str(runs)]
    for shape in SHAPES:
        args += ["--query", f"{shape}=@{os.path.join(HERE, 'queries', shape + '.rq')}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    return data["load_ms"], {s: (data["queries"][s]["median_ms"], data["queries"][s]["rows"]) for s in SHAPES}


def bench_oxigraph(path, runs):
    import pyoxigraph

    def load():
        store = pyoxigraph.Store()
        with open(path, "rb") as f:
            store.bulk_load(f, pyoxigraph.RdfFormat.N_TRIPLES)
        return store

    load_ms, store = timed(load, max(1, runs // 2))
    results = {}
    for shape in SHAPES:
        text = query_text(shape)
        ms, rows = timed(lambda: len(list(store.query(text))), runs)
        results[shape] = (ms, rows)
    return load_ms, results


def bench_rdflib(path, runs):
    import rdflib
    from rdflib.plugins.sparql import prepareQuery

    def load():
        graph = rdflib.Graph()
        graph.parse(path, format="nt")
        return graph

    load_ms, graph = timed(load, 1)
    results = {}
    for shape in SHAPES:
        prepared = prepareQuery(query_text(shape))
        ms, rows = timed(lambda: len(list(graph.query(prepared))), runs)
        results[shape] = (ms, rows)
    return load_ms, results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rdflib-runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    import pyoxigraph
    import rdflib

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"pyoxigraph {pyoxigraph.__version__}, rdflib {rdflib.__version__}; medians of {args.runs} runs "
        f"({args.rdflib_runs} for rdflib, load: median of {max(1, args.runs // 2)}, rdflib 1).",
        "Times in ms; ratio = ours / pyoxigraph (≤ 1.0 means we are at least as fast). Load = parse + index.",
        "",
        "| triples | shape | ours | pyoxigraph | rdflib | ratio | rows |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            path = os.path.join(tmp, f"catalog-{size}.nt")
            with open(path, "w") as out:
                for s, p, o in generate.generate(size):
                    out.write(f"{s} {p} {o} .\n")
            our_load, ours = bench_ours(args.engine, path, args.runs)
            ox_load, ox = bench_oxigraph(path, args.runs)
            rl_load, rl = bench_rdflib(path, args.rdflib_runs)
            lines.append(f"| {size} | load | {our_load:.1f} | {ox_load:.1f} | {rl_load:.1f} | {our_load / ox_load:.2f} | |")
            for shape in SHAPES:
                rows_ok = ours[shape][1] == ox[shape][1] == rl[shape][1]
                rows = str(ours[shape][1]) if rows_ok else f"MISMATCH {ours[shape][1]}/{ox[shape][1]}/{rl[shape][1]}"
                lines.append(f"| {size} | {shape} | {ours[shape][0]:.2f} | {ox[shape][0]:.2f} | {rl[shape][0]:.1f} | "
                             f"{ours[shape][0] / ox[shape][0]:.2f} | {rows} |")
            print("\n".join(lines[-6:]), flush=True)
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write("# Catalog benchmark\n\nCommand: `bench/catalog/run.sh` (release build, then "
                    "`bench/catalog/bench.py --engine .build-catalog-release/release/sparql-conformance --write`).\n\n"
                    "Queries: `bench/catalog/queries/*.rq`; data: `bench/catalog/generate.py` (N-Triples).\n\n")
            f.write(table + "\n")


if __name__ == "__main__":
    main()
