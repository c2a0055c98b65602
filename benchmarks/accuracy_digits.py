"""Digits accuracy table: FP32 vs ternary QAT, TWN vs absmean thresholds, per-tensor vs
per-channel scales, for the zoo MLP and LeNet (Issue A).

    python benchmarks/accuracy_digits.py                          # the full table (5 seeds)
    python benchmarks/accuracy_digits.py --seeds 1 --epochs 1 --out /tmp/t.md   # smoke

Data: scikit-learn's 8x8 digits, the fixed stratified 80/20 split of `load_digits(seed=0)`
(1437 train / 360 test; one test image is 0.28 points). Batch 64, AdamW without weight decay,
cosine LR, the same budget for every row. Ternary rows use the default precision policy
(first and last layer kept at fp16) and QAT from scratch; two more rows per model show
fine-tuning from the FP32 model and the all-ternary policy.
Writes docs/results/accuracy_digits.md and .json (per-run figures) next to it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_common import REPO, Row, Settings, run_grid  # noqa: E402

MODELS = {"mlp": (), "lenet": (("image_size", 8),)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    ap.add_argument("--epochs", type=int, default=40, help="epochs of every row (23 steps each)")
    ap.add_argument("--ft-epochs", type=int, default=20, help="epochs of the fine-tuning row")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", default="mlp,lenet")
    ap.add_argument("--no-extra", action="store_true", help="only the threshold/scale grid")
    ap.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs of the JSON file")
    ap.add_argument("--weights-dir", help="where the FP32 weights of each seed go (default: under $TDSL_CACHE)")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "accuracy_digits.md"))
    a = ap.parse_args(argv)

    rows: list[Row] = []
    for m in [s.strip() for s in a.models.split(",") if s.strip()]:
        params = MODELS[m]
        rows.append(Row("digits", m, params=params, epochs=a.epochs, lr=a.lr))
        for threshold in ("twn", "absmean"):
            for per_channel in (False, True):
                rows.append(Row("digits", m, "ternary", "default", threshold, per_channel, "scratch", params,
                                a.epochs, a.lr))
        if not a.no_extra:
            rows.append(Row("digits", m, "ternary", "default", "twn", True, "finetune", params, a.ft_epochs, a.ft_lr))
            rows.append(Row("digits", m, "ternary", "all", "twn", True, "scratch", params, a.epochs, a.lr))
    notes = [
        f"Setup: scikit-learn digits, fixed split `load_digits(seed=0)` (1437 train / 360 test: one test "
        f"image = 0.28 points); batch {a.batch_size}, AdamW without weight decay, cosine LR, {a.epochs} "
        f"epochs at lr {a.lr} for FP32 and every `scratch` row; `finetune` starts from the FP32 model of the "
        f"same seed and trains {a.ft_epochs} epochs at lr {a.ft_lr}. Seeds vary initialisation, dropout and "
        "data order. Std is the sample std over seeds.",
        "",
        "Precision: `default` keeps the first and last layer at fp16 and makes the rest ternary; `all` makes "
        "every weight ternary. Thresholds: `twn` Δ = 0.7·mean|W|, `absmean` Δ = mean|W|/2; scales per "
        "output channel or one per tensor. Accuracy is the QAT module's in eval mode (the frozen, packed "
        "model's, in the JSON, is the same).",
        "",
        "Size: bytes of the frozen state dict from `FrozenModel.memory_report()`; sparsity: fraction of "
        "zero trits over the ternary layers.",
    ]
    run_grid(rows, list(range(a.seeds)), Settings(batch_size=a.batch_size, threads=a.threads, data_seed=0),
             Path(a.out), "Digits: FP32 vs ternary QAT (thresholds and scale granularity)", notes, a.jobs, a.resume,
             a.weights_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
