"""pytest entry for the Catalog differential test against pyoxigraph (see catalog_differential.py).

Runs the generated catalogs and queries through `sparql-conformance query` (SPARQL_CONFORMANCE, or
.build/debug/sparql-conformance) and pyoxigraph, and fails on the first disagreement report."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pyoxigraph comes from PyPI through scripts/setup.sh; a missing one fails the run (no skip).
import pyoxigraph  # noqa: E402,F401
import catalog_differential  # noqa: E402


@pytest.mark.parametrize("seed", [7, 11])
def test_engine_agrees_with_pyoxigraph(seed, monkeypatch, capsys):
    engine = catalog_differential.find_engine()
    monkeypatch.setattr(sys, "argv", ["catalog_differential.py", "--engine", engine, "--queries", "150", "--seed", str(seed)])
    status = catalog_differential.main()
    output = capsys.readouterr().out
    assert status == 0, output
