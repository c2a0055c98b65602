"""benchmarks/bench_llm.py's accounting: the minimum bytes a decode step reads (the issue's
247 MB for the 700M configuration), the 2B-4T shape, and the in-memory random package the
tdsl rows deploy (no float model) generating through both head modes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_llm.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_llm_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def test_minimum_bytes_per_token(bench) -> None:
    p700 = bench.SIZES["700m"]
    assert bench.min_bytes(p700) == 594_542_592 // 4 + 2 * 32000 * 1536  # 246.9 MB: 2-bit projections, fp16 head
    assert bench.min_bytes(p700, int8_head=True) == 594_542_592 // 4 + 32000 * 1536 + 4 * 32000
    p2b = bench.SIZES["2b4t"]
    assert bench.projection_weights(p2b) == 30 * (2 * 2560 * 2560 + 2 * 2560 * 640 + 3 * 2560 * 6912)
    assert bench.parameters(p2b) - 128256 * 2560 == pytest.approx(2.41e9, rel=0.01)  # the published count, tied


@pytest.mark.parametrize("head", ["float", "int8"])
def test_random_package_generates(bench, head: str) -> None:
    from tdsl.backends.numba.generate import Generator

    p = {**bench.SIZES["tiny"], "swiglu": False, "gated": True, "base": 500000.0, "eps": 1e-5}
    pkg = bench.random_package(p)
    assert pkg.arrays["lm_head.weight"].dtype == np.float16 and "blocks.1.mlp.gate_proj.weight_packed" in pkg.arrays
    gen = Generator(pkg.deploy(), head=head)
    assert gen.head_bytes == 256 * 128 * (4 if head == "float" else 1) + (4 * 256 if head == "int8" else 0)
    assert len(gen.generate(np.array([[1, 2, 3]], np.int32), 4).tokens[0]) == 4
