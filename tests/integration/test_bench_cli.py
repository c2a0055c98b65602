"""`tdsl bench kernels --quick` runs the kernel benchmark end to end on a tiny shape.

Checks the outputs are produced and well formed (table, JSON, PNG), never the times.
"""
from __future__ import annotations

import json
from pathlib import Path

from tdsl.tools.tdsl_cli import main

LIBS = {"torch-fp32", "torch-bf16", "torch-int8", "tdsl-portable"}


def test_bench_kernels_quick_writes_table_json_and_plot(tmp_path: Path, capfd) -> None:
    assert main(["bench", "kernels", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    header = "| K x N   | B | regime | path     | tdsl ms | fp32 ms |"
    assert header in out
    assert header in (tmp_path / "bench_kernels.md").read_text()

    data = json.loads((tmp_path / "bench_kernels.json").read_text())
    assert data["benchmark"] == "kernels" and data["quick"] is True
    machine = data["machine"]
    assert machine["threads"] == 2 and machine["cpu_model"]
    assert {"numpy", "numba", "torch"} <= set(machine["versions"])
    assert data["roofline"]["roofline_gb_s"] > 0
    libs = {m["lib"] for m in data["measurements"]}
    assert LIBS <= libs
    assert {(m["batch"], m["regime"]) for m in data["measurements"]} == {
        (1, "warm"), (1, "cold"), (8, "warm"), (8, "cold")}
    for m in data["measurements"]:
        assert m["median_ms"] > 0 and m["n"] >= 1
        assert m["rel_err_ref"] < 0.1
    for row in data["rows"]:
        assert row["verdict"] in ("PASS", "MISS", "-")
        assert row["x_fp32"] > 0 and row["x_int8"] > 0
        assert row["rel_err_torch_fp32"] < 0.1
    cold1 = [r for r in data["rows"] if (r["batch"], r["regime"], r["path"]) == (1, "cold", "portable")]
    assert [c["metric"] for c in cold1[0]["checks"]] == ["x_fp32", "x_int8"]

    png = (tmp_path / "bench_kernels.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bench_models_quick_compares_every_contender_in_one_run(tmp_path: Path, capfd) -> None:
    """`tdsl bench models --quick`: every contender of each workload measured in both modes,
    checked against torch fp32, with the issue's targets, sizes, table and plot."""
    assert main(["bench", "models", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "### Interleaved" in out and "### Alone" in out and "### Targets" in out
    data = json.loads((tmp_path / "bench_models.json").read_text())
    assert data["benchmark"] == "models" and data["quick"] is True
    cnn = {"tdsl-default", "tdsl-all", "torch-fp32", "ort-fp32", "ort-int8", "ort-ternary"}
    want = {"resnet18": cnn, "linear4096": cnn - {"tdsl-default"} | {"torch-int8"}}
    assert {(r["workload"], r["batch"]) for r in data["rows"]} == {
        ("resnet18", 1), ("resnet18", 2), ("linear4096", 1), ("linear4096", 8)}
    for row in data["rows"]:
        for mode in ("interleaved", "alone"):
            assert set(row["stats"][mode]) == want[row["workload"]]
            assert all(s["median_ms"] > 0 and s["n"] == 1 for s in row["stats"][mode].values())
        # ours and the reference agree; another library's quantisation is reported as it is
        # (onnxruntime 1.32's quantize_static of the linear stack disagrees: 0.81)
        assert all(a["rel_err"] < 0.25 for c, a in row["agreement"].items() if c.startswith("tdsl") or c == "torch-fp32")
        assert all(0 <= a["rel_err"] < float("inf") for a in row["agreement"].values())
        assert row["bytes"]["ort-ternary"] * 10 <= row["bytes"]["ort-fp32"]
        targets = {t["target"] for t in row["targets"]["alone"]}
        assert "ort-ternary / ort-fp32 speed" in targets
    png = (tmp_path / "bench_models.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
