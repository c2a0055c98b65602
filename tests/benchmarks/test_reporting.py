"""The benchmark reports on made-up measurements: disturbed and above-roofline figures are
marked and explained, the plots are drawn with their spreads, progress lines give an ETA,
and a child above its memory bound is stopped. No timing is asserted (nothing is timed)."""
from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_cnn_int8  # noqa: E402
import bench_kernels  # noqa: E402
import bench_models  # noqa: E402
import common  # noqa: E402

ROOF = 10.0  # GB/s


def timing(shape: str, lib: str, batch: int, regime: str, median: float, p10: float, p90: float) -> dict:
    K, N = (int(v) for v in shape.split("x"))
    fmt = bench_kernels.FORMAT_OF[lib]
    wbytes = int(bench_kernels.BYTES_PER_WEIGHT[fmt] * K * N)
    return {"shape": shape, "K": K, "N": N, "lib": lib, "batch": batch, "regime": regime,
            "median_ms": median, "p10_ms": p10, "p90_ms": p90, "min_ms": p10, "n": 5,
            "weight_bytes": wbytes, "layers": 4, "set_bytes": wbytes * 4, "rel_err_ref": 1e-6}


@pytest.fixture
def measurements() -> list[dict]:
    shape = "1024x1024"  # 2-bit: 262144 bytes; 0.01 ms -> 26 GB/s, above ROOF
    ms = []
    for regime in ("warm", "cold"):
        ms += [timing(shape, "torch-fp32", 1, regime, 1.0, 0.9, 1.1),
               timing(shape, "torch-bf16", 1, regime, 2.0, 0.5, 4.0),   # disturbed
               timing(shape, "torch-int8", 1, regime, 0.5, 0.45, 0.55),
               timing(shape, "tdsl-portable", 1, regime, 0.01 if regime == "warm" else 0.05, 0.009, 0.011)]
    return ms


def test_tables_mark_disturbed_and_above_roofline_and_explain_both(measurements: list[dict]) -> None:
    rows = bench_kernels.derive_rows(measurements, ROOF)
    table = bench_kernels.rows_table(rows)
    warm = next(line for line in table.splitlines() if "| warm" in line)
    cells = [c.strip() for c in warm.split("|")[1:-1]]
    header = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    row = dict(zip(header, cells))
    assert row["bf16 ms"] == "2.000~" and row["x bf16"] == "200.0~"   # a ratio on a disturbed timing
    assert row["fp32 ms"] == "1.000" and row["x fp32"] == "100.0"
    assert row["% roof"] == "262^"                                      # 26.2 GB/s over a 10 GB/s roofline
    cold = dict(zip(header, [c.strip() for c in next(
        line for line in table.splitlines() if "| cold" in line).split("|")[1:-1]]))
    assert cold["% roof"] == "52"
    notes = common.footnotes(table, bench_kernels.baselines_table(measurements, ROOF))
    assert notes.splitlines() == [common.FOOTNOTES["~"], common.FOOTNOTES["^"]]
    assert "served from cache" in notes and "p90 > 1.5 x p10" in notes
    assert common.footnotes("| 1.0 | 2.0 |") == ""


def test_plot_draws_spreads_marks_and_a_caption(measurements: list[dict], tmp_path: Path) -> None:
    rows = bench_kernels.derive_rows(measurements, ROOF)
    path = tmp_path / "k.png"
    bench_kernels.plot(rows, measurements, ROOF, path, "test")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["k.png"]  # the temporary file was renamed


def test_plot_legends_leave_the_roofline_uncovered(measurements: list[dict], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every legend sits outside its axes; the caption explains the target marks and, once a
    B = 1 cold bar is above the roofline, the `^` mark."""
    import matplotlib.pyplot as plt

    import plots

    seen = {}

    def keep(fig, path, caption):
        seen["fig"], seen["caption"] = fig, caption
    monkeypatch.setattr(plots, "save", keep)  # to inspect the figure before it is written
    bench_kernels.plot(bench_kernels.derive_rows(measurements, ROOF), measurements, ROOF, tmp_path / "x.png", "t")
    assert plots.ROOF_CAPTION not in seen["caption"]  # the cold tdsl bar is at 52 %
    plt.close(seen["fig"])
    measurements[-1].update(median_ms=0.01, p10_ms=0.009, p90_ms=0.011)
    bench_kernels.plot(bench_kernels.derive_rows(measurements, ROOF), measurements, ROOF, tmp_path / "x.png", "t")
    fig = seen["fig"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(frame), ax.get_title()
    assert plots.TARGET_CAPTION in seen["caption"] and plots.ROOF_CAPTION in seen["caption"]
    plt.close(fig)


def test_progress_lines_give_an_eta_weighted_by_cost() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = common.Progress([1, 3], stream=out, now=lambda: now[0])
    progress.step("small")
    now[0] = 10.0
    progress.step("big")   # 10 s for weight 1 -> 30 s for the weight 3 still to go
    now[0] = 40.0
    progress.finish()
    assert out.getvalue().splitlines() == ["[1/2] small (elapsed 0:00, ETA unknown)",
                                           "[2/2] big (elapsed 0:10, ETA 0:30)",
                                           "[done] 2 steps (elapsed 0:40, ETA 0:00)"]


def test_a_child_above_its_memory_bound_is_stopped(tmp_path: Path) -> None:
    hog = tmp_path / "hog.py"
    hog.write_text("import time\nblock = bytearray(400 * 2**20)\nfor i in range(0, len(block), 4096):\n"
                   "    block[i] = 1\ntime.sleep(30)\n")
    with pytest.raises(RuntimeError, match=r"used 0\.\d+ GiB, above the bound of 0\.10 GiB \(--max-mem-gib\)"):
        common.run_child(hog, [], threads=1, mem_limit=int(0.1 * 2**30))


def test_a_child_within_its_bound_reports_its_peak(tmp_path: Path) -> None:
    child = tmp_path / "ok.py"
    child.write_text("import json, time\nblock = bytearray(50 * 2**20)\nfor i in range(0, len(block), 4096):\n"
                     "    block[i] = 1\ntime.sleep(0.6)\nprint(json.dumps({'x': 1}))\n")
    result = common.run_child(child, [], threads=1, mem_limit=2**30)
    assert result["x"] == 1 and 40 * 2**20 < result["peak_rss_bytes"] < 2**30


def test_models_tables_and_plot_mark_disturbed_timings(tmp_path: Path) -> None:
    def stats(median: float, p10: float, p90: float) -> dict:
        return {"median_ms": median, "p10_ms": p10, "p90_ms": p90, "min_ms": p10, "n": 5}
    rows = [{"workload": "linear4096", "batch": B, "stats": {mode: {
        "tdsl-default": stats(1.0, 0.9, 1.1), "torch-fp32": stats(5.0, 2.0, 9.0)} for mode in ("interleaved", "alone")}}
        for B in (1, 8)]
    table = bench_models.tables(rows, "alone")
    assert "| 1.00 " in table and "| 5.00~" in table
    assert common.footnotes(table) == common.FOOTNOTES["~"]
    bench_models.plot(rows, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_memory_guard_stops_a_run_above_its_bound(tmp_path: Path) -> None:
    script = tmp_path / "hog.py"
    script.write_text(f"import sys, time\nsys.path.insert(0, {str(Path(common.__file__).parent)!r})\n"
                      "import common\nwith common.MemoryGuard(limit=2**20):\n    time.sleep(10)\nprint('not stopped')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "not stopped" not in out.stdout
    assert "above its bound of 0.00 GiB (--max-mem-gib)" in out.stderr
    with common.MemoryGuard(limit=0) as guard:  # no bound: only measures
        time.sleep(0.6)
    assert guard.peak > 10 * 2**20


def test_cnn_int8_tables_give_median_and_quickest_ratios_and_keep_the_notes() -> None:
    def q(rounds: list[float], p10s: list[float]) -> dict:
        mid = sorted(range(len(rounds)), key=lambda i: rounds[i])[(len(rounds) - 1) // 2]
        return {"median": rounds[mid], "p10": p10s[mid], "p90": rounds[mid] * 1.1, "rounds": rounds,
                "best_p10": min(p10s)}

    rows = [{"workload": "resnet18", "batch": 1, "quiet": {
        "tdsl-nhwc-default": q([5.0, 9.0, 6.0], [4.8, 8.0, 5.0]), "tdsl-nhwc-all": q([4.0, 8.0, 5.0], [3.0, 7.0, 4.5]),
        "ort-int8": q([6.0, 6.0, 12.0], [4.5, 5.5, 11.0])}}]
    text = bench_cnn_int8.table(rows, ("tdsl-nhwc-default", "tdsl-nhwc-all", "ort-int8"))
    median_row, quickest_row = [line for line in text.splitlines() if line.startswith("| resnet18")]
    assert "| 1.20x | 1.00x |" in median_row  # 6.0 / 5.0 and 6.0 / 6.0 (the median rounds)
    assert "| 4.80 | 3.00 | 4.50 | 1.50x | 0.94x |" in quickest_row  # fastest p10s: 4.5 / 3.0, 4.5 / 4.8
    paired = [{"workload": "mobilenetv2", "batch": 8, "quiet": {  # paired turns: the turns' ratio, not the medians'
        "tdsl-nhwc-all": {"median": 10.0, "p10": 9.0, "p90": 11.0, "turns": [10.0], "vs_ort": 1.07},
        "ort-int8": {"median": 9.0, "p10": 8.0, "p90": 10.0, "turns": [9.0], "vs_ort": 1.0}}}]
    text = bench_cnn_int8.table(paired, ("tdsl-nhwc-all", "ort-int8"))
    assert "| mobilenetv2 | 8 | 10.00 | 9.00 | 1.07x | - | - |" in text and "Quickest" not in text
    old = "# old title\n\nold table\n\n## Reading\n\nhand notes\n"
    assert bench_cnn_int8.with_notes("# new\n", old) == "# new\n\n## Reading\n\nhand notes\n"
    assert bench_cnn_int8.with_notes("# new\n", "") == "# new\n"
