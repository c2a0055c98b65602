"""benchmarks/bench_llm.py's accounting: the minimum bytes a decode step reads (the issue's
247 MB for the 700M configuration), the 2B-4T shape, and the in-memory random package the
tdsl rows deploy (no float model) generating through every head mode, and the report (its
honest fraction of the bandwidth, the hand-written notes kept when the table is rewritten)."""
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
    # 246.9 MB: 2-bit projections, fp16 head, one float32 embedding row
    assert bench.min_bytes(p700) == 594_542_592 // 4 + 2 * 32000 * 1536 + 4 * 1536
    assert bench.min_bytes(p700, "int8") == 594_542_592 // 4 + 32000 * 1536 + 4 * 32000 + 4 * 1536
    p2b = bench.SIZES["2b4t"]
    assert bench.projection_weights(p2b) == 30 * (2 * 2560 * 2560 + 2 * 2560 * 640 + 3 * 2560 * 6912)
    assert bench.parameters(p2b) - 128256 * 2560 == pytest.approx(2.41e9, rel=0.01)  # the published count, tied


@pytest.mark.parametrize("head, head_bytes", [("auto", 256 * 128 * 2), ("float", 256 * 128 * 4),
                                              ("int8", 256 * 256 + 4 * 256)])  # int8: 4 planes of 64 a row
def test_random_package_generates(bench, head: str, head_bytes: int) -> None:
    from tdsl.backends.numba.generate import Generator

    p = {**bench.SIZES["tiny"], "swiglu": False, "gated": True, "base": 500000.0, "eps": 1e-5}
    pkg = bench.random_package(p)
    assert pkg.arrays["lm_head.weight"].dtype == np.float16 and "blocks.1.mlp.gate_proj.weight_packed" in pkg.arrays
    gen = Generator(pkg.deploy(), head=head)
    assert gen.head_bytes == head_bytes and gen.head == {"auto": "fp16"}.get(head, head)
    assert len(gen.generate(np.array([[1, 2, 3]], np.int32), 4).tokens[0]) == 4


def test_report_states_the_fraction_of_bandwidth_and_keeps_the_notes(bench, tmp_path: Path) -> None:
    from argparse import Namespace

    args = Namespace(prompt=64, decode=16, repeats=3, threads=2, sizes=["700m"], out=tmp_path)
    (tmp_path / "bench_llm.md").write_text("# old table\n\n## Notes\n\nprofile: kept\n", encoding="utf-8")
    p = bench.SIZES["700m"]
    rows = [{"size": "700m", "contender": "tdsl-b158", "head": "fp16", "params": bench.parameters(p),
             "prefill_s": 0.32, "decode_s": 0.01, "weight_bytes": 250e6, "min_bytes": bench.min_bytes(p)},
            {"size": "700m", "contender": "torch-int8dyn", "head": "int8dyn", "params": bench.parameters(p),
             "prefill_s": 0.16, "decode_s": 0.05, "weight_bytes": 644e6, "min_bytes": 644e6}]
    bench.report(rows, 35e9, args)
    text = (tmp_path / "bench_llm.md").read_text(encoding="utf-8")
    tdsl_row = next(line for line in text.splitlines() if "| tdsl-b158 " in line)
    # 246.9 MB x 100 tokens/s over 35 GB/s = 71 %; 5x int8 dynamic's decode, half its prefill rate
    assert "| 247 " in tdsl_row and "| 71% " in tdsl_row and "| 5.00x " in tdsl_row and "| 0.50x " in tdsl_row
    assert "# old table" not in text and text.endswith("## Notes\n\nprofile: kept\n")


def test_profile_times_every_part_of_a_decode_step_and_a_prefill(bench) -> None:
    from argparse import Namespace

    p = bench.SIZES["tiny"]
    r = bench.child_profile(p, Namespace(prompt=8, decode=3, repeats=2))
    assert r["head_mode"] == "fp16" and set(bench.PARTS) <= set(r) and set(bench.PARTS) <= set(r["prefill"])
    for parts in (r, r["prefill"]):
        assert all(parts[part] > 0 for part in ("projections", "head", "attention", "norms", "rope"))
        assert sum(parts[part] for part in bench.PARTS[:-1]) <= 1.5 * parts["total"]
    text = bench.profile_table("tiny", r, Namespace(threads=2, decode=3, prompt=8, repeats=2))
    assert text.count("| projections ") == 2 and "prefill of 8 tokens" in text
