"""The benchmark scripts are not run by the suite, but they must keep importing: they
reuse test helpers (servers, ports) that change with the tests."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = sorted(
    p.stem for p in (Path(__file__).parents[1] / "bench").glob("*.py") if p.stem != "__init__"
)


@pytest.mark.parametrize("name", BENCH)
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
