"""MNIST-1D accuracy table: FP32 vs ternary QAT for each training recipe (Issue B).

    python benchmarks/accuracy_mnist1d.py                       # the full table (5 seeds)
    python benchmarks/accuracy_mnist1d.py --seeds 1 --epochs 1 --ft-epochs 1 --out /tmp/t.md  # smoke

Models: the MNIST-1D CNN (`mnist1d_cnn`, Greydanus 2020) and MLP (`mnist1d_mlp`); data:
`load_mnist1d(42)` (4000 train / 1000 test; `--data-seed` for another draw); batch 100, AdamW (no weight
decay), cosine LR.
FP32 and `scratch` train `--epochs` (150 epochs = 6000 steps, the published budget); the
fine-tuning recipes start from the FP32 model of the same seed and train `--ft-epochs` at
`--ft-lr`. Rows: FP32, then for each policy (`default`: first conv and last linear kept at
fp16, the rest ternary; `all`: every weight ternary) every recipe in `--recipes`. A digits
smoke row (the zoo MLP, FP32 and default-policy ternary) closes the table.
Writes docs/results/accuracy_mnist1d.md and .json (per-run figures) next to it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_common import REPO, Row, Settings, run_grid  # noqa: E402

DEFAULT_RECIPES = "scratch,finetune,finetune+learned_scale,calibrate,finetune+distill,finetune+long"
MODELS = {"cnn": ("mnist1d_cnn", ()), "cnn_bn": ("mnist1d_cnn", (("batch_norm", True),)),
          "mlp": ("mnist1d_mlp", ())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    ap.add_argument("--epochs", type=int, default=150, help="FP32 and scratch epochs (40 steps each)")
    ap.add_argument("--ft-epochs", type=int, default=75, help="epochs of the recipes that start from FP32")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--ft-lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-seed", type=int, default=42,
                    help="MNIST-1D generation seed (42: the published data set; another: held-out data)")
    ap.add_argument("--models", default="cnn", help="comma list of cnn, cnn_bn (the CNN with BatchNorm1d), mlp")
    ap.add_argument("--mlp-recipes", default="scratch,finetune", help="recipes for the MLP rows")
    ap.add_argument("--bn-recipes", help="recipes for the cnn_bn rows (default: --recipes)")
    ap.add_argument("--recipes", default=DEFAULT_RECIPES, help="comma list of recipes (parts joined by +)")
    ap.add_argument("--policies", default="default,all")
    ap.add_argument("--extra-recipes", default="", help="more CNN recipes, run on the first --extra-seeds seeds only")
    ap.add_argument("--extra-seeds", type=int, default=1)
    ap.add_argument("--digits-epochs", type=int, default=30, help="digits smoke row epochs (0: no row)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs of the JSON file")
    ap.add_argument("--weights-dir", help="where the FP32 weights of each seed go (default: under $TDSL_CACHE)")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "accuracy_mnist1d.md"))
    a = ap.parse_args(argv)

    rows: list[Row] = []
    for m in [s.strip() for s in a.models.split(",") if s.strip()]:
        model, params = MODELS[m]
        rows.append(Row("mnist1d", model, params=params, epochs=a.epochs, lr=a.lr))
        names = {"mlp": a.mlp_recipes, "cnn_bn": a.bn_recipes or a.recipes}.get(m, a.recipes)
        recipes = [(r.strip(), None) for r in names.split(",") if r.strip()]
        if m == "cnn":
            recipes += [(r.strip(), a.extra_seeds) for r in a.extra_recipes.split(",") if r.strip()]
        for policy in [s.strip() for s in a.policies.split(",") if s.strip()]:
            for recipe, max_seeds in recipes:
                ft = "finetune" in recipe or "calibrate" in recipe
                rows.append(Row("mnist1d", model, "ternary", policy, recipe=recipe, params=params,
                                epochs=a.ft_epochs if ft else a.epochs, lr=a.ft_lr if ft else a.lr,
                                max_seeds=max_seeds))
    if a.digits_epochs > 0:
        rows.append(Row("digits", "mlp", epochs=a.digits_epochs, lr=3e-3))
        rows.append(Row("digits", "mlp", "ternary", "default", recipe="scratch", epochs=a.digits_epochs, lr=3e-3))
    notes = [
        f"Setup: MNIST-1D generated offline with `load_mnist1d({a.data_seed})` (4000 train / 1000 test sequences); "
        f"batch {a.batch_size}, AdamW without weight decay, cosine LR; FP32 and `scratch`: {a.epochs} epochs "
        f"({a.epochs * 40} steps) at lr {a.lr}; recipes starting from FP32 (`finetune`, `calibrate`, "
        f"`learned_scale`, `shared_scale`, `distill`, `long`): the FP32 model of the same seed, then {a.ft_epochs} epochs "
        f"({a.ft_epochs * 40} steps; `long` doubles them, with a 5% linear warm-up) at lr {a.ft_lr}. "
        "Seeds vary initialisation and data order; the data set is fixed. Std is the sample std over seeds.",
        "",
        "Input-layer parts (train from scratch, same epochs and lr as `scratch`): `progressive` fades the input "
        "layer (conv1) from float to ternary, λ·α·T + (1−λ)·w with λ rising linearly over the first half of the "
        "steps, then ternary alone; `optimal_delta` gives it the error-optimal Δ per channel instead of TWN's; "
        "`distill` without `finetune` learns from scratch with the FP32 model of the same seed as teacher "
        "(α = 0.5, T = 4). `fixed_input` starts from the FP32 model of the same seed, ternarises conv1 once "
        "(error-optimal Δ per channel) and keeps it fixed while the rest trains for the same epochs and lr "
        "as `scratch`. `tdsl train --recipe auto --policy all` trains with "
        "`tdsl.train.recipes.recommended('all', init)`: `fixed_input` with `--init`, else `optimal_delta`.",
        "",
        "Precision: `default` keeps the first conv/linear and the last linear at fp16 and makes the rest "
        "ternary (TWN Δ = 0.7·mean|W|, per output channel); `all` makes every weight ternary. "
        "`mnist1d_cnn (batch_norm=True)` is the same CNN with BatchNorm1d after each conv (fp32 and "
        "ternary alike). Accuracy is the QAT module's in eval mode; the last column is the frozen (packed, "
        "deployable) model's, equal to it except for `learned_scale`: its two TTQ scales per channel do "
        "not fit the packed format (one scale per channel), so it freezes with (Wp + Wn)/2 and loses "
        "accuracy; its size counts the second scale a faithful deployment would need. `shared_scale` "
        "(TTQ with Wp = Wn) freezes exactly.",
        "",
        "Size: bytes of the frozen state dict (packed 2-bit trits + scales, fp16 kept layers, fp32 biases) "
        "from `FrozenModel.memory_report()`; sparsity: fraction of zero trits over the ternary layers.",
    ]
    settings = Settings(batch_size=a.batch_size, threads=a.threads, data_seed=a.data_seed)
    title = "MNIST-1D: FP32 vs ternary QAT, by recipe"
    # the digits smoke rows use digits' own split (seed 0) and batch 64
    mn_rows = [r for r in rows if r.dataset == "mnist1d"]
    dg_rows = [r for r in rows if r.dataset == "digits"]
    out = Path(a.out)
    seeds = list(range(a.seeds))
    if dg_rows:
        run_grid(dg_rows, seeds, Settings(batch_size=64, threads=a.threads, data_seed=0),
                 out.with_name(out.stem + "_digits_smoke.md"), "digits smoke", [], a.jobs, a.resume,
                 Path(a.weights_dir) / "digits" if a.weights_dir else None)
    result = run_grid(mn_rows, seeds, settings, out, title, notes, a.jobs, a.resume, a.weights_dir)
    if dg_rows:
        _merge_smoke(out, out.with_name(out.stem + "_digits_smoke.md"), result)
    return 0


def _merge_smoke(out: Path, smoke_md: Path, result: dict) -> None:
    """Append the digits smoke rows to the main table (and their runs to its JSON)."""
    import json

    text = out.read_text().splitlines()
    smoke = [ln for ln in smoke_md.read_text().splitlines() if ln.startswith("| digits")]
    last = max(i for i, ln in enumerate(text) if ln.startswith("|"))
    out.write_text("\n".join(text[:last + 1] + smoke + text[last + 1:]) + "\n")
    js = out.with_suffix(".json")
    data = json.loads(js.read_text())
    data["runs"] += json.loads(smoke_md.with_suffix(".json").read_text())["runs"]
    js.write_text(json.dumps(data, indent=1) + "\n")
    smoke_md.unlink()
    smoke_md.with_suffix(".json").unlink()


if __name__ == "__main__":
    raise SystemExit(main())
