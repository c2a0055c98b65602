"""The two accuracy-table commands run end to end on a tiny budget and write a well-formed
Markdown table plus the per-run JSON."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def table_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header, rule, *body = lines
    cols = len(header.strip("|").split("|"))
    assert re.fullmatch(r"\|(---\|)+", rule) and rule.count("---") == cols
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in body]
    assert all(len(r) == cols for r in rows)
    for r in rows:
        assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", r[4]), r
        assert re.fullmatch(r"[\d,]+", r[9]), r
    return rows


def test_digits_table_tiny(tmp_path: Path):
    out = tmp_path / "digits.md"
    assert load("accuracy_digits").main(["--seeds", "1", "--epochs", "1", "--ft-epochs", "1",
                                         "--models", "lenet", "--out", str(out),
                                         "--weights-dir", str(tmp_path / "w")]) == 0
    md = out.read_text()
    assert "Written by `" in md and "Machine:" in md
    rows = table_rows(md)
    assert len(rows) == 7  # fp32, 2 thresholds x 2 granularities, finetune, all-ternary
    assert {r[1] for r in rows} == {"lenet (image_size=8)"}
    assert any("absmean, per-tensor" in r[2] for r in rows)
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert len(runs) == 7 and not any("error" in r for r in runs)
    for r in runs:
        if "learned_scale" not in r["row"]:
            assert r["accuracy"] == r["frozen_accuracy"]


def test_mnist1d_table_tiny(tmp_path: Path):
    out = tmp_path / "mnist1d.md"
    assert load("accuracy_mnist1d").main([
        "--seeds", "1", "--epochs", "1", "--ft-epochs", "1", "--digits-epochs", "1",
        "--recipes", "scratch,finetune+distill+long", "--policies", "default",
        "--out", str(out), "--weights-dir", str(tmp_path / "w")]) == 0
    md = out.read_text()
    rows = table_rows(md)
    recipes = [(r[2].split(",")[0], r[3]) for r in rows if r[0] == "mnist1d"]
    assert recipes == [("fp32", "fp32"), ("ternary / default", "scratch"),
                       ("ternary / default", "finetune+distill+long")]
    assert [r[0] for r in rows[-2:]] == ["digits", "digits"]  # the smoke rows
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["runs"]) == 5 and not any("error" in r for r in data["runs"])
    assert data["meta"]["seeds"] == [0]
    assert not (tmp_path / "mnist1d_digits_smoke.md").exists()
