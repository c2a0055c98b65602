"""`tdsl train` in-process, as a user would run it."""
import json
import re
from pathlib import Path

import pytest

from tdsl.tools.tdsl_cli import main


def accuracy(out: str) -> float:
    m = re.search(r"test accuracy: ([\d.]+)%", out)
    assert m, out
    return float(m.group(1)) / 100


def epochs_logged(out_dir: Path) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "epoch"]


def test_train_mlp_on_digits(tmp_path: Path, capsys) -> None:
    rc = main(["train", "mlp", "--epochs", "3", "--out", str(tmp_path), "--no-progress",
               "--schedule", "cosine", "--warmup-steps", "5", "--log-every", "10"])
    out = capsys.readouterr().out
    assert rc == 0
    assert accuracy(out) > 0.8
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step-000000023", "step-000000046", "step-000000069"]
    assert [r["epoch"] for r in epochs_logged(tmp_path)] == [1, 2, 3]
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [10, 20, 30, 40, 50, 60]
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_the_same_run(tmp_path: Path, capsys) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", "mlp", "--epochs", "2", "--out", str(full), "--no-progress"]) == 0
    assert main(["train", "mlp", "--epochs", "1", "--out", str(split), "--no-progress"]) == 0
    assert main(["train", "mlp", "--epochs", "2", "--out", str(split), "--no-progress",
                 "--resume", str(split / "checkpoints")]) == 0
    capsys.readouterr()
    assert len(epochs_logged(full)) == 2
    assert epochs_logged(full) == [dict(r, time=a["time"]) for r, a in
                                   zip(epochs_logged(split), epochs_logged(full))]


def test_lenet_with_image_size_8(tmp_path: Path, capsys) -> None:
    rc = main(["train", "lenet", "--param", "image_size=8", "--epochs", "1", "--batch-size", "128",
               "--optimizer", "adamw", "--out", str(tmp_path), "--no-progress", "--keep-last", "1"])
    assert rc == 0
    assert 0.0 <= accuracy(capsys.readouterr().out) <= 1.0


@pytest.mark.parametrize("args,message", [
    (["mlp", "--param", "in_features=784"],
     r"takes inputs \[N, 784\] but dataset 'digits' has samples of shape \[64\].*lenet --param image_size=8"),
    (["lenet", "--param", "image_size=28"], r"takes inputs \[N, 1, 28, 28\]"),
    (["mlp", "--param", "num_classes=5"], "has 5 outputs but dataset 'digits' has 10 classes"),
    (["mlp", "--param", "oops"], "--param expects NAME=VALUE"),
    (["mlp", "--resume", "/nonexistent/ckpt"], "no such checkpoint"),
    (["mlp", "--dataset", "/nonexistent.npz"], "no such dataset"),
    (["mlp", "--epochs", "0"], "argument --epochs: 0 is out of range: expected a number of epochs from 1"),
    (["mlp", "--clip-norm", "-1"], "argument --clip-norm: '-1' is out of range"),
])
def test_user_errors(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    rc = main(["train", *args, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_bad_choice_exits_1(capsys) -> None:
    assert main(["train", "mlp", "--optimizer", "lion"]) == 1
    assert "invalid choice" in capsys.readouterr().err


def test_registering_train_does_not_import_torch() -> None:
    """The `tdsl` CLI registers `train` for every command; torch loads only when training."""
    import subprocess
    import sys

    code = ("import sys; from tdsl.tools.tdsl_cli import build_parser; build_parser(); "
            "import tdsl.train; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3]).stdout
    assert out.strip() == "False"
